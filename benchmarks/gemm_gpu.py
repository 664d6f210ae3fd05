"""GPU GEMM benchmark: lowbit's Triton kernels vs torch fp16 `F.linear` (and gemlite when it imports), one run.

Recipes: A16W4 block 128, A16W2 block 64, A16W8 per channel (weight-only, fp16 activations), A8W8 per channel and
A8W4 block 128 (dynamic int8 activations, M >= 16 only). Shapes: 8192x8192 at M in {1, 16, 1024, 4096}, the issue's
4096x4096, 11008x4096, 4096x11008 and MiniLM's 384x384, 1536x384, 384x1536 at M in {1, 8, 32, 128, 512}. Every
lowbit point is checked against the float reference before it is timed (a mismatch stops the run). Writes
benchmarks/results/gemm_gpu.{md,csv,json}. Needs CUDA.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lowbit.quant import QuantConfig, quantize_weight

from .harness import Row, describe_environment, report, time_fn

BIG = ((8192, 8192),)
BIG_M = (1, 16, 1024, 4096)
ISSUE = ((4096, 4096), (11008, 4096), (4096, 11008), (384, 384), (1536, 384), (384, 1536))  # (N, K)
ISSUE_M = (1, 8, 32, 128, 512)
# the issue's GPU targets: speedup over fp16 F.linear on 8192x8192 (recipe, M predicate, ratio)
TARGETS = (("A16W4 g128", lambda m: m == 1, 3.3), ("A16W4 g128", lambda m: m == 16, 2.5),
           ("A16W4 g128", lambda m: m >= 1024, 0.9), ("A8W8 pc", lambda m: m >= 1024, 1.5),
           ("A16W2 g64", lambda m: m == 1, 5.0))


@dataclass(frozen=True)
class Recipe:
    """One weight format and the activation mode that runs it."""

    name: str
    bits: int
    block: int
    int8_activations: bool = False


RECIPES = (Recipe("A16W4 g128", 4, 128), Recipe("A16W2 g64", 2, 64), Recipe("A16W8 pc", 8, -1),
           Recipe("A8W8 pc", 8, -1, True), Recipe("A8W4 g128", 4, 128, True))


def _kernel_for(recipe: Recipe, m: int) -> tuple[str, Callable]:
    from lowbit.kernels.triton_gemm import gemm_a16w
    from lowbit.kernels.triton_gemv import gemv_a16w
    from lowbit.kernels.triton_int8 import gemm_a8w

    if recipe.int8_activations:
        return "triton_a8w", gemm_a8w
    return ("triton_gemv", gemv_a16w) if m <= 16 else ("triton_gemm", gemm_a16w)


def _check(y: torch.Tensor, ref: torch.Tensor, what: str, int8_act: bool) -> None:
    """Relative max error vs the fp32 reference (fp16 output rounding and, for int8 activations, their error)."""
    err = (y.float() - ref).abs().max().item()
    scale = ref.abs().max().item() or 1.0
    sqnr = 20 * math.log10(ref.norm().item() / max((y.float() - ref).norm().item(), 1e-30))
    limit_rel, limit_sqnr = (5e-2, 30.0) if int8_act else (1e-2, 45.0)
    if err > limit_rel * scale or sqnr < limit_sqnr:
        raise RuntimeError(f"{what}: output does not match the reference (max err {err:.3g} vs |ref| {scale:.3g}, "
                           f"SQNR {sqnr:.1f} dB); not timing a wrong kernel")


def _gemlite_fn(qw, cw, x: torch.Tensor):
    """A gemlite A16Wn layer for the same codes/scales/zeros, or (None, reason) when it is unavailable."""
    try:
        from gemlite import DType, GemLiteLinear
    except ImportError:
        return None, "gemlite not installed (pip install gemlite)"
    try:
        n, k = cw.n, cw.k
        group = cw.group_size
        layer = GemLiteLinear(qw.bits, group_size=group, in_features=k, out_features=n,
                              input_dtype=DType.FP16, output_dtype=DType.FP16)
        layer.pack(qw.unpack().to(x.device), cw.scale.half(), cw.zero.half(), bias=None)
        return (lambda: layer(x)), ""
    except (RuntimeError, ValueError, TypeError, AttributeError, AssertionError) as e:  # gemlite's API moves
        return None, f"gemlite failed: {type(e).__name__}: {e}"


def _graphed(fn: Callable[[], object]) -> Callable[[], object]:
    """fn captured in a CUDA graph (after warm-up, so autotuning is done): replay times the GPU work without
    Python launch overhead, as a decode loop under CUDA graphs / torch.compile would see it."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def _weight_bytes(cw) -> int:  # the prepared weight: packed words + scale/zero as stored
    return sum(t.numel() * t.element_size() for t in (cw.qweight, cw.scale, cw.zero))


def bench_point(n: int, k: int, m: int, recipe: Recipe, w: torch.Tensor, prepared: dict, rows: list,
                notes: set) -> None:
    """Check, then time lowbit, fp16 F.linear and gemlite for one (shape, M, recipe); appends one Row."""
    from lowbit.kernels.triton_common import prepare_triton

    dev = w.device
    key = (n, k, recipe.bits, recipe.block)
    if key not in prepared:
        qw = quantize_weight(w, QuantConfig(bits=recipe.bits, block_size=recipe.block))
        cw = qw.compute_layout()
        prepared[key] = (qw, cw, prepare_triton(cw, scale_dtype=qw.scale.dtype), cw.dequantize(torch.float32))
    qw, cw, cw_t, w_deq = prepared[key]
    x = torch.randn(m, k, device=dev, dtype=torch.float16)
    kernel, fn = _kernel_for(recipe, m)
    ref = x.float() @ w_deq.T
    _check(fn(x, cw_t), ref, f"{recipe.name} {n}x{k} M={m}", recipe.int8_activations)
    t = time_fn(lambda: fn(x, cw_t), device=dev)
    w16 = w_deq.half()
    t16 = time_fn(lambda: F.linear(x, w16), device=dev)
    wbytes = _weight_bytes(cw_t)
    row = {"N": n, "K": k, "M": m, "recipe": recipe.name, "kernel": kernel, "ms": t.median_ms, "p20": t.p20_ms,
           "p80": t.p80_ms, "weight GB/s": wbytes / t.median_ms / 1e6, "fp16 ms": t16.median_ms,
           "x fp16": t16.median_ms / t.median_ms}
    if m <= 16:  # launch overhead matters at small M: also time both sides replayed from a CUDA graph
        tg_low = time_fn(_graphed(lambda: fn(x, cw_t)), device=dev)
        tg_16 = time_fn(_graphed(lambda: F.linear(x, w16)), device=dev)
        row.update({"graph ms": tg_low.median_ms, "graph x fp16": tg_16.median_ms / tg_low.median_ms})
    if not recipe.int8_activations and recipe.block != -1:
        g_fn, why = _gemlite_fn(qw, cw, x)
        if g_fn is not None:
            _check(g_fn(), ref, f"gemlite {recipe.name} {n}x{k} M={m}", False)
            tg = time_fn(g_fn, device=dev)
            row.update({"gemlite ms": tg.median_ms, "x gemlite": tg.median_ms / t.median_ms})
        else:
            notes.add(why)
    for name, pred, target in TARGETS:
        if (n, k) in BIG and recipe.name == name and pred(m):
            row["target x fp16"] = target
            best = max(row["x fp16"], row.get("graph x fp16", 0.0))
            row["met"] = "yes" if row["x fp16"] >= target else "graph only" if best >= target else "NO"
    rows.append(Row(row))


def run(out_dir="benchmarks/results", quick: bool = False) -> list[Row]:
    """Run the suite on the current CUDA device; quick=True keeps only 8192x8192 (the targets)."""
    if not torch.cuda.is_available():
        raise RuntimeError("the GPU GEMM benchmark needs a CUDA device (torch.cuda.is_available() is False)")
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    rows: list[Row] = []
    notes: set[str] = set()
    plan = [(nk, BIG_M) for nk in BIG] + ([] if quick else [(nk, ISSUE_M) for nk in ISSUE])
    for (n, k), ms in plan:
        w = torch.randn(n, k, device=dev, generator=gen) * 0.02
        prepared: dict = {}
        for recipe in RECIPES:
            for m in ms:
                if recipe.int8_activations and m < 16:
                    continue  # dynamic int8 activations pay off on tensor cores, not in GEMV
                bench_point(n, k, m, recipe, w, prepared, rows, notes)
        del w, prepared
        torch.cuda.empty_cache()
    text = ("ms = median over repetitions after warm-up with the L2 flushed between calls; weight GB/s = packed "
            "words + fp16 scales/zeros per call / time; x fp16 = fp16 F.linear ms / lowbit ms (higher is better). "
            "graph = both sides replayed from a CUDA graph (no Python launch overhead; M <= 16). lowbit uses the "
            "transposed word layout with float16 scales/zeros (`prepare_triton`), autotuned. "
            + " ".join(sorted(notes)))
    report("gemm_gpu", rows, describe_environment(dev), out_dir=out_dir, title="lowbit Triton GEMM on GPU", notes=text)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="benchmarks/results", help="results folder ('' to skip saving)")
    p.add_argument("--quick", action="store_true", help="only the 8192x8192 target shapes")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_gemm_gpu: no CUDA device here (torch.cuda.is_available() is False); this suite needs a GPU. "
              "The CPU kernels have their own benchmark.")
        return 2
    run(out_dir=args.out or None, quick=args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
