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

import functools

import torch
import torch.nn.functional as F

from ..quant.format import QuantizedWeight
from ..runtime import executor
from ..runtime.dispatch import Decision, Kernel, WeightFormat, select_conv
from ..runtime.kernel_table import row_for
from .identity import version_of as _version
from .weight_cache import (
    backend,
    choose,
    compute_view,
    current_capabilities,
    entry_for,
    forcing,
    fresh_entry,
    m_bucket,
    prepared,
    stamp,
)


def conv_plan(device_type: str, m: int, packed, scale, zero, shape, bits: int, block_size: int, groups: int,
              memory: str, precision: str, stride: int = 1, plane: int | None = None):
    """(decision, compute dtype, prepared weight) for a conv call with M output pixels; the prepared weight is the
    float (O, C/groups, kh, kw) copy for DENSE, the native conv's layout for CPU_INT4 on the CPU, else the
    QuantizedWeight view (EMULATED, im2col + a Linear kernel). stride, plane: the largest stride and OH * OW, what
    the depthwise rule of `dispatch.select_conv` reads.

    The hot path is the Linear op's: one fresh-entry check and one dict lookup (the per-layer overhead is what keeps
    memory Normal within a few percent of fp32 on nets of many small convs). Nothing kept holds `packed` itself
    (the cache is keyed weakly by it).
    """
    entry = fresh_entry(packed, scale, zero)
    key = ("conv", device_type, m_bucket(m), memory, precision, groups, stride, plane)
    if not forcing() and entry is not None and key in entry.plans:
        return entry.plans[key]
    qw = compute_view(packed, scale, zero, shape, bits, block_size)
    entry = entry_for(qw)
    decision, dtype = choose(qw, entry, device_type, m, memory, precision, shape[0] // groups)
    decision = conv_decision(decision, qw, entry, device_type, groups, memory, precision, stride, plane)
    kernel = decision.kernel
    if kernel is Kernel.DENSE:
        plan = (decision, dtype, prepared(entry, kernel, qw, dtype).reshape(shape))
    elif kernel is Kernel.CPU_INT4 and decision.activations != "fp32" and _native_serves(device_type, qw, groups):
        # the native conv rounds activations to int8; precision High takes im2col + the Linear kernel's fp32 path
        plan = (decision, dtype, _native(entry, qw, groups))
    else:
        return decision, dtype, (qw, entry)  # per call: these paths read the packed buffers
    if not forcing():
        entry.plans[key] = plan
    return plan


def _native_serves(device_type: str, qw: QuantizedWeight, groups: int) -> bool:
    return _native_refusal(device_type, qw, groups) is None


def _native_refusal(device_type: str, qw: QuantizedWeight, groups: int) -> str | None:
    """Why the native conv row (op "conv" of the kernel table) cannot serve this conv, or None."""
    if device_type != "cpu":
        return "not on the CPU"
    row = row_for("conv", Kernel.CPU_INT4)
    if row.load() is None:  # at call time: importing lowbit.nn loads no kernel family
        return f"lowbit.kernels.{row.module} is missing"
    return row.refusal(qw, groups=groups)


def conv_decision(decision: Decision, qw: QuantizedWeight, entry, device_type: str, groups: int, memory: str,
                  precision: str, stride: int = 1, plane: int | None = None) -> Decision:
    """The conv's decision from the Linear dispatch's (`dispatch.select_conv`), cached per weight and decision."""
    if forcing():
        return decision
    key = ("conv", decision, device_type, groups, memory, precision, stride, plane)
    if key not in entry.decisions:
        o, ig, kh, kw = qw.shape
        fmt = WeightFormat(qw.bits, qw.group_size, qw.symmetric, o // groups, ig * kh * kw, entry.refused)
        refusal = _native_refusal(device_type, qw, groups)
        depthwise = ig == 1 and groups > 1
        entry.decisions[key] = select_conv(decision, device_type, fmt, groups, depthwise, refusal,
                                           backend(memory, precision), stride, plane,
                                           current_capabilities().native_variant, kh * kw)
    return entry.decisions[key]


def _native(entry, qw: QuantizedWeight, groups: int):
    """The native conv's prepared weight, built once per layer (kept in the weight's cache)."""
    return prepared(entry, Kernel.CPU_INT4, qw, None, op="conv", groups=groups)


def run_conv(x: torch.Tensor, kernel: Kernel, dtype: torch.dtype, prep, bias, stride, padding, dilation,
             groups: int, activations: str | None = None) -> torch.Tensor:
    """F.conv2d(x (B, C, H, W), W, bias) in `dtype` with `kernel` and its prepared weight from `conv_plan`, the packed
    kernels rounding activations as `activations` (Decision.activations) says; returns (B, O, OH, OW) in `dtype`."""
    xc = x.to(dtype)
    if kernel is Kernel.DENSE:
        return F.conv2d(xc, prep, bias, stride, padding, dilation, groups)
    if not isinstance(prep, tuple):  # the native conv's prepared weight (NaN / inf handled there)
        return executor.run(Kernel.CPU_INT4, prep, xc, bias, activations, "conv", stride=stride, padding=padding,
                            dilation=dilation, groups=groups).to(dtype)
    qw, entry = prep
    if kernel is Kernel.EMULATED:
        return F.conv2d(xc, qw.dequantize(dtype), bias, stride, padding, dilation, groups)
    return _im2col_linear(xc, qw, entry, kernel, dtype, bias, stride, padding, dilation, groups, activations)


def _im2col_linear(xc, qw, entry, kernel, dtype, bias, stride, padding, dilation, groups, activations=None):
    """im2col + the Linear kernel: once for groups == 1, once per group only under a forced kernel."""
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
        b = bias[rows] if bias is not None and rows else bias
        outs.append(executor.run_finite(kernel, w, a.contiguous(), b, activations))
    y = torch.cat(outs, dim=1) if groups > 1 else outs[0]
    oh = (xc.shape[2] + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    return y.view(batch, length, o).transpose(1, 2).reshape(batch, o, oh, -1)


def bound_conv(x: torch.Tensor, packed, scale, zero, bias, shape, bits: int, block_size: int, stride, padding,
               dilation, groups: int, memory: str, precision: str):
    """`call(x') -> y` computing exactly what `lowbit::conv2d` computes for an x' of x's shape, dtype and device with
    these buffers (the plan chosen once, its kernel and arguments bound), valid while `bound_key` of the same buffers
    stays as it was when bound; None where the op has no bound form (a forced kernel, a dtype conversion, a path that
    reads the packed buffers per call). The layer's hot path: the op costs ~10 us of Python per call on top of
    its kernel, the bound call ~1 us."""
    if forcing() or x.dim() != 4:
        return None
    oh = (x.shape[2] + 2 * padding[0] - dilation[0] * (shape[2] - 1) - 1) // stride[0] + 1
    ow = (x.shape[3] + 2 * padding[1] - dilation[1] * (shape[3] - 1) - 1) // stride[1] + 1
    decision, dtype, prep = conv_plan(x.device.type, x.shape[0] * oh * ow, packed, scale, zero, shape, bits,
                                      block_size, groups, memory, precision, max(stride), oh * ow)
    if dtype != x.dtype or (bias is not None and bias.dtype != dtype):
        return None
    geometry = {"stride": list(stride), "padding": list(padding), "dilation": list(dilation), "groups": groups}
    if decision.kernel is Kernel.DENSE:
        conv = conv2d_call(prep, bias, stride, padding, dilation, groups)
        call = lambda xb: conv(xb).contiguous()  # noqa: E731  (the op's output layout)
    elif decision.kernel is Kernel.CPU_INT4 and not isinstance(prep, tuple):
        call = functools.partial(executor.runner(Kernel.CPU_INT4, "conv"), prep, bias=bias,
                                 activations=decision.activations, **geometry)
    else:
        return None
    return call


def conv2d_call(weight: torch.Tensor, bias, stride, padding, dilation, groups: int):
    """`call(x) = F.conv2d(x, weight, bias, stride, padding, dilation, groups)` with the arguments bound positionally
    as tuples (torch parses keyword arguments ~0.7 us slower per call)."""
    conv2d, st, pd, dl = F.conv2d, tuple(stride), tuple(padding), tuple(dilation)
    return lambda x: conv2d(x, weight, bias, st, pd, dl, groups)


def bound_key(x: torch.Tensor, packed, scale, zero, bias) -> tuple:
    """What a bound call depends on besides its layer's geometry and modes: x's shape, dtype and device, the weight's
    cache stamp (its buffers replaced, edited in place or moved, the kernel table changed) and the bias. packed: the
    packed buffer, or memory Normal's float copy where that released the codes."""
    return (x.shape, x.dtype, x.device, id(packed), None if packed is None else stamp(packed, scale, zero), id(bias),
            None if bias is None else _version(bias))


