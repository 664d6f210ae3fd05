"""The one place a kernel is chosen: `select_kernel(device_type, m, fmt, caps, backend) -> Decision`.

The rules below are shared by every row; the per-family part (devices, M ranges, precisions, order, probes, the
refusals) is read from the "linear" rows of the kernel table (lowbit.runtime.kernel_table), so a registered family
takes part at memory Low/High on its device by priority. The built-in rows give this table (M = rows of the
activation; "refused" = the kernel family's `supports_*` named a reason for this weight):

| memory | device | condition                                      | kernel            |
|--------|--------|------------------------------------------------|-------------------|
| any    | any    | bits == 16 (float16 storage), memory Normal/High | DENSE             |
| Low    | any    | bits == 16                                     | EMULATED (no fallback: nothing is lost) |
| Normal | any    | -                                              | DENSE             |
| High   | any    | M >= high_dense_min_m (None: never)            | DENSE (cached float copy), note says why |
| High   | any    | otherwise                                      | as Low            |
| Low    | cuda   | triton_gpu, M <= GEMV_MAX_M                    | TRITON_GEMV       |
| Low    | cuda   | triton_gpu, precision Low, M >= A8W_MIN_M      | TRITON_A8W        |
| Low    | cuda   | triton_gpu, otherwise                          | TRITON_GEMM       |
| Low    | cpu    | CPU_INT4, then the 8-bit kernels (bits 5..8     | first available,  |
|        |        | without the native kernel: the 8-bit kernels   | not refused       |
|        |        | first; CPU_INT4 refuses them without it);      |                   |
|        |        | 8-bit kernels: precision Low: CPU_INT8_DYNAMIC, |                   |
|        |        | CPU_INT8_WEIGHT; Low_BF16: CPU_INT8_WEIGHT;     |                   |
|        |        | Normal/High: none (they round activations)      |                   |
|        |        | a torch op refused for this (M, N, K) class by  | skipped           |
|        |        | the probe (Capabilities.torch_op_refusals)      |                   |
| Low    | any    | none of the above                              | DENSE + fallback reason |

CPU_INT8_DYNAMIC quantizes activations to int8 per tensor (torch's dynamic linear), so it needs precision Low;
CPU_INT8_WEIGHT (weight-only int8 matmul) rounds activations to bf16, so it needs precision Low or Low_BF16 (at
precision Normal it costs MiniLM's int8 lowest cosine 0.9996 -> 0.9983, and torch's fp32 variant is 30x slower).
A request no packed kernel can serve falls back as MNN does without its low-memory build: weights dequantized
once (DENSE), correct and fast, with one warning saying memory Low was not honoured. CPU_INT4
(lowbit's native kernel: 2..4-bit codes in a 4-bit container, 5..8-bit codes in an 8-bit one, per channel or in
blocks that are multiples of 32) serves every precision with the activation scheme the precision names
(NATIVE_ACTIVATIONS, in Decision.activations): High fp32 (exact up to fp32 summation), Normal int8 with a scale per
32 input channels, Low / Low_BF16 int8 per row (~41 dB), so with the native kernel built no 2..8-bit weight falls
back to DENSE on the CPU. Without it (torch's int4pack or KleidiAI serving CPU_INT4, which round activations to bf16
or int8 per row) CPU_INT4 is refused at precision Normal/High. At precision Low the 5..8-bit per-channel
weights go to the native kernel too, no longer to torch's dynamic int8 first: its one scale per tensor took MiniLM
int8 per channel to a lowest cosine of -0.05 (0.9996 in fp32; faster at M >= 32, benchmarks/results/gemm_cpu*, but no
use). torch's dynamic int8 stays the 8-bit kernel where the native one is not built.
A refused Triton kernel falls through to the next Triton kernel (A8W -> GEMM; GEMV -> GEMM) before DENSE.
EMULATED (dequantize on every call) is never chosen for integer weights; tests and benchmarks force it.
Memory High's crossover is HIGH_DENSE_MIN_M except on the CPU with the native kernel, where NATIVE_HIGH_DENSE_MIN_M
holds what was measured: the fp32 copy never beats the VNNI kernel (M = 32..512) except for 8-bit blocks of 32; a
bf16 copy (precision Low) does from M = 32.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from .config import BackendConfig, Memory, Precision
from .kernel_row import AFFINE, Kernel, KernelRow, format_name
from .kernel_table import find_row, kernel_rows
from .weight_rows import A8W_MIN_M, GEMV_MAX_M

if TYPE_CHECKING:
    from .capabilities import Capabilities

__all__ = ["A8W_MIN_M", "GEMV_MAX_M", "Decision", "Kernel", "WeightFormat", "select_kernel", "warn_fallback"]
HIGH_DENSE_MIN_M = 32  # memory High without a measured table: from this M on, the cached float weight wins
# memory High with the native CPU kernel: (compute dtype, container bits, block class) -> the M from which the float
# copy is faster (None: never, at the M = 32..512 measured); 1 thread on EPYC Zen 4 (AVX-512 VNNI) at 4096x4096 and
# MiniLM's 384x1536 / 1536x384, the class's worst shape deciding (benchmarks/results/gemm_cpu_high_crossover_impls.md).
# fp32: the kernel was 1.07-3.5x faster everywhere but 8-bit blocks of 32 at 384x1536 (0.86x); bf16 (precision Low):
# the copy was faster from M = 32 in every class on at least one shape.
_VNNI_CROSSOVER = {
    ("fp32", 4, "g32"): None, ("fp32", 4, "g64"): None, ("fp32", 4, "g128+"): None, ("fp32", 4, "pc"): None,
    ("fp32", 8, "g32"): 32, ("fp32", 8, "g64"): None, ("fp32", 8, "g128+"): None, ("fp32", 8, "pc"): None,
    **{("bf16", bits, group): 32 for bits in (4, 8) for group in ("g32", "g64", "g128+", "pc")},
}
NATIVE_HIGH_DENSE_MIN_M = {"avx512vnni": _VNNI_CROSSOVER, "avxvnni": _VNNI_CROSSOVER}
# precision High (fp32 activations): from this M the native kernel dequantizes weight tiles for torch's fp32 GEMM
# (lowbit.kernels.cpu_native.F32_BLOCKED_MIN_M), so the cached float copy, the same GEMM without the dequant, wins
NATIVE_F32_DENSE_MIN_M = 16


PACKED_KERNELS = frozenset(k for k in Kernel if k is not Kernel.DENSE)
# what dispatch says when no row of a device is available at all
_NONE_AVAILABLE = {"cuda": "the Triton kernels cannot run (Triton missing or unusable)",
                   "cpu": "no CPU int4/int8 kernel is available in this process"}


@dataclass(frozen=True)
class WeightFormat:
    """What dispatch needs to know of a weight: bits, group size along K, symmetry, the 2-D shape (n, k), and the
    name of its packed format.

    refused: (kernel, reason) pairs for rows that cannot serve this weight (`executor.refusals`: the row's format
    or its family's `supports_*`).
    """

    bits: int
    group_size: int
    symmetric: bool
    n: int
    k: int
    refused: tuple[tuple[Kernel, str], ...] = ()
    format: str = AFFINE

    @classmethod
    def of(cls, qw, refused: tuple[tuple[Kernel, str], ...] = ()) -> WeightFormat:
        """The format of a packed weight."""
        return cls(qw.bits, qw.group_size, qw.symmetric, qw.n, qw.k, refused, format_name(qw))

    def refusal(self, kernel) -> str | None:
        name = getattr(kernel, "value", kernel)
        return next((why for k, why in self.refused if getattr(k, "value", k) == name), None)


@dataclass(frozen=True)
class Decision:
    """The chosen kernel; fallback_reason: why it is not what was asked when it is a fallback (None otherwise);
    note: why a mode's trade was taken (memory High's float copy at this M), for reports; activations: the
    activation scheme the kernel runs (`activation_scheme`: "fp32", "int8/32", "int8/row", "int8/tensor", "bf16";
    None: the compute dtype as it is, `compute_dtype`)."""

    kernel: Kernel
    fallback_reason: str | None = None
    note: str | None = None
    activations: str | None = None


def activation_scheme(kernel, precision: Precision, op: str = "linear") -> str | None:
    """The activation scheme `kernel` runs at `precision` (Decision.activations; its row's `activations`)."""
    row = find_row(op, kernel)
    return None if row is None else row.activation_scheme(precision)


def select_kernel(device_type: str, m: int, fmt: WeightFormat, caps: Capabilities, backend: BackendConfig) -> Decision:
    """Pure: the kernel for an (m, k) activation times this weight on `device_type` ("cpu", "cuda", ...)."""
    if fmt.bits == 16:
        return Decision(Kernel.EMULATED if backend.memory is Memory.LOW else Kernel.DENSE)
    if backend.memory is Memory.NORMAL:
        return Decision(Kernel.DENSE)
    if backend.memory is Memory.HIGH:
        note = high_dense_note(device_type, m, fmt, caps, backend)
        if note is not None:
            return Decision(Kernel.DENSE, note=note)
    rows = [r for r in kernel_rows("linear") if r.device == device_type]
    if not rows:
        return _fallback(backend, fmt, device_type, f"lowbit has no fused kernel for device {device_type!r}")
    return _with_activations(_select_row(rows, m, fmt, caps, backend, device_type), backend)


def high_dense_min_m(device_type: str, fmt: WeightFormat, caps: Capabilities, backend: BackendConfig) -> int | None:
    """Memory High: the M from which the float copy (in the compute dtype) beats the packed kernel; None = never.

    With lowbit's native CPU kernel (int8 activations) the table below holds the crossovers measured per compute
    dtype, container and block (benchmarks/results/gemm_cpu_high_crossover_impls.md); other paths keep HIGH_DENSE_MIN_M.
    The table was measured with int8 activations per row; precision Normal's scales per 32 channels cost the tiled
    VNNI kernel 7-33% at M = 32..128 (benchmarks/results/gemm_cpu_1t_precision.md), not re-measured against the copy. At
    precision High the native kernel multiplies fp32 activations by tiles of dequantized weights from
    M = NATIVE_F32_DENSE_MIN_M on, which the float copy (the same GEMM without the dequant) beats.
    """
    if device_type != "cpu" or caps.native_variant not in NATIVE_HIGH_DENSE_MIN_M:
        return HIGH_DENSE_MIN_M
    if backend.precision is Precision.HIGH:
        return NATIVE_F32_DENSE_MIN_M
    dtype = "bf16" if compute_dtype(device_type, caps, backend) is torch.bfloat16 else "fp32"
    group = "pc" if fmt.group_size >= fmt.k else "g32" if fmt.group_size <= 32 else "g64" if fmt.group_size <= 64 \
        else "g128+"
    return NATIVE_HIGH_DENSE_MIN_M[caps.native_variant][dtype, 8 if fmt.bits > 4 else 4, group]


def high_dense_note(device_type: str, m: int, fmt: WeightFormat, caps: Capabilities,
                    backend: BackendConfig) -> str | None:
    """Why memory High takes the float copy at this M (None when the packed kernel is at least as fast)."""
    min_m = high_dense_min_m(device_type, fmt, caps, backend)
    if min_m is None or m < min_m:
        return None
    dtype = compute_dtype(device_type, caps, backend)
    return (f"memory=high: M >= {min_m}, where the {str(dtype).removeprefix('torch.')} float copy beats the "
            f"packed kernel for a {fmt.bits}-bit weight (group {fmt.group_size}) on {device_type}")


def _with_activations(decision: Decision, backend: BackendConfig) -> Decision:
    scheme = activation_scheme(decision.kernel, backend.precision)
    return decision if scheme is None else replace(decision, activations=scheme)


def _select_row(rows: list[KernelRow], m: int, fmt: WeightFormat, caps: Capabilities, backend: BackendConfig,
                device: str) -> Decision:
    """The first row (by priority) that may run at this M and precision, is available and serves the weight."""
    wanted = [r for r in sorted(rows, key=lambda r: r.order(fmt, caps)) if r.wants(m, backend.precision)]
    available = [r for r in wanted if r.available_in(caps)]
    if not available:
        why = _NONE_AVAILABLE.get(device, f"no {device} kernel is available in this process")
        return _fallback(backend, fmt, device, why)
    return _first_allowed(available, fmt, backend, device, lambda row: _shape_refusal(row, m, fmt, caps, backend))


def _shape_refusal(row: KernelRow, m: int, fmt: WeightFormat, caps: Capabilities, backend: BackendConfig):
    """Why `row` must not run here: its torch op refused for this shape class by the probe (see
    lowbit.runtime.probes), or its own `refuse` (e.g. a precision it cannot keep)."""
    if row.torch_op is not None:
        why = caps.torch_op_refusal(row.torch_op, m, fmt.n, fmt.k)
        if why is not None:
            return why
    return row.refuse(caps, backend)


def _first_allowed(wanted: list[KernelRow], fmt: WeightFormat, backend: BackendConfig, device: str,
                   shape_refusal) -> Decision:
    reasons = []
    for row in wanted:
        reason = fmt.refusal(row.kernel) or shape_refusal(row)
        if reason is None:
            return Decision(row.kernel)
        reasons.append(f"{row.name}: {reason}")
    return _fallback(backend, fmt, device, "; ".join(reasons))


def _fallback(backend: BackendConfig, fmt: WeightFormat, device: str, why: str) -> Decision:
    asked = f"memory={backend.memory.value} for a {fmt.bits}-bit weight (group {fmt.group_size}) on {device}"
    return Decision(Kernel.DENSE, f"{asked}: {why}; running {Kernel.DENSE.value} instead (weights dequantized once "
                                  "to float: correct and fast, but the float copy takes memory)")


def compute_dtype(device_type: str, caps: Capabilities, backend: BackendConfig) -> torch.dtype:
    """The activation dtype a layer computes in (its output is cast back to the input dtype)."""
    if backend.precision is Precision.LOW_BF16:
        return torch.bfloat16
    if backend.precision is Precision.LOW:
        if device_type == "cuda":
            return torch.float16
        if device_type == "cpu" and caps.cpu_bf16:
            return torch.bfloat16
    return torch.float32


class FallbackWarnings:
    """Remembers which fallback reasons were announced, so each distinct one warns exactly once."""

    def __init__(self):
        self.seen: set[str] = set()

    def warn(self, decision: Decision, stacklevel: int = 3) -> bool:
        """Warn for a fallback decision not announced before; True when it warned."""
        reason = decision.fallback_reason
        if reason is None or reason in self.seen:
            return False
        self.seen.add(reason)
        warnings.warn(f"lowbit: {reason}", RuntimeWarning, stacklevel=stacklevel)
        return True

    def reset(self) -> None:
        """Forget the announced reasons (tests)."""
        self.seen.clear()


# The process-wide record behind `warn_fallback` (a warning registry, like the warnings module's own).
_FALLBACKS = FallbackWarnings()


def warn_fallback(decision: Decision) -> bool:
    """`warnings.warn` once per distinct fallback reason, naming what was asked and what runs instead."""
    return _FALLBACKS.warn(decision, stacklevel=4)


def reset_fallback_warnings() -> None:
    """Let every fallback reason warn again (tests)."""
    _FALLBACKS.reset()


# Conv rows (lowbit.nn.conv): on the CPU, lowbit's native conv kernels (lowbit.kernels.cpu_conv: im2col fused with
# the int8 activation quantization, then the Linear GEMM; a direct depthwise kernel) beat torch's fp32 conv only where
# the GEMM's N (output channels per group) amortizes the per-pixel activation quantization, K fills the rows and
# there are pixels enough to pay the call. Measured 1 thread, EPYC Zen 4 (avx512vnni variant), thread time, int4 b64
# and int8 per channel, mobilenet_v2 / v3_small / resnet18 1x1 and 3x3 layers: N >= 96 with K >= 96 on 7x7 planes
# and up 1.06-2.5x (K=96 N=576 1.27-1.29x, K=576 N=96 1.25-1.28x, K=288 N=96 at 7x7 1.06x); N <= 64 0.4-0.9x
# (K=384 N=64 1.08x the one exception), K=64 N=384 0.96x; a 1x1 on one pixel (squeeze-excite, M = 1) 0.4-0.56x
# (~12 us of call overhead against torch's 8-16 us). Below these a float copy of that layer is faster. With the
# padded-plane im2col (2026-12-08, `python -m benchmarks.convnet_profile --layers --all-native`, in the whole
# model): N=64 with K >= 384 wins on avx512vnni too (resnet18's layer1 N=64 K=576 at 56x56 1.05-1.13x, mobilenet_v2's
# N=64 K=384 at 14x14 1.06-1.09x; N=64 K=192 0.73-0.86x, resnet18's stem N=64 K=147 0.73x); without VNNI with 8-bit
# weights not (0.72-0.78x), with 4-bit on the pixel-tile path (lowbit_cpu_conv_tile.h) resnet18's layer1 1.26-1.41x.
CONV_NATIVE_MIN_N = 96
CONV_NATIVE_MIN_K = 96
CONV_NATIVE_WIDE_N = 64  # (VNNI) N from here when K >= CONV_NATIVE_WIDE_K
CONV_NATIVE_WIDE_K = 384
CONV_NATIVE_MIN_PLANE = 49
# The direct depthwise kernel (one output plane per channel as a 1-D correlation) vs torch's fp32 depthwise conv,
# thread time, 1 thread, mobilenet_v2 / v3_small layers: stride 1 with output planes of 14x14 and up 0.86-1.95x
# (1.02-1.14x on most, 1.95x at 28x28 C=88); stride 2 0.76-1.15x; 7x7 planes 0.75-0.77x (per-channel overhead).
DW_NATIVE_MIN_PLANE = 196
# Without VNNI (the "avx2" native variant, LOWBIT_NATIVE_VARIANT=avx2 ATEN_CPU_CAPABILITY=avx2 on the same Zen 4, 1
# thread, thread time, in the whole model, `benchmarks.convnet_profile --layers --all-native`, resnet18 / mobilenet_v2
# / v3_small at memory Low with the padded-plane im2col and the pixel-tile path for 4-bit stride-1 convs;
# benchmarks/results/convnet_modes_b1_2026-12-08.md): 4-bit weights with K >= 576 1.26-1.41x on resnet18's 56x56
# layers, 1.13-1.59x at 28x28, 1.4-1.96x at 14x14, ~2x on 7x7; with smaller K 0.89-0.92x on mobilenet's 14x14 1x1s
# (K 96-384), 1.1-1.2x on 7x7 planes; 8-bit weights (an int16 GEMM: no faster per MAC than fp32 FMA) 0.7x at 56x56,
# 0.87-0.93x at 28x28, and at 14x14 and below 0.97-1.65x for layers of >= ~150k weights (resnet18's N=256 K=1152
# and up, mobilenet_v3's N=160 K=960, N=960 K=160), 0.68-0.92x under.
AVX2_CONV_4BIT_WIDE_K = 576  # 4-bit weights with K from here: every plane
AVX2_CONV_SMALL_PLANE = 49  # 4-bit weights of smaller K: planes up to 7x7
AVX2_CONV_8BIT_MAX_PLANE = 196  # with N * K >= AVX2_CONV_8BIT_MIN_WEIGHTS
AVX2_CONV_8BIT_MIN_WEIGHTS = 147456
AVX2_CONV_ANY_PLANE = 1 << 62
# The pixel-tile path (lowbit_cpu_conv_tile.h: dense kxk convs of column stride <= 2, one group, 4-bit weights or
# VNNI) on output planes of >= CONV_TILE_MIN_PLANE pixels also wins below the N / K rule and without VNNI: resnet18's
# stem (N=64, K=147, 112x112, stride 2) 1.28-1.42x of torch's fp32 conv on avx512vnni and avx2 (isolated, 1 thread;
# 0.67-0.81x on the general path).
CONV_TILE_MIN_PLANE = 2048


def avx2_conv_max_plane(n_per_group: int, k: int, bits: int) -> int:
    """The largest output plane (OH * OW) on which the GEMM conv kernel runs without VNNI (the avx2 variant) for a
    weight of N per group, K and `bits` (0: none, AVX2_CONV_ANY_PLANE: every plane; the measured rule above)."""
    if bits <= 4:
        return AVX2_CONV_ANY_PLANE if k >= AVX2_CONV_4BIT_WIDE_K else AVX2_CONV_SMALL_PLANE
    return AVX2_CONV_8BIT_MAX_PLANE if n_per_group * k >= AVX2_CONV_8BIT_MIN_WEIGHTS else 0


def conv_shape_reason(n_per_group: int, k: int, variant: str = "", groups: int = 1, bits: int = 4) -> str | None:
    """The part of `conv_native_reason` for a dense / grouped conv that its weight's (N per group, K) decides (the
    N = 64 exception measured on dense convs only, groups == 1; without VNNI for 4-bit weights only)."""
    wide = ((variant != "avx2" or bits <= 4) and groups == 1 and n_per_group >= CONV_NATIVE_WIDE_N
            and k >= CONV_NATIVE_WIDE_K)
    if (n_per_group < CONV_NATIVE_MIN_N and not wide) or k < CONV_NATIVE_MIN_K:
        return (f"convs with fewer than {CONV_NATIVE_MIN_N} output channels per group (dense with VNNI "
                f"{CONV_NATIVE_WIDE_N} at K >= {CONV_NATIVE_WIDE_K}) or K < {CONV_NATIVE_MIN_K} run faster as a float "
                "conv than lowbit's int8 conv kernel")
    return None


def conv_tiled(n_per_group: int, k: int, taps: int, stride: int, plane: int | None, bits: int, variant: str,
               groups: int) -> bool:
    """Whether a dense conv of `taps` kernel taps runs the native pixel tile (CONV_TILE_MIN_PLANE), fast whatever
    the N / K and avx2 plane rules say."""
    return (taps > 1 and groups == 1 and stride <= 2 and plane is not None and plane >= CONV_TILE_MIN_PLANE
            and (variant != "avx2" or bits <= 4) and n_per_group >= CONV_NATIVE_WIDE_N and k >= CONV_NATIVE_MIN_K)


def conv_native_reason(n_per_group: int, k: int, depthwise: bool, stride: int = 1, plane: int | None = None,
                       bits: int = 4, variant: str = "", groups: int = 1, taps: int = 1) -> str | None:
    """Why lowbit's native conv kernel is slower than the float conv for this shape (None: it is faster). stride:
    the conv's largest stride; plane: output pixels per image and channel (OH * OW; None: unknown); bits: the
    weight's; variant: the native kernel's ISA variant (`Capabilities.native_variant`; "" unknown: the measured
    avx512vnni rule); groups, taps (kh * kw): the conv's."""
    if depthwise:
        if stride == 1 and plane is not None and plane >= DW_NATIVE_MIN_PLANE:
            return None
        return ("depthwise convs of stride > 1 or output planes under 14x14 run faster as torch's fp32 depthwise conv "
                "than lowbit's direct kernel")
    if conv_tiled(n_per_group, k, taps, stride, plane, bits, variant, groups):
        return None
    why = conv_shape_reason(n_per_group, k, variant, groups, bits)
    if why is not None:
        return why
    if plane is not None and plane < CONV_NATIVE_MIN_PLANE:
        return (f"convs with output planes under {CONV_NATIVE_MIN_PLANE} pixels (squeeze-excite's 1x1 on one pixel) "
                "run faster as a float conv than lowbit's int8 conv kernel")
    if variant == "avx2" and (plane is None or plane > avx2_conv_max_plane(n_per_group, k, bits)):
        return (f"without VNNI (the avx2 kernels) convs run faster as a float conv than lowbit's int8 conv kernel "
                f"except 4-bit weights with K >= {AVX2_CONV_4BIT_WIDE_K} (or on output planes up to "
                f"{AVX2_CONV_SMALL_PLANE} pixels) and weights over 4 bits on planes up to {AVX2_CONV_8BIT_MAX_PLANE} "
                f"pixels at N * K >= {AVX2_CONV_8BIT_MIN_WEIGHTS}")
    return None


def select_conv(decision: Decision, device_type: str, fmt: WeightFormat, groups: int, depthwise: bool,
                native_refusal: str | None, backend: BackendConfig, stride: int = 1,
                plane: int | None = None, variant: str = "", taps: int = 1) -> Decision:
    """Pure: the conv's kernel from the Linear dispatch's `decision` for its (N per group, K) weight.

    A packed decision on the CPU becomes CPU_INT4 served by the native conv kernel (lowbit.kernels.cpu_conv) when
    that kernel serves the weight (`native_refusal` is None) and is the faster one (`conv_native_reason`); a shape
    where it is not takes a float copy of this layer (DENSE + fallback reason, warned once per reason) whether or not
    the native kernel serves the weight (im2col + a Linear kernel, e.g. K=16 under block 64, ran 14x slower than
    the float conv on mobilenet_v2). Without the native kernel a groups == 1 conv
    keeps the Linear kernel on its im2col; a grouped one takes the float copy (never a per-group loop), on any device.
    The native conv rounds activations to int8 in the decision's scheme; at precision High (fp32 activations) a
    groups == 1 conv takes the Linear kernel's fp32 path on its im2col, a grouped one the float copy. stride, plane:
    the call's largest stride and output pixels per image and channel (the depthwise rule reads them); variant: the
    native kernel's ISA variant (the avx2 rule reads it); taps: kh * kw (the pixel tile's rule, `conv_tiled`).
    """
    if decision.kernel not in PACKED_KERNELS or decision.kernel is Kernel.EMULATED:
        return decision
    if device_type == "cpu" and decision.activations != "fp32":
        why = conv_native_reason(fmt.n, fmt.k, depthwise, stride, plane, fmt.bits, variant, groups, taps)
        if why is not None:  # a shape where even the native kernel loses: im2col + a Linear kernel loses more
            return _conv_fallback(backend, fmt, device_type, why)
        if native_refusal is None:
            return replace(decision, kernel=Kernel.CPU_INT4, note=None)
    if groups > 1:
        why = f"grouped convs have no packed kernel here ({native_refusal or 'the native conv kernel is CPU-only'})"
        return _conv_fallback(backend, fmt, device_type, why)
    return decision


def _conv_fallback(backend: BackendConfig, fmt: WeightFormat, device: str, why: str) -> Decision:
    asked = f"memory={backend.memory.value} for a {fmt.bits}-bit conv weight (group {fmt.group_size}) on {device}"
    return Decision(Kernel.DENSE, f"{asked}: {why}; running a float copy of each such layer (built once)")


# LSTM layers (lowbit.nn.lstm): a packed kernel serves an LSTM one time step at a time (the recurrent projection at
# M = batch, then the gates as ~10 torch calls: ~50 us of Python per step and direction), against torch's fused
# LSTM on float weights. Measured batch 1, 24 steps, 1 thread, EPYC Zen 4 (avx512vnni), one direction, I = H, int4 b64
# and int8 per channel alike: H = 32 0.08x of fp32, 128 0.17x, 256 0.94x, 512 3.4x, 1024 7.5x (the fp32 LSTM reads
# 8x the bytes per step). Below LSTM_PACKED_MIN_WEIGHTS weights per layer and direction (w_ih + w_hh; H = 362 at
# I = H) memory Low / High run torch's fused LSTM on a float copy of the layer instead; on other devices (no
# measurement) the packed projections.
LSTM_PACKED_MIN_WEIGHTS = 1 << 20


def select_lstm(device_type: str, backend: BackendConfig, weights: int) -> Decision | None:
    """Pure: DENSE (torch's fused LSTM on float gate weights: memory Normal's float copies, or at memory Low / High on
    the CPU a float copy of a layer whose largest layer-direction holds fewer than LSTM_PACKED_MIN_WEIGHTS `weights`,
    with the fallback reason) or None (one packed projection per time step)."""
    if backend.memory is Memory.NORMAL:
        return Decision(Kernel.DENSE)
    if device_type != "cpu" or weights >= LSTM_PACKED_MIN_WEIGHTS:
        return None
    return Decision(Kernel.DENSE, f"memory={backend.memory.value} for LSTM gate weights on {device_type}: under "
                                  f"{LSTM_PACKED_MIN_WEIGHTS} weights per layer and direction the packed kernels, "
                                  "one time step at a time, are slower than torch's fused LSTM; running a float copy "
                                  "of each such layer (built once)")
