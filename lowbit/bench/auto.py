"""Automatic quantization on MiniLM: plans against uniform settings at equal size and at equal error.

Tuning: 64 of lowbit.calib's own sentences (`lowbit.auto.minilm.minilm_tuning_data`), metric 1 - lowest cosine of the
sentence embedding. Evaluation (not the tuning data): the lowest and mean embedding cosine to fp32 over
lowbit.models.SENTENCES and over the calibration sentences not used for tuning. Rows: uniform int4 / int3 block 64
HQQ, the plan at each one's size, and the smallest plan at uniform int4's measured tuning error. Times: tuning with a
cold sensitivity cache (a fresh cache folder) and again with the cache warm.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch

from ..quant import QuantConfig
from .harness import Row, describe_environment, load_average, report


def _evaluate(q, ref: dict, sentences: dict) -> dict:
    from ..models import embed

    out = {}
    for name, s in sentences.items():
        cos = (embed(q, s) * ref[name]).sum(-1)
        out[f"{name} min cos"], out[f"{name} mean cos"] = cos.min().item(), cos.mean().item()
    return out


def _row(label, q, nbytes, float_bytes, ref, sentences, **extra) -> Row:
    values = {"setting": label, "bytes": nbytes, "bits/weight": 32 * nbytes / float_bytes}
    values.update(_evaluate(q, ref, sentences))
    values.update(extra)
    print(values, flush=True)
    return Row(values)


def run(n_tune: int = 64, threads: int = 2, out_dir: str | None = "bench/results", mode: str = "anchors"):
    import lowbit

    from ..auto import auto_quantize
    from ..auto.fakequant import run_outputs
    from ..auto.metrics import as_metric
    from ..auto.minilm import OUTPUT, minilm_tuning_data
    from ..calib.minilm import pick_sentences
    from ..models import SENTENCES, embed, load_minilm

    torch.set_num_threads(threads)
    model = load_minilm()
    data = minilm_tuning_data(model, n_tune)
    tuned = set(pick_sentences(n_tune))
    sentences = {"eval": SENTENCES, "held-out": [s for s in pick_sentences(None) if s not in tuned]}
    ref = {k: embed(model, s) for k, s in sentences.items()}
    metric, ref_out = as_metric("cosine"), run_outputs(model, data, OUTPUT)
    rows, cache = [], tempfile.mkdtemp(prefix="lowbit-auto-bench-")  # a cold sensitivity cache for the first plan
    float_bytes = None
    for bits in (4, 3):
        cfg = QuantConfig(bits=bits, block_size=64, method="hqq")
        uq = lowbit.quantize(copy.deepcopy(model), cfg)
        ub, float_bytes = uq.lowbit_summary.bytes_after, uq.lowbit_summary.bytes_before
        u_err = metric(ref_out, run_outputs(uq, data, OUTPUT))
        rows.append(_row(f"uniform int{bits} b64 hqq", uq, ub, float_bytes, ref, sentences, **{"tuning error": u_err}))
        for target in ({"target_size": ub}, {"target_error": u_err} if bits == 4 else None):
            if target is None:
                continue
            t0 = time.perf_counter()
            plan = auto_quantize(model, data, output=OUTPUT, progress=False, mode=mode, cache=cache, **target)
            seconds = time.perf_counter() - t0
            q = lowbit.quantize(copy.deepcopy(model), overrides=plan.overrides)
            assert q.lowbit_summary.bytes_after == plan.total_bytes
            what = "size" if "target_size" in target else "error"
            if out_dir is not None and bits == 4 and what == "size":
                plan.plot(Path(out_dir) / "auto_minilm_frontier.svg")  # .svg: drawn without matplotlib
            rows.append(_row(f"auto at int{bits}'s {what}", q, plan.total_bytes, float_bytes, ref, sentences, **{
                "tuning error": plan.measured_error, "estimated error": plan.estimated_error,
                "vs uniform bytes": plan.total_bytes / ub, "tune s": seconds, "model runs": plan.evaluations,
                "repairs": plan.repair_steps}))
    load = load_average()
    notes = (f"all-MiniLM-L6-v2, the 37 Linear layers lowbit.quantize swaps; default candidates (2,3,4,5,6,8 bits x "
             f"blocks 32/64/128/per channel, HQQ, plus fp16), sensitivity mode {mode!r}, {n_tune} tuning sentences; "
             f"bytes = packed weights of those layers (fp32: {float_bytes:,}). 'tune s' is the whole auto_quantize "
             "call: the first plan with a cold cache, later ones with the sensitivity cache warm (the allocation, "
             f"verification and repair only). {threads} threads; 1-min load average at the end {load:.1f} (other jobs "
             "share the cores).")
    report("auto_minilm", rows, describe_environment("cpu"), out_dir=out_dir,
           title="Automatic quantization on MiniLM: plan vs uniform at equal size and equal error", notes=notes,
           floatfmt=".4f")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tune", type=int, default=64, help="tuning sentences (default 64)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--mode", default="anchors", choices=("anchors", "all"), help="sensitivity mode")
    p.add_argument("--out", default="bench/results", help="results folder ('' to skip saving)")
    args = p.parse_args(argv)
    run(args.tune, args.threads, args.out or None, args.mode)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
