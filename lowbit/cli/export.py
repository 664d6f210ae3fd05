"""`lowbit export IN OUT_DIR --format compressed-tensors`: a lowbit checkpoint as a folder vLLM loads."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write a lowbit checkpoint in another format (compressed-tensors, for vLLM)",
                       description="Write a lowbit checkpoint as a compressed-tensors pack-quantized folder: "
                       "model.safetensors, config.json with quantization_config, and the tokenizer files. Weights "
                       "that format cannot hold exactly (a last short block, non-integer zeros, Conv/LSTM, float16 "
                       "storage) are kept in float and listed in 'ignore', or requantized with --requantize; the "
                       "summary lists each one and the error it adds.")
    p.add_argument("input", help="lowbit checkpoint (.safetensors), or a folder holding one as model.safetensors")
    p.add_argument("output", help="folder to write (created if missing; files in it are replaced atomically)")
    p.add_argument("--format", default="compressed-tensors", choices=["compressed-tensors"],
                   help="output format (default compressed-tensors: vLLM's pack-quantized)")
    p.add_argument("--config", metavar="CONFIG_JSON",
                   help="the original model's config.json (default: config.json next to the input)")
    handling = p.add_mutually_exclusive_group()
    handling.add_argument("--requantize", action="store_true",
                          help="requantize Linear weights the format cannot hold exactly (integer zeros, a group "
                          "size dividing K) instead of keeping them in float; the added error is reported")
    handling.add_argument("--strict", action="store_true",
                          help="fail when any weight cannot be written exactly")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import export
    from .overwrite import refuse_overwrite

    refuse_overwrite({"OUT_DIR": args.output}, {"the input": args.input, "--config": args.config},
                     folder_outputs=("OUT_DIR",))
    summary = export(args.input, args.output, format=args.format, config=args.config, requantize=args.requantize,
                     strict=args.strict, progress=not args.quiet)
    print(summary.table())
    return 0
