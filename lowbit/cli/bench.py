"""`lowbit bench [SUITE] [suite options]`: run one benchmark suite of a checkout's benchmarks/ (default: gemm_cpu).

The suites live in the source tree's `benchmarks/` folder beside the `lowbit` package, not in the wheel: from a
checkout (or an editable install) each is also `python -m benchmarks.<suite>` run from the root; `lowbit bench SUITE
--help` lists its options. The CLI prints the tables and saves them (md, csv, json) only with `--out DIR`;
`python -m` saves to benchmarks/results/ by default. Installed without the source tree, `lowbit bench` says so.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

SUITES = {
    "gemm_cpu": "CPU GEMM: lowbit's kernels vs torch fp32/bf16 and dynamic int8, per shape and M",
    "gemm_gpu": "GPU GEMM: the Triton kernels vs torch fp16 F.linear (and gemlite); needs CUDA",
    "gemm": "gemm_cpu, then gemm_gpu when CUDA is available",
    "minilm": "the bundled MiniLM on CPU: fp32 vs lowbit memory modes, latency, bytes, cosine",
    "quantize": "RTN vs HQQ on MiniLM: quantization time and weight error",
    "convert_memory": "peak memory of convert and load on a synthetic 1 GB checkpoint",
    "dataaware": "GPTQ / AWQ vs RTN / HQQ on MiniLM: embedding cosine to fp32 and quantization time",
    "auto": "auto quantization on MiniLM: plans vs uniform settings at equal size and error, tuning time",
    "static_int8": "static W8A8 Linear 4096^2 and a conv net vs torch fp32 / dynamic int8 (interleaved timing)",
    "hf": "a small Llama through transformers fp32 vs lowbit's quantizer at memory Low/Normal: tokens/s at batch 1",
    "llm": "decoder LLM at batch 1: decode/prefill tokens/s, torch fp32/bf16 vs lowbit int4/int8 (and llama.cpp)",
    "llm_overhead": "a decoded token's CPU time split into kernel, the layers' Python and the rest, per decode "
                    "setting, plain / fused / prepare_decode (1B shape, --layers of it)",
    "llm_memory": "sequential GPTQ of Llama-shaped models of three sizes: peak RSS, and one run under RLIMIT_AS",
    "llm_gptq": "lowbit convert --method gptq on a ~1B Llama: wall time per block, peak RSS, optionally in a memory "
                "cgroup",
    "gemm_cpu_int8": "int8 weights at memory Low through QuantLinear vs torch dynamic int8 and fp32, per 1B-model "
                     "shape and M (1 and 2 threads)",
    "gemv_cpu": "the native M = 1 (decode) kernel alone: GB/s per 1B-model shape against a memory stream "
                "(and llama.cpp's kernel with --ggml)",
    "xdomain": "MiniLM quality across domains: 2 calibration kinds x held-out sets x memory Normal/Low, with peers",
    "mnn": "lowbit vs MNN 3.6 at memory Low, 1 thread (int4 b128, int8 per channel); needs the mnn extra",
    "convnet": "conv nets (resnet18, mobilenet_v2, mobilenet_v3_small, seqnet): fp32 / dynamic / lowbit modes / static",
}


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="run a benchmark suite (default: the CPU GEMM tables)",
                       description=__doc__.splitlines()[0],
                       epilog="suites: " + "; ".join(f"{k}: {v}" for k, v in SUITES.items()))
    p.add_argument("--quick", action="store_true", help="fewer shapes and repetitions (suites that have it)")
    p.add_argument("--out", default=None, metavar="DIR", help="also save the tables (md, csv, json) to DIR")
    p.add_argument("suite", nargs="?", default="gemm_cpu", metavar="SUITE",
                   help=f"one of {', '.join(SUITES)} (default gemm_cpu)")
    p.add_argument("suite_args", nargs=argparse.REMAINDER, help="options passed to the suite (SUITE --help)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    name = args.suite
    argv = (["--quick"] if args.quick else []) + (["--out", args.out] if args.out is not None else [])
    argv += list(args.suite_args)
    if name not in SUITES:
        raise ValueError(f"unknown benchmark suite {name!r}: use one of {', '.join(SUITES)}")
    if args.out and os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"--out {args.out} exists and is not a folder: the suite saves <name>.md/.csv/.json in a "
                         "folder (it has no other inputs to protect)")
    if not any(a == "--out" or a.startswith("--out=") for a in argv) and "-h" not in argv and "--help" not in argv:
        argv += ["--out", ""]  # the CLI prints; it saves only where asked
    result = load_suite(name).main(argv)  # a suite prints its tables; it returns an exit code or its rows
    return result if isinstance(result, int) else 0


def benchmarks_dir() -> Path | None:
    """The `benchmarks/` folder of the source tree that holds this `lowbit` package, or None when lowbit is installed
    without it (a wheel ships no benchmarks)."""
    folder = Path(__file__).resolve().parents[2] / "benchmarks"
    return folder if (folder / "__init__.py").is_file() and (folder / "harness.py").is_file() else None


def load_suite(name: str):
    """The module `benchmarks.<name>` of `benchmarks_dir()`, its root put on sys.path if it is not there.

    Raises ImportError (one line for the CLI) when there is no such folder, when another package named `benchmarks`
    is imported instead of it, or when the suite's module is missing."""
    folder = benchmarks_dir()
    if folder is None:
        raise ImportError("the benchmark suites are not installed with lowbit: run `lowbit bench` from a source "
                          "checkout of lowbit (its benchmarks/ folder), e.g. after `pip install -e .`")
    if str(folder.parent) not in sys.path:
        sys.path.insert(0, str(folder.parent))
    package = importlib.import_module("benchmarks")
    where = getattr(package, "__file__", None)
    if where is None or Path(where).resolve().parent != folder:
        raise ImportError(f"`benchmarks` is imported from {where or package.__path__}, not from lowbit's {folder}: run "
                          "`lowbit bench` where no other package named benchmarks comes first on the path")
    try:
        return importlib.import_module(f"benchmarks.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"benchmarks.{name}":
            raise
        raise ImportError(f"the benchmark suite benchmarks.{name} is not available in {folder}") from None
