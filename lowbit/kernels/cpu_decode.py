"""One decoded token's fp32 steps between a decoder layer's matrix products, on the native library
(`cpu_native/lowbit_cpu_decode.h`): RMSNorm, residual + RMSNorm, rotary in place, the SiLU-gated product, and one
query's grouped attention over a KV cache. Each takes contiguous fp32 CPU tensors (callers check; see
`plain_f32`); results match torch's ops to ~1e-6 relative (fp32 sums in another order, a polynomial exp), not bit
for bit. `decode_library()` is the ctypes library, or None where the native build is unavailable (callers then use
torch ops)."""

from __future__ import annotations

import torch

from .cpu_native import native_library

_F32 = torch.float32


def decode_library():
    """The loaded native library's ctypes handle, or None."""
    lib = native_library()
    return None if lib is None else lib.lib


def plain_f32(*tensors: torch.Tensor) -> bool:
    """Every tensor is a contiguous fp32 CPU tensor (what the native steps read)."""
    return all(t.dtype is _F32 and t.is_cpu and t.is_contiguous() for t in tensors)


def rows_f32(t: torch.Tensor) -> bool:
    """t (1, heads, L, D) is fp32 on the CPU with contiguous rows of D and heads at least L rows apart (a cache or a
    prefix view of a larger one)."""
    return t.dtype is _F32 and t.is_cpu and t.dim() == 4 and t.shape[0] == 1 and t.stride(3) == 1 \
        and t.stride(2) == t.shape[3] and (t.shape[1] == 1 or t.stride(1) >= t.shape[2] * t.shape[3])


def _head_stride(t: torch.Tensor) -> int:
    return t.stride(1) if t.shape[1] > 1 else t.shape[2] * t.shape[3]


def rms_norm(lib, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x^2, -1) + eps) * weight, a new tensor shaped like x."""
    n = x.shape[-1]
    out = torch.empty_like(x)
    lib.lb_rms_norm(x.data_ptr(), weight.data_ptr(), out.data_ptr(), x.numel() // n, n, eps)
    return out


def add_rms_norm_(lib, acc: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """acc += residual in place (acc becomes the layer's new residual stream); returns RMSNorm(acc) * weight."""
    n = acc.shape[-1]
    out = torch.empty_like(acc)
    lib.lb_add_rms_norm(acc.data_ptr(), residual.data_ptr(), weight.data_ptr(), out.data_ptr(), acc.numel() // n, n,
                        eps)
    return out


def rope_(lib, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rows: int, head_dim: int) -> None:
    """Rotary embedding in place on the first `rows` head vectors of the contiguous x (transformers' rotate_half
    convention: the two halves of each head rotated against each other) by cos/sin (head_dim each)."""
    lib.lb_rope(x.data_ptr(), cos.data_ptr(), sin.data_ptr(), rows, head_dim, head_dim)


def silu_mul(lib, gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for gate_up = [gate | up] along the last dim: (..., 2n) -> (..., n), one row."""
    n = gate_up.shape[-1] // 2
    out = torch.empty(*gate_up.shape[:-1], n, dtype=_F32)
    lib.lb_silu_mul(gate_up.data_ptr(), out.data_ptr(), n)
    return out


def attend_one(lib, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, length: int, scale: float,
               threads: int) -> torch.Tensor:
    """One token's attention: query (heads * D) contiguous, keys/values (1, kv_heads, L, D) caches with contiguous
    rows (`rows_f32`; the same head stride) of which rows < length are read; query head h reads KV head
    h // (heads / kv_heads). -> (1, 1, heads * D)."""
    kv, d = keys.shape[1], keys.shape[3]
    heads = query.numel() // d
    out = torch.empty(1, 1, heads * d, dtype=_F32)
    lib.lb_attend1(query.data_ptr(), keys.data_ptr(), values.data_ptr(), out.data_ptr(), heads, kv, length, d,
                   _head_stride(keys), scale, threads)
    return out
