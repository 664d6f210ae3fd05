"""Static W8A8 layers: int8 weights and int8 activations with a fixed (calibrated) scale, int32 accumulation.

`StaticQuantLinear`, `StaticQuantConv1d`, `StaticQuantConv2d` are the weight-only layers (same buffers, same
state-dict names: `weight_packed` (uint8 codes q + 128), `weight_scale` float32 (N, 1)) plus two plain attributes
kept in the checkpoint's metadata, not as tensors: `input_scale` (float, the activation step) and `input_clamp`
(int, 1..127). They compute through `lowbit.kernels.cpu_static_int8` (math in its docstring). Convolutions with
groups == 1 run as im2col (F.unfold) + the int8 matmul; grouped/depthwise ones as a float conv of the integer codes,
exact because every partial sum is an integer below 2**24 (float64 when K per group could exceed that).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from ..kernels.cpu_static_int8 import StaticInt8Weight, int8_matmul, prepare_static_int8
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
        self._prepared, self._impls = None, {}
        return self

    def static_meta(self) -> dict:
        meta = {"input_scale": self.input_scale, "input_clamp": self.input_clamp}
        if self.input_smooth is not None:
            meta["input_smooth"] = self.input_smooth.tolist()
        return meta

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
        """int8 (M, K) x the int8 weight -> exact accumulators, through the kernel dispatch picks for this M."""
        w = self.prepared()
        bucket = 1 if xq.shape[0] <= 1 else 2 if xq.shape[0] < 16 else 16  # the probe's shape classes of M
        key = (xq.device.type, bucket)
        impls = self._impls
        if key not in impls:
            impls[key] = select_static_impl(xq.device.type, bucket, w.n, w.k, weight_cache.current_capabilities())
            if impls[key][1] is not None:
                warnings.warn(f"lowbit static int8: {impls[key][1]}; using the exact float64 emulation", stacklevel=3)
        return int8_matmul(xq, w, impls[key][0])

    def _finish(self, acc: torch.Tensor, x_dtype, out_shape_fn):
        w = self.prepared()
        y = acc.to(torch.float32).mul_(w.scale * self.input_scale)
        if self.bias is not None:
            y.add_(self.bias.float())
        return out_shape_fn(y).to(x_dtype)

    @classmethod
    def from_quant(cls, layer, input_scale: float, input_clamp: int = 127, input_smooth=None):
        """The static twin of a weight-only layer holding an 8-bit symmetric per-channel weight (buffers shared)."""
        qw = layer.quantized_weight("weight")
        int8_codes(qw)  # refuses other formats
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
            x2 = x2 * self.input_smooth
        acc = self.matmul(quantize_symmetric(x2, self.input_scale, self.input_clamp))

        def shape(y):
            _nan_rows(x2, y)
            return y.reshape(*x.shape[:-1], self.out_features)
        return self._finish(acc, x.dtype, shape)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", static: input_scale={self.input_scale:.4g}, clamp={self.input_clamp}"


class _StaticConv(_StaticMixin):
    def _conv2d(self, x, stride, dilation, pads, shape4d):
        """x (B, C, H, W) -> (B, O, OH, OW): quantize x with the fixed step, then the integer conv."""
        flat = [p for pair in reversed(pads) for p in pair]
        # the integer codes as float: F.unfold (im2col) and the non-zero pad modes are float-only, and exact here
        xi = torch.div(x.float(), self.input_scale).round_().clamp_(-self.input_clamp, self.input_clamp)
        if any(flat):
            xi = F.pad(xi, flat, mode="constant" if self.padding_mode == "zeros" else self.padding_mode)
        o, ig, kh, kw = shape4d
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

    def extra_repr(self) -> str:
        return super().extra_repr() + f", static: input_scale={self.input_scale:.4g}, clamp={self.input_clamp}"


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
