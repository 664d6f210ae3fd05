"""What a checkpoint keeps of a static int8 model, and how a float model is made to take it back.

The header's "static" object (present only for static models; such files are format version 2):
    {"version": 1, "layers": {"<module>": {"kind": "StaticQuantLinear", "input_scale": float, "input_clamp": int,
                                           "input_smooth": [float, ...] (SmoothQuant's 1 / s; optional)}},
     "folded_bn": [["<conv>", "<batchnorm>"], ...], "fused_relu": [["<conv>", "<relu>"], ...] (optional),
     "config": StaticConfig.to_dict()}
A layer entry may add "fused_relu": true (its ReLU, listed in "fused_relu", is an nn.Identity in the model), or
"fused_act": "relu6" / "hardswish" (its nn.ReLU6 / nn.Hardswish, listed in "fused_relu" too, is the Identity).
Weights are ordinary 8-bit symmetric per-channel packed weights; activation steps are JSON floats (exact: a
float32 step round-trips through JSON's shortest float64 repr). Loading: `prepare_model` folds the BatchNorms
structurally (BatchNorm -> Identity, a bias where the conv had none) before the tensors are matched, and
`apply_static` turns the swapped weight-only layers into their static twins. `SECTION` registers these with
`lowbit.checkpoint` as header section "static" (format version 2) when this module is imported.
"""

from __future__ import annotations

import torch
from torch import nn

from ..checkpoint.errors import CheckpointError
from ..checkpoint.sections import Section, register_section
from ..checkpoint.values import check_tensor
from ..nn.static import STATIC_KINDS, to_static
from .fold import _replace, fold_structure
from .fuse import act_name

_KINDS = set(STATIC_KINDS)
_TINY32 = torch.finfo(torch.float32).tiny


def static_metadata(model: nn.Module) -> dict | None:
    """The "static" header object of a model quantized by `quantize_static` (None for any other model)."""
    meta = getattr(model, "lowbit_static", None)
    if meta is None:
        return None
    layers = {}
    for name, m in model.named_modules():
        if type(m).__name__ in _KINDS:
            layers[name] = {"kind": type(m).__name__, **m.static_meta()}
    return {**meta, "layers": layers}


def check_static(path, static) -> dict:
    """Validate the header's "static" object; ValueError naming the file and the bad entry."""
    if not isinstance(static, dict) or not isinstance(static.get("layers"), dict):
        raise ValueError(f"{path}: bad static int8 metadata (expected an object with 'layers')")
    if type(static.get("version")) is not int or static["version"] > 1:
        raise ValueError(f"{path}: static int8 metadata version {static.get('version')!r} is newer than this lowbit")
    for name, spec in static["layers"].items():
        ok = isinstance(spec, dict) and spec.get("kind") in _KINDS and type(spec.get("input_scale")) is float \
            and spec["input_scale"] > 0 and type(spec.get("input_clamp")) is int and 1 <= spec["input_clamp"] <= 127
        smooth = spec.get("input_smooth") if isinstance(spec, dict) else None
        if smooth is not None and not (isinstance(smooth, list) and all(type(v) is float for v in smooth)):
            ok = False
        if isinstance(spec, dict) and spec.get("fused_relu", False) not in (True, False):
            ok = False
        if isinstance(spec, dict) and spec.get("fused_act") not in (None, "relu6", "hardswish"):
            ok = False
        if not ok:
            raise ValueError(f"{path}: bad static int8 entry for layer {name!r}: {str(spec)[:120]}")
    for key in ("folded_bn", "fused_relu"):
        pairs = static.get(key, [])
        if not (isinstance(pairs, list) and all(isinstance(p, list) and len(p) == 2
                                                and all(isinstance(n, str) for n in p) for p in pairs)):
            raise ValueError(f"{path}: bad static int8 metadata: {key!r} must be a list of [layer, module] names")
    return static


def prepare_model(model: nn.Module, static: dict) -> None:
    """Fold the checkpoint's BatchNorm pairs into `model` structurally (values come from the file) and replace each
    fused activation (ReLU; ReLU6 / Hardswish where the layer's entry says "fused_act") by nn.Identity (its layer
    computes it)."""
    fold_structure(model, static.get("folded_bn", []))
    for layer_name, relu_name in static.get("fused_relu", []):
        try:
            relu = model.get_submodule(relu_name)
        except AttributeError:
            relu = None
        want = static["layers"].get(layer_name, {}).get("fused_act") or "relu"
        if act_name(relu) != want:
            raise ValueError(f"the checkpoint fuses {want} {relu_name!r} into {layer_name!r}, but the model has "
                             f"{type(relu).__name__} there (wrong model?)")
        _replace(model, relu_name, nn.Identity())


def apply_static(model: nn.Module, static: dict, quantized: set[str]) -> nn.Module:
    """Replace each listed layer (already swapped to its weight-only form) by its static twin."""
    for name, spec in static["layers"].items():
        if not any(q.rpartition(".")[0] == name for q in quantized):
            raise ValueError(f"static int8 layer {name!r} has no packed weight in the checkpoint")
        new = to_static(model.get_submodule(name), spec["input_scale"], spec["input_clamp"], spec.get("input_smooth"))
        if spec.get("fused_relu") is True and hasattr(new, "fuse_relu"):
            new.fuse_relu()
        if spec.get("fused_act") is not None:
            new.fuse_act(spec["fused_act"])
        if not name:
            model = new
        else:
            _replace(model, name, new)
    model.lowbit_static = dict(static)
    return model


def check_static_values(path, static: dict) -> None:
    """Each layer's activation step (the input is divided by it: finite, a normal float32) and smoothing vector
    (multiplied in: finite and > 0 as float32); CheckpointError naming the file and the layer."""
    for layer, spec in static["layers"].items():
        step = torch.tensor(spec["input_scale"], dtype=torch.float32)
        if not bool(torch.isfinite(step)) or not float(step) >= _TINY32:
            raise CheckpointError(f"{path}: layer {layer!r}, static entry 'input_scale' (the activation step, the "
                                  f"input is divided by it) is {spec['input_scale']!r}; it must be a finite float32 "
                                  f">= {_TINY32:.3g}")
        smooth = spec.get("input_smooth")
        if smooth is not None:
            check_tensor(path, layer, "input_smooth", torch.tensor(smooth, dtype=torch.float64).float(), True, False,
                         "static smoothing vector in the header")


def export_static(path, static: dict, weight_only: bool) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The section's export hook: ({weight name: input_smooth vector} to fold back, notes); CheckpointError unless
    weight_only (pack-quantized holds no activation steps), and for a file whose structure differs from the float
    model's (folded BatchNorms; a fused ReLU changes no tensor)."""
    layers = static.get("layers", {})
    smoothed = {name: spec["input_smooth"] for name, spec in layers.items() if spec.get("input_smooth") is not None}
    if not weight_only:
        smooth = f", {len(smoothed)} of them SmoothQuant-scaled (input_smooth)" if smoothed else ""
        raise CheckpointError(f"{path} is a static int8 (W8A8) checkpoint: {len(layers)} layer(s) quantize "
                              f"their inputs with fixed steps{smooth}; pack-quantized holds weights only, so export "
                              "would drop the activation quantization: pass --weight-only (weight_only=True) to "
                              "export the weights alone, smoothing folded back, or serve the checkpoint with lowbit")
    folded = static.get("folded_bn", [])
    if folded:  # a fused ReLU changes no tensor; a folded BatchNorm changes the conv's and removes its own
        raise CheckpointError(f"{path}: its static int8 layers fold BatchNorms into convolutions ({folded[0]}, "
                              "...), so its tensors no longer match the float architecture a config.json describes")
    folds = {(f"{name}.weight" if name else "weight"): torch.tensor(v, dtype=torch.float32)
             for name, v in smoothed.items()}
    note = (f"static int8 checkpoint exported weight-only: the input steps of {len(layers)} layer(s) were dropped"
            + (f", the smoothing of {len(folds)} folded back into their weights" if folds else ""))
    return folds, [note]


SECTION = register_section(Section(kind="static", version=2, save=static_metadata, check=check_static,
                                   check_values=check_static_values, prepare=prepare_model, apply=apply_static,
                                   export=export_static))
