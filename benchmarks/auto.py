"""Automatic quantization on MiniLM: plans against uniform settings at equal size and at equal error.

Tuning: 64 of lowbit.calib's own sentences (`lowbit.calib.minilm.minilm_tuning_data`), metric 1 - lowest cosine of the
sentence embedding. Evaluation (not the tuning data): the lowest and mean embedding cosine to fp32 over
lowbit.models.SENTENCES and over the calibration sentences not used for tuning. Rows: uniform int4 / int3 block 64
HQQ and GPTQ, the plan at HQQ's size, the smallest plan at uniform int4 HQQ's measured tuning error, and the plan at
3.0 bits per weight. Times: tuning with a cold sensitivity cache (a fresh cache folder) and again with it warm.
`--fit-check`: the anchors fit against every measured candidate (benchmarks/results/auto_minilm_fit.md).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch

from lowbit.quant import QuantConfig

from .harness import Row, describe_environment, load_average, report


def _evaluate(q, ref: dict, sentences: dict) -> dict:
    from lowbit.models import embed

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


def _tune(model, data, cache, mode, candidates, calibration, **target):
    from lowbit.auto import auto_quantize
    from lowbit.models.minilm import OUTPUT

    t0, c0 = time.perf_counter(), time.process_time()
    plan = auto_quantize(model, data, output=OUTPUT, progress=False, mode=mode, cache=cache, candidates=candidates,
                         calibration=calibration, **target)
    return plan, time.perf_counter() - t0, time.process_time() - c0


def run(n_tune: int = 64, threads: int = 2, out_dir: str | None = "benchmarks/results", mode: str = "anchors",
        n_held_out: int = 256, methods: tuple[str, ...] = ("hqq",), n_fit: int | None = None):
    """n_fit: fit GPTQ candidates (and the uniform GPTQ row) on that many other calibration sentences
    (auto_quantize's calibration=) instead of half the tuning items."""
    import lowbit
    from lowbit.auto import default_candidates
    from lowbit.auto.fakequant import run_outputs
    from lowbit.auto.metrics import as_metric
    from lowbit.auto.sensitivity import CLIP_BITS
    from lowbit.calib import minilm_calibration
    from lowbit.calib.minilm import pick_sentences, sentence_batches
    from lowbit.models import SENTENCES, embed, load_minilm
    from lowbit.models.minilm import OUTPUT

    torch.set_num_threads(threads)
    model = load_minilm()
    n_fit = n_fit if "gptq" in methods else None
    fitted = pick_sentences(n_fit) if n_fit else []
    calibration = minilm_calibration(model, n_fit) if n_fit else None
    tuned = pick_sentences(n_tune, exclude=fitted)
    data = sentence_batches(model, tuned)
    rest = pick_sentences(None, exclude={*tuned, *fitted})
    n_held_out = min(n_held_out, len(rest))
    sentences = {"eval": SENTENCES, "held-out": [rest[i * len(rest) // n_held_out] for i in range(n_held_out)]}
    ref = {k: embed(model, s) for k, s in sentences.items()}
    metric, ref_out = as_metric("cosine"), run_outputs(model, data, OUTPUT)
    cands = default_candidates(methods=methods)
    rows, cache = [], tempfile.mkdtemp(prefix="lowbit-auto-bench-")  # a cold sensitivity cache for the first plan
    float_bytes = None
    name = ("auto_minilm" + ("_gptq" if "gptq" in methods else "") + (f"_fit{n_fit}" if n_fit else "")
            + (f"_tune{n_tune}" if n_tune != 64 else ""))
    for bits in (4, 3):
        for method in ("hqq", "gptq") if bits == 4 or n_fit else ("hqq",):
            clip = method == "gptq" and bits in CLIP_BITS  # as the GPTQ candidates
            cfg = QuantConfig(bits=bits, block_size=64, method=method, gptq_act_order=method == "gptq",
                              gptq_scales="clip" if clip else "rtn")
            fit = (calibration or data) if method == "gptq" else None
            uq = lowbit.quantize(copy.deepcopy(model), cfg, calibration=fit, sequential=False, progress=False)
            ub, float_bytes = uq.lowbit_summary.bytes_after, uq.lowbit_summary.bytes_before
            u_err = metric(ref_out, run_outputs(uq, data, OUTPUT))
            rows.append(_row(f"uniform int{bits} b64 {method}{'-clip' * clip}", uq, ub, float_bytes, ref, sentences,
                             **{"tuning error": u_err}))
            if method == "hqq":
                hqq_bytes, hqq_err = ub, u_err
        targets = [("size", {"target_size": hqq_bytes})]
        targets += [("error", {"target_error": hqq_err})] if bits == 4 else [("3.0 bits", {"target_size": 3 / 32})]
        for what, target in targets:
            plan, seconds, cpu = _tune(model, data, cache, mode, cands, calibration, **target)
            q = plan.quantize(copy.deepcopy(model), calibration or data, progress=False)
            assert q.lowbit_summary.bytes_after == plan.total_bytes
            if out_dir is not None and bits == 4 and what == "size":  # .svg: drawn without matplotlib
                plan.plot(Path(out_dir) / f"{name}_frontier.svg")
            label = f"auto at int{bits} hqq's {what}" if what != "3.0 bits" else "auto at 3.0 bits/weight"
            gptq = sum(c.cfg.data_aware for c in plan.layers)
            rows.append(_row(label, q, plan.total_bytes, float_bytes, ref, sentences, **{
                "tuning error": plan.measured_error, "estimated error": plan.estimated_error,
                "vs uniform hqq bytes": plan.total_bytes / hqq_bytes, "gptq layers": gptq, "tune s": seconds,
                "tune cpu s": cpu, "model runs": plan.evaluations, "repairs": plan.repair_steps}))
    load = load_average()
    aware = (", 2,3,4 bits x blocks 32/64/128 act-order GPTQ (with the clipping search at 2 and 3 bits)"
             if "gptq" in methods else "")
    split = ("; with GPTQ candidates every other item only fits GPTQ, all errors are measured on the rest" * bool(aware)
             if not n_fit else f"; GPTQ candidates fitted on {n_fit} other calibration sentences (calibration=)")
    notes = (f"all-MiniLM-L6-v2, the 37 Linear layers lowbit.quantize swaps; candidates (2,3,4,5,6,8 bits x "
             f"blocks 32/64/128/per channel HQQ{aware}, plus fp16), "
             f"sensitivity mode {mode!r}, {n_tune} tuning sentences (batched by token count, no padding; a quarter "
             "of the items held back from the sensitivity pass and the choice of smaller plans"
             f"{split}"
             f"); bytes = packed weights of those layers (fp32: {float_bytes:,}). Plans applied with "
             "plan.quantize(model, fit data) (GPTQ on the same fit items, float inputs); uniform GPTQ on "
             f"{'the same calibration' if n_fit else 'all tuning items'} (sequential=False). Errors: 'tuning "
             "error' = 1 - lowest cosine on the tuning sentences (a plan's: "
             "on the items it was measured on); 'eval' = lowbit.models.SENTENCES and 'held-out' = "
             f"{n_held_out} calibration sentences not used for tuning or fitting (never seen by tuning). 'tune s' is "
             "the whole "
             "auto_quantize call (wall; 'tune cpu s' = process CPU time): the first plan with a cold cache, later "
             f"ones with the sensitivity cache warm. {threads} threads; 1-min load average at the end {load:.1f} "
             "(other jobs share the 2 cores, so wall times are inflated).")
    report(name, rows, describe_environment("cpu"), out_dir=out_dir,
           title="Automatic quantization on MiniLM: plan vs uniform at equal size and equal error", notes=notes,
           floatfmt=".4f")
    return rows


def fit_check(n_tune: int = 32, threads: int = 2, out_dir: str | None = "benchmarks/results"):
    """The "anchors" mode checked on every MiniLM layer: every candidate measured ("all"), and the error the
    anchors' fit gives at each non-anchor candidate compared with the measured one (ratio fitted / measured)."""
    from lowbit.auto import default_candidates
    from lowbit.auto.fakequant import run_outputs
    from lowbit.auto.metrics import BUILTIN, as_metric
    from lowbit.auto.sensitivity import (
        anchor_keys,
        candidate_key,
        candidate_label,
        fit_error_to_noise,
        measure,
    )
    from lowbit.calib.minilm import minilm_tuning_data
    from lowbit.models import load_minilm
    from lowbit.models.minilm import OUTPUT
    from lowbit.pipeline.plan import quantizable_layers

    torch.set_num_threads(threads)
    model = load_minilm().eval()
    data, cands = minilm_tuning_data(model, n_tune), default_candidates(methods=("hqq", "gptq"))
    layers, metrics = quantizable_layers(model), [as_metric(m) for m in BUILTIN]
    ref, cache = run_outputs(model, data, OUTPUT), tempfile.mkdtemp(prefix="lowbit-auto-fit-")
    t0 = time.perf_counter()
    measure(model, data, layers, cands, metrics, ref, OUTPUT, cache, False, "anchors")
    checked = [c for c in cands if c.is_float or c.block_size == 64]  # every bits x method at block 64, and fp16
    sens = measure(model, data, layers, checked, metrics, ref, OUTPUT, cache, False, "all")
    seconds = time.perf_counter() - t0
    ratios = {}  # (metric, group) -> [fitted / measured]
    for name, entry in sens.layers.items():
        anchors = anchor_keys(entry, cands)
        for metric in ("cosine", "snr"):
            errors = entry["error"][metric]
            fit = fit_error_to_noise(entry["noise"], {k: errors[k] for k in anchors})
            for c in checked:
                k = candidate_key(c)
                if k in anchors or entry["bytes"].get(k) is None or errors.get(k, 0) <= 0:
                    continue
                group = "fp16" if c.is_float else f"int{c.bits} {c.method.value}"
                r = fit(entry["noise"][k]) / errors[k]
                for g in (group, "all"):
                    ratios.setdefault((metric, g), []).append((r, name, candidate_label(c)))
    rows = []
    for (metric, group), rs in sorted(ratios.items()):
        v = torch.tensor([r for r, _, _ in rs])
        lo, hi = min(rs), max(rs)
        rows.append(Row({"metric": metric, "candidates": group, "points": len(rs),
                         "median fitted/measured": v.median().item(), "p10": v.quantile(0.1).item(),
                         "p90": v.quantile(0.9).item(), "share within 2x": ((v > 0.5) & (v < 2)).float().mean().item(),
                         "worst under": f"{lo[0]:.3f} ({lo[1]} {lo[2]})", "worst over": f"{hi[0]:.3f} ({hi[1]} "
                                                                                     f"{hi[2]})"}))
    notes = (f"all-MiniLM-L6-v2, {len(layers)} Linear layers; the anchors chosen among the {len(cands)} default "
             f"candidates, {n_tune} tuning sentences. Measured: every bits x method at block 64 plus fp16 "
             f"({len(checked)} per layer, mode 'all'); for each layer the anchors mode's three anchors fit "
             "error = a * noise**p and the fit is compared with the measured error at every other candidate "
             f"(ratio < 1: the fit underestimates). {threads} threads, {seconds:.0f} s; 1-min load average at the end "
             f"{load_average():.1f}.")
    report("auto_minilm_fit", rows, describe_environment("cpu"), out_dir=out_dir,
           title="Automatic quantization: the anchors fit against every measured candidate, MiniLM", notes=notes,
           floatfmt=".3f")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tune", type=int, default=64, help="tuning sentences (default 64; others add _tuneN to the "
                   "results' name)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--mode", default="anchors", choices=("anchors", "all"), help="sensitivity mode")
    p.add_argument("--out", default="benchmarks/results", help="results folder ('' to skip saving)")
    p.add_argument("--held-out", type=int, default=256, help="held-out calibration sentences (default 256)")
    p.add_argument("--methods", default="hqq", help="candidate methods, comma-separated (default hqq; hqq,gptq "
                   "writes auto_minilm_gptq)")
    p.add_argument("--calib", type=int, default=None, metavar="N", help="with gptq: fit GPTQ on N other calibration "
                   "sentences (auto_quantize's calibration=; writes auto_minilm_gptq_fitN)")
    p.add_argument("--fit-check", action="store_true", help="check the anchors fit against every candidate instead")
    args = p.parse_args(argv)
    if args.fit_check:
        fit_check(args.tune, args.threads, args.out or None)
        return 0
    run(args.tune, args.threads, args.out or None, args.mode, args.held_out,
        tuple(m.strip() for m in args.methods.split(",") if m.strip()), args.calib)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
