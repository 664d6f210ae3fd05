"""Shared helpers of the Triton kernel tests: weights in compute layout and the float64 reference check."""

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
