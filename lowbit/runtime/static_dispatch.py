"""Kernel choice for static W8A8 products (`lowbit.nn.static`), read from the kernel table's "static" rows.

A pure function of (device, M, the weight's format, capabilities): the rows of the device in priority order
(CUDA: the Triton int8 GEMM with the static step; CPU: lowbit's native kernel where it is built and K fits, then
torch._int_mm where this machine's probe found it exact for the shape class), else the exact float64 emulation,
with the reason (nn warns once per weight and M bucket).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from .dispatch import Decision, WeightFormat
from .kernel_row import KernelRow, StaticKernel
from .kernel_table import find_row, kernel_rows

if TYPE_CHECKING:
    from .capabilities import Capabilities


def select_static(device_type: str, m: int, fmt: WeightFormat, caps: Capabilities, fused: bool = True) -> Decision:
    """The static kernel for an (M, K) x (N, K) product on `device_type`; fallback_reason says why it is the
    emulation. fused=False: among torch's int8 matmul and the emulation only (a conv the fused kernels do not
    cover runs im2col + the matmul)."""
    if not fused:
        caps = dataclasses.replace(caps, native_extension=False, triton_gpu=False)
    rows = sorted((r for r in kernel_rows("static") if r.device == device_type), key=lambda r: r.order(fmt, caps))
    why = f"no static int8 kernel for tensors on {device_type} here (Triton GPU unavailable)"
    for row in rows:
        reason = _unavailable(row, m, fmt, caps)
        if reason is None:
            return Decision(row.kernel)
        why = reason or why
    return Decision(StaticKernel.EMULATED, why)


def _unavailable(row: KernelRow, m: int, fmt: WeightFormat, caps: Capabilities) -> str | None:
    """None when `row` serves this product; else why not ("" for a fast kernel that is simply absent here)."""
    op = f"torch._{row.torch_op}" if row.torch_op else row.name
    if not row.available_in(caps):
        if row.device == "cuda":
            return f"no static int8 kernel for tensors on {row.device} here (Triton GPU unavailable)"
        return f"{op} is absent or was not probed on this machine" if row.torch_op else ""
    if fmt.refusal(row.kernel) is not None:
        return ""
    refusal = caps.torch_op_refusal(row.torch_op, m, fmt.n, fmt.k) if row.torch_op else None
    return None if refusal is None else f"{op} refused here: {refusal}"


DEPTHWISE_MAX_TAPS = 64  # lb_dwconv's and lb_static_dw_nhwc's limit
NHWC_MAX_K = 65536  # the static GEMM's K limit (lowbit.kernels.cpu_static_int8.NATIVE_MAX_K): int32 sums exact
# Where torch's fp32 conv beats the static int8 kernels, measured 1 thread on EPYC Zen 4 (thread time, mobilenet
# shapes, benchmarks/results/convnet_static_*.md): a depthwise conv with output planes under 28x28 (14x14 c576:
# torch 120-160 us, lb_dwconv with input rounding 190-230; 7x7 c960: 85-120 vs 140-150: the per-channel plane
# overhead), a kxk conv reading at most 27 values per output (the 3-channel 3x3 stem: 0.45 vs 1.2 ms as the codes
# conv), and a 1x1 conv on a single pixel (squeeze-excite: the call overhead of quantizing one column).
FLOAT_DEPTHWISE_MAX_PLANE = 28 * 28 - 1
FLOAT_MAX_K = 27


def float_conv_faster(groups: int, in_per_group: int, taps: int, out_plane: int, nhwc: bool = False) -> str | None:
    """Why a float copy of this conv runs faster than its static int8 kernel on the CPU (None: it does not); nhwc:
    on a channels-last image, where the NHWC depthwise kernel beats torch's conv at every plane size."""
    if in_per_group == 1 < groups and out_plane <= FLOAT_DEPTHWISE_MAX_PLANE and not nhwc:
        return "depthwise on output planes under 28x28"
    if groups == 1 and taps > 1 and in_per_group * taps <= FLOAT_MAX_K:
        return f"{in_per_group * taps} input values per output"
    if groups == 1 and taps == 1 and out_plane == 1:
        return "1x1 on one pixel"
    return None


def select_static_conv(device_type: str, groups: int, in_per_group: int, taps: int, zero_padding: bool,
                       caps: Capabilities, pointwise: bool = False, out_plane: int = 0,
                       nhwc: bool = False) -> StaticKernel | None:
    """FLOAT_CONV where `float_conv_faster` (out_plane: output pixels per image and channel; 0: unknown, never);
    with nhwc (a Conv2d on a float32 CPU image, which then runs channels-last): NHWC_GEMM for groups == 1 and
    NHWC_DEPTHWISE for a depthwise conv with one output per channel (zero padding both, <= 64 taps); else
    DEPTHWISE for a depthwise conv (one input channel per group, <= 64 taps, zero padding) on the CPU where the
    direct depthwise kernel runs; POINTWISE for a 1x1 conv (pointwise: stride 1, no padding, no dilation) with
    groups == 1 there; None otherwise (the conv then takes `select_static`'s kernel on its im2col)."""
    if device_type != "cpu":
        return None
    if out_plane and float_conv_faster(groups, in_per_group, taps, out_plane, nhwc and zero_padding) is not None:
        kernel = StaticKernel.FLOAT_CONV
    elif nhwc and zero_padding and groups == 1 and in_per_group * taps <= NHWC_MAX_K:
        kernel = StaticKernel.NHWC_GEMM
    elif nhwc and zero_padding and in_per_group == 1 < groups and taps <= DEPTHWISE_MAX_TAPS:
        kernel = StaticKernel.NHWC_DEPTHWISE
    elif pointwise and groups == 1 and taps == 1:
        kernel = StaticKernel.POINTWISE
    elif in_per_group == 1 < groups and zero_padding and taps <= DEPTHWISE_MAX_TAPS:
        kernel = StaticKernel.DEPTHWISE
    else:
        return None
    row = find_row("static_conv", kernel)
    return kernel if row is not None and row.available_in(caps) else None
