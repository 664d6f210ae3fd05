"""Static W8A8 benchmark: a static int8 Linear against torch fp32 and torch dynamic int8 on the same weight, and a
small conv classifier at batch 1 (fp32 / torch dynamic int8 / lowbit static int8).

The machine may be shared: methods are timed interleaved (one call of each per round, rounds repeated) so that
load changes hit every method alike, single-threaded by default, with the 1-minute load average recorded before
and after. Outputs are checked against fp32 (SQNR floor) before timing. Results: bench/results/static_int8*.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .harness import Row, describe_environment, load_average, report

MS = (32, 64, 128, 256, 512)
MIN_SQNR_DB = 25.0


def cpu_model() -> str:
    """The 'Model name' lscpu reports (falls back to /proc/cpuinfo)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def _sqnr(ref, y) -> float:
    err = (ref.double() - y.double()).norm()
    return float("inf") if err == 0 else float(20 * torch.log10(ref.double().norm() / err))


def interleaved(fns: dict, rounds: int, inner: int = 1) -> dict[str, float]:
    """Median ms per call of each fn, timed one after another in every round."""
    for fn in fns.values():
        fn()
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            for _ in range(inner):
                fn()
            samples[name].append((time.perf_counter() - t) * 1e3 / inner)
    return {name: statistics.median(v) for name, v in samples.items()}


def _dynamic(module: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao deprecation notices
        return torch.ao.quantization.quantize_dynamic(module, {nn.Linear}, torch.qint8)


def linear_rows(k: int, n: int, ms, rounds: int) -> list[Row]:
    from ..static import StaticConfig, quantize_static

    torch.manual_seed(0)
    lin = nn.Linear(k, n).eval()
    dyn = _dynamic(nn.Sequential(lin))
    static = quantize_static(nn.Sequential(nn.Linear(k, n)).eval().requires_grad_(False),
                             [torch.randn(64, k)], StaticConfig(activation_method="minmax"), progress=False)
    rows = []
    for m in ms:
        x = torch.randn(m, k)
        with torch.no_grad():
            ref = F.linear(x, static[0].quantized_weight("weight").dequantize(), static[0].bias)
            sq = _sqnr(ref, static(x))
            if sq < MIN_SQNR_DB:
                raise RuntimeError(f"static int8 output SQNR {sq:.1f} dB < {MIN_SQNR_DB} at M={m}")
            xq = torch.clamp(torch.round(x / static[0].input_scale), -127, 127).to(torch.int8)
            w = static[0].prepared()
            t = interleaved({"torch fp32": functools.partial(lin, x), "torch dynamic int8": functools.partial(dyn, x),
                             "lowbit static W8A8": functools.partial(static, x),
                             "int8 GEMM only": functools.partial(torch._int_mm, xq, w.wt)}, rounds)
        for name, ms_ in t.items():
            rows.append(Row({"case": f"Linear {k}x{n}", "M": m, "method": name, "ms": ms_,
                             "vs dynamic int8": t["torch dynamic int8"] / ms_, "vs fp32": t["torch fp32"] / ms_,
                             "SQNR dB": sq if name == "lowbit static W8A8" else None}))
    return rows


class ConvNet(nn.Module):
    """A small image classifier (conv + BN + ReLU blocks, a Linear head), 3x64x64 input."""

    def __init__(self):
        super().__init__()
        chans = (3, 32, 64, 128, 256)
        blocks = []
        for a, b in zip(chans, chans[1:], strict=False):
            blocks += [nn.Conv2d(a, b, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU()]
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(256, 10)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


def conv_rows(rounds: int) -> list[Row]:
    import copy

    from ..static import StaticConfig, quantize_static

    torch.manual_seed(0)
    model = ConvNet().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
    cal = [torch.randn(4, 3, 64, 64) for _ in range(4)]
    static = quantize_static(copy.deepcopy(model), cal, StaticConfig(), progress=False)
    dyn = _dynamic(copy.deepcopy(model))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        sq = _sqnr(model(x), static(x))
        t = interleaved({"torch fp32": lambda: model(x), "torch dynamic int8": lambda: dyn(x),
                         "lowbit static W8A8": lambda: static(x)}, rounds, inner=5)
    return [Row({"case": "ConvNet 3x64x64 batch 1", "M": 1, "method": name, "ms": v,
                 "vs dynamic int8": t["torch dynamic int8"] / v, "vs fp32": t["torch fp32"] / v,
                 "SQNR dB": sq if name == "lowbit static W8A8" else None}) for name, v in t.items()]


MINILM_SETTINGS = (("kl", None, ()), ("minmax", None, ()), ("percentile", None, ()), ("mse", None, ()),
                   ("kl", 0.75, ()), ("percentile", 0.5, ()), ("percentile", 0.75, ()), ("mse", 0.75, ()))


def minilm_rows(samples: int, settings=MINILM_SETTINGS) -> list[Row]:
    """MiniLM static int8: calibration time and embedding cosine to fp32 on lowbit.models.SENTENCES."""
    import copy

    from ..calib import minilm_calibration
    from ..models import embed, load_minilm
    from ..static import StaticConfig, quantize_static

    base = load_minilm()
    ref = embed(base)
    cal = minilm_calibration(base, samples)
    rows = []
    for method, alpha, skip in settings:
        model = copy.deepcopy(base)
        t = time.perf_counter()
        quantize_static(model, cal, StaticConfig(activation_method=method, smooth_alpha=alpha), skip=skip,
                        progress=False)
        seconds = time.perf_counter() - t
        cos = F.cosine_similarity(ref, embed(model), dim=-1)
        rows.append(Row({"method": method, "smooth_alpha": alpha, "skip": ",".join(skip) or "-",
                         "calib samples": samples, "int8 layers": len(model.lowbit_summary.quantized),
                         "quantize s": seconds, "lowest cosine": float(cos.min()), "mean cosine": float(cos.mean())}))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lowbit bench static_int8", description=__doc__)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--quick", action="store_true", help="M = 32, 128 only, fewer rounds")
    p.add_argument("--out", default="bench/results", help="results folder ('' = do not save)")
    p.add_argument("--name", default=None)
    p.add_argument("--minilm", type=int, default=0, metavar="N",
                   help="instead: MiniLM static int8 accuracy with N calibration sentences")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = load_average()
    if args.minilm:
        rows = minilm_rows(args.minilm)
        env = describe_environment()
        env.update({"cpu model (lscpu)": cpu_model(), "threads": torch.get_num_threads(),
                    "load avg 1m before/after": f"{load_before:.2f}/{load_average():.2f}"})
        report(args.name or "static_int8_minilm", rows, env, out_dir=args.out or None,
               title="MiniLM static int8: embedding cosine to fp32",
               notes="Cosine between fp32 and static int8 sentence embeddings of lowbit.models.SENTENCES; "
               "'quantize s' includes BatchNorm folding, calibration passes, threshold search and the swap.")
        return 0
    ms = (32, 128) if args.quick else MS
    rounds = 5 if args.quick else args.rounds
    rows = linear_rows(4096, 4096, ms, rounds) + conv_rows(rounds)
    env = describe_environment()
    env.update({"cpu model (lscpu)": cpu_model(), "threads": torch.get_num_threads(),
                "load avg 1m before/after": f"{load_before:.2f}/{load_average():.2f}", "cores": os.cpu_count()})
    notes = ("Interleaved timing (one call per method per round, median over rounds). 'vs' columns: baseline ms / "
             "this ms (> 1 = faster). torch dynamic int8 = quantize_dynamic (fbgemm: per-call activation range + "
             "requantization). 'int8 GEMM only' = torch._int_mm on pre-quantized activations (the kernel alone).")
    name = args.name or f"static_int8_{args.threads}t"
    report(name, rows, env, out_dir=args.out or None, title="Static W8A8 (offline INT8) vs torch", notes=notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
