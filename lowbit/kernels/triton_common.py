"""What every Triton kernel family shares: the one in-register dequant helper, input checks, the named autotune
config lists with their pruning, and the capability checks (`available_triton`, `supports_triton`).

Weights arrive as a `lowbit.quant.ComputeWeight`: qweight int32 (N, Kw) with Kw = ceil(K / per), per = 32 // cb
codes per word packed along K (code k at bits [(k % per) * cb, ...) of word k // per), scale/zero float32 (N, nb).
The kernels read qweight through its two strides, so a weight whose words are stored transposed ((Kw, N) memory,
N fastest: coalesced loads along N, as gemlite stores them) is served by the same kernels; `prepare_triton` builds
that layout once at load.

Triton is optional: this module imports without it (`available_triton()` is then False); the `@triton.jit` helper
exists only when Triton does.
"""

from __future__ import annotations

import functools
import os
from dataclasses import replace

import torch

from ..quant.format import ComputeWeight, QuantizedWeight
from ..quant.formats import format_refusal

try:
    import triton
    import triton.language as tl
except ImportError:  # Triton is optional: available_triton() reports False and no kernel is defined
    triton = None
    tl = None

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
SCALE_DTYPES = (torch.float32, torch.float16)  # scale/zero as kernels read them (fp16 only via prepare_triton)
# Shared memory assumed when no CUDA device can be asked (the interpreter): H100's opt-in limit per block.
_DEFAULT_SMEM_BYTES = 227 * 1024


def interpreting() -> bool:
    """True when TRITON_INTERPRET=1 (kernels run in numpy on CPU tensors). Read at call time, never at import."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def autotuning() -> bool:
    """Launchers autotune (benchmark configs on the device) unless interpreting, where there is no device to time."""
    return not interpreting()


def available_triton() -> bool:
    """Can this process run the Triton kernels: Triton importable and a CUDA device or TRITON_INTERPRET=1."""
    if triton is None:
        return False
    return interpreting() or torch.cuda.is_available()


def supports_triton(w: ComputeWeight | QuantizedWeight) -> str | None:
    """None when the Triton kernels can serve this weight, else the reason they cannot."""
    if format_refusal(w):
        return format_refusal(w)
    if isinstance(w, QuantizedWeight):
        if w.is_float:
            return f"bits={w.bits} is float16 storage, not integer codes; use a dense float kernel"
        bits, cb = w.bits, (2 if w.bits == 2 else 4 if w.bits <= 4 else 8)
    elif isinstance(w, ComputeWeight):
        bits, cb = w.bits, w.container_bits
    else:
        return f"expected a ComputeWeight or QuantizedWeight, got {type(w).__name__}"
    if not 2 <= bits <= 8:
        return f"bits={bits} is outside 2..8"
    if cb not in (2, 4, 8) or bits > cb:
        return f"container_bits={cb} cannot hold bits={bits}: use a 2, 4 or 8-bit container"
    return None


def prepare_triton(cw: ComputeWeight, scale_dtype: torch.dtype | None = None) -> ComputeWeight:
    """The weight in the layout the Triton kernels read fastest; runs once at load.

    qweight: the same (N, Kw) int32 words stored transposed, memory (Kw, N) with N fastest, so weight-tile loads
    are coalesced along N (gemlite's layout); every launcher reads qweight by strides and accepts either layout.
    scale_dtype: None keeps float32 scale/zero; torch.float16 halves their bytes (10% of an int4 block-128
    GEMV's traffic, a third of an int2 block-64 one). It is lossless when the QuantizedWeight stored float16
    scales and zeros (QuantConfig's default): pass `qw.scale.dtype`.
    """
    if not isinstance(cw, ComputeWeight):
        raise TypeError(f"prepare_triton expects a ComputeWeight (QuantizedWeight.compute_layout()), got {type(cw)}")
    if scale_dtype not in (None, *SCALE_DTYPES):
        raise ValueError(f"prepare_triton: scale_dtype={scale_dtype} is not supported; use None, torch.float16 or "
                         "torch.float32")
    dtype = scale_dtype or cw.scale.dtype
    return replace(cw, qweight=cw.qweight.t().contiguous().t(), scale=cw.scale.to(dtype).contiguous(),
                   zero=cw.zero.to(dtype).contiguous())


def check_inputs(x: torch.Tensor, cw: ComputeWeight, bias: torch.Tensor | None, name: str) -> torch.Tensor:
    """Validate a launcher's operands; returns x made contiguous. Raises TypeError/ValueError naming the problem."""
    if not isinstance(cw, ComputeWeight):
        raise TypeError(f"{name}: weight must be a ComputeWeight (QuantizedWeight.compute_layout()), got {type(cw)}")
    if not isinstance(x, torch.Tensor) or x.dtype not in FLOAT_DTYPES:
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"{name}: x must be a float16, bfloat16 or float32 tensor, got {got}")
    if x.dim() != 2 or x.shape[1] != cw.k:
        raise ValueError(f"{name}: x has shape {tuple(x.shape)}; expected (M, {cw.k}) for a ({cw.n}, {cw.k}) weight")
    reason = supports_triton(cw)
    if reason is not None:
        raise ValueError(f"{name}: {reason}")
    per = 32 // cw.container_bits
    nb = -(-cw.k // cw.group_size)
    if cw.qweight.dtype != torch.int32 or tuple(cw.qweight.shape) != (cw.n, -(-cw.k // per)):
        raise ValueError(f"{name}: qweight must be int32 ({cw.n}, {-(-cw.k // per)}), got {cw.qweight.dtype} "
                         f"{tuple(cw.qweight.shape)}")
    for t_name in ("scale", "zero"):
        t = getattr(cw, t_name)
        if t.dtype != cw.scale.dtype or t.dtype not in SCALE_DTYPES or tuple(t.shape) != (cw.n, nb) \
                or not t.is_contiguous():
            raise ValueError(f"{name}: {t_name} must be contiguous float32 (or float16, both alike) ({cw.n}, {nb}), "
                             f"got {t.dtype} {tuple(t.shape)}")
    tensors = {"qweight": cw.qweight, "scale": cw.scale, "zero": cw.zero}
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (cw.n,):
            raise ValueError(f"{name}: bias must have shape ({cw.n},), got {getattr(bias, 'shape', bias)}")
        tensors["bias"] = bias
    for t_name, t in tensors.items():
        if t.device != x.device:
            raise ValueError(f"{name}: x is on {x.device} but {t_name} is on {t.device}; move both to one device")
    if x.device.type != "cuda" and not interpreting():
        raise ValueError(f"{name}: Triton kernels need CUDA tensors (x is on {x.device}); set TRITON_INTERPRET=1 "
                         "to run them on CPU in the interpreter")
    return x.contiguous()


def ieee_dot(dtype: torch.dtype) -> bool:
    """Dot in fp32 IEEE: for fp32 activations (tf32 would lose 13 mantissa bits), and for bf16 in the
    interpreter, whose numpy tl.dot cannot multiply bf16 (stored there as uint16)."""
    return dtype == torch.float32 or (dtype == torch.bfloat16 and interpreting())


def next_pow2(m: int) -> int:
    """The autotune bucket of M: the next power of two (1, 2, 4, ... )."""
    return 1 << max(0, (int(m) - 1).bit_length())


@functools.cache
def _smem_limit(device_index: int) -> int:
    props = torch.cuda.get_device_properties(device_index)
    return int(getattr(props, "shared_memory_per_block_optin", 0) or _DEFAULT_SMEM_BYTES)


def smem_limit() -> int:
    """Shared memory per block on the current CUDA device (asked at call time, cached), else the H100 value."""
    if torch.cuda.is_available() and not interpreting():
        return _smem_limit(torch.cuda.current_device())
    return _DEFAULT_SMEM_BYTES


def _cfg(num_warps: int, num_stages: int, **kw):
    return triton.Config(kw, num_warps=num_warps, num_stages=num_stages)


def gemv_configs() -> list:
    """Split-K GEMV (M <= 16): per BLOCK_K (which should divide the group), a few N widths and K splits, sized so
    an 8192-wide layer launches several programs per SM of a 132-SM H100 at batch 1."""
    rows = {  # BLOCK_K: [(BLOCK_N, SPLIT_K, num_warps, num_stages), ...]
        32: [(64, 8, 4, 2), (128, 4, 4, 3), (32, 16, 2, 2)],
        64: [(64, 8, 4, 2), (128, 4, 4, 3), (32, 16, 4, 2), (256, 2, 8, 2)],
        128: [(64, 4, 4, 2), (128, 4, 8, 2), (32, 8, 2, 2), (128, 2, 4, 3), (64, 8, 4, 3)],
        256: [(64, 1, 4, 2), (64, 2, 4, 2), (64, 4, 4, 2), (32, 4, 4, 3)],
        512: [(64, 2, 4, 1), (64, 4, 8, 3)],
    }
    return [_cfg(w, st, BLOCK_N=bn, BLOCK_K=bk, SPLIT_K=sk) for bk, opts in rows.items() for bn, sk, w, st in opts]


def gemm_configs() -> list:
    """Tiled tensor-core GEMM (large M), Triton tutorial 03's Hopper-friendly shapes plus small-M tiles."""
    return [
        _cfg(8, 3, BLOCK_M=128, BLOCK_N=256, BLOCK_K=64), _cfg(8, 4, BLOCK_M=128, BLOCK_N=128, BLOCK_K=64),
        _cfg(4, 4, BLOCK_M=128, BLOCK_N=128, BLOCK_K=32), _cfg(4, 4, BLOCK_M=64, BLOCK_N=128, BLOCK_K=64),
        _cfg(4, 4, BLOCK_M=64, BLOCK_N=256, BLOCK_K=32), _cfg(4, 4, BLOCK_M=128, BLOCK_N=64, BLOCK_K=64),
        _cfg(4, 5, BLOCK_M=64, BLOCK_N=64, BLOCK_K=64), _cfg(4, 4, BLOCK_M=32, BLOCK_N=128, BLOCK_K=128),
        _cfg(4, 4, BLOCK_M=16, BLOCK_N=128, BLOCK_K=128), _cfg(4, 4, BLOCK_M=64, BLOCK_N=64, BLOCK_K=16),
        _cfg(4, 4, BLOCK_M=16, BLOCK_N=64, BLOCK_K=64),
    ]


def a8w_configs() -> list:
    """int8 x int8 GEMM: BLOCK_K >= 32 (int8 tl.dot needs K >= 32 on sm80/sm90) and dividing the group. Checked
    for register spills on sm90 by compiling ahead of time (8 warps for the 128-row tiles)."""
    return [
        _cfg(8, 4, BLOCK_M=128, BLOCK_N=128, BLOCK_K=64), _cfg(8, 3, BLOCK_M=128, BLOCK_N=256, BLOCK_K=64),
        _cfg(8, 3, BLOCK_M=128, BLOCK_N=128, BLOCK_K=128), _cfg(4, 4, BLOCK_M=64, BLOCK_N=128, BLOCK_K=64),
        _cfg(4, 4, BLOCK_M=64, BLOCK_N=128, BLOCK_K=128), _cfg(4, 4, BLOCK_M=64, BLOCK_N=64, BLOCK_K=64),
        _cfg(4, 4, BLOCK_M=32, BLOCK_N=128, BLOCK_K=128), _cfg(4, 4, BLOCK_M=16, BLOCK_N=64, BLOCK_K=32),
        _cfg(4, 4, BLOCK_M=64, BLOCK_N=64, BLOCK_K=32), _cfg(4, 4, BLOCK_M=16, BLOCK_N=128, BLOCK_K=64),
    ]


def tile_fits_group(block_k: int, group: int, k: int) -> bool:
    """A K tile never straddles two blocks: block_k divides the group, or there is one group per row."""
    return group >= k or group % block_k == 0


# constexpr ONE_GROUP: each K tile lies inside one quantization block (one scale/zero per column per tile)
ONE_GROUP_HEURISTIC = {"ONE_GROUP": lambda a: tile_fits_group(a["BLOCK_K"], a["GROUP"], a["K"])}


def _smem_bytes(cfg, x_bytes: int, cb: int, gathered_scales: bool) -> int:
    """Shared memory estimate, fitted to Triton 3.9's sm90 allocation for these kernels: (num_stages - 1) copies
    of the activation tile, the packed word tile and, without ONE_GROUP, the gathered fp32 scale/zero tiles; plus
    one staged dequantized (BLOCK_K, BLOCK_N) dot operand."""
    kw = cfg.kwargs
    bm, bn, bk = kw.get("BLOCK_M", 16), kw["BLOCK_N"], kw["BLOCK_K"]
    per_stage = bm * bk * x_bytes + bk * bn * cb // 8 + (2 * bk * bn * 4 if gathered_scales else 0)
    return max(1, cfg.num_stages - 1) * per_stage + bk * bn * x_bytes


def prune_configs(configs, named_args: dict, **kwargs) -> list:
    """Drop configs that cannot fit (shared memory) or waste the shape (tiles far larger than M, N, K), keep only
    those whose BLOCK_K divides the group when any does, and honour a requested split-K. Never returns empty."""
    m, n, k = named_args["M"], named_args["N"], named_args["K"]
    group = named_args["GROUP"]
    x = named_args["x_ptr"] if "x_ptr" in named_args else named_args["xq_ptr"]
    x_bytes = x.element_size()
    limit = smem_limit()
    # each filter is soft (keeps the previous list when it would empty it): shared memory first (a config that
    # does not fit cannot launch), then the group fit (it matters most for speed), then tile sizes vs the shape
    cb = named_args.get("CB", kwargs.get("CB", 4))  # a keyword argument of the launch: the tuner passes it here
    keep = [c for c in configs
            if _smem_bytes(c, x_bytes, cb, not tile_fits_group(c.kwargs["BLOCK_K"], group, k)) <= limit]
    keep = keep or list(configs)
    keep = [c for c in keep if tile_fits_group(c.kwargs["BLOCK_K"], group, k)] or keep
    keep = [c for c in keep if c.kwargs["BLOCK_K"] <= max(16, next_pow2(k))] or keep
    keep = [c for c in keep if c.kwargs["BLOCK_N"] <= max(16, next_pow2(n))] or keep
    keep = [c for c in keep if c.kwargs.get("BLOCK_M", 16) <= max(16, next_pow2(m))] or keep
    split = named_args.get("split_req", 0)
    if split:
        keep = [c for c in keep if c.kwargs["SPLIT_K"] == split] or [
            triton.Config({**c.kwargs, "SPLIT_K": split}, num_warps=c.num_warps, num_stages=c.num_stages) for c in keep
        ]
    return keep or list(configs)[:1]


def static_config(configs, named_args: dict):
    """The config used without autotuning (interpreter, or a forced split): the first one pruning keeps."""
    return prune_configs(configs, named_args)[0]


def config_dict(cfg) -> dict:
    """A triton.Config as the keyword arguments of a launch: its tile sizes, num_warps, num_stages."""
    return {**cfg.kwargs, "num_warps": cfg.num_warps, "num_stages": cfg.num_stages}


def launch(kernel, tuned, configs, grid, args, consts: dict, named: dict, config: dict | None = None) -> None:
    """Launch a tiled kernel: autotuned (`tuned`, the autotune wrapper of `kernel`) on a GPU unless `config` forces
    a tile; otherwise with `config`, or, in the interpreter, the first of `configs` that pruning keeps for the
    shape in `named` (M, N, K, GROUP, CB, x_ptr). grid(meta) -> the launch grid for a config's tile sizes."""
    if config is None and autotuning():
        tuned[grid](*args, **consts)
        return
    config = config if config is not None else config_dict(static_config(configs, named))
    kernel[grid(config)](*args, **consts, **config)


if triton is not None:

    @triton.jit
    def unpack_codes(words, k_idx, CB: tl.constexpr):
        """Integer codes (int32) of elements k_idx from the int32 words holding them (broadcast together).

        Code k sits at bits [(k % per) * CB, ...) of its word; `& mask` undoes the arithmetic shift's sign fill.
        Used where each word is loaded once and its per codes are taken one slice at a time (GEMV).
        """
        PER: tl.constexpr = 32 // CB
        return (words >> ((k_idx % PER) * CB)) & ((1 << CB) - 1)

    @triton.jit
    def unpack_tile(words, CB: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
        """(BLOCK_K // per, BLOCK_N) int32 words -> (BLOCK_K, BLOCK_N) int32 codes, row k = word * per + p.

        The packed tile is what is loaded (and pipelined through shared memory), so a tile costs its packed bytes,
        not 4 bytes per code; the per codes of a word are shifted out along a new axis and merged into K.
        """
        PER: tl.constexpr = 32 // CB
        shifts = tl.arange(0, PER) * CB
        q = (words[:, None, :] >> shifts[None, :, None]) & ((1 << CB) - 1)  # (BLOCK_K // per, per, BLOCK_N)
        return tl.reshape(q, (BLOCK_K, BLOCK_N))

    @triton.jit
    def dequant(codes, scale, zero):
        """The dequant rule of every kernel, in registers: w = (q - zero) * scale, fp32 (operands broadcast)."""
        return (codes.to(tl.float32) - zero) * scale

    @triton.jit
    def tile_scale_zero(scale_ptr, zero_ptr, offs_n, n_mask, k_idx, K, k0, GROUP, stride_sn,
                        ONE_GROUP: tl.constexpr):
        """Scale and zero (fp32, from fp32 or fp16 storage) for a weight tile: (1, BLOCK_N) for the block holding
        k0 when ONE_GROUP (the tile lies in one block), else gathered per element, (len(k_idx), BLOCK_N) (0 past K
        or N)."""
        if ONE_GROUP:
            off = offs_n * stride_sn + k0 // GROUP
            s = tl.load(scale_ptr + off, mask=n_mask, other=0.0).to(tl.float32)[None, :]
            z = tl.load(zero_ptr + off, mask=n_mask, other=0.0).to(tl.float32)[None, :]
        else:
            off = offs_n[None, :] * stride_sn + (k_idx // GROUP)[:, None]
            mask = (k_idx < K)[:, None] & n_mask[None, :]
            s = tl.load(scale_ptr + off, mask=mask, other=0.0).to(tl.float32)
            z = tl.load(zero_ptr + off, mask=mask, other=0.0).to(tl.float32)
        return s, z

    @triton.jit
    def dot_acc(a, w, acc, IEEE: tl.constexpr):
        """acc + a @ w, fp32 accumulation: an IEEE fp32 dot (fp32 activations), else w cast to a's dtype for the
        tensor cores."""
        if IEEE:
            acc = tl.dot(a.to(tl.float32), w, acc, input_precision="ieee")
        else:
            acc = tl.dot(a, w.to(a.dtype), acc)
        return acc

    @triton.jit
    def dequant_k_step(acc, x_ptr, w_ptr, scale_ptr, zero_ptr, offs_m, m_mask, offs_n, n_mask, t, K, GROUP,
                       stride_xm, stride_wn, stride_wk, stride_sn, CB: tl.constexpr, IEEE: tl.constexpr,
                       BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, ONE_GROUP: tl.constexpr):
        """One K tile `t` of a fused dequant GEMM: acc (BLOCK_M, BLOCK_N) + x[offs_m, tile] @ dequant(W)[tile, offs_n].

        Loads the activation tile (0 past K or M) and the packed word tile (BLOCK_K / per, BLOCK_N), unpacks and
        dequantizes it in fp32 registers with the tile's scale/zero (`tile_scale_zero`), then `dot_acc`.
        """
        PER: tl.constexpr = 32 // CB
        offs_k = t * BLOCK_K + tl.arange(0, BLOCK_K)
        a = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :],
                    mask=m_mask[:, None] & (offs_k < K)[None, :], other=0.0)
        offs_kw = t * (BLOCK_K // PER) + tl.arange(0, BLOCK_K // PER)
        w_ptrs = w_ptr + offs_kw[:, None] * stride_wk + offs_n[None, :] * stride_wn
        words = tl.load(w_ptrs, mask=(offs_kw < tl.cdiv(K, PER))[:, None] & n_mask[None, :], other=0)  # packed tile
        s, z = tile_scale_zero(scale_ptr, zero_ptr, offs_n, n_mask, offs_k, K, t * BLOCK_K, GROUP, stride_sn,
                               ONE_GROUP)
        w = dequant(unpack_tile(words, CB, BLOCK_K, BLOCK_N), s, z)  # (BLOCK_K, BLOCK_N) fp32; a is 0 past K
        return dot_acc(a, w, acc, IEEE)

    @triton.jit
    def grouped_tile(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
        """(pid_m, pid_n) as int64 for program `pid` in GROUP_M-row bands (Triton tutorial 03), so programs that run
        together share weight tiles in L2."""
        num_m = tl.cdiv(M, BLOCK_M)
        num_n = tl.cdiv(N, BLOCK_N)
        width = GROUP_M * num_n
        first_m = (pid // width) * GROUP_M
        rows = tl.minimum(num_m - first_m, GROUP_M)
        return (first_m + (pid % width) % rows).to(tl.int64), ((pid % width) // rows).to(tl.int64)
