"""The stored numbers a quantized forward computes with, checked before any layer uses them.

`open_checkpoint` runs `check_values` after the header checks, so `lowbit info` and `lowbit.load` accept and refuse
the same files. What each number must be (anything else would make every output NaN or inf, or was not written by
lowbit):
- a weight's scale: finite and > 0 (every quantizer clamps it to at least the smallest positive value of its
  storage dtype; the dense copy divides by it);
- a weight's zero (RTN, HQQ, GPTQ, AWQ: floats): finite;
- an AWQ input-scale vector (the input is divided by it): finite, > 0 and a normal float32 (1/s finite);
- a header section's numbers, by its own `check_values` hook (lowbit.checkpoint.sections): a static int8 activation
  step finite and a normal float32, a static smoothing vector finite and > 0 (lowbit.static.checkpoint);
- a weight of another registered format: what its spec's `check_values` asks (nothing when it has none).
Errors are CheckpointErrors naming the file, the layer and the tensor (or header entry).
"""

from __future__ import annotations

import torch

from ..quant.formats import AFFINE
from .errors import CheckpointError
from .header import INPUT_SCALE, format_spec, tensor_name
from .sections import file_sections

_TINY32 = torch.finfo(torch.float32).tiny


def _first_bad(t: torch.Tensor, bad: torch.Tensor) -> str:
    index = tuple(bad.nonzero()[0].tolist())
    return f"{t[index].item()!r} at index {list(index)}"


def check_tensor(path, layer: str, tname: str, t: torch.Tensor, positive: bool, normal: bool, what: str) -> None:
    """CheckpointError naming file, layer and tensor (`what` says what it is) unless every value of `t` is finite,
    and > 0 when `positive`, and not below float32's smallest normal number in magnitude when `normal`."""
    v = t.float()
    bad = ~torch.isfinite(v)
    if positive:
        bad |= ~(v > 0)
    if normal:
        bad |= v.abs() < _TINY32
    if bool(bad.any()):
        need = "finite" + (" and > 0" if positive else "") + (", not subnormal" if normal else "")
        raise CheckpointError(f"{path}: layer {layer!r}, tensor {tname!r} ({what}) holds {_first_bad(t, bad)}; it "
                              f"must be {need} (a corrupted or hand-edited file)")


def _check_weights(ckpt) -> None:
    for name, fields in ckpt.groups.items():
        layer = name.rpartition(".")[0]
        spec = format_spec(ckpt.path, name, ckpt.quantized[name])
        if spec.name != AFFINE:
            _check_other(ckpt, layer, spec, fields)
            continue
        if "scale" in fields:
            check_tensor(ckpt.path, layer, fields["scale"], ckpt.tensor(fields["scale"]), True, False,
                          "weight scale")
        if "zero" in fields:
            check_tensor(ckpt.path, layer, fields["zero"], ckpt.tensor(fields["zero"]), False, False, "weight zero")
    for name in ckpt.body.get("input_scales", []):
        tname = tensor_name(name, INPUT_SCALE)
        check_tensor(ckpt.path, name.rpartition(".")[0], tname, ckpt.tensor(tname), True, True,
                      "AWQ input scale, the input is divided by it")


def _check_other(ckpt, layer: str, spec, fields: dict[str, str]) -> None:
    if spec.check_values is None:
        return
    try:
        spec.check_values({f: ckpt.tensor(t) for f, t in fields.items()})
    except ValueError as e:
        raise CheckpointError(f"{ckpt.path}: layer {layer!r} (format {spec.name!r}): {e} (a corrupted or hand-edited "
                              "file)") from None


def check_values(ckpt) -> None:
    """Every scale, zero and input-scale vector of an opened checkpoint, then each header section's own numbers
    (`Section.check_values`: static int8 activation steps and smoothing vectors)."""
    _check_weights(ckpt)
    for kind, section in file_sections(ckpt.path, ckpt.body).items():
        if section.check_values is not None:
            section.check_values(ckpt.path, ckpt.body[kind])
