"""QuantLinear vs nn.Linear with the dequantized weight (tight) and vs the original layer (SQNR floor per bits)."""


import pytest
import torch
from torch import nn
from triton_checks import triton_device

from lowbit.nn import QuantLinear
from lowbit.nn.weight_cache import forced_kernel, override_capabilities
from lowbit.quant import QuantConfig, quantize_weight
from lowbit.runtime import BackendConfig, Capabilities, Kernel

SQNR_FLOOR = {2: 4.0, 4: 18.0, 8: 34.0}  # dB vs the original float layer (random Gaussian weights, block 64)
PACKED_SQNR = 33.0  # dB vs the dequantized layer: CPU packed kernels may round activations to int8 (~40 dB)


def sqnr(ref: torch.Tensor, y: torch.Tensor) -> float:
    return (20 * torch.log10(ref.norm() / (ref - y).norm())).item()


def make(rng, n=72, k=200, bias=True):
    lin = nn.Linear(k, n, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n, k, generator=rng) / k**0.5)
        if bias:
            lin.bias.copy_(torch.randn(n, generator=rng))
    return lin


def dequantized_linear(lin, qw):
    ref = nn.Linear(lin.in_features, lin.out_features, bias=lin.bias is not None)
    with torch.no_grad():
        ref.weight.copy_(qw.dequantize())
        if lin.bias is not None:
            ref.bias.copy_(lin.bias)
    return ref


@pytest.fixture
def no_kernels():
    """Dispatch sees no fused kernel: memory Low runs the EMULATED path (with its warning)."""
    override_capabilities(Capabilities())
    yield
    override_capabilities(None)


@pytest.mark.filterwarnings("ignore:lowbit")
@pytest.mark.parametrize("memory", ["normal", "low"])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quant_linear_matches(rng, memory, symmetric, bits):
    lin = make(rng)
    x = torch.randn(2, 3, 200, generator=rng)  # leading dims are kept
    qw = quantize_weight(lin.weight.detach(), QuantConfig(bits=bits, block_size=64, symmetric=symmetric))
    q = QuantLinear.from_float(lin, qw, BackendConfig(memory))
    with torch.no_grad():
        y, y_deq, y_ref = q(x), dequantized_linear(lin, qw)(x), lin(x)
    assert y.shape == (2, 3, 72) and y.dtype == x.dtype
    if memory == "normal":
        torch.testing.assert_close(y, y_deq, rtol=1e-5, atol=1e-5)
    else:
        assert sqnr(y_deq, y) >= PACKED_SQNR
    assert sqnr(y_ref, y) >= SQNR_FLOOR[bits]


@pytest.mark.filterwarnings("ignore:lowbit")
@pytest.mark.parametrize("bits,block,symmetric", [(2, 64, True), (4, 64, False), (8, -1, True), (3, 32, False)])
@pytest.mark.parametrize("memory", ["low", "high"])
def test_reference_path_is_tight(rng, no_kernels, bits, block, symmetric, memory):
    lin = make(rng, n=33, k=90, bias=False)
    qw = quantize_weight(lin.weight.detach(), QuantConfig(bits=bits, block_size=block, symmetric=symmetric))
    q = QuantLinear.from_float(lin, qw, BackendConfig(memory))
    for m in (1, 40):  # memory High: packed below the threshold, cached float weight above it
        x = torch.randn(m, 90, generator=rng)
        torch.testing.assert_close(q(x), dequantized_linear(lin, qw)(x), rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:lowbit")
@pytest.mark.parametrize("bits", [5, 8])
def test_int8_activations_with_precision_low(rng, bits):
    """memory Low + precision Low may run torch's dynamic int8 linear (per-tensor int8 activations)."""
    lin = make(rng, n=40, k=96)
    qw = quantize_weight(lin.weight.detach(), QuantConfig(bits=bits, block_size=-1))
    q = QuantLinear.from_float(lin, qw, BackendConfig("low", "low"))
    x = torch.randn(7, 96, generator=rng)
    with torch.no_grad():
        assert sqnr(dequantized_linear(lin, qw)(x), q(x)) >= 25.0


def test_low_without_kernel_warns_once(rng, no_kernels):
    from lowbit.runtime.dispatch import reset_fallback_warnings

    reset_fallback_warnings()
    lin = make(rng, n=16, k=64)
    q = QuantLinear.from_float(lin, quantize_weight(lin.weight.detach(), QuantConfig(bits=5)), BackendConfig("low"))
    x = torch.randn(2, 64, generator=rng)
    with pytest.warns(RuntimeWarning, match=r"memory=low for a 5-bit weight .* running dense") as rec:
        q(x)
        q(x)
    assert len([w for w in rec if "lowbit" in str(w.message)]) == 1


def test_fp16_storage(rng):
    lin = make(rng, n=24, k=48)
    qw = quantize_weight(lin.weight.detach(), QuantConfig(bits=16))
    x = torch.randn(4, 48, generator=rng)
    for memory in ("normal", "low"):
        q = QuantLinear.from_float(lin, qw, BackendConfig(memory))
        torch.testing.assert_close(q(x), dequantized_linear(lin, qw)(x), rtol=1e-5, atol=1e-5)
    assert set(q.state_dict()) == {"weight_packed", "bias"}


def test_buffers_and_repr(rng):
    lin = make(rng)
    qw = quantize_weight(lin.weight.detach(), QuantConfig(bits=4, block_size=64, symmetric=True))
    q = QuantLinear.from_float(lin, qw)
    assert set(q.state_dict()) == {"weight_packed", "weight_scale", "bias"}
    assert q.state_dict()["weight_packed"].shape == (72, 100)
    assert q.bias is lin.bias
    assert "bits=4" in repr(q) and "memory=normal" in repr(q)
    back = q.quantized_weight("weight")
    assert torch.equal(back.packed, qw.packed) and back.metadata() == qw.metadata()


def test_errors(rng):
    lin = make(rng)
    qw = quantize_weight(lin.weight.detach(), QuantConfig())
    with pytest.raises(ValueError, match="does not match"):
        QuantLinear.from_float(make(rng, n=10, k=200), qw)
    with pytest.raises(ValueError, match="2-D weight"):
        QuantLinear(quantize_weight(torch.randn(4, 3, 2, 2), QuantConfig()))
    with pytest.raises(TypeError, match="QuantizedWeight"):
        QuantLinear.from_float(lin, lin.weight)
    with pytest.raises(TypeError, match="BackendConfig"):
        QuantLinear.from_float(lin, qw, backend="low")


FORCED = [  # (kernel, bits, block, symmetric, SQNR floor vs the dequantized layer; None = tight allclose)
    (Kernel.DENSE, 4, 64, False, None), (Kernel.EMULATED, 3, 32, False, None),
    (Kernel.TRITON_GEMV, 4, 32, False, None), (Kernel.TRITON_GEMM, 2, 32, True, None),
    (Kernel.TRITON_A8W, 8, -1, True, 25.0), (Kernel.CPU_INT8_DYNAMIC, 8, -1, False, 25.0),
    (Kernel.CPU_INT8_WEIGHT, 6, -1, False, 40.0),
    (Kernel.CPU_INT4, 4, 32, False, PACKED_SQNR),
]


@pytest.mark.parametrize("kernel,bits,block,symmetric,floor", FORCED)
def test_every_kernel_forced_through_the_layer(rng, kernel, bits, block, symmetric, floor):
    """Each kernel family run directly by QuantLinear (Triton in the interpreter on CPU tensors)."""
    dev = triton_device(kernel)
    lin = make(rng, n=40, k=96)
    qw = quantize_weight(lin.weight.detach(), QuantConfig(bits=bits, block_size=block, symmetric=symmetric))
    q = QuantLinear.from_float(lin, qw, BackendConfig("low")).to(dev)
    x = torch.randn(5, 96, generator=rng)
    with torch.no_grad(), forced_kernel(kernel):
        y, y_deq = q(x.to(dev)).cpu(), dequantized_linear(lin, qw)(x)
    if floor is None:
        torch.testing.assert_close(y, y_deq, rtol=1e-4, atol=1e-4)
    else:
        assert sqnr(y_deq, y) >= floor


def test_forced_kernel_errors():
    with pytest.raises(TypeError, match="Kernel member"):
        with forced_kernel("dense"):
            pass


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # numpy, inside Triton's interpreter
@pytest.mark.parametrize("kernel,bits,block,symmetric,floor", FORCED)
def test_every_kernel_forced_propagates_nan_and_inf(rng, kernel, bits, block, symmetric, floor):
    """A NaN or inf in a row makes that row non-finite, as in nn.Linear, and leaves the other rows as they were
    (torch's dynamic int8 linear quantizes per tensor: unguarded, one NaN changed every row)."""
    dev = triton_device(kernel)
    lin = make(rng, n=48, k=96)  # N, K multiples of 16: torch's int8pack is wrong for some odd shapes on AVX-512
    qw = quantize_weight(lin.weight.detach(), QuantConfig(bits=bits, block_size=block, symmetric=symmetric))
    q = QuantLinear.from_float(lin, qw, BackendConfig("low")).to(dev)
    x = torch.randn(5, 96, generator=rng)
    bad = x.clone()
    bad[1, 5], bad[3, 0], bad[3, 9] = float("nan"), float("inf"), float("-inf")
    with torch.no_grad(), forced_kernel(kernel):
        y, y_clean, y_deq = q(bad.to(dev)).cpu(), q(x.to(dev)).cpu(), dequantized_linear(lin, qw)(bad)
    assert torch.equal(torch.isfinite(y), torch.isfinite(y_deq)) and y[1].isnan().all()
    rows = [0, 2, 4]
    torch.testing.assert_close(y[rows], y_clean[rows], rtol=0, atol=0)
