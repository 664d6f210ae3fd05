"""Hugging Face generate at batch 1: a small Llama-shaped model through transformers fp32 and through lowbit's
quantizer (`from_pretrained(..., quantization_config=LowbitConfig(...))`), tokens/s and agreement with fp32.

The model is built from a LlamaConfig with seeded random weights (no download) and saved with save_pretrained;
both sides load that folder. Timing is interleaved (one generate per model per round, median over rounds) on one
thread; 'cpu s' is this thread's CPU time, less sensitive to other jobs on a shared machine.

    python -m benchmarks.hf [--rounds 7] [--new-tokens 32] [--hidden 512 --layers 6]
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time

import torch

from .harness import Row, describe_environment, interleaved, load_average, report
from .static_int8 import cpu_model

SETTINGS = (("lowbit int4 b64 memory Low", dict(bits=4, block_size=64, memory="low")),
            ("lowbit int4 b64 memory Normal", dict(bits=4, block_size=64, memory="normal")),
            ("lowbit int8 per-channel memory Low", dict(bits=8, block_size=-1, symmetric=True, memory="low")))


def build_folder(folder: str, hidden: int, layers: int, vocab: int) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=hidden, intermediate_size=hidden * 11 // 4, num_hidden_layers=layers,
                      num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64, vocab_size=vocab,
                      max_position_embeddings=256, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(folder)


def _generate(model, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    return model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                          pad_token_id=0)


def _weight_bytes(model) -> int:
    from lowbit.nn.swap import resident_bytes

    return resident_bytes(model)


def measure(folder: str, rounds: int, new_tokens: int, vocab: int) -> list[Row]:
    from transformers import AutoModelForCausalLM

    import lowbit

    models = {"transformers fp32": AutoModelForCausalLM.from_pretrained(folder).eval()}
    for label, kw in SETTINGS:
        models[label] = AutoModelForCausalLM.from_pretrained(folder, quantization_config=lowbit.LowbitConfig(**kw))
    prompt = torch.randint(0, vocab, (1, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref_logits = models["transformers fp32"](prompt).logits
    ref_tokens = _generate(models["transformers fp32"], prompt, new_tokens)
    # one warm-up call each (kernels prepared, caches built), then the models take turns, `rounds` times
    wall_ms, cpu_ms = interleaved({k: functools.partial(_generate, m, prompt, new_tokens) for k, m in models.items()},
                                  rounds, cpu_clock=time.thread_time)
    base = wall_ms["transformers fp32"] / 1e3
    rows = []
    for k, m in models.items():
        with torch.no_grad():
            logits = m(prompt).logits
        tokens = _generate(m, prompt, new_tokens)
        cos = torch.nn.functional.cosine_similarity(logits.flatten(), ref_logits.flatten(), dim=0).item()
        same = (tokens[0, 16:] == ref_tokens[0, 16:]).float().mean().item()
        med = wall_ms[k] / 1e3
        rows.append(Row({"model": k, "tokens/s": new_tokens / med, "s / generate": med,
                         "cpu s": cpu_ms[k] / 1e3, "vs fp32": base / med,
                         "weight MB": _weight_bytes(m) / 1e6, "logit cosine": cos,
                         "logit max abs diff": (logits - ref_logits).abs().max().item(),
                         "greedy tokens = fp32": same}))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lowbit bench hf", description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--quick", action="store_true", help="3 rounds, 16 new tokens")
    p.add_argument("--out", default="benchmarks/results", help="results folder ('' = do not save)")
    p.add_argument("--name", default="hf_llama_generate_1t")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rounds, new = (3, 16) if args.quick else (args.rounds, args.new_tokens)
    load_before = load_average()
    with tempfile.TemporaryDirectory() as folder:
        build_folder(folder, args.hidden, args.layers, args.vocab)
        rows = measure(folder, rounds, new, args.vocab)
    env = describe_environment()
    env.update({"cpu model (lscpu)": cpu_model(), "threads": torch.get_num_threads(),
                "load avg 1m before/after": f"{load_before:.2f}/{load_average():.2f}",
                "model": f"Llama hidden {args.hidden}, {args.layers} layers, vocab {args.vocab} (random, seeded)",
                "generate": f"batch 1, 16 prompt tokens, {new} new (greedy), {rounds} interleaved rounds"})
    report(args.name, rows, env, out_dir=args.out or None, title="HF generate: transformers fp32 vs lowbit quantizer",
           notes="lowbit rows load the same fp32 folder with quantization_config=LowbitConfig(...) (lm_head kept "
           "float, transformers' default). 'vs fp32' = fp32 time / this time (> 1 = faster). 'weight MB' = resident "
           "parameter and buffer bytes after the runs (packed codes, scales, float embeddings, norms and lm_head, "
           "plus the kernels' prepared layouts: int4 at memory Low keeps one). The weights are random, so the "
           "logits are nearly flat and greedy tokens flip at small errors; the logit cosine is the agreement "
           "measure.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
