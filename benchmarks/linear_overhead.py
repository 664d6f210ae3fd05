"""Per-call cost of one QuantLinear at M = 1 (a decoded token) against its kernel alone and torch's F.linear.

For each (K in, N out) and format (int4 blocks 64 / 128, int8 per channel; RTN, asymmetric): a QuantLinear called
on x (1, 1, K) at memory Low (the native kernel) and at memory Normal (the float copy), the native kernel alone (the
same ctypes calls the layer ends in, on buffers allocated once: what the call cannot go below), and torch fp32
F.linear on the float weight. Every callable is checked against the others before it is timed (the Low layer equal
to its kernel alone, the Normal layer equal to F.linear on the dequantized weight), then all are timed round by
round (`interleaved`, thread CPU time, 1 thread), medians reported. overhead = layer - kernel alone (Low) or
layer - F.linear on the same float weight (Normal): the Python between the module call and the kernel.

Decode suite (--decode): the small Llama of benchmarks/llm.py (hidden 768, 6 layers) generating N tokens at batch
1, for int4 b128 and int8 per channel at memory Low, each as three variants of the same weights: every call through
the usual path (`bind_calls = False`), bound calls, bound calls with sibling Linears fused (`fuse_siblings`).
Tokens/s from the calling thread's CPU time between the first and the last generated token (1 thread: torch and
the native kernel run on it), beside wall time; variants interleaved, medians of the repetitions.

Usage: python -m benchmarks.linear_overhead [--rounds 15] [--inner 200] [--quick] [--name linear_overhead]
       python -m benchmarks.linear_overhead --decode [--tokens 64] [--reps 5] [--name llm_small_fastcall]
Writes benchmarks/results/<name>.{md,csv,json}.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
import torch.nn.functional as F

import lowbit
from lowbit.kernels import cpu_native
from lowbit.kernels.cpu_int4 import prepare_int4_cpu
from lowbit.nn import QuantLinear, fuse_siblings
from lowbit.quant import QuantConfig, quantize_weight
from lowbit.runtime.config import NATIVE_ACTIVATIONS, Precision

from .harness import Row, describe_environment, interleaved, load_average, report
from .llm_decode import StepClock

SHAPES = ((384, 384), (768, 768), (768, 2048), (4096, 4096))
FORMATS = (("int4 b64", 4, 64), ("int4 b128", 4, 128), ("int8 pc", 8, -1))


def kernel_alone(qw, activations: str, x: torch.Tensor):
    """The native kernel's ctypes calls for x (1, K) on buffers allocated once (no checks, no allocation)."""
    w4 = prepare_int4_cpu(qw, "native")
    t, lib = w4.tensors, cpu_native.native_library().lib
    m, kp = x.shape[0], t["packed"].shape[1] * 8 // (4 if qw.bits <= 4 else 8)
    nb, n = t["scale"].shape[1], qw.n
    mode = cpu_native.INT8_ACT_MODES[activations]
    xq = torch.empty(m, kp, dtype=torch.int8)
    xd = torch.empty(m, kp // 32 if activations == "int8/32" else nb)
    xs, y = torch.empty(m, nb), torch.empty(m, n)
    gemm = lib.lb_gemm_q4 if qw.bits <= 4 else lib.lb_gemm_q8
    ptrs = [a.data_ptr() for a in (x, xq, xd, xs, t["packed"], t["scale"], t["scale_zero"], y)]
    px, pq, pd, ps, pw, pws, pwz, py = ptrs

    keep = (x, xq, xd, xs, t)  # the buffers behind the pointers live as long as `call`

    def call(_keep=keep):
        lib.lb_quant_act(px, m, qw.k, kp, w4.group_k, nb, mode, pq, pd, ps, 1)
        gemm(pw, pws, pwz, n, kp, w4.group_k // 32, nb, pq, pd, ps, m, mode, None, py, 1)
        return y
    return call


def shape_rows(k: int, n: int, formats, rounds: int, inner: int, gen) -> list[Row]:
    """One row per format of this shape: medians in us per call and the overheads."""
    w = torch.randn(n, k, generator=gen) / k**0.5
    x = torch.randn(1, 1, k, generator=gen)
    x2 = x.reshape(1, k)
    precision = Precision.NORMAL
    acts = NATIVE_ACTIVATIONS[precision]
    rows = []
    for label, bits, block in formats:
        qw = quantize_weight(w, QuantConfig(bits=bits, block_size=block))
        wd = qw.dequantize(torch.float32)
        low = QuantLinear(qw, None, lowbit.BackendConfig("low", precision)).eval()
        normal = QuantLinear(qw, None, lowbit.BackendConfig("normal", precision)).eval()
        alone = kernel_alone(qw, acts, x2)
        fns = {"kernel alone": alone, "layer Low": lambda low=low: low(x),
               "layer Normal": lambda normal=normal: normal(x), "F.linear fp32": lambda wd=wd: F.linear(x, wd)}
        with torch.no_grad():
            if not torch.equal(low(x).reshape(1, n), alone()):
                raise RuntimeError(f"{label} {k}x{n}: the Low layer differs from its kernel alone; not timing it")
            if not torch.allclose(normal(x), F.linear(x, wd), rtol=1e-5, atol=1e-5):
                raise RuntimeError(f"{label} {k}x{n}: the Normal layer differs from F.linear; not timing it")
            _, cpu = interleaved(fns, rounds, inner)
        us = {name: ms * 1e3 for name, ms in cpu.items()}
        rows.append(Row({"K": k, "N": n, "format": label, "kernel alone us": us["kernel alone"],
                         "layer Low us": us["layer Low"], "Low overhead us": us["layer Low"] - us["kernel alone"],
                         "F.linear fp32 us": us["F.linear fp32"], "layer Normal us": us["layer Normal"],
                         "Normal overhead us": us["layer Normal"] - us["F.linear fp32"]}))
    return rows


def decode_rates(model, prompt, new: int) -> tuple[float, float]:
    """(tokens/s by thread CPU time, by wall time) of one greedy generate of `new` tokens."""
    from transformers import LogitsProcessorList

    clocks = StepClock()
    with torch.no_grad():
        model.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                       logits_processor=LogitsProcessorList([clocks]))
    steps = len(clocks.cpu) - 1
    return steps / (clocks.cpu[-1] - clocks.cpu[0]), steps / (clocks.wall[-1] - clocks.wall[0])


def decode_rows(tokens: int, reps: int) -> list[Row]:
    """Decode tokens/s of the small Llama per row and variant (see the module docstring)."""
    from .llm import build_model, variant

    base = build_model("small")
    models = {}
    for row in ("int4-b128", "int8"):
        for twin in ("unbound", "bound", "fused"):
            model = variant(base, row)  # a quantized copy of the seeded model
            for layer in model.modules():
                if isinstance(layer, QuantLinear):
                    layer.bind_calls = twin != "unbound"
            if twin == "fused":
                fuse_siblings(model)
            models[(row, twin)] = model
    del base
    prompt = torch.randint(0, 32000, (1, 8), generator=torch.Generator().manual_seed(2))
    cpu, wall = {k: [] for k in models}, {k: [] for k in models}
    for rep in range(reps + 1):  # the first repetition is warm-up
        for key, model in models.items():
            c, w = decode_rates(model, prompt, tokens)
            if rep:
                cpu[key].append(c)
                wall[key].append(w)
    rows = []
    for (row, twin), samples in cpu.items():
        base_cpu = statistics.median(cpu[(row, "unbound")])
        rows.append(Row({"row": row, "variant": twin, f"decode {tokens} tok/s (CPU time)": statistics.median(samples),
                         "ms/token (CPU time)": 1e3 / statistics.median(samples),
                         "speed-up vs unbound": statistics.median(samples) / base_cpu,
                         f"decode {tokens} tok/s (wall)": statistics.median(wall[(row, twin)])}))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--inner", type=int, default=200, help="calls per timing (shapes from 4096 use a tenth)")
    p.add_argument("--quick", action="store_true", help="768x768 only, 5 rounds")
    p.add_argument("--decode", action="store_true", help="the decode suite on the small Llama instead")
    p.add_argument("--tokens", type=int, default=64, help="decode suite: new tokens per generate")
    p.add_argument("--reps", type=int, default=5, help="decode suite: repetitions after one warm-up")
    p.add_argument("--name", default=None, help="results name (default linear_overhead / llm_small_fastcall)")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.decode:
        return _decode_main(args)
    shapes = ((768, 768),) if args.quick else SHAPES
    rounds = 5 if args.quick else args.rounds
    gen = torch.Generator().manual_seed(0)
    loads, rows = [load_average()], []
    for k, n in shapes:
        rows += shape_rows(k, n, FORMATS, rounds, max(1, args.inner // 10) if k >= 4096 else args.inner, gen)
        loads.append(load_average())
    env = _environment(loads)
    notes = ("x (1, 1, K), batch 1; thread CPU time (time.thread_time), 1 thread, medians of interleaved rounds; "
             "precision Normal (native activations int8 per 32 channels); RTN asymmetric weights, random Gaussian. "
             "kernel alone: the native lb_quant_act + lb_gemm calls on buffers allocated once.")
    report(args.name or "linear_overhead", rows, env, out_dir=args.out or None,
           title="QuantLinear per-call cost at M = 1", notes=notes, floatfmt=".1f")
    return 0


def _environment(loads: list[float]) -> dict:
    """The results header: versions, the load range seen during the run and the native kernel variant."""
    env = describe_environment()
    env["load average"] = f"{min(loads):.1f}-{max(loads):.1f}"
    env["native variant"] = cpu_native.native_variant()
    return env


def _decode_main(args) -> int:
    loads = [load_average()]
    rows = decode_rows(args.tokens, args.reps)
    loads.append(load_average())
    env = _environment(loads)
    notes = ("Small Llama (benchmarks/llm.py --model small: hidden 768, intermediate 2048, 6 layers, vocab 32000, "
             "random weights), RTN, memory Low, precision Normal, lm_head quantized; greedy generate from an 8-token "
             "prompt, transformers' dynamic cache, no torch.compile; 1 thread. unbound: every Linear call through "
             "the usual path (bind_calls=False, as before lowbit.nn.fastcall); bound: bound calls; fused: bound "
             "calls and lowbit.nn.fuse_siblings (q/k/v and gate/up: 43 Linear calls per token -> 25). Tokens/s "
             "by the calling thread's CPU time (robust to other processes' load) and by wall time; variants "
             "interleaved, medians of the repetitions after one warm-up.")
    report(args.name or "llm_small_fastcall", rows, env, out_dir=args.out or None,
           title="Decode speed of the small Llama: bound calls and fused siblings", notes=notes, floatfmt=".2f")
    return 0


if __name__ == "__main__":
    sys.exit(main())
