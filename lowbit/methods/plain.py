"""The data-free methods "rtn" and "hqq" (and float16 storage, bits=16 under either), and the data-free walk.

Each weight is quantized on its own (`lowbit.quant.quantize.quantize_weight`); the walk is `lowbit.nn.quantize`
with each layer's method looked up in the registry, so a method registered with only a `quantize_weight` (see
tests/pipeline/test_registry.py) runs through it unchanged.
"""

from __future__ import annotations

from ..nn import swap
from ..pipeline.registry import DATA_FREE, MethodSpec, method_for, register_method
from ..quant.quantize import quantize_weight


def quantize_by_method(w, cfg, name: str = "weight"):
    """One weight with its config's registered method (`MethodSpec.quantize_weight`)."""
    return method_for(cfg.method).quantize_weight(w, cfg, name)


def run_plain(model, cfg, backend=None, skip=(), overrides=None, min_weights: int = 1024, calibration=None,
              limit: int | None = None, sequential: bool = True, progress: bool = True, awq_fold=None):
    """The data-free walk (arguments as `lowbit.quantize`; the calibration ones are not used): `lowbit.nn.quantize`
    with every weight quantized by its layer's method; the summary is a `QuantizeSummary`."""
    return swap.quantize(model, cfg, backend, skip, overrides, min_weights, quantize_fn=quantize_by_method)


register_method(MethodSpec("rtn", needs_calibration=False, run=run_plain, rank=DATA_FREE,
                           quantize_weight=quantize_weight, auto_candidate=True,
                           summary="round to nearest: scale/zero from each block's min and max"))
register_method(MethodSpec("hqq", needs_calibration=False, run=run_plain, rank=DATA_FREE,
                           quantize_weight=quantize_weight, auto_candidate=True,
                           summary="half-quadratic: RTN start, zero refined against an lp (p<1) error"))

__all__ = ["quantize_by_method", "run_plain"]
