"""`lowbit quant --model MODULE:FUNCTION|minilm --calib DATA [--config quant.json] OUT`: offline full INT8.

Builds the float model, calibrates static activation scales on DATA (a folder of .pt/.npy/.safetensors tensors, a
folder of images preprocessed as the config's MNN fields say, MODULE:FUNCTION yielding inputs, or 'minilm'),
quantizes to static W8A8 (`lowbit.quantize_static`) and writes the checkpoint. The config takes MNN's field names
(feature_quantize_method, weight_quantize_method, used_sample_num, feature_clamp_value, weight_clamp_value,
batch_size, skip_quant_op_names, debug, and the image fields format/mean/normal/width/height); unknown fields are
errors. Prints the summary (and with --debug the per-layer cosine/SNR/overflow table), or JSON with --json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import convert_model


def add_parser(sub) -> None:
    p = sub.add_parser("quant", help="offline full INT8 with calibration data (MNN's quantized.out)",
                       description="Static W8A8: int8 weights and activations, activation scales fixed from "
                       "calibration data (KL / minmax / EMA / percentile / MSE).")
    p.add_argument("output", metavar="OUT", help="the lowbit checkpoint to write")
    p.add_argument("--model", required=True, metavar="MODULE:FUNCTION|minilm",
                   help="build the float model by calling MODULE:FUNCTION() (a model, or (model, inputs): see "
                   "`pydoc lowbit.models.resolve`), or the bundled MiniLM")
    p.add_argument("--calib", metavar="DATA", help="calibration inputs: a folder of .pt/.npy/.safetensors files or of "
                   "images, MODULE:FUNCTION returning an iterable of inputs, or 'minilm' (default with --model minilm)")
    convert_model.add_text_arguments(p)  # --tokenizer/--seq-len/--samples for a .txt/.jsonl --calib
    p.add_argument("--config", metavar="JSON", help="MNN-style quantization config (see above)")
    p.add_argument("--skip", action="append", default=[], metavar="NAME", help="keep this layer (name or glob) float")
    p.add_argument("--debug", action="store_true", help="per-layer cosine / SNR / overflow table")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def read_config(path: str | None):
    """(StaticConfig, image fields) from an MNN-style JSON file (defaults without one)."""
    from ..quant.static_config import StaticConfig

    if path is None:
        return StaticConfig(), {}
    from ..checkpoint.safetensors_io import parse_json

    try:
        data = parse_json(Path(path).read_bytes())  # strict: no NaN/Infinity, no repeated key
    except UnicodeDecodeError:
        raise ValueError(f"--config {path}: not a text (UTF-8) JSON file") from None
    except (ValueError, RecursionError) as e:
        raise ValueError(f"--config {path}: not valid JSON ({str(e)[:200]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a JSON object")
    try:
        return StaticConfig.from_mnn(data)
    except (ValueError, TypeError) as e:
        raise ValueError(f"--config {path}: {e}") from None


def calibration_for(spec: str | None, model_spec: str, model, cfg, image_fields: dict, text: dict | None = None):
    """What to pass to quantize_static as calibration for --calib (text: `convert_model.text_options`)."""
    from ..calib.text import is_text_source

    spec = spec or ("minilm" if model_spec == "minilm" else None)
    if spec is None:
        raise ValueError("pass --calib DATA (a folder of tensors or images, or MODULE:FUNCTION)")
    if is_text_source(spec):
        return convert_model.calibration_source(spec, None, model_spec, model, text)
    if spec == "minilm":
        from ..calib import minilm_calibration

        if model_spec != "minilm":
            raise ValueError("--calib minilm works with --model minilm only")
        return minilm_calibration(model, cfg.samples or 128)
    folder = Path(spec)
    if folder.is_dir():
        from ..static.images import image_files, load_images

        if image_files(folder):
            return load_images(folder, image_fields, cfg.batch_size, cfg.samples)
    return spec


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import save
    from ..static import quantize_static
    from .convert_model import build_model
    from .overwrite import data_path, module_file, refuse_overwrite

    refuse_overwrite({"OUT": args.output}, {"--config": args.config, "the --model module": module_file(args.model),
                                            "the --calib data": data_path(args.calib)})
    cfg, image_fields = read_config(args.config)
    if image_fields:  # checked before the model is built
        from ..static.images import check_image_fields

        try:
            check_image_fields(image_fields)
        except ValueError as e:
            raise ValueError(f"--config {args.config}: {e}") from None
    if args.debug and not cfg.debug:
        from dataclasses import replace

        cfg = replace(cfg, debug=True)
    model = build_model(args.model)
    calibration = calibration_for(args.calib, args.model, model, cfg, image_fields, convert_model.text_options(args))
    model = quantize_static(model, calibration, cfg, skip=args.skip, progress=not args.quiet)
    save(model, args.output)
    summary = model.lowbit_summary
    print(summary.to_json() if args.json else summary)
    return 0
