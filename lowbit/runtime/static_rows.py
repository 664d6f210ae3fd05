"""The built-in static W8A8 kernel rows (ops "static" and "static_conv"; math in lowbit.kernels.cpu_static_int8).

Every static row computes y = [relu](int8(x / step) @ wq.T * (step * s) + bias) in float32 and gives NaN on each
output row whose input row held a NaN or an inf. Options of `run`: step (the activation step), clamp (1..127),
relu (the fused ReLU); an int8 `x` is taken as codes already rounded (a conv's im2col). Conv rows also take the
geometry (window (kh, kw), stride, padding, dilation; the depthwise row: shape); the NHWC rows read and return
channels_last tensors (lowbit.kernels.cpu_static_nhwc). Order on the CPU: the native
kernel (where built, K <= its limit), torch._int_mm (where this machine's probe found it exact for the shape
class), else the float64 emulation; on CUDA the Triton int8 GEMM with the static step.
"""

from __future__ import annotations

import torch

from .kernel_row import KernelRow, StaticKernel, kernel_module


def _codes(qw) -> torch.Tensor:
    from ..quant.static_int8 import int8_codes

    return int8_codes(qw)


def _int8_prepare(mod, qw, _dtype):
    return mod.prepare_static_int8(_codes(qw), qw.scale.reshape(-1))


def _nan_rows(x2d: torch.Tensor, y2d: torch.Tensor) -> None:
    """NaN in each output row whose input row holds NaN or inf (the row max of |x| propagates both)."""
    bad = ~torch.isfinite(x2d.abs().amax(1))
    if bool(bad.any()):
        y2d[bad] = float("nan")


def _int8_run(impl: str):
    def run(mod, w, x, bias, _activations, step, clamp, relu=False):
        from ..quant.static_int8 import quantize_symmetric

        xq = x if x.dtype == torch.int8 else quantize_symmetric(x, step, clamp)
        y = mod.int8_matmul(xq, w, impl).to(torch.float32).mul_(w.scale.to(x.device) * step)
        if bias is not None:
            y.add_(bias.float())
        if relu:
            y.clamp_(min=0)  # NaN stays NaN
        if x.dtype != torch.int8:
            _nan_rows(x, y)
        return y
    return run


class NativeStatic:
    """The native kernel's packed weight and the epilogue vectors of the last (step, bias) it ran with."""

    def __init__(self, mod, weight, make_epilogue=None):
        self.mod, self.weight, self.key, self.epilogue = mod, weight, None, None
        self.make_epilogue = make_epilogue or mod.native_epilogue

    def epilogue_for(self, step: float, bias: torch.Tensor | None):
        """(step * s, bias) float32 vectors the kernel reads, rebuilt when the step or the bias changes (an LSTM's
        hidden step may, per call)."""
        key = (step, None if bias is None else (bias.data_ptr(), bias._version))
        if key != self.key:
            self.key, self.epilogue = key, self.make_epilogue(self.weight, step, bias)
        return self.epilogue


def _conv_shape(qw) -> tuple[int, int, int, int]:
    """(O, C, kh, kw) of a Conv2d weight, (O, C, 1, k) of a Conv1d one."""
    shape = tuple(qw.shape)
    return shape if len(shape) == 4 else (shape[0], shape[1], 1, shape[2])


def _native_prepare(mod, qw, _dtype):
    return NativeStatic(mod, mod.pack_static_native(_codes(qw), qw.scale.reshape(-1)))


def _native_conv_prepare(mod, qw, _dtype):
    codes = mod.conv_weight_codes(_codes(qw), _conv_shape(qw))
    return NativeStatic(mod, mod.pack_static_native(codes, qw.scale.reshape(-1)))


def _native_run(mod, w, x, bias, _activations, step, clamp, relu=False):
    return mod.native_linear_static(x, w.weight, step, clamp, w.epilogue_for(step, bias), relu)


def _native_conv_run(mod, w, x, bias, _activations, step, clamp, relu=False, window=(1, 1), stride=(1, 1),
                     padding=(0, 0), dilation=(1, 1)):
    return mod.native_conv2d_static(x, w.weight, window, stride, padding, dilation, step, clamp,
                                    w.epilogue_for(step, bias), relu)


def _native_supports(mod, qw):
    return f"K = {qw.k} > {mod.NATIVE_MAX_K} could overflow the kernel's int32 accumulators" \
        if qw.k > mod.NATIVE_MAX_K else None


def _triton_prepare(_mod, qw, _dtype, device=None):
    return qw.to(device).compute_layout() if device is not None else qw.compute_layout()


def _triton_run(_mod, cw, x, bias, _activations, step, clamp, relu=False):
    b = None if bias is None else bias.detach().float().to(x.device)
    y = kernel_module("triton_int8").gemm_a8w_static(x, cw, step, clamp, b)
    if relu:
        y.clamp_(min=0)
    _nan_rows(x, y)
    return y


def _depthwise_prepare(mod, qw, _dtype, step=1.0):
    """Codes + 128 as uint8 (O, kh*kw), scale s_w * step, zero 128: lb_dwconv's layout for the rounded input."""
    w = _codes(qw)  # (O, kh*kw)
    codes = (w.to(torch.int16) + 128).to(torch.uint8).reshape(w.shape[0], -1).contiguous()
    scale = (qw.scale.reshape(-1).to(torch.float32) * step).reshape(-1, 1).contiguous()
    return mod.DepthwiseWeight(codes, scale, torch.full_like(scale, 128.0), codes.shape[1])


def _depthwise_run(mod, w, x, bias, _activations, step, clamp, relu=False, shape=None, stride=(1, 1),
                   padding=(0, 0), dilation=(1, 1), act=None):
    """act: "relu", "relu6", "hardswish" or None (relu=True is "relu")."""
    b = None if bias is None else bias.detach().float().contiguous()
    # the kernel rounds x to its codes round(x / step) clamped to +-clamp as it pads each plane, and gives NaN
    # images where x held NaN / inf
    return mod.conv2d_depthwise(x.detach(), w, shape, b, stride, padding, dilation, act or ("relu" if relu else None),
                                input_step=step, input_clamp=clamp)


def _pointwise_prepare(mod, qw, _dtype):
    """The 1x1 conv's codes (O, C) in the native pointwise kernel's weight tiles."""
    return NativeStatic(mod, mod.pack_static_pw(_codes(qw).reshape(qw.shape[0], -1), qw.scale.reshape(-1)),
                        mod.pointwise_epilogue)


def _pointwise_run(mod, w, x, bias, _activations, step, clamp, relu=False, act=None):
    """act: "relu", "relu6", "hardswish" or None (relu=True is "relu")."""
    return mod.native_conv1x1_static(x, w.weight, step, clamp, w.epilogue_for(step, bias), act or
                                     ("relu" if relu else None))


def _float_prepare(_mod, qw, _dtype):
    """The dequantized float32 weight in the conv's own shape."""
    return qw.dequantize(torch.float32).reshape(qw.shape).contiguous()


_ACTS = {None: None, "relu": torch.nn.functional.relu, "relu6": torch.nn.functional.relu6,
         "hardswish": torch.nn.functional.hardswish}


def _float_run(_mod, w, x, bias, _activations, step, clamp, relu=False, act=None, stride=(1, 1), padding=(0, 0),
               dilation=(1, 1), groups=1):
    """F.conv2d on the float copy (x is not rounded to the step: a float layer), then act."""
    wt = w if w.dim() == 4 else w.unsqueeze(2)  # a Conv1d weight (O, C, k) as (O, C, 1, k)
    y = torch.nn.functional.conv2d(x, wt, bias, stride, padding, dilation, groups)
    fn = _ACTS[act or ("relu" if relu else None)]
    return y if fn is None else fn(y)


def _dw_nhwc_prepare(mod, qw, _dtype):
    """The depthwise codes as floats, tap-major (lowbit.kernels.cpu_static_nhwc.pack_dw_nhwc), with the epilogue
    vectors of the last (step, bias)."""
    o, _, kh, kw = _conv_shape(qw)
    return NativeStatic(mod, mod.pack_dw_nhwc(_codes(qw).reshape(o, -1), qw.scale.reshape(-1), kh, kw),
                        mod.dw_epilogue)


def _dw_nhwc_run(mod, w, x, bias, _activations, step, clamp, relu=False, act=None, stride=(1, 1), padding=(0, 0),
                 dilation=(1, 1)):
    return mod.conv_dw_nhwc(x, w.weight, w.epilogue_for(step, bias), stride, padding, dilation, step, clamp,
                            act or ("relu" if relu else None))


def _gemm_nhwc_run(mod, w, x, bias, _activations, step, clamp, relu=False, act=None, window=(1, 1), stride=(1, 1),
                   padding=(0, 0), dilation=(1, 1)):
    return mod.conv_gemm_nhwc(x, w.weight, window, stride, padding, dilation, step, clamp, w.epilogue_for(step, bias),
                              act or ("relu" if relu else None))


STATIC_ROWS = (
    KernelRow(StaticKernel.TRITON, op="static", device="cuda", priority=10, capability="triton_gpu",
              module="triton_common", prepare=_triton_prepare, run=_triton_run, int8_activations=True,
              doc="Triton int8 GEMM with the static step (lowbit.kernels.triton_int8.gemm_a8w_static)"),
    KernelRow(StaticKernel.NATIVE, op="static", priority=10, capability="native_extension",
              module="cpu_static_int8", supports=_native_supports, prepare=_native_prepare, run=_native_run,
              int8_activations=True, doc="lowbit's native static kernel (VNNI / AVX2 / plain C)"),
    KernelRow(StaticKernel.INT_MM, op="static", priority=20, capability=lambda caps: "int_mm" in caps.torch_ops_probed,
              torch_op="int_mm", module="cpu_static_int8", layout="int8", prepare=_int8_prepare,
              run=_int8_run("int_mm"), int8_activations=True,
              doc="torch._int_mm, where this machine's probe found it exact for the shape class"),
    KernelRow(StaticKernel.EMULATED, op="static", device="any", module="cpu_static_int8", layout="int8",
              prepare=_int8_prepare, run=_int8_run("emulated"), int8_activations=True,
              doc="the same integers through a float64 matmul (exact while |acc| < 2**53): the fallback"),
    KernelRow(StaticKernel.NATIVE, op="static_conv", priority=10, capability="native_extension",
              module="cpu_static_int8", supports=_native_supports, prepare=_native_conv_prepare,
              run=_native_conv_run, int8_activations=True,
              doc="groups == 1 zero-padded conv: the native quantizing im2col + static GEMM, NCHW by one copy"),
    KernelRow(StaticKernel.DEPTHWISE, op="static_conv", priority=5, capability="native_extension",
              module="cpu_conv", prepare=_depthwise_prepare, run=_depthwise_run, int8_activations=True,
              doc="depthwise conv (<= 64 taps, zero padding) through lb_dwconv on the input rounded to the step"),
    KernelRow(StaticKernel.FLOAT_CONV, op="static_conv", priority=5, device="cpu", capability=lambda _caps: True,
              prepare=_float_prepare, run=_float_run,
              doc="a float copy of the conv (F.conv2d, input not rounded) where torch's fp32 conv is faster"),
    KernelRow(StaticKernel.POINTWISE, op="static_conv", priority=5, capability="native_extension",
              module="cpu_static_int8", supports=_native_supports, prepare=_pointwise_prepare, run=_pointwise_run,
              int8_activations=True, doc="1x1 stride-1 conv: the native static GEMM on NCHW pixel panels, fused act"),
    KernelRow(StaticKernel.NHWC_DEPTHWISE, op="static_conv", priority=5, capability="native_extension",
              module="cpu_static_nhwc", prepare=_dw_nhwc_prepare, run=_dw_nhwc_run, int8_activations=True,
              doc="depthwise conv on channels-last images: codes rounded once per row, channels in vectors, fused act"),
    KernelRow(StaticKernel.NHWC_GEMM, op="static_conv", priority=5, capability="native_extension",
              module="cpu_static_nhwc", supports=_native_supports, prepare=_native_conv_prepare, run=_gemm_nhwc_run,
              int8_activations=True, doc="groups == 1 conv on channels-last images: the static GEMM on pixel rows"),
)
