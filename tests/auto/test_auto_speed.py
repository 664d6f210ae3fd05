"""lowbit.auto.speed: a plan's measured speed against fp32 at a memory mode, and its line in `lowbit auto`."""

import pytest
import torch
from torch import nn

from lowbit.auto import auto_quantize, default_candidates
from lowbit.auto.speed import PlanSpeed, plan_speed


def test_plan_speed_times_the_plan_at_the_memory_mode(monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 64, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64 * 36, 8)).eval()
    data = [torch.randn(1, 4, 8, 8) for _ in range(3)]
    cands = default_candidates(bits=(4, 8), blocks=(32,), methods=("rtn",))
    plan = auto_quantize(model, data, target_size=0.3, candidates=cands, progress=False, cache=False)
    seen = []
    real = plan.quantize
    monkeypatch.setattr(plan, "quantize", lambda m, **kw: seen.append(kw["backend"].memory.value) or real(m, **kw))
    speed = plan_speed(plan, model, data, memory="low", rounds=2)
    assert seen == ["low"] and isinstance(speed, PlanSpeed) and speed.items == 3
    assert speed.fp32_ms > 0 and speed.plan_ms > 0 and speed.ratio == pytest.approx(speed.fp32_ms / speed.plan_ms)
    assert speed.describe().startswith("measured speed at memory low: ")
    assert all(isinstance(m, (nn.Conv2d, nn.Linear, nn.ReLU, nn.Flatten, nn.Sequential)) for m in model.modules())


def test_speed_floor_tries_the_memory_modes_in_turn(monkeypatch):
    """--min-speed: the asked mode first, then the others; a floor no mode meets gives None with every measurement."""
    from lowbit.auto.speed import speed_floor

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 64, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64 * 36, 8)).eval()
    data = [torch.randn(1, 4, 8, 8) for _ in range(2)]
    plan = auto_quantize(model, data, target_size=0.3, progress=False, cache=False,
                         candidates=default_candidates(bits=(8,), blocks=(32,), methods=("rtn",)))
    met, seen = speed_floor(plan, model, data, "high", 1e-9, rounds=1)
    assert met is seen[0] and [s.memory for s in seen] == ["high"]
    met, seen = speed_floor(plan, model, data, "normal", 1e9, rounds=1)
    assert met is None and [s.memory for s in seen] == ["normal", "low", "high"]
    with pytest.raises(ValueError, match="min_speed"):
        speed_floor(plan, model, data, "low", 0.0)
