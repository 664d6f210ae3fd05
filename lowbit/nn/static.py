"""Static W8A8 layers: int8 weights and int8 activations with a fixed (calibrated) scale, int32 accumulation.

`StaticQuantLinear`, `StaticQuantConv1d`, `StaticQuantConv2d` are the weight-only layers (same buffers, same
state-dict names: `weight_packed` (uint8 codes q + 128), `weight_scale` float32 (N, 1)) plus two plain attributes
kept in the checkpoint's metadata, not as tensors: `input_scale` (float, the activation step) and `input_clamp`
(int, 1..127), and `fused_relu` (bool: a ReLU that followed the layer, computed in its epilogue). They compute
through `lowbit.kernels.cpu_static_int8` (math in its docstring): its native kernel (quantize with the fixed step,
int8 GEMM, epilogue with the optional ReLU; convolutions with groups == 1 and zero padding as a fused quantizing
im2col) where dispatch picks it, else torch's int8 matmul / the float64 emulation, with im2col (F.unfold) for
convolutions; grouped/depthwise ones run as a float conv of the integer codes, exact because every partial sum is an
integer below 2**24 (float64 when K per group could exceed that). On a GPU: the Triton int8 GEMM with the static step.
"""

from __future__ import annotations

import dataclasses
import warnings

import torch
import torch.nn.functional as F

from ..kernels.cpu_static_int8 import (
    StaticInt8Weight,
    conv_weight_codes,
    int8_matmul,
    native_conv2d_static,
    native_epilogue,
    native_linear_static,
    pack_static_native,
    prepare_static_int8,
)
from ..quant.static_int8 import int8_codes, quantize_symmetric
from ..runtime.static_int8 import select_static_impl
from . import weight_cache
from .conv import QuantConv1d, QuantConv2d
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
        self._prepared, self._impls, self._native, self._gpu = None, {}, None, None
        return self

    def fuse_relu(self, on: bool = True):
        """Apply max(y, 0) to the output (the ReLU that followed this layer, now computed here); returns self."""
        self.fused_relu = bool(on)
        return self

    def static_meta(self) -> dict:
        meta = {"input_scale": self.input_scale, "input_clamp": self.input_clamp}
        if self.input_smooth is not None:
            meta["input_smooth"] = self.input_smooth.tolist()
        if self.fused_relu:
            meta["fused_relu"] = True
        return meta

    def _packed_key(self):
        packed = self._buffers["weight_packed"]
        bias = self.bias
        return (packed.data_ptr(), packed._version, self.input_scale,
                None if bias is None else (bias.data_ptr(), bias._version))

    def native_prepared(self):
        """(weight in the native kernel's layout, its epilogue vectors), built once per weight, step and bias."""
        key = self._packed_key()
        if getattr(self, "_native", None) is None or self._native[0] != key:
            w = self.prepared()
            codes = w.wt.t()
            if not isinstance(self, QuantLinear):  # conv: the channels-last column order of native_conv2d_static
                o, ig = self.quant_meta["weight"]["shape"][:2]
                kh, kw = (self.kernel_size if len(self.kernel_size) == 2 else (1, self.kernel_size[0]))
                codes = conv_weight_codes(codes, (o, ig, kh, kw))
            nw = pack_static_native(codes, w.scale)
            self._native = (key, nw, native_epilogue(nw, self.input_scale, self.bias))
        return self._native[1], self._native[2]

    def _triton(self, x2: torch.Tensor) -> torch.Tensor:
        """y float32 (M, N) through the Triton int8 GEMM with the static step (weight layout cached per device)."""
        from ..kernels.triton_int8 import gemm_a8w_static

        key = (*self._packed_key(), x2.device)
        if getattr(self, "_gpu", None) is None or self._gpu[0] != key:
            cw = self.quantized_weight("weight").to(x2.device).compute_layout()
            self._gpu = (key, cw, None if self.bias is None else self.bias.detach().float().to(x2.device))
        _, cw, bias = self._gpu
        y = gemm_a8w_static(x2, cw, self.input_scale, self.input_clamp, bias)
        return y.clamp_(min=0) if self.fused_relu else y

    def impl_for(self, rows: int, device: torch.device, torch_only: bool = False) -> str:
        """The kernel dispatch picks for `rows` activation rows on `device` (warns once when it is the emulation);
        torch_only: among torch's int8 matmul and the emulation only (a conv the native kernel does not cover)."""
        bucket = 1 if rows <= 1 else 2 if rows < 16 else 16  # the probe's shape classes of M
        key = (device.type, bucket, torch_only)
        impls = self._impls
        if key not in impls:
            w, caps = self.prepared(), weight_cache.current_capabilities()
            if torch_only:
                caps = dataclasses.replace(caps, native_extension=False, triton_gpu=False)
            impls[key] = select_static_impl(device.type, bucket, w.n, w.k, caps)
            if impls[key][1] is not None:
                warnings.warn(f"lowbit static int8: {impls[key][1]}; using the exact float64 emulation", stacklevel=3)
        return impls[key][0]

    def prepared(self) -> StaticInt8Weight:
        """The int8 weight in the kernel's layout (built once, rebuilt if the packed buffer changed)."""
        packed = self._buffers["weight_packed"]
        key = (packed.data_ptr(), packed._version)
        if getattr(self, "_prepared", None) is None or self._prepared_key != key:
            qw = self.quantized_weight("weight")
            self._prepared = prepare_static_int8(int8_codes(qw), qw.scale.reshape(-1))
            self._prepared_key = key
        return self._prepared

    def matmul(self, xq: torch.Tensor) -> torch.Tensor:
        """int8 (M, K) x the int8 weight -> exact accumulators (torch's int8 matmul or the float64 emulation)."""
        return int8_matmul(xq, self.prepared(), self.impl_for(xq.shape[0], xq.device, torch_only=True))

    def _finish(self, acc: torch.Tensor, x_dtype, out_shape_fn):
        w = self.prepared()
        y = acc.to(torch.float32).mul_(w.scale.to(acc.device) * self.input_scale)
        if self.bias is not None:
            y.add_(self.bias.float())
        if self.fused_relu:
            y.clamp_(min=0)  # NaN stays NaN
        return out_shape_fn(y).to(x_dtype)

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


def _nan_rows(x2d: torch.Tensor, y2d: torch.Tensor) -> None:
    """NaN in each output row whose input row holds NaN or inf (the row max of |x| propagates both)."""
    bad = ~torch.isfinite(x2d.abs().amax(1))
    if bool(bad.any()):
        y2d[bad] = float("nan")


class StaticQuantLinear(_StaticMixin, QuantLinear):
    """nn.Linear as static W8A8: x (..., K) -> (..., N) in x's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x, lambda t: t.dim() >= 1 and t.shape[-1] == self.in_features, f"(..., {self.in_features})")
        x2 = x.reshape(-1, self.in_features).float()
        if self.input_smooth is not None:
            x2 = x2 * self.input_smooth.to(x2.device)

        def shape(y):
            _nan_rows(x2, y)
            return y.reshape(*x.shape[:-1], self.out_features)
        impl = self.impl_for(x2.shape[0], x2.device)
        if impl == "native":  # NaN / inf rows come back NaN
            w, epi = self.native_prepared()
            y = native_linear_static(x2, w, self.input_scale, self.input_clamp, epi, self.fused_relu)
            return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        if impl == "triton":
            return shape(self._triton(x2)).to(x.dtype)
        acc = self.matmul(quantize_symmetric(x2, self.input_scale, self.input_clamp))
        return self._finish(acc, x.dtype, shape)

    def extra_repr(self) -> str:
        relu = ", fused ReLU" if self.fused_relu else ""
        return super().extra_repr() + f", static: input_scale={self.input_scale:.4g}, clamp={self.input_clamp}{relu}"


class _StaticConv(_StaticMixin):
    def _conv2d(self, x, stride, dilation, pads, shape4d):
        """x (B, C, H, W) -> (B, O, OH, OW): quantize x with the fixed step, then the integer conv."""
        o, ig, kh, kw = shape4d
        if ig == 1 < self.groups and self.padding_mode == "zeros" and all(a == b for a, b in pads) \
                and x.device.type == "cpu" and kh * kw <= 64:
            y = self._depthwise_native(x, stride, dilation, [a for a, _ in pads], shape4d)
            if y is not None:
                return y
        rows = x.shape[0] * max(1, x.shape[2] * x.shape[3] // (stride[0] * stride[1]))
        if self.groups == 1 and self.padding_mode == "zeros" and all(a == b for a, b in pads) \
                and self.impl_for(rows, x.device) == "native":
            w, epi = self.native_prepared()
            y = native_conv2d_static(x, w, (kh, kw), stride, [a for a, _ in pads], dilation, self.input_scale,
                                     self.input_clamp, epi, self.fused_relu)  # NaN / inf images come back NaN
            return y.to(x.dtype)
        flat = [p for pair in reversed(pads) for p in pair]
        # the integer codes as float: F.unfold (im2col) and the non-zero pad modes are float-only, and exact here
        xi = torch.div(x.float(), self.input_scale).round_().clamp_(-self.input_clamp, self.input_clamp)
        if any(flat):
            xi = F.pad(xi, flat, mode="constant" if self.padding_mode == "zeros" else self.padding_mode)
        b, _, h, wd = xi.shape
        oh = (h - dilation[0] * (kh - 1) - 1) // stride[0] + 1
        ow = (wd - dilation[1] * (kw - 1) - 1) // stride[1] + 1
        w = self.prepared()
        if self.groups == 1:
            cols = F.unfold(xi, (kh, kw), dilation=dilation, stride=stride)  # (B, C*kh*kw, L)
            cols = cols.transpose(1, 2).reshape(-1, ig * kh * kw).to(torch.int8)  # (B*L, K)
            acc = self.matmul(cols).reshape(b, oh * ow, o)
        else:
            dt = torch.float32 if ig * kh * kw * 127 * 127 < 2 ** 24 else torch.float64
            wi = w.wt.t().reshape(o, ig, kh, kw).to(dt)
            acc = F.conv2d(xi.to(dt), wi, None, stride, 0, dilation, self.groups).flatten(2).transpose(1, 2)
        bad = ~torch.isfinite(x.detach().abs().flatten(1).amax(1))

        def shape(y):  # (B, L, O) -> (B, O, OH, OW)
            y = y.transpose(1, 2).reshape(b, o, oh, ow)
            if bool(bad.any()):
                y[bad] = float("nan")
            return y
        return self._finish(acc, x.dtype, shape)

    def _depthwise_native(self, x, stride, dilation, padding, shape4d):
        """A depthwise conv through lowbit's direct depthwise kernel (lowbit.kernels.cpu_conv), no im2col: the input
        quantized with the static step (round, clamp: integer-valued fp32), the int8 codes (+128 as uint8, zero 128)
        with scale s_w * a, bias and the fused ReLU in the kernel. The integer products are exact in fp32; the sums
        of K <= 64 taps round as the float path's fp32 conv of the codes does. Images holding a NaN or an inf come
        back NaN, as on the other paths. None when the native kernels are unavailable."""
        from ..runtime.executor import kernel_module

        cpu_conv = kernel_module("cpu_conv")
        if cpu_conv is None or not cpu_conv.cpu_native.available_native():
            return None
        key = self._packed_key()
        held = self.__dict__.get("_dw_native")
        if held is None or held[0] != key:
            w = self.prepared()
            codes = (w.wt.t().to(torch.int16) + 128).to(torch.uint8).contiguous()  # (O, kh*kw)
            scale = (w.scale * self.input_scale).reshape(-1, 1).contiguous()
            dw = cpu_conv.DepthwiseWeight(codes, scale, torch.full_like(scale, 128.0), codes.shape[1])
            bias = None if self.bias is None else self.bias.detach().float().contiguous()
            held = self.__dict__["_dw_native"] = (key, dw, bias)
        _, dw, bias = held
        xi = torch.div(x.float(), self.input_scale).round_().clamp_(-self.input_clamp, self.input_clamp)
        y = cpu_conv.conv2d_depthwise(xi, dw, shape4d, bias, stride, padding, dilation,
                                      "relu" if self.fused_relu else None)
        bad = ~torch.isfinite(x.detach().abs().flatten(1).amax(1))
        if bool(bad.any()):
            y[bad] = float("nan")
        return y.to(x.dtype)

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
