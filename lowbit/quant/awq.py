"""Activation-aware scaling and clipping (AWQ, Lin et al., 2023), on plain tensors.

Both searches minimise the layer's output error on calibration inputs, written with xtx = Σ xᵀx (K, K) so no
activation is kept: ‖x (W - Ŵ)ᵀ‖² = Σ_n d_n xtx d_nᵀ, d = W - Ŵ.
  - `search_scales`: per-input-channel scales s = mean|x|^α / sqrt(max · min) over a grid of α in [0, 1); the
    weight is quantized as Q(W · diag(s)) · diag(s)⁻¹, i.e. the inputs must be divided by s (folded into the layer
    that produces them). α = 0 (s = 1, plain rounding) is in the grid, so the result is never worse than RTN.
  - `search_channel_scales`: the same for a conv weight (O, C_in/groups, *kernel) on its unfolded inputs (one xtx
    per group): one s per input channel (C_in,), repeated over its kernel positions, the error summed over groups.
  - `clip_quantize`: per row and block, the clipping ratio r (weights clamped to ±r·absmax before the RTN min/max)
    minimising that block's share of the output error (the block-diagonal part of xtx, as AWQ). r = 1 is plain RTN.
"""

from __future__ import annotations

import torch

from .blocks import block_views
from .config import QuantConfig
from .format import QuantizedWeight, group_size_for
from .hessian import split_by_hessians
from .packing import pack_bits
from .rtn import rtn_codes, rtn_scale_zero

CLIP_RATIOS = tuple(1 - i / 20 for i in range(10))  # 1.0 .. 0.55, AutoAWQ's grid


def _fake_quant(w: torch.Tensor, cfg: QuantConfig) -> torch.Tensor:
    """RTN quantize-dequantize of w (N, K) with cfg's bits, block and symmetry (stored scale dtype), float64."""
    scale_dtype = cfg.scale_torch_dtype
    out = []
    for blocks in block_views(w.double(), group_size_for(w.shape[1], cfg.block_size)):
        s, z = rtn_scale_zero(blocks, cfg.bits, cfg.symmetric, scale_dtype)
        q = rtn_codes(blocks, s, z, cfg.bits).double()
        z = torch.full_like(s, float(1 << (cfg.bits - 1))) if z is None else z
        out.append(((q - z.double().unsqueeze(-1)) * s.double().unsqueeze(-1)).flatten(1))
    return torch.cat(out, 1)


def _error(delta: torch.Tensor, xtx: torch.Tensor) -> float:
    return float(((delta @ xtx) * delta).sum())


def _scale_grid(abs_mean: torch.Tensor, grid: int):
    """The candidate scales mean|x|^α / sqrt(max · min) for α = i / grid, i = 1 .. grid - 1 (float64)."""
    x = abs_mean.double().clamp_min(1e-8)
    for i in range(1, grid):
        s = x.pow(i / grid)
        yield s / (s.max() * s.min()).sqrt()


def _best_on_grid(abs_mean: torch.Tensor, grid: int, error_of, base: float) -> tuple[torch.Tensor, float]:
    """The grid scale s minimising error_of(s), or s = 1 when none beats `base` (plain rounding)."""
    best_s, best = torch.ones_like(abs_mean, dtype=torch.float64), base
    for s in _scale_grid(abs_mean, grid):
        err = error_of(s)
        if err < best:
            best_s, best = s, err
    return best_s, best


def search_scales(w: torch.Tensor, xtx: torch.Tensor, abs_mean: torch.Tensor, cfg: QuantConfig,
                  grid: int | None = None) -> tuple[torch.Tensor, float, float]:
    """Best per-input-channel scales s (K,) float64 for w (N, K), and the output error² of plain RTN and with s."""
    w64, h = w.detach().double(), xtx.double()
    base = _error(w64 - _fake_quant(w64, cfg), h)
    best_s, best = _best_on_grid(abs_mean, grid or cfg.awq_grid,
                                 lambda s: _error(w64 - _fake_quant(w64 * s, cfg) / s, h), base)
    return best_s, base, best


def channel_scale(s: torch.Tensor, weight_shape, groups: int = 1) -> torch.Tensor:
    """Per-input-channel s (C_in,) as a multiplier of a weight (O, C_in/groups, *kernel) (a Linear's (N, K) too):
    input channel c is column c % (C_in/groups) of the rows of group c // (C_in/groups), for every kernel position.
    Shape (O, C_in/groups, 1, ...), broadcasting over the kernel."""
    out, per_group = weight_shape[0], weight_shape[1]
    if s.shape != (per_group * groups,) or out % groups:
        raise ValueError(f"scale of shape {tuple(s.shape)} does not fit a weight {tuple(weight_shape)} with "
                         f"groups={groups}")
    rows = s.reshape(groups, 1, per_group).expand(groups, out // groups, per_group)
    return rows.reshape(out, per_group, *[1] * (len(weight_shape) - 2))


def channel_abs_mean(abs_means, per_group: int) -> torch.Tensor:
    """Mean |x| per input channel (C_in,) from each group's unfolded column means (K,), K = per_group · kernel."""
    return torch.cat([m.double().reshape(per_group, -1).mean(1) for m in abs_means])


def divide_channels(x: torch.Tensor, s: torch.Tensor, spatial_dims: int = 0) -> torch.Tensor:
    """x / s along x's channel dim: the last one (spatial_dims=0, a Linear's input) or the one before the last
    `spatial_dims` (a conv's (B, C, *spatial) or unbatched (C, *spatial) input)."""
    s = s if s.dtype == x.dtype and s.device == x.device else s.to(x.device, x.dtype)
    return x / s.reshape(-1, *[1] * spatial_dims)


def _grouped_error(delta: torch.Tensor, xtxs: list[torch.Tensor]) -> float:
    """Σ over groups of ‖x_g deltaᵀ_g‖²: delta (O, K), rows split evenly over the groups' xtx (K, K)."""
    rows = delta.shape[0] // len(xtxs)
    return sum(_error(delta[g * rows:(g + 1) * rows], h) for g, h in enumerate(xtxs))


def search_channel_scales(w: torch.Tensor, xtxs: list[torch.Tensor], abs_means: list[torch.Tensor],
                          cfg: QuantConfig, grid: int | None = None) -> tuple[torch.Tensor, float, float]:
    """`search_scales` for a conv weight w (O, C_in/groups, *kernel) with one xtx (K, K) and one column mean |x| (K,)
    per group of its unfolded inputs: best s (C_in,) float64, and the output error² of plain RTN and with s."""
    groups, shape = len(xtxs), tuple(w.shape)
    w64, hs = w.detach().double().reshape(shape[0], -1), [h.double() for h in xtxs]
    kernel = torch.ones(shape[2:], dtype=torch.float64, device=w.device)

    def error_of(s):
        cols = (channel_scale(s, shape, groups) * kernel).reshape(shape[0], -1)  # (O, K)
        return _grouped_error(w64 - _fake_quant(w64 * cols, cfg) / cols, hs)

    base = _grouped_error(w64 - _fake_quant(w64, cfg), hs)
    best_s, best = _best_on_grid(channel_abs_mean(abs_means, shape[1]), grid or cfg.awq_grid, error_of, base)
    return best_s, base, best


def scaled_error(w: torch.Tensor, s: torch.Tensor, xtxs: list[torch.Tensor], cfg: QuantConfig) -> float:
    """Output error² of RTN with input-channel scales s on the inputs summarised by xtxs (one per group of rows):
    a Linear (N, K) with s (K,), or a conv (O, C_in/groups, *kernel) with s (C_in,). s = 1 is plain RTN."""
    shape = tuple(w.shape)
    w64 = w.detach().double().reshape(shape[0], -1)
    kernel = torch.ones(shape[2:], dtype=torch.float64, device=w.device)
    cols = (channel_scale(s.double().to(w.device), shape, len(xtxs)) * kernel).reshape(shape[0], -1)
    return _grouped_error(w64 - _fake_quant(w64 * cols, cfg) / cols, [h.double() for h in xtxs])


def clip_rows(w: torch.Tensor, xtx: torch.Tensor, cfg: QuantConfig, ratios=CLIP_RATIOS):
    """Clip search + RTN for one weight (N, K): codes uint8 (N, K), scale (N, nb), zero (N, nb) or None."""
    n, k = w.shape
    scale_dtype = cfg.scale_torch_dtype
    group = group_size_for(k, cfg.block_size)
    h = xtx.double()
    codes, scales, zeros, start = [], [], [], 0
    for blocks in block_views(w.detach().double(), group):
        nb, g = blocks.shape[1], blocks.shape[2]
        # (K, K) -> (nb, g, g): the diagonal blocks of xtx for these blocks
        hb = torch.stack([h[start + j * g:start + (j + 1) * g, start + j * g:start + (j + 1) * g] for j in range(nb)])
        start += nb * g
        amax = blocks.abs().amax(-1, keepdim=True)
        best = None
        for r in ratios:
            s, z = rtn_scale_zero(blocks.clamp(-r * amax, r * amax), cfg.bits, cfg.symmetric, scale_dtype)
            q = rtn_codes(blocks, s, z, cfg.bits)
            zz = torch.full_like(s, float(1 << (cfg.bits - 1))) if z is None else z
            d = blocks - (q.double() - zz.double().unsqueeze(-1)) * s.double().unsqueeze(-1)
            loss = torch.einsum("nbg,bgh,nbh->nb", d, hb, d)  # (N, nb): each block's output error²
            if best is None:
                best, bq, bs, bz = loss, q, s, z
                continue
            better = loss < best
            best = torch.where(better, loss, best)
            bq = torch.where(better.unsqueeze(-1), q, bq)
            bs = torch.where(better, s, bs)
            bz = None if z is None else torch.where(better, z, bz)
        codes.append(bq.flatten(1))
        scales.append(bs)
        zeros.append(bz)
    return torch.cat(codes, 1), torch.cat(scales, 1), None if cfg.symmetric else torch.cat(zeros, 1)


def clip_quantize(w: torch.Tensor, hessians, cfg: QuantConfig, name: str = "weight") -> QuantizedWeight:
    """Clip-searched RTN of w (N, ...) given one xtx per group of rows (see `lowbit.quant.gptq.gptq_quantize`)."""
    shape = tuple(w.shape)
    w2d, hs, rows = split_by_hessians(w, hessians, name)
    parts = [clip_rows(w2d[i * rows:(i + 1) * rows], h, cfg) for i, h in enumerate(hs)]
    zero = None if cfg.symmetric else torch.cat([p[2] for p in parts])
    return QuantizedWeight(packed=pack_bits(torch.cat([p[0] for p in parts]), cfg.bits),
                           scale=torch.cat([p[1] for p in parts]), zero=zero, shape=shape, dtype=w.dtype,
                           bits=cfg.bits, block_size=cfg.block_size, symmetric=cfg.symmetric, method="awq")


__all__ = ["CLIP_RATIOS", "channel_abs_mean", "channel_scale", "clip_quantize", "clip_rows", "divide_channels",
           "scaled_error", "search_channel_scales", "search_scales"]
