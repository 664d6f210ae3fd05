"""How `lowbit::conv2d` computes once dispatch has chosen: the conv rows of the runtime (`dispatch.select_conv`).

- DENSE / EMULATED: F.conv2d on the float weight (cached once / dequantized per call).
- CPU_INT4 served by the native conv kernel (lowbit.kernels.cpu_conv): depthwise direct or im2col-quant + GEMM, the
  prepared weight built once per layer. An input holding a NaN or an inf takes F.conv2d on the dequantized weight
  for that call, so non-finite values propagate as in the float layer (int8 activations cannot carry them).
- Any other packed kernel, groups == 1: im2col (F.unfold) + the Linear kernel in one call.
- A forced kernel (tests, benchmarks) on a grouped conv that the native kernel does not serve: one Linear call per
  group. Dispatch never picks this (it takes a float copy of the layer instead).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..kernels import cpu_conv
from ..quant.format import QuantizedWeight
from ..runtime.dispatch import Decision, Kernel, WeightFormat, select_conv
from .weight_cache import backend, forcing, prepared


def conv_decision(decision: Decision, qw: QuantizedWeight, entry, device_type: str, groups: int, memory: str,
                  precision: str) -> Decision:
    """The conv's decision from the Linear dispatch's (`dispatch.select_conv`), cached per weight and decision."""
    if forcing():
        return decision
    key = ("conv", decision, device_type, groups, memory, precision)
    if key not in entry.decisions:
        o, ig, kh, kw = qw.shape
        fmt = WeightFormat(qw.bits, qw.group_size, qw.symmetric, o // groups, ig * kh * kw, entry.refused)
        refusal = cpu_conv.native_conv_reason(qw, groups) if device_type == "cpu" else "not on the CPU"
        depthwise = cpu_conv.conv_kind(qw.shape, groups) == "depthwise"
        entry.decisions[key] = select_conv(decision, device_type, fmt, groups, depthwise, refusal,
                                           backend(memory, precision))
    return entry.decisions[key]


def _native(entry, qw: QuantizedWeight, groups: int):
    """The native conv's prepared weight, built once per layer (kept in the weight's cache)."""
    key = (Kernel.CPU_INT4, "conv", groups)
    if key not in entry.prepared:
        entry.prepared[key] = cpu_conv.prepare_conv(qw, groups)
    return entry.prepared[key]


def run_conv(x: torch.Tensor, qw: QuantizedWeight, entry, kernel: Kernel, dtype: torch.dtype, bias, stride, padding,
             dilation, groups: int) -> torch.Tensor:
    """F.conv2d(x (B, C, H, W), W, bias) in `dtype` with `kernel`; returns (B, O, OH, OW) in `dtype`, contiguous."""
    shape = list(qw.shape)
    xc = x.to(dtype)
    if kernel in (Kernel.DENSE, Kernel.EMULATED):
        w = prepared(entry, kernel, qw, dtype).reshape(shape) if kernel is Kernel.DENSE \
            else qw.dequantize(dtype)
        return F.conv2d(xc, w, bias, stride, padding, dilation, groups)
    if kernel is Kernel.CPU_INT4 and x.device.type == "cpu" and cpu_conv.native_conv_reason(qw, groups) is None:
        if not math.isfinite(x.sum(dtype=torch.float32).item()):
            return F.conv2d(xc, qw.dequantize(dtype), bias, stride, padding, dilation, groups)
        y = cpu_conv.conv2d_native(xc, _native(entry, qw, groups), shape, bias, stride, padding, dilation, groups)
        return y.to(dtype)
    return _im2col_linear(xc, qw, entry, kernel, dtype, bias, stride, padding, dilation, groups)


def _im2col_linear(xc, qw, entry, kernel, dtype, bias, stride, padding, dilation, groups):
    """im2col + the Linear kernel: once for groups == 1, once per group only under a forced kernel."""
    from .ops import _run  # the Linear op's non-finite handling; imported here, ops imports this module

    o, _, kh, kw = qw.shape
    cols = F.unfold(xc, (kh, kw), dilation=dilation, padding=padding, stride=stride)  # (B, C*kh*kw, L)
    batch, length = cols.shape[0], cols.shape[2]
    cols = cols.view(batch, groups, qw.k, length)  # (B, g, K, L): unfold orders channels (C, kh, kw) like W
    og = o // groups
    outs = []
    for g in range(groups):
        rows = slice(g * og, (g + 1) * og) if groups > 1 else None
        w = prepared(entry, kernel, qw, dtype, rows=rows)
        a = cols[:, g].transpose(1, 2).reshape(batch * length, qw.k)  # (B*L, K)
        outs.append(_run(kernel, w, a.contiguous(), bias[rows] if bias is not None and rows else bias))
    y = torch.cat(outs, dim=1) if groups > 1 else outs[0]
    oh = (xc.shape[2] + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    return y.view(batch, length, o).transpose(1, 2).reshape(batch, o, oh, -1)
