"""`lowbit bench [--quick]`: the kernel benchmark tables (lowbit.bench.gemm_cpu)."""

from __future__ import annotations

import argparse
import importlib


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="run the kernel benchmark tables",
                       description="Time lowbit's kernels against torch's float matmul on this machine.")
    p.add_argument("--quick", action="store_true", help="fewer shapes and repetitions")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        suite = importlib.import_module("lowbit.bench.gemm_cpu")
    except ModuleNotFoundError as e:
        if e.name not in ("lowbit.bench.gemm_cpu",):
            raise
        raise ImportError("the kernel benchmark suite lowbit.bench.gemm_cpu is not available in this install") from None
    argv = ["--quick"] if args.quick else []
    return int(suite.main(argv) or 0)
