"""Bound layer calls: a QuantLinear's steady-state forward as a few identity checks and one kernel call.

After a forward through the usual path (`QuantModule.quant_linear`: the `lowbit::linear` op's implementation, or
memory Normal's float copy) a QuantLinear binds what that path decided (`bind`): for the native CPU kernel the
prepared weight's call with every pointer fixed (`executor.binder`, the kernel row's `bind`), at memory Normal the
float copy for F.linear. The next forward checks the bound call still holds and runs it; any check that fails sends
the call down the usual path, which binds again. Outputs are bit-identical to the usual path (the same kernel calls
on the same arguments; tests check every precision).

What a bound call checks, each a cheap identity or counter comparison (the usual path's caches key on the same):
- the input: a plain CPU tensor (no torch.compile, dispatch or function mode) of the bound dtype and last dim,
  contiguous (native), with M in the bound M bucket (native); autograd not recording it (native); finite values
  where the kernel rounds activations to int8 (else `executor.run_finite`'s masked form runs);
- the layer: the same `backend` object, the same weight buffers (packed, scale, zero, the float copy) with
  unchanged version counters (an in-place edit or `load_state_dict`), no AWQ input scale, the same bias object
  (fp32, or the copy's dtype);
- the process: no `forced_kernel` block, the same kernel table `generation()` and capabilities `epoch()`.
`set_backend`, `clear_cache`, `.to()` and friends, deepcopy and pickling drop the bound call outright.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..runtime.config import Memory
from ..runtime.kernel_table import generation
from . import q8_tiles
from .identity import version_of as _version
from .weight_cache import M_BOUNDARIES, epoch, forcing, fresh_entry, m_bucket

_TENSOR = torch.Tensor
_is_compiling = torch.compiler.is_compiling
_dispatch_depth = torch._C._len_torch_dispatch_stack
_function_mode = torch._C._is_torch_function_mode_enabled
_FIELDS = ("packed", "scale", "zero", "dense")
_F32 = torch.float32
_grad_enabled = torch.is_grad_enabled
_num_threads = torch.get_num_threads


def _bucket_range(m: int) -> tuple[int, int]:
    """[lo, hi): the M values sharing m's bucket (dispatch decides alike for them)."""
    lo = m_bucket(m)
    return lo, next((b for b in M_BOUNDARIES if b > lo), 1 << 62)


class _Bound:
    """What every bound call checks of the layer and the process (see the module docstring)."""

    __slots__ = ("backend", "bias", "dtype", "epoch", "generation", "held", "k")

    def __init__(self, layer, name: str, bias, dtype: torch.dtype):
        bufs = layer._buffers
        self.backend, self.bias, self.dtype = layer.backend, bias, dtype
        self.k = layer.quant_meta[name]["shape"][1]
        self.held = tuple((key, bufs.get(key), _version(bufs.get(key)))
                          for key in (*(f"{name}_{f}" for f in _FIELDS), "weight_input_scale"))
        self.epoch, self.generation = epoch(), generation()

    def refuses(self, layer, x, bias) -> bool:
        """True when this is a `Refused` that still stands for this layer state and input kind (no new attempt)."""
        return False

    def holds(self, layer, bias) -> bool:
        if layer.backend is not self.backend or bias is not self.bias or epoch() != self.epoch \
                or generation() != self.generation or forcing():
            return False
        bufs = layer._buffers
        for key, t, v in self.held:
            if bufs.get(key) is not t or (v is not None and t._version != v):
                return False
        return True

    def plain_input(self, x) -> bool:
        """x is a plain CPU tensor of the bound dtype and last dim, and nothing traces the call."""
        if type(x) is not _TENSOR or x.dtype is not self.dtype or not x.is_cpu:
            return False
        shape = x.shape
        return bool(shape) and shape[-1] == self.k and not (_is_compiling() or _dispatch_depth()
                                                             or _function_mode())


def _native_all_finite():
    """The native library's one-pass finiteness test of a contiguous fp32 buffer (ptr, n) -> 1/0, or None."""
    from ..kernels.cpu_native import native_library

    lib = native_library()
    return None if lib is None else lib.lib.lb_all_finite


class BoundNative(_Bound):
    """The native kernel's bound call for one M bucket: y (..., N) fp32 = x (..., K) @ W.T + bias."""

    __slots__ = ("all_finite", "call", "finite", "hi", "lo", "n", "shapes")

    def __init__(self, layer, name: str, bias, call, finite: bool, m: int):
        super().__init__(layer, name, bias, torch.float32)
        self.call, self.finite, self.n = call, finite, layer.quant_meta[name]["shape"][0]
        self.all_finite = _native_all_finite() if finite else None
        self.lo, self.hi = _bucket_range(m)
        self.hi = min(self.hi, call.max_m + 1)
        self.shapes = (None, None, 0)  # the last input shape, its output shape and M

    def __call__(self, layer, x, bias):
        # the checks of `plain_input` and `holds`, inlined: this is the per-call cost the class exists to cut
        if type(x) is not _TENSOR or x.dtype is not _F32 or not x.is_cpu or _is_compiling() or _dispatch_depth() \
                or _function_mode() or layer.backend is not self.backend or bias is not self.bias \
                or epoch() != self.epoch or generation() != self.generation or forcing() or not x.is_contiguous():
            return None
        bufs = layer._buffers
        for key, t, v in self.held:
            if bufs.get(key) is not t or (v is not None and t._version != v):
                return None
        shape = x.shape
        last_in, out, m = self.shapes
        if shape != last_in:
            if not shape or shape[-1] != self.k:
                return None
            m = x.numel() // self.k
            if not self.lo <= m < self.hi:
                return None
            out = (*shape[:-1], self.n)
            self.shapes = (shape, out, m)
        if _grad_enabled() and (x.requires_grad or (bias is not None and bias.requires_grad)):
            return None  # autograd records it: the usual path's backward
        if self.finite and not (self.all_finite(x.data_ptr(), x.numel()) if self.all_finite is not None
                                else math.isfinite(x.sum(dtype=_F32).item())):
            return None  # NaN or inf: the usual path's masked form
        y = torch.empty(*out, dtype=_F32)  # the kernel writes fp32, whatever torch's default dtype is
        self.call(x.data_ptr(), m, y.data_ptr(), None if bias is None else bias.data_ptr(), _num_threads())
        return y


class BoundDense(_Bound):
    """Memory Normal's bound call: F.linear on the layer's float copy (x and bias in the copy's dtype)."""

    __slots__ = ("weight",)

    def __init__(self, layer, name: str, bias, weight: torch.Tensor):
        super().__init__(layer, name, bias, weight.dtype)
        self.weight = weight

    def __call__(self, layer, x, bias):
        if not self.plain_input(x) or not self.holds(layer, bias):
            return None
        return F.linear(x, self.weight, bias)


class Refused(_Bound):
    """No bound call for this layer state, input dtype and M bucket (a kernel without a bound form, bf16 compute, a
    fallback, an AWQ input scale, ...): the usual path serves, and `bind` is not tried again until something a
    bound call checks changes (`refuses`)."""

    __slots__ = ("hi", "lo")

    def __init__(self, layer, name: str, bias, x):
        super().__init__(layer, name, bias, x.dtype)
        self.lo, self.hi = _bucket_range(_rows(x))

    def __call__(self, layer, x, bias):
        return None

    def refuses(self, layer, x, bias) -> bool:
        return type(x) is _TENSOR and x.dtype is self.dtype and self.holds(layer, bias) \
            and self.lo <= _rows(x) < self.hi


def _rows(x) -> int:
    """M of an input (..., K): its rows (0 for an empty input or K == 0)."""
    shape = x.shape
    return x.numel() // shape[-1] if shape and shape[-1] else 0


def bind(layer, name: str, x, bias) -> _Bound | None:
    """The bound call of parameter `name` of `layer` for inputs like x (after the usual path ran on x); a `Refused`
    where this layer state and input kind have none (another kernel, compute dtype or format, a fallback, an AWQ
    input scale, a bias it cannot read); None where this call says nothing of the next (tracing, autograd
    recording, a forced kernel, another device, an empty input)."""
    if type(x) is not _TENSOR or not x.is_cpu or x.dim() == 0 or _is_compiling() or _dispatch_depth() \
            or _function_mode() or forcing() or _rows(x) < 1:
        return None
    if torch.is_grad_enabled() and (x.requires_grad or (bias is not None and bias.requires_grad)):
        return None
    n = layer.quant_meta[name]["shape"][0]
    if "weight_input_scale" in layer._buffers or not layer.is_affine(name) or (bias is not None and (
            type(bias) not in (_TENSOR, torch.nn.Parameter) or not bias.is_cpu or tuple(bias.shape) != (n,)
            or not bias.is_contiguous())):
        return Refused(layer, name, bias, x)
    bufs = layer._buffers
    if layer.backend.memory is Memory.NORMAL:
        w = bufs.get(f"{name}_dense")
        if w is None or not w.is_cpu or x.dtype is not w.dtype or (bias is not None and bias.dtype is not w.dtype):
            return Refused(layer, name, bias, x)
        return BoundDense(layer, name, bias, w)
    return _bind_native(layer, name, x, bias) or Refused(layer, name, bias, x)


def _bind_native(layer, name: str, x, bias) -> BoundNative | None:
    if q8_tiles.held(layer, name):  # memory Low's tiled 8-bit codes: one call for every M
        return _bound_tiled(layer, name, bias, q8_tiles.tiled_call(layer, name))
    bufs = layer._buffers
    packed, scale, zero = bufs.get(f"{name}_packed"), bufs.get(f"{name}_scale"), bufs.get(f"{name}_zero")
    if packed is None or x.dtype is not torch.float32 or (bias is not None and bias.dtype is not torch.float32):
        return None
    entry = fresh_entry(packed, scale, zero)
    m = _rows(x)
    if entry is None:
        return None
    backend = layer.backend
    plan = entry.plans.get(("cpu", m_bucket(m), backend.memory.value, backend.precision.value))
    if plan is None:
        return None
    bound = plan[3]  # the kernel row's call, made with the plan (`ops._linear_plan`)
    if bound is None or m > bound[0].max_m:
        return None
    tiled = q8_tiles.tile(layer, name, bound[0], bound[1], plan[0])
    if tiled is not None:
        return _bound_tiled(layer, name, bias, tiled)
    return BoundNative(layer, name, bias, bound[0], bound[1], m)


def _bound_tiled(layer, name: str, bias, tiled) -> BoundNative | None:
    """The bound call of a tiled parameter ((call, finite) from `q8_tiles`), for every M."""
    if tiled is None or tiled[0] is None:
        return None
    bound = BoundNative(layer, name, bias, tiled[0], tiled[1], 1)
    bound.lo, bound.hi = 1, 1 << 62
    return bound
