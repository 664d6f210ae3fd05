"""Dynamic int8 activations: `quantize_rows_int8` (exact against torch) and `gemm_a8w` (W8A8 / W4A8 / W2A8).

The integer part of the GEMM (int8 x int8 -> int32 per tile, zero via the activation row sum) is checked exactly
against int64 torch math; the float result against the float64 reference on the int8-rounded activations (tight)
and on the original activations (an SQNR floor: 8-bit activations cost accuracy).
"""

import math

import pytest
import torch

pytest.importorskip("triton")

from triton_checks import TOL, make, use_autotuner  # noqa: E402

from lowbit.kernels.reference import linear_reference  # noqa: E402
from lowbit.kernels.triton_common import available_triton, prepare_triton  # noqa: E402
from lowbit.kernels.triton_int8 import (  # noqa: E402
    gemm_a8w,
    quantize_rows_int8,
    quantize_rows_int8_with_sums,
    supports_a8w,
)  # noqa: E402
from lowbit.quant import ComputeWeight, pack_words  # noqa: E402

pytestmark = pytest.mark.skipif(not available_triton(), reason="needs Triton with CUDA or TRITON_INTERPRET=1")

def torch_rows_int8(x):
    absmax = x.float().abs().amax(dim=1)
    inv = torch.where(absmax > 0, 127.0 / absmax, torch.zeros_like(absmax))
    v = x.float() * inv[:, None]
    return torch.where(v >= 0, torch.floor(v + 0.5), torch.ceil(v - 0.5)).to(torch.int8), absmax / 127.0


def check_a8w(y, x, cw, bias):
    xq, xs = quantize_rows_int8(x)
    x8 = xq.double() * xs.double()[:, None]  # the activations the kernel really multiplies
    b = None if bias is None else bias.double()
    ref8 = linear_reference(x8, cw, b, torch.float64).cpu()
    yd = y.double().cpu()
    assert y.dtype == x.dtype and y.shape == ref8.shape
    assert (yd - ref8).abs().max() <= TOL[x.dtype] * ref8.abs().max()
    ref = linear_reference(x.double(), cw, b, torch.float64).cpu()
    assert 20 * math.log10(ref.norm() / (yd - ref).norm()) >= 30.0  # int8 activations: ~40 dB on Gaussian rows


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_quantize_rows_matches_torch(dtype, rng, device):
    x = (torch.randn(5, 200, generator=rng) * torch.logspace(-3, 3, 5)[:, None]).to(device, dtype)
    x[2] = 0  # an all-zero row: scale 0, codes 0
    xq, xs = quantize_rows_int8(x[:, ::1].t().contiguous().t())  # non-contiguous input
    ref_q, ref_s = torch_rows_int8(x.cpu())
    assert xq.dtype == torch.int8 and xs.dtype == torch.float32 and xq.shape == (5, 200) and xs.shape == (5,)
    torch.testing.assert_close(xs.cpu(), ref_s, rtol=1e-6, atol=0)
    diff = (xq.cpu().int() - ref_q.int()).abs()
    assert diff.max() <= 1 and (diff == 0).float().mean() >= 0.999  # GPU division may round a tie differently
    assert xs[2] == 0 and (xq[2] == 0).all() and xq.abs().max() == 127
    xq2, xs2, sums = quantize_rows_int8_with_sums(x, 64)  # the GEMM's block sums: blocks of 64, last one 8
    assert torch.equal(xq2, xq) and torch.equal(xs2, xs) and sums.shape == (5, 4)
    ref_sums = torch.stack([xq.cpu().long()[:, b:b + 64].sum(1) for b in range(0, 200, 64)], 1)
    assert torch.equal(sums.cpu().long(), ref_sums)


@pytest.mark.parametrize("cb,block", [(8, -1), (8, 32), (4, 32), (4, -1), (2, 64)])
def test_integer_part_is_exact(cb, block, rng, device):
    # integer x with row absmax 127 -> x_scale = 1, xq = x; scale 1, zero 0 -> y = xq @ q.T exactly (< 2**24)
    m, n, k = 17, 24, 200
    x = torch.randint(-127, 128, (m, k), generator=rng).float()
    x[:, 0] = 127
    q = torch.randint(0, 1 << cb, (n, k), generator=rng)
    g = k if block == -1 else block
    nb = -(-k // g)
    cw = ComputeWeight(qweight=pack_words(q, cb), scale=torch.ones(n, nb), zero=torch.zeros(n, nb), bits=cb,
                       container_bits=cb, group_size=g, n=n, k=k).to(device)
    y = gemm_a8w(x.to(device), cw)
    assert torch.equal(y.cpu().long(), x.long() @ q.long().T)
    assert torch.equal(quantize_rows_int8(x.to(device))[0].cpu().long(), x.long())


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("block", [32, 64, 96, -1])
@pytest.mark.parametrize("sym", [False, True])
def test_every_bits_block_sym(bits, block, sym, rng, device):
    cw = make(rng, 40, 200, bits, block, sym, device)  # K % block != 0 for every block here
    bias = torch.randn(40, generator=rng).to(device)
    for m in (1, 17):
        x = torch.randn(m, 200, generator=rng).to(device)
        check_a8w(gemm_a8w(x, cw, bias), x, cw, bias)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_dtypes_hqq_and_transposed_words(dtype, rng, device):
    cw = make(rng, 24, 160, 4, 32, False, device, method="hqq")  # fractional zeros
    x = torch.randn(3, 160, generator=rng).to(device, dtype)
    y = gemm_a8w(x, prepare_triton(cw, scale_dtype=torch.float16))  # fractional zeros, exact in fp16 storage
    check_a8w(y, x, cw, None)
    torch.testing.assert_close(y, gemm_a8w(x, cw), rtol=0, atol=0)


@pytest.mark.parametrize("bm,bn,bk,block", [(16, 16, 32, 96), (32, 16, 32, 64), (16, 32, 64, -1)])
def test_forced_tiles(bm, bn, bk, block, rng, device):
    cw = make(rng, 40, 200, 8, block, True, device)
    x = torch.randn(33, 200, generator=rng).to(device)
    cfg = {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "num_warps": 4, "num_stages": 2}
    check_a8w(gemm_a8w(x, cw, config=cfg), x, cw, None)


def test_errors(rng, device):
    cw = make(rng, 24, 96, 4, 64, False, device)
    x = torch.randn(3, 96, generator=rng).to(device)
    with pytest.raises(ValueError, match="BLOCK_K=128 does not divide group_size=64"):
        gemm_a8w(x, cw, config={"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 128})
    with pytest.raises(ValueError, match="BLOCK_K=16 is too small"):
        gemm_a8w(x, cw, config={"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16})
    cw48 = make(rng, 24, 96, 4, 48, False, device)
    assert "multiple of 32" in supports_a8w(cw48) and supports_a8w(cw) is None
    with pytest.raises(ValueError, match="block size 48 is not a multiple of 32"):
        gemm_a8w(x, cw48)
    with pytest.raises(ValueError, match=r"expected \(M, 96\)"):
        gemm_a8w(x[:, 1:], cw)
    with pytest.raises(TypeError, match="float16, bfloat16 or float32"):
        quantize_rows_int8(x.to(torch.int64))
    with pytest.raises(ValueError, match="must be 2-D"):
        quantize_rows_int8(x[0])
    with pytest.raises(TypeError, match="float16, bfloat16 or float32"):
        gemm_a8w(x.to(torch.int8), cw)


def test_autotuned_path(rng, device, monkeypatch):
    tuned = use_autotuner(monkeypatch, device, "triton_int8", "_gemm_a8w_tuned")
    cw = make(rng, 40, 200, 4, 64, False, device)
    x = torch.randn(17, 200, generator=rng).to(device)
    check_a8w(gemm_a8w(x, cw), x, cw, None)
    assert 64 % tuned.best_config.kwargs["BLOCK_K"] == 0
