"""GPU GEMM benchmark (Triton kernels vs fp16 F.linear and gemlite); writes bench/results/gemm_gpu.*. Needs CUDA."""

import sys

from lowbit.bench.gemm_gpu import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
