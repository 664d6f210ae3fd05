"""`lowbit.quantize`: the public entry point for weight-only quantization of a whole model.

Checks the arguments, looks every config's method up in the registry (lowbit.pipeline.registry; the built-ins
register in lowbit.methods), and hands the model to one walk: the data-free walk when no config needs calibration,
else the walk of the highest-ranked method used (a recon walk also starts its gptq/awq layers; a sequential walk
quantizes its rtn/hqq layers first). The walk plans the layers (lowbit.pipeline.plan), quantizes them, swaps the
packed weights in once and attaches one summary as `model.lowbit_summary`.
"""

from __future__ import annotations

import warnings

from torch import nn

from .methods import method_for
from .methods.plain import run_plain
from .quant.config import QuantConfig

_NEEDS_CALIBRATION = ("{what} needs calibration data: pass calibration= to lowbit.quantize, e.g. "
                      "lowbit.quantize(model, cfg, calibration=[x1, x2, ...]) (tuples = positional args, dicts = "
                      "keyword args), a folder of .pt/.npy/.safetensors inputs, 'module:function', or "
                      "lowbit.calib.minilm_calibration(model) for the built-in MiniLM")


def check_calibration_given(cfg: QuantConfig, overrides: dict | None, calibration) -> bool:
    """True when any config is data-aware; ValueError naming what to pass when calibration is missing."""
    cfgs = [cfg, *(overrides or {}).values()]
    aware = [c for c in cfgs if isinstance(c, QuantConfig) and c.data_aware]
    if aware and calibration is None:
        raise ValueError(_NEEDS_CALIBRATION.format(what=f"method={aware[0].method.value!r}"
                                                   + (" with awq=True" if aware[0].awq else "")))
    return bool(aware)


def quantize(model: nn.Module, cfg: QuantConfig | None = None, backend=None, skip=(), overrides: dict | None = None,
             min_weights: int = 1024, calibration=None, limit: int | None = None, sequential: bool = True,
             progress: bool = True, awq_fold: dict | None = None) -> nn.Module:
    """`lowbit.nn.quantize` plus data-aware methods (GPTQ, AWQ, recon, any registered one) fed by `calibration`.

    calibration: an iterable of model inputs, a folder, "module:function" or a CalibrationSet; limit: at most this
    many items. sequential: each layer sees the inputs the already-quantized earlier layers produce (False: float
    inputs for all, one pass). awq_fold: {consumer Linear: producer Linear or LayerNorm/RMSNorm} to fold AWQ
    scales into, beyond the declared patterns. Without a data-aware config this is `lowbit.nn.quantize` (with each
    layer's registered method). The summary (`DataAwareSummary`, with the per-weight error table, for a calibrated
    walk) is `model.lowbit_summary`.
    """
    cfg = cfg or QuantConfig()
    if not isinstance(cfg, QuantConfig):
        raise TypeError(f"cfg must be a lowbit.QuantConfig, got {type(cfg).__name__}")
    args = (model, cfg, backend, skip, overrides, min_weights, calibration, limit, sequential, progress, awq_fold)
    if not check_calibration_given(cfg, overrides, calibration):
        if calibration is not None:
            warnings.warn(f"lowbit.quantize: calibration is not used by method={cfg.method.value!r}; use "
                          "method='gptq' or 'awq' for data-aware quantization", stacklevel=2)
        return run_plain(*args)
    specs = [_walk_of(c) for c in [cfg, *(overrides or {}).values()] if isinstance(c, QuantConfig) and c.data_aware]
    return max(specs, key=lambda s: s.rank).run(*args)


def _walk_of(cfg: QuantConfig):
    """The spec whose walk a data-aware config needs: its method's, or AWQ's for awq=True on a data-free method."""
    spec = method_for(cfg.method)
    return spec if spec.needs_calibration else method_for("awq")


__all__ = ["check_calibration_given", "quantize"]
