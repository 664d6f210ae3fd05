"""Peak memory of sequential GPTQ (`lowbit.sequential`) on Llama-shaped random models of three sizes.

Each model is written shard by shard (one safetensors file per decoder block, bf16, random weights; never built
whole) with a config.json, then quantized with GPTQ (int4, block 128) in a fresh process that reports its peak
resident set (`resource.getrusage(RUSAGE_SELF).ru_maxrss`) and its resident set after imports. The claim: the peak
grows with the block and the calibration activations, not with the number of blocks. The last row quantizes the
largest model again under an address-space limit (RLIMIT_AS, as `prlimit --as`) smaller than its bf16 weights.

Usage: python -m benchmarks.llm_memory [--dir /tmp/lowbit-llm-memory] [--items 8] [--seq-len 128] [--quick]
(or `lowbit bench llm_memory ...`). Writes benchmarks/results/llm_memory.{md,csv,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from .harness import Row, describe_environment, load_average, report

# (name, hidden, intermediate, layers, heads, kv heads, vocab): one block shape at three depths, quantized with GPTQ
SIZES = (("h256-L4", 256, 704, 4, 4, 2, 1000), ("h256-L16", 256, 704, 16, 4, 2, 1000),
         ("h256-L48", 256, 704, 48, 4, 2, 1000))
# the run under an address-space limit: 2.4 GB of bf16, beyond torch's own ~1.3 GB of mapped libraries, quantized
# by the same block-by-block pipeline with RTN (GPTQ's column loop on 1.2B weights takes hours on a shared 2-core VM)
LIMITED = ("h1024-L96", 1024, 2816, 96, 16, 4, 8000)
# GPTQ at the `llm` bench's ~1B shape (--gptq-1b): time per block and peak RSS with a reduced calibration
ONE_B = ("h2048-L16", 2048, 5632, 16, 32, 8, 32000)
QUICK = (("h128-L2", 128, 352, 2, 4, 2, 500), ("h128-L4", 128, 352, 4, 4, 2, 500), ("h128-L8", 128, 352, 8, 4, 2, 500))
QUICK_LIMITED = ("h512-L8", 512, 1408, 8, 8, 2, 1000)


def llama_config(hidden, inter, layers, heads, kv, vocab) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
            "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": kv, "vocab_size": vocab, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
            "tie_word_embeddings": False, "torch_dtype": "bfloat16", "hidden_act": "silu"}


def block_shapes(hidden, inter, heads, kv) -> dict[str, tuple[int, ...]]:
    head = hidden // heads
    return {"self_attn.q_proj.weight": (hidden, hidden), "self_attn.k_proj.weight": (kv * head, hidden),
            "self_attn.v_proj.weight": (kv * head, hidden), "self_attn.o_proj.weight": (hidden, hidden),
            "mlp.gate_proj.weight": (inter, hidden), "mlp.up_proj.weight": (inter, hidden),
            "mlp.down_proj.weight": (hidden, inter), "input_layernorm.weight": (hidden,),
            "post_attention_layernorm.weight": (hidden,)}


def write_random_llama(folder: Path, hidden, inter, layers, heads, kv, vocab, seed: int = 0) -> int:
    """A Llama folder of random bf16 weights, one shard per block plus one for the rest; returns its bytes."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)

    def rand(shape):
        if len(shape) == 1:
            return torch.ones(shape, dtype=torch.bfloat16)
        return (torch.randn(shape, generator=gen) / shape[-1] ** 0.5).to(torch.bfloat16)

    weight_map, total = {}, 0
    shards = [("model.", {"embed_tokens.weight": (vocab, hidden), "norm.weight": (hidden,)}),
              ("", {"lm_head.weight": (vocab, hidden)})]
    shards += [(f"model.layers.{i}.", block_shapes(hidden, inter, heads, kv)) for i in range(layers)]
    for j, (prefix, shapes) in enumerate(shards):
        name = f"model-{j + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {prefix + k: rand(s) for k, s in shapes.items()}
        save_file(tensors, str(folder / name), metadata={"format": "pt"})
        total += sum(t.nbytes for t in tensors.values())
        weight_map.update(dict.fromkeys(tensors, name))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                     "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(llama_config(hidden, inter, layers, heads, kv, vocab)))
    return total


def child(folder: str, out: str, items: int, seq_len: int, as_limit: int, method: str) -> None:
    """Quantize `folder` into `out` and print `RESULT {...}` (peak and baseline resident MB, seconds)."""
    import transformers  # noqa: F401  (imported before the baseline)

    from lowbit.quant import QuantConfig
    from lowbit.sequential import quantize_decoder
    from lowbit.sequential.skeleton import build_skeleton
    from lowbit.sequential.tokens import calibration_tokens

    build_skeleton(folder)  # transformers' model modules imported before the baseline too
    base = int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024
    if as_limit:
        resource.setrlimit(resource.RLIMIT_AS, (as_limit, as_limit))
    t0 = time.perf_counter()
    calib = calibration_tokens("random", folder, items, seq_len) if method == "gptq" else []
    s = quantize_decoder(folder, out, calib, QuantConfig(method=method, bits=4, block_size=128), progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    vm_peak = int(Path("/proc/self/status").read_text().split("VmPeak:")[1].split()[0]) / 1024
    print("RESULT " + json.dumps({"peak_mb": peak, "base_mb": base, "vm_peak_mb": vm_peak,
                                  "seconds": time.perf_counter() - t0,
                                  "weights": len(s.results)}))


def run_child(folder: Path, out: Path, items: int, seq_len: int, as_limit: int = 0, threads: int = 1,
              method: str = "gptq") -> dict:
    cmd = [sys.executable, "-m", "benchmarks.llm_memory", "--child", str(folder), str(out), "--items", str(items),
           "--seq-len", str(seq_len), "--as-limit", str(as_limit), "--method", method]
    # one thread: on a loaded machine a 2-thread pool spins; a fixed mmap threshold: glibc's dynamic one lets the
    # heap keep freed blocks (address space +200 MB per 24 blocks of h512, flat with it)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MALLOC_MMAP_THRESHOLD_": "1048576"}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:160]}
    return json.loads(line.removeprefix("RESULT "))


def _row(name, method, model_bytes, block_bytes, r: dict, limit: int) -> Row:
    return Row({"model": name, "method": method, "params M": model_bytes / 2 / 1e6, "bf16 MB": model_bytes / 2**20,
                "block fp32 MB": block_bytes * 2 / 2**20, "AS limit MB": limit / 2**20 if limit else "",
                "peak RSS MB": r.get("peak_mb", ""), "RSS after imports MB": r.get("base_mb", ""),
                "peak - imports MB": r["peak_mb"] - r["base_mb"] if "peak_mb" in r else "",
                "peak address space MB": r.get("vm_peak_mb", ""), "seconds": r.get("seconds", ""),
                "result": r.get("error", "ok")})


def _measure(scratch: Path, name: str, shape, args, method: str, limit_fraction: float) -> Row:
    """Write the model (once), quantize it in a child process, the row."""
    hidden, inter, layers, heads, kv, vocab = shape
    folder = scratch / name
    if not (folder / "config.json").is_file():
        write_random_llama(folder, hidden, inter, layers, heads, kv, vocab)
    total = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    block = sum(torch.Size(s).numel() * 2 for s in block_shapes(hidden, inter, heads, kv).values())
    limit = int(total * limit_fraction)
    out = scratch / f"{name}-{method}{'-limited' if limit else ''}.safetensors"
    r = run_child(folder, out, args.items, args.seq_len, limit, args.threads, method)
    out.unlink(missing_ok=True)
    return _row(name + (" (limited)" if limit else ""), method, total, block, r, limit)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", default="/tmp/lowbit-llm-memory", help="scratch directory for the models")
    p.add_argument("--items", type=int, default=8, help="calibration windows (random tokens)")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--quick", action="store_true", help="three tiny models")
    p.add_argument("--limit-fraction", type=float, default=0.85,
                   help="the limited run's RLIMIT_AS as a fraction of the largest model's bf16 bytes")
    p.add_argument("--limited-only", action="store_true", help="only the largest model, without and with the limit")
    p.add_argument("--gptq-1b", action="store_true",
                   help="only GPTQ of the ~1B Llama shape (852M parameters), without a limit (--items, --seq-len)")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the quantizing process (default 1)")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--child", nargs=2, metavar=("FOLDER", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--as-limit", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--method", default="gptq", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(*args.child, args.items, args.seq_len, args.as_limit, args.method)
        return 0
    scratch, rows, loads = Path(args.dir), [], [load_average()]
    try:
        if args.gptq_1b:
            name, *shape = ONE_B
            rows.append(_measure(scratch, name, shape, args, "gptq", 0))
        for name, *shape in ([] if args.limited_only or args.gptq_1b else QUICK if args.quick else SIZES):
            rows.append(_measure(scratch, name, shape, args, "gptq", 0))
            loads.append(load_average())
        name, *shape = QUICK_LIMITED if args.quick else LIMITED
        if not args.gptq_1b:
            rows.append(_measure(scratch, name, shape, args, "rtn", 0))
            rows.append(_measure(scratch, name, shape, args, "rtn", args.limit_fraction))
        loads.append(load_average())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    env = describe_environment()
    env["load average"] = f"{min(loads):.1f}-{max(loads):.1f}"
    notes = (f"GPTQ int4 block 128 on {args.items} x {args.seq_len} random tokens, {args.threads} thread(s), "
             "sequentially (one block's float weights in memory), activations bf16 in memory. "
             "peak RSS = ru_maxrss of a fresh process (includes "
             "~its imports); the limited run sets RLIMIT_AS (virtual address space, which also counts torch's "
             "and the allocator's reservations) below the model's bf16 bytes.")
    name = "llm_memory_gptq_1b" if args.gptq_1b else "llm_memory_limited" if args.limited_only else "llm_memory"
    report(name, rows, env, out_dir=args.out or None,
           title="Sequential GPTQ: peak memory vs model size",
           notes=notes, floatfmt=".1f")
    return 0


if __name__ == "__main__":
    sys.exit(main())
