"""Data-aware weight quantization of whole models: GPTQ and activation-aware scaling/clipping, fed by `lowbit.calib`.

The math is in `lowbit.quant` (gptq.py, awq.py, hessian.py); this package runs the model over calibration data,
in layer order, and swaps in the packed weights with `lowbit.nn.swap_quantized`.
"""

from .quantize import check_calibration_given, quantize
from .report import DataAwareSummary, LayerError

__all__ = ["DataAwareSummary", "LayerError", "check_calibration_given", "quantize"]
