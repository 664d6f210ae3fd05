"""`lowbit export IN OUT_DIR --format compressed-tensors`: a lowbit checkpoint as a folder vLLM loads."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write a lowbit checkpoint in another format (compressed-tensors, for vLLM)",
                       description="Write a lowbit checkpoint as a compressed-tensors pack-quantized folder: "
                       "model.safetensors (or shards with an index), config.json with quantization_config, and the "
                       "tokenizer files. Every quantized weight is packed: weights that format cannot hold exactly "
                       "(a last short block, non-integer zeros, Conv/LSTM, float16 storage) are refused naming why, "
                       "requantized with --requantize, or kept in float with --allow-float; the summary lists each "
                       "one and the error it adds. The folder is built beside OUT_DIR and swapped in whole.")
    p.add_argument("input", help="lowbit checkpoint (.safetensors), or a folder holding one as model.safetensors")
    p.add_argument("output", help="folder to write (created if missing; replaced as a whole, atomically)")
    p.add_argument("--format", default="compressed-tensors", choices=["compressed-tensors"],
                   help="output format (default compressed-tensors: vLLM's pack-quantized)")
    p.add_argument("--config", metavar="CONFIG_JSON",
                   help="the original model's config.json (default: config.json next to the input)")
    handling = p.add_mutually_exclusive_group()
    handling.add_argument("--requantize", action="store_true",
                          help="requantize Linear weights the format cannot hold exactly (integer zeros, a group "
                          "size dividing K); the added error is reported")
    handling.add_argument("--strict", action="store_true",
                          help="fail when any weight cannot be written exactly (also refuses --requantize)")
    p.add_argument("--allow-float", action="store_true",
                   help="keep weights the format cannot hold in float (listed in 'ignore') instead of refusing; "
                   "warns")
    p.add_argument("--weight-only", action="store_true",
                   help="export a static int8 (W8A8) checkpoint's weights alone: its activation steps are dropped "
                   "and SmoothQuant smoothing is folded back into the weights")
    p.add_argument("--max-shard-size", metavar="SIZE",
                   help="split the weights into shards of at most SIZE (e.g. 5GB, 500MB) with an HF index")
    p.add_argument("--zero-point-layout", choices=["transformers", "vllm"], default="transformers",
                   help="asymmetric zero points: 'transformers' (N rows, what transformers' from_pretrained loads; "
                   "default) or 'vllm' (the packed rows alone)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import export
    from .overwrite import refuse_overwrite

    refuse_overwrite({"OUT_DIR": args.output}, {"the input": args.input, "--config": args.config},
                     folder_outputs=("OUT_DIR",))
    summary = export(args.input, args.output, format=args.format, config=args.config, requantize=args.requantize,
                     strict=args.strict, progress=not args.quiet, allow_float=args.allow_float,
                     weight_only=args.weight_only, max_shard_size=args.max_shard_size,
                     zero_point_layout=args.zero_point_layout)
    print(summary.table())
    return 0
