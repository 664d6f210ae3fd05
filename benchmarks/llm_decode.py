"""How the `llm` bench times one model: decode and prefill at batch 1 through transformers' `generate`, with the
dynamic KV cache (transformers' default), a static cache, or a static cache with the decode step compiled.

Settings (a suffix of a row name in benchmarks/llm.py):
  "" (eager):         generate(..., do_sample=False), DynamicCache;
  "+static":          generate(..., cache_implementation="static", max_cache_len=L) (one cache of L positions);
  "+static+compile":  as +static with compile_config=CompileConfig(fullgraph=True, mode="default") flagged for every
                      device (transformers compiles only on GPUs unless `_compile_all_devices` is set): generate runs
                      the prefill eagerly and every decode step through one torch.compile'd (inductor) forward;
                      lowbit's layers stay one opaque `lowbit::linear` call each in that graph.
Every run is under torch.inference_mode() (no autograd records, which also skips the custom op's autograd layer).
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

SETTINGS = ("", "+static", "+static+compile")


def generate_kwargs(setting: str, max_cache_len: int) -> dict:
    """The `generate` keyword arguments of a setting; `max_cache_len` sizes the static cache for every call (so
    decodes of different lengths share one compiled graph instead of recompiling)."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; use one of {SETTINGS}")
    if not setting:
        return {}
    kwargs = dict(cache_implementation="static", max_cache_len=max_cache_len)
    if setting.endswith("+compile"):
        from transformers import CompileConfig

        config = CompileConfig(fullgraph=True, mode="default")  # "reduce-overhead" means CUDA graphs
        config._compile_all_devices = True  # transformers' own flag: compile on CPU too
        kwargs["compile_config"] = config
    return kwargs


class StepClock:
    """A logits processor that only records when generate asks for each new token (wall and thread CPU time)."""

    def __init__(self):
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def __call__(self, input_ids, scores):
        self.wall.append(time.perf_counter())
        self.cpu.append(time.thread_time())
        return scores


def fixed_length(model, new: int) -> dict:
    """generate kwargs for exactly `new` greedy tokens: the model's generation config without an EOS.

    (`min_new_tokens` would do it through two logits processors that scan the whole vocabulary on every step,
    ~1 ms a token at 32000 entries, which is the processors' cost, not the model's; llama-bench never stops early
    either.)"""
    config = copy.deepcopy(model.generation_config)
    config.eos_token_id, config.max_new_tokens, config.do_sample = None, new, False
    return {"generation_config": config}


def decode_tps(model, prompt, new: int, processors=(), **kwargs) -> tuple[float, float]:
    """(tokens/s, tokens/s of the calling thread's CPU time) between the first and the last of `new` greedy tokens.

    The CPU figure counts this thread only: it is the load-independent speed at 1 thread, an over-estimate at more.
    processors: more logits processors, called after each forward as the clock is.
    """
    from transformers import LogitsProcessorList

    clock = StepClock()
    with torch.inference_mode():
        model.generate(prompt, **fixed_length(model, new),
                       logits_processor=LogitsProcessorList([clock, *processors]), **kwargs)
    n = len(clock.wall) - 1
    return n / (clock.wall[-1] - clock.wall[0]), n / max(clock.cpu[-1] - clock.cpu[0], 1e-9)


def prefill_tps(model, tokens) -> float:
    """Tokens/s of one eager forward of the prompt `tokens` (1, P) without a cache, keeping the last logits only."""
    with torch.inference_mode():
        t0 = time.perf_counter()
        model(tokens, use_cache=False, logits_to_keep=1)
        return tokens.shape[1] / (time.perf_counter() - t0)


@torch.library.custom_op("lowbit_bench::zeros_linear", mutates_args=())
def _zeros_linear(x: torch.Tensor, n: int) -> torch.Tensor:
    return x.new_zeros(*x.shape[:-1], n)


@_zeros_linear.register_fake
def _(x, n):
    return x.new_empty(*x.shape[:-1], n)


class _ZeroLinear(nn.Module):
    """A Linear's stand-in returning zeros: a plain new_zeros eagerly; under torch.compile one opaque op (else
    inductor would fold the zeros through attention and norms and time a smaller graph than the model's)."""

    def __init__(self, out_features: int):
        super().__init__()
        self.out_features = out_features

    def forward(self, x):
        if torch.compiler.is_compiling():
            return _zeros_linear(x, self.out_features)
        return x.new_zeros(*x.shape[:-1], self.out_features)


def without_linears(model: nn.Module) -> nn.Module:
    """A copy whose Linear layers return zeros: what a decoded token costs besides its matrix products (in a
    compiled step, plus one opaque op call per Linear)."""
    empty = {id(mod.weight): torch.empty(0) for mod in model.modules() if isinstance(mod, nn.Linear)}
    m = copy.deepcopy(model, empty)  # without copying the Linear weights
    for name, mod in list(m.named_modules()):
        if isinstance(mod, nn.Linear):
            parent_name, _, leaf = name.rpartition(".")
            setattr(m.get_submodule(parent_name) if parent_name else m, leaf, _ZeroLinear(mod.out_features))
    return m


def call_us(layer: nn.Module, reps: int = 2000) -> tuple[float, float]:
    """(eager, compiled) thread-CPU microseconds of one call of `layer` on x (1, 1, in_features) under
    inference_mode: what one opaque Linear costs inside a compiled graph (inductor's call through the dispatcher)
    against the eager module call. Median of 5 batches of `reps` calls after a warm-up."""
    x = torch.randn(1, 1, layer.in_features)
    compiled = torch.compile(layer, fullgraph=True)
    out = []
    with torch.inference_mode():
        for fn in (layer, compiled):
            for _ in range(reps // 10):
                fn(x)
            batches = []
            for _ in range(5):
                t0 = time.thread_time()
                for _ in range(reps):
                    fn(x)
                batches.append((time.thread_time() - t0) / reps * 1e6)
            out.append(sorted(batches)[2])
    return out[0], out[1]
