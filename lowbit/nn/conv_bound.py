"""A conv layer's bound call: per input shape, the kernel call its usual path makes, behind a few identity checks.

After a forward through the usual path (which built the plan and announced any fallback) a QuantConv1d / QuantConv2d
keeps `BoundConv(layer, x, call)`: memory Normal's F.conv2d on the float copy, or the dispatched kernel's call
(`conv_exec.bound_conv`), or None where that path has no single-call form for x. The next forward runs the call when
every check holds, else takes the usual path, which binds again; outputs are bit-identical to the usual path.

What a bound call checks (each an identity or a counter; ~1 us in all, against ~10 us of the usual path's Python):
- the input: a plain tensor (no torch.compile, dispatch or function mode) of the bound shape, dtype and device;
  autograd not recording the call (the op's backward serves then);
- the layer: the same `backend` object, the same buffers (packed, scale, zero, the float copy, an AWQ input scale;
  none added) and bias object, unchanged version counters of the packed codes, scale, zero and bias (an in-place
  edit, `load_state_dict`);
- the process: no `forced_kernel` block, the same kernel table `generation()` and capabilities `epoch()`.
`set_backend`, `clear_cache`, `.to()` and friends, deepcopy and pickling drop it (QuantModule's `_bound`).
"""

from __future__ import annotations

import torch

from ..runtime import kernel_table
from . import weight_cache
from .identity import version_of as _version

_TENSOR = torch.Tensor
_is_compiling = torch.compiler.is_compiling
_dispatch_depth = torch._C._len_torch_dispatch_stack
_function_mode = torch._C._is_torch_function_mode_enabled
_grad_enabled = torch.is_grad_enabled
_VERSIONED = ("weight_packed", "weight_scale", "weight_zero")  # what prepared weights (and the codes) derive from
_EPOCH, _GENERATION, _FORCED = weight_cache._EPOCH, kernel_table._GENERATION, weight_cache._FORCED


class BoundConv:
    """`call(x) -> y` for inputs like the one bound, valid while `holds` (see the module docstring); call None: the
    usual path serves this input kind in this layer state (and is not bound again until something checked changes).

    The checks touch as few objects as they can (in a whole forward they run cache-cold: each object read costs): the
    buffers by identity (and their count, for one added later), version counters only of the packed codes, scale and
    zero (what prepared weights derive from, and memory Normal's refusal of an edited released scale needs) and the
    bias (a float copy or the kernel reads the tensor itself when called, so its own edits need no new binding).
    """

    __slots__ = ("backend", "bias", "bias_version", "call", "cpu", "device", "dtype", "epoch", "generation", "held",
                 "nbufs", "shape", "versions")

    def __init__(self, layer, x: torch.Tensor, call):
        bufs = layer._buffers
        self.shape, self.dtype, self.cpu, self.device, self.call = x.shape, x.dtype, x.is_cpu, x.device, call
        self.backend, self.bias = layer.backend, layer._parameters.get("bias")
        self.bias_version = _version(self.bias)
        self.held, self.nbufs = tuple(bufs.items()), len(bufs)
        self.versions = tuple((t, v) for t in map(bufs.get, _VERSIONED) if (v := _version(t)) is not None)
        self.epoch, self.generation = _EPOCH[0], _GENERATION[0]

    def holds(self, layer, x: torch.Tensor) -> bool:
        """Nothing the call depends on changed, and x is like the bound input (the caller checked it is a plain
        tensor that nothing traces)."""
        if x.shape != self.shape or x.dtype is not self.dtype or x.is_cpu is not self.cpu \
                or layer.backend is not self.backend or (not self.cpu and x.device != self.device):
            return False
        bias = layer._parameters.get("bias")
        if bias is not self.bias or (self.bias_version is not None and bias._version != self.bias_version):
            return False
        bufs = layer._buffers
        if len(bufs) != self.nbufs:
            return False
        for key, t in self.held:
            if bufs.get(key) is not t:
                return False
        for t, v in self.versions:
            if t._version != v:
                return False
        return self.epoch == _EPOCH[0] and self.generation == _GENERATION[0] and not _FORCED

    def __call__(self, layer, x):
        """The bound call's output for x, or None where the usual path must serve."""
        if self.call is None or type(x) is not _TENSOR or _is_compiling() or _dispatch_depth() or _function_mode():
            return None
        if _grad_enabled() and (x.requires_grad or (self.bias is not None and self.bias.requires_grad)):
            return None  # autograd records it: the op's backward
        return self.call(x) if self.holds(layer, x) else None
