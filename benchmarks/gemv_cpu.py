"""Decode (M = 1) Linear kernel bench: GB/s of weight bytes streamed by lowbit's native kernel on the ~1B Llama's
shapes, against a plain memory read at the same thread count.

Each (shape, format) cycles through enough copies of its weight (> `--mib` MiB together, beyond the 32 MiB L3) that
every call reads its weight from DRAM, as in decode. One timing = one pass over the copies through the bound native
call (`NativeCall`: activation quantization + GEMV, the runtime's path); GB/s = packed codes + scales + scale*zero
bytes / time. At 1 thread the clock is the thread's CPU time (load on the shared machine does not count); at 2
threads wall time. Formats are interleaved round by round; medians. The stream row is torch.sum over a float32
tensor of the same size (the llm bench's floor). llama.cpp's rows come from `benchmarks/ggml_gemv.c` (built against
the llama.cpp tree, same shapes and copies) when --ggml names its binary.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import subprocess
import time

import torch

from lowbit.kernels.cpu_int4 import bind_int4_cpu, prepare_int4_cpu
from lowbit.quant import QuantConfig, quantize_weight

try:
    from lowbit.kernels.cpu_native import huge_copy
except ImportError:  # a lowbit from before huge pages (this bench run against an older checkout): 4 KiB pages only
    huge_copy = None

from .gemm_cpu import load_averages, native_variant_in_use
from .harness import Row, describe_environment, report

# (K in, N out) of the ~1B Llama (hidden 2048, 16 layers, GQA 32/8 heads, MLP 5632, vocab 32000)
SHAPES = ((2048, 2048), (2048, 512), (2048, 5632), (5632, 2048), (2048, 32000))
FORMATS = ("int4-b32", "int4-b64", "int4-b128", "int8")


def _bound_copies(k: int, n: int, fmt: str, mib: float, activations: str, gen, small_pages: bool) -> tuple[list, int]:
    """Bound calls of copies of one random weight (at least `mib` MiB together) and the bytes one call reads."""
    w = torch.randn(n, k, generator=gen) / k**0.5
    bits, block = (8, -1) if fmt == "int8" else (4, int(fmt.split("-b")[1]))
    w4 = prepare_int4_cpu(quantize_weight(w, QuantConfig(bits=bits, block_size=block)), "native")
    per = sum(t.nbytes for name, t in w4.tensors.items() if name in ("packed", "scale", "scale_zero"))
    copies = max(1, int(mib * 2**20 // per) + 1)
    return [bind_int4_cpu(_clone(w4, small_pages), activations) for i in range(copies)], per


def _clone(w4, small_pages: bool):
    """w4 with its own copy of every tensor (another place in memory, same values): on huge pages as
    prepare_int4_cpu places them, or (small_pages) in ordinary 4 KiB pages as before."""
    place = (lambda t: t.clone()) if small_pages or huge_copy is None else huge_copy
    return dataclasses.replace(w4, tensors={k: place(v) for k, v in w4.tensors.items()})


def _pass(calls, x: torch.Tensor, y: torch.Tensor, threads: int) -> float:
    """Seconds of one pass over the copies: thread CPU time at 1 thread, wall time otherwise."""
    clock = time.thread_time if threads == 1 else time.perf_counter
    px, py = x.data_ptr(), y.data_ptr()
    t0 = clock()
    for c in calls:
        c(px, 1, py, None, threads)
    return clock() - t0


def stream_gbs(mib: float, threads: int, reps: int, huge: bool = False) -> float:
    """GB/s of torch.sum over a float32 tensor of `mib` MiB at `threads` threads (median of reps), on ordinary pages
    or (huge) on huge pages as the prepared weights are."""
    a = torch.ones(int(mib * 2**20) // 4)
    if huge and huge_copy is not None:
        a = huge_copy(a)
    clock = time.thread_time if threads == 1 else time.perf_counter
    a.sum()
    ts = []
    for _ in range(reps):
        t0 = clock()
        a.sum()
        ts.append(clock() - t0)
    return a.nbytes / statistics.median(ts) / 1e9


def run(shapes, formats, threads: int, mib: float, rounds: int, activations: str, small_pages: bool) -> list[Row]:
    """One row per (shape, format): GB/s and us per call at `threads` threads (interleaved rounds, medians)."""
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    rows = []
    stream = stream_gbs(4 * mib, threads, max(rounds, 5))
    stream_huge = stream_gbs(4 * mib, threads, max(rounds, 5), huge=True)
    for k, n in shapes:
        setups = {f"{f}{' 4k' * sp}": _bound_copies(k, n, f, mib, activations, gen, sp)
                  for f in formats for sp in ((False, True) if small_pages else (False,))}
        x, y = torch.randn(1, k, generator=gen), torch.empty(1, n)
        times = {f: [] for f in setups}
        for calls, _ in setups.values():  # warm-up: first touches, thread pool start
            _pass(calls, x, y, threads)
        for _ in range(rounds):
            for f, (calls, _) in setups.items():
                times[f].append(_pass(calls, x, y, threads) / len(calls))
        for f, (_calls, per) in setups.items():
            s = statistics.median(times[f])
            gbs = per / s / 1e9
            rows.append(Row({"case": f"{k}x{n} {f}", "threads": threads, "weight KiB": per / 1024, "us/call": s * 1e6,
                             "GB/s": gbs, "% of stream": 100 * gbs / max(stream, stream_huge), "stream GB/s": stream,
                             "stream huge GB/s": stream_huge}))
        del setups
    return rows


def ggml_rows(binary: str, shapes, threads: int, mib: float) -> list[Row]:
    """llama.cpp's kernel (ggml mul_mat, M = 1) on the same shapes: the program prints one line per (shape, type)."""
    out = subprocess.run([binary, str(threads), str(mib)] + [f"{k}x{n}" for k, n in shapes], capture_output=True,
                         text=True, check=True).stdout
    rows = []
    for line in out.splitlines():  # "ggml q4_0 2048x2048 us 123.4 bytes 2359296"
        p = line.split()
        if len(p) == 7 and p[0] == "ggml":
            us, nbytes = float(p[4]), int(p[6])
            rows.append(Row({"case": f"{p[2]} ggml {p[1]}", "threads": threads, "weight KiB": nbytes / 1024,
                             "us/call": us, "GB/s": nbytes / us / 1e3}))
    return rows


def main(argv=None) -> int:
    """CLI: `python -m benchmarks.gemv_cpu [--threads 1,2] [--rounds 7] [--ggml BINARY]`."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--mib", type=float, default=96.0, help="weight copies per (shape, format), MiB together")
    p.add_argument("--shapes", default=None, help="subset, e.g. 2048x2048,5632x2048 (K x N)")
    p.add_argument("--formats", default=",".join(FORMATS))
    p.add_argument("--activations", default="int8/32",
                   help="the native scheme (memory Low at precision Normal, the default: int8/32)")
    p.add_argument("--small-pages", action="store_true", help="also each format on 4 KiB pages (rows '... 4k')")
    p.add_argument("--ggml", default=None, help="the ggml_gemv binary (benchmarks/ggml_gemv.c) for llama.cpp's rows")
    p.add_argument("--name", default="gemv_cpu")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    shapes = SHAPES if not args.shapes else [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    loads = [load_averages()]
    rows = []
    for t in (int(v) for v in args.threads.split(",")):
        rows += run(shapes, args.formats.split(","), t, args.mib, args.rounds, args.activations, args.small_pages)
        if args.ggml:
            rows += ggml_rows(args.ggml, shapes, t, args.mib)
        loads.append(load_averages())
    env = describe_environment()
    env.update({"native variant": native_variant_in_use(), "activations": args.activations,
                "load average (1/5/15 min, per phase)": " | ".join(loads)})
    notes = ("Rows: one (K x N, format) each; formats RTN asymmetric int4 in blocks of 32/64/128 and int8 per channel "
             f"through the bound native call at activations {args.activations}; ' 4k': the same copies on ordinary "
             "4 KiB pages (what prepare_int4_cpu gave before huge pages), others as prepare_int4_cpu places them now. "
             "weight KiB: packed codes + fp32 scale + scale*zero of one copy. 1 thread: thread CPU time; 2 threads: "
             "wall time. stream GB/s: torch.sum over a float32 tensor of 4x the copies' size on 4 KiB pages, "
             "stream huge: the same on huge pages; % of stream: of the faster of the two. ggml rows: llama.cpp's "
             "mul_mat (benchmarks/ggml_gemv.c) on the same shapes and copies (its buffers, 4 KiB pages), the same "
             "clock.")
    report(args.name, rows, env, args.out or None, title="M = 1 Linear kernel: GB/s of weight bytes", notes=notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
