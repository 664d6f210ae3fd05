"""QuantConv1d/QuantConv2d vs nn.Conv with the dequantized weight (tight) and vs the original (SQNR floor)."""

import copy
import warnings

import pytest
import torch
from torch import nn
from triton_checks import triton_device

from lowbit.nn import QuantConv1d, QuantConv2d, ops
from lowbit.nn.weight_cache import forced_kernel, override_capabilities
from lowbit.quant import QuantConfig, quantize_weight
from lowbit.runtime import BackendConfig, Capabilities, Kernel

SQNR_FLOOR = {2: 4.0, 4: 16.0, 8: 33.0}
PACKED_SQNR = 33.0  # vs the dequantized conv: CPU packed kernels may round activations to int8

CONV2D = [  # (in, out, kernel, kwargs, input HxW)
    (6, 8, 3, dict(stride=2, padding=1), (9, 7)),
    (8, 8, 3, dict(groups=8, dilation=2, padding="same"), (8, 8)),  # depthwise
    (6, 12, (3, 2), dict(groups=3, padding=1, padding_mode="reflect", bias=False), (7, 6)),
]
CONV1D = [
    (10, 16, 5, dict(stride=2, padding=2, groups=2), 23),
    (12, 10, 4, dict(padding="same", dilation=2, padding_mode="circular"), 17),
]


def sqnr(ref, y):
    return (20 * torch.log10(ref.norm() / (ref - y).norm())).item()


def build(cls, cin, cout, k, kwargs, rng):
    conv = cls(cin, cout, k, **kwargs)
    with torch.no_grad():
        for p in conv.parameters():
            p.copy_(torch.randn(p.shape, generator=rng) * 0.3)
    return conv


def check(conv, quant_cls, x, bits, symmetric, memory, block=16):
    qw = quantize_weight(conv.weight.detach(), QuantConfig(bits=bits, block_size=block, symmetric=symmetric))
    deq = copy.deepcopy(conv)
    with torch.no_grad():
        deq.weight.copy_(qw.dequantize())
        y_deq, y_ref = deq(x), conv(x)
        y = quant_cls.from_float(conv, qw, BackendConfig(memory))(x)
    assert y.shape == y_ref.shape
    if memory == "normal":
        torch.testing.assert_close(y, y_deq, rtol=1e-5, atol=1e-5)
    else:
        assert sqnr(y_deq, y) >= PACKED_SQNR
    assert sqnr(y_ref, y) >= SQNR_FLOOR[bits]
    override_capabilities(Capabilities())  # the emulated path must be exact too
    try:
        with torch.no_grad():
            torch.testing.assert_close(quant_cls.from_float(conv, qw, BackendConfig(memory))(x), y_deq,
                                       rtol=1e-5, atol=1e-5)
    finally:
        override_capabilities(None)


@pytest.mark.filterwarnings("ignore:lowbit")
@pytest.mark.parametrize("memory", ["normal", "low"])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("case", range(len(CONV2D)))
def test_quant_conv2d(rng, case, bits, symmetric, memory):
    cin, cout, k, kwargs, hw = CONV2D[case]
    conv = build(nn.Conv2d, cin, cout, k, kwargs, rng)
    check(conv, QuantConv2d, torch.randn(2, cin, *hw, generator=rng), bits, symmetric, memory)


@pytest.mark.filterwarnings("ignore:lowbit")
@pytest.mark.parametrize("memory", ["normal", "low"])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("case", range(len(CONV1D)))
def test_quant_conv1d(rng, case, bits, symmetric, memory):
    cin, cout, k, kwargs, length = CONV1D[case]
    conv = build(nn.Conv1d, cin, cout, k, kwargs, rng)
    check(conv, QuantConv1d, torch.randn(3, cin, length, generator=rng), bits, symmetric, memory)


@pytest.mark.filterwarnings("ignore:lowbit")
def test_packed_path_runs_per_group(rng):
    """Force a packed kernel at every M: the im2col + per-group linear path against F.conv2d."""
    conv = build(nn.Conv2d, 8, 12, 3, dict(groups=4, stride=(1, 2), padding=(1, 0)), rng)
    x = torch.randn(2, 8, 6, 9, generator=rng)
    override_capabilities(Capabilities(cpu_int4=True))
    try:
        qw = quantize_weight(conv.weight.detach(), QuantConfig(bits=4, block_size=16))
        check_low = QuantConv2d.from_float(conv, qw, BackendConfig("low"))
        with torch.no_grad():
            y = check_low(x)
            deq = copy.deepcopy(conv)
            deq.weight.copy_(check_low.quantized_weight("weight").dequantize())
            assert sqnr(deq(x), y) >= PACKED_SQNR
    finally:
        override_capabilities(None)


def test_unbatched_input(rng):
    conv = build(nn.Conv1d, 4, 6, 3, {}, rng)
    q = QuantConv1d.from_float(conv, quantize_weight(conv.weight.detach(), QuantConfig(bits=8, block_size=-1)))
    x = torch.randn(4, 10, generator=rng)
    assert q(x).shape == conv(x).shape == (6, 8)


def test_conv_errors(rng):
    conv = build(nn.Conv2d, 4, 6, 3, {}, rng)
    qw = quantize_weight(conv.weight.detach(), QuantConfig())
    with pytest.raises(ValueError, match="rank 3"):
        QuantConv1d(qw)
    with pytest.raises(ValueError, match="padding_mode='zigzag'"):
        QuantConv2d(qw, padding_mode="zigzag")
    with pytest.raises(ValueError, match="padding='full'"):
        QuantConv2d(qw, padding="full")
    with pytest.raises(ValueError, match="groups=4"):
        QuantConv2d(qw, groups=4)
    with pytest.raises(ValueError, match="does not match"):
        QuantConv2d.from_float(build(nn.Conv2d, 4, 6, 5, {}, rng), qw)


@pytest.mark.parametrize("kernel,floor", [
    (Kernel.DENSE, None), (Kernel.EMULATED, None), (Kernel.TRITON_GEMV, None), (Kernel.TRITON_GEMM, None),
    (Kernel.CPU_INT4, PACKED_SQNR),
])
def test_every_kernel_forced_through_conv(rng, kernel, floor):
    """im2col + per-group linear kernel (or F.conv2d for DENSE/EMULATED), each kernel forced."""
    dev = triton_device(kernel)
    conv = build(nn.Conv2d, 4, 6, 3, dict(groups=2, padding=1, stride=2), rng)
    qw = quantize_weight(conv.weight.detach(), QuantConfig(bits=4, block_size=16))
    deq = copy.deepcopy(conv)
    x = torch.randn(1, 4, 5, 7, generator=rng)  # M = 3 * 4 = 12 output positions
    with torch.no_grad(), forced_kernel(kernel):
        deq.weight.copy_(qw.dequantize())
        y, y_deq = QuantConv2d.from_float(conv, qw, BackendConfig("low")).to(dev)(x.to(dev)).cpu(), deq(x)
    if floor is None:
        torch.testing.assert_close(y, y_deq, rtol=1e-4, atol=1e-4)
    else:
        assert sqnr(y_deq, y) >= floor


@pytest.mark.parametrize("memory", ["low", "normal"])
@pytest.mark.parametrize("bits,block,cin,cout,groups", [(4, 64, 16, 8, 1), (4, 32, 64, 256, 1), (8, -1, 24, 24, 24)])
def test_bound_call_is_bit_identical_and_follows_edits(bits, block, cin, cout, groups, memory):
    """The bound call a layer keeps per input shape gives the usual path's output bit for bit (memory Low: the op's),
    and an in-place edit of the scale or the bias, or another input shape, takes the usual path again."""
    from lowbit.nn import conv_exec

    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, 3, padding=1, groups=groups)
    qw = quantize_weight(conv.weight.detach(), QuantConfig(bits=bits, block_size=block))
    layer = QuantConv2d.from_float(conv, qw, BackendConfig(memory))
    x = torch.randn(1, cin, 9, 9)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        first = layer(x)
        assert layer._bound_call(x)[1] is not None
        assert torch.equal(layer(x), first)
        if memory == "normal":
            return  # the codes are released there: an in-place scale edit raises (test_dense_copy)
        packed, scale, zero, shape, _, _ = layer._op_args("weight")
        ref = ops._conv2d_impl(x, packed, scale, zero, layer.bias, list(shape), bits, block, [1, 1], [1, 1], [1, 1],
                               groups, "low", "normal")
        assert torch.equal(first, ref)
        scale.mul_(2)
        assert layer._bound_call(x) == (False, None)
        assert torch.allclose(layer(x) - layer.bias.view(1, -1, 1, 1), 2 * (ref - layer.bias.view(1, -1, 1, 1)),
                              rtol=1e-4, atol=1e-4)
        layer.bias.add_(1)
        assert layer._bound_call(x) == (False, None)
        assert not layer._bound_call(torch.randn(2, cin, 9, 9))[0]
        layer.backend = BackendConfig("normal")  # a mode set without set_backend re-dispatches too
        assert layer._bound_call(x) == (False, None)
        assert conv_exec.bound_key(x, packed, scale, zero, None) != conv_exec.bound_key(x[:, :, 1:], packed, scale,
                                                                                          zero, None)
