"""Decode and prefill speed of a Llama-shaped decoder at batch 1 on CPU: torch fp32/bf16 vs lowbit at memory Low.

Models (random weights, seeded; the speed of a dense model does not depend on its values):
  small: hidden 768, intermediate 2048, 6 layers, 12 heads (no GQA), vocab 32000, untied lm_head: 91.7M parameters;
  1b:    hidden 2048, intermediate 5632, 16 layers, 32 heads / 8 KV heads, vocab 32000, untied: 852M parameters.
Rows: torch fp32 and bf16 (`model.to(bfloat16)`), lowbit int4 RTN block 32/64/128 and int8 per channel at memory Low
(every Linear, lm_head included, quantized by `lowbit.quantize`). Each is run through transformers' `generate`
(greedy, dynamic KV cache): decode tokens/s = (N - 1) / the time between the first and the last generated token
(timed by a logits processor called once per step), prefill tokens/s = P / one forward of P tokens with
`logits_to_keep=1`. Rows are interleaved (each repetition runs every row once), medians reported.
Also: the time per decoded token spent outside the Linear layers (the same generate with every Linear replaced by
a stub returning zeros: attention, norms, rotary, the generate loop and Python), and the bandwidth floor:
tokens/s = measured read bandwidth (sum over a 1 GiB tensor) / the weight bytes every token reads.
llama.cpp (optional, --llama-bench PATH --gguf-dir DIR): `llama-bench -m DIR/<model>-<type>.gguf -t T -p P -n N`
(median of its repetitions) on the same weights, saved with `--save-model DIR` (the seeded model plus a small
offline tokenizer, benchmarks/llm_tokenizer.py) and converted with llama.cpp's own converter (see README's LLM
section), run right after the lowbit rows at the same threads.

Usage: python -m benchmarks.llm [--model small|1b] [--threads 1 2] [--decode 32 256] [--prefill 128 512]
[--rows fp32 bf16 int4-b32 int4-b64 int4-b128 int8] [--reps 3] [--quick] (or `lowbit bench llm ...`).
Writes benchmarks/results/llm_<model>.{md,csv,json}.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

from .harness import Row, describe_environment, load_average, report, time_fn

MODELS = {
    "small": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=6, num_attention_heads=12,
                  num_key_value_heads=12),
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8),
}
ROWS = ("fp32", "bf16", "int4-b32", "int4-b64", "int4-b128", "int8")


def llama_config(name: str):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=32000, max_position_embeddings=2048, tie_word_embeddings=False,
                       **MODELS[name])


def build_model(name: str, seed: int = 0) -> nn.Module:
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(name)).eval()
    model.generation_config.pad_token_id = 0
    return model


def variant(model: nn.Module, row: str) -> nn.Module:
    """The model as `row` runs it (a copy)."""
    import lowbit

    m = copy.deepcopy(model)
    if row == "fp32":
        return m
    if row == "bf16":
        return m.to(torch.bfloat16)
    bits, block = (8, -1) if row == "int8" else (4, int(row.split("-b")[1]))
    cfg = lowbit.QuantConfig(bits=bits, block_size=block, method="rtn")
    return lowbit.quantize(m, cfg, backend=lowbit.BackendConfig(memory="low"))


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the Linear weights one decoded token reads (packed codes, scales and zeros for lowbit layers)."""
    total = 0
    for m in model.modules():
        if isinstance(m, nn.Linear):
            total += m.weight.nbytes
        elif hasattr(m, "qweight") or type(m).__name__ == "QuantLinear":
            total += sum(b.nbytes for b in m.buffers())
    return total


class _StepClock:
    """A logits processor that only records when generate asks for each new token."""

    def __init__(self):
        self.times: list[float] = []

    def __call__(self, input_ids, scores):
        self.times.append(time.perf_counter())
        return scores


def decode_tps(model, prompt, new: int) -> float:
    from transformers import LogitsProcessorList

    clock = _StepClock()
    with torch.no_grad():
        model.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                       logits_processor=LogitsProcessorList([clock]))
    return (len(clock.times) - 1) / (clock.times[-1] - clock.times[0])


def prefill_tps(model, tokens) -> float:
    with torch.no_grad():
        t0 = time.perf_counter()
        model(tokens, use_cache=False, logits_to_keep=1)
        return tokens.shape[1] / (time.perf_counter() - t0)


class _ZeroLinear(nn.Module):
    def __init__(self, out_features: int, dtype):
        super().__init__()
        self.out_features, self.dtype = out_features, dtype

    def forward(self, x):
        return x.new_zeros(*x.shape[:-1], self.out_features)


def without_linears(model: nn.Module) -> nn.Module:
    """A copy whose Linear layers return zeros: what a decoded token costs besides its matrix products."""
    empty = {id(mod.weight): torch.empty(0) for mod in model.modules() if isinstance(mod, nn.Linear)}
    m = copy.deepcopy(model, empty)  # without copying the Linear weights
    for name, mod in list(m.named_modules()):
        if isinstance(mod, nn.Linear):
            parent_name, _, leaf = name.rpartition(".")
            setattr(m.get_submodule(parent_name) if parent_name else m, leaf, _ZeroLinear(mod.out_features,
                                                                                            mod.weight.dtype))
    return m


def read_bandwidth_gbs(gib: float = 1.0, reps: int = 5) -> float:
    """GB/s of reading a float32 tensor (torch.sum) at the current thread count, median of reps."""
    a = torch.ones(int(gib * 2**30) // 4)
    return a.nbytes / time_fn(a.sum, warmup=1, reps=reps, flush=False).median_ms / 1e6


def llama_bench(binary: str, gguf: Path, threads: int, prompt: int, new: int, reps: int) -> dict | None:
    """llama-bench's JSON record for one test (-p P or -n N) with "tokens/s" added: the median of its repetitions'
    samples_ts (as lowbit's rows take medians; avg_ts is a mean), or None when it fails."""
    args = [binary, "-m", str(gguf), "-t", str(threads), "-r", str(reps), "-o", "json",
            "-p", str(prompt), "-n", str(new)]
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    try:
        record = json.loads(proc.stdout)[0]
        record["tokens/s"] = statistics.median(float(v) for v in record["samples_ts"])
        return record
    except (ValueError, IndexError, KeyError, TypeError):
        print(f"llama-bench failed on {gguf}: {proc.stderr.strip()[-300:]}", file=sys.stderr)
        return None


def _measure(models: dict, threads: int, args, prompt) -> dict:
    """{(row, test): median tokens/s} with rows interleaved within each repetition."""
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(1)
    tests = [("decode", n) for n in args.decode] + [("prefill", p) for p in args.prefill]
    samples: dict = {}
    for kind, n in tests:
        tokens = torch.randint(0, 32000, (1, n), generator=gen)
        for rep in range(args.reps + 1):  # the first repetition is warm-up
            for row, model in models.items():
                tps = decode_tps(model, prompt, n) if kind == "decode" else prefill_tps(model, tokens)
                if rep:
                    samples.setdefault((row, kind, n), []).append(tps)
    return {k: statistics.median(v) for k, v in samples.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=tuple(MODELS), default="small")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--decode", type=int, nargs="+", default=[32, 256], help="new tokens per decode test")
    p.add_argument("--prefill", type=int, nargs="+", default=[128, 512], help="prompt tokens per prefill test")
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="decode 32, prefill 128, 1 thread, 1 repetition")
    p.add_argument("--llama-bench", default=None, help="path of llama.cpp's llama-bench binary")
    p.add_argument("--gguf-dir", default=None, help="folder with <model>-q4_0.gguf, -q4_k_m.gguf, -q8_0.gguf")
    p.add_argument("--save-model", default=None, metavar="DIR",
                   help="also save the random model as an HF folder with a small SentencePiece tokenizer "
                   "(for llama.cpp's convert_hf_to_gguf.py)")
    p.add_argument("--name", default=None, help="results file name (default llm_<model>)")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    if args.quick:
        args.decode, args.prefill, args.threads, args.reps = [32], [128], [1], 1
    base = build_model(args.model)
    if args.save_model:
        from .llm_tokenizer import write_tokenizer

        base.save_pretrained(args.save_model)
        write_tokenizer(args.save_model)  # llama.cpp's converter needs one; padded to vocab 32000 there
    models = {row: variant(base, row) for row in args.rows}
    stub = without_linears(base)
    del base
    prompt = torch.randint(0, 32000, (1, 8), generator=torch.Generator().manual_seed(2))
    rows, loads, llama_info = [], [load_average()], {}
    for t in args.threads:
        medians = _measure(models, t, args, prompt)
        loads.append(load_average())
        bw = read_bandwidth_gbs()
        torch.set_num_threads(t)
        overhead_ms = 1e3 / statistics.median(decode_tps(stub, prompt, 32) for _ in range(3))
        for row, model in models.items():
            wb = weight_bytes(model)
            r = {"threads": t, "row": row, "weights MB": wb / 2**20}
            r.update({f"{k} {n} tok/s": v for (rw, k, n), v in medians.items() if rw == row})
            r["floor tok/s"] = bw * 1e9 / wb
            r["decode % of floor"] = 100 * max(v for (rw, k, _), v in medians.items()
                                               if rw == row and k == "decode") / r["floor tok/s"]
            r["non-linear ms/token"] = overhead_ms
            rows.append(Row(r))
        rows += _llama_rows(args, t, llama_info)
        loads.append(load_average())
    env = describe_environment()
    env["load average"] = f"{min(loads):.1f}-{max(loads):.1f}"
    env["read GB/s"] = f"{bw:.1f} (at {args.threads[-1]} threads)"
    env.update(llama_info)
    notes = (f"Model {args.model}: {MODELS[args.model]}, vocab 32000, random weights. Batch 1, greedy generate "
             "from an 8-token prompt with transformers' dynamic cache (no static cache, no torch.compile). lowbit "
             "rows: memory Low, RTN, lm_head quantized too. floor = read bandwidth / weight bytes per token. "
             "non-linear ms/token: a decode step with every Linear stubbed out (the generate loop, attention, norms "
             "and Python). Medians of the repetitions after one warm-up; rows interleaved.")
    if args.llama_bench and args.gguf_dir:
        notes += (" llama.cpp rows: llama-bench -t T -r REPS (its own warm-up; median of the repetitions) on the "
                  "same seeded weights saved by --save-model and converted by convert_hf_to_gguf.py, decode -n N "
                  "from an empty context, prefill -p P; weights MB is the GGUF file (token embedding included; "
                  "llama-quantize keeps output.weight at Q6_K in Q4_0 and Q4_K_M).")
    report(args.name or f"llm_{args.model}", rows, env, out_dir=args.out or None,
           title=f"Decoder speed at batch 1 ({args.model})", notes=notes, floatfmt=".1f")
    return 0


def _llama_rows(args, threads: int, info: dict) -> list[Row]:
    """llama-bench's tokens/s for each GGUF found, at the lowbit rows' threads and lengths; fills `info` with
    llama.cpp's build (commit, build number, backends) as llama-bench reports it."""
    if not (args.llama_bench and args.gguf_dir):
        return []
    rows = []
    for kind in ("q4_0", "q4_k_m", "q8_0"):
        gguf = Path(args.gguf_dir) / f"{args.model}-{kind}.gguf"
        if not gguf.is_file():
            continue
        r = {"threads": threads, "row": f"llama.cpp {kind.upper()}", "weights MB": gguf.stat().st_size / 2**20}
        tests = [("decode", 0, n) for n in args.decode] + [("prefill", n, 0) for n in args.prefill]
        for test, prompt, new in tests:
            record = llama_bench(args.llama_bench, gguf, threads, prompt, new, args.reps)
            r[f"{test} {prompt or new} tok/s"] = record and record["tokens/s"]
            if record:
                info["llama.cpp"] = (f"{record.get('build_commit')} (build {record.get('build_number')}, "
                                     f"{record.get('backends')})")
        rows.append(Row(r))
    return rows


if __name__ == "__main__":
    sys.exit(main())
