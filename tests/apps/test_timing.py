"""lowbit.apps.timing on a fake clock: which calls are timed, and the median/percentiles against numpy's."""

import numpy as np
import pytest

from lowbit.apps.timing import Timing, interleaved, time_fn


class FakeClock:
    """A clock that moves only when a timed function says how long it took."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def stepping(clock: FakeClock, seconds: list[float]):
    calls = iter(seconds)

    def fn():
        clock.now += next(calls)

    return fn


def test_time_fn_skips_the_warmup_and_reports_median_and_percentiles():
    clock = FakeClock()
    durations = [9.0, 0.004, 0.001, 0.003, 0.010, 0.002, 0.005]  # the first is the warm-up's
    t = time_fn(stepping(clock, durations), warmup=1, reps=6, flush=False, clock=clock)
    ms = np.array(durations[1:]) * 1e3
    p20, p80 = np.percentile(ms, [20, 80], method="weibull")  # statistics.quantiles' "exclusive" method
    assert isinstance(t, Timing) and t.reps == 6
    assert t.median_ms == pytest.approx(np.median(ms), rel=1e-12)
    assert (t.p20_ms, t.p80_ms) == (pytest.approx(p20, rel=1e-12), pytest.approx(p80, rel=1e-12))


def test_time_fn_sizes_its_repetitions_from_one_probe_call():
    clock = FakeClock()
    calls = []

    def fn():
        calls.append(1)
        clock.now += 0.001

    t = time_fn(fn, warmup=2, reps=None, min_time_s=0.0123, max_reps=200, flush=False, clock=clock)
    assert t.reps == 12 and len(calls) == 2 + 1 + 12 and t.median_ms == pytest.approx(1.0)
    assert time_fn(fn, warmup=0, min_time_s=1.0, max_reps=7, flush=False, clock=clock).reps == 7
    assert time_fn(fn, warmup=0, min_time_s=0.0, flush=False, clock=clock).reps == 5


def test_one_repetition_gives_its_sample_for_every_statistic():
    clock = FakeClock()
    t = time_fn(stepping(clock, [0.002]), warmup=0, reps=1, flush=False, clock=clock)
    assert (t.median_ms, t.p20_ms, t.p80_ms, t.reps) == (pytest.approx(2.0), pytest.approx(2.0), pytest.approx(2.0), 1)


def test_interleaved_takes_turns_and_gives_cpu_medians_per_call():
    cpu = FakeClock()
    order = []

    def make(name, seconds):
        def fn():
            order.append(name)
            cpu.now += seconds
        return fn

    fns = {"a": make("a", 0.002), "b": make("b", 0.010)}
    wall, cpu_ms = interleaved(fns, rounds=3, inner=2, cpu_clock=cpu)
    assert order == ["a", "b"] + ["a", "a", "b", "b"] * 3  # one warm-up each, then rounds of `inner` calls
    assert cpu_ms == {"a": pytest.approx(2.0), "b": pytest.approx(10.0)}
    assert set(wall) == {"a", "b"} and all(v >= 0 for v in wall.values())
