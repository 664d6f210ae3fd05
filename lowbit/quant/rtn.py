"""Round-to-nearest quantization per block: min/max (asymmetric) or absmax (symmetric).

Codes are computed in float64 so they are the exact round-half-to-even of w / scale (+ zero): weights are at most
fp32, whose quotients fp64 represents without a tie-breaking error.
"""

from __future__ import annotations

import torch

from .blocks import block_views
from .format import symmetric_zero


def smallest_scale(scale_dtype: torch.dtype) -> float:
    """The smallest positive scale storable in scale_dtype (a block of zeros gets it, never a zero scale)."""
    return 2.0**-24 if scale_dtype == torch.float16 else torch.finfo(scale_dtype).tiny


def to_storage(t: torch.Tensor, scale_dtype: torch.dtype, what: str) -> torch.Tensor:
    """Round to the storage dtype (the values every later step must use); overflow is an error."""
    stored = t.to(scale_dtype)
    if not bool(torch.isfinite(stored).all()):
        raise ValueError(f"a block {what} ({t.abs().max().item():.3g}) overflows {scale_dtype}; "
                         "use QuantConfig(scale_dtype='float32')")
    return stored


def rtn_scale_zero(blocks: torch.Tensor, bits: int, symmetric: bool, scale_dtype: torch.dtype):
    """Scale and zero (N, nb) in scale_dtype for blocks (N, nb, g); zero is None when symmetric."""
    b64 = blocks.double()
    tiny = smallest_scale(scale_dtype)
    if symmetric:
        raw = b64.abs().amax(-1) / (symmetric_zero(bits) - 1)
        return to_storage(raw.clamp_min(tiny), scale_dtype, "scale").clamp_min(tiny), None
    mn, mx = b64.amin(-1), b64.amax(-1)
    qmax = (1 << bits) - 1
    # A constant block has no range: scale by its magnitude so it is reproduced exactly by code 0.
    raw = torch.where(mx > mn, mx - mn, mn.abs()) / qmax
    scale = to_storage(raw.clamp_min(tiny), scale_dtype, "scale").clamp_min(tiny)
    zero = to_storage(-mn / scale.double(), scale_dtype, "zero")
    return scale, zero


def rtn_codes(blocks: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, bits: int) -> torch.Tensor:
    """uint8 codes (N, nb, g) for blocks (N, nb, g) with stored scale/zero (N, nb): round half to even, clamped."""
    s = scale.double().unsqueeze(-1)
    if zero is None:
        half = symmetric_zero(bits)
        q = torch.round(blocks.double() / s).clamp_(-half, half - 1) + half
    else:
        q = torch.round(blocks.double() / s + zero.double().unsqueeze(-1)).clamp_(0, (1 << bits) - 1)
    return q.to(torch.uint8)


def quantize_rtn_rows(w: torch.Tensor, bits: int, group_size: int, symmetric: bool, scale_dtype: torch.dtype):
    """RTN for a 2-D chunk of rows (N, K): returns codes uint8 (N, K), scale (N, nb), zero (N, nb) or None."""
    codes, scales, zeros = [], [], []
    for blocks in block_views(w, group_size):
        scale, zero = rtn_scale_zero(blocks, bits, symmetric, scale_dtype)
        codes.append(rtn_codes(blocks, scale, zero, bits).flatten(1))
        scales.append(scale)
        zeros.append(zero)
    zero = None if symmetric else torch.cat(zeros, 1)
    return torch.cat(codes, 1), torch.cat(scales, 1), zero
