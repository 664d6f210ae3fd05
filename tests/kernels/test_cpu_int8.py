"""CPU 5..8-bit per-channel path through torch's int8 ops, against the float64 reference."""

import warnings

import pytest
import torch

from lowbit.kernels.cpu_int8 import (
    IMPLS,
    Int8Weight,
    available_int8_dynamic,
    linear_int8_dynamic,
    prepare_int8_dynamic,
    supports_int8_dynamic,
)
from lowbit.kernels.reference import linear_reference
from lowbit.quant import QuantConfig, quantize_weight
from lowbit.runtime.capabilities import cpu_identity
from lowbit.runtime.probes import torch_op_report

# "dynamic" quantizes activations per tensor to 7 bits (reduce_range): ~36 dB on Gaussian data; "int8pack" rounds
# activations and scales to bf16: ~43-50 dB.
SQNR_FLOOR = {"dynamic": 31.0, "int8pack": 40.0}


def sqnr(ref: torch.Tensor, y: torch.Tensor) -> float:
    return float(20 * torch.log10(ref.norm() / (ref - y.double()).norm()))


@pytest.fixture(autouse=True)
def _quiet_deprecation():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantized tensor creation.*deprecated")
        yield


OP = {"dynamic": "int8_dynamic", "int8pack": "int8pack"}


@pytest.fixture(scope="module")
def probe():
    """This machine's numeric probe of torch's int8 ops (what the layers pass to prepare_int8_dynamic)."""
    return torch_op_report(cpu_identity())


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("bits", [5, 6, 7, 8])
@pytest.mark.parametrize("symmetric,method", [(True, "rtn"), (False, "rtn"), (False, "hqq")])
@pytest.mark.parametrize("m", [1, 3, 17])
@pytest.mark.parametrize("aligned", [False, True])
def test_matches_reference(rng, probe, impl, bits, symmetric, method, m, aligned):
    # unaligned N and K are where torch's AVX-512 int8pack kernel fails; shapes the probe refused must raise
    n, k = (48, 128) if aligned else (45, 133 if impl == "dynamic" else 136)
    w = torch.randn(n, k, generator=rng)
    x = torch.randn(m, k, generator=rng) + 0.5  # a mean offset exercises the rowsum zero term
    bias = torch.randn(n, generator=rng)
    qw = quantize_weight(w, QuantConfig(bits=bits, block_size=-1, symmetric=symmetric, method=method))
    w8 = prepare_int8_dynamic(qw, impl, refused=probe.refused_classes(OP[impl]))
    assert (w8.correction is None) == symmetric
    refusal = probe.refusal(OP[impl], m, n, k)
    if refusal is not None:
        with pytest.raises(ValueError, match="refused for M="):
            linear_int8_dynamic(x, w8, bias)
        return
    y = linear_int8_dynamic(x, w8, bias)
    ref = linear_reference(x.double(), qw.compute_layout(), bias.double(), torch.float64)
    assert y.shape == (m, n) and y.dtype == torch.float32
    assert sqnr(ref, y) >= SQNR_FLOOR[impl]


def test_refused_class_raises_before_calling_torch(rng):
    qw = quantize_weight(torch.randn(16, 72, generator=rng), QuantConfig(bits=8, block_size=-1))
    w8 = prepare_int8_dynamic(qw, "int8pack", refused=(("M=2..15, N%16=0, K%16!=0", "crashes (signal 11)"),))
    with pytest.raises(ValueError, match=r"int8pack op is refused for M=3, N=16, K=72 .*crashes \(signal 11\)"):
        linear_int8_dynamic(torch.randn(3, 72, generator=rng), w8)
    whole = prepare_int8_dynamic(qw, "int8pack", refused=(("*", "corrupts memory"),))
    with pytest.raises(ValueError, match="corrupts memory"):
        linear_int8_dynamic(torch.randn(1, 72, generator=rng), whole)


def test_zero_term_is_exact_for_constant_rows(rng):
    # x = c * ones: rowsum(x) carries the whole zero term; a sign error there would be far beyond the tolerance
    w = torch.randn(32, 64, generator=rng) + 2.0
    qw = quantize_weight(w, QuantConfig(bits=8, block_size=-1, symmetric=False))
    x = torch.full((2, 64), 0.75)
    y = linear_int8_dynamic(x, prepare_int8_dynamic(qw))
    ref = linear_reference(x.double(), qw.compute_layout(), None, torch.float64)
    torch.testing.assert_close(y.double(), ref, rtol=1e-2, atol=1e-2)


def test_bf16_input_keeps_dtype(rng):
    qw = quantize_weight(torch.randn(16, 64, generator=rng), QuantConfig(bits=8, block_size=-1))
    y = linear_int8_dynamic(torch.randn(2, 64, generator=rng).bfloat16(), prepare_int8_dynamic(qw))
    assert y.dtype == torch.bfloat16


def test_supports_and_errors(rng):
    w = torch.randn(16, 64, generator=rng)
    assert available_int8_dynamic()
    assert supports_int8_dynamic(quantize_weight(w, QuantConfig(bits=8, block_size=-1))) is None
    assert "cpu_int4" in supports_int8_dynamic(quantize_weight(w, QuantConfig(bits=4, block_size=-1)))
    blocked = quantize_weight(w, QuantConfig(bits=8, block_size=32))
    assert "per channel" in supports_int8_dynamic(blocked)
    with pytest.raises(ValueError, match="per channel"):
        prepare_int8_dynamic(blocked)
    assert "float16" in supports_int8_dynamic(quantize_weight(w, QuantConfig(bits=16)))
    q8 = quantize_weight(w, QuantConfig(bits=8, block_size=-1))
    with pytest.raises(ValueError, match="unknown"):
        prepare_int8_dynamic(q8, "magic")
    odd = quantize_weight(torch.randn(16, 60, generator=rng), QuantConfig(bits=8, block_size=-1))
    with pytest.raises(ValueError, match="divisible by 8"):
        prepare_int8_dynamic(odd, "int8pack")
    w8 = prepare_int8_dynamic(q8)
    assert isinstance(w8, Int8Weight) and w8.impl == "dynamic"
    with pytest.raises(ValueError, match=r"expected \(M, 64\)"):
        linear_int8_dynamic(torch.randn(2, 63), w8)
    with pytest.raises(TypeError, match="floating-point"):
        linear_int8_dynamic(torch.ones(2, 64, dtype=torch.int64), w8)
    with pytest.raises(TypeError, match="Int8Weight"):
        linear_int8_dynamic(torch.randn(2, 64), q8)


def test_weight_only_support_names_k(rng):
    from lowbit.kernels.cpu_int8 import available_int8_weight_only, supports_int8_weight_only

    assert available_int8_weight_only()
    ok = quantize_weight(torch.randn(16, 64, generator=rng), QuantConfig(bits=8, block_size=-1))
    assert supports_int8_weight_only(ok) is None
    odd = quantize_weight(torch.randn(16, 60, generator=rng), QuantConfig(bits=8, block_size=-1))
    assert "K=60 is not a multiple of 8" in supports_int8_weight_only(odd)
    assert "cpu_int4" in supports_int8_weight_only(quantize_weight(torch.randn(16, 64), QuantConfig(bits=4)))
