"""Checks on user input; every failure is a ValueError/TypeError naming the problem. (A packed weight's metadata
checks live with its format: `format.check_metadata`.)"""

from __future__ import annotations

import torch


def check_float_weight(w: torch.Tensor, name: str = "weight") -> None:
    """A weight to quantize: a non-empty floating tensor of rank >= 2 with only finite values."""
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(w).__name__}")
    if not w.is_floating_point():
        raise TypeError(f"{name} has dtype {w.dtype}; only floating-point weights can be quantized")
    if w.dim() < 2:
        raise ValueError(f"{name} has shape {tuple(w.shape)}: expected rank >= 2 (N, K, ...)")
    if w.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(w.shape)})")
    if w.device.type == "meta":
        raise ValueError(f"{name} is on the meta device and has no values to quantize")
    finite = torch.isfinite(w)
    if not bool(finite.all()):
        bad = (~finite).nonzero()[0].tolist()
        raise ValueError(f"{name} contains NaN or inf (first at index {tuple(bad)}, value {w[tuple(bad)].item()})")
