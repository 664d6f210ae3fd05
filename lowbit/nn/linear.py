"""`QuantModule` (packed parameters as buffers) and `QuantLinear`.

A quantized parameter `P` is held as buffers `P_packed`, `P_scale`, `P_zero` (scale/zero absent when the format has
none) of their final shapes, so a model built on the `meta` device loads with `load_state_dict(assign=True)`. The
rest of the `QuantizedWeight` (shape, dtype, bits, block_size, symmetric, method) is a plain attribute
(`quant_meta[P]`, the `metadata()` dict). Prepared kernel weights (float copies, prepacked layouts) are caches owned
by `lowbit.nn.ops`, rebuilt lazily and never saved. At memory Normal a layer computes with F.linear / F.conv on one
float copy `P_dense` (a non-persistent buffer) and `P_packed` is None while it runs (`lowbit.nn.dense_copy`): the
state_dict, `quantized_weight` and a switch to another memory mode re-derive the codes bit-exactly. A weight of
another registered format (`lowbit.quant.formats`) is held the same way, one buffer `P_<field>` per tensor of its
`tensors()` and its `metadata()` in `quant_meta[P]`, and computes through `lowbit.nn.format_exec`.

Like the float layers, a layer takes floating-point inputs only (TypeError otherwise) of the documented shape
(ValueError naming it), lets NaN and inf through, and passes gradients to its input and float bias (the packed
buffers are frozen). `from_float` keeps the `training` flag of the layer it replaces.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..quant.awq import divide_channels
from ..quant.format import FORMAT_NAME, QuantizedWeight
from ..quant.formats import PackedWeight, format_of_metadata, is_packed_weight
from ..runtime.config import BackendConfig, Memory
from . import dense_copy, fastcall, format_exec, ops, q8_tiles, weight_cache

_FIELDS = ("packed", "scale", "zero")


def as_backend(backend) -> BackendConfig:
    if backend is None:
        return BackendConfig()
    if isinstance(backend, BackendConfig):
        return backend
    if isinstance(backend, dict):
        return BackendConfig.from_dict(backend)
    raise TypeError(f"backend must be a lowbit.BackendConfig, got {type(backend).__name__}")


class QuantModule(nn.Module):
    """Base of the quantized layers: packed parameters as buffers, the backend, and the op calls."""

    def __init__(self, backend: BackendConfig | None = None):
        super().__init__()
        self.backend = as_backend(backend)
        self.quant_meta: dict[str, dict] = {}
        self._bound = None  # lowbit.nn.fastcall's bound call, rebuilt by the next forward when dropped

    def keep_mode(self, module: nn.Module):
        """Take `module`'s training flag (this layer and its children); returns self (for `from_float`)."""
        return self.train(module.training)

    def check_input(self, x, ok_shape, layout: str) -> None:
        """TypeError unless x is a floating-point Tensor; ValueError naming `layout` unless `ok_shape(x)`."""
        name = type(self).__name__
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} takes a Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name} takes a floating-point input (as the float layer does), got {x.dtype}: "
                            "convert it first, e.g. x.float()")
        if not ok_shape(x):
            got = "a 0-d tensor (a scalar)" if x.dim() == 0 else f"shape {tuple(x.shape)}"
            raise ValueError(f"{name} expects input of shape {layout}, got {got}")

    def hold_input_scale(self, s: torch.Tensor, channels: int) -> None:
        """Check AWQ's input-scale vector s (channels,) (floating, finite, positive) and hold it as buffer
        `weight_input_scale` (the layers' `set_input_scale`)."""
        if not isinstance(s, torch.Tensor) or not s.is_floating_point() or tuple(s.shape) != (channels,):
            got = f"{s.dtype} {tuple(s.shape)}" if isinstance(s, torch.Tensor) else type(s).__name__
            raise ValueError(f"{type(self).__name__}: input scale must be a floating tensor of shape ({channels},), "
                             f"got {got}")
        if not bool(torch.isfinite(s).all()) or not bool((s > 0).all()):
            raise ValueError(f"{type(self).__name__}: input scale must be finite and positive")
        self.register_buffer("weight_input_scale", s)

    def divide_input(self, x: torch.Tensor, spatial_dims: int = 0) -> torch.Tensor:
        """x divided by the AWQ input-scale vector along its channel dim (x itself when the layer has none)."""
        s = self._buffers.get("weight_input_scale")
        return x if s is None else divide_channels(x, s, spatial_dims)

    def set_bias(self, bias: torch.Tensor | None) -> None:
        """Keep the float bias as a Parameter (an existing one as is, so it stays shared with the float layer)."""
        if bias is not None and not isinstance(bias, nn.Parameter):
            bias = nn.Parameter(bias, requires_grad=False)
        self.bias = bias

    def set_quantized(self, name: str, qw: PackedWeight) -> None:
        """Hold `qw` (a QuantizedWeight, or a weight of another registered format) as parameter `name` (replacing a
        float parameter of that name if there is one): one buffer `name_<field>` per tensor of `qw.tensors()`."""
        if not is_packed_weight(qw):
            raise TypeError(f"{name}: expected a QuantizedWeight (or a weight of a registered format), got "
                            f"{type(qw).__name__}")
        self._parameters.pop(name, None)
        for field, t in qw.tensors().items():
            self.register_buffer(f"{name}_{field}", t)
        self.quant_meta[name] = qw.metadata()

    def is_affine(self, name: str) -> bool:
        """True when parameter `name` holds a QuantizedWeight (the affine format; the ops' buffers)."""
        return self.quant_meta[name].get("format", FORMAT_NAME) == FORMAT_NAME

    def format_tensors(self, name: str) -> dict[str, torch.Tensor]:
        """{field: buffer} of a parameter of a non-affine format (the fields its format's spec names)."""
        meta = self.quant_meta[name]
        return {f: self._buffers[f"{name}_{f}"] for f in format_of_metadata(meta).expected_tensors(meta)}

    @property
    def quantized_names(self) -> list[str]:
        return list(self.quant_meta)

    def quantized_weight(self, name: str) -> PackedWeight:
        """The packed weight of parameter `name` (a QuantizedWeight, or its own format's), over the current buffers
        (validated)."""
        if not self.is_affine(name):
            meta = self.quant_meta[name]
            return format_of_metadata(meta).from_tensors(self.format_tensors(name), meta)
        tensors = {f: getattr(self, f"{name}_{f}") for f in _FIELDS if f"{name}_{f}" in self._buffers}
        if dense_copy.released(self, name):
            tensors["packed"] = dense_copy.rederived(self, name)
        return QuantizedWeight.from_tensors(tensors, self.quant_meta[name])

    def _op_args(self, name: str):
        meta = self.quant_meta[name]
        packed = self._buffers[f"{name}_packed"]
        if packed is None:
            packed = dense_copy.rederived(self, name)
        return (packed, self._buffers.get(f"{name}_scale"),
                self._buffers.get(f"{name}_zero"), meta["shape"], meta["bits"], meta["block_size"])

    def dense_weight(self, name: str, x: torch.Tensor) -> torch.Tensor | None:
        """Memory Normal's float copy (N, K) of parameter `name` for input x, or None when the op should run: other
        memory modes, and a trace (torch.compile, fake tensors) before an eager call built the copy."""
        if self.backend.memory is not Memory.NORMAL:
            return None
        w = self._buffers.get(f"{name}_dense")
        if ops.eager(x):
            return dense_copy.dense_weight(self, name, x.device.type)
        return w if w is not None and w.device == x.device else None

    def _modes(self) -> tuple[str, str]:
        return self.backend.memory.value, self.backend.precision.value

    def quant_linear(self, name: str, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x (..., K) @ W_name.T + bias through the `lowbit::linear` op."""
        w = self.dense_weight(name, x)
        if w is not None:
            b = bias if bias is None or bias.dtype == w.dtype else bias.to(w.dtype)
            y = F.linear(x if x.dtype == w.dtype else x.to(w.dtype), w, b)
            return y if y.dtype == x.dtype else y.to(x.dtype)
        if not self.is_affine(name):
            return format_exec.linear(self, name, x, bias)
        y = q8_tiles.linear(self, name, x, bias)  # memory Low's tiled 8-bit codes, where they serve this call
        if y is not None:
            return y
        q8_tiles.restore(self, name, for_good=True)  # they cannot: the row-major codes again, for good
        packed, scale, zero, shape, bits, block = self._op_args(name)
        shape2d = [shape[0], math.prod(shape[1:])]
        return ops.linear(x, packed, scale, zero, bias, shape2d, bits, block, *self._modes())

    def set_backend(self, backend: BackendConfig) -> None:
        """Switch the compute path (no re-quantization); drops prepared caches so float copies are freed."""
        self.backend = as_backend(backend)
        self.clear_cache()

    def clear_cache(self) -> None:
        """Drop every prepared weight and float copy (the packed codes are held again)."""
        self._bound = None
        for name in self.quant_meta:
            dense_copy.restore(self, name)
            if self.is_affine(name):
                weight_cache.drop_cache(self._buffers[f"{name}_packed"])
            else:
                format_exec.drop(self, name)

    def _apply(self, fn, recurse=True):
        self._bound = None  # .to(), .float(), ...: the buffers are replaced; the bound call would keep the old ones
        q8_tiles.restore_all(self)  # the row-major codes move (the tiles are the native CPU kernel's only)
        return super()._apply(fn, recurse)

    def __getstate__(self):
        return {**super().__getstate__(), "_bound": None}  # deepcopy and pickle: the copy binds its own buffers

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        """The packed codes are saved also while memory Normal's float copy stands in for them (re-derived)."""
        gone = [name for name in self.quant_meta if dense_copy.released(self, name)]
        for name in gone:
            self._buffers[f"{name}_packed"] = dense_copy.rederived(self, name)
        try:
            super()._save_to_state_dict(destination, prefix, keep_vars)
        finally:
            for name in gone:
                self._buffers[f"{name}_packed"] = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Loading replaces the codes: hold them packed again (the next memory Normal forward rebuilds the copy)."""
        for name in self.quant_meta:
            dense_copy.restore(self, name)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _quant_repr(self) -> str:
        metas = {n: m for n, m in self.quant_meta.items() if self.is_affine(n)}
        parts = {(m["bits"], m["block_size"], m["symmetric"], m["method"]) for m in metas.values()}
        desc = ", ".join(f"bits={b}, block_size={bs}, symmetric={s}, method={me}" for b, bs, s, me in sorted(parts))
        others = sorted({f"format={m['format']}" for n, m in self.quant_meta.items() if n not in metas})
        desc = ", ".join(filter(None, [desc, *others]))
        return f"{desc}, memory={self.backend.memory.value}, precision={self.backend.precision.value}"


class QuantLinear(QuantModule):
    """nn.Linear with a packed weight (N=out_features, K=in_features); bias stays float.

    forward: x (..., in_features) -> (..., out_features) in x's dtype. After a call the layer binds its steady-state
    call (`lowbit.nn.fastcall`: the same numbers with less Python); `bind_calls = False` runs every call through the
    usual path instead (benchmarks compare the two). At memory Low its 8-bit codes are re-laid once for the tiled
    kernel (`lowbit.nn.q8_tiles`); `tile_codes = False` keeps them row-major (benchmarks compare the two).
    """

    bind_calls = True
    tile_codes = True

    def __init__(self, weight: PackedWeight, bias: torch.Tensor | None = None,
                 backend: BackendConfig | None = None):
        super().__init__(backend)
        if len(weight.shape) != 2:
            raise ValueError(f"QuantLinear needs a 2-D weight (out, in), got shape {weight.shape}")
        self.out_features, self.in_features = weight.shape
        self.set_quantized("weight", weight)
        self.set_bias(bias)

    @classmethod
    def from_float(cls, linear: nn.Linear, weight: PackedWeight, backend: BackendConfig | None = None):
        """Replace `linear`'s weight by `weight` (same shape); its bias Parameter is kept as is."""
        if tuple(weight.shape) != tuple(linear.weight.shape):
            raise ValueError(f"packed weight shape {weight.shape} does not match the Linear's "
                             f"{tuple(linear.weight.shape)}")
        return cls(weight, linear.bias, backend).keep_mode(linear)

    def set_input_scale(self, s: torch.Tensor) -> None:
        """Hold AWQ's per-input-channel scale s (in_features,) as buffer `weight_input_scale`: the packed weight is
        Q(W·diag(s)), so every forward divides x by s first (checkpoint format 3)."""
        self.hold_input_scale(s, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():  # a graph sees the `lowbit::linear` op, never the bound call
            return self._forward(x)
        bias = self.bias
        bound = self.__dict__.get("_bound")
        y = None if bound is None else bound(self, x, bias)
        if y is None:
            y = self._forward(x)
            if self.bind_calls and (bound is None or not bound.refuses(self, x, bias)):
                # __dict__ directly: nn.Module.__setattr__ costs ~5 us, and this is a plain attribute
                self.__dict__["_bound"] = fastcall.bind(self, "weight", x, bias)
        return y

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x, lambda t: t.dim() >= 1 and t.shape[-1] == self.in_features, f"(..., {self.in_features})")
        return self.quant_linear("weight", self.divide_input(x), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, " \
               + self._quant_repr()
