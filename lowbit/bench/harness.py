"""Timing and reporting shared by every benchmark: warm-up, medians with p20/p80, tables and saved results.

A suite builds `Case`s, times callables with `time_fn` (after checking correctness itself), collects `Row`s and
hands them to `report`, which prints a tabulate table and writes CSV, JSON and Markdown to bench/results/ with the
date, device and library versions.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass(frozen=True)
class Timing:
    """Milliseconds per call over the timed repetitions."""

    median_ms: float
    p20_ms: float
    p80_ms: float
    reps: int


@dataclass
class Row:
    """One table row: free-form columns in insertion order (names are the table headers)."""

    values: dict = field(default_factory=dict)


def _sync(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _flush_cache(device, scratch: dict) -> None:
    """Evict the GPU L2 between runs so each call reads its weights from HBM, as at batch 1 in a real model."""
    if device is not None and torch.device(device).type == "cuda":
        buf = scratch.setdefault("l2", torch.empty(64 << 20, dtype=torch.uint8, device=device))
        buf.zero_()


def time_fn(fn: Callable[[], object], device=None, warmup: int = 3, reps: int | None = None,
            min_time_s: float = 0.2, max_reps: int = 200, flush: bool = True) -> Timing:
    """Median/p20/p80 wall time of fn() in ms, after warm-up; reps adapt to reach min_time_s unless given."""
    scratch: dict = {}
    for _ in range(warmup):
        fn()
    _sync(device)
    if reps is None:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        one = max(time.perf_counter() - t0, 1e-6)
        reps = int(min(max_reps, max(5, min_time_s / one)))
    samples = []
    for _ in range(reps):
        if flush:
            _flush_cache(device, scratch)
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        samples.append((time.perf_counter() - t0) * 1e3)
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


def describe_environment(device=None) -> dict:
    """Date, device name, CPU, thread count and library versions for the results header."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
    else:
        name = f"CPU {platform.processor() or platform.machine()} ({_cpu_model()}), {torch.get_num_threads()} threads"
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    from .. import __version__

    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": name,
        "torch": torch.__version__,
        "triton": triton_version,
        "lowbit": __version__,
        "python": platform.python_version(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def format_table(rows: list[Row], floatfmt: str = ".3f") -> str:
    """A tabulate 'github' table of the rows (columns: the union of keys, in first-seen order)."""
    from tabulate import tabulate

    headers: list[str] = []
    for r in rows:
        headers.extend(k for k in r.values if k not in headers)
    data = [[r.values.get(h, "") for h in headers] for r in rows]
    return tabulate(data, headers=headers, tablefmt="github", floatfmt=floatfmt)


def load_average() -> float:
    """The 1-minute load average (NaN where the OS has none): benchmarks record it, since other jobs share cores."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def report(name: str, rows: list[Row], env: dict, out_dir: str | Path | None = "bench/results",
           title: str | None = None, notes: str = "", floatfmt: str = ".3f") -> str:
    """Print the table and, unless out_dir is None, save <name>.md/.csv/.json there. Returns the table text."""
    table = format_table(rows, floatfmt)
    header = " | ".join(f"{k}: {v}" for k, v in env.items())
    print(f"{title or name}\n{header}\n\n{table}\n")
    if out_dir is not None:
        out = Path(out_dir)
        md = f"# {title or name}\n\n{header}\n\n{notes + chr(10) + chr(10) if notes else ''}{table}\n"
        _atomic_write(out / f"{name}.md", md)
        _atomic_write(out / f"{name}.json", json.dumps({"env": env, "rows": [r.values for r in rows]}, indent=1))
        headers: list[str] = []
        for r in rows:
            headers.extend(k for k in r.values if k not in headers)
        fd, tmp = tempfile.mkstemp(dir=out, suffix=".tmp")
        with os.fdopen(fd, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=headers)
            w.writeheader()
            w.writerows(r.values for r in rows)
        os.replace(tmp, out / f"{name}.csv")
    return table
