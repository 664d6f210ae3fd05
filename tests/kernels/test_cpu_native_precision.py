"""The native kernel's activation schemes (one per precision) on every ISA variant this CPU runs, against float64:
fp32 exact up to fp32 summation (precision High), int8 with a scale per 32 channels within its rounding bound
(Normal), and what each costs in accuracy on activations with outlier channels."""

import pytest
import torch

from lowbit.kernels import cpu_native
from lowbit.kernels.cpu_native.build import VARIANTS, build_native, runnable_variants
from lowbit.kernels.reference import linear_reference
from lowbit.quant import QuantConfig, quantize_weight


@pytest.fixture(scope="module", params=runnable_variants())
def variant(request):
    """Every ISA variant this CPU runs (the LOWBIT_NATIVE_VARIANT builds), from the user cache."""
    return build_native(flag_sets=VARIANTS[request.param])


def _operands(qw, k: int, block: int):
    pack = cpu_native.pack_q4 if qw.bits <= 4 else cpu_native.pack_q8
    group_k = -(-k // 64) * 64 if block == -1 else block
    s = qw.scale.float().contiguous()
    return pack(qw.unpack()), s, (s * qw.zero_or_implicit().float()).contiguous(), k, group_k


def _run(lib, qw, x, bias, block, activations):
    gemm = cpu_native.gemm_q4 if qw.bits <= 4 else cpu_native.gemm_q8
    return gemm(x, *_operands(qw, x.shape[1], block), bias, library=lib, activations=activations)


def _bound32(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Largest |error| of int8 rounding with one scale per 32 channels: 0.5 * sum_k |W[n,k]| * absmax_32(k) / 127."""
    m, k = x.shape
    xp = torch.nn.functional.pad(x.double().abs(), (0, -k % 32)).view(m, -1, 32)
    d = (xp.amax(-1) / 127).repeat_interleave(32, 1)[:, :k]
    return 0.5 * (d @ w.double().abs().T)


# (bits, block, K): 4-bit blocks 32/64/128 (K 520: a last block of 128 cut short), per channel (K 130: Kp 192, a
# last piece of 2 channels), a block of 96 (odd sub-block count), 5..8 bits in the 8-bit container; 8-bit per channel
# over two 512-code tile chunks and blocks of 128 / 256 (K 1000: the last block cut short)
CASES = [(4, 64, 200), (4, -1, 130), (4, 128, 520), (4, 32, 96), (3, 96, 288), (8, -1, 130), (8, 32, 200),
         (6, 64, 320), (8, -1, 1000), (8, 128, 1000), (8, 256, 768)]


@pytest.mark.parametrize("m", [1, 6, 21])  # 21: the tiled AVX-512 kernel and the fp32 tile + GEMM path
def test_fp32_activations_are_exact(variant, rng, m):
    for bits, block, k in CASES:
        n = 37
        qw = quantize_weight(torch.randn(n, k, generator=rng), QuantConfig(bits=bits, block_size=block))
        x = torch.randn(m, k, generator=rng) * torch.where(torch.rand(k, generator=rng) < 0.05, 30.0, 1.0)
        bias = torch.randn(n, generator=rng)
        y = _run(variant, qw, x, bias, block, "fp32")
        w = qw.compute_layout().dequantize(torch.float64)
        ref = x.double() @ w.T + bias.double()
        mag = x.double().abs() @ w.abs().T + bias.double().abs()  # what fp32 summation errs relative to
        err = (y.double() - ref).abs()
        assert bool((err <= 2e-6 * mag).all()), (variant.variant, bits, block, k, float((err / mag).max()))
        assert float((y.double() - ref).norm() / ref.norm()) <= 1e-5


@pytest.mark.parametrize("m", [1, 3, 6, 21])  # 8-bit: rows below M = 4, the tiled kernels from 4
def test_int8_per_32_within_its_rounding_bound(variant, rng, m):
    for bits, block, k in CASES:
        n = 37
        qw = quantize_weight(torch.randn(n, k, generator=rng), QuantConfig(bits=bits, block_size=block))
        x = torch.randn(m, k, generator=rng) * torch.where(torch.rand(k, generator=rng) < 0.05, 30.0, 1.0)
        bias = torch.randn(n, generator=rng)
        y = _run(variant, qw, x, bias, block, "int8/32")
        cw = qw.compute_layout()
        ref = linear_reference(x.double(), cw, bias.double(), torch.float64)
        bound = _bound32(x, cw.dequantize(torch.float64)) + 1e-5 * (1 + ref.abs())
        err = (y.double() - ref).abs()
        assert bool((err <= bound).all()), (variant.variant, bits, block, k, float((err - bound).max()))


def test_outlier_channels_cost_per_row_int8_not_per_32(native_lib, rng):
    # one channel 100x the others (as in transformer hidden states): a row scale leaves ~1 level for the rest
    n, k, m = 64, 512, 4
    qw = quantize_weight(torch.randn(n, k, generator=rng), QuantConfig(bits=4, block_size=128))
    x = torch.randn(m, k, generator=rng)
    x[:, 7] *= 100
    ref = linear_reference(x.double(), qw.compute_layout(), None, torch.float64)

    def rel(act):
        return float((_run(native_lib, qw, x, None, 128, act).double() - ref).norm() / ref.norm())

    fp32, per32, block, row = rel("fp32"), rel("int8/32"), rel("int8/block"), rel("int8/row")
    assert fp32 < 1e-6 and per32 < 0.02 and row > 3 * per32 and block > per32, (fp32, per32, block, row)


@pytest.fixture(scope="module")
def native_lib():
    if not cpu_native.available_native():
        pytest.fail(f"native kernels must build here: {cpu_native.native_unavailable_reason()}")
    return cpu_native.native_library()


def test_fp32_blocked_path_matches_the_register_kernel(native_lib, rng, monkeypatch):
    # the two fp32 forms (register kernel below F32_BLOCKED_MIN_M, tiles + torch GEMM from it) agree to fp32
    qw = quantize_weight(torch.randn(300, 256, generator=rng), QuantConfig(bits=4, block_size=64))
    x = torch.randn(20, 256, generator=rng)
    monkeypatch.setattr(cpu_native, "_F32_TILE_BYTES", 64 * 256 * 4)  # 5 tiles, the last one short
    tiled = _run(native_lib, qw, x, None, 64, "fp32")
    monkeypatch.setattr(cpu_native, "F32_BLOCKED_MIN_M", 10**6)
    rows = _run(native_lib, qw, x, None, 64, "fp32")
    assert float((tiled - rows).norm() / rows.norm()) < 1e-6  # summation order only


def test_unknown_scheme_is_rejected(native_lib, rng):
    qw = quantize_weight(torch.randn(8, 64, generator=rng), QuantConfig(bits=4, block_size=64))
    with pytest.raises(ValueError, match="activations='int4' is unknown"):
        _run(native_lib, qw, torch.randn(1, 64), None, 64, "int4")
