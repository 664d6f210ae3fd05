"""`auto_quantize`: per-layer bits, block size and method under a size or an error target.

1. sensitivity: each layer alone at each candidate, everything else float (lowbit/auto/sensitivity.py, cached);
2. allocation: the exact multiple-choice knapsack frontier over (bytes, error) assuming additive errors
   (lowbit/quant/allocate.py), read at the target;
3. verification: the whole plan is measured on the same data; under an error target, smaller frontier plans are
   tried first (`_verify_smaller`), then, while the measured error is above it, the layer with the largest error
   alone moves one step up its own size-error frontier (greedy repair).
"""

from __future__ import annotations

import time
import warnings

from torch import nn

from ..calib import CalibrationSet, as_calibration, ensure_eval
from ..methods import method_for
from ..pipeline.plan import quantizable_layers
from ..quant import allocate
from ..quant.config import QuantConfig
from .calibrated import FIT_EVERY, LayerInputs, fit_items, measured_items
from .fakequant import fake_quantized, run_outputs
from .metrics import BUILTIN as METRICS
from .metrics import as_metric
from .plan import AutoPlan, LayerChoice
from .sensitivity import auto_methods, candidate_key, candidate_label, default_candidates, measure


def _check_candidates(candidates) -> list[QuantConfig]:
    cands = default_candidates() if candidates is None else list(candidates)
    if not cands:
        raise ValueError("candidates is empty: pass at least one QuantConfig (default: "
                         "lowbit.auto.default_candidates())")
    for c in cands:
        if not isinstance(c, QuantConfig):
            raise TypeError(f"candidates must be lowbit.QuantConfig objects, got {type(c).__name__}: {c!r}")
        if c.method.value == "awq" or c.awq:
            raise ValueError(f"candidate {candidate_label(c)}: AWQ is not an auto candidate (its channel scales are "
                             "folded into the layer before, so one layer's error is not its own); use rtn, hqq or "
                             "gptq candidates, or lowbit.quantize(..., calibration=) for AWQ")
        if not method_for(c.method).auto_candidate:
            raise ValueError(f"candidate {candidate_label(c)}: method {c.method.value!r} is not an auto candidate; "
                             f"use {auto_methods()}")
    return list({candidate_key(c): c for c in cands}.values())  # duplicates removed, order kept


def _split(cal: CalibrationSet, ref: list, holdout: float) -> tuple[CalibrationSet, list, int]:
    """(selection items, their reference outputs, number held back): every round(1/holdout)-th item is held back
    from the selection (none when there are fewer than 4 items)."""
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or not 0 <= holdout < 1:
        raise ValueError(f"holdout={holdout!r} must be a fraction of the data items in [0, 1)")
    if holdout == 0 or len(cal) < 4:
        return cal, ref, 0
    step = max(2, round(1 / holdout))
    keep = [i for i in range(len(cal)) if i % step != step - 1]
    items = list(cal)
    return (CalibrationSet([items[i] for i in keep], f"{cal.source} ({len(keep)} of {len(items)} items)"),
            [ref[i] for i in keep], len(items) - len(keep))


def _size_budget(target_size, float_bytes: int) -> float:
    if isinstance(target_size, bool) or not isinstance(target_size, (int, float)) or not target_size > 0:
        raise ValueError(f"target_size={target_size!r} must be bytes (> 1) or a fraction of fp32 in (0, 1]")
    return target_size * float_bytes if target_size <= 1 else float(target_size)


def _options(sens, layers, cands, metric: str):
    """Per layer: [(cfg, bytes, error)] of the candidates it can take."""
    opts = {}
    for name in layers:
        opts[name] = sens.options(name, cands, metric)
        if not opts[name]:
            raise ValueError(f"layer {name!r} can take none of the candidates; add one it can (e.g. per channel "
                             "block_size=-1, or QuantConfig(bits=16)) or skip the layer")
    return opts


def _describe_plan(opts, choice) -> str:
    labels = [candidate_label(opts[n][j][0]) for n, j in zip(opts, choice, strict=True)]
    common = max(set(labels), key=labels.count)
    return f"{labels.count(common)}/{len(labels)} layers {common}"


def _measure_plan(model, data, select, metric, ref, inputs: LayerInputs, chosen) -> float:
    ws = {n: inputs.weights(n, cfg)[0] for n, cfg in chosen.items()}
    with fake_quantized(model, ws):
        return metric(ref, run_outputs(model, data, select))


def _tighten(front, lo: int, hi: int, target: float, measure_fn, kind: str = "smaller"
             ) -> tuple[int, float | None, list[str]]:
    """The smallest frontier plan in [lo, hi] whose *measured* error holds, by bisection (the additive estimate is
    usually pessimistic, so plans smaller than the estimate allows often hold): (index, its measured error or None
    when only `hi`, not measured here, is left, log lines)."""
    best, log = (hi, None), []
    while lo < hi:
        mid = (lo + hi) // 2
        m = measure_fn(front.choice(mid))
        log.append(f"{kind}: {int(front.total_bytes[mid]):,} bytes measures {m:.4g} "
                   f"({'holds' if m <= target else 'too high'}; estimated {front.total_error[mid]:.4g})")
        if m <= target:
            hi, best = mid, (mid, m)
        else:
            lo = mid + 1
    return best[0], best[1], log


def _verify_smaller(front, point: int, target: float, plan_error, selection) -> tuple[list[int], float, list[str]]:
    """Under an error target: the smallest frontier plan that holds on the selection items (bisection below the
    knapsack's `point`), checked on all items; when it fails there, the smallest plan between it and `point` that
    holds on all items (the frontier's next steps, before any greedy repair). Returns (choice, measured, log)."""
    selected = plan_error(front.choice(point), selection)
    if selected > target:
        return front.choice(point), plan_error(front.choice(point)), []
    idx, _, log = _tighten(front, 0, point, target, lambda c: plan_error(c, selection))
    measured = plan_error(front.choice(idx))
    if measured > target and idx < point:  # held on the selection only: walk up the frontier on all items
        idx, m, more = _tighten(front, idx + 1, point, target, plan_error, kind="larger")
        measured, log = (m if m is not None else plan_error(front.choice(idx))), log + more
    return front.choice(idx), measured, log


def _repair(plan_state, opts, target, measure_fn, max_steps) -> tuple[list[int], float, list[str]]:
    """Raise the worst layer one step up its own frontier until the measured error is <= target."""
    choice, measured = plan_state
    log = []
    names = list(opts)
    for _ in range(max_steps):
        if measured <= target:
            break
        movable = []
        for i, n in enumerate(names):
            _, b, e = opts[n][choice[i]]
            better = [j for j, (_, bj, ej) in enumerate(opts[n]) if ej < e]
            if better:
                movable.append((e, i, min(better, key=lambda j: (opts[n][j][1], opts[n][j][2]))))
        if not movable:
            break
        _, i, j = max(movable)
        log.append(f"{names[i]}: {candidate_label(opts[names[i]][choice[i]][0])} -> "
                   f"{candidate_label(opts[names[i]][j][0])} (measured {measured:.4g} > {target:.4g})")
        choice[i] = j
        measured = measure_fn(choice)
    return choice, measured, log


def auto_quantize(model: nn.Module, data, target_size=None, target_error=None, candidates=None, metric="cosine",
                  output=None, skip=(), min_weights: int = 1024, limit: int | None = None, cache=True,
                  progress: bool = True, max_repairs: int | None = None, mode: str = "anchors",
                  holdout: float = 0.25, calibration=None) -> AutoPlan:
    """Choose bits, block size and method per layer from `data` under exactly one target.

    data: a `lowbit.calib` source (list of inputs, folder, "module:function", CalibrationSet); limit: at most this
    many items. target_size: bytes of the planned layers' weights (> 1), or a fraction of their float32 bytes
    (0.2); target_error: the largest allowed `metric` error (see lowbit.auto.metrics: cosine = 1 - lowest cosine).
    candidates: QuantConfigs to choose from per layer (default `default_candidates()`: 2..8 bits x blocks
    32/64/128/per channel with HQQ, plus fp16; GPTQ settings are opt-in, see `default_candidates`). output: the
    part of the model's output to compare (dict key, index or function). skip/min_weights: as `lowbit.quantize`.
    cache: the sensitivity cache, True (~/.cache/lowbit/auto), False, or a folder. mode: "anchors" (default: three
    model runs per Linear layer, the other candidates fitted from their layer-output noise) or "all" (one run per
    layer and candidate; see
    lowbit/auto/sensitivity.py). holdout: the share of data items held back from the sensitivity pass and from the
    choice of smaller plans (the measured error of the final plan and the repairs use all items), so that a plan
    does not fit the items it was chosen on (none held back with fewer than 4 items). With GPTQ candidates, every
    other item (from the first) only fits GPTQ and all measurements use the rest (see lowbit/auto/calibrated.py);
    holdout then splits the rest. calibration: a separate `lowbit.calib` source to fit GPTQ candidates on instead
    (GPTQ needs several times more input rows than a layer has inputs; `data` then serves measurement only, whole).
    The model is not modified; apply the plan with `plan.quantize(model, data)` (GPTQ layers need the data they were
    fitted on: `data`, or `calibration` when given), `lowbit.quantize(model, overrides=plan.overrides)` or
    `plan.to_json(path)` + `lowbit convert --config`.
    """
    start = time.perf_counter()
    if (target_size is None) == (target_error is None):
        raise ValueError("give exactly one target: target_size (bytes or fraction of fp32) or target_error")
    if target_error is not None and (isinstance(target_error, bool) or not isinstance(target_error, (int, float))
                                     or not target_error >= 0):
        raise ValueError(f"target_error={target_error!r} must be a number >= 0 in the metric's error units")
    if target_size is not None:
        _size_budget(target_size, 1)  # checked before any work
    _split(CalibrationSet([], ""), [], holdout)
    cands, metric = _check_candidates(candidates), as_metric(metric)
    cal = as_calibration(data, limit)
    ensure_eval(model)
    layers = quantizable_layers(model, skip, min_weights)
    if not layers:
        raise ValueError("the model has no layer lowbit.quantize would quantize (Linear/Conv/LSTM with >= "
                         f"min_weights={min_weights} weights, not skipped)")
    modules = dict(model.named_modules())
    ref = run_outputs(model, cal, output)
    metric(ref, ref)  # the output must hold something to compare
    metrics = [metric, *(as_metric(m) for m in METRICS if m != metric.name)]  # one run scores them all
    aware = any(c.data_aware and not c.is_float for c in cands)
    fit_every = FIT_EVERY if aware and calibration is None else 0
    if calibration is not None and not aware:
        warnings.warn("auto_quantize: calibration= is used by GPTQ candidates only, and there are none: ignored",
                      stacklevel=2)
    if fit_every:  # GPTQ is fitted on its own items and measured (like every candidate) on the others
        if len(cal) < 2:
            raise ValueError(f"GPTQ candidates need at least 2 data items (one to fit, one to measure); got {len(cal)}")
        fit, (cal, ref) = fit_items(cal, fit_every), measured_items(cal, ref, fit_every)
    else:
        fit = as_calibration(calibration) if aware and calibration is not None else cal
    tune, tune_ref, held_back = _split(cal, ref, holdout)
    # GPTQ's Hessians from the fit items; the noise proxy's statistics from the items errors are measured on
    inputs = LayerInputs(model, fit, layers, progress, noise_data=tune if fit is not cal else None)
    sens = measure(model, tune, layers, cands, metrics, tune_ref, output, cache, progress, mode, inputs)
    opts = _options(sens, layers, cands, metric.name)
    front = allocate.pareto_plans([[b for _, b, _ in o] for o in opts.values()],
                                  [[e for _, _, e in o] for o in opts.values()])
    float_bytes = {n: sum(getattr(modules[n], p).numel() * 4 for p in ps) for n, ps in layers.items()}
    if target_size is not None:
        budget = _size_budget(target_size, sum(float_bytes.values()))
        point, target = allocate.best_within_size(front, budget), ("size", budget)
        if point is None:
            raise ValueError(f"target_size={budget:,.0f} bytes is unreachable: the smallest plan is "
                             f"{int(front.total_bytes[0]):,} bytes ({_describe_plan(opts, front.choice(0))})")
    else:
        point, target = allocate.smallest_within_error(front, target_error), ("error", float(target_error))
        if point is None:
            best = len(front) - 1
            raise ValueError(f"target_error={target_error} is unreachable with these candidates: the closest is "
                             f"{front.total_error[best]:.4g} (estimated) at {int(front.total_bytes[best]):,} bytes "
                             f"({_describe_plan(opts, front.choice(best))})")
    names = list(opts)

    runs = [0]

    def plan_error(choice, on: tuple = (cal, ref)) -> float:
        runs[0] += 1
        return _measure_plan(model, on[0], output, metric, on[1], inputs,
                             {n: opts[n][j][0] for n, j in zip(names, choice, strict=True)})

    choice, log = front.choice(point), []
    if target[0] == "error":
        choice, measured, log = _verify_smaller(front, point, target[1], plan_error, (tune, tune_ref))
    else:
        measured = plan_error(choice)
    if target[0] == "error":
        steps = 4 * len(names) if max_repairs is None else max_repairs
        choice, measured, fixes = _repair((choice, measured), opts, target[1], plan_error, steps)
        log += fixes
    chosen = [LayerChoice(n, opts[n][j][0], opts[n][j][1], float_bytes[n], opts[n][j][2])
              for n, j in zip(names, choice, strict=True)]
    if target[0] == "error" and measured > target[1]:
        raise ValueError(f"target_error={target[1]} is unreachable as measured: the closest plan reached "
                         f"{measured:.4g} at {sum(c.bytes for c in chosen):,} bytes ({_describe_plan(opts, choice)}) "
                         f"after {len(log)} repair steps")
    return AutoPlan(
        layers=chosen, metric=metric.name,
        target=target, estimated_error=sum(c.error for c in chosen), measured_error=measured,
        other_bytes=_other_bytes(model, layers), frontier=_thin_front(front), uniform=_uniform(opts, cands),
        repairs=log, seconds=time.perf_counter() - start, cache_hits=sens.hits,
        evaluations=sens.runs + runs[0], held_back=held_back, gptq_fit_every=fit_every,
        gptq_calibration=fit.source if aware and calibration is not None else "")


def _other_bytes(model: nn.Module, layers: dict) -> int:
    planned = {f"{n}.{p}" if n else p for n, ps in layers.items() for p in ps}
    return sum(t.numel() * t.element_size() for n, t in [*model.named_parameters(), *model.named_buffers()]
               if n not in planned)


def _thin_front(front, points: int = 200) -> list[tuple[int, float]]:
    step = max(1, len(front) // points)
    idx = sorted({*range(0, len(front), step), len(front) - 1})
    return [(int(front.total_bytes[i]), float(front.total_error[i])) for i in idx]


def _uniform(opts, cands) -> dict[str, tuple[int, float]]:
    out = {}
    for c in cands:
        rows = [next((o for o in opt if candidate_key(o[0]) == candidate_key(c)), None) for opt in opts.values()]
        if all(r is not None for r in rows):
            out[candidate_label(c)] = (sum(r[1] for r in rows), sum(r[2] for r in rows))
    return out
