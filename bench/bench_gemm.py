"""GEMM benchmarks: the CPU suite always, the GPU suite when CUDA is available.

Usage: python bench/bench_gemm.py [--quick] [--out DIR]   (results in DIR/gemm_cpu.* and DIR/gemm_gpu.*)
"""

from __future__ import annotations

import sys

import torch

from lowbit.bench import gemm_cpu


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    gemm_cpu.main(argv)
    if torch.cuda.is_available():
        from lowbit.bench import gemm_gpu

        gemm_gpu.main(argv)


if __name__ == "__main__":
    main()
