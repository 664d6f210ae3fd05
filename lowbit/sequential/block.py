"""One decoder block quantized against the calibration activations that reach it.

The block's Linear layers are grouped as `lowbit.quantize` groups a whole model's: in the order they run, layers
reading the same input tensor (q/k/v, gate/up) together. Per group, one pass over the items gathers each layer's
input Hessian Σ xᵀx from the real tokens only (rows of padding, where the item's attention_mask is 0, are left
out), stopping as soon as they are gathered (at the group's shared input, before its products, when each layer
runs once per item); the group is quantized (`quantize_param`: GPTQ, or plain
RTN/HQQ) and its dequantized weights replace the float ones, so later groups see what the quantized block computes.
This is the same procedure as whole-model sequential GPTQ, restricted to one block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..calib.capture import HOLD_EVERY
from ..methods import method_for  # noqa: F401  (registers the methods quantize_param looks up)
from ..methods.awq import fold_from_stats, fold_groups
from ..nn import swap
from ..pipeline.stats import group_by_call_order
from ..pipeline.weights import WeightResult, quantize_param
from ..quant.config import QuantConfig, QuantMethod
from ..quant.hessian import InputStats
from .activations import ActivationStore, BlockCall


class _Done(Exception):
    """Raised after a group's last layer ran: the rest of the block is not needed for its statistics."""


def block_linears(block: nn.Module, prefix: str, skip, min_weights: int) -> dict[str, nn.Linear]:
    """{name inside the block: Linear} of the layers to quantize (lowbit.quantize's choice: skip, min_weights)."""
    modules = dict(block.named_modules())
    out = {}
    for name, m in modules.items():
        if not isinstance(m, nn.Linear) or swap.quant_class(m) is None:
            continue
        parent = modules.get(name.rpartition(".")[0])
        if swap.why_float(prefix + name, m, parent, list(skip), min_weights, m.weight.numel()) is None:
            out[name] = m
    return out


def call_block(block: nn.Module, hidden, call: BlockCall):
    out = block(hidden, *call.args, **call.kwargs)
    return out[0] if isinstance(out, tuple) else out


def layer_groups(block, linears: dict[str, nn.Linear], hidden, call: BlockCall) -> tuple[list[list[str]], bool]:
    """(groups, called once): the linears in the order they run on one item, consecutive ones reading one tensor
    forming a group, and whether each of them ran exactly once (then a group's statistics pass can stop at its first
    layer's input: the others read that same tensor)."""
    order: list[tuple[str, int]] = []
    keep = []  # the inputs themselves: a dead tensor's id is soon another's, which would join unrelated layers

    def record(name):
        def hook(_m, args):
            keep.append(args[0])
            order.append((name, id(args[0])))
        return hook

    handles = [m.register_forward_pre_hook(record(n)) for n, m in linears.items()]
    try:
        call_block(block, hidden, call)
    finally:
        for h in handles:
            h.remove()
    names = [n for n, _ in order]
    once = len(names) == len(set(names)) == len(linears)
    return group_by_call_order(order, list(linears)), once


def add_split(x: torch.Tensor, item: int, by_items: bool, fit: InputStats, held: InputStats) -> None:
    """Add the real-token rows x (M, K) of calibration item number `item` to `fit`, or to `held` as
    `lowbit.quantize` holds out (lowbit.calib.capture.run_pass): the whole item when by_items (one in HOLD_EVERY),
    else one row in HOLD_EVERY of it."""
    if by_items:
        (held if item % HOLD_EVERY == HOLD_EVERY - 1 else fit).add(x)
        return
    out = torch.zeros(x.shape[0], dtype=torch.bool)
    out[HOLD_EVERY - 1::HOLD_EVERY] = True
    fit.add(x[~out])
    if out.any():
        held.add(x[out])


def gather_stats(block, linears, group, store: ActivationStore, calls: list[BlockCall], dtype,
                 shared_input: bool = False) -> tuple[dict[str, InputStats], dict[str, InputStats]]:
    """(fit, held) Σ xᵀx of each group layer's inputs, padding rows left out, held out as `lowbit.quantize` does
    (lowbit.calib.capture.run_pass): one item in HOLD_EVERY, or with fewer items one row in HOLD_EVERY of each.
    Layers called on the very same input tensor (q/k/v, gate/up) share one pair of statistics objects: their
    Hessian is computed once. shared_input: every group layer reads one tensor and runs once per item (a group of
    `layer_groups` whose layers ran once): each item's pass stops at the first layer's input, before any of the
    group's products is computed."""
    stats = {n: InputStats(linears[n].in_features) for n in group}
    held = {n: InputStats(linears[n].in_features) for n in group}
    rows, index, alias, seen = [None], [0], {}, {}
    by_items = len(calls) >= HOLD_EVERY

    def add(name):
        def hook(_m, args):
            first = seen.get(id(args[0]))
            if first is not None and first[0] is args[0]:  # the same tensor another group layer read this item
                alias[name] = first[1]
                return
            seen[id(args[0])] = (args[0], name)  # kept alive until the item ends: its id can't be reused
            x = args[0].reshape(-1, args[0].shape[-1])
            add_split(x if rows[0] is None else x[rows[0]], index[0], by_items, stats[name], held[name])
            if shared_input:
                raise _Done
        return hook

    def done(_m, _args, _out):
        owners = {alias.get(n, n) for n in group}
        if all(stats[n].count + held[n].count for n in owners):
            raise _Done

    if shared_input:
        alias.update(dict.fromkeys(group[1:], group[0]))
        handles = [linears[group[0]].register_forward_pre_hook(add(group[0]))]
    else:
        handles = [linears[n].register_forward_pre_hook(add(n)) for n in group]
        handles.append(linears[group[-1]].register_forward_hook(done))
    try:
        for i, call in enumerate(calls):
            rows[0], index[0] = call.rows, i
            seen.clear()
            try:
                call_block(block, store.get(i, dtype), call)
            except _Done:
                pass
    finally:
        seen.clear()
        for h in handles:
            h.remove()
    for name, owner in alias.items():
        stats[name], held[name] = stats[owner], held[owner]
    return stats, held


@dataclass
class _Stats:
    """What `fold_from_stats` reads of a collector: the fitted and held-out input statistics."""

    stats: InputStats
    held: InputStats


def fold_awq_scales(block: nn.Module, linears: dict[str, nn.Linear], store: ActivationStore,
                    calls: list[BlockCall], cfg: QuantConfig) -> dict:
    """AWQ inside one block, before any of its layers is quantized: for each declared fold group (q/k/v into the
    input norm, o_proj into v_proj, gate/up into the post-attention norm, down_proj into up_proj;
    `lowbit.methods.awq.FOLD_PATTERNS`) search the channel scales on the inputs that reach the block, padding left
    out, and fold them into the producer, as `lowbit.quantize` does on a whole model. Layers no group folds get only
    AWQ's clipping search (no input-scale vector: the decoder output has no place for one). Returns
    {consumer: (producer, error ratio)}."""
    modules = dict(block.named_modules())
    groups = fold_groups(modules, list(linears), None)
    if not groups:
        return {}
    first = [g.consumers[0] for g in groups]
    stats, held = gather_stats(block, linears, first, store, calls, next(block.parameters()).dtype)
    collectors = {n: _Stats(stats[n], held[n]) for n in first}
    return fold_from_stats(modules, collectors, groups, {n: cfg for g in groups for n in g.consumers})


def uses_awq(cfg: QuantConfig) -> bool:
    """AWQ's scale search runs: method awq, or another method with awq=True."""
    return cfg.method is QuantMethod.AWQ or cfg.awq


def quantize_block(block: nn.Module, prefix: str, store: ActivationStore, calls: list[BlockCall], cfg: QuantConfig,
                   skip=(), min_weights: int = 1024) -> list[WeightResult]:
    """Quantize the block's Linears in place (their weights become the dequantized ones); returns their results
    named `prefix + name + '.weight'`. With AWQ the scales are folded first (`fold_awq_scales`), which changes the
    producers' float weights (norm gains, v_proj and up_proj rows) too."""
    linears = block_linears(block, prefix, skip, min_weights)
    dtype = next(block.parameters()).dtype
    results = []
    if not linears:
        return results
    if cfg.data_aware and uses_awq(cfg):
        fold_awq_scales(block, linears, store, calls, cfg)
    groups, once = layer_groups(block, linears, store.get(0, dtype), calls[0]) if cfg.data_aware \
        else ([list(linears)], False)
    for group in groups:
        stats, held = gather_stats(block, linears, group, store, calls, dtype, once) if cfg.data_aware else ({}, {})
        for name in group:
            w = linears[name].weight
            if cfg.data_aware:  # never worse than RTN/HQQ on the held-out rows, as lowbit.quantize
                fit, held_out, rows, last = take_statistics(stats, held, name)
                r = quantize_param(w.data, fit, cfg, f"{prefix}{name}.weight", held=held_out, rows=rows,
                                   consume=last)
            else:
                r = _plain(w.data, cfg, f"{prefix}{name}.weight")
            results.append(r)
            w.data = r.qweight.dequantize(w.dtype)
    return results


def take_statistics(stats: dict[str, InputStats], held: dict[str, InputStats], name: str):
    """Layer `name`'s statistics for `quantize_param`, taken out of the dicts: ([fit xtx], [held xtx] or None,
    their row count, last). `last`: no other layer shares them, so the lists are the only references left and
    quantize_param may consume them (the down_proj phase is a 1B model's peak: 127 MB per K = 5632 matrix)."""
    fit, out = stats.pop(name), held.pop(name)
    last = not any(s is fit for s in stats.values())
    return [fit.xtx], [out.xtx] if out.count else None, fit.count + out.count, last


def _plain(w, cfg, name) -> WeightResult:
    from ..quant.quantize import quantize_weight

    return WeightResult(name, quantize_weight(w, cfg, name), float("nan"), float("nan"))
