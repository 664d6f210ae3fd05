"""Kernel -> the lowbit.kernels functions that prepare a weight (once) and run it (every call).

`kernel_module` is how the runtime imports lowbit.kernels (here, and in `capabilities()`), always at call time: a
kernel family that is missing (not built, not installed) simply reports itself unavailable in `capabilities()` and
is never dispatched to. (`probes` runs `lowbit.kernels.torch_ops` in its child processes.)
"""

from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F

from ..quant.format import QuantizedWeight
from .capabilities import cpu_identity
from .dispatch import Kernel
from .probes import ProbeReport, torch_op_report

_TRITON = (Kernel.TRITON_GEMV, Kernel.TRITON_GEMM, Kernel.TRITON_A8W)


def kernel_module(name: str):
    """lowbit.kernels.<name>, or None while it cannot be imported (a missing family is "not available")."""
    try:
        return importlib.import_module(f"lowbit.kernels.{name}")
    except ImportError:
        return None


def refusals(qw: QuantizedWeight) -> tuple[tuple[Kernel, str], ...]:
    """(kernel, reason) for every present kernel family whose `supports_*` rejects this weight."""
    if getattr(qw, "is_float", False):  # a weight of another format has none: its `supports_*` refuse it by name
        return ()
    out = []
    checks = [("triton_common", "supports_triton", _TRITON),
              ("cpu_int8", "supports_int8_dynamic", (Kernel.CPU_INT8_DYNAMIC,)),
              ("cpu_int8", "supports_int8_weight_only", (Kernel.CPU_INT8_WEIGHT,)),
              ("cpu_int4", "supports_int4_cpu", (Kernel.CPU_INT4,))]
    for mod_name, fn, kernels in checks:
        check = getattr(kernel_module(mod_name), fn, None)
        reason = check(qw) if callable(check) else None
        if reason is not None:
            out.extend((k, str(reason)) for k in kernels)
    return tuple(out)


def _probe() -> ProbeReport:
    """The real machine's probe of torch's CPU ops (never a test's overridden capabilities: it guards crashes)."""
    return torch_op_report(cpu_identity())


def int4_avoid(qw: QuantizedWeight) -> dict[str, str]:
    """{impl: reason} for torch's int4 ops refused at any M for this weight's (N, K) on this CPU."""
    out = {}
    for impl in ("int4pack", "kleidiai"):
        why = next(filter(None, (_probe().refusal(impl, m, qw.n, qw.k) for m in (1, 3, 17))), None)
        if why:
            out[impl] = why
    return out


def prepare(kernel: Kernel, qw: QuantizedWeight, dtype: torch.dtype = torch.float32):
    """The object `run` reads for this kernel, built once per weight (a cache, never saved).

    DENSE: the float weight (N, K) in `dtype`; EMULATED: the ComputeWeight (or the fp16 weight for bits=16);
    Triton: the ComputeWeight; CPU kernels: their own prepared layout.
    """
    if kernel is Kernel.DENSE:
        return qw.dequantize(dtype).reshape(qw.n, qw.k)
    if kernel is Kernel.EMULATED:
        return qw.packed if qw.is_float else qw.compute_layout()
    if kernel in _TRITON:
        return qw.compute_layout()
    if kernel is Kernel.CPU_INT8_DYNAMIC:
        return kernel_module("cpu_int8").prepare_int8_dynamic(qw, refused=_probe().refused_classes("int8_dynamic"))
    if kernel is Kernel.CPU_INT8_WEIGHT:
        return kernel_module("cpu_int8").prepare_int8_dynamic(qw, impl="int8pack",
                                                         refused=_probe().refused_classes("int8pack"))
    if kernel is Kernel.CPU_INT4:
        return kernel_module("cpu_int4").prepare_int4_cpu(qw, avoid=int4_avoid(qw))
    raise ValueError(f"unknown kernel {kernel!r}")


def run(kernel: Kernel, prepared, x: torch.Tensor, bias: torch.Tensor | None = None,
        activations: str | None = None) -> torch.Tensor:
    """y (M, N) = x (M, K) @ W.T + bias with the prepared weight; output dtype = x.dtype.

    activations: the activation scheme the dispatch decision names (`Decision.activations`); CPU_INT4 runs it (the
    other kernels have one scheme each)."""
    if kernel is Kernel.DENSE:
        return F.linear(x, prepared, bias)
    if kernel is Kernel.EMULATED:
        if isinstance(prepared, torch.Tensor):  # float16-stored weight
            return F.linear(x, prepared.to(x.dtype), bias)
        from ..kernels.reference import linear_reference

        return linear_reference(x, prepared, bias, compute_dtype=x.dtype)
    if kernel is Kernel.TRITON_GEMV:
        return kernel_module("triton_gemv").gemv_a16w(x, prepared, bias)
    if kernel is Kernel.TRITON_GEMM:
        return kernel_module("triton_gemm").gemm_a16w(x, prepared, bias)
    if kernel is Kernel.TRITON_A8W:
        return kernel_module("triton_int8").gemm_a8w(x, prepared, bias)
    if kernel in (Kernel.CPU_INT8_DYNAMIC, Kernel.CPU_INT8_WEIGHT):
        return kernel_module("cpu_int8").linear_int8_dynamic(x, prepared, bias)
    if kernel is Kernel.CPU_INT4:
        return kernel_module("cpu_int4").linear_int4_cpu(x, prepared, bias, activations=activations)
    raise ValueError(f"unknown kernel {kernel!r}")

