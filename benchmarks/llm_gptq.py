"""Sequential GPTQ of a Llama-shaped decoder through `lowbit convert` as a user runs it, timed, with its peak memory,
optionally inside a memory cgroup limited below the model's bf16 bytes.

The model is written shard by shard with random bf16 weights (never built whole; `benchmarks.llm_memory`), then
`python -m lowbit convert MODEL OUT --calib random --samples N --seq-len L --method gptq --bits 4 --block 128`
runs in a child process. Its peak resident set comes from the kernel (`ru_maxrss` of the waited child); with
`--limit-mb` the child runs in a new memory cgroup (v1 `memory.limit_in_bytes` or v2 `memory.max`, swap off) that
kills it if it needs more, and the cgroup's own peak (which also counts page cache: the memory-mapped shards and the
activations spilled to disk) is reported beside. Creating a cgroup needs root and a writable cgroup tree; without
them `--limit-mb` stops with a message.

Usage: python -m benchmarks.llm_gptq [--shape 1b|deep|small] [--samples 128] [--seq-len 512] [--threads 2]
       [--limit-mb 1600] [--act-budget-gb 2] [--dir /tmp/lowbit-llm-gptq] [--name llm_gptq_1b]
Writes benchmarks/results/NAME.{md,csv,json}.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from .harness import Row, describe_environment, load_average, report
from .llm_memory import LIMITED, ONE_B, write_random_llama

# 1b: the `llm` bench's ~1B shape (852M parameters, 1.7 GB bf16); deep: 1.1B parameters in 96 narrow blocks (2.1 GB
# bf16), the model the memory-limited run quantizes (its blocks are small, so its peak is far below its size)
SHAPES = {"1b": ONE_B, "deep": LIMITED, "small": ("h512-L8", 512, 1408, 8, 8, 2, 1000)}
_CGROUP_V1 = Path("/sys/fs/cgroup/memory")
_CGROUP_V2 = Path("/sys/fs/cgroup")


@contextmanager
def memory_cgroup(limit_bytes: int):
    """A fresh memory cgroup limited to limit_bytes (no swap); yields (its cgroup.procs path, a function that
    reads its peak usage in bytes). Removed afterwards."""
    v1 = (_CGROUP_V1 / "memory.limit_in_bytes").exists()
    root = _CGROUP_V1 if v1 else _CGROUP_V2
    path = root / f"lowbit-bench-{os.getpid()}"
    try:
        path.mkdir()
        if v1:
            (path / "memory.limit_in_bytes").write_text(str(limit_bytes))
            if (path / "memory.memsw.limit_in_bytes").exists():
                try:  # swap accounting: memory + swap at the same limit means no swap
                    (path / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))
                except OSError:
                    pass
        else:
            (path / "memory.max").write_text(str(limit_bytes))
            if (path / "memory.swap.max").exists():
                (path / "memory.swap.max").write_text("0")
    except OSError as e:
        raise SystemExit(f"llm_gptq: cannot create a memory cgroup under {root} ({e}); run as root with a writable "
                         "cgroup tree, or leave out --limit-mb") from e
    peak_file = path / ("memory.max_usage_in_bytes" if v1 else "memory.peak")

    def peak() -> int:
        try:
            return int(peak_file.read_text())
        except (OSError, ValueError):
            return 0

    try:
        yield path / "cgroup.procs", peak
    finally:
        for _ in range(50):  # the killed or finished child leaves the cgroup a moment later
            try:
                path.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def convert_command(model: Path, out: Path, args) -> list[str]:
    return [sys.executable, "-m", "lowbit", "convert", str(model), str(out), "--calib", "random",
            "--samples", str(args.samples), "--seq-len", str(args.seq_len), "--method", "gptq", "--bits", "4",
            "--block", "128", "--act-budget-gb", str(args.act_budget_gb), "--quiet"]


def run_convert(cmd: list[str], threads: int, procs: Path | None) -> dict:
    """Run the CLI in a child (inside the cgroup whose cgroup.procs is `procs`); wall/CPU seconds, peak RSS."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}

    def enter():
        if procs is not None:
            procs.write_text(str(os.getpid()))

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, preexec_fn=enter, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    blocks = re.search(r"per block: median ([\d.]+) s, max ([\d.]+) s", proc.stdout)
    return {"rc": proc.returncode, "wall": wall, "cpu": after.ru_utime + after.ru_stime - before.ru_utime
            - before.ru_stime, "peak_rss_mb": after.ru_maxrss / 1024,
            "block_median": float(blocks.group(1)) if blocks else None,
            "block_max": float(blocks.group(2)) if blocks else None,
            "tail": (proc.stderr.strip().splitlines() or [""])[-1][:200]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="1b")
    p.add_argument("--samples", type=int, default=128, help="calibration windows of random tokens (default 128)")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit-mb", type=int, default=0, help="run inside a memory cgroup of this size (root only)")
    p.add_argument("--act-budget-gb", type=float, default=2.0, help="lowbit convert --act-budget-gb")
    p.add_argument("--dir", default="/tmp/lowbit-llm-gptq", help="scratch folder for the model and the output")
    p.add_argument("--keep-model", action="store_true", help="keep the written model for another run")
    p.add_argument("--name", default=None, help="results file name (default llm_gptq_SHAPE)")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    name, *shape = SHAPES[args.shape]
    scratch = Path(args.dir)
    model, out = scratch / name, scratch / f"{name}-gptq"
    if not (model / "config.json").is_file():
        write_random_llama(model, *shape)
    bf16 = sum(f.stat().st_size for f in model.glob("*.safetensors"))
    load0 = load_average()
    cmd = convert_command(model, out, args)
    if args.limit_mb:
        with memory_cgroup(args.limit_mb << 20) as (procs, peak):
            r = run_convert(cmd, args.threads, procs)
            r["cgroup_peak_mb"] = peak() / 2**20
    else:
        r = run_convert(cmd, args.threads, None)
    ok = r["rc"] == 0 and (out / "model.safetensors").is_file()
    row = Row({"model": name, "params M": bf16 / 2 / 1e6, "bf16 MB": bf16 / 2**20,
               "calibration": f"{args.samples} x {args.seq_len}", "threads": args.threads,
               "limit MB": args.limit_mb or "", "peak RSS MB": r["peak_rss_mb"],
               "cgroup peak MB": r.get("cgroup_peak_mb", ""), "wall s": r["wall"], "CPU s": r["cpu"],
               "block median s": r["block_median"] or "", "block max s": r["block_max"] or "",
               "result": "ok" if ok else f"rc {r['rc']}: {r['tail']}"})
    if not args.keep_model:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    env = describe_environment()
    env["load average"] = f"{load0:.1f} before, {load_average():.1f} after"
    notes = (f"`{' '.join(['lowbit', *cmd[3:]])}` with OMP_NUM_THREADS={args.threads}, on a Llama of random bf16 "
             "weights written one safetensors shard per block (blocks computed in bf16, the checkpoint's dtype). "
             "peak RSS = ru_maxrss of the child; cgroup peak also counts page cache (mapped shards, spilled "
             "activations). A limit makes the kernel kill the child if it needs more.")
    report(args.name or f"llm_gptq_{args.shape}", [row], env, out_dir=args.out or None,
           title="Sequential GPTQ through lowbit convert: time and peak memory", notes=notes, floatfmt=".1f")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
