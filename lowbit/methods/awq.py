"""Activation-aware channel scales folded into the layer that produces the inputs of one or more Linears.

For a producer whose output channel c reaches each consumer's input channel c only through operations that
commute with a per-channel scale (attention's weighted sums over positions, reshapes into heads, the product
act(gate)·up), the consumers' weight columns are multiplied by s and the producer's output channel divided by s
(a Linear's weight row and bias; a LayerNorm / RMSNorm's weight and bias): the float model computes exactly the same
function and the consumers are then quantized as W·diag(s). Consumers reading one producer share one s, searched
on their stacked rows. Groups come from a declared pattern list for the bundled and common architectures, or from
the caller (`awq_fold={consumer: producer}`). A Linear without a foldable producer gets its own s too, stored on the
quantized layer as the vector `weight_input_scale` (inputs divided by it before the kernel; checkpoint format 3).
While it is quantized, the float layer computes (x / s) · (W·diag(s))ᵀ (`scale_inputs`), so calibration statistics
are those of the inputs the quantized weight will see.
Conv1d / Conv2d (grouped too; not depthwise, see `vector_layers`): a vector only (never folded), one s per input
channel searched on the unfolded inputs (each channel's s repeated over its kernel positions, the error summed over
the groups); the float conv computes conv(x / s, W·s) while it is quantized (padding commutes with the channel-wise
division).
LSTM: the clipping search only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..calib.capture import run_pass
from ..nn.swap import INPUT_SCALE_LAYERS
from ..pipeline.checks import degenerate, held_out_worse
from ..pipeline.stats import ConvCollector, LinearCollector
from ..quant.awq import channel_scale, divide_channels, scaled_error, search_channel_scales, search_scales

# (producer name suffix, consumer name suffixes): the producer's outputs reach the consumers only through ops that
# commute with a per-channel scale.
FOLD_PATTERNS = (
    (".attention.self.value", (".attention.output.dense",)),  # BERT / MiniLM: context = softmax(QKᵀ) V
    (".self_attn.v_proj", (".self_attn.o_proj",)),  # Llama-style attention
    (".mlp.up_proj", (".mlp.down_proj",)),  # SwiGLU: act(gate(x)) * up(x)
    (".input_layernorm", (".self_attn.q_proj", ".self_attn.k_proj", ".self_attn.v_proj")),  # pre-norm blocks
    (".post_attention_layernorm", (".mlp.gate_proj", ".mlp.up_proj")),
)


@dataclass
class FoldGroup:
    """Consumers (Linear names) whose shared input is the producer's output."""

    producer: str
    consumers: tuple[str, ...]


def _is_norm(m: nn.Module, k: int) -> bool:
    w = getattr(m, "weight", None)
    norm_like = isinstance(m, nn.LayerNorm) or type(m).__name__.endswith(("LayerNorm", "RMSNorm"))
    return norm_like and isinstance(w, torch.Tensor) and tuple(w.shape) == (k,)


def _foldable(modules: dict, producer: str, consumers: tuple[str, ...]) -> bool:
    cons = [modules.get(c) for c in consumers]
    if not all(isinstance(c, nn.Linear) for c in cons) or len({c.in_features for c in cons}) != 1:
        return False
    prod, k = modules.get(producer), cons[0].in_features
    return (isinstance(prod, nn.Linear) and prod.out_features == k) or (prod is not None and _is_norm(prod, k))


def fold_groups(modules: dict[str, nn.Module], awq_layers: list[str], extra: dict | None = None) -> list[FoldGroup]:
    """The fold groups among `awq_layers` (layers quantized with AWQ): declared patterns, then `extra` pairs."""
    wanted, groups, taken = set(awq_layers), [], set()
    for name in modules:
        dotted = "." + name
        for prod_sfx, cons_sfxs in FOLD_PATTERNS:
            if not dotted.endswith(prod_sfx):
                continue
            prefix = dotted[: -len(prod_sfx)]
            consumers = tuple((prefix + c)[1:] for c in cons_sfxs)
            if set(consumers) <= wanted and not set(consumers) & taken and _foldable(modules, name, consumers):
                groups.append(FoldGroup(name, consumers))
                taken |= set(consumers)
    for consumer, producer in (extra or {}).items():
        if consumer in taken or consumer not in wanted:
            continue
        if not _foldable(modules, producer, (consumer,)):
            raise ValueError(f"awq_fold: cannot fold {consumer!r} into {producer!r}: the consumer must be an "
                             "nn.Linear quantized with AWQ and the producer an nn.Linear (out_features = the "
                             "consumer's in_features) or a LayerNorm/RMSNorm of that width")
        groups.append(FoldGroup(producer, (consumer,)))
    return groups


@torch.no_grad()
def _fold(producer: nn.Module, consumers: list[nn.Linear], s: torch.Tensor) -> None:
    for c in consumers:
        c.weight.mul_(s.to(c.weight.dtype))  # columns: W · diag(s)
    w = producer.weight
    w.div_(s.to(w.dtype).unsqueeze(1) if w.dim() == 2 else s.to(w.dtype))  # Linear rows, or the norm's gain
    if getattr(producer, "bias", None) is not None:
        producer.bias.div_(s.to(producer.bias.dtype))


def fold_scales(model: nn.Module, calibration, groups: list[FoldGroup], cfgs: dict, progress: bool = True) -> dict:
    """Search and fold each group's scales on float inputs (one pass); {consumer: (producer, error ratio)}."""
    return awq_scales(model, calibration, groups, [], cfgs, progress)[0]


def vector_layers(modules: dict[str, nn.Module], awq_layers: list[str], groups: list[FoldGroup]) -> list[str]:
    """AWQ layers that no group folds and that can hold an input-scale vector (Linear, Conv1d, Conv2d). Not a conv
    whose rows each read one input channel (depthwise): there s only rescales whole rows, which each block's own
    scale absorbs, so a vector would cost a divide per forward for no gain."""
    folded = {c for g in groups for c in g.consumers}
    return [n for n in awq_layers if n not in folded and isinstance(modules[n], INPUT_SCALE_LAYERS)
            and not (modules[n].weight.dim() > 2 and modules[n].weight.shape[1] == 1)]


def awq_scales(model: nn.Module, calibration, groups: list[FoldGroup], vectors: list[str], cfgs: dict,
               progress: bool = True) -> tuple[dict, dict]:
    """One pass on float inputs: fold each group's scales, and search a scale vector for each layer of `vectors`.

    Returns ({consumer: (producer, error ratio)}, {layer: (s float32 (input channels,), error ratio)}); a layer
    whose best s is 1 (plain rounding wins) gets no vector.
    """
    if not groups and not vectors:
        return {}, {}
    modules = dict(model.named_modules())
    collectors = {n: _collector(modules[n]) for n in [g.consumers[0] for g in groups] + list(vectors)}
    run_pass(model, calibration, {n: c.hook for n, c in collectors.items()}, modules, desc="awq scales",
             progress=progress, held={n: c.held_hook for n, c in collectors.items()})
    return fold_from_stats(modules, collectors, groups, cfgs), _vectors(modules, collectors, vectors, cfgs)


def _collector(module: nn.Module):
    return ConvCollector(module) if isinstance(module, (nn.Conv1d, nn.Conv2d)) else LinearCollector(module)


def _search(module: nn.Module, collector, cfg) -> tuple[torch.Tensor, float, float]:
    """(s, plain-rounding error², best error²) for one layer from its collected input statistics."""
    w = module.weight.detach()
    if isinstance(collector, ConvCollector):
        stats = collector.input_stats()
        return search_channel_scales(w, [st.xtx for st in stats], [st.abs_mean for st in stats], cfg)
    return search_scales(w, collector.stats.xtx, collector.stats.abs_mean, cfg)


def _untrusted(w: torch.Tensor, s: torch.Tensor, collector, cfg) -> bool:
    """True when the searched scales s must not be used (lowbit.pipeline.checks): the layer's inputs are degenerate,
    or s gives a larger output error than plain rounding on the held-out inputs."""
    fit = collector.stats if isinstance(collector.stats, list) else [collector.stats]
    held = collector.held if isinstance(collector.held, list) else [collector.held]
    if degenerate([f.xtx + h.xtx for f, h in zip(fit, held, strict=True)], fit[0].count + held[0].count):
        return True
    if held[0].count == 0:
        return False
    xtxs = [h.xtx for h in held]
    return held_out_worse(scaled_error(w, s, xtxs, cfg), scaled_error(w, torch.ones_like(s), xtxs, cfg))


def _vectors(modules, collectors, names, cfgs) -> dict:
    out = {}
    for name in names:
        if collectors[name].count == 0:
            continue
        s, base, best = _search(modules[name], collectors[name], cfgs[name])
        if best < base and not _untrusted(modules[name].weight.detach(), s, collectors[name], cfgs[name]):
            out[name] = (s.float(), (best / base) ** 0.5)
    return out


def scale_inputs(module: nn.Module, s: torch.Tensor, saved: list) -> torch.utils.hooks.RemovableHandle:
    """Make the float layer compute its function on x / s with the weight multiplied by s along its input channels
    (a Linear: (x / s) · (W·diag(s))ᵀ; a conv: conv(x / s, W·s), per group): the same function, with the weight to
    quantize and the inputs its collector must see. The old weight goes to `saved` (restored by the caller); returns
    the hook."""
    w = module.weight
    saved.append((w, w.data))
    mult = channel_scale(s.double().to(w.device), w.shape, getattr(module, "groups", 1))
    w.data = (w.data.double() * mult).to(w.dtype)
    spatial = w.dim() - 2  # a conv's input is (B, C, *spatial) or (C, *spatial); a Linear's (..., K)

    def divide(_module, args, kwargs):
        if args:
            return (divide_channels(args[0], s, spatial), *args[1:]), kwargs
        return args, {**kwargs, "input": divide_channels(kwargs["input"], s, spatial)}

    return module.register_forward_pre_hook(divide, with_kwargs=True)


def fold_from_stats(modules: dict[str, nn.Module], collectors: dict, groups: list[FoldGroup], cfgs: dict) -> dict:
    """Search and fold each group's scales from the statistics already collected for its first consumer
    (`collectors[name].stats` / `.held`, as a LinearCollector has them); a group whose scales the held-out check
    does not trust, or whose consumer saw no input, stays as it is. Returns {consumer: (producer, error ratio)}."""
    folded = {}
    for g in groups:
        stats = collectors[g.consumers[0]].stats
        if stats.count == 0:
            continue
        cons = [modules[c] for c in g.consumers]
        w = torch.cat([c.weight.detach() for c in cons])  # consumers share the input: one s for their stacked rows
        s, base, best = search_scales(w, stats.xtx, stats.abs_mean, cfgs[g.consumers[0]])
        if _untrusted(w, s, collectors[g.consumers[0]], cfgs[g.consumers[0]]):
            continue  # no fold: the consumers are quantized as they are
        _fold(modules[g.producer], cons, s)
        for c in g.consumers:
            folded[c] = (g.producer, (best / base) ** 0.5 if base > 0 else 1.0)
    return folded
