"""A conv layer's bound call: per input shape, the kernel call its usual path makes, behind a few identity checks.

After a forward through the usual path (which built the plan and announced any fallback) a QuantConv1d / QuantConv2d
keeps `BoundConv(layer, x, call)`: memory Normal's F.conv2d on the float copy, or the dispatched kernel's call
(`conv_exec.bound_conv`), or None where that path has no single-call form for x. The next forward runs the call when
every check holds, else takes the usual path, which binds again; outputs are bit-identical to the usual path.

What a bound call checks (each an identity or a counter; ~1 us in all, against ~10 us of the usual path's Python):
- the input: a plain tensor (no torch.compile, dispatch or function mode) of the bound shape, dtype and device;
  autograd not recording the call (the op's backward serves then);
- the layer: the same `backend` object, the same weight buffers (packed, scale, zero, the float copy, an AWQ input
  scale) and bias object with unchanged version counters (an in-place edit, `load_state_dict`);
- the process: no `forced_kernel` block, the same kernel table `generation()` and capabilities `epoch()`.
`set_backend`, `clear_cache`, `.to()` and friends, deepcopy and pickling drop it (QuantModule's `_bound`).
"""

from __future__ import annotations

import torch

from ..runtime.kernel_table import generation
from .weight_cache import epoch, forcing

_TENSOR = torch.Tensor
_is_compiling = torch.compiler.is_compiling
_dispatch_depth = torch._C._len_torch_dispatch_stack
_function_mode = torch._C._is_torch_function_mode_enabled
_grad_enabled = torch.is_grad_enabled
_KEYS = ("weight_packed", "weight_dense", "weight_scale", "weight_zero", "weight_input_scale")


def _version(t: torch.Tensor | None) -> int | None:
    if t is None or t.is_inference():  # inference tensors carry no version counter and cannot change in place
        return None
    return t._version


class BoundConv:
    """`call(x) -> y` for inputs like the one bound, valid while `holds` (see the module docstring); call None: the
    usual path serves this input kind in this layer state (and is not bound again until something checked changes)."""

    __slots__ = ("backend", "bias", "bias_version", "call", "device", "dtype", "epoch", "generation", "held", "shape")

    def __init__(self, layer, x: torch.Tensor, call):
        bufs = layer._buffers
        self.shape, self.dtype, self.device, self.call = x.shape, x.dtype, x.device, call
        self.backend, self.bias = layer.backend, layer._parameters.get("bias")
        self.bias_version = _version(self.bias)
        self.held = tuple((key, bufs.get(key), _version(bufs.get(key))) for key in _KEYS)
        self.epoch, self.generation = epoch(), generation()

    def holds(self, layer, x: torch.Tensor) -> bool:
        """Nothing the call depends on changed, and x is like the bound input (the caller checked it is a plain
        tensor that nothing traces)."""
        if x.shape != self.shape or x.dtype is not self.dtype or x.device != self.device \
                or layer.backend is not self.backend:
            return False
        bias = layer._parameters.get("bias")
        if bias is not self.bias or (self.bias_version is not None and bias._version != self.bias_version):
            return False
        bufs = layer._buffers
        for key, t, v in self.held:
            if bufs.get(key) is not t or (v is not None and t._version != v):
                return False
        return self.epoch == epoch() and self.generation == generation() and not forcing()

    def __call__(self, layer, x):
        """The bound call's output for x, or None where the usual path must serve."""
        if self.call is None or type(x) is not _TENSOR or _is_compiling() or _dispatch_depth() or _function_mode():
            return None
        if _grad_enabled() and (x.requires_grad or (self.bias is not None and self.bias.requires_grad)):
            return None  # autograd records it: the op's backward
        return self.call(x) if self.holds(layer, x) else None
