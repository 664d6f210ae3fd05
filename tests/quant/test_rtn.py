"""RTN against an independent float64 NumPy reference of the same formula."""

import math

import numpy as np
import pytest
import torch

from lowbit import QuantConfig, quantize_weight
from lowbit.quant.packing import packed_row_bytes

BLOCKS = [16, 32, 64, 128, -1]
SHAPES = [(5, 200), (3, 64), (7, 33), (1, 130)]


def reference_rtn(w: np.ndarray, bits: int, block: int, symmetric: bool, scale_dtype=np.float16):
    """Codes, scale, zero and dequantized weight, float64 throughout (scale/zero rounded to storage first)."""
    n, k = w.shape
    g = k if block == -1 else block
    tiny = 2.0**-24 if scale_dtype == np.float16 else np.finfo(np.float32).tiny
    codes = np.zeros((n, k), np.int64)
    nb = math.ceil(k / g)
    scale = np.zeros((n, nb))
    zero = np.zeros((n, nb))
    for b in range(nb):
        blk = w[:, b * g : (b + 1) * g].astype(np.float64)
        if symmetric:
            half = 2 ** (bits - 1)
            s = np.maximum(np.abs(blk).max(1) / (half - 1), tiny).astype(scale_dtype).astype(np.float64)
            s = np.maximum(s, tiny)
            q = np.clip(np.round(blk / s[:, None]), -half, half - 1) + half
            z = np.full(n, float(half))
        else:
            mn, mx = blk.min(1), blk.max(1)
            raw = np.where(mx > mn, mx - mn, np.abs(mn)) / (2**bits - 1)
            s = np.maximum(np.maximum(raw, tiny).astype(scale_dtype).astype(np.float64), tiny)
            z = (-mn / s).astype(scale_dtype).astype(np.float64)
            q = np.clip(np.round(blk / s[:, None] + z[:, None]), 0, 2**bits - 1)
        codes[:, b * g : (b + 1) * g] = q
        scale[:, b], zero[:, b] = s, z
    deq = (codes - np.repeat(zero, g, 1)[:, :k]) * np.repeat(scale, g, 1)[:, :k]
    return codes, scale, zero, deq


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("symmetric", [False, True])
def test_rtn_matches_float64_reference(shape, block, bits, symmetric, rng):
    w = torch.randn(shape, generator=rng) * torch.rand(shape[0], 1, generator=rng) * 3
    qw = quantize_weight(w, QuantConfig(bits=bits, block_size=block, symmetric=symmetric))
    codes, scale, zero, deq = reference_rtn(w.numpy(), bits, block, symmetric)
    assert torch.equal(qw.unpack().long(), torch.from_numpy(codes))
    assert torch.equal(qw.scale.double(), torch.from_numpy(scale))
    if symmetric:
        assert qw.zero is None
    else:
        assert torch.equal(qw.zero.double(), torch.from_numpy(zero))
    assert qw.dequantize().shape == w.shape and qw.dequantize().dtype == w.dtype
    torch.testing.assert_close(qw.dequantize().double(), torch.from_numpy(deq), rtol=2**-23, atol=1e-7)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("block", [32, -1])
@pytest.mark.parametrize("symmetric", [False, True])
def test_nbytes_is_true_packed_size(bits, block, symmetric, rng):
    n, k = 9, 100
    cfg = QuantConfig(bits=bits, block_size=block, symmetric=symmetric)
    qw = quantize_weight(torch.randn(n, k, generator=rng), cfg)
    nb = 1 if block == -1 else math.ceil(k / block)
    scales = n * nb * 2 * (1 if symmetric else 2)  # float16 scale (+ zero)
    assert qw.packed.shape == (n, packed_row_bytes(k, bits))
    assert qw.nbytes == n * math.ceil(k * bits / 8) + scales


def test_three_bits_cost_three_bits(rng):
    qw = quantize_weight(torch.randn(64, 256, generator=rng), QuantConfig(bits=3, block_size=-1))
    assert qw.packed.numel() == 64 * 256 * 3 // 8


def test_error_shrinks_with_bits(rng):
    w = torch.randn(64, 256, generator=rng)
    errs = [(quantize_weight(w, QuantConfig(bits=b)).dequantize() - w).norm() / w.norm() for b in range(2, 9)]
    assert all(a > b for a, b in zip(errs, errs[1:], strict=False))
    assert errs[2] < 0.12 and errs[-1] < 0.006  # 4-bit and 8-bit block 64 on Gaussian weights


def test_constant_and_zero_blocks_are_exact():
    w = torch.cat([torch.zeros(2, 32), torch.full((2, 32), -0.75), torch.full((2, 32), 3.5)], 1)
    for sym in (False, True):
        qw = quantize_weight(w, QuantConfig(bits=4, block_size=32, symmetric=sym))
        torch.testing.assert_close(qw.dequantize(), w, rtol=1e-3, atol=0)


def test_conv_weight_is_flattened_along_input(rng):
    w = torch.randn(8, 3, 3, 3, generator=rng)
    qw = quantize_weight(w, QuantConfig(bits=8, block_size=-1))
    assert qw.shape == (8, 3, 3, 3) and (qw.n, qw.k) == (8, 27)
    ref = quantize_weight(w.reshape(8, 27), QuantConfig(bits=8, block_size=-1))
    assert torch.equal(qw.packed, ref.packed) and torch.equal(qw.dequantize().reshape(8, 27), ref.dequantize())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_input_dtype_is_restored(dtype, rng):
    w = torch.randn(4, 64, generator=rng).to(dtype)
    assert quantize_weight(w, QuantConfig(bits=4)).dequantize().dtype == dtype


def test_float16_storage(rng):
    w = torch.randn(6, 50, generator=rng)
    qw = quantize_weight(w, QuantConfig(bits=16))
    assert qw.method == "fp16" and qw.scale is None and qw.nbytes == 6 * 50 * 2
    assert torch.equal(qw.dequantize(), w.half().float())
    with pytest.raises(ValueError, match="integer codes"):
        qw.unpack()
    with pytest.raises(ValueError, match="float16's range"):
        quantize_weight(torch.full((2, 4), 1e6), QuantConfig(bits=16))


def test_scale_overflow_names_the_fix():
    with pytest.raises(ValueError, match="scale_dtype='float32'"):
        quantize_weight(torch.tensor([[-1e9, 1e9] * 8]), QuantConfig(bits=4, block_size=16))
    qw = quantize_weight(torch.tensor([[-1e9, 1e9] * 8]), QuantConfig(bits=4, block_size=16, scale_dtype="float32"))
    assert qw.scale.dtype == torch.float32
