"""The plain reference every kernel is tested against: dequantize, then one float matmul."""

from __future__ import annotations

import torch

from ..quant.format import ComputeWeight


def linear_reference(x: torch.Tensor, cw: ComputeWeight, bias: torch.Tensor | None = None,
                     compute_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """y = x @ dequantize(cw).T + bias, computed in `compute_dtype` (float64 for tests), returned in x.dtype.

    x: (M, K) float; cw: ComputeWeight on x's device; bias: (N,) or None. Returns (M, N).
    """
    if x.dim() != 2 or x.shape[1] != cw.k:
        raise ValueError(f"x has shape {tuple(x.shape)}; expected (M, {cw.k}) for a weight of shape ({cw.n}, {cw.k})")
    w = cw.dequantize(compute_dtype)
    y = x.to(compute_dtype) @ w.T
    if bias is not None:
        y = y + bias.to(compute_dtype)
    return y.to(x.dtype)
