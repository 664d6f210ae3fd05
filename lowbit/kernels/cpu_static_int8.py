"""Static W8A8: int8 activations quantized with a fixed (calibrated) scale x int8 weights -> int32 -> float.

Math (symmetric, zero points 0; a = activation scale, s[n] = weight scale of output n, c = activation clamp):
    xq[m, k] = clamp(round_half_even(x[m, k] / a), -c, c)                      int8
    acc[m, n] = sum_k xq[m, k] * wq[n, k]                                      int32, exact
    y[m, n]   = acc[m, n] * (a * s[n]) + bias[n]                               float32
The only rounding beyond fp32 is the activation's (fixed step a, values beyond c * a clipped) and the weight's.
Implementations (rows of the runtime's kernel table, chosen by `lowbit.runtime.static_dispatch.select_static`):
"int_mm" (`torch._int_mm`, int8 x int8 -> int32 on the CPU, where this machine's probe (`lowbit.kernels.torch_ops`,
op "int_mm") found it exact for the shape class) and "emulated" (the same integers through a float64 matmul, exact
while |acc| < 2**53).
A row of x holding NaN or inf gives a NaN output row (rounding to int8 would hide it).
The native kernels (lowbit_cpu_static.h): `native_linear_static` (quantize + GEMM + epilogue), `native_conv2d_static`
(a quantizing im2col + the GEMM, NCHW by one copy) and `native_conv1x1_static` (lowbit_cpu_static_pw.h: a 1x1 conv
on NCHW with the weight as the tiled operand and pixel panels quantized straight from the image, bias and
ReLU / ReLU6 / hard-swish fused; `pointwise_caller` binds its arguments once).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..quant.static_int8 import quantize_symmetric

IMPLS = ("int_mm", "emulated")


@dataclass(frozen=True)
class StaticInt8Weight:
    """An int8 weight prepared for `linear_static_int8`.

    wt: int8 (K, N) contiguous (the transposed codes, the layout `torch._int_mm` reads); scale: float32 (N,);
    n, k: the weight's (N, K).
    """

    wt: torch.Tensor
    scale: torch.Tensor
    n: int
    k: int


def available_int_mm() -> bool:
    """True when this torch has `torch._int_mm` (its numbers are the probe's business)."""
    return hasattr(torch, "_int_mm")


def prepare_static_int8(codes: torch.Tensor, scale: torch.Tensor) -> StaticInt8Weight:
    """codes: int8 (N, K); scale: float (N,) or (N, 1)."""
    if codes.dim() != 2 or codes.dtype != torch.int8:
        raise ValueError(f"static int8 weights are int8 (N, K), got {codes.dtype} {tuple(codes.shape)}")
    n, k = codes.shape
    scale = scale.reshape(-1).to(torch.float32)
    if scale.numel() != n:
        raise ValueError(f"weight scale has {scale.numel()} values for {n} output channels")
    return StaticInt8Weight(codes.t().contiguous(), scale.contiguous(), n, k)


def int8_matmul(xq: torch.Tensor, w: StaticInt8Weight, impl: str = "int_mm") -> torch.Tensor:
    """int8 (M, K) x the weight -> the exact int32 accumulators (M, N) (as int32, or float64 when emulated)."""
    if impl not in IMPLS:
        raise ValueError(f"impl={impl!r} is not one of {IMPLS}")
    if impl == "int_mm":
        return torch._int_mm(xq.contiguous(), w.wt)
    return xq.to(torch.float64) @ w.wt.to(torch.float64)


def linear_static_int8(x: torch.Tensor, w: StaticInt8Weight, act_scale: float, clamp: int = 127,
                       bias: torch.Tensor | None = None, impl: str = "int_mm") -> torch.Tensor:
    """y (M, N) = dequant(int8(x / act_scale) @ wq.T) + bias in x's dtype; x: float (M, K)."""
    if x.dim() != 2 or x.shape[1] != w.k:
        raise ValueError(f"linear_static_int8 expects x of shape (M, {w.k}), got {tuple(x.shape)}")
    if not act_scale > 0:
        raise ValueError(f"activation scale must be positive, got {act_scale}")
    xf = x.float()
    acc = int8_matmul(quantize_symmetric(xf, act_scale, clamp), w, impl)
    y = acc.to(torch.float32) * (w.scale * act_scale)
    if bias is not None:
        y = y + bias.float()
    bad = ~torch.isfinite(xf).all(1)
    if bool(bad.any()):
        y[bad] = float("nan")
    return y.to(x.dtype)


# --- the native kernel (lowbit_cpu_static.h): quantize with the fixed step, int8 GEMM, fused epilogue ---

NATIVE_MAX_K = 65536  # K * 255 * 127 < 2**31: the int32 accumulators (shifted activations included) cannot wrap


@dataclass(frozen=True)
class NativeStaticWeight:
    """An int8 weight in the native kernel's layout: packed int8 (Np / NR, Kp / 4, NR, 4) (panels of NR output
    channels, NR = the build's `lb_static_nr()`: 64 with AVX-512, else 16), wsum int32 (Np,) = sum_k wq[n, k],
    scale float32 (N,); N padded to Np (a multiple of NR) and K to Kp (a multiple of 4) with zero codes."""

    packed: torch.Tensor
    wsum: torch.Tensor
    scale: torch.Tensor
    n: int
    k: int
    kp: int


def _static_fns(lib):
    """The ctypes functions of the static kernels, argument types set once per library."""
    import ctypes

    c = lib.lib
    if not getattr(c, "_lowbit_static_ready", False):
        i64, ptr, i32, f32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int, ctypes.c_float
        c.lb_static_quant.argtypes = [ptr, i64, i64, i64, f32, i32, ptr, i32]
        c.lb_static_im2col.argtypes = [ptr, *([i64] * 14), f32, i32, i64, ptr, ptr, i32]
        c.lb_static_gemm.argtypes = [ptr, i64, i64, ptr, ptr, ptr, ptr, i64, i32, ptr, i64, i64, i32]
        c.lb_static_gemm.restype = None
        c.lb_static_quant.restype = c.lb_static_im2col.restype = i64  # how many NaN / inf the input held
        c.lb_static_shift.restype = i32
        c.lb_static_mr.restype = i32
        c.lb_static_nr.restype = i32
        c._lowbit_static_mr = int(c.lb_static_mr())
        c._lowbit_static_nr = int(c.lb_static_nr())
        c._lowbit_static_ready = True
    return c


def native_static_library():
    """The loaded native library when it has the static kernels, else None (never raises)."""
    from .cpu_native import native_library

    lib = native_library()
    return lib if lib is not None and hasattr(lib.lib, "lb_static_gemm") else None


def native_static_reason(k: int) -> str | None:
    """Why the native static kernel cannot run a product with K input channels here, or None."""
    if k > NATIVE_MAX_K:
        return f"K = {k} > {NATIVE_MAX_K} could overflow the kernel's int32 accumulators"
    if native_static_library() is None:
        from .cpu_native import native_unavailable_reason

        return f"the native CPU kernels are unavailable ({native_unavailable_reason()})"
    return None


def pack_static_native(codes: torch.Tensor, scale: torch.Tensor) -> NativeStaticWeight:
    """int8 codes (N, K) and their scales (N,) -> the loaded native library's layout (see `NativeStaticWeight`)."""
    if codes.dim() != 2 or codes.dtype != torch.int8:
        raise ValueError(f"static int8 weights are int8 (N, K), got {codes.dtype} {tuple(codes.shape)}")
    panel = _static_fns(native_static_library())._lowbit_static_nr
    n, k = codes.shape
    np_, kp = -(-n // panel) * panel, -(-k // 4) * 4
    padded = torch.nn.functional.pad(codes, (0, kp - k, 0, np_ - n))
    packed = padded.view(np_ // panel, panel, kp // 4, 4).permute(0, 2, 1, 3).contiguous()
    wsum = padded.to(torch.int32).sum(1, dtype=torch.int32).contiguous()
    return NativeStaticWeight(packed, wsum, scale.reshape(-1).to(torch.float32).contiguous(), n, k, kp)


def native_epilogue(w: NativeStaticWeight, act_scale: float, bias: torch.Tensor | None):
    """(a * s, bias) as float32 (Np,) vectors the kernel reads (padding 0); build once per layer and step."""
    np_ = w.wsum.numel()
    scale = torch.zeros(np_, dtype=torch.float32)
    scale[: w.n] = w.scale * act_scale
    b = None
    if bias is not None:
        b = torch.zeros(np_, dtype=torch.float32)
        b[: w.n] = bias.detach().float()
    return scale, b


def _tiles(c, rows: int, kp: int) -> torch.Tensor:
    """The activation buffer of the kernel's tiled layout: rows rounded up to its tile height, Kp codes each."""
    mr = c._lowbit_static_mr
    return torch.empty(-(-rows // mr) * mr * kp, dtype=torch.uint8)


def _gemm(c, xq, m, w, epi, relu, y, ldm, ldn, nt):
    scale, bias = epi
    c.lb_static_gemm(xq.data_ptr(), m, w.kp, w.packed.data_ptr(), w.wsum.data_ptr(), scale.data_ptr(),
                     None if bias is None else bias.data_ptr(), w.n, int(relu), y.data_ptr(), ldm, ldn, nt)


def native_quantize_activations(x: torch.Tensor, kp: int, act_scale: float, clamp: int,
                                num_threads: int | None = None) -> tuple[torch.Tensor, int]:
    """(codes, bad): x float32 contiguous (M, K) rounded to int8 steps of act_scale, clamped to +-clamp, in the
    native GEMM's tiled activation layout (uint8, rows rounded up to its tile height, kp >= K codes each); bad:
    how many NaN / inf x held (their codes are meaningless). The first half of `native_linear_static`."""
    if x.dim() != 2 or x.dtype != torch.float32 or not x.is_contiguous() or x.shape[1] > kp:
        raise ValueError(f"activations must be float32 contiguous (M, K <= {kp}), got {x.dtype} {tuple(x.shape)}")
    c = _static_fns(native_static_library())
    m, k = x.shape
    xq = _tiles(c, m, kp)
    bad = c.lb_static_quant(x.data_ptr(), m, k, kp, float(act_scale), int(clamp), xq.data_ptr(),
                            num_threads or torch.get_num_threads())
    return xq, bad


def native_gemm_static(xq: torch.Tensor, m: int, w: NativeStaticWeight, epi, relu: bool = False,
                       out: torch.Tensor | None = None, num_threads: int | None = None) -> torch.Tensor:
    """y float32 (M, N) = [relu](xq @ wq.T * (a * s) + bias) on codes from `native_quantize_activations` (M rows,
    w.kp codes each); epi from `native_epilogue`; written into `out` (float32 contiguous (M, N)) when given. The
    second half of `native_linear_static`."""
    c = _static_fns(native_static_library())
    y = torch.empty(m, w.n, dtype=torch.float32) if out is None else out
    _gemm(c, xq, m, w, epi, relu, y, w.n, 1, num_threads or torch.get_num_threads())
    return y


def native_linear_static(x: torch.Tensor, w: NativeStaticWeight, act_scale: float, clamp: int, epi,
                         relu: bool = False, num_threads: int | None = None) -> torch.Tensor:
    """y float32 (M, N) = [relu](int8(x / act_scale) @ wq.T * (a * s) + bias); x float (M, K); epi from
    `native_epilogue`. A row of x holding NaN or inf gives a NaN output row."""
    x = x.float().contiguous()
    nt = num_threads or torch.get_num_threads()
    xq, bad = native_quantize_activations(x, w.kp, act_scale, clamp, nt)
    y = native_gemm_static(xq, x.shape[0], w, epi, relu, num_threads=nt)
    if bad:  # rare: find the rows (rounding to int8 would hide NaN / inf)
        y[~torch.isfinite(x).all(1)] = float("nan")
    return y


def conv_channels_padded(channels: int) -> int:
    """Input channels of the native conv layout: rounded up to 4 (one 4-byte group of the GEMM per 4 channels)."""
    return -(-channels // 4) * 4


def conv_weight_codes(codes: torch.Tensor, shape4d) -> torch.Tensor:
    """int8 conv codes (O, C * kh * kw) in (c, i, j) order -> (O, kh * kw * Cp) in (i, j, c) order with zero codes
    for the padded channels: the columns `native_conv2d_static` builds."""
    o, c, kh, kw = shape4d
    w = codes.reshape(o, c, kh, kw).permute(0, 2, 3, 1)
    return torch.nn.functional.pad(w, (0, conv_channels_padded(c) - c)).reshape(o, -1).contiguous()


def native_conv2d_static(x: torch.Tensor, w: NativeStaticWeight, kernel: tuple[int, int], stride, padding, dilation,
                         act_scale: float, clamp: int, epi, relu: bool = False,
                         num_threads: int | None = None) -> torch.Tensor:
    """A groups=1, zero-padded conv2d: x float (B, C, H, W) -> float32 (B, N, OH, OW). w: packed from
    `conv_weight_codes`. Per image: quantization + im2col in one native call (channels-last columns), the GEMM into
    (OH * OW, N) rows, then one transposed copy into NCHW. An image holding NaN or inf gives a NaN output image."""
    c = _static_fns(native_static_library())
    x = x.float().contiguous()
    b, ch, h, wd = x.shape
    kh, kw = kernel
    cp = conv_channels_padded(ch)
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if kh * kw * cp != w.k:
        raise ValueError(f"conv input has {ch} channels x {kh}x{kw}, the weight expects K = {w.k}")
    nt = num_threads or torch.get_num_threads()
    cols = _tiles(c, oh * ow, w.kp)
    scratch = torch.empty(2 * cp * h * wd, dtype=torch.uint8)
    rows = torch.empty(oh * ow, w.n, dtype=torch.float32)
    y = torch.empty(b, w.n, oh, ow, dtype=torch.float32)
    for i in range(b):
        bad = c.lb_static_im2col(x[i].data_ptr(), ch, h, wd, cp, kh, kw, stride[0], stride[1], padding[0], padding[1],
                           dilation[0], dilation[1], oh, ow, float(act_scale), int(clamp), w.kp, cols.data_ptr(),
                           scratch.data_ptr(), nt)
        _gemm(c, cols, oh * ow, w, epi, relu, rows, w.n, 1, nt)
        y[i].view(w.n, oh * ow).copy_(rows.t())
        if bad:
            y[i] = float("nan")
    return y


# --- the pointwise conv on NCHW (lowbit_cpu_static_pw.h): the weight as the tiled operand, pixels as panels ---

POINTWISE_ACTS = {None: 0, "relu": 1, "relu6": 2, "hardswish": 3}


@dataclass(frozen=True)
class NativePointwiseWeight:
    """A 1x1 conv's int8 weight for `native_conv1x1_static`: tiles uint8 (Op / MR, Kp / 4, MR, 4) = codes + the
    build's shift (`lb_static_shift()`: 128 with VNNI, else 0; zero codes in the padding), Op = O rounded up to the
    build's tile height MR (`lb_static_mr()`), Kp = C rounded up to 4; scale float32 (O,); n = O, k = C."""

    tiles: torch.Tensor
    scale: torch.Tensor
    n: int
    k: int
    kp: int


def pack_static_pw(codes: torch.Tensor, scale: torch.Tensor) -> NativePointwiseWeight:
    """int8 codes (O, C) of a 1x1 conv and their scales (O,) -> the loaded native library's tile layout."""
    if codes.dim() != 2 or codes.dtype != torch.int8:
        raise ValueError(f"static int8 weights are int8 (N, K), got {codes.dtype} {tuple(codes.shape)}")
    c = _pw_fns(native_static_library())
    mr, shift = c._lowbit_static_mr, c._lowbit_static_shift
    n, k = codes.shape
    op, kp = -(-n // mr) * mr, conv_channels_padded(k)
    padded = torch.nn.functional.pad(codes.to(torch.int16), (0, kp - k, 0, op - n)) + shift  # (Op, Kp)
    tiles = padded.to(torch.uint8).view(op // mr, mr, kp // 4, 4).permute(0, 2, 1, 3).contiguous()
    return NativePointwiseWeight(tiles, scale.reshape(-1).to(torch.float32).contiguous(), n, k, kp)


def _pw_fns(lib):
    import ctypes

    c = _static_fns(lib)
    if not getattr(c, "_lowbit_pw_ready", False):
        i64, ptr, i32, f32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int, ctypes.c_float
        c.lb_static_conv1x1.argtypes = [ptr, i64, i64, i64, i64, ptr, i64, ptr, ptr, i32, f32, i32, ptr, i32]
        c.lb_static_conv1x1.restype = i64
        c._lowbit_static_shift = int(c.lb_static_shift())
        c._lowbit_pw_ready = True
    return c


def pointwise_epilogue(w: NativePointwiseWeight, act_scale: float, bias: torch.Tensor | None):
    """(a * s, bias) as float32 (O,) vectors `native_conv1x1_static` reads; build once per layer and step."""
    b = None if bias is None else bias.detach().float().contiguous()
    return (w.scale * act_scale).contiguous(), b


def native_conv1x1_static(x: torch.Tensor, w: NativePointwiseWeight, act_scale: float, clamp: int, epi,
                          act: str | None = None, num_threads: int | None = None) -> torch.Tensor:
    """A 1x1, stride 1, unpadded, groups=1 conv2d: x float32 (B, C, H, W) -> float32 (B, O, H, W) =
    act(int8(x / act_scale) conv wq * (a * s) + bias), act one of POINTWISE_ACTS (None, "relu", "relu6",
    "hardswish"); epi from `pointwise_epilogue`. One native call: quantization straight from NCHW into the GEMM's
    pixel panels, the output tile written into NCHW rows. An image holding NaN or inf gives a NaN output image."""
    if x.dim() != 4 or x.shape[1] != w.k:
        raise ValueError(f"pointwise conv input must be (B, {w.k}, H, W), got {tuple(x.shape)}")
    if act not in POINTWISE_ACTS:
        raise ValueError(f"act={act!r} is not one of {list(POINTWISE_ACTS)}")
    c = _pw_fns(native_static_library())
    x = x.float().contiguous()
    b, ch, h, wd = x.shape
    scale, bias = epi
    y = torch.empty(b, w.n, h, wd, dtype=torch.float32)
    bad = c.lb_static_conv1x1(x.data_ptr(), b, ch, h * wd, w.kp, w.tiles.data_ptr(), w.n, scale.data_ptr(),
                              None if bias is None else bias.data_ptr(), POINTWISE_ACTS[act], float(act_scale),
                              int(clamp), y.data_ptr(), num_threads or torch.get_num_threads())
    if bad:
        y[~torch.isfinite(x.abs().flatten(1).amax(1))] = float("nan")
    return y


def pointwise_caller(w: NativePointwiseWeight, act_scale: float, clamp: int, epi, act: str | None, shape):
    """call(x) -> y: `native_conv1x1_static` for float32 CPU inputs of `shape` (B, C, H, W) with every other argument
    bound once (bit-identical; a layer's steady-state call: the caller checks x's shape, dtype and device)."""
    if act not in POINTWISE_ACTS or len(shape) != 4 or shape[1] != w.k:
        raise ValueError(f"pointwise call for act={act!r}, input {tuple(shape)} and a weight of {w.k} channels")
    fn = _pw_fns(native_static_library()).lb_static_conv1x1
    b, ch, h, wd = shape
    scale, bias = epi
    head = (b, ch, h * wd, w.kp, w.tiles.data_ptr(), w.n, scale.data_ptr(), None if bias is None else bias.data_ptr(),
            POINTWISE_ACTS[act], float(act_scale), int(clamp))
    out_shape, f32, num_threads = (b, w.n, h, wd), torch.float32, torch.get_num_threads

    def call(x: torch.Tensor, _held=(w, scale, bias)) -> torch.Tensor:  # _held: the tensors behind the pointers
        if not x.is_contiguous():
            x = x.contiguous()
        y = torch.empty(out_shape, dtype=f32)
        if fn(x.data_ptr(), *head, y.data_ptr(), num_threads()):
            y[~torch.isfinite(x.abs().flatten(1).amax(1))] = float("nan")
        return y

    return call
