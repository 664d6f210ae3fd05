"""Small-M (1..16) fused dequant GEMV with split-K: y = x @ dequant(W).T + bias, the float weight never stored.

At batch 1 a Linear layer is bound by the bytes of its weight, so the kernel's job is to keep every SM reading
packed words: programs tile N and also split K (SPLIT_K programs per N tile, partial sums reduced with fp32
atomic adds), each word is unpacked with shifts and dequantized in registers, and activations are read once per
tile. M == 1 uses a multiply + row-sum (no tensor cores needed); 2..16 rows go through `tl.dot` with M padded to 16.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..quant.format import ComputeWeight
from .triton_common import (
    ONE_GROUP_HEURISTIC,
    autotuning,
    check_inputs,
    config_dict,
    dequant,
    dequant_k_step,
    dot_acc,
    gemv_configs,
    ieee_dot,
    next_pow2,
    prune_configs,
    static_config,
    tile_scale_zero,
    unpack_codes,
)

_KEY = ["m_bucket", "N", "K", "CB", "GROUP", "stride_wn", "split_req"]


@triton.jit
def _gemv_row(x_row, w_ptr, scale_ptr, zero_ptr, offs_n, n_mask, t_start, t_end, K, GROUP, stride_wn, stride_wk,
              stride_sn, CB: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, ONE_GROUP: tl.constexpr):
    """One activation row against K tiles [t_start, t_end): (BLOCK_N,) fp32 partial dot products.

    Loads each packed word once ((BLOCK_K / per, BLOCK_N) tile), then for each of the per codes in a word
    (unrolled) shifts it out, dequantizes it and multiplies it with the matching strided slice of x.
    """
    PER: tl.constexpr = 32 // CB
    BLOCK_KW: tl.constexpr = BLOCK_K // PER
    kw_total = tl.cdiv(K, PER)
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for t in range(t_start, t_end):
        offs_kw = t * BLOCK_KW + tl.arange(0, BLOCK_KW)
        w_ptrs = w_ptr + offs_kw[:, None] * stride_wk + offs_n[None, :] * stride_wn
        words = tl.load(w_ptrs, mask=(offs_kw < kw_total)[:, None] & n_mask[None, :], other=0)  # (BLOCK_KW, BN)
        if ONE_GROUP:
            s, z = tile_scale_zero(scale_ptr, zero_ptr, offs_n, n_mask, offs_kw, K, t * BLOCK_K, GROUP, stride_sn,
                                   True)
        for p in tl.static_range(PER):
            k_idx = offs_kw * PER + p  # the p-th code of every word: a stride-PER slice of x
            if not ONE_GROUP:
                s, z = tile_scale_zero(scale_ptr, zero_ptr, offs_n, n_mask, k_idx, K, t * BLOCK_K, GROUP,
                                       stride_sn, False)
            w = dequant(unpack_codes(words, k_idx[:, None], CB), s, z)
            xk = tl.load(x_row + k_idx, mask=k_idx < K, other=0.0).to(tl.float32)
            acc += tl.sum(w * xk[:, None], axis=0)
    return acc


@triton.jit
def _gemv_rows_packed_dot(x_ptr, w_ptr, scale_ptr, zero_ptr, offs_m, m_mask, offs_n, n_mask, t_start, t_end, K,
                          GROUP, stride_xm, stride_wn, stride_wk, stride_sn, CB: tl.constexpr, IEEE: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                          ONE_GROUP: tl.constexpr):
    """BLOCK_M rows against K tiles [t_start, t_end) on tensor cores, each packed word loaded once: for each of
    the per codes of a word (unrolled), one tl.dot of a stride-per slice of x (BLOCK_M, BLOCK_K / per) with the
    dequantized codes (BLOCK_K / per, BLOCK_N). Needs BLOCK_K / per >= 16 (tl.dot's minimum K)."""
    PER: tl.constexpr = 32 // CB
    BLOCK_KW: tl.constexpr = BLOCK_K // PER
    kw_total = tl.cdiv(K, PER)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for t in range(t_start, t_end):
        offs_kw = t * BLOCK_KW + tl.arange(0, BLOCK_KW)
        w_ptrs = w_ptr + offs_kw[:, None] * stride_wk + offs_n[None, :] * stride_wn
        words = tl.load(w_ptrs, mask=(offs_kw < kw_total)[:, None] & n_mask[None, :], other=0)  # (BLOCK_KW, BN)
        if ONE_GROUP:
            s, z = tile_scale_zero(scale_ptr, zero_ptr, offs_n, n_mask, offs_kw, K, t * BLOCK_K, GROUP, stride_sn,
                                   True)
        for p in tl.static_range(PER):
            k_idx = offs_kw * PER + p
            if not ONE_GROUP:
                s, z = tile_scale_zero(scale_ptr, zero_ptr, offs_n, n_mask, k_idx, K, t * BLOCK_K, GROUP,
                                       stride_sn, False)
            w = dequant(unpack_codes(words, k_idx[:, None], CB), s, z)  # (BLOCK_KW, BLOCK_N) fp32; x is 0 past K
            a = tl.load(x_ptr + offs_m[:, None] * stride_xm + k_idx[None, :],
                        mask=m_mask[:, None] & (k_idx < K)[None, :], other=0.0)
            acc = dot_acc(a, w, acc, IEEE)
    return acc


@triton.heuristics(ONE_GROUP_HEURISTIC)
@triton.jit
def _gemv_a16w_kernel(
    # output: (M, N), fp32 workspace when SPLIT_K > 1 (zero-filled, atomically accumulated), else y itself
    out_ptr,
    # inputs: x (M, K) row-major; words (N, Kw) by strides; scale/zero fp32 (N, nb); bias (N,)
    x_ptr, w_ptr, scale_ptr, zero_ptr, bias_ptr,
    # sizes (m_bucket and split_req only key the autotuner / its pruning)
    M, N, K, GROUP, m_bucket, split_req,
    # strides
    stride_xm, stride_wn, stride_wk, stride_sn, stride_om,
    # quant params
    CB: tl.constexpr, HAS_BIAS: tl.constexpr, IEEE: tl.constexpr,
    # tuning
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
    ONE_GROUP: tl.constexpr,
):
    """out[m, n] (+)= sum_{k in this split} x[m, k] * (q[n, k] - zero[n, k // GROUP]) * scale[n, k // GROUP].

    Grid: (cdiv(N, BLOCK_N), SPLIT_K, cdiv(M, BLOCK_M)). The split owns a contiguous run of K tiles. When BLOCK_K
    divides GROUP (or one group spans K) a tile has one scale/zero per column, loaded once; otherwise they are
    gathered per element. BLOCK_M == 1: each word loaded once, codes unrolled, multiply + sum (no tensor
    cores: batch 1 is bound by weight bytes); BLOCK_M >= 16: tl.dot, per code slice of each word when
    BLOCK_K / per >= 16, else on the packed tile unpacked in registers (`unpack_tile`). fp32 accumulation throughout.
    """
    PER: tl.constexpr = 32 // CB
    pid_n = tl.program_id(0).to(tl.int64)
    pid_k = tl.program_id(1)
    pid_m = tl.program_id(2).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n_mask = offs_n < N
    m_mask = offs_m < M
    tiles = tl.cdiv(K, BLOCK_K)
    per_split = tl.cdiv(tiles, SPLIT_K)
    t_end = tl.minimum(pid_k * per_split + per_split, tiles)
    if BLOCK_M == 1:
        acc = _gemv_row(x_ptr + pid_m * stride_xm, w_ptr, scale_ptr, zero_ptr, offs_n, n_mask, pid_k * per_split,
                        t_end, K, GROUP, stride_wn, stride_wk, stride_sn, CB, BLOCK_N, BLOCK_K, ONE_GROUP)
    elif BLOCK_K // PER >= 16:
        acc = _gemv_rows_packed_dot(x_ptr, w_ptr, scale_ptr, zero_ptr, offs_m, m_mask, offs_n, n_mask,
                                    pid_k * per_split, t_end, K, GROUP, stride_xm, stride_wn, stride_wk, stride_sn,
                                    CB, IEEE, BLOCK_M, BLOCK_N, BLOCK_K, ONE_GROUP)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for t in range(pid_k * per_split, t_end):
            acc = dequant_k_step(acc, x_ptr, w_ptr, scale_ptr, zero_ptr, offs_m, m_mask, offs_n, n_mask, t, K, GROUP,
                                 stride_xm, stride_wn, stride_wk, stride_sn, CB, IEEE, BLOCK_K, BLOCK_N, ONE_GROUP)
    if HAS_BIAS:
        # only split 0 adds the bias; the others add zeros (same shapes in both branches)
        bias = tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32) * (pid_k == 0).to(tl.float32)
        if BLOCK_M == 1:
            acc += bias
        else:
            acc += bias[None, :]
    if BLOCK_M == 1:
        o_ptrs = out_ptr + pid_m * stride_om + offs_n
        o_mask = n_mask
    else:
        o_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
        o_mask = m_mask[:, None] & n_mask[None, :]
    if SPLIT_K == 1:
        tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=o_mask)
    else:
        tl.atomic_add(o_ptrs, acc, mask=o_mask)


_gemv_a16w_tuned = triton.autotune(
    configs=gemv_configs(), key=_KEY, prune_configs_by={"early_config_prune": prune_configs}, reset_to_zero=["out_ptr"]
)(_gemv_a16w_kernel)


def gemv_a16w(x: torch.Tensor, cw: ComputeWeight, bias: torch.Tensor | None = None, split_k: int | None = None,
              *, config: dict | None = None) -> torch.Tensor:
    """Fused dequant GEMV for small M: (M, K) float x (M, N) result, fp32 accumulation, returned in x.dtype.

    x: (M, K) float16/bfloat16/float32 (made contiguous); cw: ComputeWeight (either word layout, see
    `prepare_triton`) on x's device; bias: (N,) or None. Meant for M in 1..16 (any M works). split_k: force the
    number of K splits (None: autotuned on GPU, static choice in the interpreter). config: force a tile config
    {"BLOCK_N", "BLOCK_K", "SPLIT_K", "num_warps", "num_stages"} (tests, benchmarks).
    """
    x = check_inputs(x, cw, bias, "gemv_a16w")
    if split_k is not None and (isinstance(split_k, bool) or not isinstance(split_k, int) or split_k < 1):
        raise ValueError(f"gemv_a16w: split_k={split_k!r} must be a positive int or None")
    m, n, k = x.shape[0], cw.n, cw.k
    if m == 0:
        return x.new_zeros((0, n))
    args = dict(M=m, N=n, K=k, GROUP=cw.group_size, m_bucket=next_pow2(m), split_req=split_k or 0,
                CB=cw.container_bits, x_ptr=x)
    block_m = 1 if m == 1 else 16
    if config is None and autotuning():
        return _launch_tuned(x, cw, bias, args, block_m)
    cfg = dict(config) if config is not None else config_dict(static_config(gemv_configs(), args))
    if split_k is not None:
        cfg["SPLIT_K"] = split_k
    split = cfg["SPLIT_K"]
    out = torch.empty((m, n), dtype=x.dtype, device=x.device) if split == 1 else \
        torch.zeros((m, n), dtype=torch.float32, device=x.device)
    grid = (triton.cdiv(n, cfg["BLOCK_N"]), split, triton.cdiv(m, block_m))
    _gemv_a16w_kernel[grid](out, *_operands(x, cw, bias), m, n, k, cw.group_size, args["m_bucket"], split_k or 0,
                            *_strides(x, cw, out), CB=cw.container_bits, HAS_BIAS=bias is not None,
                            IEEE=ieee_dot(x.dtype), BLOCK_M=block_m, **cfg)
    return out.to(x.dtype)


def _launch_tuned(x, cw, bias, args, block_m):
    m, n = x.shape[0], cw.n
    # one fp32 workspace whatever SPLIT_K the tuner picks (SPLIT_K == 1 stores into it plainly)
    out = torch.zeros((m, n), dtype=torch.float32, device=x.device)

    def grid(meta):
        return (triton.cdiv(n, meta["BLOCK_N"]), meta["SPLIT_K"], triton.cdiv(m, block_m))

    _gemv_a16w_tuned[grid](out, *_operands(x, cw, bias), m, n, cw.k, cw.group_size, args["m_bucket"],
                           args["split_req"], *_strides(x, cw, out), CB=cw.container_bits, HAS_BIAS=bias is not None,
                           IEEE=ieee_dot(x.dtype), BLOCK_M=block_m)
    return out.to(x.dtype)


def _operands(x, cw, bias):
    return x, cw.qweight, cw.scale, cw.zero, bias if bias is not None else cw.scale


def _strides(x, cw, out):
    return x.stride(0), cw.qweight.stride(0), cw.qweight.stride(1), cw.scale.stride(0), out.stride(0)

