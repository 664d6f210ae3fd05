"""Native C kernel: build, layout, exact error bound against the float64 reference, and the no-compiler fallback."""

import os
import warnings

import pytest
import torch

from lowbit.kernels import cpu_native
from lowbit.kernels.cpu_native.build import (
    PORTABLE_FLAGS,
    VARIANT_ENV,
    VARIANTS,
    NativeBuildError,
    build_native,
    cpu_flags,
    runnable_variants,
    variant_flag_sets,
)
from lowbit.kernels.reference import linear_reference
from lowbit.quant import QuantConfig, quantize_weight
from lowbit.runtime.capabilities import cpu_features


@pytest.fixture(scope="module")
def native():
    if not cpu_native.available_native():
        pytest.fail(f"native kernels must build on the CI machine: {cpu_native.native_unavailable_reason()}")
    return cpu_native.native_library()


def _activation_bound(x: torch.Tensor, w: torch.Tensor, group_k: int) -> torch.Tensor:
    """Largest |error| int8 activation rounding can cause: 0.5 * sum_k |W[n,k]| * d[m, block(k)], d = absmax/127.

    A kernel that mishandles zeros, scales, padding or a partial last block misses this by orders of magnitude.
    """
    m, k = x.shape
    nb = -(-k // group_k)
    xp = torch.nn.functional.pad(x.double().abs(), (0, nb * group_k - k)).view(m, nb, group_k)
    d = (xp.amax(-1) / 127).repeat_interleave(group_k, 1)[:, :k]  # (M, K)
    return 0.5 * (d @ w.double().abs().T)


def test_pack_q4_layout():
    codes = torch.arange(70, dtype=torch.int64).remainder(16).to(torch.uint8).view(1, 70)
    packed = cpu_native.pack_q4(codes)
    assert packed.shape == (1, 64)  # K=70 -> Kp=128 -> 64 bytes
    assert int(packed[0, 0]) == codes[0, 0] | (codes[0, 32] << 4)
    assert int(packed[0, 33]) == codes[0, 65] | (0 << 4)  # unit 1: code 65 low, padding (code 97) high


def test_pack_q4_rejects_wide_codes():
    with pytest.raises(ValueError, match="4-bit codes must be < 16"):
        cpu_native.pack_q4(torch.full((2, 8), 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8 codes"):
        cpu_native.pack_q4(torch.zeros(2, 8, dtype=torch.int32))


@pytest.mark.parametrize("m", [1, 3, 17])
@pytest.mark.parametrize("n,k,block", [(37, 100, -1), (48, 96, 32), (40, 320, 64), (33, 200, 128), (16, 520, 256),
                                       (24, 192, 96)])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("act_per_row", [True, False])
def test_gemm_q4_within_activation_bound(native, rng, m, n, k, block, symmetric, act_per_row):
    w = torch.randn(n, k, generator=rng)
    x = torch.randn(m, k, generator=rng) * 3
    bias = torch.randn(n, generator=rng)
    qw = quantize_weight(w, QuantConfig(bits=4, block_size=block, symmetric=symmetric))
    packed = cpu_native.pack_q4(qw.unpack())
    group_k = packed.shape[1] * 2 if block == -1 else block
    s = qw.scale.float().contiguous()
    sz = (s * qw.zero_or_implicit().float()).contiguous()
    y = cpu_native.gemm_q4(x, packed, s, sz, k, group_k, bias, act_per_row=act_per_row)
    cw = qw.compute_layout()
    ref = linear_reference(x.double(), cw, bias.double(), torch.float64)
    act_group = k if act_per_row else group_k
    bound = _activation_bound(x, cw.dequantize(torch.float64), act_group) + 1e-4 * (1 + ref.abs())
    assert y.dtype == torch.float32 and y.shape == (m, n)
    assert bool(((y.double() - ref).abs() <= bound).all()), float(((y.double() - ref).abs() - bound).max())


def _operands(qw, k: int, block: int):
    """(packed, scale, scale * zero, k, group_k) for gemm_q4 (bits <= 4) or gemm_q8 (5..8 bits)."""
    pack = cpu_native.pack_q4 if qw.bits <= 4 else cpu_native.pack_q8
    group_k = -(-k // 64) * 64 if block == -1 else block
    s = qw.scale.float().contiguous()
    return pack(qw.unpack()), s, (s * qw.zero_or_implicit().float()).contiguous(), k, group_k


def _gemm(bits: int):
    return cpu_native.gemm_q4 if bits <= 4 else cpu_native.gemm_q8


@pytest.fixture(scope="module", params=runnable_variants())
def variant(request):
    """Every ISA variant this CPU runs (best first: AVX-512 VNNI, AVX-VNNI, AVX2, portable), built in the user cache
    (keyed by flags, so it sits beside the default build and later runs reuse it)."""
    return build_native(flag_sets=VARIANTS[request.param])


# int4 blocks 32/64/128 (K 520: a last block of 128 cut short by the padding to 64), per channel, and 5..8 bits
VARIANT_CASES = [(4, 64, 200), (4, -1, 130), (4, 128, 520), (4, 32, 96), (2, 96, 288), (8, -1, 130), (8, 32, 200),
                 (6, 64, 320), (8, 128, 520), (5, -1, 64)]


@pytest.mark.parametrize("m", [1, 6])
def test_each_variant_within_activation_bound(variant, rng, m):
    # every variant computes the same integer dots: each must meet the float64 bound on its own, not only agree
    for bits, block, k in VARIANT_CASES:
        w = torch.randn(19, k, generator=rng)
        x = torch.randn(m, k, generator=rng) * 3
        qw = quantize_weight(w, QuantConfig(bits=bits, block_size=block))
        cw = qw.compute_layout()
        ref = linear_reference(x.double(), cw, None, torch.float64)
        for per_row in (True, False):
            y = _gemm(bits)(x, *_operands(qw, k, block), act_per_row=per_row, library=variant)
            act_group = k if per_row or block == -1 else block
            bound = _activation_bound(x, cw.dequantize(torch.float64), act_group) + 1e-4 * (1 + ref.abs())
            err = (y.double() - ref).abs() - bound
            assert bool((err <= 0).all()), (variant.variant, bits, block, k, per_row, float(err.max()))


# The register-tiled path (AVX-512 VNNI, M >= 16 rows; lowbit_cpu_tile512.h): M just below / at / above the
# threshold and not a multiple of the 4-row micro-tile; N with tail tiles of < 16 and 16..31 rows; K with a short
# last block, blocks straddling the 512-code chunks (96 at K 600, per channel at K 700 and 1000), bits 2..8; the
# AVX2 8-bit paths (lowbit_cpu_tile256.h from M 16, and below it the row kernels in K-chunks of ~1024 codes): K past
# 2048 per channel and in blocks of 96 (chunks of 960) with a short last chunk.
TILE_CASES = [(2, 64, 200, 45), (3, 96, 600, 70), (4, 128, 520, 33), (4, -1, 700, 32), (5, 32, 300, 17),
              (6, 64, 330, 50), (7, 128, 640, 31), (8, -1, 1000, 40), (8, 128, 520, 64), (8, -1, 2100, 20),
              (8, 96, 2000, 18)]


@pytest.mark.parametrize("m", [15, 16, 21])
def test_tiled_path_within_bound_and_matches_rows(variant, rng, m):
    for bits, block, k, n in TILE_CASES:
        w = torch.randn(n, k, generator=rng)
        x = torch.randn(m, k, generator=rng) * 3
        bias = torch.randn(n, generator=rng)
        qw = quantize_weight(w, QuantConfig(bits=bits, block_size=block))
        cw = qw.compute_layout()
        ref = linear_reference(x.double(), cw, bias.double(), torch.float64)
        ops = _operands(qw, k, block)
        for per_row in (True, False):
            y = _gemm(bits)(x, *ops, bias, act_per_row=per_row, library=variant)
            act_group = k if per_row or block == -1 else block
            bound = _activation_bound(x, cw.dequantize(torch.float64), act_group) + 1e-4 * (1 + ref.abs())
            err = (y.double() - ref).abs() - bound
            case = (variant.variant, bits, block, k, n, per_row)
            assert bool((err <= 0).all()), (*case, float(err.max()))
            # the same rows one at a time take the row kernels: the same integer dots, fp32 sums in another order
            rows = torch.cat([_gemm(bits)(x[i:i + 1], *ops, bias, act_per_row=per_row, library=variant)
                              for i in range(0, m, 7)])
            torch.testing.assert_close(y[::7], rows, rtol=1e-5, atol=1e-4 * float(rows.abs().max()), msg=str(case))


def test_default_build_is_the_best_variant_here(native):
    pinned = os.environ.get(VARIANT_ENV, "")
    if pinned and pinned != "native":  # the suite run pinned to a lower variant (as CI on another CPU kind)
        assert native.variant == pinned
        return
    assert native.variant == runnable_variants()[0]
    assert cpu_native.native_variant() == native.variant
    if {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"} <= (cpu_flags() or set()):
        assert native.variant == "avx512vnni"  # vpdpbusd compiled in (lb_isa() reports it)


@pytest.mark.skipif("avx2" not in cpu_features(), reason="x86 variants")
def test_every_x86_variant_compiles_and_names_its_isa():
    # variants this CPU cannot run (AVX-VNNI on Zen 4) are still compiled and loaded (lb_isa() runs no SIMD code), so
    # their #if paths cannot rot unseen; their numbers are checked on CPUs that run them
    for name in ("avx512vnni", "avxvnni", "avx2"):
        assert build_native(flag_sets=VARIANTS[name]).variant == name


def test_variant_selection_follows_cpu_flags():
    assert runnable_variants(frozenset({"avx2", "fma", "f16c"})) == ("avx2", "portable")
    zen4 = frozenset({"avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni"})
    assert runnable_variants(zen4) == ("avx512vnni", "avx2", "portable")
    assert runnable_variants(frozenset({"avx2", "fma", "f16c", "avx_vnni"}))[0] == "avxvnni"
    assert runnable_variants(frozenset()) == ("portable",)
    assert cpu_flags("processor: 0\nflags : fpu avx2 fma\n") == {"fpu", "avx2", "fma"}


def test_pinning_a_variant_the_cpu_lacks_is_an_error(monkeypatch):
    missing = next((v for v in ("avx512vnni", "avxvnni", "avx2") if v not in runnable_variants()), None)
    if missing is None:
        pytest.skip("this CPU runs every x86 variant")
    monkeypatch.setenv(VARIANT_ENV, missing)
    with pytest.raises(NativeBuildError, match="does not report"):
        variant_flag_sets()


def test_pack_q8_layout():
    codes = torch.arange(70 * 2, dtype=torch.int64).remainder(256).to(torch.uint8).view(2, 70)
    packed = cpu_native.pack_q8(codes)
    assert packed.shape == (2, 128) and torch.equal(packed[:, :70], codes) and not packed[:, 70:].any()
    with pytest.raises(ValueError, match="uint8 codes"):
        cpu_native.pack_q8(codes.int())


@pytest.fixture(scope="module")
def portable(tmp_path_factory):
    """The plain-C build (no SIMD flags, no OpenMP), in a private cache so it never replaces the fast one."""
    return build_native(root=tmp_path_factory.mktemp("portable"), flag_sets=PORTABLE_FLAGS)


@pytest.mark.parametrize("act_per_row", [True, False])
def test_portable_c_build_matches_simd(native, portable, rng, act_per_row):
    # the plain-C fallback (no AVX2, no OpenMP) computes the same integer dots: equal up to fp32 summation order
    assert not portable.simd and not portable.openmp
    for block, k in ((64, 200), (32, 96), (-1, 130), (96, 288)):
        qw = quantize_weight(torch.randn(19, k, generator=rng), QuantConfig(bits=4, block_size=block))
        packed = cpu_native.pack_q4(qw.unpack())
        group_k = packed.shape[1] * 2 if block == -1 else block
        args = (packed, qw.scale.float().contiguous(), (qw.scale.float() * qw.zero.float()).contiguous(), k, group_k)
        x = torch.randn(5, k, generator=rng)
        y_simd = cpu_native.gemm_q4(x, *args, act_per_row=act_per_row)
        y_c = cpu_native.gemm_q4(x, *args, act_per_row=act_per_row, library=portable)
        torch.testing.assert_close(y_c, y_simd, rtol=1e-5, atol=1e-4)


@pytest.mark.skipif("avx2" not in cpu_features(), reason="the AVX2 variant needs an x86 CPU with AVX2")
def test_pinned_avx2_variant_matches_native(native, rng, tmp_path, monkeypatch):
    # on an AVX-512 machine -march=native may emit AVX-512; the variant an AVX2-only CPU builds must agree with it
    monkeypatch.setenv(VARIANT_ENV, "avx2")
    avx2 = build_native(root=tmp_path)
    assert avx2.flags == VARIANTS["avx2"][0] and avx2.simd
    for block, k in ((64, 200), (-1, 130)):
        qw = quantize_weight(torch.randn(21, k, generator=rng), QuantConfig(bits=4, block_size=block))
        packed = cpu_native.pack_q4(qw.unpack())
        group_k = packed.shape[1] * 2 if block == -1 else block
        args = (packed, qw.scale.float().contiguous(), (qw.scale.float() * qw.zero.float()).contiguous(), k, group_k)
        x = torch.randn(3, k, generator=rng)
        torch.testing.assert_close(cpu_native.gemm_q4(x, *args, library=avx2), cpu_native.gemm_q4(x, *args),
                                   rtol=1e-5, atol=1e-4)


def test_unknown_variant_is_a_build_error(monkeypatch, tmp_path):
    monkeypatch.setenv(VARIANT_ENV, "avx9000")
    with pytest.raises(NativeBuildError, match="LOWBIT_NATIVE_VARIANT='avx9000' is unknown"):
        build_native(root=tmp_path)


def test_per_block_scales_are_tighter_with_outliers(native, rng):
    # one huge activation per row: per-row scales lose the other blocks' precision, per-block scales keep it
    qw = quantize_weight(torch.randn(32, 512, generator=rng), QuantConfig(bits=4, block_size=64))
    x = torch.randn(4, 512, generator=rng)
    x[:, 0] = 300.0
    args = (cpu_native.pack_q4(qw.unpack()), qw.scale.float().contiguous(),
            (qw.scale.float() * qw.zero.float()).contiguous(), 512, 64)
    ref = linear_reference(x.double(), qw.compute_layout(), None, torch.float64)
    err_row = (cpu_native.gemm_q4(x, *args, act_per_row=True).double() - ref).norm()
    err_block = (cpu_native.gemm_q4(x, *args, act_per_row=False).double() - ref).norm()
    assert err_block < 0.6 * err_row  # 8 blocks: the outlier's block dominates per-block error, ~1/sqrt(8)


def test_gemm_q4_single_thread_matches_threads(native, rng):
    w = torch.randn(64, 256, generator=rng)
    x = torch.randn(5, 256, generator=rng)
    qw = quantize_weight(w, QuantConfig(bits=4, block_size=64))
    args = (cpu_native.pack_q4(qw.unpack()), qw.scale.float().contiguous(),
            (qw.scale.float() * qw.zero.float()).contiguous(), 256, 64)
    assert torch.equal(cpu_native.gemm_q4(x, *args, num_threads=1), cpu_native.gemm_q4(x, *args, num_threads=2))


def test_build_reports_simd_and_cache(native):
    assert native.flags[0] == "-O3"
    assert native.path.endswith("lowbit_cpu.so")
    again = build_native()  # cached: no recompile, same file
    assert again.path == native.path


def test_missing_compiler_falls_back(monkeypatch, tmp_path):
    monkeypatch.setenv("LOWBIT_CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(NativeBuildError, match="not found"):
        build_native(root=tmp_path)
    cpu_native.reset_native()
    try:
        with pytest.warns(UserWarning, match="native CPU kernels unavailable"):
            assert cpu_native.available_native() is False
        assert "no-such-cc" in cpu_native.native_unavailable_reason()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # warned once only
            assert cpu_native.available_native() is False
        with pytest.raises(RuntimeError, match="unavailable"):
            cpu_native.gemm_q4(torch.zeros(1, 64), torch.zeros(1, 32, dtype=torch.uint8), torch.ones(1, 1),
                               torch.zeros(1, 1), 64, 64)
    finally:
        monkeypatch.delenv("LOWBIT_CC")
        cpu_native.reset_native()
    assert cpu_native.available_native()


def test_broken_compiler_reports_every_attempt(tmp_path):
    fake = tmp_path / "fakecc"
    fake.write_text("#!/bin/sh\necho 'fake compiler failure' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(NativeBuildError, match="fake compiler failure") as info:
        build_native(compiler=str(fake), root=tmp_path)
    assert str(info.value).count("failed") == len(variant_flag_sets())  # every flag set was tried
