"""Offline full INT8 (static W8A8, MNN's quantized.out): calibration, BatchNorm folding, the model swap.

Small API:
  quantize_static(model, calibration, config=StaticConfig(), skip=()) -> model   # in place; model.lowbit_summary
  StaticConfig, ActivationMethod, WeightMethod                                   # lowbit.quant.static_config
  StaticSummary                                                                   # per-layer int8/float + debug table
Importing it registers the checkpoint header section "static" (lowbit.static.checkpoint.SECTION).
"""

from ..quant.static_config import ActivationMethod, StaticConfig, WeightMethod
from . import checkpoint as _checkpoint  # noqa: F401  (registers header section "static" with lowbit.checkpoint)
from .quantize import quantize_static
from .summary import DebugRow, StaticRecord, StaticSummary

__all__ = ["ActivationMethod", "DebugRow", "StaticConfig", "StaticRecord", "StaticSummary", "WeightMethod",
           "quantize_static"]
