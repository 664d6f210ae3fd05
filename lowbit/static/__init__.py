"""Offline full INT8 (static W8A8, MNN's quantized.out): calibration, BatchNorm folding, the model swap.

Small API:
  quantize_static(model, calibration, config=StaticConfig(), skip=()) -> model   # in place; model.lowbit_summary
  StaticConfig, ActivationMethod, WeightMethod                                   # lowbit.quant.static_config
  StaticSummary                                                                   # per-layer int8/float + debug table
"""

from ..quant.static_config import ActivationMethod, StaticConfig, WeightMethod
from .quantize import quantize_static
from .summary import DebugRow, StaticRecord, StaticSummary

__all__ = ["ActivationMethod", "DebugRow", "StaticConfig", "StaticRecord", "StaticSummary", "WeightMethod",
           "quantize_static"]
