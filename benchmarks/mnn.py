"""MNN 3.6 beside lowbit on CPU: the same Linear weights at memory Low, 1 thread, torch fp32 / dynamic int8 beside.

MNN's weight-quantized runtime and lowbit's QuantLinear run the same weights, timed interleaved in one run.

Each weight is exported to ONNX, converted with MNN's converter (`--weightQuantBits 4 --weightQuantBlock 128`, and
8 bits per channel) and run with MNN's Python module API at Memory_Low, precision Normal and Low, 1 thread. Every
point is checked against float64 x @ W^T (relative error, with a ceiling per bit width) before it is timed.
Needs the `mnn` extra (`pip install lowbit[mnn]`); without MNN the suite says so and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from lowbit.nn import QuantLinear
from lowbit.quant import QuantConfig, quantize_weight
from lowbit.runtime import BackendConfig

from .gemm_cpu import Method, baselines, load_averages, native_variant_in_use
from .harness import Row, Timing, describe_environment, report, time_fn

SHAPES = ((4096, 4096), (384, 384), (1536, 384), (384, 1536))  # (K in, N out)
MS = (1, 32, 128)
QUICK_SHAPES = ((4096, 4096),)
# weight formats both libraries run: (label, bits, block); block -1 = per output channel
FORMATS = (("int4 b128", 4, 128), ("int8 pc", 8, -1))
PRECISIONS = ("normal", "low")
# ||y - x @ W^T|| / ||x @ W^T|| ceilings: 4-bit blocks give ~0.08-0.12 on Gaussian weights, 8-bit ~0.01; a wrong
# layout or scale gives ~1
MAX_REL_ERR = {4: 0.2, 8: 0.04, 32: 1e-4}


def mnn_version() -> str | None:
    """The installed MNN's version, or None when MNN is not importable."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # MNN prints its CPU features on import
            import MNN
    except ImportError:
        return None
    return MNN.version()


def export_onnx(w: torch.Tensor, path: Path) -> None:
    """A bias-free Linear with weight w (N, K) as ONNX, input "x" (M, K) with a dynamic M, output "y"."""
    n, k = w.shape
    lin = torch.nn.Linear(k, n, bias=False)
    lin.weight.data.copy_(w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(lin, (torch.zeros(2, k),), str(path), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "m"}, "y": {0: "m"}})


def convert_mnn(onnx_path: Path, mnn_path: Path, bits: int, block: int) -> None:
    """MNN's converter with weight quantization (block -1: per channel). It calls the converter's native entry
    directly: MNN's `mnnconvert` wrapper also sends usage logs to a remote server and pip-installs a logging SDK."""
    args = ["-f", "ONNX", "--modelFile", str(onnx_path), "--MNNModel", str(mnn_path), "--bizCode", "lowbit",
            "--weightQuantBits", str(bits)] + (["--weightQuantBlock", str(block)] if block > 0 else [])
    partial = mnn_path.with_name(mnn_path.name + ".partial")  # renamed once the converter succeeded
    args[args.index("--MNNModel") + 1] = str(partial)
    code = "import sys, _tools; _tools.mnnconvert(sys.argv)"
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if done.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"MNN conversion of {onnx_path} failed ({done.returncode}): {done.stdout[-800:]}"
                           f"{done.stderr[-800:]}")
    os.replace(partial, mnn_path)


class MnnLinear:
    """A converted .mnn Linear run by MNN's module API on the CPU at memory Low: torch (M, K) fp32 in, (M, N) out."""

    def __init__(self, path: Path, precision: str, threads: int = 1):
        import MNN.expr as F
        import MNN.nn as nn

        self._F = F
        modes = {"normal": F.PrecisionMode.Normal, "low": F.PrecisionMode.Low}
        if precision not in modes:
            raise ValueError(f"precision={precision!r} is not valid: use one of {', '.join(map(repr, modes))}")
        # memory/precision as arguments: a runtime_manager from create_runtime_manager ignores "memory"
        self._module = nn.load_module_from_file(str(path), ["x"], ["y"], memory_mode=F.MemoryMode.Low,
                                                precision_mode=modes[precision], thread_num=threads)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        a = x.detach().contiguous().numpy()
        y = self._module.forward([self._F.const(a, list(a.shape), self._F.NCHW)])[0]
        return torch.from_numpy(y.read())


def rel_err(ref64: torch.Tensor, y: torch.Tensor) -> float:
    """||y - ref|| / ||ref|| in float64."""
    return float((y.double() - ref64).norm() / ref64.norm())


def _mnn_methods(w: torch.Tensor, tmp: Path) -> list[tuple[Method, int]]:
    """MNN at memory Low per format (one conversion each) and precision; weight bytes = the .mnn file's size."""
    onnx_path = tmp / "linear.onnx"
    export_onnx(w, onnx_path)
    out = []
    for label, bits, block in FORMATS:
        path = tmp / f"linear_w{bits}.mnn"
        convert_mnn(onnx_path, path, bits, block)
        for prec in PRECISIONS:
            out.append((Method(f"MNN {label} Low/{prec}", path.stat().st_size, False, MnnLinear(path, prec)), bits))
    return out


def _lowbit_methods(w: torch.Tensor) -> list[tuple[Method, int]]:
    """lowbit QuantLinear at memory Low: int4 block 128 (asymmetric RTN) and int8 per channel, both precisions."""
    out = []
    for label, bits, block in FORMATS:
        qw = quantize_weight(w, QuantConfig(bits=bits, block_size=block))
        for prec in PRECISIONS:
            layer = QuantLinear(qw, None, BackendConfig("low", prec))
            out.append((Method(f"lowbit {label} Low/{prec}", qw.nbytes, False, layer), bits))
    return out


def _check(methods: list[tuple[Method, int]], x: torch.Tensor, w: torch.Tensor, where: str) -> list[float]:
    """Each method's relative error to float64 x @ W^T; raises before a clearly wrong point is timed."""
    ref = x.double() @ w.double().T
    errs = []
    with torch.inference_mode():
        for meth, bits in methods:
            err = rel_err(ref, meth.fn(x))
            if not err <= MAX_REL_ERR[bits]:
                raise RuntimeError(f"{meth.name} on {where}: relative error {err:.3g} > {MAX_REL_ERR[bits]}; "
                                   "not timing it")
            errs.append(err)
    return errs


def _time_interleaved(methods: list[Method], x: torch.Tensor, rounds: int) -> list[Timing]:
    """Wall time, methods taking turns for `rounds` rounds; each keeps its round with the lowest median (load
    drifts). Not CPU time: MNN's 1-thread runtime computes on a worker thread and keeps the calling thread busy
    too, so process CPU time counts its calls about twice (0.81 ms CPU for 0.42 ms wall at 4096x4096 M=1) and the
    calling thread's CPU time misses most of the work."""
    best: list[Timing | None] = [None] * len(methods)
    with torch.inference_mode():
        for _ in range(rounds):
            for i, meth in enumerate(methods):
                t = time_fn(lambda meth=meth: meth.fn(x), warmup=2, min_time_s=0.06, max_reps=40)
                if best[i] is None or t.median_ms < best[i].median_ms:
                    best[i] = t
    return best


def _rows(k: int, n: int, m: int, methods: list[Method], timings: list[Timing], errs: list[float]) -> list[Row]:
    """Rows with ratios: x fp32 = torch fp32 ms / this ms; x MNN (lowbit rows) = MNN ms, same format and
    precision / lowbit ms (> 1: lowbit faster)."""
    ms = {meth.name: t.median_ms for meth, t in zip(methods, timings, strict=True)}
    rows = []
    for meth, t, err in zip(methods, timings, errs, strict=True):
        peer = "MNN" + meth.name.removeprefix("lowbit") if meth.name.startswith("lowbit") else None
        rows.append(Row({"K": k, "N": n, "M": m, "method": meth.name, "ms": t.median_ms, "p20": t.p20_ms,
                         "p80": t.p80_ms, "rel err": err, "weight MB": meth.weight_bytes / 2**20,
                         "x fp32": ms["torch fp32"] / t.median_ms,
                         "x MNN": ms[peer] / t.median_ms if peer in ms else float("nan")}))
    return rows


def run_suite(shapes=SHAPES, ms=MS, rounds: int = 5, seed: int = 0) -> list[Row]:
    """Check then time torch, lowbit and MNN on every (shape, M); one row per method."""
    from tqdm import tqdm

    gen = torch.Generator().manual_seed(seed)
    rows: list[Row] = []
    for k, n in tqdm(shapes, desc="mnn bench", unit="shape"):
        w = torch.randn(n, k, generator=gen) / k**0.5
        torch_methods = [(mth, 32 if mth.name == "torch fp32" else 8) for mth in baselines(w, None)
                         if mth.name in ("torch fp32", "torch dyn int8")]
        with tempfile.TemporaryDirectory(prefix="lowbit_mnn_") as tmp:
            methods = torch_methods + _lowbit_methods(w) + _mnn_methods(w, Path(tmp))
            for m in ms:
                x = torch.randn(m, k, generator=gen)
                errs = _check(methods, x, w, f"{k}x{n} M={m}")
                plain = [mth for mth, _ in methods]
                rows += _rows(k, n, m, plain, _time_interleaved(plain, x, rounds), errs)
    return rows


def main(argv: list[str] | None = None) -> list[Row] | int:
    """CLI: `python -m benchmarks.mnn [--quick] [--out DIR]` (saves benchmarks/results/mnn_cpu_1t.*)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="4096x4096 only")
    p.add_argument("--out", default="benchmarks/results", help="directory for <name>.{md,csv,json}; '' to not save")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds; each method keeps its best")
    p.add_argument("--name", default="mnn_cpu_1t", help="results file stem")
    args, _ = p.parse_known_args(argv)
    version = mnn_version()
    if version is None:
        print("benchmarks.mnn: MNN is not installed (pip install 'lowbit[mnn]'); nothing to compare, skipping.")
        return 0
    torch.set_num_threads(1)  # CLI only: the comparison is single-threaded on both sides
    env = describe_environment("cpu") | {"MNN": version, "native": native_variant_in_use(), "clock": "wall",
                                         "load_start": load_averages()}
    rows = run_suite(QUICK_SHAPES if args.quick else SHAPES, MS, rounds=args.rounds)
    notes = ("1 thread everywhere. Weights are random Gaussian / sqrt(K); shapes are (K in, N out). MNN: the ONNX "
             "export converted with `--weightQuantBits 4 --weightQuantBlock 128` (int4 b128) or `--weightQuantBits 8`"
             " (int8 per channel), run at Memory_Low through MNN.nn.load_module_from_file; its time includes the "
             "numpy <-> MNN Var copies of its Python API. lowbit: QuantLinear at memory Low (asymmetric RTN). "
             "rel err = ||y - x W^T|| / ||x W^T|| against float64. x MNN = MNN ms (same format and precision) / "
             f"lowbit ms, > 1 = lowbit faster. ms = wall time, best median of {args.rounds} interleaved rounds (CPU "
             "time would count MNN twice: its 1-thread runtime keeps a worker and the calling thread busy).")
    report(args.name, rows, env | {"load_end": load_averages()}, args.out or None,
           title="CPU: lowbit vs MNN 3.6 (memory Low, 1 thread)", notes=notes)
    return rows


if __name__ == "__main__":
    main()
