"""Input statistics of Linear and Conv layers, gathered by forward pre-hooks, and their quantization.

A collector's `hook(args, kwargs)` sees each call of its layer; `quantize(cfg, name)` returns the layer's
`WeightResult`s. Conv inputs are unfolded (F.unfold after the layer's own padding) into K = C_in/groups · prod(kernel)
columns in the order the weight's (O, C_in/groups, *kernel) reshape uses, with one statistic per group.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..quant.config import QuantConfig
from ..quant.hessian import InputStats
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
