"""GPTQ and AWQ over a whole model (the sequential walk), registered as methods "gptq" and "awq".

Order of work (`run_sequential`, after `lowbit.quantize`'s checks):
 1. the layers are chosen exactly as `lowbit.nn.quantize` chooses them (lowbit.pipeline.plan);
 2. for activation-aware configs, channel scales are searched on float inputs and folded where a pattern allows;
    an unfoldable Linear or (non-depthwise) Conv keeps its s as an input-scale vector (it computes its function of
    x / s with W·diag(s) from then on);
 3. one trace of the first calibration item gives the order layers run in; layers reading the same input tensor
    (query/key/value) form one group;
 4. sequential (default): per group, one pass over the calibration set (cut short after the group's last layer)
    gathers each layer's input statistics, the group is quantized, and its dequantized weights replace the float
    ones, so later groups see the inputs the quantized model will produce. sequential=False: one pass, float inputs;
 5. the packed weights are swapped in with `swap_quantized` (same format, kernels and checkpoints as any other);
    the float weights modified along the way are restored first (they matter for tied parameters).
"""

from __future__ import annotations

import time
import warnings

from ..calib import CalibrationError, as_calibration, ensure_eval, run_pass, trace_calls
from ..nn import swap
from ..nn.linear import as_backend
from ..pipeline.apply import collect_weights, plain_results, quantized_in_place
from ..pipeline.lstm import LSTMCollector
from ..pipeline.plan import plan_layers
from ..pipeline.registry import SEQUENTIAL, MethodSpec, register_method
from ..pipeline.report import DataAwareSummary
from ..pipeline.stats import collector_for, group_by_call_order
from ..pipeline.weights import WeightResult, plain_config
from ..quant.awq import clip_quantize
from ..quant.config import QuantMethod
from ..quant.gptq import gptq_quantize
from .awq import awq_scales, fold_groups, scale_inputs, vector_layers


def run_sequential(model, cfg, backend=None, skip=(), overrides=None, min_weights: int = 1024, calibration=None,
                   limit: int | None = None, sequential: bool = True, progress: bool = True, awq_fold=None):
    """The GPTQ/AWQ walk over a whole model (see the module docstring; arguments as `lowbit.quantize`); returns the
    model with the packed weights swapped in and its `DataAwareSummary` as `model.lowbit_summary`."""
    backend = as_backend(backend)
    skip, overrides = swap.check_patterns(skip, overrides)
    cal = as_calibration(calibration, limit)
    start = time.perf_counter()
    summary = DataAwareSummary(calibration=cal.source, items=len(cal))
    if ensure_eval(model):
        summary.notes.append("the model was in training mode: switched to eval() for calibration and left in eval")
    targets = plan_layers(model, cfg, overrides, skip, min_weights, summary)
    weights, input_scales = _run(model, cal, targets, sequential, progress, awq_fold, summary)
    model = swap.swap_quantized(model, weights, backend)
    _attach_input_scales(model, input_scales, summary)
    summary.seconds = time.perf_counter() - start
    model.lowbit_summary = summary
    return model


def _attach_input_scales(model, input_scales: dict, summary) -> None:
    """Give each swapped layer its AWQ input-scale vector (a layer left float keeps its own weight: no vector)."""
    modules = dict(model.named_modules())
    for name, s in input_scales.items():
        layer = modules.get(name)
        if hasattr(layer, "set_input_scale"):
            layer.set_input_scale(s)
        else:
            summary.input_scaled.pop(name, None)


def _run(model, cal, targets, sequential, progress, awq_fold, summary) -> tuple[dict, dict]:
    """Quantize every target; returns ({full parameter name: QuantizedWeight}, {layer: AWQ input-scale vector}).
    Float weights are restored."""
    results: dict[str, list[WeightResult]] = {}
    handles = []
    aware = {n: t for n, t in targets.items() if t.cfg.data_aware and not t.cfg.is_float}
    with quantized_in_place() as floats:
        try:
            awq = [n for n, t in aware.items() if t.cfg.method is QuantMethod.AWQ or t.cfg.awq]
            modules = dict(model.named_modules())
            groups = fold_groups(modules, awq, awq_fold)
            vectors = vector_layers(modules, awq, groups)
            summary.folded, scales = awq_scales(model, cal, groups, vectors, {n: targets[n].cfg for n in awq},
                                                progress)
            summary.input_scaled = {n: ratio for n, (_, ratio) in scales.items()}
            handles = [scale_inputs(modules[n], s, floats) for n, (s, _) in scales.items()]
            summary.passes += bool(groups or vectors)
            for name, (module, cfg, record) in targets.items():
                if name not in aware:  # data-free layers first: they need no statistics
                    try:
                        results[name] = plain_results(module, cfg, name)
                    except ValueError as e:  # as lowbit.nn.quantize: such a layer stays float, with the reason
                        record.reason = f"cannot quantize: {e}"
                        continue
                    if sequential:
                        floats.apply(module, results[name])
            _run_aware(model, cal, aware, sequential, progress, results, floats, summary)
        finally:
            for h in handles:
                h.remove()
    return collect_weights(targets, results, summary), {n: s for n, (s, _) in scales.items()}


def _run_aware(model, cal, aware, sequential, progress, results, floats, summary) -> None:
    if not aware:
        return
    modules = {n: t[0] for n, t in aware.items()}
    collectors = {n: collector_for(m) for n, m in modules.items()}
    calls = trace_calls(model, next(iter(cal)), modules)
    per_item = {n: sum(1 for c, _ in calls if c == n) for n in modules}
    lstm = {n for n, c in collectors.items() if isinstance(c, LSTMCollector)}
    groups = group_by_call_order(calls, list(collectors), alone=lstm) if sequential else [list(collectors)]
    for i, group in enumerate(groups):
        stop = {n: per_item[n] for n in group if per_item[n]} if sequential and len(groups) > 1 else None
        run_pass(model, cal, {n: collectors[n].hook for n in group}, modules,
                 desc=f"calibration {i + 1}/{len(groups)}: {group[0]}" + (" ..." if len(group) > 1 else ""),
                 progress=progress, stop_after=stop if stop and len(stop) == len(group) else None,
                 held={n: collectors[n].held_hook for n in group if hasattr(collectors[n], "held_hook")})
        summary.passes += 1
        for name in group:
            module, cfg, _ = aware[name]
            col = collectors[name]
            if col.count == 0:
                summary.notes.append(f"{name} was never called on the calibration inputs: quantized with "
                                     f"{plain_config(cfg).method.value}")
                results[name] = plain_results(module, cfg, name)
            else:
                results[name] = _quantize_layer(col, cfg, name, sequential, summary)
                if not any(r.fallback for r in results[name] or []):
                    _note_few_rows(name, col, summary)
            collectors[name] = None  # free its statistics
            if sequential and results[name] is not None:
                floats.apply(module, results[name])


def _note_few_rows(name, col, summary) -> None:
    """GPTQ generalises poorly when a layer saw fewer input rows than about twice its K (measured on MiniLM)."""
    stats = col.input_stats() if hasattr(col, "input_stats") else []
    if stats and stats[0].count < 2 * stats[0].k:
        summary.notes.append(f"{name} saw {stats[0].count} input rows for K={stats[0].k}: fewer than 2K, so its "
                             "statistics are nearly singular and the result may fit the calibration data only; use "
                             "more calibration data or raise gptq_damp")


def _quantize_layer(col, cfg, name, sequential, summary) -> list[WeightResult] | None:
    """The collector's quantization; GPTQ's damping warnings also go to the summary notes."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = col.quantize(cfg, name, sequential)
        except CalibrationError:
            raise
        except ValueError as e:  # e.g. a Hessian that no damping makes positive definite
            summary.notes.append(f"{name}: cannot quantize ({e}); kept float")
            out = None
    for w in caught:
        if "lowbit" in str(w.message):
            summary.notes.append(str(w.message))
        warnings.warn(w.message, w.category, stacklevel=2)
    return out


register_method(MethodSpec(
    "gptq", needs_calibration=True, run=run_sequential, rank=SEQUENTIAL, fit_weight=gptq_quantize,
    auto_candidate=True, summary="GPTQ: columns rounded in turn, errors fed back through the inputs' Hessian"))
register_method(MethodSpec(
    "awq", needs_calibration=True, run=run_sequential, rank=SEQUENTIAL, fit_weight=clip_quantize,
    summary="activation-aware channel scales and clipping, then RTN"))

__all__ = ["run_sequential"]

