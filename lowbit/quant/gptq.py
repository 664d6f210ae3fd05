"""GPTQ (Frantar et al., 2022): rounding a weight column by column with inverse-Hessian error feedback.

For y = x Wᵀ and H = Σ xᵀx over calibration inputs, GPTQ rounds column j of W to the quantization grid and moves
the rounding error onto the columns not yet rounded, weighted by the upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU):
    err = (w_j - q(w_j)) / U[j, j];   W[:, j:] -= err ⊗ U[j, j:]
which is the optimal update of the remaining columns for the output error ‖x (W - Ŵ)ᵀ‖². Updates are applied
lazily per batch of `gptq_block` columns (the paper's "lazy batch"; same result up to floating rounding).

The grid is the packed format's own: per row and block of `block_size` input channels, a scale and zero (RTN min/max
or HQQ) computed from the current, already error-corrected weights when the loop reaches the block's first column.
With `gptq_act_order` the columns are visited by decreasing H diagonal and the blocks keep their contiguous channel
ranges with scales/zeros computed from the unmodified weight before any feedback (GPTQModel's static groups): the
codes, scales and zeros are exactly the `QuantizedWeight` layout and every kernel reads them unchanged.

Numerics: H, its damping, Cholesky and inverse factor in float64, by column panels (lowbit.quant.cholesky; damping
raised x10 with a warning when H + damp is not positive definite); the column loop in float32 (as the paper's
code), each column's rounding in float64.
Dead inputs (H[j, j] == 0: the channel was always zero in calibration) get H[j, j] = 1 and are rounded to nearest
with no error fed to them: the paper's code sets W[:, j] = 0 instead, which is exact on the calibration data but wipes
every weight of a channel that is zero there and not at inference (an all-zero calibration batch zeroed MiniLM's
first layer, cosine 0.49 against RTN's 0.996).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import replace

import torch

from .checks import check_float_weight
from .cholesky import reversed_cholesky_panels, reversed_inverse
from .config import QuantConfig
from .format import QuantizedWeight, group_size_for, symmetric_zero
from .hessian import split_by_hessians
from .hqq import hqq_scale_zero
from .packing import pack_bits
from .rtn import rtn_scale_zero

_MAX_DAMP_RAISES = 6


def inverse_hessian_factor(h: torch.Tensor, damp: float, name: str = "weight",
                           dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, float]:
    """Upper Cholesky factor U of (H + λI)⁻¹ with λ = damp · mean(diag H), and the damp used; computed in float64
    by column panels (lowbit.quant.cholesky), returned in `dtype`.

    When H + λI is not positive definite (numerically), damp is raised tenfold (warning once per layer).
    Besides h and the result, M's float64 panels are alive (K = 5632: ~150 MB, freed as the inverse is solved).
    """
    mean_diag = float(h.diagonal().double().mean().clamp_min(1e-30))
    tried = damp
    for _ in range(_MAX_DAMP_RAISES):
        panels = reversed_cholesky_panels(h, tried * mean_diag)  # a constant diagonal: unchanged by the reversal
        upper = None if panels is None else reversed_inverse(panels, dtype)
        if upper is not None:
            if tried != damp:
                warnings.warn(f"lowbit GPTQ: the Hessian of {name} is not positive definite with "
                              f"gptq_damp={damp:g}; raised the damping to {tried:g}", stacklevel=2)
            return upper, tried
        tried *= 10
    raise ValueError(f"the Hessian of {name} is not positive definite even with damping {tried / 10:g}: "
                     "its calibration inputs are degenerate (check them for NaN/inf or constant channels)")


def _group_params(blocks: torch.Tensor, cfg: QuantConfig, scale_dtype: torch.dtype, hess: torch.Tensor | None = None):
    """Stored scale, zero (N, nb) for blocks (N, nb, g); zero None when symmetric. gptq_scales="clip" searches
    each block's clipping ratio against hess (K, K), the Hessian of these blocks' columns (nb * g == K)."""
    if cfg.gptq_scales == "hqq":
        return hqq_scale_zero(blocks.float(), cfg.bits, cfg, scale_dtype)
    if cfg.gptq_scales == "clip":
        from .awq import clip_rows

        n, nb, g = blocks.shape
        _, scale, zero = clip_rows(blocks.reshape(n, nb * g), hess, replace(cfg, block_size=-1 if nb == 1 else g))
        return scale, zero
    return rtn_scale_zero(blocks, cfg.bits, cfg.symmetric, scale_dtype)


def _round_column(w: torch.Tensor, s: torch.Tensor, z: torch.Tensor | None, bits: int):
    """Codes (N,) and their dequantized values (N,) in w's dtype for one column w (N,); s, z float64 (N,).

    The division and rounding are float64, as RTN's, so the codes are those the stored scale/zero define."""
    w64 = w.double()
    if z is None:
        half = symmetric_zero(bits)
        q = torch.round(w64 / s).clamp_(-half, half - 1)
        return (q + half).to(torch.uint8), (q * s).to(w.dtype)
    q = torch.round(w64 / s + z).clamp_(0, (1 << bits) - 1)
    return q.to(torch.uint8), ((q - z) * s).to(w.dtype)


def _lazy_block(group: int, k: int, block: int, static: bool) -> int:
    """Lazy-batch width such that a block's scale is always computed from fully updated columns."""
    if static or group >= k:
        return block
    if group <= block:
        return (block // group) * group
    return math.gcd(group, block)


def static_group_params(w: torch.Tensor, group: int, cfg: QuantConfig, scale_dtype: torch.dtype,
                        hess: torch.Tensor | None = None):
    """Scale, zero (N, nb) of every block of w (N, K) at once (act-order's static groups); hess (K, K)."""
    from .blocks import block_views

    parts, start = [], 0
    for b in block_views(w, group):
        k = b.shape[1] * b.shape[2]
        parts.append(_group_params(b.double(), cfg, scale_dtype, None if hess is None else hess[start:start + k,
                                                                                                  start:start + k]))
        start += k
    scale = torch.cat([p[0] for p in parts], 1)
    zero = None if parts[0][1] is None else torch.cat([p[1] for p in parts], 1)
    return scale, zero


def gptq_rows(w: torch.Tensor, h: torch.Tensor, cfg: QuantConfig, name: str = "weight"):
    """GPTQ for one weight (N, K) with input Hessian h (K, K): codes uint8 (N, K), scale (N, nb), zero or None.

    Scales/zeros are in cfg.scale_dtype; codes follow the format's rule w ≈ (q - zero) · scale per block.
    """
    n, k = w.shape
    if h.shape != (k, k):
        raise ValueError(f"{name}: Hessian shape {tuple(h.shape)} does not match the weight's K={k}")
    scale_dtype = cfg.scale_torch_dtype
    group = group_size_for(k, cfg.block_size)
    hess = h.detach()  # copied only when its dead columns are set: at K = 5632 a (K, K) copy is 127 MB
    dead = hess.diagonal() == 0
    if bool(dead.any()):
        hess = hess.clone()  # the caller's statistics stay as they are
        hess[dead, dead] = 1.0  # no coupling to the others: the column is rounded to nearest, its weight kept
    static = cfg.gptq_act_order
    perm = torch.argsort(hess.diagonal(), descending=True, stable=True) if static else torch.arange(k, device=w.device)
    group_hess = hess if static and cfg.gptq_scales == "clip" else None  # static groups' search: original order
    if static:
        hess = hess[perm][:, perm]
    upper, _ = inverse_hessian_factor(hess, cfg.gptq_damp, name, torch.float32)  # the loop's precision
    if cfg.gptq_scales != "clip" or static:
        hess = None  # only the dynamic groups' clipping search reads it again
    codes = torch.empty(n, k, dtype=torch.uint8, device=w.device)
    scale = torch.empty(n, math.ceil(k / group), dtype=scale_dtype, device=w.device)
    zero = None if cfg.symmetric else torch.empty_like(scale)
    for r0 in range(0, n, _ROW_CHUNK):  # rows are independent given H: one factor, the float copy by chunks
        rows = slice(r0, min(r0 + _ROW_CHUNK, n))
        wt = w[rows].detach().t().to(torch.float32, memory_format=torch.contiguous_format, copy=True)  # own copy
        if static:
            sc, zc = static_group_params(wt.t(), group, cfg, scale_dtype, group_hess)
            scale[rows] = sc
            if zero is not None:
                zero[rows] = zc
            wt = wt[perm]
        chunk = _gptq_loop(wt, upper, perm, group, scale[rows], None if zero is None else zero[rows], cfg, static,
                           hess)
        if static:
            codes[rows, perm] = chunk  # back to the original column order
        else:
            codes[rows] = chunk
    return codes, scale, zero


_ROW_CHUNK = 8192  # rows fitted at once: lm_head's 32000 x 2048 float32 copy would be 262 MB
_SUB_BATCH = 16  # columns whose rank-1 updates stay inside the sub-batch; a GEMM carries them to the batch's rest


def _gptq_loop(wt, upper, perm, group, scale, zero, cfg, static, hess):
    """The column loop with lazy batches (float32; rounding in float64) on wt = Wᵀ (K, N) float32 in visiting
    order, updated in place; fills scale/zero in place for dynamic groups; returns the codes (N, K) in visiting
    order.

    Works on Wᵀ: a column of W is then a contiguous row. Updates are lazy on two levels, the same result
    up to float rounding: a column's error updates the rest of its sub-batch of _SUB_BATCH columns (one BLAS ger
    on contiguous rows), a sub-batch's errors the rest of its batch (a GEMM), a batch's the remaining columns (a
    GEMM). Rank-1 updates over the whole batch cost 5x more on 5632-row weights; column-strided access 20x."""
    k, n = wt.shape
    upper = upper.float()
    codes = torch.empty(k, n, dtype=torch.uint8, device=wt.device)
    step = _lazy_block(group, k, cfg.gptq_block, static)
    # a dynamic group's first column must start a sub-batch: its scale is computed from fully updated columns
    sub = _SUB_BATCH if static or group >= k else math.gcd(_SUB_BATCH, group)
    groups = [j // group for j in perm.tolist()]  # block of each visited column (no device sync per column)
    s64 = z64 = None
    for i1 in range(0, k, step):
        i2 = min(i1 + step, k)
        w1, u1 = wt[i1:i2], upper[i1:i2, i1:i2]  # w1 is updated in place: it is wt's own rows
        err1 = torch.empty_like(w1)
        for j1 in range(0, i2 - i1, sub):
            j2 = min(j1 + sub, i2 - i1)
            for i in range(j1, j2):
                col = i1 + i
                g = groups[col]
                if not static and col % group == 0:
                    # the block's columns, all up to date: _lazy_block makes a block that reaches past i2 start at
                    # i1, before any of this batch's errors is pending
                    cols = wt[col:col + min(group, k - col)]
                    width = cols.shape[0]
                    sc, zc = _group_params(cols.t().double().unsqueeze(1), cfg, scale.dtype,
                                           None if hess is None else hess[col:col + width, col:col + width])
                    scale[:, g] = sc[:, 0]
                    if zero is not None:
                        zero[:, g] = zc[:, 0]
                if s64 is None or static or col % group == 0:
                    s64 = scale[:, g].double()
                    z64 = None if zero is None else zero[:, g].double()
                q, deq = _round_column(w1[i], s64, z64, cfg.bits)
                codes[col] = q
                err = (w1[i] - deq).div_(u1[i, i])
                w1[i:j2].addr_(u1[i, i:j2], err, alpha=-1)
                err1[i] = err
            if j2 < i2 - i1:
                w1[j2:].addmm_(u1[j1:j2, j2:].t(), err1[j1:j2], alpha=-1)
        if i2 < k:
            wt[i2:].addmm_(upper[i1:i2, i2:].t(), err1, alpha=-1)
    return codes.t()


def gptq_quantize(w: torch.Tensor, hessians: torch.Tensor | Sequence[torch.Tensor], cfg: QuantConfig,
                  name: str = "weight") -> QuantizedWeight:
    """Compress w (N, ...) with GPTQ given its input Hessians; returns the ordinary `QuantizedWeight`.

    hessians: one (K, K) matrix, or one per group of rows (grouped convolutions: G matrices, each for N/G rows),
    with K = prod(w.shape[1:]) in the weight's row-major flattening (for a conv: the order F.unfold lays out).
    """
    check_float_weight(w, name)
    if cfg.is_float:
        raise ValueError(f"{name}: GPTQ rounds to integers; bits=16 storage needs no calibration")
    shape = tuple(w.shape)
    w2d, hs, rows = split_by_hessians(w, hessians, name)
    parts = [gptq_rows(w2d[i * rows:(i + 1) * rows], h, cfg, name) for i, h in enumerate(hs)]
    codes, scale, zero = parts[0] if len(parts) == 1 else (  # one group: no (N, K) copy of the codes
        torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
        None if cfg.symmetric else torch.cat([p[2] for p in parts]))
    del parts
    return QuantizedWeight(packed=pack_bits(codes, cfg.bits), scale=scale, zero=zero, shape=shape, dtype=w.dtype,
                           bits=cfg.bits, block_size=cfg.block_size, symmetric=cfg.symmetric, method="gptq")
