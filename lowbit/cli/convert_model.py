"""`lowbit convert --model MODULE:FUNCTION|minilm [--calib DATA] --method gptq|awq OUT`: build the model, run it on
calibration data, quantize it layer by layer and write the checkpoint as `lowbit convert` does.

Prints the per-weight output-error table (before = plain RTN/HQQ, after = the data-aware step, worst first), or
with --json the summary as JSON on stdout. Progress bars go to stderr.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


class RegisteredMethods:
    """--method's choices: the method registry's names (lowbit.methods), read when argparse first checks or lists
    them, so building the parser imports no torch."""

    def __iter__(self):
        from ..methods import methods

        return iter(methods())

    def __contains__(self, name) -> bool:
        return name in tuple(self)


def needs_calibration(method: str | None) -> bool:
    """True when --method names a registered method that needs calibration data."""
    from ..methods import method_for

    return method is not None and method_for(method).needs_calibration


METHODS = RegisteredMethods()


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The model-based options of `lowbit convert`."""
    g = p.add_argument_group("data-aware conversion (build the model and calibrate it)")
    g.add_argument("--model", metavar="MODULE:FUNCTION|minilm",
                   help="build the float model by calling MODULE:FUNCTION() (a model, or (model, inputs): see "
                   "`pydoc lowbit.models.resolve`), the bundled MiniLM or a Hugging Face model folder; then IN is "
                   "not given, only OUT")
    g.add_argument("--calib", metavar="DATA",
                   help="calibration inputs: a folder of .pt/.npy/.safetensors files (one model call each), "
                   "FILE.txt / FILE.jsonl / a folder of them (text, with --tokenizer), MODULE:FUNCTION returning an "
                   "iterable of inputs, or 'minilm' (default with --model minilm)")
    g.add_argument("--calib-limit", type=int, default=None, metavar="N", help="use at most N calibration items "
                   "(with --calib minilm: sentences, default 256)")
    add_text_arguments(g)
    g.add_argument("--method", choices=METHODS, default=None,
                   help="a registered method (built in: rtn, hqq, gptq, awq, recon; plug-ins: lowbit.plugins); those "
                   "that need calibration (gptq, awq, recon) need --model and --calib; default rtn")
    g.add_argument("--steps", type=int, default=None, metavar="N",
                   help="recon: optimiser steps per block (default 200; early stopping on a held-out tenth)")
    g.add_argument("--act-order", action="store_true", help="GPTQ: columns by decreasing Hessian diagonal")
    g.add_argument("--damp", type=float, default=0.01, help="GPTQ damping, fraction of the mean diagonal (0.01)")
    g.add_argument("--gptq-scales", choices=("rtn", "hqq", "clip"), default="rtn",
                   help="GPTQ: how each block's scale/zero is chosen (clip: searched on the calibration inputs)")
    g.add_argument("--awq", action="store_true", help="GPTQ: activation-aware scaling first")
    g.add_argument("--float-inputs", action="store_true",
                   help="calibrate every layer on the float model's inputs (default: sequential, each layer sees "
                   "the already-quantized earlier layers' outputs)")
    g.add_argument("--json", action="store_true", help="print the summary and error table as JSON")


def add_text_arguments(g) -> None:
    """--tokenizer / --seq-len / --samples: calibration from text (convert, auto and quant)."""
    from ..calib.text import DEFAULT_SAMPLES, DEFAULT_SEQ_LEN

    g.add_argument("--tokenizer", metavar="DIR", help="with a text --calib: the folder of the model's tokenizer "
                   "(default: the --model folder)")
    g.add_argument("--seq-len", type=int, default=DEFAULT_SEQ_LEN, metavar="N",
                   help=f"with a text --calib: tokens per text at most (default {DEFAULT_SEQ_LEN})")
    g.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, metavar="N",
                   help=f"with a text --calib: number of texts (default {DEFAULT_SAMPLES})")


def text_options(args) -> dict:
    """The text-calibration options of parsed args (the --model folder is the default tokenizer)."""
    model = getattr(args, "model", None)
    folder = model if model and is_hf_folder(model) else None
    return {"tokenizer": getattr(args, "tokenizer", None) or folder, "seq_len": getattr(args, "seq_len", 512),
            "samples": getattr(args, "samples", 128)}


def is_hf_folder(spec: str) -> bool:
    """--model names a Hugging Face model folder (a directory with config.json)."""
    return Path(spec).is_dir() and (Path(spec) / "config.json").is_file()


def build_hf_model(folder: str):
    """The float model of a Hugging Face folder, as the class its config.json names (transformers)."""
    from ..checkpoint.hf_folder import read_config
    from ..checkpoint.pretrained import model_class

    if "quantization_config" in read_config(Path(folder) / "config.json"):
        raise ValueError(f"--model {folder}: its config.json has a quantization_config, so it is already quantized; "
                         "convert the float model's folder")
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    return model_class(config, Path(folder)).from_pretrained(folder, local_files_only=True).eval()



def require_input_without_model(p: argparse.ArgumentParser) -> None:
    """IN is optional only with --model: without it, a missing IN stays an argparse usage error (exit 2)."""
    parse = p.parse_known_args

    def parse_known_args(args=None, namespace=None):
        ns, extra = parse(args, namespace)
        if getattr(ns, "model", None) is None and getattr(ns, "input", None) is None:
            p.error("the following arguments are required: input, output (or --model MODULE:FUNCTION|minilm OUT)")
        return ns, extra

    p.parse_known_args = parse_known_args


def build_model(spec: str):
    """The float model for --model: a Hugging Face model folder, or a model spec ('minilm' or MODULE:FUNCTION, the
    one contract of every command: lowbit.models.resolve; example inputs, if returned, are not needed here)."""
    from ..models.resolve import BUILTIN_MODELS, load_model

    if spec not in BUILTIN_MODELS and is_hf_folder(spec):
        return build_hf_model(spec)
    return load_model(spec)[0]


def layer_overrides(path: str, base, model) -> tuple[dict, list[str]]:
    """--config with --model: (overrides for lowbit.quantize, names to skip) from the per-layer JSON (the schema of
    docs/FORMAT.md section 7, as `lowbit auto --out` writes it). Keys name modules, their weights ('fc.weight') or
    globs; every key must match a module of the model."""
    from fnmatch import fnmatchcase

    from ..checkpoint import load_overrides
    from ..checkpoint.names import rebase_keys
    from ..nn.swap import quant_class

    modules = [n for n, _ in model.named_modules() if n]
    layers = [n for n, m in model.named_modules() if n and quant_class(m) is not None]
    overrides, skip = {}, []
    rules = load_overrides(path, base)

    def matches(key: str, module: str) -> bool:
        name = key.removesuffix(".weight")
        return module == name or fnmatchcase(module, name)

    mapped = rebase_keys([r.pattern for r in rules], modules, matches) or {}  # a plan in the folder's names
    for rule in rules:
        name = mapped.get(rule.pattern, rule.pattern).removesuffix(".weight")
        if not any(n == name or fnmatchcase(n, name) for n in modules):
            raise ValueError(f"--config {path}: entry {rule.pattern!r} matches no layer of the model (e.g. "
                             f"{modules[:3]}); name a module, its weight, or a glob")
        if rule.cfg is not None and not any(n == name or fnmatchcase(n, name) or n.startswith(name + ".")
                                            for n in layers):
            raise ValueError(f"--config {path}: entry {rule.pattern!r} names no layer with a weight to quantize "
                             f"(Linear, Conv1d/2d, LSTM; e.g. {layers[:3]})")
        if rule.cfg is None:
            skip.append(name)
        else:
            overrides[name] = rule.cfg
    return overrides, skip


def _gptq_fit_every(path: str) -> int:
    """The config file's {"gptq_fit": {"every": n}} (written by `lowbit auto` for plans with GPTQ layers), else 0."""
    try:
        src = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return 0  # load_overrides has already accepted or reported the file
    fit = src.get("gptq_fit") if isinstance(src, dict) else None
    if fit is None:
        return 0
    if not isinstance(fit, dict) or type(fit.get("every")) is not int or fit["every"] < 1:
        raise ValueError(f"--config {path}: 'gptq_fit' must be {{\"every\": n}} with an int n >= 1, got {fit!r}")
    return fit["every"]


def minilm_calib_sentences(limit: int | None) -> list[str]:
    """The sentences `--calib minilm --calib-limit limit` uses (DEFAULT_SENTENCES when limit is None)."""
    from ..calib.minilm import DEFAULT_SENTENCES, pick_sentences

    return pick_sentences(limit or DEFAULT_SENTENCES)


def calibration_source(spec: str, limit: int | None, model_spec: str, model, text: dict | None = None):
    """--calib DATA as a CalibrationSet: 'minilm' = `minilm_calib_sentences(limit)` of the bundled MiniLM's own
    sentences; a .txt/.jsonl file or a folder of them = texts tokenized as `text` says (`text_options`), else a
    folder of .pt/.npy/.safetensors inputs or MODULE:FUNCTION (at most `limit` items)."""
    from ..calib import as_calibration
    from ..calib.text import is_text_source, text_calibration

    if is_text_source(spec):
        cal = text_calibration(spec, one_argument=hasattr(model, "tokenize"), **(text or {"tokenizer": None}))
        return cal.limited(limit)

    if spec == "minilm":
        from ..calib.minilm import sentence_batches

        if model_spec != "minilm":
            raise ValueError("--calib minilm works with --model minilm only")
        return sentence_batches(model, minilm_calib_sentences(limit))
    return as_calibration(spec, limit)


def _calibration(args, model):
    """The calibration set for lowbit.quantize (--calib, default 'minilm' with --model minilm)."""
    data = args.calib or ("minilm" if args.model == "minilm" else None)
    if data is None:
        what = f"--method {args.method}" if needs_calibration(args.method) else "a gptq/awq layer in --config"
        raise ValueError(f"{what} needs calibration inputs: pass --calib DATA (a folder of .pt/.npy/.safetensors "
                         "files or MODULE:FUNCTION)")
    return calibration_source(data, args.calib_limit, args.model, model, text_options(args))


def run_model(args: argparse.Namespace) -> int:
    """Build, calibrate, quantize and save; print the error table (or JSON)."""
    from ..api import quantize
    from ..nn.swap import tied_modules
    from ..quant import QuantConfig

    method = args.method or ("hqq" if args.hqq else "rtn")
    cfg = QuantConfig(bits=args.bits, block_size=args.block, symmetric=args.symmetric, method=method,
                      gptq_act_order=args.act_order, gptq_damp=args.damp, awq=args.awq,
                      gptq_scales=args.gptq_scales, **({"recon_steps": args.steps} if args.steps is not None else {}))
    model = build_model(args.model)
    overrides, skip = layer_overrides(args.config, cfg, model) if args.config else ({}, [])
    skip += tied_modules(model)
    aware = cfg.data_aware or any(c.data_aware for c in overrides.values())
    calibration = _calibration(args, model) if aware else None
    every = _gptq_fit_every(args.config) if aware and args.config else 0
    if every:  # a `lowbit auto` plan: GPTQ fitted on the items it was tuned with, as AutoPlan.quantize does
        from ..auto.calibrated import fit_items

        calibration = fit_items(calibration, every)
    model = quantize(model, cfg, skip=[*args.skip, *skip], overrides=overrides, calibration=calibration,
                     sequential=not args.float_inputs, progress=not args.quiet)
    save_output(model, args, cfg)
    summary = model.lowbit_summary
    if args.json:
        out = summary.to_json() if hasattr(summary, "to_json") else {"bytes before": summary.bytes_before,
                                                                      "bytes after": summary.bytes_after}
        print(json.dumps(out, indent=1))
    else:
        print(summary)
    return 0


def save_output(model, args, cfg) -> None:
    """Write the checkpoint; from a Hugging Face folder, a folder (OUT/model.safetensors, config.json with the lowbit
    quantization_config, tokenizer files) unless OUT ends in .safetensors."""
    from ..checkpoint import save
    from ..checkpoint.convert import folder_output
    from ..checkpoint.hf_folder import copy_files
    from ..checkpoint.output_folder import replacing_folder
    from ..checkpoint.quantization_config import stamp_quantization_config

    if not is_hf_folder(args.model):
        save(model, args.output, external_data=args.external_data)
        return
    dst, carry, folder = folder_output(args.output, args.model)
    if folder is None:  # OUT ends in .safetensors: the weights alone
        save(model, dst, external_data=args.external_data)
        return
    inputs = [f for f in Path(args.model).iterdir() if f.is_file()]  # OUT must not be the model folder itself
    with replacing_folder(folder, inputs) as tmp:  # built beside, swapped in whole
        save(model, tmp / Path(dst).name, external_data=args.external_data)
        stamp_quantization_config(copy_files(carry, tmp, carry), cfg)
