"""One row of the runtime's kernel table: what a kernel family serves, how it is probed, prepared and called.

`Kernel` names the built-in weight-only families (what `Decision.kernel` holds); a family registered from outside
(`kernel_table.register_kernel`) is named by a plain string instead. `kernel_module(name)` is how the runtime
imports `lowbit.kernels`, always at call time: a family whose module is missing (not built, not installed) reports
itself unavailable in `capabilities()` and is never dispatched to. This module imports nothing of lowbit.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

AFFINE = "affine"  # the one packed format today: w = (q - zero) * scale (lowbit.quant.format.QuantizedWeight)


class Kernel(str, Enum):
    """A compute path for one quantized weight."""

    DENSE = "dense"
    """Dequantized float weight (built once, cached) + F.linear / F.conv."""
    EMULATED = "emulated"
    """Emulated: dequantize on every call, then a float matmul; correct for every format, slow, packed in memory."""
    TRITON_GEMV = "triton_gemv"
    """Triton split-K fused dequant GEMV for small M (lowbit.kernels.triton_gemv.gemv_a16w)."""
    TRITON_GEMM = "triton_gemm"
    """Triton tiled fused dequant GEMM for large M (lowbit.kernels.triton_gemm.gemm_a16w)."""
    TRITON_A8W = "triton_a8w"
    """Triton dynamic int8 activations x int8/int4 weights (lowbit.kernels.triton_int8.gemm_a8w)."""
    CPU_INT8_DYNAMIC = "cpu_int8_dynamic"
    """torch dynamic int8 linear, fbgemm/qnnpack (lowbit.kernels.cpu_int8)."""
    CPU_INT8_WEIGHT = "cpu_int8_weight"
    """torch weight-only int8 matmul with bf16 activations (lowbit.kernels.cpu_int8, impl "int8pack")."""
    CPU_INT4 = "cpu_int4"
    """lowbit's packed CPU kernel (lowbit.kernels.cpu_int4): 2..4 bits (fastest implementation here) and, through the
    native kernel's 8-bit container, 5..8 bits."""


class StaticKernel(str, Enum):
    """A compute path for a static W8A8 product (lowbit.nn.static): int8 activations at a fixed step."""

    TRITON = "triton"
    """Triton int8 GEMM fed with the static step (lowbit.kernels.triton_int8.gemm_a8w_static), CUDA."""
    NATIVE = "native"
    """lowbit's native static kernel (lowbit.kernels.cpu_static_int8: quantize, int8 GEMM, epilogue), CPU."""
    INT_MM = "int_mm"
    """torch._int_mm where this machine's probe found it exact for the shape class, CPU."""
    EMULATED = "emulated"
    """The same integers through a float64 matmul: exact, slow; the fallback on every device."""
    DEPTHWISE = "depthwise"
    """lowbit's direct depthwise conv (lowbit.kernels.cpu_conv.conv2d_depthwise) on the rounded input, CPU."""
    FLOAT_CONV = "float_conv"
    """A float copy of the conv (the dequantized weight through F.conv2d, input not rounded), CPU: where torch's fp32
    conv beats the int8 kernels (depthwise on small planes, a 3-channel stem, a 1x1 on one pixel)."""
    POINTWISE = "pointwise"
    """lowbit's 1x1 conv on NCHW (lowbit.kernels.cpu_static_int8.native_conv1x1_static): no im2col, no transpose,
    CPU."""
    NHWC_DEPTHWISE = "nhwc_depthwise"
    """lowbit's depthwise conv on channels-last images (lowbit.kernels.cpu_static_nhwc.conv_dw_nhwc), CPU."""
    NHWC_GEMM = "nhwc_gemm"
    """lowbit's groups=1 conv on channels-last images: the static GEMM on the pixels as rows (1x1) or on columns
    built from the channels-last codes (lowbit.kernels.cpu_static_nhwc.conv_gemm_nhwc), CPU."""


_MODULES: dict = {}  # kernel_module's imports: it is called on every kernel call (executor.run)


def kernel_module(name: str):
    """The module a kernel row runs from: `lowbit.kernels.<name>` for a bare name, a dotted name as given (a
    family registered from outside lowbit); None while it cannot be imported (a missing family is "not available")."""
    mod = _MODULES.get(name)
    if mod is None:
        try:
            mod = importlib.import_module(name if "." in name else f"lowbit.kernels.{name}")
        except ImportError:
            return None
        _MODULES[name] = mod
    return mod


def format_name(qw) -> str:
    """The packed format a weight is stored in (its `format` name where it carries one, else "affine")."""
    name = getattr(qw, "format", AFFINE)
    return name if isinstance(name, str) else getattr(name, "name", AFFINE)


def _none(*_args, **_kwargs):
    return None


@dataclass(frozen=True)
class KernelRow:
    """One kernel family as dispatch, capabilities() and the executor see it.

    Identity: `kernel` (a `Kernel` / `StaticKernel` member, or a plain string for a registered family) within `op`:
    "linear" (weight-only y = x @ W.T + b: the `lowbit::linear` op, and conv's im2col), "conv" (a whole conv on the
    packed weight), "static" (static W8A8 linear), "static_conv" (static W8A8 conv). `doc` says what it is.
    What it serves: `device` ("cpu", "cuda"; "any" for the format-neutral DENSE/EMULATED rows, never dispatched by
    device), `formats` (packed formats it reads, "affine" today; None: any weight that can `dequantize()` itself),
    `precisions` (the Precision members it may serve at memory Low; None: all), `min_m` / `max_m` (activation
    rows), `supports(module, qw, **options) -> str | None` (the family's `supports_*`: None = it can serve this
    weight, else why not; checked once per weight).
    Order: `priority` (lower is tried first; an int, or `(fmt, caps) -> int` when it depends on the weight).
    Probe: `available(module) -> bool` (the family's `available_*`, run by `capabilities()`), `capability` (the
    Capabilities field holding that answer for the built-in rows, or `(caps) -> bool`; None: the row is available
    where `Capabilities.kernels` lists its `label`), `torch_op` (the torch op lowbit.runtime.probes checks per
    shape class: a refused class skips the row), `refuse(caps, backend) -> str | None` (a further reason to skip
    it, e.g. a precision it cannot keep).
    Activations: `activations` (the scheme it runs: a string, or `(precision) -> str | None`; None = the compute dtype
    as it is) and `int8_activations` (it rounds activations to int8, so NaN/inf rows need the executor's help).
    Calls: `module` (the module handed to each callable: a bare name is `lowbit.kernels.<name>`, a dotted name
    any importable module, checked when registered; None: none), `layout` (rows naming the
    same layout share one prepared weight; None: the row's own), `prepare(module, qw, dtype, **options)` (the
    kernel's weight, built once per weight and kept in nn's weight cache) and `run(module, prepared, x, bias,
    activations, **options)` (y = x @ W.T + bias, output dtype = x.dtype; static rows return float32).
    Fast path (optional): `bind(module, prepared, activations)` -> a call `(x_ptr, m, y_ptr, bias_ptr, num_threads)`
    with `max_m` that writes y (m, N) fp32 for fp32 contiguous x (m, K) and an fp32 bias (N,) or None, bit-identical
    to `run` and checking nothing (nn's bound layer calls, `executor.binder`), or None where this prepared weight
    has no such call.
    """

    kernel: Any
    op: str = "linear"
    device: str = "cpu"
    formats: tuple[str, ...] | None = (AFFINE,)
    precisions: frozenset | None = None
    min_m: int = 1
    max_m: int | None = None
    supports: Callable | None = None
    priority: int | Callable = 50
    available: Callable | None = None
    capability: str | Callable | None = None
    torch_op: str | None = None
    refuse: Callable = _none
    activations: str | Callable | None = None
    int8_activations: bool = False
    module: str | None = None
    layout: str | None = None
    prepare: Callable | None = None
    run: Callable | None = None
    bind: Callable | None = None
    doc: str = ""

    @property
    def name(self) -> str:
        """The kernel's name (the Enum value for built-in rows)."""
        return getattr(self.kernel, "value", self.kernel)

    @property
    def label(self) -> str:
        """How `Capabilities.kernels` lists this row: the name for op "linear", else "op:name"."""
        return self.name if self.op == "linear" else f"{self.op}:{self.name}"

    def order(self, fmt, caps) -> int:
        """This row's place among its device's rows for this weight (lower first)."""
        return self.priority(fmt, caps) if callable(self.priority) else self.priority

    def wants(self, m: int, precision) -> bool:
        """True when dispatch may try this row at M rows and this precision."""
        return (self.precisions is None or precision in self.precisions) and m >= self.min_m \
            and (self.max_m is None or m <= self.max_m)

    def available_in(self, caps) -> bool:
        """What `capabilities()` found for this row (a pure read of `caps`)."""
        if callable(self.capability):
            return bool(self.capability(caps))
        if self.capability is not None:
            return bool(getattr(caps, self.capability))
        return self.label in caps.kernels

    def activation_scheme(self, precision) -> str | None:
        """The activation scheme this row runs at `precision` (Decision.activations)."""
        return self.activations(precision) if callable(self.activations) else self.activations

    def load(self):
        """This row's lowbit.kernels module (imported now), or None when it has none or it cannot be imported."""
        return None if self.module is None else kernel_module(self.module)

    def probe(self) -> bool:
        """Run the family's `available_*` (False when its module cannot be imported)."""
        mod = self.load()
        if self.module is not None and mod is None:
            return False
        return True if self.available is None else bool(self.available(mod))

    def refusal(self, qw, **options) -> str | None:
        """Why this row cannot serve the weight (format, then the family's `supports_*` given `options`, e.g. a
        conv's groups), or None."""
        fmt = format_name(qw)
        if self.formats is not None and fmt not in self.formats:
            return f"reads {', '.join(self.formats)} weights, not {fmt}"
        if self.supports is None:
            return None
        mod = self.load()
        if self.module is not None and mod is None:
            return None  # a missing family is "not available", never dispatched to
        reason = self.supports(mod, qw, **options)
        return None if reason is None else str(reason)
