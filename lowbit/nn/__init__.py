"""Quantized torch layers (Linear, Conv1d, Conv2d, LSTM), the module swap and the custom ops they call."""

from .conv import QuantConv1d, QuantConv2d
from .fuse import FusedSiblings, SiblingOutput, fuse_siblings, unfuse_siblings
from .kernel_choice import kernel_for
from .linear import QuantLinear, QuantModule
from .lstm import QuantLSTM
from .swap import (
    LayerRecord,
    QuantizeSummary,
    quantize,
    quantized_weights,
    resident_bytes,
    set_backend,
    swap_quantized,
)

__all__ = [
    "FusedSiblings", "LayerRecord", "QuantConv1d", "QuantConv2d", "QuantLSTM", "QuantLinear", "QuantModule",
    "QuantizeSummary", "SiblingOutput", "fuse_siblings", "kernel_for", "quantize", "quantized_weights",
    "resident_bytes", "set_backend", "swap_quantized", "unfuse_siblings",
]
