"""Static W8A8 benchmark: a static int8 Linear against torch fp32 and torch dynamic int8 on the same weight, and a
small conv classifier at batch 1 (fp32 / torch dynamic int8 / lowbit static int8).

The machine may be shared: methods are timed interleaved (one call of each per round, rounds repeated) so that
load changes hit every method alike, single-threaded by default, with the 1-minute load average recorded before
and after, wall and CPU time both. Outputs are checked against their float64 reference and fp32 (SQNR floor)
before timing. Results: benchmarks/results/static_int8*.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .harness import Row, describe_environment, interleaved, load_average, report, sqnr_db

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


def dynamic_int8(module: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao deprecation notices
        return torch.ao.quantization.quantize_dynamic(module, {nn.Linear}, torch.qint8)


def _check_exact(layer, x: torch.Tensor, y: torch.Tensor) -> float:
    """Max relative error of a static Linear's output against its integer math in float64 (codes, scales, bias)."""
    from lowbit.quant.static_int8 import int8_codes, quantize_symmetric

    qw = layer.quantized_weight("weight")
    xq = quantize_symmetric(x.float(), layer.input_scale, layer.input_clamp).double()
    step = torch.tensor(layer.input_scale, dtype=torch.float32).double()
    ref = xq @ int8_codes(qw).double().t() * (qw.scale.reshape(-1).double() * step) + layer.bias.double()
    err = float((y.double() - ref).abs().max() / ref.abs().max())
    if not err < 1e-5:
        raise RuntimeError(f"static int8 output is {err:.2e} (relative) off its float64 reference")
    return err


def _rows(case: str, m: int, wall: dict, cpu: dict, extra: dict) -> list[Row]:
    base, base_cpu, fp32 = wall["torch dynamic int8"], cpu["torch dynamic int8"], wall["torch fp32"]
    return [Row({"case": case, "M": m, "method": name, "ms": ms, "cpu ms": cpu[name], "vs dynamic int8": base / ms,
                 "vs dynamic (cpu)": base_cpu / cpu[name], "vs fp32": fp32 / ms, **extra.get(name, {})})
            for name, ms in wall.items()]


def linear_rows(k: int, n: int, ms, rounds: int) -> list[Row]:
    from lowbit.kernels import cpu_static_int8 as native
    from lowbit.static import StaticConfig, quantize_static

    torch.manual_seed(0)
    lin = nn.Linear(k, n).eval()
    dyn = dynamic_int8(nn.Sequential(lin))
    static = quantize_static(nn.Sequential(nn.Linear(k, n)).eval().requires_grad_(False),
                             [torch.randn(64, k)], StaticConfig(activation_method="minmax"), progress=False)
    layer = static[0]
    rows = []
    for m in ms:
        x = torch.randn(m, k)
        with torch.no_grad():
            y = static(x)
            err = _check_exact(layer, x, y)
            ref = F.linear(x, layer.quantized_weight("weight").dequantize(), layer.bias)
            sq = sqnr_db(ref, y)
            if sq < MIN_SQNR_DB:
                raise RuntimeError(f"static int8 output SQNR {sq:.1f} dB < {MIN_SQNR_DB} at M={m}")
            fns = {"torch fp32": functools.partial(lin, x), "torch dynamic int8": functools.partial(dyn, x),
                   "lowbit static W8A8": functools.partial(static, x)}
            if layer.impl_for(m, x.device) == "native":
                w, epi = layer.native_prepared()
                xt, _ = native.native_quantize_activations(x, w.kp, layer.input_scale, 127, num_threads=1)
                out = torch.empty(m, n)
                fns["lowbit int8 GEMM only"] = functools.partial(native.native_gemm_static, xt, m, w, epi, False, out,
                                                                 torch.get_num_threads())
            xq = torch.clamp(torch.round(x / layer.input_scale), -127, 127).to(torch.int8)
            fns["torch._int_mm GEMM only"] = functools.partial(torch._int_mm, xq, layer.prepared().wt)
            wall, cpu = interleaved(fns, rounds)
        rows += _rows(f"Linear {k}x{n}", m, wall, cpu,
                      {"lowbit static W8A8": {"SQNR dB": sq, "f64 rel err": err}})
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

    from lowbit.nn.weight_cache import override_capabilities
    from lowbit.runtime import Capabilities
    from lowbit.static import StaticConfig, quantize_static

    torch.manual_seed(0)
    model = ConvNet().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
    cal = [torch.randn(4, 3, 64, 64) for _ in range(4)]
    static = quantize_static(copy.deepcopy(model), cal, StaticConfig(), progress=False)
    dyn = dynamic_int8(copy.deepcopy(model))
    x = torch.randn(1, 3, 64, 64)
    emulated = copy.deepcopy(static)  # taken before any call, so no layer has chosen its kernel yet
    with torch.no_grad():
        y = static(x)
        override_capabilities(Capabilities())  # the same integers through the float64 emulation: the reference
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = emulated(x)
        finally:
            override_capabilities(None)
        err = float((y.double() - ref.double()).abs().max() / ref.double().abs().max())
        if not err < 1e-4:
            raise RuntimeError(f"static int8 ConvNet output is {err:.2e} (relative) off its float64 emulation")
        sq = sqnr_db(model(x), y)
        wall, cpu = interleaved({"torch fp32": lambda: model(x), "torch dynamic int8": lambda: dyn(x),
                                 "lowbit static W8A8": lambda: static(x)}, rounds, inner=5)
    fused = len(static.lowbit_summary.fused_relu)
    return _rows("ConvNet 3x64x64 batch 1", 1, wall, cpu,
                 {"lowbit static W8A8": {"SQNR dB": sq, "f64 rel err": err, "ReLU fused": fused}})


MINILM_SETTINGS = (("kl", None, ()), ("minmax", None, ()), ("percentile", None, ()), ("mse", None, ()),
                   ("kl", 0.75, ()), ("percentile", 0.5, ()), ("percentile", 0.75, ()), ("mse", 0.75, ()))


def minilm_rows(samples: int, settings=MINILM_SETTINGS) -> list[Row]:
    """MiniLM static int8: calibration time and embedding cosine to fp32 on lowbit.models.SENTENCES."""
    import copy

    from lowbit.calib import minilm_calibration
    from lowbit.models import embed, load_minilm
    from lowbit.static import StaticConfig, quantize_static

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
    p.add_argument("--out", default="benchmarks/results", help="results folder ('' = do not save)")
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
    notes = ("Interleaved timing (one call per method per round, median over rounds); 'ms' is wall time, 'cpu ms' "
             "this thread's CPU time (less sensitive to other jobs on a shared machine). 'vs' columns: baseline / "
             "this (> 1 = faster). torch dynamic int8 = quantize_dynamic (fbgemm: per-call activation range + "
             "requantization). 'GEMM only' rows: the int8 kernel on pre-quantized activations (lowbit's native "
             "kernel; torch._int_mm). Every static output was checked first against its float64 reference "
             "('f64 rel err': the same integer math in float64) and the fp32 model ('SQNR dB').")
    name = args.name or f"static_int8_{args.threads}t"
    report(name, rows, env, out_dir=args.out or None, title="Static W8A8 (offline INT8) vs torch", notes=notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
