"""Data-aware quantization on MiniLM: method x bits x block -> embedding cosine to fp32 and quantization time.

Calibration: the project's own calibration sentences (lowbit.calib.minilm_calibration, 128 by default); accuracy:
the lowest and mean cosine of the sentence embeddings to fp32 over lowbit.models.SENTENCES, which the calibration
set does not contain. Time: the whole `lowbit.quantize` call (calibration passes included), on `threads` threads.
Data-aware rows also give the mean over weights of (output error after / plain RTN's) on the calibration inputs and
how many weights ended above RTN.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from lowbit.quant import QuantConfig

from .harness import Row, describe_environment, load_average, report

GPTQ_BEST = dict(method="gptq", gptq_act_order=True, gptq_scales="clip")
RECIPES = [  # (label, bits, block, QuantConfig fields)
    ("rtn", 4, 64, {}), ("hqq", 4, 64, dict(method="hqq")), ("gptq", 4, 64, dict(method="gptq")),
    ("gptq act-order", 4, 64, dict(method="gptq", gptq_act_order=True)),
    ("gptq act-order clip", 4, 64, GPTQ_BEST), ("gptq act-order hqq", 4, 64, dict(GPTQ_BEST, gptq_scales="hqq")),
    ("awq", 4, 64, dict(method="awq")), ("awq + gptq act-order clip", 4, 64, dict(GPTQ_BEST, awq=True)),
    ("rtn", 3, 64, {}), ("hqq", 3, 64, dict(method="hqq")), ("gptq act-order clip", 3, 64, GPTQ_BEST),
    ("rtn", 4, -1, {}), ("gptq act-order clip", 4, -1, GPTQ_BEST),
    ("rtn", 8, -1, {}), ("gptq act-order clip", 8, -1, GPTQ_BEST),
]
QUICK = [r for r in RECIPES if r[1] == 4 and r[2] == 64 and r[0] in ("rtn", "gptq act-order clip")]
SWEEP_RECIPES = [("gptq act-order", 4, 64, dict(method="gptq", gptq_act_order=True)),
                 ("gptq act-order hqq", 4, 64, dict(method="gptq", gptq_act_order=True, gptq_scales="hqq")),
                 ("gptq act-order", 3, 64, dict(method="gptq", gptq_act_order=True))]
SWEEP_SIZES = (128, 256, 512, 1000)


def _row(label, bits, block, fields, model, ref, cal) -> Row:
    import lowbit
    from lowbit.models import embed

    cfg = QuantConfig(bits=bits, block_size=block, **fields)
    t0, c0 = time.perf_counter(), time.process_time()
    q = lowbit.quantize(copy.deepcopy(model), cfg, calibration=cal if cfg.data_aware else None, progress=False)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    cos = (embed(q) * ref).sum(-1)
    summary = q.lowbit_summary
    errors = getattr(summary, "errors", [])
    return Row({
        "method": label, "bits": bits, "block": "per-channel" if block == -1 else block,
        "min cosine": cos.min().item(), "mean cosine": cos.mean().item(), "seconds": seconds,
        "cpu seconds": cpu_seconds,
        "error after/rtn": summary.mean_ratio() if errors else "",
        "weights above rtn": sum(e.after > e.before for e in errors) if errors else "",
    })


def sweep(sizes=SWEEP_SIZES, recipes=SWEEP_RECIPES, threads: int = 2, out_dir: str | None = "benchmarks/results"):
    """GPTQ against the number of calibration sentences; saves benchmarks/results/dataaware_minilm_calib_sweep."""
    from lowbit.calib import minilm_calibration
    from lowbit.calib.sentences import CALIBRATION_SENTENCES
    from lowbit.models import SENTENCES, embed, load_minilm

    torch.set_num_threads(threads)
    model = load_minilm()
    ref = embed(model)
    rows = []
    for n in sizes:
        cal = minilm_calibration(model, n)
        for label, bits, block, fields in recipes:
            row = _row(label, bits, block, fields, model, ref, cal)
            rows.append(Row({"calibration sentences": n, **row.values}))
            print(rows[-1].values, flush=True)
    notes = (f"all-MiniLM-L6-v2, all 37 Linear layers, asymmetric, float16 scales; N of lowbit.calib's "
             f"{len(CALIBRATION_SENTENCES)} own sentences as pick_sentences spreads them; cosine over the "
             f"{len(SENTENCES)} lowbit.models.SENTENCES (not in the calibration set); {threads} threads, 1-min load "
             "average at the end "
             f"{load_average():.1f}.")
    report(f"dataaware_minilm_calib_sweep_{threads}t", rows, describe_environment("cpu"), out_dir=out_dir,
           title="Data-aware quantization on MiniLM: output quality against calibration size", notes=notes,
           floatfmt=".4f")
    return rows


_LAYER = "0.model.encoder.layer."
KEPT_FLOAT = [("nothing", ()), ("query/key/value", (_LAYER + "*.attention.self.*",)),
              ("attention output", (_LAYER + "*.attention.output.dense",)),
              ("intermediate", (_LAYER + "*.intermediate.dense",)),
              ("ffn output", tuple(f"{_LAYER}{i}.output.dense" for i in range(6))),
              *[(f"transformer layer {i}", (f"{_LAYER}{i}",)) for i in range(6)]]


def where_error(n_calib: int = 256, threads: int = 2, out_dir: str | None = "benchmarks/results") -> list[Row]:
    """Where int4 GPTQ's output error comes from: the same quantization with one kind of layer (or one transformer
    layer) kept float; saves benchmarks/results/dataaware_minilm_where_<threads>t."""
    import lowbit
    from lowbit.calib import minilm_calibration
    from lowbit.models import SENTENCES, embed, load_minilm

    torch.set_num_threads(threads)
    model = load_minilm()
    ref, cal = embed(model), minilm_calibration(model, n_calib)
    cfg = QuantConfig(bits=4, block_size=64, method="gptq", gptq_act_order=True)
    rows = []
    for label, skip in KEPT_FLOAT:
        q = lowbit.quantize(copy.deepcopy(model), cfg, calibration=cal, skip=list(skip), progress=False)
        cos = (embed(q) * ref).sum(-1)
        rows.append(Row({"kept float": label, "quantized layers": len(q.lowbit_summary.swapped),
                         "min cosine": cos.min().item(), "mean cosine": cos.mean().item(),
                         "1 - mean": 1 - cos.mean().item()}))
        print(rows[-1].values, flush=True)
    notes = (f"all-MiniLM-L6-v2, GPTQ act-order int4 block 64 on {n_calib} of lowbit.calib's own sentences, the "
             f"listed layers kept float; cosine over the {len(SENTENCES)} lowbit.models.SENTENCES; {threads} threads.")
    report(f"dataaware_minilm_where_{threads}t", rows, describe_environment("cpu"), out_dir=out_dir,
           title="Where MiniLM's int4 output error comes from", notes=notes, floatfmt=".4f")
    return rows


def run(recipes=RECIPES, n_calib: int = 128, threads: int = 2, out_dir: str | None = "benchmarks/results") -> list[Row]:
    """Every recipe; saves benchmarks/results/dataaware_minilm.{md,csv,json} (dataaware_minilm_<threads>t otherwise)."""
    from lowbit.calib import minilm_calibration
    from lowbit.models import SENTENCES, embed, load_minilm

    torch.set_num_threads(threads)
    model = load_minilm()
    ref = embed(model)
    cal = minilm_calibration(model, n_calib)
    rows = []
    for label, bits, block, fields in recipes:
        rows.append(_row(label, bits, block, fields, model, ref, cal))
        print(rows[-1].values, flush=True)
    load = load_average()
    notes = (f"all-MiniLM-L6-v2, all 37 Linear layers, asymmetric, float16 scales. Calibration: {n_calib} of "
             f"lowbit.calib's own sentences; cosine over the {len(SENTENCES)} lowbit.models.SENTENCES (not in the "
             f"calibration set). seconds = the whole lowbit.quantize call on {threads} threads (calibration passes "
             "included; 'cpu seconds' = process CPU time, steadier than wall time on a shared machine), 1-min load "
             f"average at the end {load:.1f} (other jobs share the cores). 'error after/rtn' = "
             "mean over weights of the relative output error on the calibration inputs, data-aware over plain RTN "
             "with the same bits and block. GPTQ defaults: damp 0.01, lazy block 128, sequential.")
    name = "dataaware_minilm" if threads == 2 else f"dataaware_minilm_{threads}t"
    report(name, rows, describe_environment("cpu"), out_dir=out_dir,
           title="Data-aware quantization on MiniLM: cosine to fp32 and time", notes=notes, floatfmt=".4f")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="int4 block 64 RTN and GPTQ only")
    p.add_argument("--calib", type=int, default=128, help="calibration sentences (default 128)")
    p.add_argument("--sweep", action="store_true", help="GPTQ at 128/256/512/1000 calibration sentences instead")
    p.add_argument("--where", action="store_true", help="int4 GPTQ with one kind of layer kept float instead")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results", help="results folder ('' to skip saving)")
    args = p.parse_args(argv)
    if args.sweep:
        sweep(threads=args.threads, out_dir=args.out or None)
        return 0
    if args.where:
        where_error(threads=args.threads, out_dir=args.out or None)
        return 0
    run(QUICK if args.quick else RECIPES, args.calib, args.threads, args.out or None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
