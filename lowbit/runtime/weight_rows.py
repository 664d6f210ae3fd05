"""The built-in weight-only kernel rows (op "linear", and the native conv as op "conv"): one `KernelRow` per family.

The policy numbers dispatch reads from these rows (GEMV_MAX_M, A8W_MIN_M, the CPU order) live here beside the rows
they shape; `lowbit.runtime.dispatch` holds the rules shared by every row (memory modes, fallbacks, crossovers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import NATIVE_ACTIVATIONS, Precision
from .cpu import cpu_identity
from .kernel_row import Kernel, KernelRow, kernel_module
from .probes import torch_op_report

GEMV_MAX_M = 16  # the split-K GEMV covers 1..16 rows; above it the tiled GEMM wins
A8W_MIN_M = 128  # dynamic int8 activations pay off once the GEMM is compute bound


def _probe():
    """The real machine's probe of torch's CPU ops (never a test's overridden capabilities: it guards crashes)."""
    return torch_op_report(cpu_identity())


def int4_avoid(qw) -> dict[str, str]:
    """{impl: reason} for torch's int4 ops refused at any M for this weight's (N, K) on this CPU."""
    out = {}
    for impl in ("int4pack", "kleidiai"):
        why = next(filter(None, (_probe().refusal(impl, m, qw.n, qw.k) for m in (1, 3, 17))), None)
        if why:
            out[impl] = why
    return out


# --- DENSE and EMULATED: any weight that can dequantize() itself -------------------------------------------------

def _dense_prepare(_mod, qw, dtype):
    return qw.dequantize(dtype).reshape(qw.n, qw.k)


def _dense_run(_mod, w, x, bias, _activations):
    return F.linear(x, w, bias)


def _emulated_prepare(_mod, qw, _dtype):
    if qw.is_float:
        return qw.packed
    return qw.compute_layout() if hasattr(qw, "compute_layout") else qw


def _emulated_run(_mod, w, x, bias, _activations):
    if isinstance(w, torch.Tensor):  # float16-stored weight
        return F.linear(x, w.to(x.dtype), bias)
    if not hasattr(w, "unpack"):  # a weight of another format: its own dequantize, per call
        return F.linear(x, w.dequantize(x.dtype).reshape(w.n, w.k), bias)
    from ..kernels.reference import linear_reference

    return linear_reference(x, w, bias, compute_dtype=x.dtype)


# --- Triton (CUDA) -----------------------------------------------------------------------------------------------

def _triton_supports(mod, qw):
    return mod.supports_triton(qw)


def _triton_available(mod):
    return mod.available_triton()


def _compute_layout(_mod, qw, _dtype):
    return qw.compute_layout()


def _triton(module: str, launcher: str):
    return lambda _mod, w, x, bias, _act: getattr(kernel_module(module), launcher)(x, w, bias)


# --- CPU ---------------------------------------------------------------------------------------------------------

def _cpu_int4_first(fmt, caps) -> int:
    """CPU_INT4 before the 8-bit kernels for <= 4 bits or with the native kernel (its 8-bit container), else after."""
    return 10 if fmt.bits <= 4 or caps.native_extension else 30


def _int4_precision_refusal(caps, backend) -> str | None:
    """Why CPU_INT4 cannot keep this precision: torch's int4 ops round activations (int4pack to bf16, KleidiAI to
    int8 per row), so precision Normal/High needs lowbit's native kernel (or the exact per-call dequant)."""
    if backend.precision not in (Precision.NORMAL, Precision.HIGH):
        return None
    impl = caps.cpu_int4_impl.lower()
    if "native" in impl or "dequant" in impl or not impl:
        return None
    return (f"precision={backend.precision.value} needs {NATIVE_ACTIVATIONS[backend.precision]} activations; "
            f"{caps.cpu_int4_impl} rounds them (lowbit's native kernel is unavailable)")


def _int8_prepare(impl: str, op: str):
    def prepare(mod, qw, _dtype):
        return mod.prepare_int8_dynamic(qw, impl=impl, refused=_probe().refused_classes(op))
    return prepare


def _int8_run(mod, w, x, bias, _activations):
    return mod.linear_int8_dynamic(x, w, bias)


def _int4_prepare(mod, qw, _dtype):
    return mod.prepare_int4_cpu(qw, avoid=int4_avoid(qw))


def _int4_run(mod, w, x, bias, activations):
    return mod.linear_int4_cpu(x, w, bias, activations=activations)


def _int4_bind(mod, w, activations):
    return mod.bind_int4_cpu(w, activations)


def _native_activations(precision):
    return NATIVE_ACTIVATIONS[precision]


# --- conv (a whole conv on the packed weight) --------------------------------------------------------------------

def _conv_supports(mod, qw, groups=1):
    return mod.native_conv_reason(qw, groups)


def _conv_prepare(mod, qw, _dtype, groups=1):
    return mod.prepare_conv(qw, groups)


def _conv_run(mod, w, x, bias, activations, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    return mod.conv2d_native(x, w, bias, stride, padding, dilation, groups, activations=activations)


_TRITON = dict(device="cuda", module="triton_common", supports=_triton_supports, available=_triton_available,
               capability="triton_gpu", prepare=_compute_layout)
_LOW = frozenset({Precision.LOW})

WEIGHT_ROWS = (
    KernelRow(Kernel.DENSE, device="any", formats=None, prepare=_dense_prepare, run=_dense_run,
              doc="the float weight dequantized once (compute dtype) + F.linear; memory Normal, and every fallback"),
    KernelRow(Kernel.EMULATED, device="any", formats=None, prepare=_emulated_prepare, run=_emulated_run,
              doc="dequantize on every call + a float matmul: correct for every format; forced by tests"),
    KernelRow(Kernel.TRITON_GEMV, max_m=GEMV_MAX_M, priority=10, run=_triton("triton_gemv", "gemv_a16w"),
              doc="split-K fused dequant GEMV, M <= GEMV_MAX_M", **_TRITON),
    KernelRow(Kernel.TRITON_A8W, min_m=A8W_MIN_M, precisions=_LOW, priority=20, activations="int8/row",
              int8_activations=True, run=_triton("triton_int8", "gemm_a8w"),
              doc="dynamic int8 activations x int8/int4 weights, precision Low, M >= A8W_MIN_M", **_TRITON),
    KernelRow(Kernel.TRITON_GEMM, priority=30, run=_triton("triton_gemm", "gemm_a16w"),
              doc="tiled fused dequant GEMM (tensor cores)", **_TRITON),
    KernelRow(Kernel.CPU_INT4, priority=_cpu_int4_first, module="cpu_int4",
              supports=lambda mod, qw: mod.supports_int4_cpu(qw), available=lambda mod: mod.available_int4_cpu(),
              capability="cpu_int4", refuse=_int4_precision_refusal, activations=_native_activations,
              int8_activations=True, prepare=_int4_prepare, run=_int4_run, bind=_int4_bind,
              doc="lowbit's packed CPU kernel: 2..8 bits native (activations by precision), else torch int4 ops"),
    KernelRow(Kernel.CPU_INT8_DYNAMIC, precisions=_LOW, priority=20, module="cpu_int8",
              supports=lambda mod, qw: mod.supports_int8_dynamic(qw),
              available=lambda mod: mod.available_int8_dynamic(), capability="cpu_int8_dynamic",
              torch_op="int8_dynamic", activations="int8/tensor", int8_activations=True,
              prepare=_int8_prepare("dynamic", "int8_dynamic"), run=_int8_run,
              doc="torch's dynamic int8 linear (fbgemm / qnnpack), precision Low"),
    KernelRow(Kernel.CPU_INT8_WEIGHT, precisions=frozenset({Precision.LOW, Precision.LOW_BF16}), priority=21,
              module="cpu_int8", supports=lambda mod, qw: mod.supports_int8_weight_only(qw),
              available=lambda mod: mod.available_int8_weight_only(), capability="cpu_int8_weight",
              torch_op="int8pack", activations="bf16", prepare=_int8_prepare("int8pack", "int8pack"), run=_int8_run,
              doc="torch's weight-only int8 matmul, bf16 activations, precision Low / Low_BF16"),
    KernelRow(Kernel.CPU_INT4, op="conv", module="cpu_conv", supports=_conv_supports, capability="native_extension",
              int8_activations=True, prepare=_conv_prepare, run=_conv_run,
              doc="lowbit's native conv: im2col fused with int8 activation quantization + the native GEMM; depthwise "
                  "direct (lowbit.kernels.cpu_conv)"),
)
