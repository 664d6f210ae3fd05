"""Timing of a callable: the one timer of `lowbit validate`, `lowbit demo` and the benchmark suites.

`time_fn` gives the median and the 20th/80th percentiles of repeated calls after a warm-up (synchronising CUDA and
evicting the GPU L2 between calls); `interleaved` times several callables round by round, so that a shared
machine's changing load falls on all of them alike. Checking that what is timed computes the right thing is the
caller's job. Benchmarks' tables and saved results are in the source tree's `benchmarks/harness.py`, not here.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Timing:
    """Milliseconds per call over the timed repetitions: median, 20th and 80th percentiles, and how many calls."""

    median_ms: float
    p20_ms: float
    p80_ms: float
    reps: int


def _sync(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _flush_cache(device, scratch: dict) -> None:
    """Evict the GPU L2 between runs so each call reads its weights from HBM, as at batch 1 in a real model."""
    if device is not None and torch.device(device).type == "cuda":
        buf = scratch.setdefault("l2", torch.empty(64 << 20, dtype=torch.uint8, device=device))
        buf.zero_()


def time_fn(fn: Callable[[], object], device=None, warmup: int = 3, reps: int | None = None,
            min_time_s: float = 0.2, max_reps: int = 200, flush: bool = True,
            clock: Callable[[], float] = time.perf_counter) -> Timing:
    """Median/p20/p80 time of fn() in ms on `clock`, after `warmup` calls.

    reps: timed calls; None adapts them to one probe call (5 to max_reps, about min_time_s in all). device: where fn
    runs; a CUDA device is synchronised around every call and, with flush, its L2 evicted before each. clock:
    time.perf_counter (wall time) or time.thread_time (this thread's CPU time: immune to preemption by other
    processes, meaningful only when the work runs on the calling thread). With one repetition the percentiles are
    that one sample."""
    scratch: dict = {}
    for _ in range(warmup):
        fn()
    _sync(device)
    if reps is None:
        t0 = clock()
        fn()
        _sync(device)
        one = max(clock() - t0, 1e-6)
        reps = int(min(max_reps, max(5, min_time_s / one)))
    samples = []
    for _ in range(reps):
        if flush:
            _flush_cache(device, scratch)
        _sync(device)
        t0 = clock()
        fn()
        _sync(device)
        samples.append((clock() - t0) * 1e3)
    q = statistics.quantiles(samples, n=5) if len(samples) >= 2 else [samples[0]] * 4
    return Timing(statistics.median(samples), q[0], q[3], reps)


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, inner: int = 1,
                cpu_clock: Callable[[], float] = time.thread_time) -> tuple[dict[str, float], dict[str, float]]:
    """({name: median wall ms per call}, {name: median CPU ms per call}), every fn timed one after another in each
    round (after one warm-up call each), `inner` calls per timing. cpu_clock: time.thread_time (what the call cost
    this thread) or time.process_time (every thread of the process: for peers that run on threads of their own).
    On a shared machine CPU time moves less with the load than wall time."""
    for fn in fns.values():
        fn()
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t, c = time.perf_counter(), cpu_clock()
            for _ in range(inner):
                fn()
            cpu[name].append((cpu_clock() - c) * 1e3 / inner)
            wall[name].append((time.perf_counter() - t) * 1e3 / inner)
    return ({n: statistics.median(v) for n, v in wall.items()}, {n: statistics.median(v) for n, v in cpu.items()})
