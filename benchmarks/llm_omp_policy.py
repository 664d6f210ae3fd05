"""Decode at 2 threads under each OpenMP wait policy: one child process per policy (libgomp reads OMP_WAIT_POLICY
once, when torch loads it; lowbit's native kernels run on that same runtime).

Each child builds the `llm` bench's 1B shape with --layers blocks, int4 b128 RTN at memory Low, and reports the
median of 3 greedy decodes of --tokens tokens after an 8-token prompt: ms per token (wall, between the first and
the last token) and the process's CPU time (all threads) over the wall time. Policies run one after another per
round, --rounds rounds.

Usage: python -m benchmarks.llm_omp_policy [--layers 4] [--tokens 32] [--threads 2] [--rounds 2]
       [--policies unset passive active]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

POLICIES = ("unset", "passive", "active")


def child(layers: int, tokens: int, threads: int) -> str:
    """One policy's line: "<policy> <wall ms per token> <process CPU / wall> <load>"."""
    import resource
    import statistics
    import time

    import torch

    from . import llm
    from .llm_decode import decode_tps

    llm.MODELS["omp"] = dict(llm.MODELS["1b"], num_hidden_layers=layers)
    torch.set_num_threads(threads)
    q = llm.variant(llm.build_model("omp"), "int4-b128", in_place=True)
    prompt = torch.randint(0, 32000, (1, 8), generator=torch.Generator().manual_seed(2))
    decode_tps(q, prompt, 8)  # warm-up
    walls, cpus = [], []
    for _ in range(3):
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        wall, _ = decode_tps(q, prompt, tokens)
        r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        walls.append(1e3 / wall)
        cpus.append((r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / (t1 - t0))
    policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    return f"{policy} {statistics.median(walls):.2f} {statistics.median(cpus):.2f} {os.getloadavg()[0]:.1f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--policies", nargs="+", choices=POLICIES, default=list(POLICIES))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help="ignored (prints only)")
    args = p.parse_args(argv)
    if args.child:
        print(child(args.layers, args.tokens, args.threads))
        return 0
    print("policy | wall ms per token | process CPU / wall | load")
    for _ in range(args.rounds):
        for policy in args.policies:
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            if policy != "unset":
                env["OMP_WAIT_POLICY"] = policy
            cmd = [sys.executable, "-m", "benchmarks.llm_omp_policy", "--child", "--layers", str(args.layers),
                   "--tokens", str(args.tokens), "--threads", str(args.threads)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            print(out.stdout.strip().splitlines()[-1] if out.returncode == 0 else f"{policy} failed: "
                  f"{out.stderr.strip()[-300:]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
