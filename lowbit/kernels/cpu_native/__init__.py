"""Native CPU kernels (C, compiled on first use): 2..8-bit weights x fp32 or dynamically quantized int8 activations.

Math (per output y[m, n], weight blocks b of `gk` input channels, activations quantized per row (default), per
(row, weight block) or per (row, 32 input channels) with scale d; see ACTIVATIONS, which also has fp32):
    x[m, k] ~= d[m, b] * xq[m, k]          xq int8 in [-127, 127], d = absmax / 127 (round half to even)
    y[m, n]  = sum_b s[n, b] * d[m, b] * sum_{k in b} q[n, k] * xq[m, k]   (int32 dot: vpdpbusd, or maddubs/madd)
             - sum_b (s[n, b] * z[n, b]) * (d[m, b] * sum_{k in b} xq[m, k]) + bias[n]
which is exactly x_q @ ((q - z) * s).T: the only rounding beyond fp32 arithmetic is the int8 activation
quantization (relative error ~ 1/254 of each block's absmax; with scales per 32 channels d[m, j] multiplies each
32-channel piece's int dot inside the block). Weight zeros may be any float (HQQ).
Codes q are unsigned: 2..4-bit codes in the 4-bit container (`pack_q4`, two per byte), 5..8-bit codes in the 8-bit
container (`pack_q8`, one per byte); with VNNI they are the u8 operand of vpdpbusd and xq the s8 one.

Entry points: `available_native()`, `native_unavailable_reason()`, `native_variant()`, `pack_q4(codes)`,
`gemm_q4(...)`, `pack_q8(codes)`, `gemm_q8(...)`; 8-bit codes pre-tiled for the tiled kernel (made once at load,
read at every M without a per-call transpose): `q8t_rows()`, `pack_q8t`, `unpack_q8t`, `tile_scales`, `gemm_q8t`.
The ISA variant is chosen at build time (see build.py).
The build never raises into callers of `available_native()`: a failure is remembered, warned once, and reported.
"""

from __future__ import annotations

import warnings

import torch

from .build import NativeBuildError, NativeLibrary, build_native, compiler_command
from .hugepages import advise_huge, huge_copy

__all__ = [
    "ACTIVATIONS", "NativeBuildError", "NativeLibrary", "advise_huge",
    "available_native", "compiler_command", "gemm_q4", "gemm_q8", "gemm_q8t", "huge_copy", "native_library",
    "native_unavailable_reason", "native_variant", "pack_q4", "pack_q8", "pack_q8t", "q8t_rows", "reset_native",
    "tile_scales", "unpack_q8t",
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


def q8t_rows(library: NativeLibrary | None = None) -> int:
    """Rows per tile of the pre-tiled 8-bit layout of this build (32 on AVX-512 VNNI, 16 on AVX2), 0 when it has no
    tiled kernel (or no native library)."""
    lib = library or native_library()
    return 0 if lib is None else int(lib.lib.lb_q8t_rows())


def pack_q8t(packed: torch.Tensor, rows: int) -> torch.Tensor:
    """uint8 (N, Kp) from `pack_q8` -> the pre-tiled layout for tiles of `rows` (32 or 16) weight rows: uint8
    (ceil(N / rows), Kp / g, rows, g), g = 4 codes per group with 32 rows, 2 with 16 (lowbit_cpu.c, lb_gemm_q8t):
    out[t, c, i, j] = packed[t * rows + i, c * g + j], rows past N zero. A permutation of the codes (plus padding),
    contiguous, on huge pages where they are supported (`huge_copy`)."""
    if rows not in (16, 32) or packed.dim() != 2 or packed.dtype != torch.uint8 or packed.shape[1] % 64:
        raise ValueError(f"pack_q8t expects uint8 (N, Kp) from pack_q8 and rows 16 or 32, got {packed.dtype} "
                         f"{tuple(packed.shape)}, rows={rows}")
    n, kp = packed.shape
    g, t = 4 if rows == 32 else 2, -(-n // rows)
    padded = torch.nn.functional.pad(packed, (0, 0, 0, t * rows - n)) if n % rows else packed
    # on huge pages, as the other prepared weights (M = 1 streams every byte once per token)
    return huge_copy(padded.view(t, rows, kp // g, g).permute(0, 2, 1, 3))


def unpack_q8t(tiled: torch.Tensor, n: int) -> torch.Tensor:
    """The inverse of `pack_q8t`: uint8 (n, Kp), bit-exact."""
    t, groups, rows, g = tiled.shape
    return tiled.permute(0, 2, 1, 3).reshape(t * rows, groups * g)[:n].contiguous()


def tile_scales(s: torch.Tensor, rows: int) -> torch.Tensor:
    """Per-block fp32 values (N, nb) across the lanes of `rows`-row tiles: (ceil(N / rows), nb, rows), 0 past N."""
    n, nb = s.shape
    t = -(-n // rows)
    padded = torch.nn.functional.pad(s.float(), (0, 0, 0, t * rows - n))
    return huge_copy(padded.view(t, rows, nb).permute(0, 2, 1))


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


# Activation schemes (`activations=`): what the kernel does to x before the product.
#   "fp32":       x as it is; each weight sub-block of 32 codes dequantized in registers (w = q * s - s * z) and
#                 multiplied in fp32 (M < F32_BLOCKED_MIN_M), or a tile of weight rows dequantized into a ~1 MB
#                 buffer and multiplied by torch's fp32 GEMM (larger M): exact up to fp32 summation.
#   "int8/32":    int8 with one scale per 32 input channels (llama.cpp's Q8_0 granularity, whatever the weight block).
#   "int8/block": int8 with one scale per (row, weight block).
#   "int8/row":   int8 with one scale per row (fastest: the scale is applied once per output).
ACTIVATIONS = ("fp32", "int8/32", "int8/block", "int8/row")
INT8_ACT_MODES = {"int8/block": 0, "int8/row": 1, "int8/32": 2}  # lb_quant_act's mode (LB_ACT_*), also lb_conv_q's
F32_BLOCKED_MIN_M = 16  # from this M the dequantized tile + torch GEMM beats the register kernel (measured)
_F32_TILE_BYTES = 1 << 20


def gemm_q4(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, scale_zero: torch.Tensor, k: int,
            group_k: int, bias: torch.Tensor | None = None, num_threads: int | None = None,
            act_per_row: bool = True, library: NativeLibrary | None = None,
            activations: str | None = None) -> torch.Tensor:
    """y = act(x) @ ((q - z) * s).T + bias in float32, act one of ACTIVATIONS.

    x: float32 contiguous (M, k); packed: uint8 (N, Kp/2) from `pack_q4`; scale, scale_zero (= scale * zero):
    float32 contiguous (N, nb); group_k: input channels per weight block (a multiple of 32, or Kp when there is
    one block per row); bias: float32 (N,) or None; activations: the scheme (see ACTIVATIONS); None means
    act_per_row's choice, "int8/row" (True) or "int8/block" (False); library: a specific build (default: this
    process's). Returns float32 (M, N). Shapes are checked by the caller (`lowbit.kernels.cpu_int4`); this function
    only adds the scratch buffers and the call.
    """
    return _gemm(4, x, packed, scale, scale_zero, k, group_k, bias, num_threads, act_per_row, library, activations)


def gemm_q8(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, scale_zero: torch.Tensor, k: int,
            group_k: int, bias: torch.Tensor | None = None, num_threads: int | None = None,
            act_per_row: bool = True, library: NativeLibrary | None = None,
            activations: str | None = None) -> torch.Tensor:
    """`gemm_q4` for 5..8-bit codes: packed is uint8 (N, Kp) from `pack_q8`; the other arguments are the same."""
    return _gemm(8, x, packed, scale, scale_zero, k, group_k, bias, num_threads, act_per_row, library, activations)


def gemm_q8t(x: torch.Tensor, tiled: torch.Tensor, scale_t: torch.Tensor, scale_zero_t: torch.Tensor, n: int, k: int,
             group_k: int, bias: torch.Tensor | None = None, num_threads: int | None = None,
             library: NativeLibrary | None = None, activations: str = "int8/32") -> torch.Tensor:
    """`gemm_q8` on pre-tiled codes (`pack_q8t`) and scales (`tile_scales` of scale and scale * zero) of a build with
    `q8t_rows()` rows per tile; n: output features; activations: one of the int8 schemes of ACTIVATIONS. At M where
    `gemm_q8` takes the tiled kernel (M >= 4) the result is bit-identical to it."""
    lib = library or native_library()
    if lib is None or not q8t_rows(lib):
        raise RuntimeError(f"no native tiled kernel here (variant {lib.variant if lib else None!r})")
    if activations not in INT8_ACT_MODES:
        raise ValueError(f"activations={activations!r}: gemm_q8t takes one of {tuple(INT8_ACT_MODES)}")
    m, kp, nb, mode = x.shape[0], tiled.shape[1] * tiled.shape[3], scale_t.shape[1], INT8_ACT_MODES[activations]
    nt = num_threads or torch.get_num_threads()
    xq = torch.empty(m, kp, dtype=torch.int8)
    xd = torch.empty(m, kp // 32 if activations == "int8/32" else nb, dtype=torch.float32)
    xs = torch.empty(m, nb, dtype=torch.float32)
    y = torch.empty(m, n, dtype=torch.float32)
    lib.lib.lb_quant_act(x.data_ptr(), m, k, kp, group_k, nb, mode, xq.data_ptr(), xd.data_ptr(), xs.data_ptr(), nt)
    if not lib.lib.lb_gemm_q8t(tiled.data_ptr(), scale_t.data_ptr(), scale_zero_t.data_ptr(), n, kp, group_k // 32,
                               nb, xq.data_ptr(), xd.data_ptr(), xs.data_ptr(), m, mode, _ptr(bias), y.data_ptr(), nt):
        raise MemoryError(f"lb_gemm_q8t could not allocate its scratch for M={m}")
    return y


def _gemm(bits: int, x, packed, scale, scale_zero, k, group_k, bias, num_threads, act_per_row, library,
          activations):
    lib = library or native_library()
    if lib is None:
        raise RuntimeError(f"native CPU kernels are unavailable: {_STATE.get('reason')}")
    act = activations or ("int8/row" if act_per_row else "int8/block")
    if act not in ACTIVATIONS:
        raise ValueError(f"activations={act!r} is unknown: use one of {ACTIVATIONS}")
    m, n, kp, nb = x.shape[0], packed.shape[0], packed.shape[1] * 8 // bits, scale.shape[1]
    nt = num_threads or torch.get_num_threads()
    if act == "fp32":
        return _gemm_f32(lib, bits, x, packed, scale, scale_zero, k, kp, group_k, bias, nt)
    mode = INT8_ACT_MODES[act]
    xq = torch.empty(m, kp, dtype=torch.int8)
    xd = torch.empty(m, kp // 32 if act == "int8/32" else nb, dtype=torch.float32)
    xs = torch.empty(m, nb, dtype=torch.float32)
    y = torch.empty(m, n, dtype=torch.float32)
    lib.lib.lb_quant_act(x.data_ptr(), m, k, kp, group_k, nb, mode, xq.data_ptr(), xd.data_ptr(), xs.data_ptr(), nt)
    gemm = lib.lib.lb_gemm_q4 if bits == 4 else lib.lib.lb_gemm_q8
    gemm(packed.data_ptr(), scale.data_ptr(), scale_zero.data_ptr(), n, kp, group_k // 32, nb, xq.data_ptr(),
         xd.data_ptr(), xs.data_ptr(), m, mode, _ptr(bias), y.data_ptr(), nt)
    return y


def _gemm_f32(lib, bits, x, packed, scale, scale_zero, k, kp, group_k, bias, nt):
    """fp32 activations: the register kernel below F32_BLOCKED_MIN_M rows, else tiles of dequantized weight rows
    (about _F32_TILE_BYTES each, reused) through torch's fp32 GEMM; the whole float weight never exists."""
    m, n, nb = x.shape[0], packed.shape[0], scale.shape[1]
    if m < F32_BLOCKED_MIN_M:
        xp = x if kp == k else torch.nn.functional.pad(x, (0, kp - k))
        y = torch.empty(m, n, dtype=torch.float32)
        lib.lib.lb_gemm_f32(packed.data_ptr(), scale.data_ptr(), scale_zero.data_ptr(), n, kp, group_k // 32, nb,
                            xp.data_ptr(), m, _ptr(bias), y.data_ptr(), nt, bits)
        return y
    rows = max(16, min(n, _F32_TILE_BYTES // (4 * k)))
    tile = torch.empty(rows, k, dtype=torch.float32)
    yt = torch.empty(n, m, dtype=torch.float32)  # y transposed: each tile's rows are contiguous there
    for n0 in range(0, n, rows):
        n1 = min(n, n0 + rows)
        lib.lib.lb_dequant(packed.data_ptr(), scale.data_ptr(), scale_zero.data_ptr(), n0, n1, k, kp, group_k // 32,
                           nb, tile.data_ptr(), nt, bits)
        torch.mm(tile[:n1 - n0], x.t(), out=yt[n0:n1])
    y = yt.t().contiguous()
    return y if bias is None else y.add_(bias)
