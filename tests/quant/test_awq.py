"""Activation-aware scale and clip search on plain tensors, against float64 brute force from the inputs."""

import pytest
import torch

from lowbit.quant import QuantConfig, quantize_weight
from lowbit.quant.awq import clip_quantize, clip_rows, search_scales
from lowbit.quant.hessian import InputStats


def _data(rng, n=48, k=128, m=512):
    x = torch.randn(m, k, generator=rng) * torch.exp(1.5 * torch.randn(k, generator=rng))  # outlier channels
    return torch.randn(n, k, generator=rng) * 0.05, x


def _err2(x, w, w_hat):
    return ((x.double() @ (w.double() - w_hat.double()).T) ** 2).sum().item()


def test_scale_search_against_brute_force(rng):
    w, x = _data(rng)
    stats = InputStats(w.shape[1])
    stats.add(x)
    cfg = QuantConfig(bits=4, block_size=32, method="awq")
    s, base, best = search_scales(w, stats.xtx, stats.abs_mean, cfg)
    rtn = quantize_weight(w, QuantConfig(bits=4, block_size=32)).dequantize()
    assert base == pytest.approx(_err2(x, w, rtn), rel=1e-3)
    scaled = quantize_weight((w.double() * s).float(), QuantConfig(bits=4, block_size=32)).dequantize().double() / s
    assert best == pytest.approx(_err2(x, w, scaled), rel=1e-3)
    assert best < 0.8 * base  # uneven input channels: scaling the important ones up pays off
    assert s.shape == (w.shape[1],) and bool((s > 0).all())


def test_scale_search_never_worse_than_rtn(rng):
    w = torch.randn(16, 64, generator=rng)
    x = torch.randn(256, 64, generator=rng)  # even channels: s = 1 (alpha = 0) may well be best
    stats = InputStats(64)
    stats.add(x)
    _, base, best = search_scales(w, stats.xtx, stats.abs_mean, QuantConfig(bits=4, block_size=32, method="awq"))
    assert best <= base


@pytest.mark.parametrize("block,sym", [(32, False), (32, True), (-1, False)])
def test_clip_search_per_block_not_worse_than_rtn(rng, block, sym):
    w, x = _data(rng, k=96)
    w[0, 5] = 1.0  # one outlier weight: clipping its block helps the others
    h = x.double().T @ x.double()
    cfg = QuantConfig(bits=4, block_size=block, symmetric=sym, method="awq")
    got = clip_quantize(w, h, cfg).dequantize().double()
    rtn = quantize_weight(w, QuantConfig(bits=4, block_size=block, symmetric=sym)).dequantize().double()
    g = 96 if block == -1 else block
    for b in range(0, 96, g):
        xb = x[:, b:b + g].double()
        e_got = ((xb @ (w[:, b:b + g].double() - got[:, b:b + g]).T) ** 2).sum(0)  # per row
        e_rtn = ((xb @ (w[:, b:b + g].double() - rtn[:, b:b + g]).T) ** 2).sum(0)
        assert bool((e_got <= e_rtn * (1 + 1e-6) + 1e-12).all())
    assert _err2(x, w, got) < _err2(x, w, rtn)


def test_clip_ratio_one_is_rtn(rng):
    w, x = _data(rng, k=64)
    h = x.double().T @ x.double()
    cfg = QuantConfig(bits=3, block_size=32, method="awq")
    codes, scale, zero = clip_rows(w, h, cfg, ratios=(1.0,))
    rtn = quantize_weight(w, QuantConfig(bits=3, block_size=32))
    assert torch.equal(codes, rtn.unpack()) and torch.equal(scale, rtn.scale) and torch.equal(zero, rtn.zero)
