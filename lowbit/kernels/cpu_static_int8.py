"""Static W8A8: int8 activations quantized with a fixed (calibrated) scale x int8 weights -> int32 -> float.

Math (symmetric, zero points 0; a = activation scale, s[n] = weight scale of output n, c = activation clamp):
    xq[m, k] = clamp(round_half_even(x[m, k] / a), -c, c)                      int8
    acc[m, n] = sum_k xq[m, k] * wq[n, k]                                      int32, exact
    y[m, n]   = acc[m, n] * (a * s[n]) + bias[n]                               float32
The only rounding beyond fp32 is the activation's (fixed step a, values beyond c * a clipped) and the weight's.
Implementations (chosen per call by `lowbit.runtime.static_int8.select_static_impl`): "int_mm" (`torch._int_mm`,
int8 x int8 -> int32 on the CPU, where this machine's probe (`lowbit.kernels.torch_ops`, op "int_mm") found it exact
for the shape class) and "emulated" (the same integers through a float64 matmul, exact while |acc| < 2**53).
A row of x holding NaN or inf gives a NaN output row (rounding to int8 would hide it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..quant.static_int8 import quantize_symmetric

IMPLS = ("int_mm", "emulated")


@dataclass(frozen=True)
class StaticInt8Weight:
    """An int8 weight prepared for `linear_static_int8`.

    wt: int8 (K, N) contiguous (the transposed codes, the layout `torch._int_mm` reads); scale: float32 (N,);
    n, k: the weight's (N, K).
    """

    wt: torch.Tensor
    scale: torch.Tensor
    n: int
    k: int


def available_int_mm() -> bool:
    """True when this torch has `torch._int_mm` (its numbers are the probe's business)."""
    return hasattr(torch, "_int_mm")


def prepare_static_int8(codes: torch.Tensor, scale: torch.Tensor) -> StaticInt8Weight:
    """codes: int8 (N, K); scale: float (N,) or (N, 1)."""
    if codes.dim() != 2 or codes.dtype != torch.int8:
        raise ValueError(f"static int8 weights are int8 (N, K), got {codes.dtype} {tuple(codes.shape)}")
    n, k = codes.shape
    scale = scale.reshape(-1).to(torch.float32)
    if scale.numel() != n:
        raise ValueError(f"weight scale has {scale.numel()} values for {n} output channels")
    return StaticInt8Weight(codes.t().contiguous(), scale.contiguous(), n, k)


def int8_matmul(xq: torch.Tensor, w: StaticInt8Weight, impl: str = "int_mm") -> torch.Tensor:
    """int8 (M, K) x the weight -> the exact int32 accumulators (M, N) (as int32, or float64 when emulated)."""
    if impl not in IMPLS:
        raise ValueError(f"impl={impl!r} is not one of {IMPLS}")
    if impl == "int_mm":
        return torch._int_mm(xq.contiguous(), w.wt)
    return xq.to(torch.float64) @ w.wt.to(torch.float64)


def linear_static_int8(x: torch.Tensor, w: StaticInt8Weight, act_scale: float, clamp: int = 127,
                       bias: torch.Tensor | None = None, impl: str = "int_mm") -> torch.Tensor:
    """y (M, N) = dequant(int8(x / act_scale) @ wq.T) + bias in x's dtype; x: float (M, K)."""
    if x.dim() != 2 or x.shape[1] != w.k:
        raise ValueError(f"linear_static_int8 expects x of shape (M, {w.k}), got {tuple(x.shape)}")
    if not act_scale > 0:
        raise ValueError(f"activation scale must be positive, got {act_scale}")
    xf = x.float()
    acc = int8_matmul(quantize_symmetric(xf, act_scale, clamp), w, impl)
    y = acc.to(torch.float32) * (w.scale * act_scale)
    if bias is not None:
        y = y + bias.float()
    bad = ~torch.isfinite(xf).all(1)
    if bool(bad.any()):
        y[bad] = float("nan")
    return y.to(x.dtype)
