"""The layer plan: which layers a quantization walk quantizes, each with its config and summary record.

The selection itself is `lowbit.nn.swap.select_layers` (the one selection, also used by `lowbit.nn.quantize`);
this module gives it the shape the walks, `lowbit auto` and the API use.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

from ..nn import swap
from ..quant.config import QuantConfig


class LayerPlan(NamedTuple):
    """One layer to quantize: the float module, its config (overrides applied) and its summary record."""

    module: nn.Module
    cfg: QuantConfig
    record: swap.LayerRecord


def plan_layers(model: nn.Module, cfg: QuantConfig, overrides: dict, skip: list[str], min_weights: int,
                summary) -> dict[str, LayerPlan]:
    """{layer name: LayerPlan} for the layers to quantize, in module order; the ones kept float go to
    `summary.skipped` with their reason. skip/overrides: checked (`swap.check_patterns`)."""
    targets = {}
    for name, module, record in swap.select_layers(model, skip, min_weights):
        if record.reason:
            summary.skipped.append(record)
        else:
            targets[name] = LayerPlan(module, swap.config_for(name, cfg, overrides), record)
    return targets


def quantizable_layers(model: nn.Module, skip=(), min_weights: int = 1024) -> dict[str, list[str]]:
    """{module name: its weight parameter names} of the layers `lowbit.quantize` would swap."""
    skip, _ = swap.check_patterns(skip, None)
    return {name: swap.quantized_param_names(module) for name, module, record in
            swap.select_layers(model, skip, min_weights) if not record.reason}


__all__ = ["LayerPlan", "plan_layers", "quantizable_layers"]
