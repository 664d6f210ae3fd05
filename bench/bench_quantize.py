"""RTN vs HQQ on MiniLM: quantization time and reconstruction error (writes bench/results/quantize_minilm.*)."""

import sys

from lowbit.bench.quantize import main

if __name__ == "__main__":
    sys.exit(main())
