"""GEMM benchmarks: the CPU suite always, the GPU suite when CUDA is available.

Usage: python -m benchmarks.gemm [--quick] [--out DIR] [CPU options: --rounds N --threads N --clock cpu --impls]
Results go to DIR/gemm_cpu.* and DIR/gemm_gpu.* (default DIR: benchmarks/results).
"""

from __future__ import annotations

import argparse
import sys

import torch

from . import gemm_cpu


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quick", action="store_true")
    common.add_argument("--out", default="benchmarks/results")
    shared, _ = common.parse_known_args(argv)
    gemm_cpu.main(argv)
    if torch.cuda.is_available():
        from . import gemm_gpu

        gemm_gpu.main((["--quick"] if shared.quick else []) + ["--out", shared.out])
    return 0


if __name__ == "__main__":
    main()
