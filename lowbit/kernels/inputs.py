"""The checks every CPU kernel launcher makes of its activations before reaching compiled code."""

from __future__ import annotations

import torch


def check_cpu_activations(x: torch.Tensor, n: int, k: int, launcher: str) -> None:
    """x must be a floating-point (M, k) tensor on the CPU for a weight of shape (n, k); else TypeError/ValueError
    naming `launcher`."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() != 2 or x.shape[1] != k:
        raise ValueError(f"x has shape {tuple(x.shape)}; expected (M, {k}) for a weight of shape ({n}, {k})")
    if x.device.type != "cpu":
        raise ValueError(f"x is on {x.device}; {launcher} runs on the CPU")
