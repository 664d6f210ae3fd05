"""The decode (M = 1) path of the native kernel on every ISA variant (the 512-bit row kernels of lowbit_cpu_gemv.h
on AVX-512 VNNI, the per-row kernels elsewhere), and the huge-page placement of prepared weights."""

import re
from pathlib import Path

import pytest
import torch

from lowbit.kernels import cpu_native
from lowbit.kernels.cpu_int4 import prepare_int4_cpu
from lowbit.kernels.cpu_native.build import VARIANTS, build_native, runnable_variants
from lowbit.kernels.cpu_native.hugepages import MIN_BYTES, huge_copy
from lowbit.kernels.reference import linear_reference
from lowbit.quant import QuantConfig, quantize_weight


@pytest.fixture(scope="module", params=runnable_variants())
def variant(request):
    return build_native(flag_sets=VARIANTS[request.param])


def _bound(x: torch.Tensor, w: torch.Tensor, group: int) -> torch.Tensor:
    """0.5 * sum_k |W[n, k]| * d[block(k)]: the most int8 activation rounding (d = absmax / 127 per group) moves y."""
    k = x.shape[1]
    nb = -(-k // group)
    xp = torch.nn.functional.pad(x.double().abs(), (0, nb * group - k)).view(x.shape[0], nb, group)
    return 0.5 * ((xp.amax(-1) / 127).repeat_interleave(group, 1)[:, :k] @ w.double().abs().T)


def _run(w4, x, bias, library, activations):
    t = w4.tensors
    gemm = cpu_native.gemm_q4 if w4.bits <= 4 else cpu_native.gemm_q8
    return gemm(x, t["packed"], t["scale"], t["scale_zero"], w4.k, w4.group_k, bias, library=library,
                activations=activations)


# (bits, block, K): 4-bit blocks of 1, 2, 4, 8 and 16 sub-blocks of 32, per channel (K 256: 8 sub-blocks; K 192:
# 6, the per-row kernel) and 96 (3: the per-row kernel); K 192 and 520 leave a unit past the last 128-code piece
# (Kp % 128 == 64), 520 also cuts its last block short; 8-bit blocks 32, 64 (even), 128, per channel (K 130: padding
# to 192) and 96 (3: the per-row kernel)
CASES = [(4, 32, 192), (4, 64, 520), (4, 128, 520), (4, 128, 1024), (4, 256, 768), (4, 512, 1024), (4, -1, 192),
         (4, -1, 256), (4, 96, 288), (8, 32, 130), (8, 64, 256), (8, 128, 520), (8, -1, 130), (8, -1, 1024),
         (8, 96, 288)]


def test_decode_row_within_bound_and_matches_the_multi_row_kernel(variant, rng):
    for bits, block, k in CASES:
        w = torch.randn(21, k, generator=rng)
        x = torch.randn(3, k, generator=rng) * 3
        bias = torch.randn(21, generator=rng)
        qw = quantize_weight(w, QuantConfig(bits=bits, block_size=block))
        cw = qw.compute_layout()
        ref = linear_reference(x.double(), cw, bias.double(), torch.float64)
        wd = cw.dequantize(torch.float64)
        w4 = prepare_int4_cpu(qw, "native")
        for activations in ("int8/32", "int8/block", "int8/row"):
            y1 = torch.cat([_run(w4, x[i:i + 1].contiguous(), bias, variant, activations) for i in range(3)])
            group = {"int8/32": 32, "int8/row": k}.get(activations, k if block == -1 else block)
            bound = _bound(x, wd, group) + 1e-4 * (1 + ref.abs())
            case = (variant.variant, bits, block, k, activations)
            assert bool(((y1.double() - ref).abs() <= bound).all()), case
            # the same integer dots and scales summed in another order: equal up to fp32 rounding (of the zero
            # term's large cancelling parts too, hence the scale of the largest output)
            y3 = _run(w4, x, bias, variant, activations)
            torch.testing.assert_close(y1, y3, rtol=1e-5, atol=1e-5 * float(ref.abs().max()) + 1e-4,
                                       msg=str(case))


def _thp_mode() -> str:
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "never"
    return re.search(r"\[(\w+)\]", text).group(1)


def _vma_flags(ptr: int) -> str:
    """The VmFlags of the mapping holding address ptr (this process's /proc/self/smaps)."""
    inside, flags = False, ""
    for line in Path("/proc/self/smaps").read_text().splitlines():
        m = re.match(r"([0-9a-f]+)-([0-9a-f]+) ", line)
        if m:
            inside = int(m.group(1), 16) <= ptr < int(m.group(2), 16)
        elif inside and line.startswith("VmFlags:"):
            flags = line
    return flags


def test_huge_copy_is_an_equal_contiguous_copy_on_advised_pages(rng):
    src = torch.randn(300, 257, generator=rng)[:, :256]  # not contiguous
    a, b = huge_copy(src), huge_copy(src.to(torch.uint8))
    assert a.is_contiguous() and a.dtype == src.dtype and torch.equal(a, src)
    assert torch.equal(b, src.to(torch.uint8))
    assert a.data_ptr() % 64 == 0 and b.data_ptr() % 64 == 0
    assert b.data_ptr() >= a.data_ptr() + a.nbytes or a.data_ptr() >= b.data_ptr() + b.nbytes  # no overlap
    small = torch.randn(MIN_BYTES // 8)
    assert huge_copy(small) is small  # under MIN_BYTES: ordinary memory, not copied
    if _thp_mode() != "never" and Path("/proc/self/smaps").exists():
        assert " hg" in _vma_flags(a.data_ptr())  # MADV_HUGEPAGE on its mapping


def test_prepared_native_weight_lives_on_advised_pages(rng):
    qw = quantize_weight(torch.randn(256, 1024, generator=rng), QuantConfig(bits=4, block_size=128))
    w4 = prepare_int4_cpu(qw, "native")
    if _thp_mode() != "never" and Path("/proc/self/smaps").exists():
        assert " hg" in _vma_flags(w4.tensors["packed"].data_ptr())
    assert torch.equal(w4.tensors["packed"], cpu_native.pack_q4(qw.unpack()))
