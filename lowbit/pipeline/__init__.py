"""What every quantization method shares (imports only lowbit.nn, lowbit.calib and lowbit.quant).

  registry.py  MethodSpec, register_method, unregister_method, method_for, methods: one record per method
  plan.py      LayerPlan, plan_layers, quantizable_layers: which layers, with which config (the one selection)
  stats.py     input-statistics collectors (Linear, Conv; lstm.py: LSTM), collector_for, group_by_call_order
  weights.py   quantize_param: one weight + its inputs' statistics -> WeightResult (never worse than RTN/HQQ)
  checks.py    degenerate inputs and the held-out check behind "never worse than the data-free start"
  apply.py     quantized_in_place / FloatWeights (float weights in and back), plain_results, collect_weights
  report.py    DataAwareSummary, LayerError: the per-layer summary of a calibrated quantization
"""

from .plan import LayerPlan, plan_layers, quantizable_layers
from .registry import MethodSpec, method_for, methods, register_method, unregister_method

__all__ = ["LayerPlan", "MethodSpec", "method_for", "methods", "plan_layers", "quantizable_layers",
           "register_method", "unregister_method"]
