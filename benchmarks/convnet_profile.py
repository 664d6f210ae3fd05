"""Per-layer time of a conv net by kind (depthwise, 1x1, kxk, squeeze-excite, linear, other), fp32 beside lowbit's
methods: where lowbit's conv path loses time. Batch 1, 1 thread pinned, thread CPU time (steady on a loaded
machine); forward hooks time each leaf module (median over rounds); "between" is the whole forward (timed without
hooks) minus the leaves: the Python glue (residual adds, SE's mean and multiply, Sequential calls).
Run: python -m benchmarks.convnet_profile [--models ...].
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
import warnings

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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="mobilenet_v3_small,mobilenet_v2")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--rounds", type=int, default=15)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    x = torch.randn(1, 3, 224, 224)
    kinds = ("depthwise", "1x1", "SE 1x1", "kxk", "linear", "other", "between", "total")
    print(f"load {load_average():.2f}; ms per forward, batch 1, 1 thread")
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
