"""Kernel -> its row's prepare (once per weight) and run (every call), read from the kernel table.

`kernel_module` (lowbit.runtime.kernel_row) is how the runtime imports lowbit.kernels, always at call time: a kernel
family that is missing (not built, not installed) simply reports itself unavailable in `capabilities()` and is never
dispatched to. (`probes` runs `lowbit.kernels.torch_ops` in its child processes.)
"""

from __future__ import annotations

import functools
import math

import torch

from .kernel_row import Kernel, kernel_module
from .kernel_table import kernel_rows, row_for
from .weight_rows import int4_avoid

__all__ = ["binder", "int4_avoid", "kernel_module", "prepare", "refusals", "run", "run_finite", "runner"]


def refusals(qw, op: str = "linear", **options) -> tuple[tuple[Kernel, str], ...]:
    """(kernel, reason) for every row of `op` that cannot serve this weight (its format or its `supports_*`)."""
    if getattr(qw, "is_float", False):  # a weight of another format has none: its rows refuse it by format
        return ()
    out = []
    for row in kernel_rows(op):
        reason = row.refusal(qw, **options)
        if reason is not None:
            out.append((row.kernel, reason))
    return tuple(out)


def prepare(kernel, qw, dtype: torch.dtype = torch.float32, op: str = "linear", **options):
    """The object `run` reads for this kernel, built once per weight (a cache, never saved).

    DENSE: the float weight (N, K) in `dtype`; EMULATED: the ComputeWeight (or the fp16 weight for bits=16; a weight
    of another format: itself); Triton: the ComputeWeight; CPU kernels: their own prepared layout.
    """
    row = row_for(op, kernel)
    return row.prepare(row.load(), qw, dtype, **options)


def run(kernel, prepared, x: torch.Tensor, bias: torch.Tensor | None = None, activations: str | None = None,
        op: str = "linear", **options) -> torch.Tensor:
    """y (M, N) = x (M, K) @ W.T + bias with the prepared weight; output dtype = x.dtype (static rows: float32).

    activations: the activation scheme the dispatch decision names (`Decision.activations`); CPU_INT4 runs it (the
    other kernels have one scheme each)."""
    row = row_for(op, kernel)
    return row.run(row.load(), prepared, x, bias, activations, **options)


def runner(kernel, op: str = "linear"):
    """`run` of one kernel with its module bound, for a hot path to keep: `(prepared, x, bias, activations,
    **options) -> y`."""
    row = row_for(op, kernel)
    return functools.partial(row.run, row.load())


def binder(kernel, prepared, activations: str | None = None, op: str = "linear"):
    """(call, finite_check) for a hot path to keep, or None: the row's `bind` of this prepared weight (a call
    `(x_ptr, m, y_ptr, bias_ptr, num_threads)` with `max_m`, bit-identical to `run`, checking nothing; see
    `KernelRow`), and whether the caller must send inputs holding NaN or inf to `run_finite` instead (the row's
    `int8_activations`)."""
    row = row_for(op, kernel)
    call = None if row.bind is None else row.bind(row.load(), prepared, activations)
    return None if call is None else (call, row.int8_activations)


def run_finite(kernel, w, a: torch.Tensor, bias: torch.Tensor | None, activations: str | None = None,
               op: str = "linear") -> torch.Tensor:
    """`run(a (M, K)) -> (M, N)`, where a row of `a` holding a NaN or an inf comes out NaN at every kernel.

    Only kernels that round activations to int8 (`KernelRow.int8_activations`) need help. On the CPU one fp32 sum
    over `a` (one read of M*K values, no allocation: measured 2 us at (1, 384), 4 us at (128, 384), 12 us at
    (128, 1536), 0.5-3% of the int4 kernel's time there) finds the usual all-finite case, which then runs as before;
    a sum that is not finite (also a finite input whose sum overflows fp32) takes the masked form. On a GPU that
    test would wait for the device (and break CUDA graph capture), so the masked form always runs there.
    """
    row = row_for(op, kernel)
    if not row.int8_activations or (a.device.type == "cpu" and math.isfinite(a.sum(dtype=torch.float32).item())):
        return row.run(row.load(), w, a, bias, activations)
    return _run_masked(kernel, w, a, bias, activations, op)


def _run_masked(kernel, w, a: torch.Tensor, bias: torch.Tensor | None, activations: str | None,
                op: str) -> torch.Tensor:
    """The kernel on `a` with its non-finite entries zeroed, then NaN on the rows that held one (no host sync).

    A float layer gives NaN or +-inf on such a row (every output of it is non-finite: inf * w is +-inf, or NaN
    where w == 0); without the float weight the sign is unknown, so NaN is the one answer that never hides it.
    """
    finite = torch.isfinite(a)
    y = run(kernel, w, a.where(finite, 0.0), bias, activations, op)
    rows_ok = finite.all(dim=1, keepdim=True)  # (M, 1)
    return y.where(rows_ok, float("nan"))
