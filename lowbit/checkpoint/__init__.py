"""Compressed checkpoints: `save`, `load` and `convert` (safetensors + lowbit metadata; see docs/FORMAT.md)."""

from .convert import ConvertSummary, convert, load_overrides
from .errors import CheckpointError, CheckpointFileNotFoundError
from .export import ExportSummary, export
from .load import load
from .pretrained import from_pretrained
from .reader import Checkpoint, open_checkpoint
from .save import save

__all__ = ["Checkpoint", "CheckpointError", "CheckpointFileNotFoundError", "ConvertSummary", "ExportSummary",
           "convert", "export", "from_pretrained", "load", "load_overrides", "open_checkpoint", "save"]
