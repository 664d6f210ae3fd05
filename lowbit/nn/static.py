"""Static W8A8 layers: int8 weights and int8 activations with a fixed (calibrated) scale, int32 accumulation.

`StaticQuantLinear`, `StaticQuantConv1d`, `StaticQuantConv2d` are the weight-only layers (same buffers, same
state-dict names: `weight_packed` (uint8 codes q + 128), `weight_scale` float32 (N, 1)) plus two plain attributes
kept in the checkpoint's metadata, not as tensors: `input_scale` (float, the activation step) and `input_clamp`
(int, 1..127), `fused_relu` (bool: a ReLU that followed the layer, computed in its epilogue) and `fused_act`
(None, "relu6" or "hardswish": the same for a ReLU6 / Hardswish after a conv). They compute through
`lowbit.kernels.cpu_static_int8` (math in its docstring): its native kernel (quantize with the fixed step, int8 GEMM,
epilogue with the optional ReLU; convolutions with groups == 1 and zero padding as a fused quantizing im2col) where
dispatch picks it, else torch's int8 matmul / the float64 emulation, with im2col (F.unfold) for convolutions. On the
CPU a conv first asks `select_static_conv` for a direct kernel: a 1x1 stride-1 conv the pointwise kernel on NCHW
(`native_conv1x1_static`), a depthwise one `lb_dwconv` with the input rounding in its fill, and where torch's fp32
conv measured faster (small depthwise planes, the 3-channel stem, a 1x1 on one pixel) a float copy (F.conv2d on the
dequantized weight, the input not rounded). Other grouped convs run as a float conv of the integer codes, exact
because every partial sum is an integer below 2**24 (float64 when K per group could exceed that). On a GPU: the
Triton int8 GEMM with the static step.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ..kernels.cpu_static_nhwc import to_nhwc
from ..quant.static_int8 import int8_codes
from ..runtime import executor
from ..runtime.kernel_row import StaticKernel
from ..runtime.static_dispatch import select_static_conv
from . import weight_cache
from .conv import QuantConv1d, QuantConv2d
from .conv_bound import BoundConv
from .linear import QuantLinear


class _StaticMixin:
    input_scale: float
    input_clamp: int

    def set_static(self, input_scale: float, input_clamp: int = 127, input_smooth: torch.Tensor | None = None):
        """Fix the activation step (> 0) and clamp (1..127), and the optional per-input-channel multiplier applied
        before quantization (SmoothQuant's 1 / s, Linear only: float32 (in_features,)); returns self."""
        if not (isinstance(input_scale, float) and input_scale > 0 and input_scale < float("inf")):
            raise ValueError(f"input_scale must be a positive finite float, got {input_scale!r}")
        if type(input_clamp) is not int or not 1 <= input_clamp <= 127:
            raise ValueError(f"input_clamp must be an int in 1..127, got {input_clamp!r}")
        if input_smooth is not None:
            input_smooth = torch.as_tensor(input_smooth, dtype=torch.float32).reshape(-1)
            if not isinstance(self, QuantLinear) or input_smooth.numel() != self.in_features \
                    or not bool(torch.isfinite(input_smooth).all()) or not bool((input_smooth > 0).all()):
                raise ValueError(f"input_smooth must be {getattr(self, 'in_features', '?')} positive finite values "
                                 "for a Linear layer")
        self.input_scale, self.input_clamp, self.input_smooth = input_scale, input_clamp, input_smooth
        self.fused_relu = getattr(self, "fused_relu", False)
        self.fused_act = getattr(self, "fused_act", None)
        return self

    def fuse_relu(self, on: bool = True):
        """Apply max(y, 0) to the output (the ReLU that followed this layer, now computed here); returns self."""
        self.fused_relu, self.fused_act = bool(on), None
        return self

    def fuse_act(self, act: str | None):
        """Apply `act` to the output (the activation module that followed this layer, now computed here): "relu"
        (the same as fuse_relu()), "relu6" or "hardswish" (torch's functions; convolutions only), None for none;
        returns self."""
        if act not in (None, *FUSED_ACTS):
            raise ValueError(f"act={act!r} is not one of {[None, *FUSED_ACTS]}")
        if act in ("relu6", "hardswish") and isinstance(self, QuantLinear):
            raise ValueError(f"a static Linear fuses ReLU only, not {act!r}")
        self.fused_relu, self.fused_act = act == "relu", None if act in (None, "relu") else act
        return self

    def _kernel_act(self) -> str | None:
        """The activation a kernel with a full epilogue (depthwise, pointwise) applies."""
        return "relu" if self.fused_relu else self.fused_act

    def _after(self, y: torch.Tensor) -> torch.Tensor:
        """The fused ReLU6 / hard-swish applied after a kernel whose epilogue has ReLU only."""
        return y if self.fused_act is None else FUSED_ACTS[self.fused_act](y)

    def static_meta(self) -> dict:
        meta = {"input_scale": self.input_scale, "input_clamp": self.input_clamp}
        if self.input_smooth is not None:
            meta["input_smooth"] = self.input_smooth.tolist()
        if self.fused_relu:
            meta["fused_relu"] = True
        if self.fused_act is not None:
            meta["fused_act"] = self.fused_act
        return meta

    def plan(self, rows: int, device: torch.device, fused: bool = True, op: str = "static"):
        """(Decision, prepared weight, run) of the static kernel for `rows` activation rows on `device`, from the one
        weight cache (`lowbit.nn.weight_cache.static_plan`; warns once when it is the emulation); fused=False: among
        torch's int8 matmul and the emulation only (a conv the fused kernels do not cover)."""
        return weight_cache.static_plan(self, "weight", device, rows, fused, op)

    def impl_for(self, rows: int, device: torch.device, torch_only: bool = False) -> StaticKernel:
        """The static kernel dispatch picks for `rows` activation rows on `device` (a `StaticKernel`, equal to its
        name: "native", "int_mm", "emulated", "triton")."""
        return self.plan(rows, device, not torch_only)[0].kernel

    def _entry(self):
        qw = weight_cache.compute_view(*self._op_args("weight"))
        return weight_cache.entry_for(qw), qw

    def prepared(self):
        """The int8 weight in torch's int8 matmul layout (`StaticInt8Weight`: wt int8 (K, N), scale float32 (N,)),
        built once per weight in the weight cache."""
        return weight_cache.static_prepared(*self._entry(), StaticKernel.INT_MM)

    def native_prepared(self):
        """(weight in the native kernel's layout, its epilogue vectors for this layer's step and bias)."""
        op = "static" if isinstance(self, QuantLinear) else "static_conv"
        w = weight_cache.static_prepared(*self._entry(), StaticKernel.NATIVE, op)
        return w.weight, w.epilogue_for(self.input_scale, self.bias)

    def static_run(self, x2: torch.Tensor, rows: int | None = None, fused: bool = True, op: str = "static",
                   **options) -> torch.Tensor:
        """The static product of `x2` (float (M, K); int8 codes for a conv's im2col; the image for a fused conv)
        through the kernel dispatch picks for `rows` (default M) rows: float32, NaN rows where the input row held
        NaN / inf."""
        _, w, run = self.plan(x2.shape[0] if rows is None else rows, x2.device, fused, op)
        return run(w, x2, self.bias, None, step=self.input_scale, clamp=self.input_clamp, relu=self.fused_relu,
                   **options)

    @classmethod
    def from_quant(cls, layer, input_scale: float, input_clamp: int = 127, input_smooth=None):
        """The static twin of a weight-only layer holding an 8-bit symmetric per-channel weight (buffers shared)."""
        qw = layer.quantized_weight("weight")
        int8_codes(qw)  # refuses other formats
        if layer._buffers.get("weight_input_scale") is not None:  # the static kernels have no per-channel divide
            raise ValueError("a layer with an AWQ input-scale vector (weight_input_scale) cannot become static INT8: "
                             "quantize the float model with lowbit.quantize_static instead")
        if isinstance(layer, QuantLinear):
            new = cls(qw, layer.bias, layer.backend)
        else:
            new = cls(qw, layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups, layer.padding_mode,
                      layer.backend)
        new.train(layer.training)
        return new.set_static(float(input_scale), int(input_clamp), input_smooth)


class StaticQuantLinear(_StaticMixin, QuantLinear):
    """nn.Linear as static W8A8: x (..., K) -> (..., N) in x's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x, lambda t: t.dim() >= 1 and t.shape[-1] == self.in_features, f"(..., {self.in_features})")
        x2 = x.reshape(-1, self.in_features).float()
        if self.input_smooth is not None:
            x2 = x2 * self.input_smooth.to(x2.device)
        return self.static_run(x2).reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        relu = ", fused ReLU" if self.fused_relu else ""
        return super().extra_repr() + f", static: input_scale={self.input_scale:.4g}, clamp={self.input_clamp}{relu}"


# the activations a static layer can compute in place of the module that followed it (lowbit.static.fuse)
FUSED_ACTS = {"relu": F.relu, "relu6": F.relu6, "hardswish": F.hardswish}

# A conv reading few input channels per output (the stem's 3, mobilenet's 16) runs faster as the float conv of its
# integer codes (`_grouped_codes_conv`, exact) than as the fused native int8 conv, whose GEMM gets K = 27..16 codes a
# row: measured 1 thread, EPYC Zen 4, thread time: stem 3x3 C=3 572 vs 1066 us, 1x1 C=16 at 56x56 146 vs 208 us and
# 356 vs 472 us, C=24 at 28x28 146 vs 154 us, C >= 40 the native conv ahead (1.2-2.3x).
CODES_CONV_MAX_CHANNELS = 16


def _codes_conv_faster(in_per_group: int, device: torch.device) -> bool:
    return device.type == "cpu" and in_per_group <= CODES_CONV_MAX_CHANNELS


# what a static conv's bound call is built from besides the weight, bias and input shape: writing one drops the call
_STATIC_STATE = frozenset({"input_scale", "input_clamp", "fused_relu", "fused_act"})


class _StaticConv(_StaticMixin):
    def __setattr__(self, name, value) -> None:
        if name in _STATIC_STATE:
            self.__dict__["_bound"] = None  # the bound call has the old step / clamp / act in it
        super().__setattr__(name, value)

    def _bind(self, x, stride, dilation, pads, shape4d) -> None:
        """Bind the call `_conv2d` makes for inputs like x where it is one kernel call on x (in either memory layout;
        a `conv_bound.BoundConv`, the weight-only convs' steady-state checks); else remember that there is none (see
        QuantConv2d._bind)."""
        self.__dict__["_bound"] = None
        if type(x) is not torch.Tensor or x.dtype != torch.float32 or not self.is_affine("weight"):
            return
        self.__dict__["_bound"] = BoundConv(self, x, self._kernel_call(x, stride, dilation, pads, shape4d))

    def _kernel_call(self, x, stride, dilation, pads, shape4d):
        """x -> y as `_conv2d` computes it when that is one kernel call (bit for bit), else None."""
        o, ig, kh, kw = shape4d
        if self.padding_mode != "zeros" or any(a != b for a, b in pads):
            return None
        geometry = {"stride": tuple(stride), "padding": tuple(a for a, _ in pads), "dilation": tuple(dilation)}
        step, clamp, relu, bias = self.input_scale, self.input_clamp, self.fused_relu, self.bias
        act = self._kernel_act()
        direct = self._direct_kernel(x, stride, dilation, pads, shape4d)
        if direct in (StaticKernel.NHWC_DEPTHWISE, StaticKernel.NHWC_GEMM):  # the module function, arguments bound
            w = weight_cache.static_prepared(*self._entry(), direct, "static_conv")
            epi, g = w.epilogue_for(step, bias), (geometry["stride"], geometry["padding"], geometry["dilation"])
            if direct is StaticKernel.NHWC_DEPTHWISE:
                return w.mod.dw_caller(w.weight, epi, *g, step, clamp, act, tuple(x.shape))
            return w.mod.gemm_caller(w.weight, epi, (kh, kw), *g, step, clamp, act, tuple(x.shape))
        if direct is StaticKernel.DEPTHWISE:
            w = weight_cache.static_prepared(*self._entry(), StaticKernel.DEPTHWISE, "static_conv", step=step)
            run = executor.runner(StaticKernel.DEPTHWISE, "static_conv")
            return lambda xb: run(w, xb, bias, None, step=step, clamp=clamp, act=act, shape=tuple(shape4d),
                                  **geometry)
        if direct is StaticKernel.POINTWISE:  # the native call with its arguments bound (~10 us less per call)
            w = weight_cache.static_prepared(*self._entry(), StaticKernel.POINTWISE, "static_conv")
            return w.mod.pointwise_caller(w.weight, step, clamp, w.epilogue_for(step, bias), act, tuple(x.shape))
        if direct is StaticKernel.FLOAT_CONV:  # F.conv2d itself (then act): a squeeze-excite 1x1 takes ~25 us
            w = weight_cache.static_prepared(*self._entry(), StaticKernel.FLOAT_CONV, "static_conv")
            conv = functools.partial(F.conv2d, weight=w if w.dim() == 4 else w.unsqueeze(2), bias=bias,
                                     groups=self.groups, **geometry)
            fn = None if act is None else FUSED_ACTS[act]
            if self._runs_nhwc(x):  # the output channels-last, as the layers after it read it
                return (lambda xb: conv(to_nhwc(xb))) if fn is None else lambda xb: fn(conv(to_nhwc(xb)))
            return conv if fn is None else lambda xb: fn(conv(xb))
        rows = x.shape[0] * max(1, x.shape[2] * x.shape[3] // (stride[0] * stride[1]))
        if self.groups == 1 and not _codes_conv_faster(ig, x.device) \
                and self.impl_for(rows, x.device) == StaticKernel.NATIVE:
            _, w, run = self.plan(rows, x.device, True, "static_conv")
            return lambda xb: self._after(run(w, xb, bias, None, step=step, clamp=clamp, relu=relu, window=(kh, kw),
                                              **geometry))
        return None

    def _direct_kernel(self, x, stride, dilation, pads, shape4d) -> StaticKernel | None:
        """DEPTHWISE / POINTWISE where a direct native kernel serves this conv on x (`select_static_conv`), else
        None (the im2col paths below)."""
        o, ig, kh, kw = shape4d
        zero_pad = self.padding_mode == "zeros" and all(a == b for a, b in pads)
        pointwise = zero_pad and kh * kw == 1 and x.dim() == 4 and all(a == 0 for a, _ in pads) \
            and tuple(stride) == (1, 1) and x.dtype == torch.float32
        plane = 0  # output pixels per channel (0: the float copy is not considered)
        if zero_pad and x.dim() == 4 and x.dtype == torch.float32:
            oh = (x.shape[2] + 2 * pads[0][0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
            ow = (x.shape[3] + 2 * pads[1][0] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
            plane = max(1, oh * ow)
        return select_static_conv(x.device.type, self.groups, ig, kh * kw, zero_pad,
                                  weight_cache.current_capabilities(), pointwise=pointwise, out_plane=plane,
                                  nhwc=self._runs_nhwc(x, o))

    def _runs_nhwc(self, x: torch.Tensor, out_channels: int | None = None) -> bool:
        """True where this conv runs channels-last: a Conv2d on a float32 CPU image (B, C, H, W), groups == 1 or one
        output per channel, where the native kernels are built (converted once when it comes NCHW; its output stays
        channels-last)."""
        o = self.out_channels if out_channels is None else out_channels
        return self._dims == 2 and x.dim() == 4 and x.dtype == torch.float32 and x.device.type == "cpu" \
            and (self.groups == 1 or o == self.groups == x.shape[1]) \
            and weight_cache.current_capabilities().native_extension

    def _conv2d(self, x, stride, dilation, pads, shape4d):
        """x (B, C, H, W) -> (B, O, OH, OW): quantize x with the fixed step, then the integer conv."""
        o, ig, kh, kw = shape4d
        zero_pad = self.padding_mode == "zeros" and all(a == b for a, b in pads)
        padding = [a for a, _ in pads]
        geometry = {"stride": tuple(stride), "padding": tuple(padding), "dilation": tuple(dilation)}
        direct = self._direct_kernel(x, stride, dilation, pads, shape4d)
        if direct in (StaticKernel.NHWC_DEPTHWISE, StaticKernel.NHWC_GEMM):  # x and y channels-last
            w = weight_cache.static_prepared(*self._entry(), direct, "static_conv")
            window = {} if direct is StaticKernel.NHWC_DEPTHWISE else {"window": (kh, kw)}
            return executor.run(direct, w, x, self.bias, None, "static_conv", step=self.input_scale,
                                clamp=self.input_clamp, act=self._kernel_act(), **window, **geometry)
        if direct is StaticKernel.DEPTHWISE:
            w = weight_cache.static_prepared(*self._entry(), StaticKernel.DEPTHWISE, "static_conv",
                                             step=self.input_scale)
            y = executor.run(StaticKernel.DEPTHWISE, w, x, self.bias, None, "static_conv", step=self.input_scale,
                             clamp=self.input_clamp, act=self._kernel_act(), shape=tuple(shape4d), **geometry)
            return y.to(x.dtype)
        if direct is StaticKernel.POINTWISE:
            w = weight_cache.static_prepared(*self._entry(), StaticKernel.POINTWISE, "static_conv")
            y = executor.run(StaticKernel.POINTWISE, w, x, self.bias, None, "static_conv", step=self.input_scale,
                             clamp=self.input_clamp, act=self._kernel_act())
            return y.to(x.dtype)
        if direct is StaticKernel.FLOAT_CONV:  # torch's fp32 conv is faster here: a float copy (see static_dispatch)
            w = weight_cache.static_prepared(*self._entry(), StaticKernel.FLOAT_CONV, "static_conv")
            x = to_nhwc(x) if self._runs_nhwc(x) else x  # then the output is channels-last too
            y = executor.run(StaticKernel.FLOAT_CONV, w, x, self.bias, None, "static_conv", step=self.input_scale,
                             clamp=self.input_clamp, act=self._kernel_act(), groups=self.groups, **geometry)
            return y.to(x.dtype)
        rows = x.shape[0] * max(1, x.shape[2] * x.shape[3] // (stride[0] * stride[1]))
        if self.groups == 1 and zero_pad and not _codes_conv_faster(ig, x.device) \
                and self.impl_for(rows, x.device) == StaticKernel.NATIVE:
            y = self._after(self.static_run(x, rows, op="static_conv", window=(kh, kw), **geometry))
            return y.to(x.dtype)  # NaN / inf images come back NaN
        flat = [p for pair in reversed(pads) for p in pair]
        # the integer codes as float: F.unfold (im2col) and the non-zero pad modes are float-only, and exact here
        xi = torch.div(x.float(), self.input_scale).round_().clamp_(-self.input_clamp, self.input_clamp)
        if any(flat):
            xi = F.pad(xi, flat, mode="constant" if self.padding_mode == "zeros" else self.padding_mode)
        b, _, h, wd = xi.shape
        oh = (h - dilation[0] * (kh - 1) - 1) // stride[0] + 1
        ow = (wd - dilation[1] * (kw - 1) - 1) // stride[1] + 1
        if self.groups == 1 and not _codes_conv_faster(ig, x.device):
            cols = F.unfold(xi, (kh, kw), dilation=dilation, stride=stride)  # (B, C*kh*kw, L)
            cols = cols.transpose(1, 2).reshape(-1, ig * kh * kw).to(torch.int8)  # (B*L, K)
            y = self.static_run(cols, fused=False).reshape(b, oh * ow, o)
        else:
            y = self._grouped_codes_conv(xi, stride, dilation, shape4d)
        y = y.transpose(1, 2).reshape(b, o, oh, ow)  # (B, L, O) -> (B, O, OH, OW)
        bad = ~torch.isfinite(x.detach().abs().flatten(1).amax(1))
        if bool(bad.any()):
            y[bad] = float("nan")
        return self._after(y).to(x.dtype)

    def _grouped_codes_conv(self, xi, stride, dilation, shape4d) -> torch.Tensor:
        """A grouped conv of the integer codes xi (padded) as a float conv, exact because every partial sum is an
        integer below 2**24 (float64 when K per group could exceed that), then the static epilogue: (B, L, O)."""
        o, ig, kh, kw = shape4d
        w = self.prepared()
        dt = torch.float32 if ig * kh * kw * 127 * 127 < 2 ** 24 else torch.float64
        wi = w.wt.t().reshape(o, ig, kh, kw).to(dt)
        acc = F.conv2d(xi.to(dt), wi, None, stride, 0, dilation, self.groups).flatten(2).transpose(1, 2)
        y = acc.to(torch.float32).mul_(w.scale.to(acc.device) * self.input_scale)
        if self.bias is not None:
            y.add_(self.bias.float())
        if self.fused_relu:
            y.clamp_(min=0)  # NaN stays NaN
        return y

    def extra_repr(self) -> str:
        relu = ", fused ReLU" if self.fused_relu else ""
        return super().extra_repr() + f", static: input_scale={self.input_scale:.4g}, clamp={self.input_clamp}{relu}"


class StaticQuantConv2d(_StaticConv, QuantConv2d):
    """nn.Conv2d as static W8A8: (B, C, H, W) -> (B, O, OH, OW)."""


class StaticQuantConv1d(_StaticConv, QuantConv1d):
    """nn.Conv1d as static W8A8: (B, C, L) -> (B, O, OL)."""


def _static_classes() -> dict:
    from .lstm import QuantLSTM
    from .static_lstm import StaticQuantLSTM

    return {QuantLinear: StaticQuantLinear, QuantConv2d: StaticQuantConv2d, QuantConv1d: StaticQuantConv1d,
            QuantLSTM: StaticQuantLSTM}


STATIC_KINDS = ("StaticQuantLinear", "StaticQuantConv2d", "StaticQuantConv1d", "StaticQuantLSTM")


def to_static(layer, input_scale: float, input_clamp: int = 127, input_smooth=None):
    """The static twin of a QuantLinear / QuantConv1d / QuantConv2d / QuantLSTM holding 8-bit symmetric per-channel
    weights."""
    cls = _static_classes().get(type(layer))
    if cls is None:
        raise TypeError(f"{type(layer).__name__} has no static int8 form (Linear, Conv1d, Conv2d, LSTM only)")
    return cls.from_quant(layer, input_scale, input_clamp, input_smooth)
