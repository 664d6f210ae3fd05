"""The stored numbers a quantized forward computes with, checked before any layer uses them.

`open_checkpoint` runs `check_values` after the header checks, so `lowbit info` and `lowbit.load` accept and refuse
the same files. What each number must be (anything else would make every output NaN or inf, or was not written by
lowbit):
- a weight's scale: finite and > 0 (every quantizer clamps it to at least the smallest positive value of its
  storage dtype; the dense copy divides by it);
- a weight's zero (RTN, HQQ, GPTQ, AWQ: floats): finite;
- an AWQ input-scale vector (the input is divided by it): finite, > 0 and a normal float32 (1/s finite);
- a static int8 activation step (the input is divided by it): finite, a normal float32 once stored as one;
- a static smoothing vector (SmoothQuant's 1/s, multiplied in): finite and > 0 as float32;
- a weight of another registered format: what its spec's `check_values` asks (nothing when it has none).
Errors are CheckpointErrors naming the file, the layer and the tensor (or header entry).
"""

from __future__ import annotations

import torch

from ..quant.formats import AFFINE
from .errors import CheckpointError
from .header import INPUT_SCALE, format_spec, tensor_name

_TINY32 = torch.finfo(torch.float32).tiny


def _first_bad(t: torch.Tensor, bad: torch.Tensor) -> str:
    index = tuple(bad.nonzero()[0].tolist())
    return f"{t[index].item()!r} at index {list(index)}"


def _check_tensor(path, layer: str, tname: str, t: torch.Tensor, positive: bool, normal: bool, what: str) -> None:
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
            _check_tensor(ckpt.path, layer, fields["scale"], ckpt.tensor(fields["scale"]), True, False,
                          "weight scale")
        if "zero" in fields:
            _check_tensor(ckpt.path, layer, fields["zero"], ckpt.tensor(fields["zero"]), False, False, "weight zero")
    for name in ckpt.body.get("input_scales", []):
        tname = tensor_name(name, INPUT_SCALE)
        _check_tensor(ckpt.path, name.rpartition(".")[0], tname, ckpt.tensor(tname), True, True,
                      "AWQ input scale, the input is divided by it")


def _check_other(ckpt, layer: str, spec, fields: dict[str, str]) -> None:
    if spec.check_values is None:
        return
    try:
        spec.check_values({f: ckpt.tensor(t) for f, t in fields.items()})
    except ValueError as e:
        raise CheckpointError(f"{ckpt.path}: layer {layer!r} (format {spec.name!r}): {e} (a corrupted or hand-edited "
                              "file)") from None


def _check_static(path, static: dict) -> None:
    for layer, spec in static["layers"].items():
        step = torch.tensor(spec["input_scale"], dtype=torch.float32)
        if not bool(torch.isfinite(step)) or not float(step) >= _TINY32:
            raise CheckpointError(f"{path}: layer {layer!r}, static entry 'input_scale' (the activation step, the "
                                  f"input is divided by it) is {spec['input_scale']!r}; it must be a finite float32 "
                                  f">= {_TINY32:.3g}")
        smooth = spec.get("input_smooth")
        if smooth is not None:
            _check_tensor(path, layer, "input_smooth", torch.tensor(smooth, dtype=torch.float64).float(), True, False,
                          "static smoothing vector in the header")


def check_values(ckpt) -> None:
    """Every scale, zero, input-scale vector, activation step and smoothing vector of an opened checkpoint."""
    _check_weights(ckpt)
    if ckpt.body.get("static") is not None:
        _check_static(ckpt.path, ckpt.body["static"])
