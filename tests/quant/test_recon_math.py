"""lowbit.quant.recon on plain tensors: AdaRound's pieces, straight-through fake quantization, exact packing."""

import math

import pytest
import torch

from lowbit.quant import QuantConfig, quantize_weight
from lowbit.quant.recon import (
    GAMMA,
    ZETA,
    LearnedWeight,
    annealed_beta,
    rectified_sigmoid,
    rectified_sigmoid_inverse,
    rounding_regularizer,
)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def test_rectified_sigmoid_and_regulariser_match_float64(gen):
    v = torch.randn(1000, generator=gen, dtype=torch.float64) * 4
    h = torch.clamp(1 / (1 + torch.exp(-v)) * (ZETA - GAMMA) + GAMMA, 0, 1)
    torch.testing.assert_close(rectified_sigmoid(v.float()).double(), h, rtol=0, atol=1e-6)
    assert rectified_sigmoid(torch.tensor([-50.0, 50.0])).tolist() == [0.0, 1.0]  # reaches 0 and 1 exactly
    for beta in (20.0, 2.0):
        ref = (1 - (2 * h - 1).abs() ** beta).mean()
        assert rounding_regularizer(v.float(), beta).item() == pytest.approx(ref.item(), rel=1e-5)
    rest = torch.rand(1000, generator=gen) * 0.98 + 0.01
    torch.testing.assert_close(rectified_sigmoid(rectified_sigmoid_inverse(rest)), rest, rtol=0, atol=1e-5)


def test_annealed_beta_schedule():
    assert annealed_beta(0, 100) is None and annealed_beta(19, 100) is None  # warm-up: no regulariser
    assert annealed_beta(20, 100) == pytest.approx(20.0)
    assert annealed_beta(100, 100) == pytest.approx(2.0)
    mid = annealed_beta(60, 100)
    assert mid == pytest.approx(2 + 0.5 * 18 * (1 + math.cos(math.pi * 0.5)))


GRIDS = [(4, 64, False, 80), (3, 32, False, 96), (2, 16, False, 40), (8, -1, False, 33)]
SYMMETRIC = [(4, 64, True, 80), (3, 16, True, 48)]


@pytest.mark.parametrize("bits,block,symmetric,k,method", [(*g, m) for g in GRIDS for m in ("rtn", "hqq")]
                         + [(*g, "rtn") for g in SYMMETRIC])  # HQQ is asymmetric only
def test_start_reproduces_rtn_and_hqq_exactly(gen, bits, block, symmetric, k, method):
    w = torch.randn(24, k, generator=gen) * 0.05
    qw = quantize_weight(w, QuantConfig(bits=bits, block_size=block, symmetric=symmetric, method=method))
    lw = LearnedWeight(w, qw)
    assert torch.equal(lw.weight(hard=True).detach(), qw.dequantize(torch.float32))
    assert torch.equal(lw.pack().unpack(), qw.unpack())


@pytest.mark.parametrize("learn", [("scales", "weights"), ("rounding", "scales"), ("weights",)])
@pytest.mark.parametrize("symmetric", [False, True])
def test_pack_is_exactly_the_trained_weight(gen, learn, symmetric):
    """After arbitrary learning, the packed weight dequantizes to the hard forward bit for bit (fp16 scales)."""
    w = torch.randn(32, 3, 40, generator=gen) * 0.1  # a conv-shaped weight: K = 120, blocks 64 + 56
    qw = quantize_weight(w, QuantConfig(bits=4, block_size=64, symmetric=symmetric))
    lw = LearnedWeight(w, qw, learn)
    with torch.no_grad():
        for t in lw.parameters():
            t.add_(torch.randn(t.shape, generator=gen) * 0.3)
    packed = lw.pack()
    assert packed.scale.dtype == torch.float16 and packed.shape == (32, 3, 40) and packed.method == "recon"
    assert (packed.zero is None) == symmetric
    assert torch.equal(packed.dequantize(torch.float32), lw.weight(hard=True).detach())
    assert torch.equal(packed.unpack().float(), lw.codes())


def test_straight_through_gradients_match_float64(gen):
    """d loss / d delta = g · s0 inside the code range, 0 where the code is clamped (a manual float64 reference)."""
    w = torch.randn(8, 64, generator=gen) * 0.05
    qw = quantize_weight(w, QuantConfig(bits=3, block_size=32))
    lw = LearnedWeight(w, qw, ("weights", "scales"))
    with torch.no_grad():
        lw.delta.add_(torch.randn(lw.delta.shape, generator=gen) * 2)  # push some codes out of range
    g = torch.randn(8, 64, generator=gen)
    (lw.weight() * g).sum().backward()
    s = qw.scale.double().repeat_interleave(32, 1)
    z = qw.zero.double().repeat_interleave(32, 1)
    u = (w.double() + lw.delta.detach().double() * s) / s + z
    inside = (torch.round(u) >= 0) & (torch.round(u) <= 7)
    ref = torch.where(inside, g.double() * s, torch.zeros_like(s))
    torch.testing.assert_close(lw.delta.grad.double(), ref, rtol=1e-5, atol=1e-9)
    assert bool((~inside).any()) and bool(inside.any())
    # scales: d ŵ / d log_scale through (q - z) s with q straight through = (q - z) s - w' (per element), summed
    q = torch.round(u).clamp(0, 7)
    w_cur = w.double() + lw.delta.detach().double() * s
    per = torch.where(inside, g.double() * ((q - z) * s - w_cur), g.double() * (q - z) * s)
    torch.testing.assert_close(lw.log_scale.grad.double(), per.reshape(8, 2, 32).sum(-1), rtol=1e-4, atol=1e-7)


def test_adaround_regulariser_drives_offsets_to_0_or_1(gen):
    w = torch.randn(16, 64, generator=gen) * 0.05
    lw = LearnedWeight(w, quantize_weight(w, QuantConfig(bits=4, block_size=64)), ("rounding",))
    opt = torch.optim.Adam(lw.parameters(), lr=0.1)
    for step in range(300):
        beta = annealed_beta(step, 300)
        loss = lw.regularizer(beta if beta is not None else 20.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    h = rectified_sigmoid(lw.v.detach())
    assert bool(((h == 0) | (h == 1)).float().mean() > 0.99)
    assert torch.equal(lw.weight(hard=False).detach(), lw.weight(hard=True).detach())


def test_learn_choices_are_checked(gen):
    w = torch.randn(4, 16, generator=gen)
    qw = quantize_weight(w, QuantConfig(bits=4, block_size=16))
    with pytest.raises(ValueError, match="rounding"):
        LearnedWeight(w, qw, ("rounding", "weights"))
    with pytest.raises(ValueError, match="choose from"):
        LearnedWeight(w, qw, ("bias",))
    assert LearnedWeight(w, qw, ()).parameters() == []


def test_config_round_trip_and_validation():
    cfg = QuantConfig(method="recon", recon_learn=["rounding", "scales"], recon_blocks=["a.b"], recon_steps=5)
    assert QuantConfig.from_dict(cfg.to_dict()) == cfg and cfg.data_aware
    assert cfg.recon_learn == ("rounding", "scales") and hash(cfg)
    for bad, match in [(dict(recon_init="adaround"), "recon_init"), (dict(recon_learn=()), "recon_learn"),
                       (dict(recon_learn=("rounding", "weights")), "recon_learn"), (dict(recon_unit="net"), "unit"),
                       (dict(recon_steps=-1), "recon_steps"), (dict(recon_lr=0), "recon_lr"),
                       (dict(recon_blocks="a"), "recon_blocks")]:
        with pytest.raises(ValueError, match=match):
            QuantConfig(method="recon", **bad)
