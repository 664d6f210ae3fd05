"""Validate a compressed model against the original: output error, size, peak memory and latency, in one table.

A model comes from a built-in name (`minilm`) or a user's `module:function` returning (model, example_inputs), the
one contract of every command (lowbit.models.resolve); example_inputs is a tuple of positional arguments (dict
arguments are copied before each call, since some models write their outputs into the dict they are given). The
output compared is the model's tensor output, the "sentence_embedding" of a dict output, or the first tensor of a
tuple/dict.

Peak memory is measured in a separate Python process: it builds the model, drops its float weights to the `meta`
device, then for each checkpoint resets the kernel's peak-RSS counter (/proc/self/clear_refs), loads the
checkpoint and runs one forward; the figure is VmHWM minus the resident memory just before the load.
"resident MB" is `lowbit.nn.resident_bytes` after the first forward in each memory mode, in this process: the
weights and every prepared copy the layers hold (Normal: one float copy, the codes released; High: packed codes plus
the float copy once an M >= 32 call built it; Low: packed codes and the kernels' prepared layouts).
"""

from __future__ import annotations

import copy
import gc
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from ..models.minilm import OUTPUT as SENTENCE_OUTPUT
from ..models.resolve import load_model


def build_model(spec: str):
    """Call the model function (lowbit.models.resolve; validate needs its example inputs); returns (model in eval
    mode, inputs as a tuple)."""
    model, inputs = load_model(spec, needs_inputs=True)
    return model.eval(), inputs


def _output_tensor(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        if isinstance(out.get(SENTENCE_OUTPUT), torch.Tensor):
            return out[SENTENCE_OUTPUT]
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        for item in out:
            if isinstance(item, torch.Tensor):
                return item
    raise TypeError(f"the model returned {type(out).__name__}; expected a tensor, or a dict/tuple holding one")


def call_model(model: torch.nn.Module, inputs: tuple) -> torch.Tensor:
    """One forward pass without autograd; returns the output tensor (see the module docstring)."""
    args = [dict(a) if isinstance(a, dict) else a for a in inputs]
    with torch.inference_mode():
        return _output_tensor(model(*args))


def error_stats(ref: torch.Tensor, out: torch.Tensor) -> dict:
    """max/mean absolute error, cosine similarity and SNR in dB of `out` against `ref` (computed in float64)."""
    ref, out = ref.detach().double().flatten(), out.detach().double().flatten()
    diff = out - ref
    noise = float(diff.norm())
    return {"max_abs": float(diff.abs().max()), "mean_abs": float(diff.abs().mean()),
            "cosine": float(torch.nn.functional.cosine_similarity(ref, out, dim=0)),
            "snr_db": math.inf if noise == 0 else 20 * math.log10(float(ref.norm()) / noise)}


def state_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's state dict tensors (each storage counted once)."""
    seen, total = set(), 0
    for t in model.state_dict().values():
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def checkpoint_bytes(path: str | Path) -> int:
    """Size on disk of a checkpoint, its external data file included."""
    from ..checkpoint.external import data_path_for

    path = Path(path)
    data = data_path_for(path)
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


# ------------------------------------------------------------------------------------------- peak memory (child)


def _status_kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def strip_weights(model: torch.nn.Module) -> torch.nn.Module:
    """Replace every parameter by a `meta` one of the same shape (frees the float weights; buffers stay)."""
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None:
                module._parameters[name] = torch.nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
    return model


def _peak_one(skeleton, inputs, job: dict) -> dict:
    from ..checkpoint import load
    from ..runtime import BackendConfig

    fresh = copy.deepcopy(skeleton)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    base = _status_kb("VmHWM")  # not VmRSS: RSS can shrink after the reset, HWM never does (no negative peak)
    backend = BackendConfig(memory=job.get("memory", "normal"), precision=job.get("precision", "normal"))
    call_model(load(fresh, job["checkpoint"], backend), inputs)
    return {"peak_mb": (_status_kb("VmHWM") - base) / 1024, "base_mb": base / 1024}


def peak_child(spec: str) -> None:
    """The child process: build the model once, then for each JSON job line on stdin {checkpoint, memory,
    precision} print one JSON line with the peak MB of load + one forward."""
    model, inputs = build_model(spec)
    skeleton = strip_weights(model)
    print("LOWBIT-READY", flush=True)
    for line in sys.stdin:
        print("LOWBIT-PEAK " + json.dumps(_peak_one(skeleton, inputs, json.loads(line))), flush=True)
        gc.collect()


_CHILD = "import sys; from lowbit.apps.validate import peak_child; peak_child(sys.argv[1])"


class PeakMeter:
    """A child process measuring peak memory of load + forward, started early so its start-up overlaps other work.

    `wait_ready()` blocks until the child has built its model (it is idle from then on, so it does not disturb
    timings taken meanwhile); `submit(job)` sends a job ({"checkpoint": path, "memory": ..., "precision": ...});
    `results()` closes the queue and returns one dict per job, in order.
    """

    def __init__(self, spec: str):
        if not Path("/proc/self/clear_refs").exists():
            raise RuntimeError("peak-memory measurement needs Linux /proc; run validate with --no-memory")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._err = tempfile.TemporaryFile(mode="w+")
        self._proc = subprocess.Popen([sys.executable, "-c", _CHILD, spec], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._err, text=True, env=env)
        self._jobs = 0
        self._ready = False

    def _failure(self) -> RuntimeError:
        self._err.seek(0)
        last = (self._err.read().strip().splitlines() or ["no output"])[-1]
        return RuntimeError(f"the peak-memory process failed (exit {self._proc.poll()}): {last}")

    def wait_ready(self) -> None:
        while not self._ready:
            line = self._proc.stdout.readline()
            if not line:
                self._proc.wait()
                raise self._failure()
            self._ready = line.startswith("LOWBIT-READY")

    def submit(self, job: dict) -> None:
        self._jobs += 1
        try:
            self._proc.stdin.write(json.dumps(job) + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            pass  # the child died; results() reports its error

    def results(self, timeout: float = 600) -> list[dict]:
        self.wait_ready()
        self._proc.stdin.close()
        out = self._proc.stdout.read()  # the child exits at end of input
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            raise RuntimeError(f"the peak-memory process took longer than {timeout:.0f} s") from None
        tag = "LOWBIT-PEAK "
        lines = [json.loads(ln.removeprefix(tag)) for ln in out.splitlines() if ln.startswith(tag)]
        if self._proc.returncode != 0 or len(lines) != self._jobs:
            raise self._failure()
        return lines

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        for f in (self._proc.stdin, self._proc.stdout, self._err):
            if f is not None and not f.closed:
                f.close()


def measure_peak(spec: str, jobs: list[dict], timeout: float = 600) -> list[dict]:
    """Peak resident MB of load + forward for each job, measured in one separate process (Linux /proc needed)."""
    meter = PeakMeter(spec)
    try:
        for job in jobs:
            meter.submit(job)
        return meter.results(timeout)
    finally:
        meter.close()


# ------------------------------------------------------------------------------------------------ the report


def _latency(model, inputs, reps) -> dict:
    from .timing import time_fn

    t = time_fn(lambda: call_model(model, inputs), warmup=1, reps=reps, min_time_s=0.5, max_reps=50)
    return {"median_ms": t.median_ms, "p20_ms": t.p20_ms, "p80_ms": t.p80_ms}


def _backends() -> list[tuple[str, dict]]:
    from ..runtime import capabilities

    out = [("memory normal", {"memory": "normal"}), ("memory high", {"memory": "high"}),
           ("memory low", {"memory": "low"})]
    caps = capabilities()
    if caps.gpu or caps.cpu_bf16 or caps.cpu_fp16:  # reduced precision only where the hardware runs it natively
        out.append(("memory low, precision low", {"memory": "low", "precision": "low"}))
    return out


def _make_checkpoint(spec: str, cfg, out_dir: Path) -> Path:
    from .. import quantize
    from ..checkpoint import save

    model, _ = build_model(spec)
    return save(quantize(model, cfg), out_dir / "compressed.safetensors")


def validate(spec: str = "minilm", checkpoint: str | Path | None = None, cfg=None, reps: int | None = None,
             peak_memory: bool = True) -> dict:
    """Compare a compressed model with the original; returns the report dict (see `format_report`).

    spec: "minilm" or "module:function". checkpoint: a lowbit checkpoint of that model; None quantizes the model
    with `cfg` (a QuantConfig, default 4-bit block 64) into a temporary file. peak_memory: also measure the peak
    resident memory of load + forward in a separate process per configuration.
    """
    from ..checkpoint import load, save
    from ..nn import resident_bytes
    from ..runtime import BackendConfig

    with tempfile.TemporaryDirectory(prefix="lowbit-validate-") as tmp:
        model, inputs = build_model(spec)
        ref = call_model(model, inputs)
        original = state_bytes(model)
        float_ckpt = save({k: v for k, v in model.state_dict().items()}, Path(tmp) / "float.safetensors")
        ckpt = Path(checkpoint) if checkpoint is not None else _make_checkpoint(spec, cfg, Path(tmp))
        size = checkpoint_bytes(ckpt)
        rows = [{"config": "original (fp32)", "size_mb": original / 1e6, "ratio": 1.0,
                 "resident_mb": resident_bytes(model) / 1e6, **_latency(model, inputs, reps)}]
        del model
        compressed, _ = build_model(spec)
        backends = _backends()
        for i, (label, kw) in enumerate(backends):
            if i == 0:
                load(compressed, ckpt, BackendConfig(**kw))
            else:
                from ..nn import set_backend

                set_backend(compressed, BackendConfig(**kw))
            out = call_model(compressed, inputs)
            rows.append({"config": label, **error_stats(ref, out), "size_mb": size / 1e6, "ratio": original / size,
                         "resident_mb": resident_bytes(compressed) / 1e6, **_latency(compressed, inputs, reps)})
        if peak_memory:
            jobs = [{"checkpoint": str(float_ckpt)}] + [{"checkpoint": str(ckpt), **kw} for _, kw in backends]
            for row, peak in zip(rows, measure_peak(spec, jobs), strict=True):
                row["peak_mb"] = peak["peak_mb"]
    return {"model": spec, "checkpoint": str(checkpoint) if checkpoint else None, "file_bytes": size,
            "original_bytes": original, "rows": rows}


_COLUMNS = [("config", "config", "{}"), ("max_abs", "max abs", "{:.3g}"), ("mean_abs", "mean abs", "{:.3g}"),
            ("cosine", "cosine", "{:.5f}"), ("snr_db", "SNR dB", "{:.1f}"), ("size_mb", "size MB", "{:.2f}"),
            ("ratio", "ratio", "{:.2f}x"), ("resident_mb", "resident MB", "{:.1f}"),
            ("peak_mb", "peak MB (load+fwd)", "{:.1f}"),
            ("median_ms", "median ms", "{:.2f}"), ("p20_ms", "p20 ms", "{:.2f}"), ("p80_ms", "p80 ms", "{:.2f}")]


def format_report(report: dict) -> str:
    """The report as one github-style table."""
    from tabulate import tabulate

    table = [[fmt.format(r[key]) if key in r else "-" for key, _, fmt in _COLUMNS] for r in report["rows"]]
    return tabulate(table, headers=[h for _, h, _ in _COLUMNS], tablefmt="github", disable_numparse=True)
