"""Conv nets on the CPU: torch fp32 / torch dynamic int8 / lowbit int8 and int4 at memory Normal, Low and High /
lowbit static INT8, on resnet18-, mobilenet_v2- and mobilenet_v3_small-shaped models (benchmarks.convnet_models)
and the conv + BiLSTM test model (tests/seqnet.py, when the source tree is at hand), timed interleaved in one run;
with --peers MNN at Memory_Low and onnxruntime's static int8 (QDQ) on the same ONNX export.

Per (model, batch, threads) every method runs once per round (rounds repeated; medians), so load changes hit all
alike; with --threads 1 the process is pinned to one core. Each output is compared with fp32's (SQNR) before
timing; "float copies" counts the quantized convs and LSTMs that run a float copy of their weight at that memory
mode (dispatch.select_conv, dispatch.select_lstm). Results: benchmarks/results/convnet*.md.
"""

from __future__ import annotations

import argparse
import copy
import functools
import importlib.util
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from .convnet_models import MODELS, build
from .harness import Row, describe_environment, interleaved, load_average, report, sqnr_db
from .static_int8 import cpu_model, dynamic_int8

LOWBIT = (("int8 pc", 8, -1), ("int4 b64", 4, 64))
MEMORIES = ("normal", "low", "high")


def _seqnet() -> nn.Module | None:
    path = Path(__file__).resolve().parents[1] / "tests" / "seqnet.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("lowbit_bench_seqnet", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    return mod.SeqNet().eval().requires_grad_(False)


def model_and_input(name: str, batch: int) -> tuple[nn.Module, torch.Tensor]:
    if name == "seqnet":
        return _seqnet(), torch.randn(batch, 16, 24)
    return build(name), torch.randn(batch, 3, 224, 224)


def float_copies(model: nn.Module) -> int:
    """Quantized convs and LSTMs holding a float copy of their (first) weight in the weight cache (DENSE prepared:
    memory Low / High's fallback; memory Normal's own float copies are not counted)."""
    from lowbit.nn import QuantConv1d, QuantConv2d, QuantLSTM
    from lowbit.nn.weight_cache import cached
    from lowbit.runtime import Kernel

    n = 0
    for m in model.modules():
        if isinstance(m, (QuantConv1d, QuantConv2d, QuantLSTM)):
            entry = cached(m.quantized_weight(m.quantized_names[0]).packed)
            n += entry is not None and any(k[0] is Kernel.DENSE for k in entry.prepared)
    return n


def methods(model: nn.Module, x: torch.Tensor, static: bool, only: tuple[str, ...] | None = None
            ) -> dict[str, nn.Module]:
    from lowbit.nn import quantize
    from lowbit.quant import QuantConfig
    from lowbit.runtime import BackendConfig

    out = {"torch fp32": model}
    if _wanted("torch dynamic int8", only):
        out["torch dynamic int8"] = dynamic_int8(copy.deepcopy(model))
    for label, bits, block in LOWBIT:
        for memory in MEMORIES:
            if _wanted(f"lowbit {label} {memory}", only):
                out[f"lowbit {label} {memory}"] = quantize(copy.deepcopy(model), QuantConfig(bits=bits,
                                                                                            block_size=block),
                                                          backend=BackendConfig(memory))
    if static and _wanted("lowbit static INT8", only):
        from lowbit.static import StaticConfig, quantize_static

        cal = [torch.randn_like(x[:1]) for _ in range(8)]
        out["lowbit static INT8"] = quantize_static(copy.deepcopy(model), cal, StaticConfig(), progress=False)
    return out


class MnnModel:
    """A converted .mnn model run by MNN's module API on the CPU at Memory_Low, precision Normal."""

    def __init__(self, path: Path, threads: int):
        import MNN.expr as F
        import MNN.nn as nn

        self._F = F
        self._module = nn.load_module_from_file(str(path), ["x"], ["y"], memory_mode=F.MemoryMode.Low,
                                                precision_mode=F.PrecisionMode.Normal, thread_num=threads)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        a = x.detach().contiguous().numpy()
        y = self._module.forward([self._F.const(a, list(a.shape), self._F.NCHW)])[0]
        return torch.from_numpy(self._F.convert(y, self._F.NCHW).read().copy())


def export_onnx(model: nn.Module, x: torch.Tensor, tmp: Path) -> Path | None:
    """The model as ONNX (TorchScript exporter) for the peers; None without onnx."""
    if importlib.util.find_spec("onnx") is None:
        return None
    onnx_path = tmp / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(onnx_path), dynamo=False, input_names=["x"], output_names=["y"])
    return onnx_path


def mnn_methods(onnx_path: Path, threads: int, tmp: Path) -> dict:
    """MNN 3.x at Memory_Low on the same model: its ONNX export converted by MNN's converter with 8-bit per-channel
    and 4-bit block-64 weights (the `mnn` suite's converter call); {} without MNN."""
    from .mnn import convert_mnn, mnn_version

    if mnn_version() is None:
        return {}
    out = {}
    for label, bits, block in (("int8 pc", 8, -1), ("int4 b64", 4, 64)):
        path = tmp / f"model_w{bits}.mnn"
        convert_mnn(onnx_path, path, bits, block)
        out[f"MNN {mnn_version()} {label} Memory_Low"] = MnnModel(path, threads)
    return out


class OrtModel:
    """An ONNX model run by onnxruntime's CPU session (intra-op threads as asked, one inter-op thread)."""

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._session.run(["y"], {"x": x.detach().contiguous().numpy()})[0])


def ort_methods(onnx_path: Path, x: torch.Tensor, threads: int, tmp: Path) -> dict:
    """onnxruntime's static int8 on the same ONNX export: `quantize_static` with its own calibration (MinMax on the
    same 8 random images lowbit's static INT8 calibrates on), QDQ format, int8 per-channel weights and int8
    activations; {} without onnxruntime (the `onnx` extra)."""
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    except ImportError:
        return {}

    class _Images(CalibrationDataReader):
        def __init__(self):
            torch.manual_seed(1)
            self._it = iter([{"x": torch.randn_like(x).numpy()} for _ in range(8)])  # the exported batch

        def get_next(self):
            return next(self._it, None)

    path = tmp / "model_ort_int8.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(str(onnx_path), str(path), _Images(), quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QInt8)
    return {f"onnxruntime {ort.__version__} static int8 QDQ": OrtModel(path, threads)}


def _wanted(label: str, only: tuple[str, ...] | None) -> bool:
    """torch fp32 (the baseline) always; else every method, or those whose label contains one of `only`."""
    return only is None or label == "torch fp32" or any(o in label for o in only)


def bench_case(name: str, batch: int, threads: int, rounds: int, peers: bool = False,
               only: tuple[str, ...] | None = None) -> list[Row]:
    torch.set_num_threads(threads)
    model, x = model_and_input(name, batch)
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore")  # the float-copy warnings are counted in the table instead
        mods = {k: m for k, m in methods(model, x, static=name != "seqnet", only=only).items() if _wanted(k, only)}
        onnx_path = export_onnx(model, x, Path(tmp)) if peers else None
        if onnx_path is not None:
            if _wanted("MNN", only):
                mods.update(mnn_methods(onnx_path, threads, Path(tmp)))
            if name != "seqnet" and _wanted("onnxruntime", only):
                mods.update(ort_methods(onnx_path, x, threads, Path(tmp)))
        with torch.no_grad():
            ref = model(x)
            sq = {k: sqnr_db(ref, m(x)) for k, m in mods.items()}
            load0 = load_average()
            wall, cpu = interleaved({k: functools.partial(m, x) for k, m in mods.items()}, rounds,
                                    cpu_clock=time.process_time)  # MNN computes on threads of its own
    fp32, fp32_cpu = wall["torch fp32"], cpu["torch fp32"]
    return [Row({"model": name, "batch": batch, "threads": threads, "method": k, "ms": ms, "cpu ms": cpu[k],
                 "vs fp32": fp32 / ms, "vs fp32 (cpu)": fp32_cpu / cpu[k], "SQNR dB": sq[k],
                 "float copies": float_copies(mods[k]) if isinstance(mods[k], nn.Module) else "", "load": load0})
            for k, ms in wall.items()]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join([*MODELS, "seqnet"]))
    p.add_argument("--batches", default="1")
    p.add_argument("--threads", default="1")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--quick", action="store_true", help="mobilenet_v3_small only, 3 rounds")
    p.add_argument("--methods", default=None,
                   help="comma-separated parts of method labels to run (e.g. 'static,onnxruntime'); torch fp32 "
                        "always runs; default: every method")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--name", default="convnet")
    p.add_argument("--peers", action="store_true",
                   help="MNN at Memory_Low and onnxruntime's static int8 beside (the mnn and onnx extras)")
    args = p.parse_args(argv)
    models = ["mobilenet_v3_small"] if args.quick else args.models.split(",")
    rounds = 3 if args.quick else args.rounds
    rows = []
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    for threads in map(int, args.threads.split(",")):
        if cores is not None:  # one thread pinned to one core; more threads on every core given
            os.sched_setaffinity(0, {min(cores)} if threads == 1 else cores)
        for name in models:
            for batch in map(int, args.batches.split(",")):
                only = tuple(args.methods.split(",")) if args.methods else None
                rows += bench_case(name, batch, threads, rounds, args.peers, only)
                print(f"done: {name} batch {batch}, {threads} thread(s)", flush=True)
    env = describe_environment()
    env["cpu"] = cpu_model()
    env["load after"] = load_average()
    report(args.name, rows, env, out_dir=args.out or None)
    return rows


if __name__ == "__main__":
    main()
