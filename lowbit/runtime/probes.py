"""Check torch's quantized CPU ops on this machine before dispatch may use them: numbers, not presence.

`probe_torch_ops()` runs every case of `lowbit.kernels.torch_ops` (each op on a few shapes per shape class, against a
float64 reference) in a child process, since a kernel that reads out of bounds can kill the process that calls it.
A case that crashes, hangs or lands below the op's SQNR floor refuses its whole shape class; a crash that does not
happen again when the case runs alone means earlier calls corrupted memory, and refuses the whole op. The report is
cached per machine, torch version and ISA in `~/.cache/lowbit/` (or $XDG_CACHE_HOME/lowbit): the first call on a
machine costs a few seconds (one child start, plus one per crash), later ones a file read.

Run as `python -m lowbit.runtime.probes RUNNER` it is that child: it reads cases as JSON on stdin and prints
`start I` before and `done I SQNR [ERROR]` after each, so the parent knows which case a crash belongs to.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

PROBE_VERSION = 1  # bump when the cases or the rules change: old cache files are then ignored
RUNNER = "lowbit.kernels.torch_ops"
WHOLE_OP = "*"  # the shape class that stands for every shape
_CHILD_TIMEOUT_S = 120


class ProbeError(RuntimeError):
    """The probe child could not run at all (so no op could be checked)."""


@dataclass(frozen=True)
class ProbeReport:
    """What was probed and what was refused.

    cpu: the CPU identity it was run on; torch_version; torch_cpu_capability (ATen's ISA: DEFAULT, AVX2, AVX512...).
    ops: the ops present in this torch and probed. refusals: (op, shape class or WHOLE_OP, reason).
    seconds: what the probe cost when it ran (read back from the cache with the rest).
    """

    cpu: str
    torch_version: str
    torch_cpu_capability: str
    ops: tuple[str, ...]
    refusals: tuple[tuple[str, str, str], ...]
    seconds: float = 0.0

    def refusal(self, op: str, m: int, n: int, k: int) -> str | None:
        """Why `op` must not run an (M, K) x (N, K) product on this machine, or None."""
        return refusal_for(self.refusals, op, m, n, k)

    def refused_classes(self, op: str) -> tuple[tuple[str, str], ...]:
        """(shape class, reason) pairs refused for `op` (WHOLE_OP when the op is refused entirely)."""
        return tuple((cls, why) for o, cls, why in self.refusals if o == op)


def refusal_for(refusals, op: str, m: int, n: int, k: int) -> str | None:
    """The reason in `refusals` ((op, class, reason) triples) that covers this shape, or None."""
    from ..kernels.torch_ops import shape_class

    cls = shape_class(m, n, k)
    for o, c, why in refusals:
        if o == op and c in (WHOLE_OP, cls):
            return why
    return None


def torch_cpu_capability() -> str:
    """ATen's CPU ISA level in this process (ATEN_CPU_CAPABILITY lowers it)."""
    get = getattr(torch.backends.cpu, "get_cpu_capability", None)
    return str(get()) if callable(get) else "unknown"


def cache_dir() -> Path:
    """Where probe reports are kept (beside the native build cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lowbit"


@functools.cache
def torch_op_report(cpu: str) -> ProbeReport:
    """`probe_torch_ops(cpu)` once per process."""
    return probe_torch_ops(cpu)


def probe_torch_ops(cpu: str, runner: str = RUNNER, cache: Path | None = None, ops=None) -> ProbeReport:
    """The report for this machine: from the cache, else probed in child processes and cached.

    cpu: a string naming the CPU (model and ISA flags; part of the cache key). runner: the module whose OPS,
    op_present, probe_cases, shape_class, run_case and SQNR_FLOOR_DB are probed (tests swap in their own).
    """
    mod = importlib.import_module(runner)
    ops = tuple(o for o in (ops or mod.OPS) if mod.op_present(o))
    ident = [PROBE_VERSION, runner, list(ops), cpu, platform.machine(), torch.__version__, torch_cpu_capability()]
    path = (cache or cache_dir()) / f"probes-{hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]}.json"
    report = _read_cache(path)
    if report is None:
        start = time.perf_counter()
        refusals = _probe(mod, runner, ops)
        report = ProbeReport(cpu, torch.__version__, torch_cpu_capability(), ops, refusals,
                             round(time.perf_counter() - start, 2))
        _write_cache(path, report)
    return report


def _read_cache(path: Path) -> ProbeReport | None:
    try:
        d = json.loads(path.read_text())
        return ProbeReport(d["cpu"], d["torch_version"], d["torch_cpu_capability"], tuple(d["ops"]),
                           tuple(tuple(r) for r in d["refusals"]), float(d["seconds"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or unreadable: probe again


def _write_cache(path: Path, report: ProbeReport) -> None:
    d = dict(cpu=report.cpu, torch_version=report.torch_version, torch_cpu_capability=report.torch_cpu_capability,
             ops=list(report.ops), refusals=[list(r) for r in report.refusals], seconds=report.seconds)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".probes-", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(d, f, indent=1)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: the report still serves this process


def _probe(mod, runner: str, ops) -> tuple[tuple[str, str, str], ...]:
    """Run every case, child after child, until each has passed or its class (or op) is refused."""
    cases = [(op, m, n, k, float(mod.SQNR_FLOOR_DB[op])) for op in ops for m, n, k in mod.probe_cases(op)]
    refused: dict[tuple[str, str], str] = {}
    done: set[int] = set()

    def open_cases():
        return [i for i, (op, m, n, k, _) in enumerate(cases) if i not in done
                and (op, WHOLE_OP) not in refused and (op, mod.shape_class(m, n, k)) not in refused]

    while todo := open_cases():
        try:
            results, crashed, detail = _run_child(runner, [cases[i] for i in todo])
        except ProbeError as e:  # nothing could be checked: trust none of the ops
            refused.update({(op, WHOLE_OP): str(e) for op in ops})
            break
        failed_before = False
        for j, (sqnr, error) in sorted(results.items()):
            done.add(todo[j])
            op, m, n, k, floor = cases[todo[j]]
            if error or not sqnr >= floor:
                failed_before = True
                why = f"raises {error}" if error else \
                    f"wrong results on this CPU: {sqnr:.1f} dB against float64 (floor {floor:.0f})"
                refused[(op, mod.shape_class(m, n, k))] = f"{why} at M={m}, N={n}, K={k}"
        if crashed is None:
            continue
        i = todo[crashed]
        op, m, n, k, _ = cases[i]
        where = f"at M={m}, N={n}, K={k}"
        if crashed == 0 or _crashes_alone(runner, cases[i]):
            done.add(i)
            refused[(op, mod.shape_class(m, n, k))] = f"crashes on this CPU ({detail}) {where}"
        elif not failed_before:  # only calls that passed ran before it: one of them broke the process silently
            done.add(i)
            refused[(op, WHOLE_OP)] = (f"corrupts memory on this CPU: the process died ({detail}) {where} after "
                                       "earlier calls that passed, yet that call alone runs")
        # else: a call that failed before it may have corrupted memory; the next child runs this case again
    return tuple((op, cls, why) for (op, cls), why in sorted(refused.items()))


def _crashes_alone(runner: str, case) -> bool:
    return _run_child(runner, [case])[1] is not None


def _run_child(runner: str, cases) -> tuple[dict[int, tuple[float, str]], int | None, str]:
    """({case index: (SQNR, error raised or "")}, index of the case the child died in or None, how it died)."""
    cmd = [sys.executable, "-m", "lowbit.runtime.probes", runner]
    env = dict(os.environ, PYTHONFAULTHANDLER="0")
    try:
        proc = subprocess.run(cmd, input=json.dumps(cases), capture_output=True, text=True, env=env,
                              timeout=_CHILD_TIMEOUT_S)
        out, rc = proc.stdout, proc.returncode
        died = f"signal {-rc}" if rc < 0 else f"exit status {rc}: {proc.stderr.strip()[-300:]}"
    except subprocess.TimeoutExpired as e:  # a hang is refused like a crash
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        rc, died = -1, f"no answer within {_CHILD_TIMEOUT_S} s"
    results, started = {}, None
    for line in out.splitlines():
        word, _, rest = line.partition(" ")
        if word == "start":
            started = int(rest)
        elif word == "done":
            i, sqnr, error = (rest.split(" ", 2) + [""])[:3]
            results[int(i)] = (float(sqnr), error)
    if rc == 0:
        return results, None, ""
    if started is None or started in results:
        raise ProbeError(f"unverified: the probe of torch's CPU ops could not run (its process ended with {died})")
    return results, started, died


def _child(runner: str) -> int:
    mod = importlib.import_module(runner)
    for i, (op, m, n, k, _floor) in enumerate(json.loads(sys.stdin.read())):
        print(f"start {i}", flush=True)
        try:
            print(f"done {i} {float(mod.run_case(op, m, n, k))}", flush=True)
        except Exception as e:  # an op that raises for a shape refuses it as surely as a wrong answer
            first_line = (str(e).strip().splitlines() or [""])[0][:200]
            print(f"done {i} -inf {type(e).__name__}: {first_line}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
