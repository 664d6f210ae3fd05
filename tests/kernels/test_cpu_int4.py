"""CPU <=4-bit path: every implementation forced directly against the float64 reference, dispatch and errors."""

import pytest
import torch

from lowbit.kernels import cpu_int4
from lowbit.kernels.cpu_int4 import (
    Int4CpuWeight,
    available_int4_cpu,
    default_impl,
    impl_unsupported_reason,
    linear_int4_cpu,
    prepare_int4_cpu,
    supports_int4_cpu,
)
from lowbit.kernels.reference import linear_reference
from lowbit.quant import QuantConfig, quantize_weight

# SQNR floors (dB): int8 activations (native, kleidiai); bf16 scales/zeros/activations (int4pack, worst at 2 bits);
# fp32 dequantization (dequant).
SQNR_FLOOR = {"native": 38.0, "kleidiai": 36.0, "int4pack": 24.0, "dequant": 100.0}


def sqnr(ref: torch.Tensor, y: torch.Tensor) -> float:
    return float(20 * torch.log10(ref.norm() / (ref - y.double()).norm()))


def _case(rng, n, k, m, bits, block, symmetric, method="rtn"):
    w = torch.randn(n, k, generator=rng)
    x = torch.randn(m, k, generator=rng)
    bias = torch.randn(n, generator=rng)
    qw = quantize_weight(w, QuantConfig(bits=bits, block_size=block, symmetric=symmetric, method=method))
    ref = linear_reference(x.double(), qw.compute_layout(), bias.double(), torch.float64)
    return qw, x, bias, ref


@pytest.mark.parametrize("impl", cpu_int4.IMPLS)
@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("block", [32, 64, 128, -1])
@pytest.mark.parametrize("symmetric", [False, True])
def test_each_impl_matches_reference(rng, impl, bits, block, symmetric):
    n, k = (48, 256) if impl in ("int4pack", "kleidiai") else (37, 200)  # torch ops need N % 16, block | K
    if impl == "int4pack" and block == -1:
        k = 128  # per channel = one block of K, which int4pack takes only for K in 32..256
    qw, x, bias, ref = _case(rng, n, k, 3, bits, block, symmetric)
    reason = impl_unsupported_reason(qw, impl)
    if impl == "kleidiai" and not symmetric:
        assert "symmetric" in reason
        with pytest.raises(ValueError, match="symmetric"):
            prepare_int4_cpu(qw, impl)
        return
    assert reason is None
    w4 = prepare_int4_cpu(qw, impl)
    assert w4.impl == impl
    y = linear_int4_cpu(x, w4, bias)
    assert y.shape == (3, n) and y.dtype == torch.float32
    assert sqnr(ref, y) >= SQNR_FLOOR[impl]


@pytest.mark.parametrize("m", [1, 3, 17])
@pytest.mark.parametrize("act_per_row", [True, False])
def test_native_odd_shapes_hqq(rng, m, act_per_row):
    qw, x, bias, ref = _case(rng, 29, 150, m, 4, 32, False, method="hqq")  # float zeros; K % 64 != 0
    w4 = prepare_int4_cpu(qw, "native", act_per_row=act_per_row)
    assert w4.act_per_row is act_per_row
    y = linear_int4_cpu(x, w4, bias)
    assert sqnr(ref, y) >= SQNR_FLOOR["native"]


@pytest.mark.parametrize("dtype,floor", [(torch.bfloat16, 30.0), (torch.float16, 36.0)])
def test_half_activations_keep_dtype(rng, dtype, floor):
    qw, x, bias, ref = _case(rng, 32, 128, 3, 4, 64, False)
    y = linear_int4_cpu(x.to(dtype), prepare_int4_cpu(qw), bias)
    assert y.dtype == dtype
    assert sqnr(ref, y) >= floor


def test_default_impl_is_native_here(rng):
    qw, *_ = _case(rng, 16, 128, 1, 4, 64, False)
    assert available_int4_cpu()
    assert default_impl(qw) == "native"
    assert prepare_int4_cpu(qw).impl == "native"


def test_default_impl_without_native(rng, monkeypatch):
    monkeypatch.setattr(cpu_int4.cpu_native, "available_native", lambda: False)
    monkeypatch.setattr(cpu_int4.cpu_native, "native_unavailable_reason", lambda: "simulated")
    qw, x, bias, ref = _case(rng, 32, 128, 2, 4, 64, False)
    assert "simulated" in impl_unsupported_reason(qw, "native")
    w4 = prepare_int4_cpu(qw)
    assert w4.impl == "int4pack"
    odd, x2, b2, ref2 = _case(rng, 30, 100, 2, 4, 48, False)  # block 48: neither native nor int4pack
    w_odd = prepare_int4_cpu(odd)
    assert w_odd.impl == "dequant"
    assert sqnr(ref2, linear_int4_cpu(x2, w_odd, b2)) >= SQNR_FLOOR["dequant"]


@pytest.mark.parametrize("bits,block", [(5, 32), (6, -1), (7, 64), (8, -1), (8, 128)])
def test_native_serves_5_to_8_bits(rng, bits, block):
    qw, x, bias, ref = _case(rng, 24, 256, 3, bits, block, False)
    assert supports_int4_cpu(qw) is None and default_impl(qw) == "native"
    w8 = prepare_int4_cpu(qw)
    assert w8.impl == "native" and w8.tensors["packed"].shape == (24, 256)  # one code per byte
    assert sqnr(ref, linear_int4_cpu(x, w8, bias)) >= SQNR_FLOOR["native"]
    assert "4-bit container" in impl_unsupported_reason(qw, "int4pack")


@pytest.mark.parametrize("k,shared", [(256, True), (200, False)])
def test_native_8bit_shares_the_stored_codes_when_k_needs_no_padding(rng, k, shared):
    # memory Low then holds the 8-bit codes once: the stored uint8 (N, K) is already the kernel's container
    qw, x, bias, ref = _case(rng, 24, k, 5, 8, -1, True)
    w8 = prepare_int4_cpu(qw, "native")
    assert (w8.tensors["packed"].data_ptr() == qw.packed.data_ptr()) is shared
    assert sqnr(ref, linear_int4_cpu(x, w8, bias)) >= SQNR_FLOOR["native"]


def test_unsupported_formats(rng, monkeypatch):
    w = torch.randn(16, 64, generator=rng)
    q8 = quantize_weight(w, QuantConfig(bits=8, block_size=-1))
    monkeypatch.setattr(cpu_int4.cpu_native, "available_native", lambda: False)
    monkeypatch.setattr(cpu_int4.cpu_native, "native_unavailable_reason", lambda: "simulated")
    assert "simulated" in supports_int4_cpu(q8)  # 5..8 bits need the native kernel
    with pytest.raises(ValueError, match="simulated"):
        prepare_int4_cpu(q8)
    monkeypatch.undo()
    assert "float16" in supports_int4_cpu(quantize_weight(w, QuantConfig(bits=16)))
    assert "QuantizedWeight" in supports_int4_cpu(w)
    q48 = quantize_weight(w, QuantConfig(bits=4, block_size=48))
    with pytest.raises(ValueError, match="multiple of 32"):
        prepare_int4_cpu(q48, "native")
    with pytest.raises(ValueError, match="unknown"):
        prepare_int4_cpu(q48, "magic")


def test_bad_inputs(rng):
    qw, x, bias, _ = _case(rng, 16, 64, 2, 4, 32, False)
    w4 = prepare_int4_cpu(qw)
    with pytest.raises(ValueError, match=r"expected \(M, 64\)"):
        linear_int4_cpu(x[:, :32], w4)
    with pytest.raises(TypeError, match="floating-point"):
        linear_int4_cpu(x.to(torch.int32), w4)
    with pytest.raises(TypeError, match="Int4CpuWeight"):
        linear_int4_cpu(x, qw)
    with pytest.raises(ValueError, match=r"expected \(16,\)"):
        linear_int4_cpu(x, w4, bias[:8])
    assert isinstance(w4, Int4CpuWeight) and w4.nbytes > 0


def test_memory_low_keeps_the_precision(rng):
    # the README's precision table at memory Low on the CPU: High exact against the dense fp32 path (memory Normal),
    # Normal (int8 per 32 channels) far closer than Low (int8 per row) on unevenly scaled input channels
    import lowbit.nn as lnn
    from lowbit.kernels.cpu_native import available_native
    from lowbit.nn import kernel_for
    from lowbit.runtime import BackendConfig, Kernel

    if not available_native():
        pytest.skip("the activation schemes are the native kernel's")
    lin = torch.nn.Linear(512, 256)
    x = torch.randn(8, 512, generator=rng) * torch.exp(1.5 * torch.randn(512, generator=rng))
    q = lnn.quantize(torch.nn.Sequential(lin), QuantConfig(bits=4, block_size=64))
    with torch.no_grad():
        ref = lnn.set_backend(q, BackendConfig("normal"))(x).double()
        rel = {}
        for precision in ("high", "normal", "low"):
            lnn.set_backend(q, BackendConfig("low", precision))
            assert kernel_for(q[0], "weight", 8) is Kernel.CPU_INT4
            rel[precision] = float((q(x).double() - ref).norm() / ref.norm())
    # measured: 2.6e-7, 0.0097, 0.034
    assert rel["high"] <= 1e-5 and rel["normal"] <= rel["low"] / 2 and rel["normal"] < 0.015, rel
