"""`quantize(model, cfg, calibration=...)`: data-aware weight quantization of a whole model, layer by layer.

Order of work:
 1. the layers are chosen exactly as `lowbit.nn.quantize` chooses them (skip globs, min_weights, overrides);
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

import torch
from torch import nn

from ..calib import CalibrationError, as_calibration, ensure_eval, run_pass, trace_calls
from ..calib.order import group_by_call_order
from ..nn import swap
from ..nn.linear import as_backend
from ..quant.config import QuantConfig, QuantMethod
from .awq import awq_scales, fold_groups, scale_inputs, vector_layers
from .layers import ConvCollector, LinearCollector
from .lstm import LSTMCollector
from .report import DataAwareSummary, LayerError
from .weights import WeightResult, plain_config

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


def collector_for(module: nn.Module):
    if isinstance(module, nn.LSTM):
        return LSTMCollector(module)
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return ConvCollector(module)
    return LinearCollector(module)


def quantize(model: nn.Module, cfg: QuantConfig | None = None, backend=None, skip=(), overrides: dict | None = None,
             min_weights: int = 1024, calibration=None, limit: int | None = None, sequential: bool = True,
             progress: bool = True, awq_fold: dict | None = None) -> nn.Module:
    """`lowbit.nn.quantize` plus data-aware methods (GPTQ, AWQ) fed by `calibration` (see `lowbit.calib`).

    calibration: an iterable of model inputs, a folder, "module:function" or a CalibrationSet; limit: at most this
    many items. sequential: each layer sees the inputs the already-quantized earlier layers produce (False: float
    inputs for all, one pass). awq_fold: {consumer Linear: producer Linear or LayerNorm/RMSNorm} to fold AWQ
    scales into, beyond the declared patterns. Without a data-aware config this is `lowbit.nn.quantize`. The
    summary (`DataAwareSummary`, with the per-weight error table) is `model.lowbit_summary`.
    """
    cfg = cfg or QuantConfig()
    if not isinstance(cfg, QuantConfig):
        raise TypeError(f"cfg must be a lowbit.QuantConfig, got {type(cfg).__name__}")
    if not check_calibration_given(cfg, overrides, calibration):
        if calibration is not None:
            warnings.warn(f"lowbit.quantize: calibration is not used by method={cfg.method.value!r}; use "
                          "method='gptq' or 'awq' for data-aware quantization", stacklevel=2)
        return swap.quantize(model, cfg, backend, skip, overrides, min_weights)
    if any(isinstance(c, QuantConfig) and c.method is QuantMethod.RECON for c in [cfg, *(overrides or {}).values()]):
        from ..recon import quantize_recon  # learned rounding/scales, block by block (lowbit/recon)

        return quantize_recon(model, cfg, backend, skip, overrides, min_weights, calibration, limit, progress)
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


def plan_layers(model, cfg, overrides, skip, min_weights, summary) -> dict:
    """{layer name: (module, config, LayerRecord)} for the layers to quantize; skipped ones go to the summary."""
    modules = dict(model.named_modules())
    targets = {}
    for name, module in modules.items():
        if swap.quant_class(module) is None:
            continue
        parent = modules.get(name.rpartition(".")[0]) if name else None
        names = swap.quantized_param_names(module)
        record = swap.LayerRecord(name, type(module).__name__, sum(getattr(module, p).numel() for p in names))
        record.reason = swap.why_float(name, module, parent, skip, min_weights, record.weights) or ""
        if record.reason:
            summary.skipped.append(record)
        else:
            targets[name] = (module, swap.config_for(name, cfg, overrides), record)
    return targets


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
    saved: list[tuple[nn.Parameter, torch.Tensor]] = []
    handles = []
    aware = {n: t for n, t in targets.items() if t[1].data_aware and not t[1].is_float}
    try:
        awq = [n for n, t in aware.items() if t[1].method is QuantMethod.AWQ or t[1].awq]
        modules = dict(model.named_modules())
        groups = fold_groups(modules, awq, awq_fold)
        vectors = vector_layers(modules, awq, groups)
        summary.folded, scales = awq_scales(model, cal, groups, vectors, {n: targets[n][1] for n in awq}, progress)
        summary.input_scaled = {n: ratio for n, (_, ratio) in scales.items()}
        handles = [scale_inputs(modules[n], s, saved) for n, (s, _) in scales.items()]
        summary.passes += bool(groups or vectors)
        for name, (module, cfg, _) in targets.items():
            if name not in aware:  # data-free layers first: they need no statistics
                try:
                    results[name] = plain_results(module, cfg, name)
                except ValueError as e:  # as lowbit.nn.quantize: such a layer stays float, with the reason
                    targets[name][2].reason = f"cannot quantize: {e}"
                    continue
                if sequential:
                    apply_quantized(module, results[name], saved)
        _run_aware(model, cal, aware, sequential, progress, results, saved, summary)
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for p, data in reversed(saved):
                p.data = data
    return collect_weights(targets, results, summary), {n: s for n, (s, _) in scales.items()}


def plain_results(module, cfg, name) -> list[WeightResult]:
    from ..quant.quantize import quantize_weight

    out = []
    for p in swap.quantized_param_names(module):
        qw = quantize_weight(getattr(module, p), plain_config(cfg), f"{name}.{p}")
        out.append(WeightResult(f"{name}.{p}" if name else p, qw, float("nan"), float("nan")))
    return out


def apply_quantized(module, results: list[WeightResult], saved) -> None:
    """Make the float module compute with its quantized weights (sequential calibration)."""
    for r in results:
        p = getattr(module, r.name.rpartition(".")[2])
        saved.append((p, p.data))
        p.data = r.qweight.dequantize(p.dtype).to(p.device)


def _run_aware(model, cal, aware, sequential, progress, results, saved, summary) -> None:
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
                apply_quantized(module, results[name], saved)


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


def collect_weights(targets, results, summary) -> dict:
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


__all__ = ["check_calibration_given", "quantize"]
