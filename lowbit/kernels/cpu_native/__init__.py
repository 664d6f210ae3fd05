"""Native CPU kernels (C, compiled on first use): 2..8-bit weights x dynamically quantized int8 activations.

Math (per output y[m, n], weight blocks b of `gk` input channels, activations quantized per row (default) or per
(row, weight block) with scale d):
    x[m, k] ~= d[m, b] * xq[m, k]          xq int8 in [-127, 127], d = absmax / 127 (round half to even)
    y[m, n]  = sum_b s[n, b] * d[m, b] * sum_{k in b} q[n, k] * xq[m, k]   (int32 dot: vpdpbusd, or maddubs/madd)
             - sum_b (s[n, b] * z[n, b]) * (d[m, b] * sum_{k in b} xq[m, k]) + bias[n]
which is exactly x_q @ ((q - z) * s).T: the only rounding beyond fp32 arithmetic is the int8 activation
quantization (relative error ~ 1/254 of each block's absmax). Weight zeros may be any float (HQQ).
Codes q are unsigned: 2..4-bit codes in the 4-bit container (`pack_q4`, two per byte), 5..8-bit codes in the 8-bit
container (`pack_q8`, one per byte); with VNNI they are the u8 operand of vpdpbusd and xq the s8 one.

Entry points: `available_native()`, `native_unavailable_reason()`, `native_variant()`, `pack_q4(codes)`,
`gemm_q4(...)`, `pack_q8(codes)`, `gemm_q8(...)`. The ISA variant is chosen at build time (see build.py).
The build never raises into callers of `available_native()`: a failure is remembered, warned once, and reported.
"""

from __future__ import annotations

import warnings

import torch

from .build import NativeBuildError, NativeLibrary, build_native, compiler_command

__all__ = [
    "NativeBuildError", "NativeLibrary", "available_native", "compiler_command", "gemm_q4", "gemm_q8", "native_library",
    "native_unavailable_reason", "native_variant", "pack_q4", "pack_q8", "reset_native",
]

_STATE: dict = {}  # "lib": NativeLibrary | None, "reason": str | None once a build was attempted


def native_library() -> NativeLibrary | None:
    """The loaded library, building it on the first call in this process; None (with a warning, once) on failure."""
    if "lib" not in _STATE:
        try:
            _STATE["lib"], _STATE["reason"] = build_native(), None
        except NativeBuildError as e:
            _STATE["lib"], _STATE["reason"] = None, str(e)
            warnings.warn(f"lowbit native CPU kernels unavailable, using torch fallbacks: {e}", stacklevel=2)
    return _STATE["lib"]


def available_native() -> bool:
    """True when the native kernels built and loaded in this process."""
    return native_library() is not None


def native_unavailable_reason() -> str | None:
    """Why the native kernels are unavailable (None when they are available)."""
    native_library()
    return _STATE["reason"]


def native_variant() -> str:
    """The ISA variant of the loaded library ("avx512vnni", "avxvnni", "avx2"; on ARM "i8mm", "dotprod", "neon";
    "portable"), "" when unavailable."""
    lib = native_library()
    return "" if lib is None else lib.variant


def reset_native() -> None:
    """Forget the build result so the next call rebuilds (or reloads from the cache) with the current settings."""
    _STATE.clear()


def pack_q4(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes (N, K) with values < 16 -> uint8 (N, Kp / 2), Kp = K rounded up to 64 (padding codes are 0).

    Unit u (codes 64u .. 64u+63) takes bytes 32u .. 32u+31; byte i holds code 64u+i (low nibble) and
    code 64u+32+i (high nibble).
    """
    if codes.dim() != 2 or codes.dtype != torch.uint8:
        raise ValueError(f"pack_q4 expects uint8 codes (N, K), got {codes.dtype} {tuple(codes.shape)}")
    if codes.numel() and int(codes.max()) > 15:
        raise ValueError(f"pack_q4 got a code of {int(codes.max())}; 4-bit codes must be < 16")
    n, k = codes.shape
    kp = -(-k // 64) * 64
    padded = torch.nn.functional.pad(codes, (0, kp - k)).view(n, kp // 64, 2, 32)
    return (padded[:, :, 0] | (padded[:, :, 1] << 4)).reshape(n, kp // 2).contiguous()


def pack_q8(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes (N, K) (any value: 5..8-bit codes) -> uint8 (N, Kp), Kp = K rounded up to 64, padding codes 0."""
    if codes.dim() != 2 or codes.dtype != torch.uint8:
        raise ValueError(f"pack_q8 expects uint8 codes (N, K), got {codes.dtype} {tuple(codes.shape)}")
    k = codes.shape[1]
    return torch.nn.functional.pad(codes, (0, -(-k // 64) * 64 - k)).contiguous()


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def gemm_q4(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, scale_zero: torch.Tensor, k: int,
            group_k: int, bias: torch.Tensor | None = None, num_threads: int | None = None,
            act_per_row: bool = True, library: NativeLibrary | None = None) -> torch.Tensor:
    """y = quantize_int8(x) @ ((q - z) * s).T + bias in float32.

    x: float32 contiguous (M, k); packed: uint8 (N, Kp/2) from `pack_q4`; scale, scale_zero (= scale * zero):
    float32 contiguous (N, nb); group_k: input channels per weight block (a multiple of 32, or Kp when there is
    one block per row); bias: float32 (N,) or None; act_per_row: one int8 scale per activation row (fastest: the
    scale is applied once per output, not once per block) or, when False, one per (row, weight block) (closer to
    the float result when activations have outliers); library: a specific build (default: this process's).
    Returns float32 (M, N). Shapes are checked by the caller
    (`lowbit.kernels.cpu_int4`); this function only adds the scratch buffers and the call.
    """
    return _gemm(4, x, packed, scale, scale_zero, k, group_k, bias, num_threads, act_per_row, library)


def gemm_q8(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, scale_zero: torch.Tensor, k: int,
            group_k: int, bias: torch.Tensor | None = None, num_threads: int | None = None,
            act_per_row: bool = True, library: NativeLibrary | None = None) -> torch.Tensor:
    """`gemm_q4` for 5..8-bit codes: packed is uint8 (N, Kp) from `pack_q8`; the other arguments are the same."""
    return _gemm(8, x, packed, scale, scale_zero, k, group_k, bias, num_threads, act_per_row, library)


def _gemm(bits: int, x, packed, scale, scale_zero, k, group_k, bias, num_threads, act_per_row, library):
    lib = library or native_library()
    if lib is None:
        raise RuntimeError(f"native CPU kernels are unavailable: {_STATE.get('reason')}")
    m, n, kp, nb = x.shape[0], packed.shape[0], packed.shape[1] * 8 // bits, scale.shape[1]
    nt = num_threads or torch.get_num_threads()
    xq = torch.empty(m, kp, dtype=torch.int8)
    xd = torch.empty(m, nb, dtype=torch.float32)
    xs = torch.empty(m, nb, dtype=torch.float32)
    y = torch.empty(m, n, dtype=torch.float32)
    per_row = int(bool(act_per_row))
    lib.lib.lb_quant_act(x.data_ptr(), m, k, kp, group_k, nb, per_row, xq.data_ptr(), xd.data_ptr(), xs.data_ptr(),
                         nt)
    gemm = lib.lib.lb_gemm_q4 if bits == 4 else lib.lib.lb_gemm_q8
    gemm(packed.data_ptr(), scale.data_ptr(), scale_zero.data_ptr(), n, kp, group_k // 32, nb, xq.data_ptr(),
         xd.data_ptr(), xs.data_ptr(), m, per_row, _ptr(bias), y.data_ptr(), nt)
    return y
