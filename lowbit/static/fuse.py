"""Conv + activation fusion: a Conv1d/Conv2d (or Linear) whose output goes straight into an nn.ReLU computes the
ReLU in its static int8 epilogue, and the ReLU becomes nn.Identity; the same for a Conv1d/Conv2d followed by an
nn.ReLU6 or nn.Hardswish (mobilenets), which the native depthwise and pointwise kernels compute in their epilogue.

Pairs are found on one calibration item (the ReLU's input is the very tensor the layer returned, each called once),
then proven safe on the same item: the float model with every candidate's ReLU moved into the layer must give a
bitwise identical output. It does unless the layer's output has another consumer (a residual add, say), which
would then see ReLU'd values; such a pair is not fused.
"""

from __future__ import annotations

import torch
from torch import nn

from ..calib import Item, run_hooked
from .pairs import direct_pairs

_FUSABLE = (nn.Conv1d, nn.Conv2d, nn.Linear)


# activation module type -> its name in the layer's `fuse_act` (lowbit.nn.static.FUSED_ACTS); ReLU6 and hard-swish
# with convolutions only
ACT_MODULES = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Hardswish: "hardswish"}
_FUNCTIONS = {"relu": torch.relu, "relu6": nn.functional.relu6, "hardswish": nn.functional.hardswish}


def act_name(module: nn.Module) -> str | None:
    """The fused-activation name of an activation module ("relu", "relu6", "hardswish"), else None."""
    return ACT_MODULES.get(type(module))


def find_relu_pairs(model: nn.Module, item: Item, layers: dict[str, nn.Module]) -> list[tuple[str, str]]:
    """[(layer name, activation name)] for every chosen layer whose output feeds an nn.ReLU (any fusable layer) or
    an nn.ReLU6 / nn.Hardswish (a convolution) directly on this item."""
    fusable = {n: m for n, m in layers.items() if isinstance(m, _FUSABLE)}
    acts = {n: m for n, m in model.named_modules() if n and type(m) in ACT_MODULES}
    pairs = direct_pairs(model, item, fusable, acts)
    return [(p, c) for p, c in pairs
            if type(acts[c]) is nn.ReLU or isinstance(fusable[p], (nn.Conv1d, nn.Conv2d))]


def _flat(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flat(o)]
    return []


def _output(model: nn.Module, item: Item, handles: list) -> list[torch.Tensor]:
    """The model's output tensors on `item` (hooks in `handles` active for this call, then removed)."""
    box = {}
    handles = [*handles, model.register_forward_hook(lambda _m, _a, out: box.setdefault("out", out))]
    run_hooked(model, item, handles)
    return _flat(box.get("out"))


def fusion_is_exact(model: nn.Module, item: Item, pairs: list[tuple[str, str]]) -> bool:
    """True when moving each pair's activation into its layer leaves the model's output bitwise unchanged on
    `item`."""
    ref = [t.clone() for t in _output(model, item, [])]
    handles = []
    for layer_name, relu_name in pairs:
        fn = _FUNCTIONS[act_name(model.get_submodule(relu_name))]
        handles.append(model.get_submodule(layer_name).register_forward_hook(lambda _m, _a, out, fn=fn: fn(out)))
        handles.append(model.get_submodule(relu_name).register_forward_hook(lambda _m, args, _o: args[0]))
    got = _output(model, item, handles)
    return len(ref) == len(got) > 0 and all(torch.equal(a, b) for a, b in zip(ref, got, strict=True))


def fusable_relus(model: nn.Module, item: Item, layers: dict[str, nn.Module]) -> list[tuple[str, str]]:
    """The (layer, relu) pairs to fuse: found on `item` and proven exact there (all together, else those exact one
    by one, if they are exact together)."""
    pairs = find_relu_pairs(model, item, layers)
    if not pairs or fusion_is_exact(model, item, pairs):
        return pairs
    pairs = [p for p in pairs if fusion_is_exact(model, item, [p])]
    return pairs if pairs and fusion_is_exact(model, item, pairs) else []
