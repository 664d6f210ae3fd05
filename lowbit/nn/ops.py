"""torch.library custom ops `lowbit::linear` and `lowbit::conv2d`: the one entry from layers into the runtime.

The ops take the packed buffers and plain format numbers, so `torch.compile(fullgraph=True)` sees one opaque call
per layer (with a fake implementation giving the output shape). At run time the op asks the dispatch for a kernel
(M is known only then), prepares that kernel's weight once and keeps both in the weight's cache
(`lowbit.nn.weight_cache`).

Autograd: both ops have a registered backward through the dequantized weight (grad_x = grad_y @ W, grad_bias =
grad_y summed), so gradients reach the input and the float bias at every memory mode while the packed buffers stay
frozen (LoRA on a quantized base). Non-finite inputs: kernels that round activations to int8 cannot carry NaN or
inf, so `executor.run_finite` feeds them the finite values only and returns NaN for every row whose input held a
NaN or an inf.
"""

from __future__ import annotations

import math

import torch

from ..runtime import executor
from ..runtime.dispatch import Kernel, warn_fallback
from . import conv_exec
from .weight_cache import choose, compute_view, entry_for, forcing, fresh_entry, m_bucket, prepared


def eager(x: torch.Tensor) -> bool:
    """True when nothing traces this call (no torch.compile, no fake/proxy/functional mode, a plain tensor).

    The layers then call the op's implementation directly, skipping ~40 us of torch.library dispatch per call;
    under any tracing they go through the registered custom op, so graphs see one opaque node.
    """
    return (type(x) is torch.Tensor and not torch.compiler.is_compiling()
            and torch._C._len_torch_dispatch_stack() == 0 and not torch._C._is_torch_function_mode_enabled())


def wants_grad(x: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """True when autograd records this call: grad mode is on and the input or the bias requires a gradient."""
    return torch.is_grad_enabled() and (x.requires_grad or (bias is not None and bias.requires_grad))


def linear(*args):
    """`lowbit::linear` (see `quant_linear`); in plain eager mode its implementation is called directly, through
    `_LinearGrad` when autograd records the call (the same backward, for less than half the dispatcher's overhead)."""
    if not eager(args[0]):
        return torch.ops.lowbit.linear(*args)
    return _LinearGrad.apply(*args) if wants_grad(args[0], args[4]) else _linear_impl(*args)


def conv2d(*args):
    """`lowbit::conv2d` (see `quant_conv2d`), called as `linear` calls its op."""
    if not eager(args[0]):
        return torch.ops.lowbit.conv2d(*args)
    return _Conv2dGrad.apply(*args) if wants_grad(args[0], args[4]) else _conv2d_impl(*args)


def _linear_impl(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor | None, zero: torch.Tensor | None,
                 bias: torch.Tensor | None, shape: list[int], bits: int, block_size: int, memory: str,
                 precision: str) -> torch.Tensor:
    """y (..., N) = x (..., K) @ W.T + bias for the packed weight W of `shape` (N, ...); y has x's dtype."""
    x2 = x.reshape(-1, x.shape[-1])
    decision, dtype, w, bound = _linear_plan(x2, packed, scale, zero, shape, bits, block_size, memory, precision)
    warn_fallback(decision)  # once per distinct reason, whichever layer asks first
    if bound is not None:
        y = _run_bound(bound, x2, bias)
        if y is not None:
            return y.reshape(*x.shape[:-1], shape[0])
    kernel = decision.kernel
    b = bias if bias is None or bias.dtype == dtype else bias.to(dtype)
    xc = x2 if x2.dtype == dtype else x2.to(dtype)
    y = executor.run_finite(kernel, w, xc if kernel is Kernel.DENSE else xc.contiguous(), b, decision.activations)
    return (y if y.dtype == x.dtype else y.to(x.dtype)).reshape(*x.shape[:-1], shape[0])


def _run_bound(bound, x2: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor | None:
    """The kernel row's bound call (`executor.binder`) on fp32 contiguous x2 (M, K) on the CPU, or None where the
    usual run must serve: another dtype or layout, a bias it cannot read, more rows than it takes, or non-finite
    values (run_finite's masked form)."""
    call, finite = bound
    m = x2.shape[0]
    if x2.dtype is not torch.float32 or not x2.is_cpu or not x2.is_contiguous() or not 1 <= m <= call.max_m:
        return None
    if bias is not None and (bias.dtype is not torch.float32 or not bias.is_cpu or not bias.is_contiguous()):
        return None
    if finite and not math.isfinite(x2.sum(dtype=torch.float32).item()):
        return None
    y = torch.empty(m, call.n, dtype=torch.float32)  # the kernel writes fp32, whatever the default dtype
    call(x2.data_ptr(), m, y.data_ptr(), None if bias is None else bias.data_ptr(), torch.get_num_threads())
    return y


def _linear_plan(x2, packed, scale, zero, shape, bits, block_size, memory, precision):
    """(decision, compute dtype, prepared weight, bound call or None) for this call, from the weight's cache.

    The hot path is two dict lookups and a stamp comparison: at memory Normal a layer then costs what F.linear
    costs. Anything else (first call, new M bucket, changed buffers, forced kernel) goes through dispatch. The bound
    call (`executor.binder`: the kernel row's call with the prepared weight's pointers fixed) is made with the plan
    when the compute dtype is fp32 on the CPU.
    """
    entry = fresh_entry(packed, scale, zero)
    key = (x2.device.type, m_bucket(x2.shape[0]), memory, precision)
    if not forcing() and entry is not None and key in entry.plans:
        return entry.plans[key]
    qw = compute_view(packed, scale, zero, shape, bits, block_size)
    entry = entry_for(qw)
    decision, dtype = choose(qw, entry, x2.device.type, x2.shape[0], memory, precision, qw.n)
    w = prepared(entry, decision.kernel, qw, dtype)
    bound = None
    if x2.device.type == "cpu" and dtype is torch.float32 and decision.fallback_reason is None:
        bound = executor.binder(decision.kernel, w, decision.activations)
    plan = (decision, dtype, w, bound)
    if not forcing():
        entry.plans[key] = plan
    return plan


quant_linear = torch.library.custom_op("lowbit::linear", _linear_impl, mutates_args=())


@quant_linear.register_fake
def _(x, packed, scale, zero, bias, shape, bits, block_size, memory, precision):
    return x.new_empty((*x.shape[:-1], shape[0]))


def conv2d_out_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _conv2d_impl(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor | None, zero: torch.Tensor | None,
                 bias: torch.Tensor | None, shape: list[int], bits: int, block_size: int, stride: list[int],
                 padding: list[int], dilation: list[int], groups: int, memory: str, precision: str) -> torch.Tensor:
    """F.conv2d(x (B, C, H, W), W (O, C/groups, kh, kw), bias) with W packed along the flattened (C/groups, kh, kw)."""
    oh = conv2d_out_size(x.shape[2], shape[2], stride[0], padding[0], dilation[0])
    ow = conv2d_out_size(x.shape[3], shape[3], stride[1], padding[1], dilation[1])
    m = x.shape[0] * oh * ow
    decision, dtype, prep = conv_exec.conv_plan(x.device.type, m, packed, scale, zero, shape, bits, block_size,
                                                groups, memory, precision, max(stride), oh * ow)
    warn_fallback(decision)  # once per distinct reason, whichever layer asks first
    b = bias.to(dtype) if bias is not None else None
    y = conv_exec.run_conv(x, decision.kernel, dtype, prep, b, stride, padding, dilation, groups,
                             decision.activations)
    return y.to(x.dtype).contiguous()  # the layout the fake implementation promises


quant_conv2d = torch.library.custom_op("lowbit::conv2d", _conv2d_impl, mutates_args=())


@quant_conv2d.register_fake
def _(x, packed, scale, zero, bias, shape, bits, block_size, stride, padding, dilation, groups, memory, precision):
    oh = conv2d_out_size(x.shape[2], shape[2], stride[0], padding[0], dilation[0])
    ow = conv2d_out_size(x.shape[3], shape[3], stride[1], padding[1], dilation[1])
    return x.new_empty((x.shape[0], shape[0], oh, ow))


def _dequantize_impl(packed: torch.Tensor, scale: torch.Tensor | None, zero: torch.Tensor | None, shape: list[int],
                     bits: int, block_size: int, dtype: torch.dtype) -> torch.Tensor:
    """The float weight (N, K = prod(shape[1:])) in `dtype`, a new tensor (never `packed`, as an op output must be)."""
    w = compute_view(packed, scale, zero, shape, bits, block_size).dequantize(dtype).reshape(shape[0], -1)
    return w.clone() if w.data_ptr() == packed.data_ptr() else w  # bits=16 asked in float16 is `packed` itself


quant_dequantize = torch.library.custom_op("lowbit::dequantize", _dequantize_impl, mutates_args=())


@quant_dequantize.register_fake
def _(packed, scale, zero, shape, bits, block_size, dtype):
    return packed.new_empty((shape[0], math.prod(shape[1:])), dtype=dtype)


def dequantized(packed, scale, zero, shape, bits, block_size, dtype: torch.dtype) -> torch.Tensor:
    """W (N, K) in `dtype` for a backward pass: the DENSE cache when memory Normal/High already holds it, else
    dequantized for this call only (memory Low keeps nothing; the copy lives until the backward has used it)."""
    if not eager(packed):
        return torch.ops.lowbit.dequantize(packed, scale, zero, shape, bits, block_size, dtype)
    entry = fresh_entry(packed, scale, zero)
    if entry is not None and (Kernel.DENSE, dtype, None) in entry.prepared:
        return entry.prepared[(Kernel.DENSE, dtype, None)]
    return _dequantize_impl(packed, scale, zero, shape, bits, block_size, dtype)


def _save_weight(ctx, inputs) -> None:
    """Keep what the backward needs: the packed buffers, the format numbers and the bias dtype (never x)."""
    x, packed, scale, zero, bias, shape, bits, block_size = inputs[:8]
    ctx.save_for_backward(packed, scale, zero)
    ctx.fmt = (list(shape), bits, block_size)
    ctx.x_shape = list(x.shape)
    ctx.bias_dtype = None if bias is None else bias.dtype


def _linear_backward(ctx, grad: torch.Tensor):
    """grad_x = grad_y @ W (the dequantized weight), grad_bias = grad_y summed over rows; nothing for the buffers."""
    shape = ctx.fmt[0]
    grad2 = grad.reshape(-1, shape[0])  # (..., N) -> (M, N)
    grad_x = grad_b = None
    if ctx.needs_input_grad[0]:
        w = dequantized(*ctx.saved_tensors, *ctx.fmt, grad.dtype)  # (N, K)
        grad_x = (grad2 @ w).reshape(ctx.x_shape)
    if ctx.needs_input_grad[4]:
        grad_b = grad2.sum(0).to(ctx.bias_dtype)
    return grad_x, None, None, None, grad_b, None, None, None, None, None


def _conv2d_save(ctx, inputs, output) -> None:
    _save_weight(ctx, inputs)
    ctx.geometry = tuple(inputs[8:12])  # stride, padding, dilation, groups


def _conv2d_backward(ctx, grad: torch.Tensor):
    """grad_x = the transposed conv of grad_y with the dequantized weight; grad_bias = grad_y summed per channel."""
    grad_x = grad_b = None
    if ctx.needs_input_grad[0]:
        shape = ctx.fmt[0]
        w = dequantized(*ctx.saved_tensors, *ctx.fmt, grad.dtype).reshape(shape)  # (O, C/groups, kh, kw)
        grad_x = torch.nn.grad.conv2d_input(ctx.x_shape, w, grad, *ctx.geometry)
    if ctx.needs_input_grad[4]:
        grad_b = grad.sum((0, 2, 3)).to(ctx.bias_dtype)
    return (grad_x, None, None, None, grad_b) + (None,) * 9


def _linear_save(ctx, inputs, output) -> None:
    _save_weight(ctx, inputs)


quant_linear.register_autograd(_linear_backward, setup_context=_linear_save)
quant_conv2d.register_autograd(_conv2d_backward, setup_context=_conv2d_save)


class _LinearGrad(torch.autograd.Function):
    """The eager twin of `lowbit::linear` with its registered autograd (same forward, context and backward)."""

    forward = staticmethod(_linear_impl)
    setup_context = staticmethod(_linear_save)
    backward = staticmethod(_linear_backward)


class _Conv2dGrad(torch.autograd.Function):
    """The eager twin of `lowbit::conv2d` with its registered autograd."""

    forward = staticmethod(_conv2d_impl)
    setup_context = staticmethod(_conv2d_save)
    backward = staticmethod(_conv2d_backward)
