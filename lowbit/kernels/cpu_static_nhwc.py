"""Static W8A8 convolutions on channels-last (NHWC) images: the activation layout the int8 GEMM reads as is.

Math as `lowbit.kernels.cpu_static_int8` (a = activation step, c = clamp, s[o] = weight scale):
    xq = clamp(round_half_even(x / a), -c, c);  y = act(conv(xq, wq) * (a * s[o]) + bias[o])
x is a float32 (B, C, H, W) tensor in torch's channels_last memory format (physically (B, H, W, C)); y comes back
in the same format, so the next static conv reads it without a transpose and torch's own ops (residual adds,
pooling, squeeze-excite's multiply) keep it. Kernels (native library):
- `conv_dw_nhwc`: depthwise (groups == C == O), lowbit_cpu_static_nhwc.h: the image rounded once into int8 codes,
  each output pixel accumulated along the channels (16 at a time), exact integer sums, fused bias and act;
- `conv_gemm_nhwc`: groups == 1: a 1x1 stride-1 unpadded conv quantizes the pixels as the GEMM's rows
  (lb_static_quant), any other conv builds the columns straight from the channels-last codes
  (lb_static_im2col_nhwc); then lb_static_gemm, whose rows are the output's channels-last pixels, act fused.
An image holding NaN or inf gives a NaN output image. act: None, "relu", "relu6", "hardswish".
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch

from .cpu_conv import geometry
from .cpu_static_int8 import (
    NATIVE_MAX_K,
    NativeStaticWeight,
    _static_fns,
    _tiles,
    conv_channels_padded,
    conv_weight_codes,
    native_epilogue,
    native_static_library,
    pack_static_native,
)

# the GEMM conv's weight is the fused native conv's (the kernel table's NHWC_GEMM row prepares it from here)
__all__ = ["ACTS", "NATIVE_MAX_K", "DepthwiseNHWCWeight", "conv_dw_nhwc", "conv_gemm_nhwc", "conv_weight_codes",
           "dw_caller", "gemm_caller", "dw_epilogue", "is_nhwc", "native_epilogue", "pack_dw_nhwc",
           "pack_static_native", "to_nhwc"]

ACTS = {None: 0, "relu": 1, "relu6": 2, "hardswish": 3}
CHANNEL_VECTOR = 16  # channels per vector of the depthwise kernel (LBN_V)


def is_nhwc(x: torch.Tensor) -> bool:
    """True when x (B, C, H, W) is laid out channels-last (what these kernels read without a copy)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)


def to_nhwc(x: torch.Tensor) -> torch.Tensor:
    """x in the channels_last memory format (x itself when it already is)."""
    return x if is_nhwc(x) else x.contiguous(memory_format=torch.channels_last)


def _fns(lib):
    c = _static_fns(lib)
    if not getattr(c, "_lowbit_nhwc_ready", False):
        i64, ptr, i32, f32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int, ctypes.c_float
        c.lb_static_dw_nhwc.argtypes = [ptr, ptr, ptr, ptr, ptr, i32, f32, i32, ptr, i32]
        c.lb_static_dw_nhwc.restype = i64
        c.lb_static_im2col_nhwc.argtypes = [ptr, *([i64] * 14), f32, i32, i64, ptr, ptr, i32]
        c.lb_static_im2col_nhwc.restype = i64
        c._lowbit_nhwc_ready = True
    return c


def _check_act(act):
    if act not in ACTS:
        raise ValueError(f"act={act!r} is not one of {list(ACTS)}")


def _nan_images(x: torch.Tensor, y: torch.Tensor) -> None:
    y[~torch.isfinite(x.abs().flatten(1).amax(1))] = float("nan")


@dataclass(frozen=True)
class DepthwiseNHWCWeight:
    """A depthwise conv's weight for `conv_dw_nhwc`: codes float32 (kh * kw, Cv) (the int8 codes as floats, tap-major,
    Cv = C rounded up to 16, zeros past C); scale float32 (C,) (the weight scales s); c = C, kh, kw."""

    codes: torch.Tensor
    scale: torch.Tensor
    c: int
    kh: int
    kw: int


def pack_dw_nhwc(codes: torch.Tensor, scale: torch.Tensor, kh: int, kw: int) -> DepthwiseNHWCWeight:
    """int8 codes (C, kh * kw) of a depthwise conv and their scales (C,) -> `DepthwiseNHWCWeight`."""
    if codes.dim() != 2 or codes.dtype != torch.int8 or codes.shape[1] != kh * kw:
        raise ValueError(f"depthwise codes must be int8 (C, {kh * kw}), got {codes.dtype} {tuple(codes.shape)}")
    c = codes.shape[0]
    cv = -(-c // CHANNEL_VECTOR) * CHANNEL_VECTOR
    wf = torch.nn.functional.pad(codes.t().to(torch.float32), (0, cv - c)).contiguous()
    return DepthwiseNHWCWeight(wf, scale.reshape(-1).to(torch.float32).contiguous(), c, kh, kw)


def dw_epilogue(w: DepthwiseNHWCWeight, act_scale: float, bias: torch.Tensor | None):
    """(a * s, bias) as float32 (Cv,) vectors `conv_dw_nhwc` reads (zeros past C; bias zeros when None)."""
    cv = w.codes.shape[1]
    scale, b = torch.zeros(cv, dtype=torch.float32), torch.zeros(cv, dtype=torch.float32)
    scale[: w.c] = w.scale * act_scale
    if bias is not None:
        b[: w.c] = bias.detach().float()
    return scale, b


def conv_dw_nhwc(x: torch.Tensor, w: DepthwiseNHWCWeight, epi, stride, padding, dilation, act_scale: float,
                 clamp: int, act: str | None = None, num_threads: int | None = None) -> torch.Tensor:
    """Depthwise conv (groups = C = O, zero padding) of x float32 (B, C, H, W) channels_last -> float32 (B, C, OH, OW)
    channels_last (see the module docstring); epi from `dw_epilogue`."""
    _check_act(act)
    if x.dim() != 4 or x.shape[1] != w.c or x.dtype != torch.float32:
        raise ValueError(f"depthwise NHWC input must be float32 (B, {w.c}, H, W), got {x.dtype} {tuple(x.shape)}")
    x = to_nhwc(x)
    geo, oh, ow = geometry(x, (w.c, 1, w.kh, w.kw), stride, padding, dilation, w.c)
    y = torch.empty(x.shape[0], w.c, oh, ow, dtype=torch.float32, memory_format=torch.channels_last)
    scale, bias = epi
    bad = _fns(native_static_library()).lb_static_dw_nhwc(
        x.data_ptr(), geo.data_ptr(), w.codes.data_ptr(), scale.data_ptr(), bias.data_ptr(), ACTS[act],
        float(act_scale), int(clamp), y.data_ptr(), num_threads or torch.get_num_threads())
    if bad:
        _nan_images(x, y)
    return y


def _gemm_output_size(w, ch: int, h: int, wd: int, kernel, stride, padding, dilation) -> tuple[int, int]:
    """(OH, OW) of the conv of a (ch, h, wd) image; ValueError when the weight was packed for other channels."""
    kh, kw = kernel
    if kh * kw * conv_channels_padded(ch) != w.k:
        raise ValueError(f"conv input has {ch} channels x {kh}x{kw}, the weight expects K = {w.k}")
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return oh, ow


def conv_gemm_nhwc(x: torch.Tensor, w: NativeStaticWeight, kernel: tuple[int, int], stride, padding, dilation,
                   act_scale: float, clamp: int, epi, act: str | None = None,
                   num_threads: int | None = None) -> torch.Tensor:
    """A groups=1, zero-padded conv of x float32 (B, C, H, W) channels_last -> float32 (B, N, OH, OW) channels_last;
    w packed from `cpu_static_int8.conv_weight_codes` ((i, j, c) columns), epi from `cpu_static_int8.native_epilogue`
    (see the module docstring)."""
    _check_act(act)
    c = _fns(native_static_library())
    x = to_nhwc(x.float())
    b, ch, h, wd = x.shape
    kh, kw = kernel
    cp = conv_channels_padded(ch)
    oh, ow = _gemm_output_size(w, ch, h, wd, kernel, stride, padding, dilation)
    nt = num_threads or torch.get_num_threads()
    y = torch.empty(b, w.n, oh, ow, dtype=torch.float32, memory_format=torch.channels_last)
    scale, bias = epi
    direct = kh == kw == 1 and tuple(stride) == (1, 1) and tuple(padding) == (0, 0)
    rows = b * oh * ow if direct else oh * ow  # a 1x1 conv runs the whole batch as one GEMM
    cols = _tiles(c, rows, w.kp)
    scratch = None if direct else torch.empty(cp * h * wd, dtype=torch.uint8)
    bad = 0
    for i in range(1 if direct else b):
        if direct:
            bad = c.lb_static_quant(x.data_ptr(), rows, ch, w.kp, float(act_scale), int(clamp), cols.data_ptr(), nt)
        else:
            bad += c.lb_static_im2col_nhwc(x[i].data_ptr(), ch, h, wd, cp, kh, kw, stride[0], stride[1], padding[0],
                                           padding[1], dilation[0], dilation[1], oh, ow, float(act_scale),
                                           int(clamp), w.kp, cols.data_ptr(), scratch.data_ptr(), nt)
        c.lb_static_gemm(cols.data_ptr(), rows, w.kp, w.packed.data_ptr(), w.wsum.data_ptr(), scale.data_ptr(),
                         None if bias is None else bias.data_ptr(), w.n, ACTS[act], y[i].data_ptr(), w.n, 1, nt)
    if bad:
        _nan_images(x, y)
    return y


# --- bound calls: every argument but the image fixed once per layer and input shape (a layer's steady state) ---

_CL = torch.channels_last


def dw_caller(w: DepthwiseNHWCWeight, epi, stride, padding, dilation, act_scale: float, clamp: int, act: str | None,
              shape):
    """call(x) -> y: `conv_dw_nhwc` for float32 CPU inputs of `shape` (B, C, H, W) with every other argument bound
    once (bit-identical; the caller checks x's shape, dtype and device)."""
    _check_act(act)
    if len(shape) != 4 or shape[1] != w.c:
        raise ValueError(f"depthwise NHWC call for input {tuple(shape)} and a weight of {w.c} channels")
    fn = _fns(native_static_library()).lb_static_dw_nhwc
    geo, oh, ow = geometry(torch.empty(shape, device="meta"), (w.c, 1, w.kh, w.kw), stride, padding, dilation, w.c)
    scale, bias = epi
    tail = (w.codes.data_ptr(), scale.data_ptr(), bias.data_ptr(), ACTS[act], float(act_scale), int(clamp))
    out_shape, geo_ptr, f32, threads = (shape[0], w.c, oh, ow), geo.data_ptr(), torch.float32, torch.get_num_threads

    def call(x: torch.Tensor, _held=(w, scale, bias, geo)) -> torch.Tensor:  # _held: the tensors behind the pointers
        if not x.is_contiguous(memory_format=_CL):
            x = x.contiguous(memory_format=_CL)
        y = torch.empty(out_shape, dtype=f32, memory_format=_CL)
        if fn(x.data_ptr(), geo_ptr, *tail, y.data_ptr(), threads()):
            _nan_images(x, y)
        return y

    return call


def gemm_caller(w: NativeStaticWeight, epi, kernel, stride, padding, dilation, act_scale: float, clamp: int,
                act: str | None, shape):
    """call(x) -> y: `conv_gemm_nhwc` for float32 CPU inputs of `shape` (B, C, H, W) with every other argument bound
    once (bit-identical; the caller checks x's shape, dtype and device)."""
    _check_act(act)
    c = _fns(native_static_library())
    b, ch, h, wd = shape
    kh, kw = kernel
    cp = conv_channels_padded(ch)
    oh, ow = _gemm_output_size(w, ch, h, wd, kernel, stride, padding, dilation)
    direct = kh == kw == 1 and tuple(stride) == (1, 1) and tuple(padding) == (0, 0)
    rows = b * oh * ow if direct else oh * ow
    tiles = -(-rows // c._lowbit_static_mr) * c._lowbit_static_mr * w.kp
    scale, bias = epi
    gemm_args = (rows, w.kp, w.packed.data_ptr(), w.wsum.data_ptr(), scale.data_ptr(),
                 None if bias is None else bias.data_ptr(), w.n, ACTS[act])
    geometry_args = (ch, h, wd, cp, kh, kw, stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
                     oh, ow, float(act_scale), int(clamp), w.kp)
    out_shape, image, f32, u8, threads = (b, w.n, oh, ow), h * wd * ch * 4, torch.float32, torch.uint8, \
        torch.get_num_threads
    quant, im2col, gemm, a, n = c.lb_static_quant, c.lb_static_im2col_nhwc, c.lb_static_gemm, float(act_scale), w.n

    def call(x: torch.Tensor, _held=(w, scale, bias)) -> torch.Tensor:  # _held: the tensors behind the pointers
        if not x.is_contiguous(memory_format=_CL):
            x = x.contiguous(memory_format=_CL)
        y = torch.empty(out_shape, dtype=f32, memory_format=_CL)
        cols, nt, xp, yp = torch.empty(tiles, dtype=u8), threads(), x.data_ptr(), y.data_ptr()
        if direct:
            bad = quant(xp, rows, ch, w.kp, a, clamp, cols.data_ptr(), nt)
            gemm(cols.data_ptr(), *gemm_args, yp, n, 1, nt)
        else:
            scratch, bad = torch.empty(cp * h * wd, dtype=u8), 0
            for i in range(b):
                bad += im2col(xp + i * image, *geometry_args, cols.data_ptr(), scratch.data_ptr(), nt)
                gemm(cols.data_ptr(), *gemm_args, yp + i * oh * ow * n * 4, n, 1, nt)
        if bad:
            _nan_images(x, y)
        return y

    return call
