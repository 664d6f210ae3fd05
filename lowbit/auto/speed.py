"""The measured speed of an auto plan: the quantized model against the float model at a memory mode.

`plan_speed(plan, model, data, memory)` applies the plan to a copy of the model (lowbit.quantize with the plan's
overrides, the backend at `memory`), then feeds the same items to both models in turn, rounds repeated, and
reports median process CPU time per item (the steadier clock on a shared machine; every thread of the process
counts) as a ratio to fp32: >1 is faster. The first pass (dispatch, float copies, kernel builds) is not timed.
"""

from __future__ import annotations

import copy
import statistics
import time
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from ..calib import as_calibration
from ..calib.capture import call_model


@dataclass(frozen=True)
class PlanSpeed:
    """Median CPU ms per item of the float and the quantized model, at `memory`, over `items` items."""

    memory: str
    fp32_ms: float
    plan_ms: float
    items: int
    threads: int

    @property
    def ratio(self) -> float:
        return self.fp32_ms / self.plan_ms

    def describe(self) -> str:
        return (f"measured speed at memory {self.memory}: {self.ratio:.2f}x fp32 ({self.plan_ms:.2f} vs "
                f"{self.fp32_ms:.2f} ms CPU per item, median of {self.items} items, {self.threads} thread(s))")


def _time_items(model: nn.Module, items: list) -> float:
    """CPU ms for one pass over items (each model call timed, summed)."""
    total = 0.0
    for i, item in enumerate(items):
        c = time.process_time()
        call_model(model, item, i)
        total += time.process_time() - c
    return total * 1e3 / len(items)


def plan_speed(plan, model: nn.Module, data, memory: str = "low", calibration=None, limit: int = 8,
               rounds: int = 5) -> PlanSpeed:
    """The plan's speed against `model` (float, unchanged) on up to `limit` items of `data` at `memory`.

    calibration: what a GPTQ plan was fitted on (see AutoPlan.quantize); a plan that needs it raises without it.
    """
    from ..runtime import BackendConfig

    items = list(as_calibration(data, limit))
    model = model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the quantize-time notes; a fallback's warning is the summary's business
        quant = plan.quantize(copy.deepcopy(model), calibration=calibration, backend=BackendConfig(memory))
    fp32, plan_ms = [], []
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _time_items(model, items), _time_items(quant, items)  # warm-up: dispatch, float copies, kernel builds
        for _ in range(rounds):
            fp32.append(_time_items(model, items))
            plan_ms.append(_time_items(quant, items))
    return PlanSpeed(memory, statistics.median(fp32), statistics.median(plan_ms), len(items), torch.get_num_threads())


MEMORY_MODES = ("low", "high", "normal")


def speed_floor(plan, model: nn.Module, data, memory: str, min_speed: float, calibration=None,
                **timing) -> tuple[PlanSpeed | None, list[PlanSpeed]]:
    """`--min-speed` as a constraint on a plan: (the first measurement at least `min_speed` x fp32, or None when none
    is, every measurement made). `memory` is measured first; when it falls short, the other memory modes in turn
    (low, high, normal): the plan's speed depends on the mode as much as on its bits (float copies, GEMM paths)."""
    if not (min_speed > 0 and min_speed < float("inf")):
        raise ValueError(f"min_speed={min_speed!r}: must be a positive finite ratio to fp32 (e.g. 1.0)")
    if memory not in MEMORY_MODES:
        raise ValueError(f"memory={memory!r}: use one of {MEMORY_MODES}")
    seen = []
    for mode in (memory, *(m for m in MEMORY_MODES if m != memory)):
        seen.append(plan_speed(plan, model, data, mode, calibration, **timing))
        if seen[-1].ratio >= min_speed:
            return seen[-1], seen
    return None, seen
