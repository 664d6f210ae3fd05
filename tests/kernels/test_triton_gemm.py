"""Tiled tensor-core fused dequant GEMM (`gemm_a16w`) against the float64 reference.

Runs under TRITON_INTERPRET=1 on CPU (CI) and natively on a GPU. Shapes are tiny and odd: the interpreter is slow.
"""

import pytest
import torch

pytest.importorskip("triton")

from triton_checks import check, make, use_autotuner  # noqa: E402

from lowbit.kernels.triton_common import available_triton, gemm_configs, prepare_triton, prune_configs  # noqa: E402
from lowbit.kernels.triton_gemm import gemm_a16w  # noqa: E402

pytestmark = pytest.mark.skipif(not available_triton(), reason="needs Triton with CUDA or TRITON_INTERPRET=1")


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("block", [16, 48, 64, -1])
@pytest.mark.parametrize("sym", [False, True])
def test_every_bits_block_sym(bits, block, sym, rng, device):
    # K = 200 is not a multiple of any block here (short last block); N = 40 is not a power of two
    cw = make(rng, 40, 200, bits, block, sym, device)
    bias = torch.randn(40, generator=rng).to(device)
    for m in (1, 17):
        x = torch.randn(m, 200, generator=rng).to(device)
        check(gemm_a16w(x, cw, bias), x, cw, bias)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bits,block", [(4, 64), (2, -1), (8, 32)])
def test_half_dtypes(dtype, bits, block, rng, device):
    cw = make(rng, 24, 160, bits, block, False, device)
    for m in (3, 17):
        x = torch.randn(m, 160, generator=rng).to(device, dtype)
        check(gemm_a16w(x, cw), x, cw, None)


@pytest.mark.parametrize("bm,bn,bk,block", [(16, 16, 32, 48), (16, 32, 16, 16), (32, 16, 64, -1), (16, 16, 64, 64)])
def test_forced_tiles(bm, bn, bk, block, rng, device):
    # several M and N tiles (grouped program order); (bk=32, block=48): per-element scale gather
    cw = make(rng, 40, 200, 4, block, False, device)
    bias = torch.randn(40, generator=rng).to(device)
    x = torch.randn(33, 200, generator=rng).to(device)
    cfg = {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "num_warps": 4, "num_stages": 2}
    check(gemm_a16w(x, cw, bias, config=cfg), x, cw, bias)


def test_transposed_word_layout_hqq_and_noncontiguous_x(rng, device):
    cw = make(rng, 24, 96, 4, 32, False, device, method="hqq")
    x = torch.randn(96, 17, generator=rng).to(device).t()  # (17, 96), column-major
    y = gemm_a16w(x, prepare_triton(cw, scale_dtype=torch.float16))
    check(y, x, cw, None)
    torch.testing.assert_close(y, gemm_a16w(x, cw), rtol=1e-6, atol=1e-6)
    assert gemm_a16w(x[:0], cw).shape == (0, 24)


def test_pruning_keeps_group_fitting_small_tiles(rng):
    x = torch.zeros(3, 96)
    named = {"M": 3, "N": 24, "K": 96, "GROUP": 48, "CB": 4, "x_ptr": x}
    kept = prune_configs(gemm_configs(), named)
    assert kept and all(48 % c.kwargs["BLOCK_K"] == 0 for c in kept)
    named.update(GROUP=64, N=4096)
    assert [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_K"]) for c in prune_configs(gemm_configs(), named)] == [(16, 64)]
    big = {"M": 4096, "N": 8192, "K": 8192, "GROUP": 128, "CB": 4, "x_ptr": x.half()}
    assert len(prune_configs(gemm_configs(), big)) >= 5  # large shapes keep a real choice


def test_errors(rng, device):
    cw = make(rng, 24, 96, 4, 32, False, device)
    x = torch.randn(20, 96, generator=rng).to(device)
    with pytest.raises(ValueError, match=r"expected \(M, 96\)"):
        gemm_a16w(x.t(), cw)
    with pytest.raises(TypeError, match="float16, bfloat16 or float32"):
        gemm_a16w(x.to(torch.int8), cw)
    with pytest.raises(ValueError, match="is on meta"):
        gemm_a16w(x, cw, torch.zeros(24, device="meta"))
    with pytest.raises(ValueError, match="BLOCK_K=8 is too small"):
        gemm_a16w(x, cw, config={"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 8})
    bad = type(cw)(**{**cw.__dict__, "scale": cw.scale[:, :1]})
    with pytest.raises(ValueError, match="scale must be contiguous float32 \\(or float16"):
        gemm_a16w(x, bad)


def test_autotuned_path(rng, device, monkeypatch):
    tuned = use_autotuner(monkeypatch, device, "triton_gemm", "_gemm_a16w_tuned")
    cw = make(rng, 40, 200, 8, 64, False, device)
    x = torch.randn(33, 200, generator=rng).to(device)
    check(gemm_a16w(x, cw), x, cw, None)
    assert 64 % tuned.best_config.kwargs["BLOCK_K"] == 0
