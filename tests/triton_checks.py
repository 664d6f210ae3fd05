"""Shared helpers of the Triton kernel tests: weights in compute layout, the float64 reference check, and the
autotuned launch path made runnable in the interpreter."""

import importlib
import math

import torch

from lowbit import QuantConfig, quantize_weight
from lowbit.kernels.reference import linear_reference

# max |y - ref| <= TOL * max |ref|, and an SQNR floor in dB (the reference is float64 on the same rounded x)
TOL = {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}
SQNR = {torch.float32: 90.0, torch.float16: 50.0, torch.bfloat16: 35.0}


def make(rng, n, k, bits, block, sym, device, method="rtn"):
    cfg = QuantConfig(bits=bits, block_size=block, symmetric=sym, method=method)
    return quantize_weight(torch.randn(n, k, generator=rng), cfg).compute_layout().to(device)


def check(y, x, cw, bias):
    ref = linear_reference(x.double(), cw.to(x.device), None if bias is None else bias.double(), torch.float64)
    assert y.dtype == x.dtype and y.shape == ref.shape
    y, ref = y.double().cpu(), ref.cpu()
    err = (y - ref).abs().max().item()
    assert err <= TOL[x.dtype] * ref.abs().max().item(), f"max err {err}"
    sqnr = 20 * math.log10(ref.norm() / max((y - ref).norm().item(), 1e-30))
    assert sqnr >= SQNR[x.dtype], f"SQNR {sqnr:.1f} dB"


def use_autotuner(monkeypatch, device, kernel_module: str, tuned_name: str):
    """Take the GPU default path (autotuning) of lowbit.kernels.<kernel_module>; returns its autotuner.

    In the interpreter, configs are 'timed' by a stub that runs each once and ranks the last one fastest, so
    pruning, heuristics and workspace resets all run for real."""
    import lowbit.kernels.triton_common as common

    mod = importlib.import_module(f"lowbit.kernels.{kernel_module}")
    tuned = getattr(mod, tuned_name)
    for owner in (common, mod):  # `launch` reads triton_common's; a launcher may read its own import
        if hasattr(owner, "autotuning"):
            monkeypatch.setattr(owner, "autotuning", lambda: True)
    monkeypatch.setattr(tuned, "cache", {})
    if device == "cpu":
        calls = []

        def stub_bench(kernel_call, quantiles):
            kernel_call()
            calls.append(1)
            return [-float(len(calls))] * len(quantiles)

        monkeypatch.setitem(tuned.__dict__, "do_bench", stub_bench)
    return tuned


def triton_device(kernel) -> str:
    """Where a forced kernel's layer test runs: Triton kernels on CUDA (or CPU tensors in the interpreter; skipped
    when neither is there), every other kernel on the CPU."""
    import pytest

    from lowbit.kernels.triton_common import available_triton, interpreting

    if not kernel.value.startswith("triton"):
        return "cpu"
    if not available_triton():
        pytest.skip("Triton kernels need CUDA or TRITON_INTERPRET=1")
    return "cpu" if interpreting() else "cuda"
