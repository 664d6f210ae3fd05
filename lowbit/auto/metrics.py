"""Output error metrics for automatic quantization: how far a model's outputs moved from the float model's.

Every metric is an *error* (0 = identical, lower is better), so a target is always `error <= target_error`:
  cosine       1 - the lowest cosine similarity of any output row (last dimension) to its float row
  cosine_mean  1 - the mean cosine similarity over rows
  snr          noise-to-signal power ratio sum|Δ|² / sum|y|² (= 10**(-SNR_dB/10); 0.001 is 30 dB)
  max_rel      MNN's relative max error: max|Δ| / max|y|
  a function   (ref_outputs, outputs) -> float, both lists (one entry per data item) of the selected outputs.
Outputs may be tensors, tuples/lists or dicts (nested); every floating tensor in them is compared. `select` picks
one part first: a dict key ("sentence_embedding"), a tuple index, or a function of the output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

BUILTIN = ("cosine", "cosine_mean", "snr", "max_rel")


def select_output(output, select):
    """The part of a model output the metric compares (all of it when select is None)."""
    if select is None:
        return output
    if callable(select):
        return select(output)
    if isinstance(output, torch.Tensor):
        raise ValueError(f"output={select!r} cannot pick from a tensor output; pass output=None (the default)")
    try:
        return output[select]
    except (KeyError, IndexError, TypeError) as e:
        keys = list(output) if isinstance(output, Mapping) else f"{type(output).__name__}"
        raise ValueError(f"output={select!r} is not part of the model's output ({keys}): {e}") from None


def float_leaves(output) -> list[torch.Tensor]:
    """Every floating tensor in a (nested) output, as float32 CPU tensors of shape (rows, last dim)."""
    if isinstance(output, torch.Tensor):
        if not output.is_floating_point():
            return []
        t = output.detach().float().cpu()
        return [t.reshape(1, -1) if t.dim() == 0 else t.reshape(-1, t.shape[-1])]
    if isinstance(output, Mapping):  # dict, or a Mapping such as transformers' BatchEncoding (sentence-transformers)
        return [t for v in output.values() for t in float_leaves(v)]
    if isinstance(output, (list, tuple)):
        return [t for v in output for t in float_leaves(v)]
    if hasattr(output, "to_tuple"):  # transformers ModelOutput
        return float_leaves(output.to_tuple())
    return []


def _pairs(ref: list, out: list):
    for r, o in zip(ref, out, strict=True):
        lr, lo = float_leaves(r), float_leaves(o)
        if len(lr) != len(lo) or not lr:
            raise ValueError(f"the metric needs floating tensors in the model output; got {len(lr)} in the float "
                             f"model's and {len(lo)} in the quantized model's (pick one part with output=)")
        yield from zip(lr, lo, strict=True)


def _cosine_rows(ref: list, out: list) -> torch.Tensor:
    rows = [torch.nn.functional.cosine_similarity(o.double(), r.double(), dim=-1, eps=1e-12) for r, o in
            _pairs(ref, out)]
    return torch.cat(rows)


def cosine_error(ref: list, out: list) -> float:
    return float(1.0 - _cosine_rows(ref, out).min())


def cosine_mean_error(ref: list, out: list) -> float:
    return float(1.0 - _cosine_rows(ref, out).mean())


def snr_error(ref: list, out: list) -> float:
    noise = signal = 0.0
    for r, o in _pairs(ref, out):
        noise += float((o.double() - r.double()).pow(2).sum())
        signal += float(r.double().pow(2).sum())
    return noise / signal if signal > 0 else (0.0 if noise == 0 else math.inf)


def max_rel_error(ref: list, out: list) -> float:
    delta = peak = 0.0
    for r, o in _pairs(ref, out):
        delta = max(delta, float((o - r).abs().max()))
        peak = max(peak, float(r.abs().max()))
    return delta / peak if peak > 0 else (0.0 if delta == 0 else math.inf)


_FUNCS = {"cosine": cosine_error, "cosine_mean": cosine_mean_error, "snr": snr_error, "max_rel": max_rel_error}


@dataclass(frozen=True)
class Metric:
    """A named error function over (reference outputs, outputs), each a list with one output per data item."""

    name: str
    fn: Callable[[list, list], float]

    def __call__(self, ref: list, out: list) -> float:
        value = float(self.fn(ref, out))
        if math.isnan(value):
            raise ValueError(f"metric {self.name!r} returned NaN (does the output hold NaN, or is it all zeros?)")
        return value

    def describe(self, error: float) -> str:
        """The error in the metric's usual terms (lowest cosine 0.99..., SNR in dB)."""
        if self.name == "cosine":
            return f"lowest cosine {1 - error:.5f}"
        if self.name == "cosine_mean":
            return f"mean cosine {1 - error:.5f}"
        if self.name == "snr":
            return f"SNR {-10 * math.log10(error):.1f} dB" if error > 0 else "SNR inf dB"
        return f"{self.name} {error:.5g}"


def as_metric(metric) -> Metric:
    """A Metric from a built-in name or a user function (ref_outputs, outputs) -> float (lower is better)."""
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str):
        if metric not in _FUNCS:
            raise ValueError(f"metric={metric!r} is unknown: use one of {', '.join(BUILTIN)} or a function "
                             "(ref_outputs, outputs) -> float")
        return Metric(metric, _FUNCS[metric])
    if callable(metric):
        name = f"{getattr(metric, '__module__', '')}.{getattr(metric, '__qualname__', type(metric).__name__)}"
        return Metric(name, metric)
    raise TypeError(f"metric must be a name ({', '.join(BUILTIN)}) or a function, got {type(metric).__name__}")
