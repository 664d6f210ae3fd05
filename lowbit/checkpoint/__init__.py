"""Compressed checkpoints: `save`, `load` and `convert` (safetensors + lowbit metadata; see docs/FORMAT.md)."""

from .convert import ConvertSummary, convert, load_overrides
from .errors import CheckpointError, CheckpointFileNotFoundError
from .load import load
from .reader import Checkpoint, open_checkpoint
from .save import save

__all__ = ["Checkpoint", "CheckpointError", "CheckpointFileNotFoundError", "ConvertSummary", "convert", "load",
           "load_overrides", "open_checkpoint", "save"]
