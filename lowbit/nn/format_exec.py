"""How a layer computes with a packed weight of a format other than affine (`lowbit.quant.formats`).

The affine format goes through the `lowbit::linear` / `lowbit::conv2d` ops, whose arguments are its buffers. A
weight of any other registered format is rebuilt from the layer's buffers through its spec (once per change of the
buffers) and dispatched as the affine one is: the kernels' `supports_*` refuse it by format name, so memory
Normal and High take the float copy, memory Low falls back to it with the usual one warning unless a packed kernel
reads the format, and a forced EMULATED dequantizes on every call. The float copy is memory Normal's own
(`dense_copy.dense_weight`, buffer `<P>_dense`, counted by `resident_bytes`); the codes are kept beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..runtime import executor
from ..runtime.dispatch import Kernel, warn_fallback
from ..runtime.kernel_table import generation
from . import dense_copy
from .identity import same
from .identity import version_of as _version
from .weight_cache import WeightCache, choose


@dataclass(frozen=True)
class DispatchView:
    """What the dispatch reads of a weight (`WeightFormat.of`'s fields): a format without blocks is one group of K."""

    bits: int
    group_size: int
    symmetric: bool
    n: int
    k: int
    format: str

    @classmethod
    def of(cls, qw) -> DispatchView:
        k = math.prod(qw.shape[1:])
        return cls(qw.bits, k, False, qw.shape[0], k, qw.format)


def _stamp(tensors: dict[str, torch.Tensor]) -> tuple:
    """Changes when a buffer is replaced, modified in place or moved, or the kernel table changes (a row registered
    after the first call serves the weight from the next call on, as for affine weights)."""
    return (*((f, same(t), _version(t), t.device) for f, t in sorted(tensors.items())), generation())


def weight_state(module, name: str):
    """(packed weight, its WeightCache) of parameter `name`, rebuilt when its buffers changed."""
    tensors = module.format_tensors(name)
    stamp = _stamp(tensors)
    cache = module.__dict__.setdefault("_format_cache", {})
    hit = cache.get(name)
    if hit is None or hit[0] != stamp:
        qw = module.quantized_weight(name)
        hit = (stamp, qw, WeightCache(stamp, executor.refusals(qw)))
        cache[name] = hit
    return hit[1], hit[2]


def drop(module, name: str) -> None:
    """Forget parameter `name`'s rebuilt weight, decisions and prepared kernel weights."""
    module.__dict__.get("_format_cache", {}).pop(name, None)


def _decide(module, name: str, device_type: str, m: int, n: int):
    qw, entry = weight_state(module, name)
    view = DispatchView.of(qw)
    memory, precision = module.backend.memory.value, module.backend.precision.value
    decision, dtype = choose(view, entry, device_type, m, memory, precision, n)
    warn_fallback(decision)  # once per distinct reason, whichever layer asks first
    return qw, entry, decision, dtype


def _prepared(entry: WeightCache, kernel: Kernel, qw, dtype: torch.dtype):
    key = (kernel, dtype, None)
    if key not in entry.prepared:
        entry.prepared[key] = executor.prepare(kernel, qw, dtype)
    return entry.prepared[key]


def _float_weight(module, name: str, qw, kernel: Kernel, device_type: str, dtype: torch.dtype) -> torch.Tensor:
    """DENSE: the layer's one float copy (built once); EMULATED: dequantized for this call only. (N, K)."""
    if kernel is Kernel.DENSE:
        return dense_copy.dense_weight(module, name, device_type)
    return qw.dequantize(dtype).reshape(qw.shape[0], -1)


def linear(module, name: str, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x (..., K) @ W_name.T + bias for a non-affine weight; the output has x's dtype."""
    x2 = x.reshape(-1, x.shape[-1])
    n = module.quant_meta[name]["shape"][0]
    qw, entry, decision, dtype = _decide(module, name, x.device.type, x2.shape[0], n)
    kernel = decision.kernel
    b = bias if bias is None or bias.dtype == dtype else bias.to(dtype)
    xc = x2 if x2.dtype == dtype else x2.to(dtype)
    if kernel in (Kernel.DENSE, Kernel.EMULATED):
        w = _float_weight(module, name, qw, kernel, x.device.type, dtype)
        y = F.linear(xc, w if w.dtype == dtype else w.to(dtype), b)
    else:  # a packed kernel that reads this format
        y = executor.run(kernel, _prepared(entry, kernel, qw, dtype), xc.contiguous(), b, decision.activations)
    return (y if y.dtype == x.dtype else y.to(x.dtype)).reshape(*x.shape[:-1], n)


def conv2d(module, name: str, x: torch.Tensor, bias, stride, padding, dilation, groups: int,
           shape4d) -> torch.Tensor:
    """F.conv2d(x (B, C, H, W), W (O, C/groups, kh, kw), bias) for a non-affine weight packed along the flattened
    (C/groups, kh, kw); a packed kernel runs as im2col + its Linear call (groups == 1; grouped convs take DENSE)."""
    o, _, kh, kw = shape4d
    oh = (x.shape[2] + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (x.shape[3] + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    qw, entry, decision, dtype = _decide(module, name, x.device.type, x.shape[0] * oh * ow, o // groups)
    kernel = decision.kernel
    if kernel not in (Kernel.DENSE, Kernel.EMULATED) and groups > 1:
        kernel = Kernel.DENSE
    b = bias.to(dtype) if bias is not None else None
    xc = x.to(dtype)
    if kernel in (Kernel.DENSE, Kernel.EMULATED):
        w = _float_weight(module, name, qw, kernel, x.device.type, dtype)
        y = F.conv2d(xc, w.to(dtype).view(shape4d), b, stride, padding, dilation, groups)
    else:
        cols = F.unfold(xc, (kh, kw), dilation=dilation, padding=padding, stride=stride)  # (B, C*kh*kw, L)
        a = cols.transpose(1, 2).reshape(-1, cols.shape[1])  # (B*L, K)
        prep = _prepared(entry, kernel, qw, dtype)
        y = executor.run(kernel, prep, a.contiguous(), b, decision.activations)  # (B*L, O)
        y = y.view(x.shape[0], oh * ow, o).transpose(1, 2).reshape(x.shape[0], o, oh, ow)
    return y.to(x.dtype).contiguous()
