"""The checkpoint error types: ValueErrors, so callers that catch bad input keep working."""


class CheckpointError(ValueError):
    """A checkpoint file or a conversion request is invalid; the message names the file, tensor or entry."""


class CheckpointFileNotFoundError(FileNotFoundError, CheckpointError):
    """A file a checkpoint refers to (its external data file) is missing: both a CheckpointError and a
    FileNotFoundError, so `except CheckpointError` catches every bad-file outcome of a load."""
