"""`lowbit auto`: choose bits, block size and method per layer under a size or error target; write the plan.

    lowbit auto --model minilm --size 25% --out plan.json [--plot frontier.png] [--json]
    lowbit convert IN OUT --config plan.json       # a plan without GPTQ layers
    lowbit convert --model minilm --calib minilm --calib-limit 64 --config plan.json --float-inputs OUT  # with
    lowbit auto --methods hqq,gptq --calib minilm --calib-limit 512 ...  # GPTQ fitted on 512 other sentences
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys

from . import convert_model

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> float:
    """'25%' or '0.25' -> 0.25 (fraction of fp32); '20MB', '20MiB', '123456' -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(%|[KMG]i?B|B)?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"--size {text!r}: use a percentage of fp32 (25%), a fraction (0.25) or bytes (20MB, 20MiB, "
                         "123456)")
    value, unit = float(m.group(1)), (m.group(2) or "").upper()
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"--size {text!r}: must be a finite number > 0")
    if unit == "%":
        value /= 100
        if not 0 < value <= 1:
            raise ValueError(f"--size {text!r}: a percentage must be in (0, 100]")
        return value
    if unit == "" and value <= 1:
        return value
    size = value * _UNITS[unit]
    if size < 2:  # auto_quantize reads a target <= 1 as a fraction of fp32: 1B would mean 100%
        raise ValueError(f"--size {text!r} is {size:g} bytes; give at least 2 bytes, or a fraction (0.25) or a "
                         "percentage (25%) of fp32")
    if not math.isfinite(size):
        raise ValueError(f"--size {text!r}: must be a finite size")
    return size


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"--{what} {text!r}: use comma-separated integers, e.g. 2,3,4") from None


def add_parser(sub) -> None:
    p = sub.add_parser("auto", help="choose per-layer bits/block/method under a size or error target",
                       description="Measure each layer's output error at each candidate setting on test data, pick "
                       "one setting per layer for the smallest model within an error or the best model within a "
                       "size, verify the whole plan, and write it as a per-layer config for `lowbit convert "
                       "--config`.")
    p.add_argument("--model", default="minilm", metavar="MODULE:FUNCTION|minilm",
                   help="the float model: MODULE:FUNCTION returning an nn.Module or (model, inputs) (see "
                   "`pydoc lowbit.models.resolve`), or the bundled MiniLM (default)")
    p.add_argument("--data", help="test inputs: a folder of .pt/.npy/.safetensors files or MODULE:FUNCTION "
                   "returning an iterable of inputs; 'minilm' (default with --model minilm) = calibration sentences")
    p.add_argument("--limit", type=int, default=64, help="at most this many data items / sentences (default 64)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--size", help="size target for the quantized layers: 25%% or 0.25 of fp32, or 20MB/20MiB")
    target.add_argument("--max-error", type=float, help="error target in the metric's units (cosine: 1 - lowest "
                        "cosine, e.g. 0.01)")
    p.add_argument("--metric", default="cosine", choices=("cosine", "cosine_mean", "snr", "max_rel"))
    p.add_argument("--output", help="the part of the model output to compare (a dict key or index; default the "
                   "whole output, 'sentence_embedding' for minilm)")
    p.add_argument("--bits", default="2,3,4,5,6,8", help="candidate bits (default 2,3,4,5,6,8)")
    p.add_argument("--blocks", default="32,64,128,-1", help="candidate blocks (-1 = per channel; default "
                   "32,64,128,-1)")
    p.add_argument("--methods", default="hqq", help="candidate methods: rtn, hqq, gptq (default hqq; "
                   "gptq at 2..4 bits and blocks 32/64/128 only, with the clipping search at 2 and 3 bits, fitted "
                   "on every other --data item and all candidates measured on the rest, or fitted on --calib)")
    p.add_argument("--calib", metavar="DATA", help="fit GPTQ candidates on these inputs instead of half of --data "
                   "(same forms as --data; 'minilm' = --calib-limit calibration sentences as convert picks them, "
                   "and the tuning sentences are then chosen among the others); apply with convert --calib DATA")
    p.add_argument("--calib-limit", type=int, default=None, metavar="N", help="at most N --calib items (with "
                   "--calib minilm: sentences, default 256)")
    convert_model.add_text_arguments(p)  # --tokenizer/--seq-len/--samples for a .txt/.jsonl --data or --calib
    p.add_argument("--no-float", action="store_true", help="no fp16 ('keep float') candidate")
    p.add_argument("--memory", default="low", choices=("low", "normal", "high", "none"),
                   help="report the plan's measured speed against fp32 at this memory mode (default low; none: skip)")
    p.add_argument("--min-speed", type=_ratio, metavar="X", help="speed floor: the plan must run at least X times "
                   "fp32's speed (e.g. 1.0 or 1.0x); measured at --memory, then at the other memory modes; no mode "
                   "fast enough: exit status 3 and no plan written")
    p.add_argument("--skip", action="append", default=[], help="layer name or glob kept float (repeatable)")
    p.add_argument("--mode", default="anchors", choices=("anchors", "all"),
                   help="sensitivity: 'anchors' (3 runs per Linear layer, fast; default) or 'all' (every candidate)")
    p.add_argument("--holdout", type=float, default=0.25, help="share of data items held back from the "
                   "sensitivity pass and the choice of smaller plans (default 0.25)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the sensitivity cache")
    p.add_argument("--out", required=True, help="where to write the plan (the convert --config JSON)")
    p.add_argument("--plot", help="also save the size-error frontier plot here (.svg always; other formats need "
                   "matplotlib)")
    p.add_argument("--json", action="store_true", help="print the plan report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def _data(args, model):
    data = args.data or ("minilm" if args.model == "minilm" else None)
    if data is None:
        raise ValueError("--data is required with --model MODULE:FUNCTION: a folder of .pt/.npy/.safetensors inputs "
                         "or MODULE:FUNCTION returning an iterable of inputs")
    if data == "minilm":
        from ..calib.minilm import minilm_tuning_data
        from .convert_model import minilm_calib_sentences

        fitted = minilm_calib_sentences(args.calib_limit) if args.calib == "minilm" else ()
        return minilm_tuning_data(model, args.limit, exclude=fitted)
    return convert_model.calibration_source(data, args.limit, args.model, model, convert_model.text_options(args))


def _calibration(args, model):
    """The separate GPTQ fit data (--calib), or None."""
    if args.calib is None:
        return None
    if args.calib_limit is not None and args.calib_limit < 1:
        raise ValueError(f"--calib-limit {args.calib_limit}: must be >= 1")
    return convert_model.calibration_source(args.calib, args.calib_limit, args.model, model,
                                            convert_model.text_options(args))


def _check_minilm_sources(args) -> None:
    for flag, value in (("--data", args.data), ("--calib", args.calib)):
        if value == "minilm" and args.model != "minilm":
            raise ValueError(f"{flag} minilm works with --model minilm only")


def _candidates(args):
    from ..auto import default_candidates

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    cands = default_candidates(_ints(args.bits, "bits"), _ints(args.blocks, "blocks"), methods,
                               keep_float=not args.no_float)
    if not cands:
        raise ValueError("the candidate set is empty: give --bits, --blocks and --methods (or drop --no-float)")
    return cands


def _check_outputs(args) -> None:
    """--out and --plot: distinct, in folders that exist, and none of the command's inputs."""
    from .overwrite import data_path, module_file, refuse_missing_parent, refuse_overwrite

    refuse_overwrite({"--out": args.out, "--plot": args.plot},
                     {"the --model module": module_file(args.model), "the --data inputs": data_path(args.data),
                      "the --calib data": data_path(args.calib)})
    refuse_missing_parent("--out", args.out)
    refuse_missing_parent("--plot", args.plot)


def _ratio(text: str) -> float:
    """A speed ratio to fp32 from the command line: 1.0 or 1.0x."""
    try:
        value = float(text.lower().removesuffix("x").removesuffix("×"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a ratio to fp32 (e.g. 1.0 or 1.0x)") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r}: a speed floor must be a positive ratio")
    return value


def _speed(args, plan, model, data, calibration):
    """(PlanSpeed or None, note, met): the measured speed at --memory, or with --min-speed the first memory mode that
    meets the floor (auto.speed.speed_floor)."""
    from ..auto.speed import plan_speed, speed_floor

    fit = calibration if calibration is not None else data
    if args.min_speed is None:
        speed = None if args.memory == "none" else plan_speed(plan, model, data, args.memory, fit)
        return speed, "", True
    met, seen = speed_floor(plan, model, data, "low" if args.memory == "none" else args.memory, args.min_speed, fit)
    tried = "; ".join(s.describe() for s in seen)
    if met is None:
        return seen[0], f"below --min-speed {args.min_speed:g}x at every memory mode ({tried})", False
    note = "" if met is seen[0] else f"meets --min-speed {args.min_speed:g}x at memory {met.memory} ({tried})"
    return met, note, True


def run(args: argparse.Namespace) -> int:
    from ..auto import auto_quantize
    from ..models.minilm import OUTPUT
    from .convert_model import build_model

    _check_outputs(args)
    size = parse_size(args.size) if args.size is not None else None
    if args.max_error is not None and not args.max_error >= 0:
        raise ValueError(f"--max-error {args.max_error}: must be >= 0")
    if args.limit < 1:
        raise ValueError(f"--limit {args.limit}: must be >= 1")
    if args.plot and not args.plot.lower().endswith(".svg"):
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ImportError(f"--plot {args.plot}: this format needs matplotlib (the lowbit[plot] extra): pip install "
                              "matplotlib, or write a .svg (drawn without it)") from None
    cands = _candidates(args)
    _check_minilm_sources(args)
    model = build_model(args.model)
    calibration = _calibration(args, model)
    data = _data(args, model)
    output = args.output or (OUTPUT if args.model == "minilm" else None)
    if output is not None and output.lstrip("-").isdigit():
        output = int(output)
    plan = auto_quantize(model, data, target_size=size, target_error=args.max_error, candidates=cands,
                         metric=args.metric, output=output, skip=args.skip, cache=not args.no_cache,
                         progress=not args.quiet, mode=args.mode, holdout=args.holdout, calibration=calibration)
    from ..auto.plan import wrapper_prefix

    plan.model_prefix = wrapper_prefix(model)  # so `convert FOLDER --config` maps names to the model's folder
    # GPTQ layers are refitted as in the tuning: on --calib, else on the tuning data's fit items
    speed, note, met = _speed(args, plan, model, data, calibration)
    if not met:
        print(f"{plan.table()}\n\nno plan written: {note}", file=sys.stderr)
        return 3
    if args.plot:  # first: a plot that cannot be written leaves no plan behind
        plan.plot(args.plot)
    plan.to_json(args.out)
    fit = (f"--calib {args.calib}" + (f" --calib-limit {args.calib_limit}" if args.calib_limit else "")
           if plan.gptq_calibration else f"--calib {args.data or 'minilm'} --calib-limit {args.limit}")
    how = (f"apply with: lowbit convert --model {args.model} {fit} --config {args.out} --float-inputs OUT "
           "(GPTQ layers need the data they were fitted on)"
           if plan.needs_calibration else f"apply with: lowbit convert IN OUT --config {args.out}")
    report = {**plan.to_dict(), "measured_speed": None if speed is None else speed.describe(),
              **({"min_speed": note or f"met at memory {speed.memory}"} if args.min_speed is not None else {})}
    line = ("" if speed is None else "\n" + speed.describe()) + (f"\n{note}" if note else "")
    print(json.dumps(report, indent=1) if args.json else f"{plan.table()}{line}\n\nwrote {args.out}; {how}")
    return 0
