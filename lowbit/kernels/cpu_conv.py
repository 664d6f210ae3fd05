"""lowbit's native CPU convolution on packed weights (C in cpu_native/lowbit_cpu_conv.h, lowbit_cpu_conv_tile.h,
lowbit_cpu_dwconv.h).

Two kernels, chosen by the conv's shape (`conv_kind`):
- "depthwise" (groups == in_channels, any channel multiplier, kernels up to 64 taps): a direct fp32 kernel. Each
  output channel's kh*kw codes are dequantized onto the stack per call, then the output plane is accumulated tap by
  tap as a 1-D correlation over the padded, stride-phase-split input plane (every tap one constant offset). The
  prepared weight keeps the codes one per byte (uint8 (O, kh*kw)) with fp32 scale and zero (O, nb): a depthwise
  layer's weights are tiny (mobilenet_v2: 30k of 3.5M weights), so this costs ~1 byte per weight instead of 0.5 and
  saves a nibble decode in the inner loop; no float weight copy is kept.
- "gemm" (every other conv: dense k x k, 1x1, grouped): per image and group the input is copied zero-padded, then
  per chunk of output pixels im2col fused with the int8 activation quantization (one row per output pixel; no
  float patch matrix, no whole-image im2col), lowbit's Linear GEMM (`lb_gemm_q4` / `lb_gemm_q8`) on that group's
  packed rows, then bias, activation and the transpose to NCHW in one pass. On AVX2 and up a stride-1 dense conv on
  a big plane (4-bit codes; 8-bit too with VNNI) takes the pixel tile instead: 16 output pixels across the lanes,
  the same int8 codes and scales, output channels written into NCHW rows directly. The prepared weight is the
  Linear kernel's own (`cpu_int4.prepare_int4_cpu(impl="native")`), shared layout and error (~40 dB); the scratch
  is allocated in C per call.
Both take fp32 NCHW input and return fp32 NCHW contiguous output, with an optional fused activation
(`ACTIVATIONS`). Geometry is checked by the caller (`lowbit.nn.conv`); shapes of the buffers are checked here.
"""

from __future__ import annotations

import ctypes
import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..quant.format import QuantizedWeight
from ..quant.formats import format_refusal
from . import cpu_native
from .cpu_int4 import Int4CpuWeight, impl_unsupported_reason, prepare_int4_cpu

ACTIVATIONS = {None: 0, "relu": 1, "relu6": 2, "hardswish": 3}
DW_MAX_TAPS = 64  # LB_DW_MAX_K in the C header


@dataclass(frozen=True)
class DepthwiseWeight:
    """A depthwise weight prepared for `depthwise_conv2d`: codes uint8 (O, K = kh*kw), one per byte; scale and zero
    fp32 (O, nb), blocks of group_k taps (K when per channel)."""

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    group_k: int

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.codes, self.scale, self.zero))


def conv_kind(shape, groups: int) -> str:
    """"depthwise" when each group holds one input channel and at most DW_MAX_TAPS taps, else "gemm"."""
    o, ig, kh, kw = shape
    return "depthwise" if ig == 1 and groups > 1 and kh * kw <= DW_MAX_TAPS else "gemm"


def native_conv_reason(qw: QuantizedWeight, groups: int) -> str | None:
    """Why the native conv kernels cannot serve `qw` (None: they can): the depthwise kernel takes any block size,
    the GEMM one what the Linear native kernel takes."""
    if format_refusal(qw):
        return format_refusal(qw)
    if conv_kind(qw.shape, groups) == "gemm":
        return impl_unsupported_reason(qw, "native")
    if qw.is_float:
        return "bits=16 (float16 storage) has no integer codes"
    if qw.device.type != "cpu":
        return f"the weight is on {qw.device}"
    if not cpu_native.available_native():
        return f"native kernel unavailable: {cpu_native.native_unavailable_reason()}"
    return None


def prepare_depthwise(qw: QuantizedWeight) -> DepthwiseWeight:
    """The depthwise layout of a (O, 1, kh, kw) weight (see module docstring)."""
    return DepthwiseWeight(qw.unpack().contiguous(), qw.scale.float().contiguous(),
                           qw.zero_or_implicit().float().contiguous(), min(qw.group_size, qw.k))


@dataclass(frozen=True)
class NativeConvWeight:
    """What `prepare_conv` builds: the kernel's weight (DepthwiseWeight, or the Linear kernel's native Int4CpuWeight)
    and the conv weight's shape (O, C/groups, kh, kw)."""

    weight: DepthwiseWeight | Int4CpuWeight
    shape: tuple[int, int, int, int]


def prepare_conv(qw: QuantizedWeight, groups: int) -> NativeConvWeight:
    """The prepared weight of `conv_kind` for the (O, C/groups, kh, kw) weight `qw`."""
    reason = native_conv_reason(qw, groups)
    if reason:
        raise ValueError(f"the native conv kernel cannot serve this weight: {reason}")
    depthwise = conv_kind(qw.shape, groups) == "depthwise"
    return NativeConvWeight(prepare_depthwise(qw) if depthwise else prepare_int4_cpu(qw, impl="native"),
                            tuple(qw.shape))


def geometry(x: torch.Tensor, shape, stride, padding, dilation, groups: int) -> tuple[torch.Tensor, int, int]:
    """(geo int64[16] as the C kernels read it, OH, OW) for x (B, C, H, W) and a weight of `shape`; one read-only
    tensor per distinct geometry (building it cost ~4 us per call)."""
    return _geometry(tuple(x.shape), tuple(shape), tuple(stride), tuple(padding), tuple(dilation), groups)


@functools.lru_cache(maxsize=1024)
def _geometry(xshape, shape, stride, padding, dilation, groups: int) -> tuple[torch.Tensor, int, int]:
    b, c, h, w = xshape
    o, _, kh, kw = shape
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    geo = torch.tensor([b, c, h, w, o, kh, kw, stride[0], stride[1], padding[0], padding[1], dilation[0],
                        dilation[1], oh, ow, groups], dtype=torch.int64)
    return geo, oh, ow


def _lib(library: cpu_native.NativeLibrary | None = None):
    lib = library or cpu_native.native_library()
    if lib is None:
        raise RuntimeError(f"native CPU kernels are unavailable: {cpu_native.native_unavailable_reason()}")
    if not getattr(lib.lib.lb_conv_q, "argtypes", None):
        i64, ptr, i32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
        f32 = ctypes.c_float
        lib.lib.lb_dwconv.argtypes = [ptr, ptr, ptr, ptr, ptr, i64, i64, ptr, i32, f32, f32, ptr, i32]
        lib.lib.lb_dwconv.restype = i64  # NaN / inf inputs seen while rounding (input_step)
        lib.lib.lb_conv_q.argtypes = [ptr, ptr, ptr, ptr, ptr, i64, i64, i64, i32, i32, ptr, i32, ptr, i32]
        lib.lib.lb_conv_q.restype = None
    return lib.lib


def _check(x: torch.Tensor, bias: torch.Tensor | None, o: int, act) -> tuple[torch.Tensor, torch.Tensor | None]:
    if x.dim() != 4 or x.device.type != "cpu" or not x.is_floating_point():
        raise ValueError(f"x must be a float (B, C, H, W) CPU tensor, got {x.dtype} {tuple(x.shape)} on {x.device}")
    if bias is not None and tuple(bias.shape) != (o,):
        raise ValueError(f"bias has shape {tuple(bias.shape)}; expected ({o},) or None")
    if act not in ACTIVATIONS:
        raise ValueError(f"act={act!r} is not supported: use one of {list(ACTIVATIONS)}")
    return x.float().contiguous(), None if bias is None else bias.float().contiguous()


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def conv2d_depthwise(x: torch.Tensor, w: DepthwiseWeight, shape, bias: torch.Tensor | None, stride, padding,
                     dilation, act: str | None = None, num_threads: int | None = None,
                     library: cpu_native.NativeLibrary | None = None, input_step: float | None = None,
                     input_clamp: float = 127.0) -> torch.Tensor:
    """F.conv2d(x, W, bias, stride, padding, dilation, groups=C) then `act`, for the depthwise W (O, 1, kh, kw) =
    `shape` behind `w`; x (B, C, H, W) float; returns fp32 (B, O, OH, OW) contiguous. input_step: x is first rounded
    to round(x / step) clamped to +-input_clamp (static INT8's input codes), in the kernel, and an image holding NaN
    or inf gives a NaN output image (the kernel counts them as it rounds). Without input_step computed in fp32 from x
    as is, so NaN / inf propagate as in F.conv2d (no int8 rounding of activations here)."""
    o, _, kh, kw = shape
    if tuple(w.codes.shape) != (o, kh * kw) or x.dim() != 4 or o % x.shape[1]:
        raise ValueError(f"depthwise weight {tuple(w.codes.shape)} does not fit shape {tuple(shape)} and x "
                         f"{tuple(x.shape)}")
    x, bias = _check(x, bias, o, act)
    geo, oh, ow = geometry(x, shape, stride, padding, dilation, x.shape[1])
    y = torch.empty(x.shape[0], o, oh, ow, dtype=torch.float32)
    bad = _lib(library).lb_dwconv(x.data_ptr(), geo.data_ptr(), w.codes.data_ptr(), w.scale.data_ptr(),
                                  w.zero.data_ptr(), w.group_k, w.scale.shape[1], _ptr(bias), ACTIVATIONS[act],
                                  float(input_step or 0.0), float(input_clamp), y.data_ptr(),
                                  num_threads or torch.get_num_threads())
    if bad and input_step:  # rare: find the images (rounding to codes would hide NaN / inf)
        y[~torch.isfinite(x.abs().flatten(1).amax(1))] = float("nan")
    return y


def conv2d_gemm(x: torch.Tensor, w: Int4CpuWeight, shape, bias: torch.Tensor | None, stride, padding, dilation,
                groups: int, act: str | None = None, num_threads: int | None = None,
                library: cpu_native.NativeLibrary | None = None, activations: str | None = None) -> torch.Tensor:
    """F.conv2d(x, W, bias, stride, padding, dilation, groups) then `act`, for W (O, C/groups, kh, kw) = `shape`
    behind the native Int4CpuWeight `w` (N = O rows, K = C/groups*kh*kw); x (B, C, H, W) float; returns fp32
    (B, O, OH, OW) contiguous. Activations are rounded to int8 per output pixel and group as the Linear kernel does:
    `activations` "int8/32", "int8/block" or "int8/row" (None: the weight's act_per_row choice); "fp32" is not served
    here (dispatch runs such convs as im2col + the Linear kernel, or a float copy)."""
    o, ig, kh, kw = shape
    if w.impl != "native" or (w.n, w.k) != (o, ig * kh * kw) or x.dim() != 4 or x.shape[1] != ig * groups:
        raise ValueError(f"weight {w.impl} ({w.n}, {w.k}) does not fit shape {tuple(shape)}, groups={groups} and x "
                         f"{tuple(x.shape)}")
    x, bias = _check(x, bias, o, act)
    geo, oh, ow = geometry(x, shape, stride, padding, dilation, groups)
    t = w.tensors
    kp = t["packed"].shape[1] * 8 // (4 if w.bits <= 4 else 8)
    scheme = activations or ("int8/row" if w.act_per_row else "int8/block")
    if scheme not in cpu_native.INT8_ACT_MODES:
        raise ValueError(f"activations={scheme!r}: the native conv rounds activations to int8; use one of "
                         f"{list(cpu_native.INT8_ACT_MODES)}")
    y = torch.empty(x.shape[0], o, oh, ow, dtype=torch.float32)
    _lib(library).lb_conv_q(x.data_ptr(), geo.data_ptr(), t["packed"].data_ptr(), t["scale"].data_ptr(),
                            t["scale_zero"].data_ptr(), kp, w.group_k // 32, t["scale"].shape[1],
                            cpu_native.INT8_ACT_MODES[scheme], 4 if w.bits <= 4 else 8, _ptr(bias), ACTIVATIONS[act],
                            y.data_ptr(), num_threads or torch.get_num_threads())
    return y


def conv2d_native(x: torch.Tensor, w: NativeConvWeight, bias, stride, padding, dilation, groups: int,
                  act: str | None = None, library: cpu_native.NativeLibrary | None = None,
                  activations: str | None = None) -> torch.Tensor:
    """The native conv for a weight from `prepare_conv`: depthwise or GEMM by its kind (library: a specific build,
    default this process's). GEMM kind: outputs whose receptive field holds a NaN or an inf come out NaN (the int8
    GEMM cannot carry them; the rest is computed on the finite values); depthwise: as F.conv2d in fp32."""
    if isinstance(w.weight, DepthwiseWeight):  # fp32 throughout: NaN / inf propagate as in F.conv2d
        return conv2d_depthwise(x, w.weight, w.shape, bias, stride, padding, dilation, act, library=library)
    if not math.isfinite(x.sum(dtype=torch.float32).item()):
        finite = torch.isfinite(x)
        y = conv2d_native(x.where(finite, 0.0), w, bias, stride, padding, dilation, groups, act, library, activations)
        ones = torch.ones(w.shape, dtype=torch.float32)
        hit = F.conv2d((~finite).float(), ones, None, stride, padding, dilation, groups) > 0
        return y.masked_fill(hit, float("nan"))
    return conv2d_gemm(x, w.weight, w.shape, bias, stride, padding, dilation, groups, act, library=library,
                       activations=activations)
