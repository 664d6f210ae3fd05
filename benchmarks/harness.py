"""Reporting shared by every benchmark: the environment, tables and saved results; timing is lowbit's own.

A suite checks correctness itself, then times callables with `time_fn` or `interleaved` (lowbit.apps.timing,
re-exported here), collects `Row`s and hands them to `report`, which prints a tabulate table and writes CSV,
JSON and Markdown to benchmarks/results/ with the date, device and library versions.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lowbit.apps.timing import Timing, interleaved, time_fn

__all__ = ["Row", "Timing", "describe_environment", "format_table", "interleaved", "load_average", "report", "sqnr_db",
           "time_fn"]


@dataclass
class Row:
    """One table row: free-form columns in insertion order (names are the table headers)."""

    values: dict = field(default_factory=dict)


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
    from lowbit import __version__

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


def sqnr_db(ref: torch.Tensor, y: torch.Tensor) -> float:
    """20 log10(|ref| / |ref - y|) in float64 (inf when y equals ref): the check a suite makes before timing."""
    err = (ref.double() - y.double()).norm()
    return float("inf") if err == 0 else float(20 * torch.log10(ref.double().norm() / err))


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


def report(name: str, rows: list[Row], env: dict, out_dir: str | Path | None = "benchmarks/results",
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
