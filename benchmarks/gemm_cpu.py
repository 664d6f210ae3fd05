"""CPU GEMM benchmark: lowbit's CPU kernels against torch fp32, bf16, dynamic int8 and int4 packed (bf16).

Every row is one (shape, M, method); lowbit rows carry speed-up ratios to each baseline measured in the same run
(ratio = baseline ms / this ms, > 1 means faster). Each output is checked against the fp32 reference (SQNR
floor) before it is timed. Weights are random Gaussian; shapes are (K in, N out) of a Linear.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lowbit.kernels.cpu_int4 import impl_unsupported_reason, linear_int4_cpu, prepare_int4_cpu
from lowbit.kernels.cpu_int8 import linear_int8_dynamic, prepare_int8_dynamic
from lowbit.quant import QuantConfig, quantize_weight

from .harness import Row, Timing, describe_environment, report, sqnr_db, time_fn

SHAPES = ((4096, 4096), (4096, 11008), (11008, 4096), (384, 384), (384, 1536), (1536, 384))
MS = (1, 8, 32, 128, 512)
QUICK_SHAPES = ((4096, 4096), (384, 1536))
QUICK_MS = (1, 32, 128)
BITS = (2, 4, 8)
MIN_SQNR_DB = 25.0  # int8 activations give ~35-45 dB; a wrong kernel gives < 10


@dataclass(frozen=True)
class Method:
    """One timed callable: name, weight bytes it reads per call, baseline flag, and the fn taking x."""

    name: str
    weight_bytes: int
    baseline: bool
    fn: Callable[[torch.Tensor], torch.Tensor]


def baselines(w: torch.Tensor, qw4: object) -> list[Method]:
    """torch fp32 F.linear, torch bf16 F.linear (bf16 weight, x cast per call), torch dynamic int8
    (quantize_dynamic'd Linear), torch int4pack (bf16, block 128)."""
    n, k = w.shape
    lin = torch.nn.Linear(k, n, bias=False)
    lin.weight.data.copy_(w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao deprecation notices
        qlin = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear}, torch.qint8)
    wb = w.to(torch.bfloat16)
    methods = [Method("torch fp32", n * k * 4, True, lambda x: F.linear(x, w)),
               Method("torch bf16", n * k * 2, True, lambda x: F.linear(x.to(torch.bfloat16), wb)),
               Method("torch dyn int8", n * k, True, lambda x: qlin(x))]
    if qw4 is not None:
        w4 = prepare_int4_cpu(qw4, "int4pack")
        methods.append(Method("torch int4pack bf16", w4.nbytes, True, lambda x: linear_int4_cpu(x, w4)))
    return methods


def _lowbit_methods(w: torch.Tensor, bits: tuple[int, ...]) -> list[tuple[Method, object]]:
    """lowbit kernels per bit width: 2/4-bit blocks 64 and 128 (asymmetric); 8-bit per channel through torch's
    dynamic int8 and, where the native kernel serves 5..8 bits, natively per channel and in blocks of 128."""
    out = []
    for b in bits:
        blocks = (-1, 128) if b == 8 else (64, 128)
        for block in blocks:
            qw = quantize_weight(w, QuantConfig(bits=b, block_size=block))
            preps = []
            if b <= 4 or impl_unsupported_reason(qw, "native") is None:
                preps.append((prepare_int4_cpu(qw, "native" if b > 4 else None), linear_int4_cpu))
            if b > 4 and block == -1:
                preps.append((prepare_int8_dynamic(qw), linear_int8_dynamic))
            for prep, run in preps:
                label = f"lowbit w{b} {'pc' if block == -1 else f'g{block}'} ({prep.impl})"
                out.append((Method(label, qw.nbytes, False, lambda x, p=prep, run=run: run(x, p)), qw))
    return out


def _check(shape, m: int, meth: Method, x: torch.Tensor, ref: torch.Tensor) -> float:
    """SQNR of the method's output against its reference; raises before a wrong kernel is timed."""
    sqnr = sqnr_db(ref, meth.fn(x))
    if sqnr < MIN_SQNR_DB:
        raise RuntimeError(f"{meth.name} on {shape} M={m}: SQNR {sqnr:.1f} dB < {MIN_SQNR_DB}; not timing it")
    return sqnr


def time_cpu(fn, min_time_s: float = 0.06) -> Timing:
    """time_fn on the calling thread's CPU clock: immune to preemption by other processes, and meaningful only when
    the work runs on this thread (torch.set_num_threads(1), native num_threads=1)."""
    return time_fn(fn, warmup=2, min_time_s=min_time_s, max_reps=40, clock=time.thread_time)


def _time_interleaved(methods: list[Method], x: torch.Tensor, rounds: int, clock: str = "wall") -> list[Timing]:
    """Best-of-rounds timing: methods take turns, so a burst of load from other processes on a shared machine
    hits one round of one method, not a whole column; each method keeps its round with the lowest median."""
    best: list[Timing | None] = [None] * len(methods)
    for _ in range(rounds):
        for i, meth in enumerate(methods):
            fn = lambda meth=meth: meth.fn(x)  # noqa: E731
            t = time_cpu(fn) if clock == "cpu" else time_fn(fn, warmup=2, min_time_s=0.06, max_reps=40)
            if best[i] is None or t.median_ms < best[i].median_ms:
                best[i] = t
    return best


def run_suite(shapes=SHAPES, ms=MS, bits=BITS, seed: int = 0, rounds: int = 3, clock: str = "wall") -> list[Row]:
    """Time every method on every (shape, M) (best of `rounds` interleaved rounds); rows carry ratio columns."""
    rows: list[Row] = []
    gen = torch.Generator().manual_seed(seed)
    for k, n in shapes:
        w = torch.randn(n, k, generator=gen) / k**0.5
        lowbit = _lowbit_methods(w, bits)
        qw4 = quantize_weight(w, QuantConfig(bits=4, block_size=128)) if k % 128 == 0 and n % 16 == 0 else None
        methods = baselines(w, qw4) + [mth for mth, _ in lowbit]
        refs = {mth.name: qw for mth, qw in lowbit} | {"torch int4pack bf16": qw4}
        for m in ms:
            x = torch.randn(m, k, generator=gen)
            exact = F.linear(x, w)
            sqnrs = []
            for meth in methods:
                qw = refs.get(meth.name)
                ref = exact if qw is None else F.linear(x, qw.dequantize(torch.float32))
                sqnrs.append(_check((k, n), m, meth, x, ref))
            shape_rows = [
                Row({"K": k, "N": n, "M": m, "method": meth.name, "ms": t.median_ms, "p20": t.p20_ms, "p80": t.p80_ms,
                     "GB/s": meth.weight_bytes / t.median_ms / 1e6, "sqnr_db": min(sq, 99.0)})
                for meth, t, sq in zip(methods, _time_interleaved(methods, x, rounds, clock), sqnrs, strict=True)
            ]
            _add_ratios(shape_rows)
            rows.extend(shape_rows)
    return rows


def _impl_methods(w: torch.Tensor, bits: int, block: int, symmetric: bool) -> list[tuple[Method, object]]:
    """Every CPU implementation forced on one format, plus the dequantized fp32 weight (the runtime's DENSE)."""
    qw = quantize_weight(w, QuantConfig(bits=bits, block_size=block, symmetric=symmetric))
    out = []
    dense = qw.dequantize(torch.float32)
    out.append((Method("dense fp32 (dequantized once)", dense.numel() * 4, False, lambda x: F.linear(x, dense)), qw))
    dense_bf16 = dense.to(torch.bfloat16)  # memory High at precision Low keeps this copy (x cast per call)
    out.append((Method("dense bf16 (dequantized once)", dense.numel() * 2, False,
                       lambda x: F.linear(x.to(torch.bfloat16), dense_bf16).float()), qw))
    if bits <= 4:
        # "dequant" (dequantize on every call, ~1 s at 4096x4096 whatever M) is left out: it is the last resort
        variants = [("native", True), ("native", False), ("int4pack", True)]
        for impl, per_row in variants:
            if impl_unsupported_reason(qw, impl) is None:
                p = prepare_int4_cpu(qw, impl, act_per_row=per_row)
                name = impl + ("" if impl != "native" else " (act/row)" if per_row else " (act/block)")
                out.append((Method(name, qw.nbytes, False, lambda x, p=p: linear_int4_cpu(x, p)), qw))
    else:
        if impl_unsupported_reason(qw, "native") is None:
            for per_row in (True, False):
                p = prepare_int4_cpu(qw, "native", act_per_row=per_row)
                name = "native" + (" (act/row)" if per_row else " (act/block)")
                out.append((Method(name, qw.nbytes, False, lambda x, p=p: linear_int4_cpu(x, p)), qw))
        for impl in ("dynamic", "int8pack") if block == -1 else ():
            p = prepare_int8_dynamic(qw, impl)
            out.append((Method(impl, qw.nbytes, False, lambda x, p=p: linear_int8_dynamic(x, p)), qw))
    return out


def run_impl_sweep(shape=(4096, 4096), ms=(1, 8, 32, 128), rounds: int = 2, seed: int = 0,
                   clock: str = "wall") -> list[Row]:
    """Which implementation is fastest per (bits, block, M): every impl forced on the same weight."""
    k, n = shape
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=gen) / k**0.5
    rows: list[Row] = []
    for bits, block in [(2, 64), (4, 32), (4, 64), (4, 128), (4, -1), (8, -1), (8, 32), (8, 64), (8, 128)]:
        methods = _impl_methods(w, bits, block, symmetric=False)
        for m in ms:
            x = torch.randn(m, k, generator=gen)
            sqnrs = [_check(shape, m, mth, x, F.linear(x, qw.dequantize(torch.float32))) for mth, qw in methods]
            timings = _time_interleaved([mth for mth, _ in methods], x, rounds, clock)
            fastest = min(t.median_ms for t in timings)
            for (mth, _), t, sq in zip(methods, timings, sqnrs, strict=True):
                rows.append(Row({"K": k, "N": n, "bits": bits, "block": block, "M": m, "impl": mth.name,
                                 "ms": t.median_ms, "p20": t.p20_ms, "p80": t.p80_ms, "sqnr_db": min(sq, 99.0),
                                 "fastest": "*" if t.median_ms == fastest else ""}))
    return rows


def run_variant_sweep(shape=(4096, 4096), ms=(1, 32, 128), rounds: int = 5, seed: int = 0,
                      clock: str = "wall") -> list[Row]:
    """The native kernel built for every ISA variant this CPU runs, on the same weights and inputs: variants take
    turns within each round (a burst of load hits all of them alike), each row is the median of its round medians.
    The plain-C variant is timed at M = 1 only (seconds per call beyond)."""
    from lowbit.kernels import cpu_native
    from lowbit.kernels.cpu_native.build import VARIANTS, build_native, runnable_variants

    libs = {v: build_native(flag_sets=VARIANTS[v]) for v in runnable_variants()}
    k, n = shape
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=gen) / k**0.5
    rows: list[Row] = []
    for bits, block in ((4, 128), (4, 64), (8, -1), (8, 128)):
        qw = quantize_weight(w, QuantConfig(bits=bits, block_size=block))
        prep = prepare_int4_cpu(qw, "native")
        t = prep.tensors
        gemm = cpu_native.gemm_q4 if bits <= 4 else cpu_native.gemm_q8
        for m in ms:
            x = torch.randn(m, k, generator=gen)
            ref = F.linear(x, qw.dequantize(torch.float32))
            args = (x, t["packed"], t["scale"], t["scale_zero"], k, prep.group_k)
            fns = {v: functools.partial(gemm, *args, library=lib)
                   for v, lib in libs.items() if v != "portable" or m == 1}
            sqnrs = {v: sqnr_db(ref, fn()) for v, fn in fns.items()}
            bad = {v: q for v, q in sqnrs.items() if q < MIN_SQNR_DB}
            if bad:
                raise RuntimeError(f"variants {bad} on {shape} w{bits} block {block} M={m}: SQNR below {MIN_SQNR_DB}")
            medians: dict[str, list[float]] = {v: [] for v in fns}
            for _ in range(rounds):
                for v, fn in fns.items():
                    tm = time_cpu(fn, min_time_s=0.03) if clock == "cpu" else time_fn(fn, warmup=1, min_time_s=0.03)
                    medians[v].append(tm.median_ms)
            base = statistics.median(medians["avx2"]) if "avx2" in medians else float("nan")
            for v, ts in medians.items():
                med = statistics.median(ts)
                rows.append(Row({"K": k, "N": n, "bits": bits, "block": block, "M": m, "variant": v, "ms": med,
                                 "min": min(ts), "max": max(ts), "sqnr_db": min(sqnrs[v], 99.0), "x avx2": base / med}))
    return rows


PRECISION_SHAPES = ((4096, 4096), (384, 1536), (1536, 384))
SCHEMES = ("fp32", "int8/32", "int8/row")  # the native kernel at precision High, Normal, Low


PRECISION_FORMATS = ((4, 64), (4, 128), (8, -1))


def torch_dynamic_int8(wf: torch.Tensor):
    """torch's dynamic int8 Linear (fbgemm on x86: per-tensor 7-bit activations) on the float weight wf."""
    lin = torch.nn.Linear(wf.shape[1], wf.shape[0], bias=False)
    lin.weight.data.copy_(wf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao deprecation notices
        return torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear}, torch.qint8)


def run_precision_sweep(shapes=PRECISION_SHAPES, ms=(1, 32, 128), rounds: int = 5, seed: int = 0,
                        clock: str = "wall", formats=PRECISION_FORMATS) -> list[Row]:
    """The native kernel's activation scheme per precision (High fp32, Normal int8 per 32 channels, Low int8 per
    row) beside torch fp32 F.linear and torch's dynamic int8 Linear on the same weights and inputs, schemes
    interleaved within each round; each ms is the median of the round medians. SQNR against the float64 product of
    the dequantized weight. formats: (bits, block) pairs (block -1: per channel)."""
    from lowbit.kernels import cpu_native

    gen = torch.Generator().manual_seed(seed)
    rows: list[Row] = []
    for k, n in shapes:
        w = torch.randn(n, k, generator=gen) / k**0.5
        for bits, block in formats:
            qw = quantize_weight(w, QuantConfig(bits=bits, block_size=block))
            prep = prepare_int4_cpu(qw, "native")
            t = prep.tensors
            gemm = cpu_native.gemm_q4 if bits <= 4 else cpu_native.gemm_q8
            wf = qw.dequantize(torch.float32)
            dyn8 = torch_dynamic_int8(wf)
            for m in ms:
                x = torch.randn(m, k, generator=gen)
                ref = F.linear(x.double(), wf.double())
                args = (x, t["packed"], t["scale"], t["scale_zero"], k, prep.group_k)
                fns = {"torch fp32": functools.partial(F.linear, x, wf), "torch dyn int8": functools.partial(dyn8, x)}
                fns |= {a: functools.partial(gemm, *args, activations=a) for a in SCHEMES}
                sqnrs = {a: sqnr_db(ref, fn()) for a, fn in fns.items()}
                if min(sqnrs.values()) < MIN_SQNR_DB:
                    raise RuntimeError(f"{(k, n)} w{bits} block {block} M={m}: SQNR {sqnrs} below {MIN_SQNR_DB}")
                medians: dict[str, list[float]] = {a: [] for a in fns}
                for _ in range(rounds):
                    for a, fn in fns.items():
                        tm = time_cpu(fn, min_time_s=0.03) if clock == "cpu" else time_fn(fn, warmup=1,
                                                                                          min_time_s=0.03)
                        medians[a].append(tm.median_ms)
                med = {a: statistics.median(v) for a, v in medians.items()}
                rows.append(Row({"K": k, "N": n, "bits": bits, "block": block, "M": m,
                                 "torch fp32 ms": med["torch fp32"], "dyn8 ms": med["torch dyn int8"],
                                 "fp32 ms": med["fp32"], "int8/32 ms": med["int8/32"], "int8/row ms": med["int8/row"],
                                 "int8/32 / row": med["int8/32"] / med["int8/row"],
                                 "x dyn8 row": med["torch dyn int8"] / med["int8/row"],
                                 "x dyn8 /32": med["torch dyn int8"] / med["int8/32"],
                                 "fp32 / torch": med["fp32"] / med["torch fp32"],
                                 "sqnr fp32": min(sqnrs["fp32"], 200.0), "sqnr int8/32": sqnrs["int8/32"],
                                 "sqnr int8/row": sqnrs["int8/row"], "sqnr dyn8": sqnrs["torch dyn int8"]}))
    return rows


def _add_ratios(rows: list[Row]) -> None:
    base = {r.values["method"]: r.values["ms"] for r in rows}
    for r in rows:
        for name, col in (("torch fp32", "x fp32"), ("torch bf16", "x bf16"), ("torch dyn int8", "x dyn8"),
                          ("torch int4pack bf16", "x int4pk")):
            r.values[col] = base[name] / r.values["ms"] if name in base else float("nan")


def load_averages() -> str:
    """1/5/15-minute load averages (`uptime`): this machine is shared, so the numbers carry the load they ran under."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def native_variant_in_use() -> str:
    """The native kernel variant in use ("" when it did not build)."""
    from lowbit.kernels import cpu_native

    lib = cpu_native.native_library()
    return "" if lib is None else getattr(lib, "variant", " ".join(lib.flags))


def main(argv: list[str] | None = None) -> list[Row]:
    """CLI: `python -m benchmarks.gemm_cpu [--quick] [--out DIR]`."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 shapes, M in {1, 32, 128}")
    p.add_argument("--out", default="benchmarks/results", help="directory for gemm_cpu.{md,csv,json}; '' to not save")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds per (shape, M); best is kept")
    p.add_argument("--impls", action="store_true", help="also sweep every implementation per format (4096x4096)")
    p.add_argument("--threads", type=int, default=None, help="torch and native threads (default: torch's)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="cpu: the calling thread's CPU time (use with --threads 1 on a shared machine)")
    p.add_argument("--name", default="gemm_cpu", help="results file stem")
    p.add_argument("--variants", action="store_true", help="also time the native kernel under every ISA variant")
    p.add_argument("--precision", action="store_true",
                   help="also time the native kernel's activation scheme per precision (fp32, int8/32, int8/row)")
    p.add_argument("--no-suite", action="store_true", help="with --impls/--variants/--precision: only those sweeps")
    p.add_argument("--shapes", default=None, help="subset of shapes, e.g. 4096x4096,384x1536 (K x N)")
    p.add_argument("--ms", default=None, help="with --impls/--precision: the M values, e.g. 32,128,512")
    p.add_argument("--formats", default=None,
                   help="with --precision: bits/block pairs, e.g. 4/64,8/-1 (block -1: per channel)")
    args, _ = p.parse_known_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)  # CLI only: library code never changes torch globals
    env = describe_environment("cpu") | {"clock": args.clock, "native": native_variant_in_use(),
                                         "fbgemm": os.environ.get("FBGEMM_ENABLE_INSTRUCTIONS", "auto"),
                                         "load_start": load_averages()}
    if args.impls:
        ms_sweep = (1, 32, 128) if args.quick else (1, 8, 32, 128, 512)
        if args.ms:
            ms_sweep = tuple(int(v) for v in args.ms.split(","))
        impl_shapes = [tuple(int(v) for v in s.split("x")) for s in (args.shapes or "4096x4096").split(",")]
        rows = [r for shape in impl_shapes for r in run_impl_sweep(shape, ms=ms_sweep, clock=args.clock)]
        report(f"{args.name}_impls", rows, env | {"load_end": load_averages()}, args.out or None,
               title="CPU implementations per format (asymmetric RTN)",
               notes="'*' marks the fastest implementation for each (bits, block, M). Symmetric weights run the "
                     "same kernels at the same speed (the zero is folded into a per-block constant).")
    if args.variants:
        rows = run_variant_sweep(clock=args.clock)
        report(f"{args.name}_variants", rows, env | {"load_end": load_averages()}, args.out or None,
               title="Native kernel per ISA variant (4096x4096, asymmetric RTN, int8 activations per row)",
               notes="Variants interleaved within each round; ms = median of the round medians (min/max beside it); "
                     "x avx2 = avx2 ms / this ms. The plain-C variant is timed at M = 1 only.")
    if args.precision:
        pshapes = PRECISION_SHAPES
        if args.shapes:
            pshapes = tuple(tuple(int(v) for v in s.split("x")) for s in args.shapes.split(","))
        formats = PRECISION_FORMATS
        if args.formats:
            formats = tuple(tuple(int(v) for v in f.split("/")) for f in args.formats.split(","))
        rows = run_precision_sweep(pshapes, ms=tuple(int(v) for v in (args.ms or "1,32,128").split(",")),
                                   rounds=args.rounds, clock=args.clock, formats=formats)
        report(f"{args.name}_precision", rows, env | {"load_end": load_averages()}, args.out or None,
               title="Native kernel per precision: fp32 (High), int8 per 32 channels (Normal), int8 per row (Low)",
               notes="Schemes interleaved within each round with torch fp32 F.linear on the dequantized weight; ms = "
                     "median of the round medians. 'int8/32 / row' = int8/32 ms / int8/row ms (Normal's cost over "
                     "Low's); 'x dyn8 row' / 'x dyn8 /32' = torch dynamic int8 ms / lowbit int8/row (int8/32) ms "
                     "(> 1: lowbit faster; torch's fbgemm ISA: FBGEMM_ENABLE_INSTRUCTIONS, recorded in the header); "
                     "'fp32 / torch' = native fp32 ms / torch fp32 ms. SQNR in dB against the float64 "
                     "product of the dequantized weight (200 = capped). RTN weights, random Gaussian inputs.")
    if args.no_suite:
        return []
    shapes, ms = (QUICK_SHAPES, QUICK_MS) if args.quick else (SHAPES, MS)
    if args.shapes:
        shapes = tuple(tuple(int(v) for v in s.split("x")) for s in args.shapes.split(","))
    rows = run_suite(shapes, ms, rounds=args.rounds, clock=args.clock)
    notes = ("Ratios are baseline ms / this ms (>1 = faster). lowbit w2/w4: asymmetric RTN blocks (native = lowbit C "
             "kernel, int8 activations one scale per row); w8: per channel through torch dynamic int8 ('dynamic', "
             "per-tensor int8 activations) and lowbit's native 8-bit container ('native', per channel and block 128, "
             "int8 activations per row). Weights stay "
             "hot in the 32 MiB L3 when they fit (fp32 4096x4096 = 64 MiB does not; int8/int4 do). Each ms is the "
             "best median of interleaved rounds: this 2-core machine is shared, and other processes' load shows up as "
             "4 ms scheduler stalls of the 2-thread kernels.")
    report(args.name, rows, env | {"load_end": load_averages()}, args.out or None, title=f"CPU GEMM ({args.name})",
           notes=notes)
    return rows


if __name__ == "__main__":
    main()
