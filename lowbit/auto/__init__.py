"""Automatic quantization: per-layer bits, block size and method under a size or an error target.

  auto_quantize(model, data, target_size=... | target_error=..., candidates=, metric=) -> AutoPlan
  default_candidates(bits=, blocks=, methods=, keep_float=)   # the candidate settings per layer
  AutoPlan: .overrides (for lowbit.quantize), .to_json(path) (for lowbit convert --config), .table(), .plot(path)
The pure allocation math is lowbit/quant/allocate.py; the metrics are lowbit/auto/metrics.py.
"""

from .metrics import BUILTIN as METRICS
from .metrics import Metric, as_metric
from .plan import AutoPlan, LayerChoice
from .search import auto_quantize
from .sensitivity import candidate_label, default_candidates

__all__ = ["METRICS", "AutoPlan", "LayerChoice", "Metric", "as_metric", "auto_quantize", "candidate_label",
           "default_candidates"]
