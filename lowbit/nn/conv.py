"""`QuantConv1d`, `QuantConv2d`: convolutions with a packed weight.

The weight (O, I/groups, *kernel) is quantized along its flattened input dimension K = I/groups * prod(kernel), in
row-major (channel, kh, kw) order, i.e. the order `F.unfold` lays out patches. The backend decides how it computes:
DENSE (memory Normal/High at large M) dequantizes once and calls F.conv2d; EMULATED dequantizes per call and calls
F.conv2d; a packed kernel runs as im2col (F.unfold) + the linear kernel once per group. Conv1d runs as a Conv2d of
height 1. Padding modes (zeros, reflect, replicate, circular) and string padding ("same", "valid") follow nn.Conv.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..quant.config import FLOAT_BITS
from ..quant.formats import PackedWeight
from ..runtime.config import BackendConfig, Memory
from ..runtime.dispatch import (
    AVX2_CONV_ANY_PLANE,
    CONV_TILE_MIN_PLANE,
    avx2_conv_max_plane,
    conv_shape_reason,
    conv_tiled,
)
from . import conv_exec, format_exec, lstm_fused, ops
from .conv_bound import BoundConv
from .linear import QuantModule
from .weight_cache import current_capabilities

_PAD_MODES = ("zeros", "reflect", "replicate", "circular")


def _tuple(v, n: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def float_copy_note(conv: nn.Module, bits: int | None = None) -> str:
    """For the quantize summary: " [memory Low on CPU: float copy, <shape>]" when dispatch's measured conv rule
    (`dispatch.conv_native_reason`, for this process's native variant and `bits`-bit weights) runs this float conv's
    quantized twin from a float copy at memory Low, else ""; an nn.LSTM's mark (`lstm_fused.float_copy_note`: its twin
    runs a float copy at memory Low on the CPU)."""
    if not isinstance(conv, (nn.Conv1d, nn.Conv2d)):
        return lstm_fused.float_copy_note(conv)
    n, k, depthwise = conv.out_channels // conv.groups, conv.weight[0].numel(), conv.weight.shape[1] == 1 < conv.groups
    variant = current_capabilities().native_variant
    if depthwise:  # the rule reads the output plane, known per call: stride 1 copies only under 14x14
        stride = max(_tuple(conv.stride, 2))
        return f" [memory Low on CPU: float copy, depthwise{' under 14x14 outputs' if stride == 1 else ''}]"
    b4 = 4 if bits is None else bits
    tiled = conv_tiled(n, k, conv.weight[0, 0].numel(), 1, CONV_TILE_MIN_PLANE, b4, variant, conv.groups)
    if conv_shape_reason(n, k, variant, conv.groups, b4) is not None:  # the pixel tile's rule reads the plane
        return f" [memory Low on CPU: float copy, N={n}, K={k}{' under 2048 output pixels' if tiled else ''}]"
    if bits == FLOAT_BITS or variant != "avx2":
        return ""
    most = 0 if bits is None else avx2_conv_max_plane(n, k, bits)
    if most == AVX2_CONV_ANY_PLANE:
        return ""
    if most == 0:
        return f" [memory Low on CPU (avx2 kernels): float copy{f', {bits}-bit' if bits else ''}]"
    side = math.isqrt(most)  # without VNNI the plane rule, known per call
    under = f" up to {CONV_TILE_MIN_PLANE - 1} pixels" if tiled else ""  # the pixel tile from there on
    return f" [memory Low on CPU (avx2 kernels): float copy over {side}x{side} outputs{under}]"


class _QuantConvNd(QuantModule):
    _dims = 2

    def __init__(self, weight: PackedWeight, bias: torch.Tensor | None = None, stride=1, padding=0, dilation=1,
                 groups: int = 1, padding_mode: str = "zeros", backend: BackendConfig | None = None):
        super().__init__(backend)
        d = self._dims
        if len(weight.shape) != d + 2:
            raise ValueError(f"{type(self).__name__} needs a weight of rank {d + 2} (O, I/groups, *kernel), "
                             f"got shape {weight.shape}")
        if padding_mode not in _PAD_MODES:
            raise ValueError(f"padding_mode={padding_mode!r} is not supported: use one of {_PAD_MODES}")
        if isinstance(padding, str) and padding not in ("same", "valid"):
            raise ValueError(f"padding={padding!r} is not supported: use 'same', 'valid' or ints")
        if groups < 1 or weight.shape[0] % groups:
            raise ValueError(f"groups={groups} must be >= 1 and divide out_channels={weight.shape[0]}")
        self.out_channels = weight.shape[0]
        self.in_channels = weight.shape[1] * groups
        self.kernel_size = tuple(weight.shape[2:])
        self.stride, self.dilation = _tuple(stride, d), _tuple(dilation, d)
        self.padding = padding if isinstance(padding, str) else _tuple(padding, d)
        self.groups, self.padding_mode = groups, padding_mode
        # the largest dilated kernel span: an input at least this big fits whatever the padding (_check's fast path)
        self._span = max(dl * (k - 1) + 1 for dl, k in zip(self.dilation, self.kernel_size, strict=True))
        self.set_quantized("weight", weight)
        self.set_bias(bias)

    @classmethod
    def from_float(cls, conv: nn.Module, weight: PackedWeight, backend: BackendConfig | None = None):
        """Replace `conv`'s weight by `weight` (same shape); bias and geometry are kept."""
        if tuple(weight.shape) != tuple(conv.weight.shape):
            raise ValueError(f"packed weight shape {weight.shape} does not match the conv's {tuple(conv.weight.shape)}")
        return cls(weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups, conv.padding_mode,
                   backend).keep_mode(conv)

    def set_input_scale(self, s: torch.Tensor) -> None:
        """Hold AWQ's per-input-channel scale s (in_channels,) as buffer `weight_input_scale`: the packed weight is
        Q(W·s) (s along its input-channel dim, per group), so every forward divides x by s channel-wise first.
        Padding commutes with the division (zeros stay zeros; reflect/replicate/circular copy divided values)."""
        self.hold_input_scale(s, self.in_channels)

    def _check(self, x: torch.Tensor) -> None:
        """A float (B, C, *spatial) or unbatched (C, *spatial) input with C = in_channels, no smaller than the
        (dilated) kernel once padded."""
        d = self._dims
        if (type(x) is torch.Tensor and x.dim() == d + 2 and x.shape[1] == self.in_channels and x.is_floating_point()
                and min(x.shape[2:]) >= self._span):
            return  # the usual batched input, checked in ~1 us (the full check costs ~20 us per call)
        spatial = "H, W" if d == 2 else "L"
        layout = f"(B, {self.in_channels}, {spatial}) or ({self.in_channels}, {spatial})"
        self.check_input(x, lambda t: t.dim() in (d + 1, d + 2) and t.shape[-d - 1] == self.in_channels, layout)
        sizes = [s + a + b for s, (a, b) in zip(x.shape[-d:], self._pads(), strict=True)]
        spans = [dl * (k - 1) + 1 for dl, k in zip(self.dilation, self.kernel_size, strict=True)]
        if any(s < k for s, k in zip(sizes, spans, strict=True)):
            raise ValueError(f"{type(self).__name__}: input size {tuple(x.shape[-d:])} padded to {tuple(sizes)} is "
                             f"smaller than the (dilated) kernel {tuple(spans)}")

    def _bound_key(self, x: torch.Tensor) -> tuple:
        b = self._buffers  # memory Normal may have released the codes: its float copy stands in for them
        held = b.get("weight_packed")
        return self.backend, conv_exec.bound_key(x, held if held is not None else b.get("weight_dense"),
                                                 b.get("weight_scale"), b.get("weight_zero"),
                                                 self._parameters.get("bias"))

    def _bound_call(self, x: torch.Tensor) -> tuple[bool, object]:
        """(found, call): the layer's bound call for x (`conv_exec.bound_conv`, or memory Normal's F.conv2d on its
        float copy; None: this layer has none for x) when one was built for x's shape and still holds; found is False
        when there is nothing to reuse (also under tracing or autograd recording, which take the op). The layer's
        own binding is a `conv_bound.BoundConv`; static convs keep (`_bound_key`, call)."""
        bound = self.__dict__.get("_bound")
        if bound is None or type(x) is not torch.Tensor or not ops.eager(x):
            return False, None
        # the bias from its dict: `self.bias` through nn.Module.__getattr__ cost 1.5 us (a None bias is a plain
        # attribute, absent from _parameters)
        if torch.is_grad_enabled() and ops.wants_grad(x, self._parameters.get("bias")):
            return False, None
        if type(bound) is BoundConv:
            return (True, bound.call) if bound.holds(self, x) else (False, None)
        return (True, bound[1]) if self._bound_key(x) == bound[0] else (False, None)

    def _bind(self, x: torch.Tensor, stride, dilation, pads, shape4d) -> None:
        """Bind the call for inputs like x after a call through the usual path (which built the plan and announced
        its fallback): only where that path calls the kernel on x as is (no input scale, zero padding the same on
        both sides, the affine format, no dtype conversion); else remember that there is none for x."""
        self.__dict__["_bound"] = None
        if type(x) is not torch.Tensor or not ops.eager(x) or ops.wants_grad(x, self.bias):
            return
        bound = None
        if (self.padding_mode == "zeros" and all(a == b for a, b in pads)
                and "weight_input_scale" not in self._buffers and self.is_affine("weight")):
            padding = [a for a, _ in pads]
            if self.backend.memory is Memory.NORMAL:
                w = self._buffers.get("weight_dense")
                if w is not None and w.dtype == x.dtype and (self.bias is None or self.bias.dtype == x.dtype):
                    bound = conv_exec.conv2d_call(w.view(shape4d), self.bias, stride, padding, dilation, self.groups)
            elif self._buffers.get("weight_packed") is not None:
                packed, scale, zero, _, bits, block = self._op_args("weight")
                bound = conv_exec.bound_conv(x, packed, scale, zero, self.bias, shape4d, bits, block, stride, padding,
                                             dilation, self.groups, *self._modes())
        self.__dict__["_bound"] = BoundConv(self, x, bound)

    def clear_cache(self) -> None:
        """Drop the bound call too (see QuantModule.clear_cache)."""
        self.__dict__["_bound"] = None
        super().clear_cache()

    def _pads(self) -> list[tuple[int, int]]:
        """(before, after) padding per spatial dim, nn.Conv's rule for 'same' (the extra one goes after)."""
        if self.padding == "valid":
            return [(0, 0)] * self._dims
        if self.padding == "same":
            totals = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size, strict=True)]
            return [(t // 2, t - t // 2) for t in totals]
        return [(p, p) for p in self.padding]

    def _conv2d(self, x: torch.Tensor, stride, dilation, pads, shape4d) -> torch.Tensor:
        """x (B, C, H, W) -> (B, O, OH, OW) through the `lowbit::conv2d` op; pads: [(top, bottom), (left, right)]."""
        if self.padding_mode != "zeros" or any(a != b for a, b in pads):
            flat = [p for pair in reversed(pads) for p in pair]  # F.pad wants the last dim first
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            x = F.pad(x, flat, mode=mode)
            pads = [(0, 0)] * len(pads)
        w = self.dense_weight("weight", x)
        if w is not None:
            bias = self.bias
            b = bias if bias is None or bias.dtype == w.dtype else bias.to(w.dtype)
            y = F.conv2d(x if x.dtype == w.dtype else x.to(w.dtype), w.view(shape4d), b, stride,
                         [a for a, _ in pads], dilation, self.groups)
            return y if y.dtype == x.dtype else y.to(x.dtype)
        if not self.is_affine("weight"):
            return format_exec.conv2d(self, "weight", x, self.bias, list(stride), [a for a, _ in pads],
                                      list(dilation), self.groups, shape4d)
        packed, scale, zero, _, bits, block = self._op_args("weight")
        return ops.conv2d(x, packed, scale, zero, self.bias, shape4d, bits, block, list(stride),
                                       [a for a, _ in pads], list(dilation), self.groups, *self._modes())

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                f"bias={self.bias is not None}, " + self._quant_repr())


class QuantConv2d(_QuantConvNd):
    """nn.Conv2d with a packed weight (O, I/groups, kh, kw). forward: (B, C, H, W) -> (B, O, OH, OW), x's dtype."""

    _dims = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bound = self.__dict__.get("_bound")
        if type(bound) is BoundConv:  # the steady state: a few identity checks and the kernel call
            y = bound(self, x)
            if y is not None:
                return y
        found, call = self._bound_call(x)
        if call is not None:  # the same input shape as before and nothing changed: the bound kernel call
            return call(x)
        self._check(x)
        x = self.divide_input(x, 2)
        unbatched = x.dim() == 3
        if unbatched:
            x = x.unsqueeze(0)
        pads, shape4d = self._pads(), list(self.quant_meta["weight"]["shape"])
        y = self._conv2d(x, self.stride, self.dilation, pads, shape4d)
        if not found and not unbatched:
            self._bind(x, list(self.stride), list(self.dilation), pads, shape4d)
        return y.squeeze(0) if unbatched else y


class QuantConv1d(_QuantConvNd):
    """nn.Conv1d with a packed weight (O, I/groups, k), run as a Conv2d of height 1.

    forward: (B, C, L) -> (B, O, OL) in x's dtype.
    """

    _dims = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bound = self.__dict__.get("_bound")
        if type(bound) is BoundConv:  # the steady state, as QuantConv2d's
            y = bound(self, x)
            if y is not None:
                return y
        self._check(x)
        x = self.divide_input(x, 1)
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(0)
        o, ig, k = self.quant_meta["weight"]["shape"]
        geometry = ((1, self.stride[0]), (1, self.dilation[0]), [(0, 0), *self._pads()], [o, ig, 1, k])
        y = self._conv2d(x.unsqueeze(2), *geometry)
        if not unbatched and not (type(bound) is BoundConv and bound.holds(self, x)):
            self._bind_1d(x, geometry)
        y = y.squeeze(2)  # (B, O, 1, OL) -> (B, O, OL)
        return y.squeeze(0) if unbatched else y

    def _bind_1d(self, x: torch.Tensor, geometry) -> None:
        """Bind the call for inputs like x (B, C, L): the Conv2d binding of x as (B, C, 1, L), lifted. A layer that
        binds its own way (static INT8's `_bind`) keeps none."""
        if type(self)._bind is not _QuantConvNd._bind:
            return
        stride, dilation, pads, shape4d = geometry
        self._bind(x.unsqueeze(2), list(stride), list(dilation), pads, shape4d)
        bound = self.__dict__.get("_bound")
        if bound is None:
            return
        call = bound.call
        lifted = None if call is None else (lambda xb: call(xb.unsqueeze(2)).squeeze(2))
        self.__dict__["_bound"] = BoundConv(self, x, lifted)
