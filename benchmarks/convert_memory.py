"""Peak memory of `lowbit.convert` on a synthetic 1 GB float32 checkpoint, and of loading the result.

Each measurement runs in a fresh Python process: after its imports it records VmRSS, runs the step, and reports
VmHWM (peak resident set) minus that baseline. Target (issue 6): convert < 400 MB extra for a 1 GB checkpoint,
and loading an external-data checkpoint stays near its largest tensor.

Usage: python -m benchmarks.convert_memory [--dir /tmp/lowbit-convert-bench] [--layers 24] [--keep]
(or `lowbit bench convert_memory ...`). The child is benchmarks.convert_memory_child.
Writes benchmarks/results/convert_memory.{md,csv,json}.
"""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from .harness import Row, describe_environment, report

N, K = 4096, 2560  # one layer: 40 MiB of float32; 24 layers + a small embedding = 1.0 GiB

def make_source(path: Path, layers: int) -> int:
    """Write a float32 safetensors checkpoint of `layers` (N, K) weights plus an embedding, one tensor at a time."""
    from lowbit.checkpoint.safetensors_io import AtomicWriter, TensorEntry

    entries = [TensorEntry(f"{i}.weight", torch.float32, (N, K)) for i in range(layers)]
    entries.append(TensorEntry("emb.weight", torch.float32, (1000, 256)))
    gen = torch.Generator().manual_seed(0)
    with AtomicWriter(path, entries, {}) as w:
        for e in entries:
            w.write(e.name, torch.randn(e.shape, generator=gen) * 0.02)
        w.commit()
    return path.stat().st_size


def run_child(step: str, src: Path, dst: Path, layers: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.convert_memory_child", step, str(src), str(dst), str(layers),
           str(N), str(K)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{step} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(line.removeprefix("RESULT "))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", default="/tmp/lowbit-convert-bench", help="scratch directory for the 1 GB files")
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--keep", action="store_true", help="keep the scratch files")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    scratch = Path(args.dir)
    scratch.mkdir(parents=True, exist_ok=True)
    src = scratch / "float.safetensors"
    src_bytes = make_source(src, args.layers)
    largest = N * K * 4
    rows = []
    steps = [("convert", "q.safetensors"), ("convert-external", "qx.safetensors"), ("load", "qx.safetensors"),
             ("load+forward", "qx.safetensors")]
    try:
        for step, out in steps:
            r = run_child(step, src, scratch / out, args.layers)
            out_bytes = (scratch / out).stat().st_size + sum(f.stat().st_size for f in scratch.glob(out + ".data"))
            rows.append(Row({"step": step, "input MB": src_bytes / 2**20, "output MB": out_bytes / 2**20,
                             "largest tensor MB": largest / 2**20, "peak extra MB": r["peak_mb"],
                             "baseline MB": r["base_mb"], "seconds": r["seconds"]}))
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    notes = ("Peak extra = VmHWM - VmRSS after imports, in a fresh process per step. convert: int4 block 64 RTN, "
             "safetensors in, tensor by tensor. load: meta-device model, external-data checkpoint, memory Low "
             "(mmap: pages are read when used). load+forward: one token through every layer at memory Low.")
    report("convert_memory", rows, describe_environment(), out_dir=args.out or None,
           title="Peak memory of convert and load (1 GB float32 checkpoint)", notes=notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
