"""Decode and prefill speed of a Llama-shaped decoder at batch 1 on CPU: torch fp32/bf16 vs lowbit at memory Low.

Models (random weights, seeded; the speed of a dense model does not depend on its values):
  small: hidden 768, intermediate 2048, 6 layers, 12 heads (no GQA), vocab 32000, untied lm_head: 91.7M parameters;
  1b:    hidden 2048, intermediate 5632, 16 layers, 32 heads / 8 KV heads, vocab 32000, untied: 852M parameters;
  tiny:  hidden 128, 2 layers (the tests' model).
Rows: torch fp32 and bf16 (`model.to(bfloat16)`), lowbit int4 RTN block 32/64/128 and int8 per channel at memory Low
(every Linear, lm_head included, quantized by `lowbit.quantize`), a lowbit variant optionally "/prepared"
(`lowbit.hf.decode.prepare_decode`: sibling Linears fused, decode-step attention on the KV heads with packed query
groups, lean one-token layer steps; measured interleaved with its plain twin), each optionally with a suffix "+static"
or "+static+compile" (benchmarks/llm_decode.py: a static KV cache, and the decode step compiled by transformers'
generate). Each is run through transformers' `generate` (greedy, under torch.inference_mode): decode tokens/s = (N - 1)
/ the time between the first and the last generated token (exactly N: the generation config without an EOS, as
llama-bench never stops early; timed by a logits processor called once per step; also from the thread's CPU time, the
load-independent figure at 1 thread), prefill tokens/s = P / one eager forward of P tokens with `logits_to_keep=1` (not
measured for the +static rows: generate's prefill is eager there too). Rows are interleaved (each repetition runs every
row once), medians reported; with --low-memory the rows of one weight variant are interleaved and the variants run one
after another (one variant in memory besides fp32).
Also: the time per decoded token spent outside the Linear layers for each setting (the same generate with every
Linear replaced by a stub returning zeros: attention, norms, rotary, the KV cache, the generate loop and Python),
and the bandwidth floor: tokens/s = measured read bandwidth (sum over a 1 GiB tensor) / the weight bytes every token
reads.
llama.cpp (optional, --llama-bench PATH --gguf-dir DIR): `llama-bench -m DIR/<model>-<type>.gguf -t T -p P -n N`
(median of its repetitions) on the same weights, saved with `--save-model DIR` (the seeded model plus a small
offline tokenizer, benchmarks/llm_tokenizer.py) and converted with llama.cpp's own converter (see README's LLM
section), run right after the lowbit rows at the same threads.

Usage: python -m benchmarks.llm [--model small|1b] [--threads 1 2] [--decode 32 256] [--prefill 128 512]
[--rows fp32 bf16 int4-b32 int4-b64 int4-b128 int8 int4-b128+static+compile ...] [--reps 3] [--low-memory]
[--quick] (or `lowbit bench llm ...`). Writes benchmarks/results/llm_<model>.{md,csv,json}.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from .harness import Row, describe_environment, load_average, report, time_fn
from .llm_decode import SETTINGS, call_us, decode_tps, generate_kwargs, prefill_tps, without_linears

MODELS = {
    "small": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=6, num_attention_heads=12,
                  num_key_value_heads=12),
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8),
    "tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),
}
VARIANTS = ("fp32", "bf16", "int4-b32", "int4-b64", "int4-b128", "int8")
PREPARED = tuple(v + "/prepared" for v in VARIANTS[2:])  # lowbit.hf.decode.prepare_decode applied
ROWS = VARIANTS + PREPARED + tuple(v + s for s in SETTINGS[1:] for v in VARIANTS + PREPARED)
PROMPT = 8  # tokens of the decode tests' prompt


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


def split_row(row: str) -> tuple[str, str]:
    """("int4-b128", "+static+compile") for "int4-b128+static+compile": the weight variant and the decode setting."""
    variant_name, plus, setting = row.partition("+")
    return variant_name, plus + setting


def variant(model: nn.Module, name: str, in_place: bool = False) -> nn.Module:
    """The model as the weight variant `name` runs it: a copy, or `model` itself converted when `in_place`.

    A quantized copy shares the float Linear weights with `model` until lowbit replaces them (never two float copies).
    """
    import lowbit

    vars(model).pop("_compiled_call", None)  # transformers' compiled forward of `model`: a copy would call it
    name, _, mod = name.partition("/")
    if mod == "prepared":  # a lowbit variant with lowbit.hf.decode.prepare_decode applied
        from lowbit.hf.decode import prepare_decode

        m = variant(model, name, in_place)
        prepare_decode(m)
        return m
    if name in ("fp32", "bf16"):
        m = model if in_place else copy.deepcopy(model)
        return m if name == "fp32" else m.to(torch.bfloat16)
    shared = {id(mod.weight): mod.weight for mod in model.modules() if isinstance(mod, nn.Linear)}
    m = model if in_place else copy.deepcopy(model, shared)
    bits, block = (8, -1) if name == "int8" else (4, int(name.split("-b")[1]))
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


def llama_decode_cpu_tps(binary: str, gguf: Path, threads: int, new: int, reps: int) -> float | None:
    """Decode tokens per second of llama-bench's CPU time (user + system, all its threads): the CPU time of
    `-n 2N` minus that of `-n N` (same loading and warm-up) over the reps * N tokens in between, or None."""
    cpu = []
    for n in (new, 2 * new):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        record = llama_bench(binary, gguf, threads, 0, n, reps)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if record is None:
            return None
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return reps * new / (cpu[1] - cpu[0]) if cpu[1] > cpu[0] else None


def _measure(models: dict, threads: int, args) -> dict:
    """{(threads, row, test, n): median tokens/s} for models {row: model}, rows interleaved in each repetition.

    Decode cells also give (threads, row, "decode cpu", n) from the thread's CPU time. +static rows skip prefill.
    """
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, 32000, (1, PROMPT), generator=torch.Generator().manual_seed(2))
    cache_len = PROMPT + max(args.decode)
    tests = [("decode", n) for n in args.decode] + [("prefill", p) for p in args.prefill]
    samples: dict = {}
    for kind, n in tests:
        tokens = torch.randint(0, 32000, (1, n), generator=gen)
        for rep in range(args.reps + 1):  # the first repetition is warm-up (and compiles)
            for row, model in models.items():
                setting = split_row(row)[1]
                if kind == "prefill" and setting:
                    continue
                if kind == "decode":
                    wall, cpu = decode_tps(model, prompt, n, **generate_kwargs(setting, cache_len))
                    got = {(threads, row, "decode", n): wall, (threads, row, "decode cpu", n): cpu}
                else:
                    got = {(threads, row, "prefill", n): prefill_tps(model, tokens)}
                for key, v in got.items():
                    if rep:
                        samples.setdefault(key, []).append(v)
    return {k: statistics.median(v) for k, v in samples.items()}


def _groups(rows: list[str], low_memory: bool) -> list[list[str]]:
    """Rows measured together: all of them, or with low_memory one weight variant's rows per group, fp32 and bf16
    last (they use the float model itself, bf16 converted in place)."""
    if not low_memory:
        return [rows]
    def weights(row):  # a weight variant and its /prepared twin are measured together
        return split_row(row)[0].partition("/")[0]

    names = sorted({weights(r) for r in rows}, key=lambda v: (v in ("fp32", "bf16"), v == "bf16", v))
    return [[r for r in rows if weights(r) == v] for v in names]


def run_rows(base: nn.Module, args) -> tuple[dict, dict]:
    """Measure every lowbit/torch row at every thread count: (medians as `_measure`'s, {row: weight bytes})."""
    medians, wbytes = {}, {}
    for group in _groups(args.rows, args.low_memory):
        built = {}
        for row in group:
            name = split_row(row)[0]
            if name not in built:
                built[name] = variant(base, name, in_place=args.low_memory and name in ("fp32", "bf16"))
        models = {row: built[split_row(row)[0]] for row in group}  # a setting is generate's arguments
        wbytes.update({row: weight_bytes(m) for row, m in models.items()})
        if any(split_row(r)[1].endswith("+compile") for r in group):
            _call_costs(built, args)
        for t in args.threads:
            medians.update(_measure(models, t, args))
        del models, built
    return medians, wbytes


def _call_costs(built: dict, args) -> None:
    """Record in args.call_us {variant: (eager, compiled) us} of one call of the variant's first attention
    projection at 1 thread (the per-call price of an opaque layer in the compiled decode step)."""
    torch.set_num_threads(1)
    for name, model in built.items():
        layer = model.get_submodule("model.layers.0.self_attn.o_proj")
        args.call_us[name] = call_us(layer)


def overhead_ms(stub: nn.Module, settings: set[str], threads: int, args) -> dict:
    """{setting: (wall, thread CPU) ms per decoded token of the Linear-less model}, medians of 3 decodes of 32
    tokens after a warm-up."""
    torch.set_num_threads(threads)
    prompt = torch.randint(0, 32000, (1, PROMPT), generator=torch.Generator().manual_seed(2))
    out = {}
    for setting in sorted(settings):
        kwargs = generate_kwargs(setting, PROMPT + max(args.decode))
        runs = [decode_tps(stub, prompt, 32, **kwargs) for _ in range(4)][1:]
        out[setting] = tuple(1e3 / statistics.median(r[i] for r in runs) for i in (0, 1))
    return out


def lean_overhead_ms(stub: nn.Module, settings: set[str], threads: int, args) -> dict:
    """`overhead_ms` of the stub with lowbit's lean one-token layer steps installed (the /prepared rows' glue; the
    stubs are not fused, so each step makes 7 stub calls instead of 4)."""
    from lowbit.hf.decode_step import lean_decode_layers, restore_decode_layers

    lean_decode_layers(stub)
    try:
        return overhead_ms(stub, settings, threads, args)
    finally:
        restore_decode_layers(stub)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=tuple(MODELS), default="small")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--decode", type=int, nargs="+", default=[32, 256], help="new tokens per decode test")
    p.add_argument("--prefill", type=int, nargs="*", default=[128, 512], help="prompt tokens per prefill test")
    p.add_argument("--rows", nargs="*", default=list(VARIANTS), choices=ROWS)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--low-memory", action="store_true",
                   help="one weight variant in memory at a time besides the fp32 model (for the 1b model)")
    p.add_argument("--quick", action="store_true", help="decode 32, prefill 128, 1 thread, 1 repetition")
    p.add_argument("--llama-bench", default=None, help="path of llama.cpp's llama-bench binary")
    p.add_argument("--gguf-dir", default=None, help="folder with <model>-q4_0.gguf, -q4_k_m.gguf, -q8_0.gguf")
    p.add_argument("--save-model", default=None, metavar="DIR",
                   help="also save the random model as an HF folder with a small SentencePiece tokenizer "
                   "(for llama.cpp's convert_hf_to_gguf.py)")
    p.add_argument("--name", default=None, help="results file name (default llm_<model>)")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    args.call_us = {}
    if args.quick:
        args.decode, args.prefill, args.threads, args.reps = [32], [128], [1], 1
    base = build_model(args.model)
    if args.save_model:
        from .llm_tokenizer import write_tokenizer

        base.save_pretrained(args.save_model)
        write_tokenizer(args.save_model)  # llama.cpp's converter needs one; padded to vocab 32000 there
    stub = without_linears(base)
    loads, llama_info, bws, overheads = [load_average()], {}, {}, {}
    settings = {split_row(r)[1] for r in args.rows}
    for t in args.threads:
        torch.set_num_threads(t)
        bws[t] = read_bandwidth_gbs()
        overheads[t] = overhead_ms(stub, settings, t, args)
        if any("/prepared" in r for r in args.rows):  # the same stub with lean one-token steps
            overheads[t].update({("/prepared", s): v for s, v in lean_overhead_ms(stub, settings, t, args).items()})
    del stub
    medians, wbytes = run_rows(base, args)
    del base
    loads.append(load_average())
    rows = []
    for t in args.threads:
        rows += _table_rows(t, args.rows, medians, wbytes, bws[t], overheads[t])
        rows += _llama_rows(args, t, llama_info)
        loads.append(load_average())
    env = describe_environment()
    env["load average"] = f"{min(loads):.1f}-{max(loads):.1f}"
    env["read GB/s"] = ", ".join(f"{bws[t]:.1f} at {t} thread{'s' * (t > 1)}" for t in args.threads)
    env.update(llama_info)
    for name, (eager_us, compiled_us) in args.call_us.items():
        env[f"o_proj call {name} eager/compiled us"] = f"{eager_us:.1f}/{compiled_us:.1f}"
    report(args.name or f"llm_{args.model}", rows, env, out_dir=args.out or None,
           title=f"Decoder speed at batch 1 ({args.model})", notes=_notes(args), floatfmt=".1f")
    return 0


def _table_rows(t: int, rows: list[str], medians: dict, wbytes: dict, bw: float, overheads: dict) -> list[Row]:
    out = []
    for row in rows:
        r = {"threads": t, "row": row, "weights MB": wbytes[row] / 2**20}
        r.update({f"{k} {n} tok/s": v for (th, rw, k, n), v in medians.items() if th == t and rw == row})
        r["floor tok/s"] = bw * 1e9 / wbytes[row]
        decode = [v for (th, rw, k, _), v in medians.items() if th == t and rw == row and k == "decode"]
        r["decode % of floor"] = 100 * max(decode) / r["floor tok/s"]
        setting = split_row(row)[1]
        key = ("/prepared", setting) if "/prepared" in row else setting
        r["non-linear ms/token"], r["non-linear cpu ms/token"] = overheads[key]
        out.append(Row(r))
    return out


def _notes(args) -> str:
    notes = (f"Model {args.model}: {MODELS[args.model]}, vocab 32000, random weights. Batch 1, greedy generate from"
             f" a {PROMPT}-token prompt under torch.inference_mode, no EOS (always N tokens); /prepared: after "
             "lowbit.hf.decode.prepare_decode (fused siblings, packed attention, lean one-token layer steps); rows"
             " without a suffix use transformers' dynamic cache, eager; +static: cache_implementation='static' "
             "(max_cache_len = prompt + the longest decode); +static+compile: also "
             "compile_config=CompileConfig(fullgraph=True, mode='default') with _compile_all_devices=True (the "
             "decode step through torch.compile/inductor; prefill not measured, generate's prefill stays eager). "
             "lowbit rows: memory Low, RTN, lm_head quantized too. floor = read bandwidth / weight bytes per "
             "token. decode cpu: the same decode from the thread's CPU time (1 thread: the speed without the load;"
             " 2 threads: the main thread only, an over-estimate). non-linear ms/token: a decode step with every "
             "Linear stubbed out (generate loop, KV cache, attention, norms, Python), per setting (/prepared rows:"
             " with lean one-token steps), from wall and from thread CPU time. o_proj call eager/compiled us: one "
             "call of block 0's o_proj at M = 1 (1 thread, thread CPU time), the module called eagerly vs "
             "torch.compile'd alone (the compiled figure adds the compiled wrapper's own cost, the fp32 row shows "
             "it). Medians of the repetitions after one warm-up; "
             + ("with --low-memory, rows of one weight variant interleaved, variants one after another."
                if args.low_memory else "rows interleaved."))
    if args.llama_bench and args.gguf_dir:
        notes += (" llama.cpp rows: llama-bench -t T -r REPS (its own warm-up; median of the repetitions) on the "
                  "same seeded weights saved by --save-model and converted by convert_hf_to_gguf.py, decode -n N "
                  "from an empty context, prefill -p P; weights MB is the GGUF file (token embedding included; "
                  "llama-quantize keeps output.weight at Q6_K in Q4_0 and Q4_K_M); decode cpu (1 thread): reps x N "
                  "tokens over the CPU time of llama-bench -n 2N minus that of -n N.")
    return notes


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
            if test == "decode":
                cpu = llama_decode_cpu_tps(args.llama_bench, gguf, threads, new, args.reps)
                r[f"decode cpu {new} tok/s"] = cpu if threads == 1 else None
            if record:
                info["llama.cpp"] = (f"{record.get('build_commit')} (build {record.get('build_number')}, "
                                     f"{record.get('backends')})")
        rows.append(Row(r))
    return rows


if __name__ == "__main__":
    sys.exit(main())
