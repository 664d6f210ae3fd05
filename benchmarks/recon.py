"""Reconstruction-based quantization on MiniLM: method x bits x block -> embedding cosine, seconds, peak memory.

Calibration: the project's own calibration sentences (lowbit.calib.minilm_calibration); accuracy: the lowest and
mean cosine of the sentence embeddings to fp32 over lowbit.models.SENTENCES, which the calibration set does not
contain. RTN and GPTQ rows run in the same process, beside recon, at the same bits and block (the same size).
Time: the whole `lowbit.quantize` call; peak memory: the process's peak resident set after the row (it only
grows, so rows run cheapest first and the model load sets the floor).
"""

from __future__ import annotations

import argparse
import copy
import resource
import time

import torch

from lowbit.quant import QuantConfig

from .harness import Row, describe_environment, load_average, report

GPTQ = dict(method="gptq", gptq_act_order=True)
RECON = dict(method="recon", gptq_act_order=True)
RECIPES = [  # (label, bits, block, QuantConfig fields)
    ("rtn", 4, 64, {}), ("gptq act-order", 4, 64, GPTQ), ("recon", 4, 64, RECON),
    ("rtn", 3, 64, {}), ("gptq act-order", 3, 64, GPTQ), ("recon", 3, 64, RECON),
    ("rtn", 2, 32, {}), ("gptq act-order", 2, 32, GPTQ), ("recon", 2, 32, RECON),
]
QUICK = [r for r in RECIPES if r[1] == 4]


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _row(label, bits, block, fields, model, ref, cal, steps) -> Row:
    import lowbit
    from lowbit.models import embed

    extra = {"recon_steps": steps} if steps and fields.get("method") == "recon" else {}
    cfg = QuantConfig(bits=bits, block_size=block, **fields, **extra)
    t0, c0 = time.perf_counter(), time.process_time()
    q = lowbit.quantize(copy.deepcopy(model), cfg, calibration=cal if cfg.data_aware else None, progress=False)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    cos = (embed(q) * ref).sum(-1)
    blocks = getattr(q.lowbit_summary, "blocks", [])
    return Row({
        "method": label, "bits": bits, "block": block, "min cosine": cos.min().item(),
        "mean cosine": cos.mean().item(), "seconds": seconds, "cpu seconds": cpu_seconds,
        "peak MiB": _peak_mib(), "steps": sum(b.steps for b in blocks) if blocks else "",
        "held-out ratio": (sum(b.holdout_best / b.holdout_start for b in blocks) / len(blocks)) if blocks else "",
    })


def run(recipes=RECIPES, n_calib: int = 256, threads: int = 2, steps: int | None = None,
        out_dir: str | None = "benchmarks/results", name: str = "recon_minilm") -> list[Row]:
    """Every recipe; saves benchmarks/results/<name>.{md,csv,json}."""
    from lowbit.calib import minilm_calibration
    from lowbit.models import SENTENCES, embed, load_minilm

    torch.set_num_threads(threads)
    model = load_minilm()
    ref = embed(model)
    cal = minilm_calibration(model, n_calib)
    rows = []
    for label, bits, block, fields in recipes:
        rows.append(_row(label, bits, block, fields, model, ref, cal, steps))
        print(rows[-1].values, flush=True)
    load = load_average()
    notes = (f"all-MiniLM-L6-v2, all 37 Linear layers, asymmetric, float16 scales. Calibration: {cal.source} "
             f"(lowbit.calib's own; recon holds a tenth of the batches out); cosine over "
             f"the {len(SENTENCES)} lowbit.models.SENTENCES (not in the calibration set). seconds = the whole "
             f"lowbit.quantize call on {threads} threads; 1-min load average at the end {load:.1f} (the machine is "
             "shared with other jobs). recon: gptq_act_order=True (its GPTQ start), otherwise the defaults (learned "
             "scales, zeros and weights, transformer layers as blocks, 200 steps per block); 'steps' = "
             "the steps taken (summed over blocks, "
             "after early stopping); 'held-out ratio' = mean over blocks of the held-out block error after / before "
             "training. peak MiB = the process's peak RSS after the row (monotone).")
    report(name, rows, describe_environment("cpu"), out_dir=out_dir,
           title="Reconstruction-based quantization on MiniLM: cosine to fp32, time and memory", notes=notes,
           floatfmt=".4f")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="int4 block 64 only")
    p.add_argument("--calib", type=int, default=256, help="calibration sentences (default 256)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=None, help="recon steps per block (default: the config's)")
    p.add_argument("--out", default="benchmarks/results", help="results folder ('' to skip saving)")
    p.add_argument("--name", default="recon_minilm", help="results file name")
    args = p.parse_args(argv)
    run(QUICK if args.quick else RECIPES, args.calib, args.threads, args.steps, args.out or None, args.name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
