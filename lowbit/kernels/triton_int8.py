"""Dynamic int8 activations x 8/4/2-bit weights (W8A8, W4A8): int8 tensor-core dots with int32 accumulation.

Each activation row is quantized to int8 with its own scale (`quantize_rows_int8`, symmetric absmax / 127). The
GEMM multiplies int8 x int8 -> int32 with `tl.dot` per K tile and applies the scales in fp32:

    y[m, n] = xs[m] * sum_blocks scale[n, b] * (sum_{k in b} xq[m, k] * q'[n, k]  -  z'[n, b] * sum_{k in b} xq[m, k])

with q' = q - 2**(cb-1) (codes shifted into int8 range: 8-bit codes 0..255 do not fit int8) and z' = zero -
2**(cb-1), so (q - zero) = (q' - z') exactly; the zero term needs the per-block activation row sums, which
the quantization kernel produces alongside xq (zeros may be fractional, as HQQ's are). Per-channel weights keep
the int32 sum over all of K and scale once at the end.

Static W8A8 (`gemm_a8w_static`, for `lowbit.quantize_static` models): the same GEMM, with every row quantized by
one FIXED step a instead of its absmax (xq = clamp(round_half_even(x / a), -c, c), `quantize_static_int8`), so
xs[m] = a and no range pass runs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..quant.format import ComputeWeight, QuantizedWeight
from .triton_common import (
    ONE_GROUP_HEURISTIC,
    a8w_configs,
    check_inputs,
    grouped_tile,
    interpreting,
    launch,
    next_pow2,
    prune_configs,
    supports_triton,
    tile_fits_group,
    unpack_tile,
)

_KEY = ["m_bucket", "N", "K", "CB", "GROUP", "stride_wn"]
_GROUP_M = 8
_QUANT_BLOCK = 1024  # activation elements per step of the row-quantization loop


@triton.jit
def _quantize_rows_int8_kernel(
    # outputs: xq int8 (M, K), scale fp32 (M,), block row sums int32 (M, NB)
    xq_ptr, scale_ptr, sums_ptr,
    # inputs: x (M, K) float, row-major
    x_ptr,
    # sizes and strides
    K, GROUP, NB, stride_xm, stride_qm, stride_sm,
    # tuning
    BLOCK: tl.constexpr,
):
    """scale[m] = max_k |x[m, k]| / 127;  xq[m, k] = round_half_away(x[m, k] * 127 / max_k |x[m, k]|);
    sums[m, g] = sum of xq[m, k] over block g (k in [g * GROUP, (g + 1) * GROUP)): the GEMM's zero-point term.

    One program per row, two passes over K (absmax, then quantize block by block). An all-zero row gets scale 0
    and codes 0.
    """
    row = tl.program_id(0).to(tl.int64)
    amax = tl.zeros((BLOCK,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK):
        offs = k0 + tl.arange(0, BLOCK)
        v = tl.load(x_ptr + row * stride_xm + offs, mask=offs < K, other=0.0).to(tl.float32)
        amax = tl.maximum(amax, tl.abs(v))
    absmax = tl.max(amax, axis=0)
    inv = tl.where(absmax > 0, 127.0 / tl.where(absmax > 0, absmax, 1.0), 0.0)  # no 1/0 on all-zero rows
    for g in range(0, NB):
        k_end = tl.minimum(g * GROUP + GROUP, K)
        block_sum = tl.zeros((BLOCK,), dtype=tl.int32)
        for k0 in range(g * GROUP, k_end, BLOCK):
            offs = k0 + tl.arange(0, BLOCK)
            v = tl.load(x_ptr + row * stride_xm + offs, mask=offs < k_end, other=0.0).to(tl.float32) * inv
            q = tl.where(v >= 0, tl.floor(v + 0.5), tl.ceil(v - 0.5)).to(tl.int32)
            tl.store(xq_ptr + row * stride_qm + offs, q.to(tl.int8), mask=offs < k_end)
            block_sum += q  # 0 where masked
        tl.store(sums_ptr + row * stride_sm + g, tl.sum(block_sum, axis=0))
    tl.store(scale_ptr + row, absmax / 127.0)


def quantize_rows_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8 quantization: x (M, K) float -> (xq int8 (M, K), x_scale fp32 (M,)).

    x ~= xq * x_scale[:, None]; x_scale = absmax / 127 per row (0 for an all-zero row); rounding half away from
    zero. Runs as a Triton kernel (CUDA, or CPU under TRITON_INTERPRET=1).
    """
    xq, scale, _ = quantize_rows_int8_with_sums(x, group_size=None)
    return xq, scale


def quantize_rows_int8_with_sums(x: torch.Tensor, group_size: int | None) -> tuple[torch.Tensor, ...]:
    """`quantize_rows_int8` plus the int32 (M, ceil(K / group_size)) sums of xq over each block of group_size
    channels (one block when group_size is None), which `gemm_a8w` needs for the weight zero-point term."""
    if not isinstance(x, torch.Tensor) or x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"quantize_rows_int8: x must be a float16, bfloat16 or float32 tensor, got {got}")
    if x.dim() != 2:
        raise ValueError(f"quantize_rows_int8: x must be 2-D (M, K), got shape {tuple(x.shape)}")
    if x.device.type != "cuda" and not interpreting():
        raise ValueError(f"quantize_rows_int8: x is on {x.device}; Triton needs CUDA (or TRITON_INTERPRET=1)")
    x = x.contiguous()
    m, k = x.shape
    group = k if group_size is None else min(group_size, k)
    nb = -(-k // group) if k else 1
    xq = torch.empty((m, k), dtype=torch.int8, device=x.device)
    scale = torch.zeros((m,), dtype=torch.float32, device=x.device)
    sums = torch.zeros((m, nb), dtype=torch.int32, device=x.device)
    if m and k:
        block = min(_QUANT_BLOCK, next_pow2(group))
        _quantize_rows_int8_kernel[(m,)](xq, scale, sums, x, k, group, nb, x.stride(0), xq.stride(0), sums.stride(0),
                                         BLOCK=block, num_warps=4 if block >= 512 else 1)
    return xq, scale, sums


@triton.jit
def _quantize_static_kernel(
    xq_ptr, sums_ptr, x_ptr, step, clamp, K, GROUP, NB, stride_xm, stride_qm, stride_sm, BLOCK: tl.constexpr,
):
    """xq[m, k] = clamp(round_half_even(x[m, k] / step), -clamp, clamp); sums[m, g] = sum of xq over block g.
    One program per row; the same codes as `lowbit.quant.static_int8.quantize_symmetric` (IEEE division)."""
    row = tl.program_id(0).to(tl.int64)
    for g in range(0, NB):
        k_end = tl.minimum(g * GROUP + GROUP, K)
        block_sum = tl.zeros((BLOCK,), dtype=tl.int32)
        for k0 in range(g * GROUP, k_end, BLOCK):
            offs = k0 + tl.arange(0, BLOCK)
            v = tl.math.div_rn(tl.load(x_ptr + row * stride_xm + offs, mask=offs < k_end, other=0.0).to(tl.float32),
                               step)
            r = tl.floor(v + 0.5)
            r = tl.where((r - v == 0.5) & (r - 2.0 * tl.floor(r * 0.5) != 0.0), r - 1.0, r)  # ties to even
            r = tl.minimum(tl.maximum(r, -clamp), clamp)
            q = tl.where(r == r, r, 0.0).to(tl.int32)  # NaN: code 0 (the caller marks the row)
            tl.store(xq_ptr + row * stride_qm + offs, q.to(tl.int8), mask=offs < k_end)
            block_sum += tl.where(offs < k_end, q, 0)
        tl.store(sums_ptr + row * stride_sm + g, tl.sum(block_sum, axis=0))


def quantize_static_int8(x: torch.Tensor, step: float, clamp: int = 127,
                         group_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x (M, K) float -> (xq int8 (M, K) with the fixed step and clamp, int32 block sums (M, NB)) on x's device."""
    if x.dim() != 2 or x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"quantize_static_int8: x must be a 2-D float tensor, got {x.dtype} {tuple(x.shape)}")
    if x.device.type != "cuda" and not interpreting():
        raise ValueError(f"quantize_static_int8: x is on {x.device}; Triton needs CUDA (or TRITON_INTERPRET=1)")
    if not (step > 0 and 1 <= clamp <= 127):
        raise ValueError(f"quantize_static_int8: step must be > 0 and clamp in 1..127, got {step}, {clamp}")
    x = x.contiguous()
    m, k = x.shape
    group = k if group_size is None else min(group_size, k)
    nb = -(-k // group) if k else 1
    xq = torch.empty((m, k), dtype=torch.int8, device=x.device)
    sums = torch.zeros((m, nb), dtype=torch.int32, device=x.device)
    if m and k:
        block = min(_QUANT_BLOCK, next_pow2(group))
        _quantize_static_kernel[(m,)](xq, sums, x, float(step), float(clamp), k, group, nb, x.stride(0),
                                      xq.stride(0), sums.stride(0), BLOCK=block, num_warps=4 if block >= 512 else 1)
    return xq, sums


@triton.jit
def _block_scale_zero(scale_ptr, zero_ptr, offs_n, n_mask, g, stride_sn, OFFSET: tl.constexpr):
    """(BLOCK_N,) scale and shifted zero z' = zero - OFFSET of block g (0 past N)."""
    s = tl.load(scale_ptr + offs_n * stride_sn + g, mask=n_mask, other=0.0).to(tl.float32)
    zc = tl.load(zero_ptr + offs_n * stride_sn + g, mask=n_mask, other=0.0).to(tl.float32) - OFFSET  # fp32: exact
    return s, zc


@triton.heuristics({**ONE_GROUP_HEURISTIC, "PER_CHANNEL": lambda a: a["GROUP"] >= a["K"]})
@triton.jit
def _gemm_a8w_kernel(
    # output: y (M, N) in x's dtype
    out_ptr,
    # inputs: xq int8 (M, K), x_scale fp32 (M,), xq block sums int32 (M, nb); words (N, Kw) by strides;
    # scale/zero fp32 (N, nb); bias (N,)
    xq_ptr, xs_ptr, xsum_ptr, w_ptr, scale_ptr, zero_ptr, bias_ptr,
    # sizes (m_bucket only keys the autotuner)
    M, N, K, GROUP, m_bucket,
    # strides
    stride_xm, stride_sum, stride_wn, stride_wk, stride_sn, stride_om,
    # quant params
    CB: tl.constexpr, HAS_BIAS: tl.constexpr,
    # tuning
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    ONE_GROUP: tl.constexpr, PER_CHANNEL: tl.constexpr,
):
    """See the module docstring for the math. Grid: (cdiv(M, BLOCK_M) * cdiv(N, BLOCK_N),), grouped order.

    Constraint: a K tile lies in one weight block (BLOCK_K divides GROUP, or one group per row), so each tile's
    int32 dot shares one scale and zero per column.
    """
    tl.static_assert(ONE_GROUP, "gemm_a8w needs BLOCK_K to divide the group size (or a per-channel weight)")
    tl.static_assert(BLOCK_K >= 32, "int8 tl.dot needs BLOCK_K >= 32")
    PER: tl.constexpr = 32 // CB
    OFFSET: tl.constexpr = 1 << (CB - 1)
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.max_contiguous(tl.multiple_of(pid_n * BLOCK_N + tl.arange(0, BLOCK_N), BLOCK_N), BLOCK_N)
    m_mask = offs_m < M
    n_mask = offs_n < N
    # per channel: one int32 accumulator over all of K; blocked: fp32 accumulator, scaled per tile. The
    # activation block sums come from the quantizer: summing the int8 tile here cost ~450 B/thread of spills.
    if PER_CHANNEL:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    kw_total = tl.cdiv(K, PER)
    for t in range(0, tl.cdiv(K, BLOCK_K)):
        offs_k = t * BLOCK_K + tl.arange(0, BLOCK_K)
        k_mask = offs_k < K
        a = tl.load(xq_ptr + offs_m[:, None] * stride_xm + offs_k[None, :],
                    mask=m_mask[:, None] & k_mask[None, :], other=0)
        offs_kw = t * (BLOCK_K // PER) + tl.arange(0, BLOCK_K // PER)
        w_ptrs = w_ptr + offs_kw[:, None] * stride_wk + offs_n[None, :] * stride_wn
        words = tl.load(w_ptrs, mask=(offs_kw < kw_total)[:, None] & n_mask[None, :], other=0)  # packed tile
        qs = (unpack_tile(words, CB, BLOCK_K, BLOCK_N) - OFFSET).to(tl.int8)  # (BLOCK_K, BLOCK_N) in int8 range
        if PER_CHANNEL:
            acc = tl.dot(a, qs, acc, out_dtype=tl.int32)  # exact int32
        else:
            d = tl.dot(a, qs, out_dtype=tl.int32)  # exact int32 for this tile
            g = (t * BLOCK_K) // GROUP
            s, zc = _block_scale_zero(scale_ptr, zero_ptr, offs_n, n_mask, g, stride_sn, OFFSET)
            # the block's zero term z' * sum_k xq enters once, with the tile that opens the block
            opens = ((t * BLOCK_K) % GROUP == 0).to(tl.float32)
            xsum = tl.load(xsum_ptr + offs_m * stride_sum + g, mask=m_mask, other=0).to(tl.float32) * opens
            acc += (d.to(tl.float32) - xsum[:, None] * zc[None, :]) * s[None, :]
    if PER_CHANNEL:
        s, zc = _block_scale_zero(scale_ptr, zero_ptr, offs_n, n_mask, 0, stride_sn, OFFSET)
        xsum = tl.load(xsum_ptr + offs_m * stride_sum, mask=m_mask, other=0).to(tl.float32)
        acc = (acc.to(tl.float32) - xsum[:, None] * zc[None, :]) * s[None, :]
    acc *= tl.load(xs_ptr + offs_m, mask=m_mask, other=0.0)[:, None]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    o_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


_gemm_a8w_tuned = triton.autotune(
    configs=a8w_configs(), key=_KEY, prune_configs_by={"early_config_prune": prune_configs}
)(_gemm_a8w_kernel)


def supports_a8w(w: ComputeWeight | QuantizedWeight) -> str | None:
    """None when `gemm_a8w` can serve this weight, else why not: on top of `supports_triton`, each K tile of an
    int8 dot (>= 32 codes) must lie in one block, so the block size must be a multiple of 32 (or per channel)."""
    reason = supports_triton(w)
    if reason is not None:
        return reason
    if w.group_size < w.k and w.group_size % 32:
        return (f"block size {w.group_size} is not a multiple of 32: int8 tensor-core tiles (K >= 32) would span "
                "two blocks; use gemv_a16w/gemm_a16w or a block size of 32, 64, 128, ...")
    return None


def gemm_a8w(x: torch.Tensor, cw: ComputeWeight, bias: torch.Tensor | None = None, *,
             config: dict | None = None) -> torch.Tensor:
    """Dynamic-int8-activation GEMM (W8A8 / W4A8 / W2A8): (M, K) float x (M, N) in x.dtype.

    x: (M, K) float16/bfloat16/float32, quantized per row with `quantize_rows_int8` on each call; cw: ComputeWeight
    (2/4/8-bit container, either word layout; block size a multiple of 32 or per channel, see `supports_a8w`) on
    x's device; bias: (N,) or None. Accuracy is that of int8
    activations (per-row absmax), not of x itself. config: force {"BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps",
    "num_stages"} where BLOCK_K must divide the group size unless the weight is per-channel; None: autotuned on GPU,
    static choice in the interpreter.
    """
    x = check_inputs(x, cw, bias, "gemm_a8w")
    m, n, k = x.shape[0], cw.n, cw.k
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    if m == 0:
        return out
    reason = supports_a8w(cw)
    if reason is not None:
        raise ValueError(f"gemm_a8w: {reason}")
    if config is not None and config["BLOCK_K"] < 32:
        raise ValueError(f"gemm_a8w: BLOCK_K={config['BLOCK_K']} is too small for an int8 tl.dot; use >= 32")
    if config is not None and not tile_fits_group(config["BLOCK_K"], cw.group_size, k):
        raise ValueError(f"gemm_a8w: BLOCK_K={config['BLOCK_K']} does not divide group_size={cw.group_size}; "
                         "pick a BLOCK_K that does (32 does)")
    xq, xs, xsum = quantize_rows_int8_with_sums(x, cw.group_size)
    return _launch_a8w(out, xq, xs, xsum, cw, bias, config)


def gemm_a8w_static(x: torch.Tensor, cw: ComputeWeight, step: float, clamp: int = 127,
                    bias: torch.Tensor | None = None, *, config: dict | None = None) -> torch.Tensor:
    """Static W8A8 GEMM: (M, K) float x the weight -> (M, N) in x.dtype, every activation row quantized with the
    fixed step (`quantize_static_int8`) instead of its own absmax; otherwise `gemm_a8w` (same kernel, weights and
    config rules)."""
    x = check_inputs(x, cw, bias, "gemm_a8w_static")
    out = torch.empty((x.shape[0], cw.n), dtype=x.dtype, device=x.device)
    if x.shape[0] == 0:
        return out
    reason = supports_a8w(cw)
    if reason is not None:
        raise ValueError(f"gemm_a8w_static: {reason}")
    xq, xsum = quantize_static_int8(x, step, clamp, cw.group_size)
    xs = torch.full((x.shape[0],), float(step), dtype=torch.float32, device=x.device)
    return _launch_a8w(out, xq, xs, xsum, cw, bias, config)


def _launch_a8w(out, xq, xs, xsum, cw: ComputeWeight, bias, config):
    """Run the GEMM kernel on quantized activations (xq, per-row scale xs, block sums xsum) into out."""
    m, n, k = xq.shape[0], cw.n, cw.k
    args = (out, xq, xs, xsum, cw.qweight, cw.scale, cw.zero, bias if bias is not None else cw.scale,
            m, n, k, cw.group_size, next_pow2(m),
            xq.stride(0), xsum.stride(0), cw.qweight.stride(0), cw.qweight.stride(1), cw.scale.stride(0), out.stride(0))
    consts = dict(CB=cw.container_bits, HAS_BIAS=bias is not None, GROUP_M=_GROUP_M)

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)

    named = dict(M=m, N=n, K=k, GROUP=cw.group_size, CB=cw.container_bits, x_ptr=xq)
    launch(_gemm_a8w_kernel, _gemm_a8w_tuned, a8w_configs(), grid, args, consts, named, config)
    return out
