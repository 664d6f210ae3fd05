"""The checkpoint error type: a ValueError, so callers that catch bad input keep working."""


class CheckpointError(ValueError):
    """A checkpoint file or a conversion request is invalid; the message names the file, tensor or entry."""
