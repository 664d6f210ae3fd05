"""5..8-bit per-channel weights on the CPU with dynamic int8 activations, through torch's quantized ops.

Implementations (`Int8Weight.impl`):
- "dynamic": `torch.ops.quantized.linear_dynamic` on a prepacked per-channel qint8 weight (fbgemm on x86, qnnpack
  on ARM: whatever `torch.backends.quantized.engine` is; lowbit never changes that global).
- "int8pack": `torch._weight_int8pack_mm`, weight-only int8 with bfloat16 activations (K % 8 == 0 only).

Math. Our codes q in [0, 2**bits) have a float zero z per row (asymmetric, HQQ) or z = 2**(bits-1) (symmetric).
With half = 2**(bits-1) and q_s = q - half in [-128, 127] (an int8, exact):
    W = (q - z) * s = s * q_s + (half - z) * s
    y = x @ (s * q_s).T + rowsum(x) * c + bias,      c = (half - z) * s   (N,), fp32
Exact: the int8 weight q_s and the per-row scale s (fp16 scales are exact in fp32); the zero term is computed in
fp32 from the float activations (c = 0 for symmetric weights). Rounding added: "dynamic" quantizes each call's
activations to 8 bits (7 with fbgemm's reduce_range, which avoids int16 saturation in its AVX2 kernels) per
tensor, so the error scales with max|x| (SQNR ~ 30-40 dB on Gaussian data); "int8pack" rounds x and s to bf16
(SQNR ~ 45 dB). Only per-channel weights (one block per row) are served; blocked 5..8-bit weights are not.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from ..quant.format import QuantizedWeight
from .inputs import check_cpu_activations, integer_weight_refusal
from .torch_ops import shape_class

IMPLS = ("dynamic", "int8pack")


@dataclass(frozen=True)
class Int8Weight:
    """A per-channel 5..8-bit weight prepared for torch's int8 ops.

    impl: "dynamic" or "int8pack". n, k: weight shape; bits.
    packed: torch's prepacked linear params ("dynamic") or int8 (N, K) ("int8pack").
    scale: fp32 (N,) (bf16 for "int8pack"); correction: fp32 (N,) = (2**(bits-1) - z) * s, or None when all zero.
    refused: (shape class, reason) pairs (`lowbit.kernels.torch_ops.shape_class`; "*" = every shape) where torch's
    op was found wrong or crashing on this CPU; `linear_int8_dynamic` raises for them instead of calling torch.
    """

    impl: str
    n: int
    k: int
    bits: int
    packed: object
    scale: torch.Tensor
    correction: torch.Tensor | None
    refused: tuple[tuple[str, str], ...] = ()


def available_int8_dynamic() -> bool:
    """True when torch has the quantized dynamic linear op and a quantized engine."""
    return hasattr(torch.ops.quantized, "linear_dynamic") and bool(torch.backends.quantized.supported_engines)


def supports_int8_dynamic(qw: QuantizedWeight) -> str | None:
    """None when `qw` can be served (5..8 bits, one block per row, on the CPU), else the reason."""
    reason = integer_weight_refusal(qw)
    if reason:
        return reason
    if not 5 <= qw.bits <= 8:
        return f"bits={qw.bits} is served by lowbit.kernels.cpu_int4 (this path takes 5..8 bits)"
    if qw.num_blocks != 1:
        return f"block_size={qw.block_size} gives {qw.num_blocks} blocks per row; torch's int8 ops are per channel only"
    if qw.device.type != "cpu":
        return f"the weight is on {qw.device}; the CPU int8 path needs it on the CPU"
    return None


def available_int8_weight_only() -> bool:
    """True when torch has the weight-only int8 matmul (`torch._weight_int8pack_mm`, impl "int8pack")."""
    return hasattr(torch, "_weight_int8pack_mm")


def supports_int8_weight_only(qw: QuantizedWeight) -> str | None:
    """None when impl "int8pack" can serve `qw` (what `supports_int8_dynamic` asks, and K % 8 == 0)."""
    reason = supports_int8_dynamic(qw)
    if reason is None and qw.k % 8:
        reason = f"K={qw.k} is not a multiple of 8, which torch's weight-only int8 matmul needs"
    return reason


def prepare_int8_dynamic(qw: QuantizedWeight, impl: str = "dynamic", refused=()) -> Int8Weight:
    """Convert once at load: signed int8 codes, per-row scales and the zero correction.

    refused: the (shape class, reason) pairs torch's op must not run on here (`lowbit.runtime.probes` finds them;
    the layers always pass them). Calls of such a shape raise ValueError rather than crash or return wrong numbers.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl={impl!r} is unknown: use one of {IMPLS}")
    reason = supports_int8_dynamic(qw)
    if reason:
        raise ValueError(f"prepare_int8_dynamic cannot serve this weight: {reason}")
    if impl == "dynamic" and not available_int8_dynamic():
        raise ValueError(f"impl='dynamic' is unavailable: torch {torch.__version__} has no quantized engine")
    if impl == "int8pack" and qw.k % 8:
        # torch 2.13's kernel reads past the row end (segfault) when K % 8 != 0 and M > 1
        raise ValueError(f"impl='int8pack' needs K divisible by 8, got K={qw.k}; use impl='dynamic'")
    half = 1 << (qw.bits - 1)
    q_signed = (qw.unpack().to(torch.int16) - half).to(torch.int8)  # (N, K), exact for bits <= 8
    scale = qw.scale.float().reshape(qw.n)
    corr = (half - qw.zero_or_implicit().float().reshape(qw.n)) * scale
    correction = corr.contiguous() if bool(corr.ne(0).any()) else None
    if impl == "dynamic":
        with warnings.catch_warnings():
            # torch >= 2.10 flags quantized tensor creation as deprecated; it is still the only way into fbgemm
            warnings.filterwarnings("ignore", message=".*quantized tensor creation.*deprecated")
            qweight = torch._make_per_channel_quantized_tensor(
                q_signed, scale.double(), torch.zeros(qw.n, dtype=torch.long), 0)
        packed = torch.ops.quantized.linear_prepack(qweight, None)
        return Int8Weight(impl, qw.n, qw.k, qw.bits, packed, scale, correction, tuple(refused))
    return Int8Weight(impl, qw.n, qw.k, qw.bits, q_signed.contiguous(), scale.to(torch.bfloat16), correction,
                             tuple(refused))


def _refusal(w8: Int8Weight, m: int) -> str | None:
    cls = shape_class(m, w8.n, w8.k)
    return next((why for c, why in w8.refused if c in ("*", cls)), None)


def linear_int8_dynamic(x: torch.Tensor, w8: Int8Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = x @ W.T + bias. x: float (M, K) on the CPU; bias (N,) or None. Returns (M, N) in x.dtype."""
    if not isinstance(w8, Int8Weight):
        raise TypeError(f"w8 must be an Int8Weight from prepare_int8_dynamic, got {type(w8).__name__}")
    check_cpu_activations(x, w8.n, w8.k, "linear_int8_dynamic")
    refusal = _refusal(w8, x.shape[0])
    if refusal:
        raise ValueError(f"torch's {w8.impl} op is refused for M={x.shape[0]}, N={w8.n}, K={w8.k} on this CPU: "
                         f"{refusal}")
    xf = x.float().contiguous()
    if w8.impl == "dynamic":
        y = torch.ops.quantized.linear_dynamic(xf, w8.packed, True)  # reduce_range: no int16 saturation on AVX2
    else:
        y = torch._weight_int8pack_mm(xf.to(torch.bfloat16), w8.packed, w8.scale).float()
    if w8.correction is not None:
        y = torch.addr(y, xf.sum(1), w8.correction)  # rowsum(x) (M,) x c (N,): the zero term
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)
