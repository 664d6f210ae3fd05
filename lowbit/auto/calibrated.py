"""Layer input statistics for tuning, and the data-aware (GPTQ) candidates computed from them.

One pass over the data with `lowbit.dataaware`'s collectors on the float model gives each layer's input statistics
(xtx = Σ xᵀx for Linear/Conv, the recurrence inputs for LSTM). From them:
  noise(name, delta): the layer-output noise ‖X Δᵀ‖² of a weight change on all tuning rows (Linear), the proxy the
      "anchors" sensitivity mode fits the model error to;
  weights(name, cfg): the layer's dequantized weights and packed bytes at `cfg`: data-free configs as
      `lowbit.quantize_weight`, GPTQ ones as `lowbit.quantize(..., calibration=, sequential=False)` computes them
      (the layer's float inputs: everything else float, which is what per-layer sensitivity measures).
A plan with GPTQ layers is therefore applied with the same calibration data and `sequential=False`
(`AutoPlan.quantize`), so the applied model is the measured one.
"""

from __future__ import annotations

import torch
from torch import nn

from ..calib import run_pass
from ..dataaware.layers import LinearCollector
from ..dataaware.quantize import collector_for
from ..quant.config import QuantConfig
from ..quant.hessian import output_error_sq
from .fakequant import dequantized


class LayerInputs:
    """Lazily collected float-model input statistics of `layers` ({name: weight param names}) over `data`.

    Nothing runs until a statistic or a data-aware candidate is first asked for; then one pass collects every layer.
    weights() keeps what it computed (data-aware ones are costly) until `forget(name)`.
    """

    def __init__(self, model: nn.Module, data, layers: dict[str, list[str]], progress: bool = True):
        self.model, self.data, self.layers, self.progress = model, data, layers, progress
        self.modules = dict(model.named_modules())
        self._collectors: dict | None = None
        self._memo: dict[tuple[str, str], tuple[dict, int]] = {}
        self.passes = 0

    def _collect(self) -> dict:
        if self._collectors is None:
            cols = {n: collector_for(self.modules[n]) for n in self.layers}
            run_pass(self.model, self.data, {n: c.hook for n, c in cols.items()}, self.modules,
                     desc="lowbit auto: layer inputs", progress=self.progress)
            self._collectors, self.passes = cols, self.passes + 1
        return self._collectors

    def noise(self, name: str, deltas: dict[str, torch.Tensor]) -> float | None:
        """‖X Δᵀ‖² summed over all tuning rows for a Linear layer's weight change; None for other layers."""
        col = self._collect()[name]
        if not isinstance(col, LinearCollector) or set(deltas) != {"weight"}:
            return None
        return float(output_error_sq(deltas["weight"].reshape(deltas["weight"].shape[0], -1), col.stats.xtx).sum())

    def weights(self, name: str, cfg: QuantConfig) -> tuple[dict[str, torch.Tensor], int]:
        """({param: dequantized weight}, packed bytes) of layer `name` at `cfg` (ValueError if it cannot take it)."""
        from .sensitivity import candidate_key

        key = (name, candidate_key(cfg))
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
