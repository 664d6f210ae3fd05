"""Split-K fused dequant GEMV (`gemv_a16w`) against the float64 reference; shared Triton checks and errors.

Runs under TRITON_INTERPRET=1 on CPU (CI) and natively on a GPU. Shapes are tiny and odd: the interpreter is slow.
"""

import pytest
import torch

pytest.importorskip("triton")

from triton_checks import check, make, use_autotuner  # noqa: E402

from lowbit import QuantConfig, quantize_weight  # noqa: E402
from lowbit.kernels.triton_common import (  # noqa: E402
    available_triton,
    next_pow2,
    prepare_triton,
    supports_triton,
)
from lowbit.kernels.triton_gemv import gemv_a16w  # noqa: E402

pytestmark = pytest.mark.skipif(not available_triton(), reason="needs Triton with CUDA or TRITON_INTERPRET=1")


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("block", [16, 48, 64, -1])
@pytest.mark.parametrize("sym", [False, True])
def test_every_bits_block_sym(bits, block, sym, rng, device):
    # K = 200: no block size here divides it (short last block); N = 24 is not a power of two
    cw = make(rng, 24, 200, bits, block, sym, device)
    bias = torch.randn(24, generator=rng).to(device)
    for m in (1, 3):
        x = torch.randn(m, 200, generator=rng).to(device)
        check(gemv_a16w(x, cw, bias), x, cw, bias)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bits,block", [(4, 64), (2, -1), (8, 32)])
def test_half_dtypes(dtype, bits, block, rng, device):
    cw = make(rng, 40, 160, bits, block, False, device)
    for m in (1, 3, 17):
        x = torch.randn(m, 160, generator=rng).to(device, dtype)
        check(gemv_a16w(x, cw), x, cw, None)


@pytest.mark.parametrize("split_k", [1, 2, 3, 7])
def test_forced_split_k(split_k, rng, device):
    # 7 splits of 2 K tiles: some splits own no tile and must add nothing (bias only from split 0)
    cw = make(rng, 40, 200, 4, 32, False, device)
    bias = torch.randn(40, generator=rng).to(device)
    x = torch.randn(3, 200, generator=rng).to(device)
    check(gemv_a16w(x, cw, bias, split_k=split_k), x, cw, bias)


@pytest.mark.parametrize("block_k,block,bits", [(64, 48, 4), (32, 64, 4), (128, -1, 4), (16, 16, 4),
                                               (128, 64, 4), (128, 128, 8), (256, -1, 2)])
@pytest.mark.parametrize("m", [1, 17])
def test_forced_tiles_both_scale_paths(block_k, block, bits, m, rng, device):
    # (64, 48), (128, 64): a tile spans two blocks -> per-element scale gather; the others: one scale row per tile.
    # M = 17: BLOCK_K / per >= 16 -> one tl.dot per code slice of the words, else on the gathered tile
    cw = make(rng, 24, 296 if block_k == 256 else 96, bits, block, True, device)
    x = torch.randn(m, cw.k, generator=rng).to(device)
    cfg = {"BLOCK_N": 16, "BLOCK_K": block_k, "SPLIT_K": 2, "num_warps": 4, "num_stages": 2}
    check(gemv_a16w(x, cw, config=cfg), x, cw, None)


def test_transposed_word_layout_and_hqq_zeros(rng, device):
    cw = make(rng, 40, 200, 4, 64, False, device, method="hqq")
    x = torch.randn(1, 200, generator=rng).to(device)
    y = gemv_a16w(x, prepare_triton(cw))
    check(y, x, cw, None)
    assert prepare_triton(cw).qweight.stride() == (1, cw.n)
    torch.testing.assert_close(y, gemv_a16w(x, cw), rtol=1e-6, atol=1e-6)
    # fp16 scale/zero are lossless here (QuantConfig stores float16 by default): same numbers, fewer bytes
    half = prepare_triton(cw, scale_dtype=torch.float16)
    assert half.scale.dtype == half.zero.dtype == torch.float16
    torch.testing.assert_close(gemv_a16w(x, half), y, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="scale_dtype=torch.bfloat16 is not supported"):
        prepare_triton(cw, scale_dtype=torch.bfloat16)


def test_noncontiguous_x_and_empty_m(rng, device):
    cw = make(rng, 24, 96, 2, 32, False, device)
    x = torch.randn(96, 3, generator=rng).to(device).t()  # (3, 96), column-major
    check(gemv_a16w(x, cw), x, cw, None)
    assert gemv_a16w(x[:0], cw).shape == (0, 24)


def test_errors(rng, device):
    cw = make(rng, 24, 96, 4, 32, False, device)
    x = torch.randn(2, 96, generator=rng).to(device)
    with pytest.raises(ValueError, match=r"expected \(M, 96\)"):
        gemv_a16w(x[:, :90], cw)
    with pytest.raises(TypeError, match="float16, bfloat16 or float32"):
        gemv_a16w(x.to(torch.int32), cw)
    with pytest.raises(TypeError, match="ComputeWeight"):
        gemv_a16w(x, cw.qweight)
    with pytest.raises(ValueError, match="bias must have shape"):
        gemv_a16w(x, cw, torch.zeros(23, device=device))
    with pytest.raises(ValueError, match="split_k=0"):
        gemv_a16w(x, cw, split_k=0)
    with pytest.raises(ValueError, match="is on meta"):
        gemv_a16w(x, cw.to("meta"))
    mixed = type(cw)(**{**cw.__dict__, "zero": cw.zero.half()})
    with pytest.raises(ValueError, match="zero must be contiguous float32 \\(or float16, both alike\\)"):
        gemv_a16w(x, mixed)


def test_cpu_tensors_need_the_interpreter(rng, monkeypatch):
    cw = make(rng, 24, 96, 4, 32, False, "cpu")
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # read at call time, so this switches the check
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        gemv_a16w(torch.randn(1, 96), cw)


def test_capabilities(rng, monkeypatch):
    qw = quantize_weight(torch.randn(8, 64, generator=rng), QuantConfig(bits=3))
    assert supports_triton(qw) is None and supports_triton(qw.compute_layout()) is None
    fp16 = quantize_weight(torch.randn(8, 64, generator=rng), QuantConfig(bits=16))
    assert "float16" in supports_triton(fp16)
    assert "ComputeWeight" in supports_triton(torch.zeros(1))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert available_triton()
    assert [next_pow2(m) for m in (1, 2, 3, 16, 17)] == [1, 2, 4, 16, 32]


@pytest.mark.parametrize("split_k", [None, 3])
def test_autotuned_path(split_k, rng, device, monkeypatch):
    tuned = use_autotuner(monkeypatch, device, "triton_gemv", "_gemv_a16w_tuned")
    cw = make(rng, 40, 200, 4, 64, False, device)
    bias = torch.randn(40, generator=rng).to(device)
    x = torch.randn(1 if split_k is None else 3, 200, generator=rng).to(device)
    check(gemv_a16w(x, cw, bias, split_k=split_k), x, cw, bias)  # tuning runs wrote the workspace: reset
    assert split_k is None or tuned.best_config.kwargs["SPLIT_K"] == split_k
