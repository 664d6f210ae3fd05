"""`lowbit bench [--quick] [--out DIR]`: the CPU kernel benchmark tables (lowbit.bench.gemm_cpu)."""

from __future__ import annotations

import argparse
import importlib


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="run the kernel benchmark tables",
                       description="Time lowbit's kernels against torch's float matmul on this machine.")
    p.add_argument("--quick", action="store_true", help="fewer shapes and repetitions")
    p.add_argument("--out", default="", metavar="DIR", help="also save the tables (md, csv, json) to DIR")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        suite = importlib.import_module("lowbit.bench.gemm_cpu")
    except ModuleNotFoundError as e:
        if e.name != "lowbit.bench.gemm_cpu":
            raise
        raise ImportError("the kernel benchmark suite lowbit.bench.gemm_cpu is not available in this install") from None
    argv = (["--quick"] if args.quick else []) + ["--out", args.out]
    result = suite.main(argv)  # the suite prints its tables and returns its rows
    return result if isinstance(result, int) else 0
