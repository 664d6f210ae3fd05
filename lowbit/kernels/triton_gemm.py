"""Large-M fused dequant GEMM on tensor cores: y = x @ dequant(W).T + bias, the float weight never stored.

Triton tutorial 03's tiled matmul (grouped program order for L2 reuse, pipelined K loop) with the weight tile
built in registers: int32 words are loaded, unpacked with shifts, dequantized with the tile's per-column
scale/zero and cast to x's dtype right before `tl.dot`. fp32 accumulation; fp32 activations use IEEE dots.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..quant.format import ComputeWeight
from .triton_common import (
    ONE_GROUP_HEURISTIC,
    check_inputs,
    dequant_k_step,
    gemm_configs,
    grouped_tile,
    ieee_dot,
    launch,
    next_pow2,
    prune_configs,
)

_KEY = ["m_bucket", "N", "K", "CB", "GROUP", "stride_wn"]
_GROUP_M = 8  # programs sharing a weight column panel run together (L2 reuse), as in tutorial 03


@triton.heuristics(ONE_GROUP_HEURISTIC)
@triton.jit
def _gemm_a16w_kernel(
    # output: y (M, N) in x's dtype
    out_ptr,
    # inputs: x (M, K) row-major; words (N, Kw) by strides; scale/zero fp32 (N, nb); bias (N,)
    x_ptr, w_ptr, scale_ptr, zero_ptr, bias_ptr,
    # sizes (m_bucket only keys the autotuner)
    M, N, K, GROUP, m_bucket,
    # strides
    stride_xm, stride_wn, stride_wk, stride_sn, stride_om,
    # quant params
    CB: tl.constexpr, HAS_BIAS: tl.constexpr, IEEE: tl.constexpr,
    # tuning
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    ONE_GROUP: tl.constexpr,
):
    """y[m, n] = sum_k x[m, k] * (q[n, k] - zero[n, k // GROUP]) * scale[n, k // GROUP] + bias[n].

    Grid: (cdiv(M, BLOCK_M) * cdiv(N, BLOCK_N),), grouped GROUP_M row panels at a time. The packed word tile
    (BLOCK_K / per, BLOCK_N) is loaded, unpacked and dequantized in fp32 registers, cast to x's dtype for the
    dot. ONE_GROUP (BLOCK_K divides GROUP, or one group per row): a single scale/zero row per tile; else gathered
    per element.
    """
    tl.static_assert(BLOCK_K >= 16, "tl.dot needs BLOCK_K >= 16")
    tl.static_assert(BLOCK_K >= 32 // CB, "a K tile must hold at least one whole word")
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    # contiguity hints (true by construction) let loads/stores along N vectorize, as gemlite and tutorial 03 do
    offs_n = tl.max_contiguous(tl.multiple_of(pid_n * BLOCK_N + tl.arange(0, BLOCK_N), BLOCK_N), BLOCK_N)
    m_mask = offs_m < M
    n_mask = offs_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for t in range(0, tl.cdiv(K, BLOCK_K)):
        acc = dequant_k_step(acc, x_ptr, w_ptr, scale_ptr, zero_ptr, offs_m, m_mask, offs_n, n_mask, t, K, GROUP,
                             stride_xm, stride_wn, stride_wk, stride_sn, CB, IEEE, BLOCK_K, BLOCK_N, ONE_GROUP)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    o_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


_gemm_a16w_tuned = triton.autotune(
    configs=gemm_configs(), key=_KEY, prune_configs_by={"early_config_prune": prune_configs}
)(_gemm_a16w_kernel)


def gemm_a16w(x: torch.Tensor, cw: ComputeWeight, bias: torch.Tensor | None = None, *,
              config: dict | None = None) -> torch.Tensor:
    """Fused dequant tensor-core GEMM for large M: (M, K) float x (M, N) result in x.dtype, fp32 accumulation.

    x: (M, K) float16/bfloat16/float32 (made contiguous); cw: ComputeWeight (either word layout, see
    `prepare_triton`) on x's device; bias: (N,) or None. Correct for any M; fastest for M >= 32 (small M: use
    `gemv_a16w`). config: force {"BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages"} (tests, benchmarks);
    None: autotuned on GPU (key: M bucket, N, K, container bits, group), static choice in the interpreter.
    """
    x = check_inputs(x, cw, bias, "gemm_a16w")
    m, n, k = x.shape[0], cw.n, cw.k
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    if m == 0:
        return out
    args = (out, x, cw.qweight, cw.scale, cw.zero, bias if bias is not None else cw.scale,
            m, n, k, cw.group_size, next_pow2(m),
            x.stride(0), cw.qweight.stride(0), cw.qweight.stride(1), cw.scale.stride(0), out.stride(0))
    consts = dict(CB=cw.container_bits, HAS_BIAS=bias is not None, IEEE=ieee_dot(x.dtype), GROUP_M=_GROUP_M)
    if config is not None and config["BLOCK_K"] < 16:
        raise ValueError(f"gemm_a16w: BLOCK_K={config['BLOCK_K']} is too small for tl.dot; use >= 16")

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)

    named = dict(M=m, N=n, K=k, GROUP=cw.group_size, CB=cw.container_bits, x_ptr=x)
    launch(_gemm_a16w_kernel, _gemm_a16w_tuned, gemm_configs(), grid, args, consts, named, config)
    return out
