"""MiniLM (batch 1, sequence 128, 2 threads): fp32 vs lowbit int4/int8 at memory Low and Normal.

Usage: .venv/bin/python bench/bench_minilm.py [--seq-len 128] [--threads 2] [--rounds 3] [--no-save]
Writes bench/results/minilm_cpu.{md,csv,json}.
"""

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is bundled; never reach a hub


def main():
    from lowbit.bench.minilm import run

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds; the best median is kept")
    p.add_argument("--no-save", action="store_true", help="print the table only")
    args = p.parse_args()
    run(args.seq_len, args.threads, out_dir=None if args.no_save else "bench/results", rounds=args.rounds)


if __name__ == "__main__":
    main()
