"""Folding eval-mode BatchNorm into the convolution (or Linear) that feeds it, as MNN's converter does.

Pairs are found on one calibration item: a BatchNorm whose input is the very tensor a Conv1d/Conv2d/Linear returned
(each called once per forward). The layer's output must feed only that BatchNorm (the usual conv -> bn -> act);
folding rewrites w' = w * g, b' = (b - mean) * g + beta with g = gamma / sqrt(var + eps), and the BatchNorm becomes
nn.Identity. `fold_structure` repeats the module changes without values, so a float model takes a folded checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn

from ..calib import Item
from .pairs import direct_pairs

_PRODUCERS = (nn.Conv1d, nn.Conv2d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def find_bn_pairs(model: nn.Module, item: Item) -> list[tuple[str, str]]:
    """[(layer name, batchnorm name)] for every BatchNorm fed directly by a conv/linear on this item."""
    named = dict(model.named_modules())
    producers = {n: m for n, m in named.items() if n and isinstance(m, _PRODUCERS)}
    norms = {n: m for n, m in named.items() if n and isinstance(m, _NORMS)}
    return [(p, b) for p, b in direct_pairs(model, item, producers, norms)
            if named[b].num_features == named[p].weight.shape[0]]


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    parent._modules[child] = new


def fold_pair(model: nn.Module, layer_name: str, bn_name: str) -> None:
    """Fold BatchNorm `bn_name` into `layer_name` (values), then replace the BatchNorm by nn.Identity."""
    layer, bn = model.get_submodule(layer_name), model.get_submodule(bn_name)
    if bn.training:
        raise ValueError(f"BatchNorm {bn_name!r} is in training mode; call model.eval() before quantize_static")
    with torch.no_grad():
        w = layer.weight.detach().to(torch.float64)
        var, mean = bn.running_var.to(torch.float64), bn.running_mean.to(torch.float64)
        gamma = bn.weight.to(torch.float64) if bn.weight is not None else torch.ones_like(var)
        beta = bn.bias.to(torch.float64) if bn.bias is not None else torch.zeros_like(var)
        g = gamma / torch.sqrt(var + bn.eps)
        b = layer.bias.detach().to(torch.float64) if layer.bias is not None else torch.zeros_like(mean)
        new_w = w * g.reshape(-1, *([1] * (w.dim() - 1)))
        new_b = (b - mean) * g + beta
        # new Parameter objects, never writes into the old ones: a failed quantize_static puts the old ones back
        dtype = layer.weight.dtype
        layer.weight = nn.Parameter(new_w.to(dtype), requires_grad=layer.weight.requires_grad)
        bias_dtype = dtype if layer.bias is None else layer.bias.dtype
        layer.bias = nn.Parameter(new_b.to(bias_dtype), requires_grad=False)
    _replace(model, bn_name, nn.Identity())


def fold_batchnorm(model: nn.Module, item: Item) -> list[tuple[str, str]]:
    """Find and fold every conv/linear -> BatchNorm pair; returns the folded pairs."""
    pairs = find_bn_pairs(model, item)
    for layer_name, bn_name in pairs:
        fold_pair(model, layer_name, bn_name)
    return pairs


def fold_structure(model: nn.Module, pairs: list) -> None:
    """The module changes of folding without values: BatchNorm -> Identity, a (zero) bias where the layer had none."""
    named = dict(model.named_modules())
    for pair in pairs:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise ValueError(f"bad folded BatchNorm pair {pair!r} in the checkpoint's static metadata")
        layer_name, bn_name = pair
        layer, bn = named.get(layer_name), named.get(bn_name)
        if not isinstance(layer, _PRODUCERS) or not isinstance(bn, _NORMS):
            raise ValueError(f"the checkpoint folds BatchNorm {bn_name!r} into {layer_name!r}, but the model has "
                             f"{type(layer).__name__} and {type(bn).__name__} there (wrong model?)")
        if layer.bias is None:
            layer.bias = nn.Parameter(torch.zeros(layer.weight.shape[0], dtype=layer.weight.dtype,
                                                  device=layer.weight.device), requires_grad=False)
        _replace(model, bn_name, nn.Identity())
