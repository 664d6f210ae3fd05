"""8-bit weights at memory Low through the layer users run, against torch's dynamic int8 and fp32 (issue 29's target:
int8 at memory Low >= torch's dynamic int8 at every M).

For each (K in, N out) of a Llama-shaped model and each M: `QuantLinear(qw, None, BackendConfig("low", precision))`
for int8 per channel and int8 in blocks of 128 (RTN, asymmetric), called through its bound call (the first call
binds it; every timed call is a steady-state forward under no_grad), beside torch's dynamic int8 Linear
(`quantize_dynamic`: fbgemm on x86, per-tensor int8 activations) and torch fp32 F.linear on the same float weight.
Every callable is checked against float64 (SQNR floor) before it is timed, then all take turns round by round
(`interleaved`); medians of the rounds. 1 thread: the calling thread's CPU time (load from other processes does not
count); more threads: wall time. ATen's CPU capability and fbgemm's instruction set are recorded in the header:
`ATEN_CPU_CAPABILITY=avx2` moves torch's own kernels, `FBGEMM_ENABLE_INSTRUCTIONS=AVX2` moves fbgemm's.

Usage: python -m benchmarks.gemm_cpu_int8 [--threads 1,2] [--rounds 7] [--shapes 4096x4096] [--ms 1,8,32,128]
       [--precision normal] [--rowmajor] [--name gemm_cpu_int8]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import lowbit
from lowbit.nn import QuantLinear, kernel_for
from lowbit.quant import QuantConfig, quantize_weight

from .gemm_cpu import MIN_SQNR_DB, load_averages, native_variant_in_use, torch_dynamic_int8
from .harness import Row, describe_environment, interleaved, report, sqnr_db

# (K in, N out) of the ~1B Llama (hidden 2048, MLP 5632) and the 7B-sized square of the older tables
SHAPES = ((2048, 2048), (2048, 5632), (5632, 2048), (4096, 4096))
MS = (1, 8, 32, 128)
FORMATS = (("int8 pc", -1), ("int8 b128", 128))
TARGET_MS = 20.0  # about this much work per timing (calls repeated within it): short calls are not all timer noise




def _checked(name: str, y: torch.Tensor, ref: torch.Tensor, case: str) -> float:
    sq = sqnr_db(ref, y)
    if sq < MIN_SQNR_DB:
        raise RuntimeError(f"{name} on {case}: SQNR {sq:.1f} dB < {MIN_SQNR_DB}; not timing it")
    return sq


def shape_rows(k: int, n: int, ms, rounds: int, threads: int, precision: str, gen, rowmajor: bool = False) -> list[Row]:
    """One row per M of this shape: ms per call of every callable and lowbit's speed-up over each baseline."""
    w = torch.randn(n, k, generator=gen) / k**0.5
    backend = lowbit.BackendConfig("low", precision)
    layers = {}
    for label, block in FORMATS:
        qw = quantize_weight(w, QuantConfig(bits=8, block_size=block))
        layers[label] = (QuantLinear(qw, None, backend).eval(), qw.dequantize(torch.float32).double())
        if rowmajor:  # the same layer with its codes kept row-major (no tiles): the layout's effect in this run
            twin = QuantLinear(quantize_weight(w, QuantConfig(bits=8, block_size=block)), None, backend).eval()
            twin.tile_codes = False
            layers[f"{label} rowmajor"] = (twin, layers[label][1])
    dyn8 = torch_dynamic_int8(w)
    rows = []
    for m in ms:
        x = torch.randn(m, k, generator=gen)
        case = f"{k}x{n} M={m}"
        fns = {"torch fp32": lambda x=x: F.linear(x, w), "torch dyn int8": lambda x=x: dyn8(x)}
        fns |= {label: lambda x=x, layer=layer: layer(x) for label, (layer, _) in layers.items()}
        with torch.no_grad():
            exact = F.linear(x.double(), w.double())
            sq = {"torch dyn int8": _checked("torch dyn int8", dyn8(x), exact, case)}
            for label, (layer, wd) in layers.items():
                layer(x)  # binds the steady-state call for this M's bucket
                sq[label] = _checked(label, layer(x), F.linear(x.double(), wd), case)
            t0 = time.perf_counter()
            fns["torch fp32"]()
            inner = max(1, int(TARGET_MS / 1e3 / max(time.perf_counter() - t0, 1e-6)))
            if threads > 1:  # wall time: single calls, many rounds (a scheduler stall then hits a few samples, not
                inner, rounds = 1, 4 * rounds  # every one of ~20 ms timings; the median leaves them out)
            wall, cpu = interleaved(fns, rounds, inner)
        med = cpu if threads == 1 else wall
        row = {"K": k, "N": n, "M": m, "threads": threads, "torch fp32 ms": med["torch fp32"],
               "dyn8 ms": med["torch dyn int8"]}
        for label, (layer, _) in layers.items():
            if label.endswith(" rowmajor"):
                row[f"{label} ms"] = med[label]
                row[f"{label[:-9]} x rowmajor"] = med[label] / med[label[:-9]]
                continue
            kern = kernel_for(layer, "weight", m)
            row[f"{label} ms"] = med[label]
            row[f"{label} x dyn8"] = med["torch dyn int8"] / med[label]
            row[f"{label} x fp32"] = med["torch fp32"] / med[label]
            row[f"{label} kernel"] = getattr(kern, "name", kern)
        row |= {f"sqnr {name}": v for name, v in sq.items()}
        rows.append(Row(row))
    return rows


def add_before(rows: list[Row], path: str) -> None:
    """Put an earlier run's (saved JSON) speed-ups over dyn8 beside this run's, row by row (same K, N, M, threads)."""
    old = {(r["K"], r["N"], r["M"], r["threads"]): r for r in json.loads(Path(path).read_text())["rows"]}
    for row in rows:
        v = row.values
        prev = old.get((v["K"], v["N"], v["M"], v["threads"]), {})
        for label, _ in FORMATS:
            v[f"{label} x dyn8 before"] = prev.get(f"{label} x dyn8", float("nan"))


def main(argv=None) -> list[Row]:
    """CLI (see the module docstring); saves benchmarks/results/<name>.{md,csv,json} unless --out ''."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1,2", help="thread counts, e.g. 1,2 (torch's and the native kernel's)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--shapes", default=None, help="subset, e.g. 4096x4096,2048x5632 (K x N)")
    p.add_argument("--ms", default=",".join(map(str, MS)))
    p.add_argument("--precision", default="normal", help="the BackendConfig precision of the lowbit layers")
    p.add_argument("--quick", action="store_true", help="4096x4096 only, 3 rounds")
    p.add_argument("--rowmajor", action="store_true",
                   help="also time each lowbit layer with its 8-bit codes kept row-major (QuantLinear.tile_codes)")
    p.add_argument("--before", default=None, help="an earlier run's JSON: its 'x dyn8' columns go beside this run's")
    p.add_argument("--name", default="gemm_cpu_int8")
    p.add_argument("--out", default="benchmarks/results", help="directory for the results; '' to not save")
    args, _ = p.parse_known_args(argv)
    shapes = SHAPES if not args.shapes else [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    if args.quick:
        shapes, args.rounds = ((4096, 4096),), 3
    ms = tuple(int(v) for v in args.ms.split(","))
    loads, rows = [load_averages()], []
    for t in (int(v) for v in args.threads.split(",")):
        torch.set_num_threads(t)  # CLI only: library code never changes torch globals
        gen = torch.Generator().manual_seed(0)
        for k, n in shapes:
            rows += shape_rows(k, n, ms, args.rounds, t, args.precision, gen, args.rowmajor)
        loads.append(load_averages())
    if args.before:
        add_before(rows, args.before)
    env = describe_environment("cpu") | {
        "native": native_variant_in_use(), "precision": args.precision, "before": args.before or "",
        "torch CPU capability": torch.backends.cpu.get_cpu_capability(),
        "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY", "unset"),
        "FBGEMM_ENABLE_INSTRUCTIONS": os.environ.get("FBGEMM_ENABLE_INSTRUCTIONS", "unset"),
        "load average (1/5/15 min, start and after each thread count)": " | ".join(loads)}
    notes = ("lowbit rows: QuantLinear at memory Low and the precision above (the native kernel's activations: "
             "int8 per 32 input channels at precision normal), int8 RTN asymmetric per channel (pc) or blocks of "
             "128, through the bound call; 'x dyn8' / 'x fp32' = torch dynamic int8 ms / lowbit ms and torch fp32 "
             "ms / lowbit ms (> 1: lowbit faster); 'rowmajor' (--rowmajor): the same layer with "
             "QuantLinear.tile_codes = False (its 8-bit codes kept row-major, the layout before "
             "lowbit.nn.q8_tiles), 'x rowmajor' = its ms / the tiled layer's ms; 'kernel' = what dispatch picks "
             "(`lowbit.nn.kernel_for`). Callables interleaved round by round; ms = median of the rounds; 1 thread:"
             " thread CPU time, each timing repeating the call for about 20 ms; 2 threads: wall time of single "
             "calls, 4x the rounds (on the shared 2-core machine other processes' load stalls some calls by a "
             "scheduler slice, ~4-12 ms). 'x dyn8 before': the same column of the run named by --before (the code "
             "before a change, same machine). Weights random Gaussian, the same for every callable (torch's on the"
             " float weight). SQNR in dB against float64 (lowbit: of its dequantized weight).")
    report(args.name, rows, env, args.out or None, title="int8 weights at memory Low vs torch dynamic int8 and fp32",
           notes=notes)
    return rows


if __name__ == "__main__":
    main()
