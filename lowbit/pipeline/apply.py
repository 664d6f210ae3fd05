"""Results in and out of the float model: quantized weights put in for a while, the float ones back after; the
data-free results of a layer; the walk's results gathered into packed weights and summary rows."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from ..nn import swap
from .registry import method_for
from .report import LayerError
from .weights import WeightResult, plain_config


class FloatWeights(list):
    """The (parameter, its float data) pairs replaced so far, oldest first; `restore()` puts them back newest first
    (a list, so helpers that take a list of saved pairs, such as AWQ's `scale_inputs`, append to it directly)."""

    def replace(self, p: torch.Tensor, data: torch.Tensor) -> None:
        """Give parameter p the data `data`, remembering its current data."""
        self.append((p, p.data))
        p.data = data

    def apply(self, module, results: list[WeightResult]) -> None:
        """Make the float module compute with its quantized (dequantized) weights."""
        for r in results:
            p = getattr(module, r.name.rpartition(".")[2])
            self.replace(p, r.qweight.dequantize(p.dtype).to(p.device))

    def restore(self) -> None:
        """Every replaced parameter back to its float data; the list is emptied."""
        with torch.no_grad():
            for p, data in reversed(self):
                p.data = data
        self.clear()

    @contextmanager
    def floats_back(self):
        """The float weights in place for the `with` body (the float model's targets), the current ones after."""
        current = [(p, p.data) for p, _ in self]
        for p, data in reversed(self):
            p.data = data
        try:
            yield
        finally:
            for p, data in current:
                p.data = data


@contextmanager
def quantized_in_place():
    """`with quantized_in_place() as floats:` — `floats.apply(module, results)` makes a layer compute with its
    quantized weights; on leaving (also on an error) every float weight is back."""
    floats = FloatWeights()
    try:
        yield floats
    finally:
        floats.restore()


def plain_results(module, cfg, name) -> list[WeightResult]:
    """The data-free results of one layer: every weight quantized with the method's `quantize_weight` (a data-aware
    config's data-free twin, `plain_config`); errors NaN (not measured)."""
    plain = plain_config(cfg)
    quantize_weight = method_for(plain.method).quantize_weight
    out = []
    for p in swap.quantized_param_names(module):
        qw = quantize_weight(getattr(module, p), plain, f"{name}.{p}")
        out.append(WeightResult(f"{name}.{p}" if name else p, qw, float("nan"), float("nan")))
    return out


def collect_weights(targets, results, summary) -> dict:
    """{full parameter name: QuantizedWeight} of every planned layer with results; each layer's record goes to the
    summary (swapped with its bytes, or skipped with the reason), with its per-weight errors and fall-backs."""
    weights = {}
    for name, (module, cfg, record) in targets.items():
        res = results.get(name)
        if res is None:
            record.reason = record.reason or "data-aware quantization failed (see the notes)"
            summary.skipped.append(record)
            continue
        for r in res:
            weights[r.name if name else r.name.rpartition(".")[2]] = r.qweight
            if r.fallback:
                summary.fallbacks[r.name] = r.fallback
            if r.error_before == r.error_before:  # not NaN: measured
                summary.errors.append(LayerError(r.name, r.qweight.method, r.error_before, r.error_after))
        names = swap.quantized_param_names(module)
        record.config = swap.describe_config(cfg) + (" +awq" if cfg.awq else "")
        record.bytes_before = sum(swap.tensor_nbytes(getattr(module, p)) for p in names)
        record.bytes_after = sum(r.qweight.nbytes for r in res)
        summary.swapped.append(record)
    return weights


__all__ = ["FloatWeights", "collect_weights", "plain_results", "quantized_in_place"]
