"""Static int8 math on plain tensors: symmetric quantization with a fixed scale, weight scales (max_abs, ADMM),
SmoothQuant factors, and the int8 weight as a lowbit `QuantizedWeight`.

Rules (symmetric, zero point 0): q = clamp(round_half_even(x / s), -clamp, clamp); x ~= q * s.
Weights: per output channel (row n of the (N, K) view) or per tensor. max_abs: s = max|w| / clamp. ADMM (MNN's
weight_quantize_method "ADMM"): start from max_abs, then `iters` rounds of q = round(w / s) (clamped) and the
least-squares s = <w, q> / <q, q> (per row or tensor), keeping the better of each round; never worse than max_abs.
"""

from __future__ import annotations

import torch

from .format import QuantizedWeight
from .packing import pack_bits

_TINY = 1e-12


def quantize_symmetric(x: torch.Tensor, scale: torch.Tensor | float, clamp: int = 127) -> torch.Tensor:
    """int8 codes clamp(round(x / scale), -clamp, clamp); scale broadcasts against x."""
    return torch.div(x, scale).round_().clamp_(-clamp, clamp).to(torch.int8)


def _as_rows(w: torch.Tensor, per_channel: bool) -> torch.Tensor:
    w2 = w.detach().reshape(w.shape[0], -1).to(torch.float64)
    return w2 if per_channel else w2.reshape(1, -1)


def _row_error(w: torch.Tensor, s: torch.Tensor, clamp: int) -> torch.Tensor:
    q = torch.clamp(torch.round(w / s[:, None]), -clamp, clamp)
    return ((q * s[:, None] - w) ** 2).sum(1)


def weight_scales(w: torch.Tensor, clamp: int = 127, per_channel: bool = True, method: str = "max_abs",
                  iters: int = 10) -> torch.Tensor:
    """Scales float32 (N,) for the rows of w (N, ...) (one value repeated when per tensor)."""
    rows = _as_rows(w, per_channel)
    if not bool(torch.isfinite(rows).all()):
        raise ValueError("the weight holds NaN or inf; it cannot be quantized")
    s = rows.abs().amax(1).clamp(min=_TINY) / clamp
    if method == "admm":
        best = _row_error(rows, s, clamp)
        for _ in range(iters):
            q = torch.clamp(torch.round(rows / s[:, None]), -clamp, clamp)
            qq = (q * q).sum(1)
            cand = torch.where(qq > 0, (rows * q).sum(1) / qq.clamp(min=1), s).clamp(min=_TINY)
            err = _row_error(rows, cand, clamp)
            better = err < best
            s, best = torch.where(better, cand, s), torch.where(better, err, best)
    elif method != "max_abs":
        raise ValueError(f"weight method {method!r} is not one of ['max_abs', 'admm']")
    if not per_channel:
        s = s.expand(w.shape[0])
    return s.to(torch.float32).contiguous()


def int8_weight(w: torch.Tensor, scale: torch.Tensor, clamp: int = 127) -> QuantizedWeight:
    """The 8-bit symmetric per-channel `QuantizedWeight` of w (N, ...) with these scales (float32 (N,)).

    Codes are stored as q + 128 (the format's implicit symmetric zero), so `dequantize()` gives q * scale.
    """
    q = quantize_symmetric(w.detach().reshape(w.shape[0], -1).float(), scale[:, None], clamp)
    codes = (q.to(torch.int16) + 128).to(torch.uint8)
    return QuantizedWeight(packed=pack_bits(codes, 8), scale=scale.reshape(-1, 1).to(torch.float32).contiguous(),
                           zero=None, shape=tuple(w.shape), dtype=w.dtype, bits=8, block_size=-1, symmetric=True,
                           method="rtn")


def int8_codes(qw: QuantizedWeight) -> torch.Tensor:
    """The signed int8 codes (N, K) of an 8-bit symmetric `QuantizedWeight`."""
    if qw.bits != 8 or not qw.symmetric or qw.num_blocks != 1:
        raise ValueError(f"static int8 needs an 8-bit symmetric per-channel weight, got bits={qw.bits}, "
                         f"symmetric={qw.symmetric}, block_size={qw.block_size}")
    return (qw.unpack().to(torch.int16) - 128).to(torch.int8)


def smooth_factors(act_absmax: torch.Tensor, w_absmax: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant's per-input-channel s = max|x|^alpha / max|w|^(1-alpha) (x / s, w * s); 1 where undefined."""
    a = act_absmax.to(torch.float64).clamp(min=1e-5)
    w = w_absmax.to(torch.float64).clamp(min=1e-5)
    s = a.pow(alpha) / w.pow(1 - alpha)
    return torch.where(torch.isfinite(s) & (s > 0), s, torch.ones_like(s)).to(torch.float32)
