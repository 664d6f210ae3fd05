"""Memory Normal's one float copy: a layer computes with its dequantized weight and holds no packed codes beside it.

At its first eager forward under memory Normal a layer builds W = dequantize(codes) in the compute dtype, keeps it as
the non-persistent buffer `<P>_dense` and sets the buffer `<P>_packed` to None once the codes re-derive exactly from
it: q = round(W / scale + zero). W = (q - zero) * scale is computed in fp32, so an fp32 copy returns every code; a
copy that cannot (a bf16 copy of 8-bit codes, a block whose scale is 0) keeps the packed codes, and the layer then
holds both. Beside the float copy only the scales and zeros stay: 2 fp16 numbers per block of an asymmetric weight,
1.6% of the fp32 bytes at block 64 and 0.8% at block 128 (3.1% at block 32; half that when symmetric).

The copy is the weight's own `dequantize()`, whatever its format (`lowbit.quant.formats`); only affine codes are
released (a weight of another format keeps its tensors beside the copy, which memory Low's fallback shares).

Saving, `state_dict()`, `quantized_weight()` and a switch to memory Low or High re-derive the codes (bit-exact: it was
checked when they were released); `load_state_dict` puts the packed buffer back and drops the copy, which the next
forward rebuilds from the loaded codes. Editing a released weight's scale or zero in place cannot be honoured (the
codes exist only through the old values): the next use raises RuntimeError; `set_backend` or `clear_cache` first
holds the codes packed again, and the edit then takes effect.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..quant.format import QuantizedWeight, group_size_for, symmetric_zero
from ..quant.packing import pack_bits
from ..runtime.dispatch import compute_dtype
from . import q8_tiles, weight_cache
from .identity import same


def packed_from_dense(w: torch.Tensor, scale: torch.Tensor | None, zero: torch.Tensor | None, bits: int,
                      block_size: int) -> torch.Tensor:
    """The packed buffer whose dequantization is w (N, K): uint8 bit streams, or the float16 weight for bits=16."""
    if bits == 16:
        return w.to(torch.float16).contiguous()
    k = w.shape[1]
    group = group_size_for(k, block_size)
    s = scale.float().repeat_interleave(group, dim=1)[:, :k]
    z = zero.float() if zero is not None else torch.full_like(scale, float(symmetric_zero(bits)), dtype=torch.float32)
    q = torch.round(w.float() / s + z.repeat_interleave(group, dim=1)[:, :k])
    return pack_bits(q.nan_to_num_(0.0).clamp_(0, 2 ** bits - 1).to(torch.uint8), bits)


def _names(name: str) -> tuple[str, str]:
    return f"{name}_packed", f"{name}_dense"


def released(module: nn.Module, name: str) -> bool:
    """True when parameter `name`'s packed codes are not held (memory Normal's float copy stands in for them)."""
    packed_key, _ = _names(name)
    return packed_key in module._buffers and module._buffers[packed_key] is None


def _stamp(module: nn.Module, name: str) -> tuple:
    """Identity and version of the scale and zero buffers (what an in-place edit changes)."""
    out = ()
    for field in ("scale", "zero"):
        t = module._buffers.get(f"{name}_{field}")
        out += (None, None) if t is None else (same(t), t._version)
    return out


def rederived(module: nn.Module, name: str) -> torch.Tensor:
    """The packed buffer of a released parameter, computed from its float copy (RuntimeError when its scale or zero
    changed since the codes were released), or from memory Low's tiled codes (`q8_tiles`)."""
    if q8_tiles.held(module, name):
        return q8_tiles.untiled(module, name)
    meta = module.quant_meta[name]
    _, dense_key = _names(name)
    w = module._buffers[dense_key]
    scale, zero = module._buffers.get(f"{name}_scale"), module._buffers.get(f"{name}_zero")
    with torch.inference_mode(False), torch.no_grad():  # a normal buffer again, whatever mode the caller runs in
        packed = packed_from_dense(w, scale, zero, meta["bits"], meta["block_size"])
    stamps = module.__dict__.setdefault("_dense_stamps", {})
    if stamps.get(name) != _stamp(module, name):  # edited in place, or a deepcopy/new object: check by value
        if not torch.equal(_dequantized(packed, scale, zero, meta, w.dtype), w):
            raise RuntimeError(f"{name}: its scale or zero changed while memory Normal held only the float copy, so "
                               "its codes are lost; call set_backend() or clear_cache() before editing the buffers")
        stamps[name] = _stamp(module, name)
    return packed


def _dequantized(packed, scale, zero, meta: dict, dtype: torch.dtype) -> torch.Tensor:
    shape = [meta["shape"][0], math.prod(meta["shape"][1:])]
    return weight_cache.compute_view(packed, scale, zero, shape, meta["bits"], meta["block_size"]).dequantize(
        dtype).reshape(shape)


def restore(module: nn.Module, name: str) -> None:
    """Hold parameter `name` packed again (its codes re-derived when released) and drop its float copy."""
    packed_key, dense_key = _names(name)
    q8_tiles.restore(module, name)
    if released(module, name):
        module._buffers[packed_key] = rederived(module, name)
    module._buffers.pop(dense_key, None)


def dense_weight(module: nn.Module, name: str, device_type: str) -> torch.Tensor:
    """Parameter `name` as a float (N, K) tensor in the compute dtype, built once (memory Normal)."""
    _, dense_key = _names(name)
    w = module._buffers.get(dense_key)
    dtype = compute_dtype(device_type, weight_cache.current_capabilities(), module.backend)
    if w is not None and w.dtype == dtype and w.device.type == device_type:
        if module.__dict__.get("_dense_stamps", {}).get(name) != _stamp(module, name) and released(module, name):
            rederived(module, name)  # raises when the scale or zero were edited in place
        return w
    restore(module, name)  # a new dtype or device: rebuild from the codes
    qw = module.quantized_weight(name)
    # a normal tensor even when the first call runs under inference_mode: a later call with autograd saves it
    with torch.inference_mode(False), torch.no_grad():
        w = qw.dequantize(dtype).reshape(qw.shape[0], -1)  # (N, K)
        if any(w.data_ptr() == t.data_ptr() for t in qw.tensors().values()):
            w = w.clone()  # bits=16 asked in float16 is the packed buffer itself
    module.register_buffer(dense_key, w, persistent=False)
    if not isinstance(qw, QuantizedWeight):
        return w  # other formats keep their tensors (no rule re-derives them from the copy)
    packed_key, _ = _names(name)
    if torch.equal(packed_from_dense(w, qw.scale, qw.zero, qw.bits, qw.block_size), qw.packed):
        weight_cache.drop_cache(qw.packed)
        module._buffers[packed_key] = None
        module.__dict__.setdefault("_dense_stamps", {})[name] = _stamp(module, name)
    return w
