"""Layer input statistics for tuning, and the data-aware (GPTQ) candidates computed from them.

One pass over the data with `lowbit.pipeline.stats`'s collectors on the float model gives each layer's input statistics
(xtx = Σ xᵀx for Linear/Conv, the recurrence inputs for LSTM). From them:
  noise(name, delta): the layer-output noise ‖X Δᵀ‖² of a weight change on all tuning rows (Linear), the proxy the
      "anchors" sensitivity mode fits the model error to;
  weights(name, cfg): the layer's dequantized weights and packed bytes at `cfg`: data-free configs as
      `lowbit.quantize_weight`, GPTQ ones as `lowbit.quantize(..., calibration=, sequential=False)` computes them
      (the layer's float inputs: everything else float, which is what per-layer sensitivity measures).
GPTQ candidates are fitted on the "fit" items only (`fit_items`: every FIT_EVERY-th item, from the first) and all
candidates are measured on the others (`measured_items`), so a GPTQ error is never measured on the items it was fitted
to. A plan with GPTQ layers is applied with the same fit items and `sequential=False` (`AutoPlan.quantize` and
`lowbit convert --config`, via the config file's "gptq_fit" entry), so the applied model is the measured one.
"""

from __future__ import annotations

import torch
from torch import nn

from ..calib import CalibrationSet, run_pass
from ..pipeline.stats import LinearCollector, collector_for
from ..quant.config import QuantConfig
from ..quant.hessian import output_error_sq
from .fakequant import dequantized

FIT_EVERY = 2  # half the items fit GPTQ, half measure: both halves keep the data's variety; more fit items would
# leave fewer, noisier measurements, and GPTQ's Hessians are already well conditioned by half of MiniLM's 128 items


def fit_items(cal: CalibrationSet, every: int = FIT_EVERY) -> CalibrationSet:
    """The items GPTQ candidates are fitted on: item 0, every, 2*every, ..."""
    items = list(cal)
    return CalibrationSet(items[::every], f"{cal.source} (GPTQ fit: every {every}th item)")


def measured_items(cal: CalibrationSet, ref: list, every: int = FIT_EVERY) -> tuple[CalibrationSet, list]:
    """The other items and their reference outputs: what every candidate is measured on."""
    keep = [i for i in range(len(cal)) if i % every]
    items = list(cal)
    return CalibrationSet([items[i] for i in keep], f"{cal.source} (not GPTQ fit)"), [ref[i] for i in keep]


class LayerInputs:
    """Lazily collected float-model input statistics of `layers` ({name: weight param names}) over `data`.

    Nothing runs until a statistic or a data-aware candidate is first asked for; then one pass collects every layer.
    weights() keeps what it computed (data-aware ones are costly) until `forget(name)`.
    """

    def __init__(self, model: nn.Module, data, layers: dict[str, list[str]], progress: bool = True,
                 noise_data=None):
        self.model, self.data, self.layers, self.progress = model, data, layers, progress
        self.noise_data = noise_data  # the measured items, when GPTQ is fitted on others (`data`)
        self.modules = dict(model.named_modules())
        self._collectors: dict | None = None
        self._noise_collectors: dict | None = None
        self._memo: dict[tuple[str, str], tuple[dict, int]] = {}
        self.passes = 0

    def _pass(self, data) -> dict:
        cols = {n: collector_for(self.modules[n]) for n in self.layers}
        # the held-out split is lowbit.quantize's own, so a GPTQ candidate (and its fall-back to RTN/HQQ) is exactly
        # what applying the plan computes
        run_pass(self.model, data, {n: c.hook for n, c in cols.items()}, self.modules,
                 desc="lowbit auto: layer inputs", progress=self.progress,
                 held={n: c.held_hook for n, c in cols.items() if hasattr(c, "held_hook")})
        self.passes += 1
        return cols

    def _collect(self) -> dict:
        if self._collectors is None:
            self._collectors = self._pass(self.data)
        return self._collectors

    def _noise_stats(self) -> dict:
        """The noise proxy's statistics come from the measured items: GPTQ minimises the noise on its fit items,
        so noise there would understate its error on the items the anchors are measured on."""
        if self.noise_data is None:
            return self._collect()
        if self._noise_collectors is None:
            self._noise_collectors = self._pass(self.noise_data)
        return self._noise_collectors

    def noise(self, name: str, deltas: dict[str, torch.Tensor]) -> float | None:
        """‖X Δᵀ‖² summed over the measured rows for a Linear layer's weight change; None for other layers."""
        col = self._noise_stats()[name]
        if not isinstance(col, LinearCollector) or set(deltas) != {"weight"}:
            return None
        xtx = col.stats.xtx + col.held.xtx  # every measured row
        return float(output_error_sq(deltas["weight"].reshape(deltas["weight"].shape[0], -1), xtx).sum())

    def weights(self, name: str, cfg: QuantConfig) -> tuple[dict[str, torch.Tensor], int]:
        """({param: dequantized weight}, packed bytes) of layer `name` at `cfg` (ValueError if it cannot take it)."""
        key = (name, cfg)  # a frozen config: equal fields, equal key (as sensitivity's candidate_key)
        if key not in self._memo:
            module, params = self.modules[name], self.layers[name]
            if not cfg.data_aware or cfg.is_float:
                self._memo[key] = dequantized(module, params, cfg, name)
            else:
                results = self._collect()[name].quantize(cfg, name, sequential=False)
                ws = {r.name.rpartition(".")[2]: r.qweight.dequantize(getattr(module, r.name.rpartition(".")[2])
                                                                      .dtype) for r in results}
                self._memo[key] = ws, sum(r.qweight.nbytes for r in results)
        return self._memo[key]

    def forget(self, name: str) -> None:
        """Drop the memoised weights of one layer (the sensitivity pass is done with it)."""
        for key in [k for k in self._memo if k[0] == name]:
            del self._memo[key]
