"""`lowbit validate`: a compressed model against the original (error, size, peak memory, latency)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("validate", help="compare a compressed model with the original on real inputs",
                       description="Output error (max abs, mean abs, cosine, SNR dB), file size and ratio, peak "
                       "resident memory of load + forward (in a separate process) and latency (median, p20, p80) "
                       "for memory Normal and Low.")
    p.add_argument("--model", default="minilm",
                   help="'minilm' (bundled) or MODULE:FUNCTION returning (model, example_inputs): validate runs the "
                   "model on those inputs (see `pydoc lowbit.models.resolve`; default minilm)")
    p.add_argument("--checkpoint", help="a lowbit checkpoint of the model; default: quantize it with the options "
                   "below and save to a temporary file")
    p.add_argument("--bits", type=int, default=4, help="bits when quantizing (default 4)")
    p.add_argument("--block", type=int, default=64, help="block size when quantizing (default 64; -1 per channel)")
    p.add_argument("--symmetric", action="store_true")
    p.add_argument("--hqq", action="store_true", help="HQQ when quantizing")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions (default: adaptive)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocess")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    from ..apps.validate import format_report, validate
    from ..quant import QuantConfig

    cfg = QuantConfig(bits=args.bits, block_size=args.block, symmetric=args.symmetric,
                      method="hqq" if args.hqq else "rtn")
    report = validate(args.model, checkpoint=args.checkpoint, cfg=cfg, reps=args.reps, peak_memory=not args.no_memory)
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0
