"""`lowbit convert IN OUT`: a float checkpoint on disk to a lowbit checkpoint (MNN's --weightQuantBits & co)."""

from __future__ import annotations

import argparse

from . import convert_decoder, convert_model


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="compress a float checkpoint (safetensors, sharded, .pt/.bin)",
                       description="Compress a float checkpoint tensor by tensor, without building the model. "
                       "Quantized: floating weights of rank >= 2 named *weight / weight_* with >= 1024 elements; "
                       "embeddings, norms and biases are kept.")
    p.add_argument("input", nargs="?", help="float checkpoint: .safetensors, *.index.json (sharded), .pt/.bin, or a "
                   "directory (omitted with --model)")
    p.add_argument("output", help="lowbit checkpoint to write (.safetensors), or a folder (existing, ending in '/', or "
                   "any name not ending in .safetensors when the input is a model folder): model.safetensors, "
                   "config.json and the tokenizer files, replaced as a whole")
    p.add_argument("--bits", type=int, default=4, help="bits per weight: 2..8, or 16 to store float16 (default 4)")
    p.add_argument("--block", type=int, default=64,
                   help="input channels per scale/zero block, a multiple of 16, or -1 for per channel (default 64)")
    p.add_argument("--symmetric", action="store_true", help="symmetric quantization (no stored zero)")
    p.add_argument("--hqq", action="store_true", help="HQQ: optimise the zeros (asymmetric only)")
    p.add_argument("--fp16", action="store_true",
                   help="store the float tensors that stay unquantized (embeddings, norms, biases) as float16")
    p.add_argument("--skip", nargs="+", action="extend", default=[], metavar="PATTERN",
                   help="layer names or globs to keep untouched, each matching some tensor (e.g. 'lm_head' '*.attn.*')")
    p.add_argument("--config", metavar="LAYERS_JSON", help="per-layer overrides (see docs/FORMAT.md)")
    p.add_argument("--external-data", action="store_true",
                   help="write the tensors to OUT.data next to a small OUT (MNN's --saveExternalData)")
    p.add_argument("--format", choices=["lowbit", "compressed-tensors"], default="lowbit",
                   help="compressed-tensors: quantize to what that format holds exactly (RTN, integer zeros, group "
                   "sizes dividing K), so that `lowbit export` packs every quantized Linear (default lowbit)")
    p.add_argument("--max-shard-size", metavar="SIZE",
                   help="folder OUT only: split the weights into shards of at most SIZE (e.g. 5GB) with an HF index")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    convert_model.add_arguments(p)  # --model/--calib/--method: data-aware conversion (lowbit/cli/convert_model.py)
    convert_decoder.add_arguments(p)  # --seq-len/--act-budget-gb: decoder folders block by block
    convert_model.require_input_without_model(p)
    p.set_defaults(run=run)


def summary_table(summary) -> str:
    from tabulate import tabulate

    row = [summary.n_quantized, summary.n_kept, f"{summary.bytes_before / 1e6:.2f} MB",
           f"{summary.bytes_after / 1e6:.2f} MB", f"{summary.ratio:.2f}x", f"{summary.seconds:.1f} s"]
    headers = ["tensors quantized", "tensors kept", "size before", "size after", "ratio", "time"]
    return tabulate([row], headers=headers, tablefmt="github")


def check_outputs(args: argparse.Namespace) -> None:
    """OUT (and OUT.data) must not be the input checkpoint, the model's module, calibration data or --config (the
    shards of a sharded input are checked by `lowbit.checkpoint.convert`, which knows every file it reads)."""
    import os

    from ..checkpoint.external import data_path_for
    from .overwrite import data_path, module_file, refuse_overwrite

    outputs = {"OUT": args.output, "OUT's data file": data_path_for(args.output) if args.external_data else None}
    inputs = {"the input checkpoint": args.input if args.input and os.path.isfile(args.input) else None,
              "--config": args.config, "the --model module": module_file(args.model),
              "the --calib data": data_path(args.calib)}
    refuse_overwrite(outputs, inputs)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import convert
    from ..quant import QuantConfig

    if convert_decoder.applies(args):  # a causal-LM folder with GPTQ: block by block (lowbit/sequential)
        check_outputs(args)
        return convert_decoder.run(args)
    if args.input is not None and args.calib and convert_model.is_hf_folder(args.input):
        args.model, args.input = args.input, None  # a model folder with calibration: build and calibrate it
    if args.model:
        if args.input is not None:
            raise ValueError(f"with --model give only OUT, not a checkpoint ({args.input!r})")
        if args.format != "lowbit" or args.max_shard_size:
            raise ValueError("--format and --max-shard-size apply to checkpoint conversion, not to --model")
        check_outputs(args)
        return convert_model.run_model(args)
    if convert_model.needs_calibration(args.method):
        raise ValueError(f"--method {args.method} needs the model and calibration data: pass --calib DATA with a "
                         "model folder IN (or --model and --calib)")
    check_outputs(args)
    cfg = QuantConfig(bits=args.bits, block_size=args.block, symmetric=args.symmetric,
                      method=args.method or ("hqq" if args.hqq else "rtn"))
    summary = convert(args.input, args.output, cfg, overrides=args.config, skip=args.skip,
                      external_data=args.external_data, progress=not args.quiet, kept_float16=args.fp16,
                      exact_for=None if args.format == "lowbit" else args.format, max_shard_size=args.max_shard_size)
    print(summary_table(summary))
    return 0
