"""Per-layer time of a conv net by kind (depthwise, 1x1, kxk, squeeze-excite, linear, other), fp32 beside lowbit's
methods: where lowbit's conv path loses time. Batch 1, 1 thread pinned, thread CPU time (steady on a loaded
machine); forward hooks time each leaf module (median over rounds); "between" is the whole forward (timed without
hooks) minus the leaves: the Python glue (residual adds, SE's mean and multiply, Sequential calls).
Run: python -m benchmarks.convnet_profile [--models ...]. With --layers: one row per conv layer instead (its N per
group, K, output plane, fp32 and lowbit ms, the ratio, and the path dispatch gave it: "native" or "float copy"), and
with --all-native a column of the same model with dispatch's GEMM-kind conv rules off (`dispatch.conv_native_reason`'s
thresholds: every dense, 1x1 and grouped conv on the native kernel, bound as dispatch binds it), what the rules
weigh.
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import statistics
import time
import warnings
from unittest import mock

import torch
from torch import nn

from .convnet_models import build
from .harness import load_average

METHODS = ("torch fp32", "lowbit int4 b64 low", "lowbit int8 pc low", "lowbit static INT8")


def kind(name: str, m: nn.Module) -> str:
    """The layer kind a leaf module is counted under."""
    if isinstance(m, nn.Conv2d) or hasattr(m, "kernel_size") and hasattr(m, "groups"):
        if ".fc" in name:
            return "SE 1x1"
        if m.groups > 1:
            return "depthwise"
        return "1x1" if tuple(m.kernel_size) == (1, 1) else "kxk"
    return "linear" if isinstance(m, nn.Linear) or hasattr(m, "out_features") else "other"


def make(name: str, method: str, x: torch.Tensor) -> nn.Module:
    from lowbit.nn import quantize
    from lowbit.quant import QuantConfig
    from lowbit.runtime import BackendConfig
    from lowbit.static import StaticConfig, quantize_static

    model = build(name)
    if method == "torch fp32":
        return model
    if method == "lowbit static INT8":
        cal = [torch.randn_like(x) for _ in range(8)]
        return quantize_static(copy.deepcopy(model), cal, StaticConfig(), progress=False)
    bits, block = (4, 64) if "int4" in method else (8, -1)
    return quantize(copy.deepcopy(model), QuantConfig(bits=bits, block_size=block), backend=BackendConfig("low"))


def profile(model: nn.Module, x: torch.Tensor, rounds: int) -> tuple[dict[str, float], float]:
    """({kind: ms}, whole forward ms), medians over `rounds`."""
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    times: dict[str, list[float]] = {n: [] for n, _ in leaves}
    start: dict[str, float] = {}
    with torch.no_grad():
        for _ in range(3):
            model(x)
        walls = []
        for _ in range(rounds):
            t = time.thread_time()
            model(x)
            walls.append(time.thread_time() - t)
        hooks = []
        for n, m in leaves:
            hooks.append(m.register_forward_pre_hook(lambda _m, _i, n=n: start.__setitem__(n, time.thread_time())))
            hooks.append(m.register_forward_hook(
                lambda _m, _i, _o, n=n: times[n].append(time.thread_time() - start[n])))
        for _ in range(rounds):
            model(x)
        for h in hooks:
            h.remove()
    by_kind: dict[str, float] = {}
    for n, m in leaves:
        if times[n]:
            by_kind[kind(n, m)] = by_kind.get(kind(n, m), 0.0) + statistics.median(times[n]) * 1e3
    return by_kind, statistics.median(walls) * 1e3


def conv_rows(model: nn.Module, x: torch.Tensor, rounds: int) -> dict[str, float]:
    """{conv layer name: median ms} over `rounds` forwards (hooks around each conv)."""
    convs = [(n, m) for n, m in model.named_modules() if kind(n, m) in ("depthwise", "1x1", "kxk", "SE 1x1")]
    times: dict[str, list[float]] = {n: [] for n, _ in convs}
    start: dict[str, float] = {}
    hooks = []
    for n, m in convs:
        hooks.append(m.register_forward_pre_hook(lambda _m, _i, n=n: start.__setitem__(n, time.thread_time())))
        hooks.append(m.register_forward_hook(lambda _m, _i, _o, n=n: times[n].append(time.thread_time() - start[n])))
    with torch.no_grad():
        for _ in range(3):
            model(x)
        for n in times:
            times[n].clear()
        for _ in range(rounds):
            model(x)
    for h in hooks:
        h.remove()
    return {n: statistics.median(t) * 1e3 for n, t in times.items()}


def path(m: nn.Module) -> str:
    """The path a quantized conv's bound call takes: the native kernel (a bound functools.partial of its runner) or
    a float copy (F.conv2d on it)."""
    bound = m.__dict__.get("_bound")
    call = getattr(bound, "call", None)
    return "native" if isinstance(call, functools.partial) else "float copy" if call is not None else "op"


def layer_table(name: str, method: str, x: torch.Tensor, rounds: int, force: bool) -> None:
    """Print one row per conv layer of `name`: fp32 against `method` (force: and against it with every GEMM-kind
    conv native)."""
    from lowbit.runtime import dispatch

    fp32 = build(name)
    model = make(name, method, x)
    shapes: dict[str, str] = {}
    with torch.no_grad():
        out = {}
        for n, m in fp32.named_modules():
            if isinstance(m, nn.Conv2d):
                m.register_forward_hook(lambda _m, _i, o, n=n: out.__setitem__(n, tuple(o.shape[2:])))
        fp32(x)
    for n, m in fp32.named_modules():
        if isinstance(m, nn.Conv2d):
            k = m.weight[0].numel()
            shapes[n] = f"N={m.out_channels // m.groups} K={k} {out[n][0]}x{out[n][1]} s{m.stride[0]}"
    base = conv_rows(fp32, x, rounds)
    lowbit = conv_rows(model, x, rounds)
    mods = dict(model.named_modules())
    paths = {n: path(mods[n]) for n in lowbit}
    forced = {}
    if force:
        with mock.patch.multiple(dispatch, CONV_NATIVE_MIN_N=0, CONV_NATIVE_MIN_K=0, CONV_NATIVE_MIN_PLANE=0,
                                 avx2_conv_max_plane=lambda *_: 1 << 40):
            forced = conv_rows(make(name, method, x), x, rounds)
    head = "| model | method | layer | shape | fp32 ms | lowbit ms | ratio | path |" + (
        " all native ms | all-native ratio |" if force else "")
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for n, ms in base.items():
        row = (f"| {name} | {method} | {n} | {shapes.get(n, '')} | {ms:.3f} | {lowbit[n]:.3f} | "
               f"{ms / lowbit[n]:.2f}x | {paths[n]} |")
        if force:
            row += f" {forced[n]:.3f} | {ms / forced[n]:.2f}x |"
        print(row, flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="mobilenet_v3_small,mobilenet_v2")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--layers", action="store_true", help="one row per conv layer (fp32 against each lowbit method)")
    p.add_argument("--all-native", action="store_true", help="with --layers: also every GEMM-kind conv native")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    x = torch.randn(1, 3, 224, 224)
    kinds = ("depthwise", "1x1", "SE 1x1", "kxk", "linear", "other", "between", "total")
    print(f"load {load_average():.2f}; ms per forward, batch 1, 1 thread")
    if args.layers:
        for name in args.models.split(","):
            for method in args.methods.split(","):
                if method != "torch fp32":
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        layer_table(name, method, x, args.rounds, args.all_native)
        return
    print("| model | method | " + " | ".join(kinds) + " |")
    print("|---" * (len(kinds) + 2) + "|")
    for name in args.models.split(","):
        for method in args.methods.split(","):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = make(name, method, x)
                by_kind, total = profile(model, x, args.rounds)
            by_kind["between"] = total - sum(by_kind.values())
            by_kind["total"] = total
            print(f"| {name} | {method} | " + " | ".join(f"{by_kind.get(k, 0.0):.2f}" for k in kinds) + " |",
                  flush=True)


if __name__ == "__main__":
    main()
