"""The checks every CPU kernel launcher makes of its activations before reaching compiled code."""

from __future__ import annotations

import torch

from ..quant.format import QuantizedWeight
from ..quant.formats import format_refusal


def check_cpu_activations(x: torch.Tensor, n: int, k: int, launcher: str) -> None:
    """x must be a floating-point (M, k) tensor on the CPU for a weight of shape (n, k); else TypeError/ValueError
    naming `launcher`."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() != 2 or x.shape[1] != k:
        raise ValueError(f"x has shape {tuple(x.shape)}; expected (M, {k}) for a weight of shape ({n}, {k})")
    if x.device.type != "cpu":
        raise ValueError(f"x is on {x.device}; {launcher} runs on the CPU")


def integer_weight_refusal(qw) -> str | None:
    """Why a CPU kernel reading affine integer codes cannot take `qw` at all (another format, not a
    QuantizedWeight, or float16 storage), else None; each kernel then checks its own bits, blocks and device."""
    reason = format_refusal(qw)
    if reason:
        return reason
    if not isinstance(qw, QuantizedWeight):
        return f"expected a QuantizedWeight, got {type(qw).__name__}"
    if qw.is_float:
        return "bits=16 (float16 storage) has no integer codes; use the dense path"
    return None
