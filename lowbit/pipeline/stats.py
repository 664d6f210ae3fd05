"""Per-layer input statistics, gathered by forward pre-hooks, and the call-order grouping of the data-aware walks.

A collector's `hook(args, kwargs)` sees each call of its layer; `quantize(cfg, name)` returns the layer's
`WeightResult`s. Conv inputs are unfolded (F.unfold after the layer's own padding) into K = C_in/groups · prod(kernel)
columns in the order the weight's (O, C_in/groups, *kernel) reshape uses, with one statistic per group; an LSTM's
collector is `lowbit.pipeline.lstm.LSTMCollector`. `collector_for(module)` picks the collector of a layer.

`group_by_call_order`: layers are quantized group by group in the order the model first calls them; consecutive
layers that read one tensor (q/k/v after a norm, gate/up) share a group, so one pass collects their statistics
together (used by the sequential walk, recon's blocks and the decoder pipeline).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..quant.config import QuantConfig
from ..quant.hessian import InputStats
from .lstm import LSTMCollector
from .weights import WeightResult, quantize_param


def first_input(args: tuple, kwargs: dict) -> torch.Tensor:
    """The layer's input tensor (first positional argument, or the `input` keyword)."""
    x = args[0] if args else kwargs.get("input")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a tensor input, got {type(x).__name__}")
    return x


class LinearCollector:
    """xtx of a Linear layer's inputs (any leading dims flattened to rows)."""

    def __init__(self, module: nn.Linear):
        self.module = module
        self.stats = InputStats(module.in_features, module.weight.device)
        self.held = InputStats(module.in_features, module.weight.device)  # held-out inputs (run_pass's held)

    def hook(self, args: tuple, kwargs: dict) -> None:
        x = first_input(args, kwargs)
        self.stats.add(x.reshape(-1, x.shape[-1]))  # (..., K) -> (M, K)

    def held_hook(self, args: tuple, kwargs: dict) -> None:
        x = first_input(args, kwargs)
        self.held.add(x.reshape(-1, x.shape[-1]))

    @property
    def count(self) -> int:
        return self.stats.count

    def input_stats(self) -> list[InputStats]:
        return [self.stats]

    def quantize(self, cfg: QuantConfig, name: str, sequential: bool = True) -> list[WeightResult]:
        return [quantize_param(self.module.weight, [self.stats.xtx], cfg, f"{name}.weight", [self.held.xtx],
                               self.stats.count + self.held.count)]


def conv_columns(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Unfolded conv input (M, C_in · prod(kernel)), channel-major as the weight's flattening."""
    dims = conv.weight.dim() - 2
    if x.dim() == dims + 1:  # unbatched
        x = x.unsqueeze(0)
    mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
    pad = conv._reversed_padding_repeated_twice  # nn.Conv's own padding, also for padding="same"
    if any(pad):
        x = F.pad(x, pad, mode=mode)
    kernel, dilation, stride = conv.kernel_size, conv.dilation, conv.stride
    if dims == 1:  # (B, C, L) -> (B, C, 1, L): a conv of height 1
        x, kernel, dilation, stride = x.unsqueeze(2), (1, *kernel), (1, *dilation), (1, *stride)
    cols = F.unfold(x, kernel, dilation=dilation, stride=stride)  # (B, C*kh*kw, L)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])  # (B*L, C*kh*kw)


class ConvCollector:
    """One xtx per group of a Conv1d/Conv2d's unfolded inputs."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.k = module.weight[0].numel()  # C_in/groups * prod(kernel)
        self.stats = [InputStats(self.k, module.weight.device) for _ in range(module.groups)]
        self.held = [InputStats(self.k, module.weight.device) for _ in range(module.groups)]

    def hook(self, args: tuple, kwargs: dict, into: list[InputStats] | None = None) -> None:
        cols = conv_columns(self.module, first_input(args, kwargs))
        for g, stats in enumerate(into or self.stats):
            stats.add(cols[:, g * self.k:(g + 1) * self.k])

    def held_hook(self, args: tuple, kwargs: dict) -> None:
        self.hook(args, kwargs, self.held)

    @property
    def count(self) -> int:
        return self.stats[0].count

    def input_stats(self) -> list[InputStats]:
        return self.stats

    def quantize(self, cfg: QuantConfig, name: str, sequential: bool = True) -> list[WeightResult]:
        return [quantize_param(self.module.weight, [s.xtx for s in self.stats], cfg, f"{name}.weight",
                               [s.xtx for s in self.held], self.stats[0].count + self.held[0].count)]


def collector_for(module: nn.Module):
    """The statistics collector of one layer: LSTM, Conv1d/Conv2d, else Linear."""
    if isinstance(module, nn.LSTM):
        return LSTMCollector(module)
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return ConvCollector(module)
    return LinearCollector(module)


def group_by_call_order(calls: Iterable[tuple[str, int]], layers: Sequence[str], alone: Collection[str] = (),
                        uncalled_alone: bool = False, repeats_set_last: bool = False) -> list[list[str]]:
    """calls: (layer name, key of the tensor it read) in call order, repeats allowed; layers: every layer to place.

    Returns groups in first-call order; a layer joins the previous group when it read the same tensor as the layer
    called just before it, unless it is in `alone` (LSTMs: their statistics are collected per call). "Just before":
    the previous first call, or with `repeats_set_last` the previous call of any layer (recon's blocks). Layers never
    called form one last group, or one group each with `uncalled_alone` (recon's blocks)."""
    groups: list[list[str]] = []
    last, seen = None, set()
    for name, key in calls:
        if name in seen:
            if repeats_set_last:
                last = key
            continue
        seen.add(name)
        if groups and key == last and name not in alone:
            groups[-1].append(name)
        else:
            groups.append([name])
        last = key
    rest = [n for n in layers if n not in seen]
    if uncalled_alone:
        return groups + [[n] for n in rest]
    return groups + ([rest] if rest else [])
