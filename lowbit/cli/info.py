"""`lowbit info FILE [--json]`: what a checkpoint holds; `lowbit info --system`: what this machine can run."""

from __future__ import annotations

import argparse
import json
import math


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="describe a lowbit checkpoint, or this machine (--system)",
                       description="Per-layer table of a lowbit checkpoint (name, shape, bits, block, method, bytes, "
                       "ratio) with totals, or the capability report with --system.")
    p.add_argument("file", nargs="?", help="lowbit checkpoint (.safetensors)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--system", action="store_true", help="print the kernels and CPU/GPU features of this machine")
    p.set_defaults(run=run)


def _itemsize(dtype: str) -> int:
    import torch

    return torch.empty((), dtype=getattr(torch, dtype)).element_size()


def checkpoint_rows(path) -> tuple[list[dict], dict]:
    """One dict per stored weight (quantized parameters and plain tensors) and the totals, from the header only."""
    from ..checkpoint import open_checkpoint
    from ..checkpoint.header import scheme_summary

    ckpt = open_checkpoint(path)
    rows = []
    for name, meta in sorted(ckpt.quantized.items()):
        stored = sum(ckpt.entries[t].nbytes for t in ckpt.groups[name].values())
        original = math.prod(meta["shape"]) * _itemsize(meta["dtype"])
        # a weight of another registered format may have no block or method: its format name stands for the method
        rows.append({"name": name, "shape": list(meta["shape"]), "bits": meta.get("bits"),
                     "block": meta.get("block_size"), "method": meta.get("method", meta.get("format")),
                     "bytes": stored, "original_bytes": original})
    for name in sorted(ckpt.floats):
        e = ckpt.entries[name]
        dtype = str(e.dtype).removeprefix("torch.")
        rows.append({"name": name, "shape": list(e.shape), "bits": e.dtype.itemsize * 8, "block": None,
                     "method": dtype, "bytes": e.nbytes, "original_bytes": e.nbytes})
    for r in rows:
        r["ratio"] = r["original_bytes"] / max(1, r["bytes"])
    stored = sum(r["bytes"] for r in rows)
    original = sum(r["original_bytes"] for r in rows)
    totals = {"tensors": len(rows), "quantized": len(ckpt.quantized), "bytes": stored, "original_bytes": original,
              "ratio": original / max(1, stored), "file_bytes": ckpt.file_bytes,
              "format_version": ckpt.body["version"], "lowbit_version": ckpt.body.get("lowbit_version"),
              "external_data": str(ckpt.external) if ckpt.external else None,
              "scheme": ckpt.body.get("scheme") or scheme_summary(ckpt.quantized),
              "static": static_rows(ckpt.body.get("static"))}
    return rows, totals


def static_rows(static: dict | None) -> list[dict] | None:
    """Per static int8 layer (from the header's "static" object): its kind, activation step and clamp."""
    if not static:
        return None
    fused = {layer for layer, _ in static.get("fused_relu", [])}
    return [{"layer": name, "kind": spec["kind"], "input_scale": spec["input_scale"],
             "input_clamp": spec["input_clamp"], "smooth": "input_smooth" in spec,
             "relu": name in fused and spec.get("fused_act") is None, "fused_act": spec.get("fused_act")}
            for name, spec in sorted(static["layers"].items())]


def _system(as_json: bool) -> str:
    from dataclasses import asdict

    from tabulate import tabulate

    from ..runtime import capabilities

    caps = capabilities()
    if as_json:
        return json.dumps(asdict(caps), indent=1)
    return tabulate(caps.rows(), headers=["capability", "value"], tablefmt="github")


def run(args: argparse.Namespace) -> int:
    if args.system:
        print(_system(args.json))
        return 0
    if not args.file:
        raise ValueError("give a checkpoint file (lowbit info FILE) or --system")
    rows, totals = checkpoint_rows(args.file)
    if args.json:
        print(json.dumps({"file": args.file, "tensors": rows, "totals": totals}, indent=1))
        return 0
    from tabulate import tabulate

    table = [[r["name"], "x".join(map(str, r["shape"])), r["bits"], "-" if r["block"] is None else r["block"],
              r["method"], r["bytes"], f"{r['ratio']:.2f}"] for r in rows]
    table.append(["TOTAL", f"{totals['tensors']} tensors, {totals['quantized']} quantized", "", "", "",
                  totals["bytes"], f"{totals['ratio']:.2f}"])
    print(tabulate(table, headers=["name", "shape", "bits", "block", "method", "bytes", "ratio"], tablefmt="github",
                   disable_numparse=True))
    if totals["static"]:
        print(tabulate([[r["layer"], r["kind"], f"{r['input_scale']:.6g}", r["input_clamp"],
                         "yes" if r["smooth"] else "", "yes" if r["relu"] else r["fused_act"] or ""]
                        for r in totals["static"]],
                       headers=["static int8 layer", "kind", "activation step", "clamp", "smoothed", "fused ReLU"],
                       tablefmt="github", disable_numparse=True))
    for g in totals["scheme"]["groups"]:
        if "format" in g:  # another registered format (`scheme_summary`)
            print(f"scheme: {len(g['targets'])} weight(s) of format {g['format']}, {g['bits']} bits")
            continue
        print(f"scheme: {len(g['targets'])} weight(s) {g['method']} {g['bits']} bits, block {g['block_size']}, "
              f"{'symmetric' if g['symmetric'] else 'asymmetric'}")
    return 0
