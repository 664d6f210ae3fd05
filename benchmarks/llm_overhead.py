"""Where a decoded token's time goes besides the weight bytes: a per-token breakdown of the `llm` bench's decode.

Model: the `llm` bench's 1B Llama shape (hidden 2048, intermediate 5632, 32 heads / 8 KV heads, vocab 32000) with
--layers decoder blocks (4 by default: the same per-layer shapes, 4x quicker to build and run; 16 is the 1B model),
random weights, int4 RTN block 128 at memory Low, lm_head quantized too. Twins of the same weights:
  int4-b128:        every Linear its own call (`lowbit.quantize`, bound calls);
  int4-b128 fused:  the same model after `lowbit.nn.fuse_siblings` (q/k/v and gate/up one call each);
  int4-b128 prepared: after `lowbit.hf.decode.prepare_decode` (fused, and decode-step attention on the KV heads
                    with packed query groups, also when compiled);
  no-linears:       every Linear replaced by a stub returning zeros (benchmarks/llm_decode.without_linears): what a
                    token costs besides its matrix products (generate loop, attention, norms, rotary, KV cache);
                    compiled, each stub is one opaque op call (the stub's own cost);
  no-linears packed: the same with prepare_decode's attention (the reference of the prepared twin).
Settings (benchmarks/llm_decode.py): eager DynamicCache, +static, +static+compile.

Per token, from greedy `generate` of --tokens new tokens after an 8-token prompt (between the first and the last
generated token): wall ms; thread CPU ms (the calling thread: at 1 thread torch and the native kernel both run on
it, so this is the load-independent cost, except that a memory-bound kernel's CPU time still grows when other
processes use the DRAM bandwidth); kernel ms = thread CPU time inside the native kernel's bound calls (timed by a
wrapper around `NativeCall.__call__` installed for this bench only: ~1 us per call of its own); in-call ms (eager
only) = thread CPU time inside the outermost Linear-like module calls (QuantLinear, SiblingOutput) minus the
kernel's: the layers' Python (module call, bound-call checks, finite check, output allocation, a fused group's
split); rest ms = CPU - those calls: everything else of the step in the real model; rest - non-linear = what the
same code costs more beside the weight stream than in the Linear-less twin (caches and TLB refilled after every
kernel call); linear overhead = CPU - kernel - the no-linears twin's CPU (in-call plus that); calls = kernel calls
per token; aten ops = aten operator calls per
token (torch.profiler, nested calls counted, from the difference of 9- and 1-token decodes). Twins and settings are
interleaved in every repetition (the first repetition is warm-up and compiles); medians.

Usage: python -m benchmarks.llm_overhead [--quick] [--layers 4] [--shape 1b|small|tiny] [--tokens 32] [--reps 4]
       [--threads 1] [--cache-len 264] [--settings eager +static +static+compile] [--name llm_overhead]
       [--out benchmarks/results]   (or `lowbit bench llm_overhead ...`)
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch

from lowbit.hf.decode import prepare_decode
from lowbit.kernels import cpu_int4
from lowbit.nn import QuantLinear, SiblingOutput, fuse_siblings

from . import llm
from .harness import Row, describe_environment, load_average, report
from .llm_decode import decode_tps, fixed_length, generate_kwargs, without_linears

PROMPT = 8


class KernelClock:
    """Thread CPU seconds inside the native kernel's bound calls (and their count), and inside the outermost calls
    of Linear-like modules (QuantLinear, a fused group's SiblingOutput: the layer's Python, the kernel and the split
    of a fused output), while active and armed. A context manager that wraps `NativeCall.__call__` and those
    modules' `forward` and restores them on exit; as a logits processor its first call arms it, so only the decode
    steps after the prompt's forward count. Eager only: a compiled step calls the op, never the modules' forward."""

    def __init__(self, layers: bool = True):
        self.seconds, self.calls, self.layer_seconds, self.armed, self._depth = 0.0, 0, 0.0, False, 0
        self._layers = layers  # also time the modules' calls (never around a compiled step: its guards would see
        # a new forward at every decode and recompile)

    def __call__(self, input_ids, scores):
        self.armed = True
        return scores

    def __enter__(self):
        self._orig = {cls: cls.forward for cls in (QuantLinear, SiblingOutput)} if self._layers else {}
        self._native = cpu_int4.NativeCall.__call__
        cpu_int4.NativeCall.__call__ = self._timed(self._native, "seconds", count=True)
        for cls, forward in self._orig.items():
            cls.forward = self._timed(forward, "layer_seconds", outermost=True)
        return self

    def _timed(self, fn, field: str, count: bool = False, outermost: bool = False):
        clock = self

        def timed(obj, *args):
            if outermost and clock._depth:
                return fn(obj, *args)
            clock._depth += outermost
            t0 = time.thread_time()
            try:
                return fn(obj, *args)
            finally:
                if clock.armed:
                    setattr(clock, field, getattr(clock, field) + time.thread_time() - t0)
                    clock.calls += count
                clock._depth -= outermost

        return timed

    def __exit__(self, *exc):
        cpu_int4.NativeCall.__call__ = self._native
        for cls, forward in self._orig.items():
            cls.forward = forward


def twins(layers: int, shape: str = "1b") -> dict:
    """{name: model}: the int4 b128 model, its fused and prepared copies, the Linear-less stubs (see the module
    docstring)."""
    name = f"{shape}-{layers}"
    llm.MODELS[name] = dict(llm.MODELS[shape], num_hidden_layers=layers)
    base = llm.build_model(name)
    stub = without_linears(base)
    stub_packed = copy.deepcopy(stub)
    prepare_decode(stub_packed, fuse=False)
    q = llm.variant(base, "int4-b128", in_place=True)
    fused, prepared = copy.deepcopy(q), copy.deepcopy(q)
    fuse_siblings(fused)
    prepare_decode(prepared)
    return {"int4-b128": q, "int4-b128 fused": fused, "int4-b128 prepared": prepared, "no-linears": stub,
            "no-linears packed": stub_packed}


def step_ms(model, prompt, setting: str, tokens: int, cache_len: int) -> tuple:
    """(wall, thread CPU, kernel CPU, Linear-call CPU, kernel calls) per decoded token of one greedy decode (a
    static cache of cache_len positions)."""
    with KernelClock(layers=not setting.endswith("+compile")) as clock:
        wall, cpu = decode_tps(model, prompt, tokens, processors=[clock], **generate_kwargs(setting, cache_len))
    steps = tokens - 1  # decode steps after the prompt's forward
    return (1e3 / wall, 1e3 / cpu, 1e3 * clock.seconds / steps, 1e3 * clock.layer_seconds / steps,
            clock.calls / steps)


def aten_ops_per_token(model, prompt, setting: str, cache_len: int) -> float:
    """aten operator calls per decode step (nested included): the profiled 9-token decode minus the 1-token one."""
    from torch.profiler import ProfilerActivity, profile

    counts = []
    for new in (1, 9):
        with profile(activities=[ProfilerActivity.CPU]) as prof, torch.inference_mode():
            model.generate(prompt, **fixed_length(model, new), **generate_kwargs(setting, cache_len))
        counts.append(sum(e.count for e in prof.key_averages() if e.key.startswith("aten::")))
    return (counts[1] - counts[0]) / 8


def measure(models: dict, settings: list[str], tokens: int, reps: int, cache_len: int) -> dict:
    """{(twin, setting): median `step_ms` per token}, every cell once per repetition."""
    prompt = torch.randint(0, 32000, (1, PROMPT), generator=torch.Generator().manual_seed(2))
    samples: dict = {}
    for rep in range(reps + 1):
        for setting in settings:
            for name, model in models.items():
                got = step_ms(model, prompt, setting, tokens, cache_len)
                if rep:
                    samples.setdefault((name, setting), []).append(got)
        print(f"repetition {rep} done, load {load_average():.1f}", file=sys.stderr, flush=True)
    return {k: tuple(statistics.median(s[i] for s in v) for i in range(5)) for k, v in samples.items()}


def rows_of(medians: dict, ops: dict, threads: int) -> list[Row]:
    out = []
    for (name, setting), (wall, cpu, kernel, layers, calls) in medians.items():
        linear = not name.startswith("no-linears")
        stub = ("no-linears packed" if name.endswith("prepared") else "no-linears") if linear else name
        stub_cpu = medians[(stub, setting)][1]
        eager = linear and layers > 0  # a compiled step never enters the modules' forward
        out.append(Row({
            "threads": threads, "twin": name, "setting": setting or "eager", "wall ms": wall, "cpu ms": cpu,
            "kernel ms": kernel if linear else None,
            "in-call ms": layers - kernel if eager else None,
            "rest ms": cpu - layers if eager else None,
            "rest - non-linear ms": cpu - layers - stub_cpu if eager else None,
            "linear overhead ms": cpu - kernel - stub_cpu if linear else None,
            "non-linear ms": stub_cpu, "calls": calls if linear else None, "aten ops": ops[(name, setting)]}))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--shape", choices=("1b", "small", "tiny"), default="1b", help="the llm bench's model shape")
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--reps", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache-len", type=int, default=PROMPT + 256,
                   help="max_cache_len of the static settings (the llm bench's: prompt + its longest decode)")
    p.add_argument("--settings", nargs="+", default=["eager", "+static", "+static+compile"])
    p.add_argument("--quick", action="store_true", help="2 layers, 16 tokens, 2 repetitions, eager only")
    p.add_argument("--name", default="llm_overhead")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    if args.quick:
        args.layers, args.tokens, args.reps, args.settings = 2, 16, 2, ["eager"]
    settings = ["" if s == "eager" else s for s in args.settings]
    torch.set_num_threads(args.threads)
    loads = [load_average()]
    models = twins(args.layers, args.shape)
    medians = measure(models, settings, args.tokens, args.reps, args.cache_len)
    loads.append(load_average())
    prompt = torch.randint(0, 32000, (1, PROMPT), generator=torch.Generator().manual_seed(2))
    ops = {(n, s): aten_ops_per_token(m, prompt, s, args.cache_len) for n, m in models.items() for s in settings}
    env = describe_environment()
    env["load average"] = f"{min(loads):.1f}-{max(loads):.1f}"
    env["model"] = (f"{args.shape} Llama shape, {args.layers} layers, int4 b128 RTN memory Low, "
                    f"{args.tokens} new tokens, static cache {args.cache_len}, {args.threads} thread(s)")
    report(args.name, rows_of(medians, ops, args.threads), env, out_dir=args.out or None,
           title="Per-token decode cost besides the weight bytes", notes=__doc__.split("\n\n")[1].strip(),
           floatfmt=".2f")
    return 0


if __name__ == "__main__":
    sys.exit(main())
