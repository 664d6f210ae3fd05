"""Memory Low's 8-bit codes in the tiled kernel's layout: one copy of the codes, made at the first bound call.

The native kernel's tiled GEMM reads weights as tiles of 16/32 rows with a few codes of each row side by side
(`cpu_native.pack_q8t`). On the stored row-major codes it transposes every chunk on every call (a third of the call at
M 4..8). At memory Low a QuantLinear whose 8-bit codes the native kernel reads in place (the 8-bit container,
K % 64 == 0; N a multiple of 32, so nothing is padded; the AVX-512 VNNI build) has them re-laid once, when its first
native call is bound (`tile`): the tiled copy is kept in the layer's `__dict__["_q8_tiles"]` and the buffer
`<P>_packed` is set to None (released, as memory Normal's float copy does), so the layer still holds its codes once
(transiently twice while one layer is re-laid). The tiled call serves every M: dispatch picks the same native kernel
at every M bucket, which `tile` checks first.

Saving, `state_dict()`, `quantized_weight()` and `kernel_for` get the row-major codes back from the tiles (a
permutation: bit-exact; `untiled`, through `dense_copy.rederived`). A call the bound call does not serve (another
input dtype or layout, NaN or inf rows) runs the same kernel on the tiles through the usual path (`linear`), so the
bound and usual paths stay bit-identical; where the tiles cannot serve (autograd recording, torch.compile, a forced
kernel, changed capabilities or kernel rows) the row-major buffer comes back for good (`restore(..., for_good=True)`)
and that layer keeps it; an edited scale or zero re-lays only the scales. `set_backend`, `clear_cache`,
`load_state_dict` and `.to()` put the row-major buffer back too; the next bound call may re-lay it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from ..quant.format import symmetric_zero
from ..runtime import executor
from ..runtime.config import Memory
from ..runtime.dispatch import Decision, WeightFormat, select_kernel
from ..runtime.kernel_table import generation
from . import ops, weight_cache
from .identity import same, version_of
from .weight_cache import M_BOUNDARIES, epoch, forcing

if TYPE_CHECKING:
    from ..kernels.cpu_int4 import Int4CpuWeight
# the kernels are imported where used: importing lowbit.nn loads no kernel module (tests/runtime/test_capabilities)

# The build whose tiles layers take: AVX-512 VNNI's 32-row tiles. AVX2's 16-row tiles (int16 madd) win at M 4..32
# (4096 x 4096, 1 thread: 1.2-1.7x) but lose at M = 1 (1.02 against 0.64 ms: each chunk is widened to int16 through
# a buffer, which the row kernels' decode path never pays), and decode must not get slower.
_TILE_ROWS = 32
_KEY = "_q8_tiles"  # layer.__dict__: {name: Tiles}
_NEVER = "_q8_rowmajor"  # layer.__dict__: names kept row-major for good


@dataclass(frozen=True)
class Tiles:
    """A parameter's tiled codes: weight (the tiled Int4CpuWeight, `tiled_native`), the decision every M takes
    (kernel, activations), finite (the bound call's NaN check), and what they were made under: the scale and zero
    buffers' stamp, the capabilities epoch and the kernel table generation."""

    weight: Int4CpuWeight
    decision: Decision
    finite: bool
    made_under: tuple


def _made_under(layer, name: str) -> tuple:
    out = (epoch(), generation())
    for field in ("scale", "zero"):
        t = layer._buffers.get(f"{name}_{field}")
        out += (None, None) if t is None else (same(t), version_of(t))
    return out


def held(layer, name: str) -> bool:
    """True when parameter `name`'s codes are held tiled (its `<name>_packed` buffer released)."""
    return name in layer.__dict__.get(_KEY, ())


def untiled(layer, name: str) -> torch.Tensor:
    """The row-major packed buffer of a tiled parameter (uint8 (N, K)), re-derived from the tiles."""
    from ..kernels.cpu_native import unpack_q8t

    w4 = layer.__dict__[_KEY][name].weight
    with torch.inference_mode(False), torch.no_grad():
        return unpack_q8t(w4.tensors["packed"], w4.n)


def restore(layer, name: str, for_good: bool = False) -> None:
    """Hold parameter `name` row-major again (no-op unless tiled); for_good: and never tile it again."""
    if held(layer, name):
        if for_good:
            layer.__dict__.setdefault(_NEVER, set()).add(name)
        layer._buffers[f"{name}_packed"] = untiled(layer, name)
        del layer.__dict__[_KEY][name]


def restore_all(layer) -> None:
    """`restore` every tiled parameter of the layer."""
    for name in list(layer.__dict__.get(_KEY, ())):
        restore(layer, name)


def _same_at_every_m(layer, name: str, packed, decision) -> bool:
    meta = layer.quant_meta[name]
    shape = [meta["shape"][0], math.prod(meta["shape"][1:])]
    qw = weight_cache.compute_view(packed, layer._buffers.get(f"{name}_scale"), layer._buffers.get(f"{name}_zero"),
                                   shape, meta["bits"], meta["block_size"])
    fmt = WeightFormat.of(qw, weight_cache.entry_for(qw).refused)
    caps = weight_cache.current_capabilities()
    want = (decision.kernel, decision.activations, decision.fallback_reason)
    for m in M_BOUNDARIES:
        d = select_kernel("cpu", m, fmt, caps, layer.backend)
        if (d.kernel, d.activations, d.fallback_reason) != want:
            return False
    return True


def tile(layer, name: str, call, finite: bool, decision):
    """Re-lay parameter `name`'s codes for the tiled kernel and release the row-major buffer, when the layer runs at
    memory Low on 8-bit codes the native `call` (a NativeCall with int8 activations) reads in place and dispatch
    decides as `decision` at every M; returns the tiled call (`tiled_call`), else None (nothing changed)."""
    packed = layer._buffers.get(f"{name}_packed")
    w4 = getattr(call, "weight", None)
    if not getattr(layer, "tile_codes", True) or layer.backend.memory is not Memory.LOW or packed is None \
            or w4 is None or w4.bits != 8 or w4.tiled or w4.tensors["packed"] is not packed or call._f32 \
            or name in layer.__dict__.get(_NEVER, ()) or not _same_at_every_m(layer, name, packed, decision):
        return None
    from ..kernels.cpu_int4 import tiled_native
    from ..kernels.cpu_native import q8t_rows

    if q8t_rows() != _TILE_ROWS or w4.n % _TILE_ROWS:
        return None  # not the AVX-512 VNNI build (see _TILE_ROWS), or the last tile would be padded
    tiled = tiled_native(w4)
    if tiled is None:
        return None
    layer.__dict__.setdefault(_KEY, {})[name] = Tiles(tiled, decision, finite, _made_under(layer, name))
    weight_cache.drop_cache(packed)  # its prepared weight shares the row-major codes: they go with it
    layer._buffers[f"{name}_packed"] = None
    return tiled_call(layer, name)


def _current(layer, name: str) -> Tiles | None:
    """The parameter's tiles, their scales re-laid from the scale and zero buffers when those changed (an in-place
    edit, a deepcopy); None after new capabilities or kernel rows (dispatch may decide otherwise): the row-major
    codes are then held again for good."""
    tiles = layer.__dict__[_KEY][name]
    now = _made_under(layer, name)
    if tiles.made_under == now:
        return tiles
    if tiles.made_under[:2] != now[:2]:
        restore(layer, name, for_good=True)
        return None
    from ..kernels.cpu_native import tile_scales

    w4 = tiles.weight
    scale, zero = layer._buffers[f"{name}_scale"].float(), layer._buffers.get(f"{name}_zero")
    zero = zero.float() if zero is not None else torch.full_like(scale, float(symmetric_zero(w4.bits)))
    tensors = {**w4.tensors, "scale": tile_scales(scale, w4.tiled), "scale_zero": tile_scales(scale * zero, w4.tiled)}
    tiles = layer.__dict__[_KEY][name] = replace(tiles, weight=replace(w4, tensors=tensors), made_under=now)
    return tiles


def tiled_call(layer, name: str):
    """(NativeCall over the tiles, finite check) of a tiled parameter for the bound call, or None (see `_current`)."""
    from ..kernels.cpu_int4 import bind_int4_cpu

    tiles = _current(layer, name)
    return None if tiles is None else (bind_int4_cpu(tiles.weight, tiles.decision.activations), tiles.finite)


def linear(layer, name: str, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor | None:
    """The usual path's y = x @ W.T + bias on the tiles (the same kernel the bound call runs, NaN/inf rows NaN as
    `executor.run_finite` makes them), or None where the tiles cannot serve: tracing, autograd recording, a forced
    kernel, an input off the CPU, or changed buffers or dispatch (`_current`)."""
    if not held(layer, name) or not ops.eager(x) or ops.wants_grad(x, bias) or forcing() or not x.is_cpu:
        return None
    tiles = _current(layer, name)
    if tiles is None:
        return None
    x2 = x.reshape(-1, x.shape[-1])
    b = bias if bias is None or bias.dtype is torch.float32 else bias.float()
    y = executor.run_finite(tiles.decision.kernel, tiles.weight, x2.float().contiguous(), b,
                            tiles.decision.activations)
    return (y if y.dtype == x.dtype else y.to(x.dtype)).reshape(*x.shape[:-1], tiles.weight.n)
