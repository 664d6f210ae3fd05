"""SignRound's pieces in lowbit.quant.recon on plain tensors, against float64 references: the signed step, its
decaying schedule, the bounded rounding offsets, and a quadratic (one-Linear block) loss the steps reduce."""

import pytest
import torch

from lowbit.methods.recon.capture import relative_error
from lowbit.quant import QuantConfig, quantize_weight
from lowbit.quant.recon import OFFSET_BOUND, LearnedWeight, linear_decay, sign_sgd_step


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def test_sign_sgd_step_matches_float64(gen):
    p = torch.randn(7, 9, generator=gen, dtype=torch.float64).requires_grad_(True)
    g = torch.randn(7, 9, generator=gen, dtype=torch.float64)
    g[0, :3] = 0.0  # a zero gradient leaves its element where it is
    ref = p.detach() - 0.03 * torch.sign(g)
    p.grad = g.clone()
    untouched = torch.ones(3, requires_grad=True)  # no gradient: not moved
    sign_sgd_step([p, untouched], 0.03)
    assert torch.equal(p.detach(), ref) and p.grad is None
    assert torch.equal(untouched.detach(), torch.ones(3))
    assert torch.equal(p.detach()[0, :3], (ref[0, :3]))


def test_linear_decay_schedule():
    assert [linear_decay(s, 4) for s in range(1, 6)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert linear_decay(1, 0) == 0.0
    assert sum(linear_decay(s, 200) for s in range(1, 201)) == pytest.approx(100.5)  # lr (steps + 1) / 2 in all


def _quadratic_loss(lw: LearnedWeight, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """‖x ŵᵀ - y‖² / ‖y‖²: one Linear's block output error (what train_block minimises)."""
    return relative_error(x @ lw.weight().T, y)


def test_signed_steps_reduce_a_quadratic_block_loss(gen):
    # correlated input channels, as activations have: nearest rounding is far from the best codes for this loss
    mix = torch.randn(16, 64, generator=gen)
    x = torch.randn(256, 16, generator=gen) @ mix + 0.1 * torch.randn(256, 64, generator=gen)
    w = torch.randn(32, 64, generator=gen) * 0.05
    y = x @ w.T
    lw = LearnedWeight(w, quantize_weight(w, QuantConfig(bits=3, block_size=32)), ("offsets", "scales"))

    def float64_loss():  # the hard (packed) weight's error, computed independently in float64
        wq = lw.pack().dequantize(torch.float64)
        return ((x.double() @ wq.T - y.double()).square().sum() / y.double().square().sum()).item()

    start = float64_loss()
    assert _quadratic_loss(lw, x, y).item() == pytest.approx(start, rel=1e-4)
    steps = 100
    for step in range(1, steps + 1):
        _quadratic_loss(lw, x, y).backward()
        sign_sgd_step([lw.delta], 0.01 * linear_decay(step, steps))
        sign_sgd_step([lw.log_scale, lw.zero_shift], 0.01 * linear_decay(step, steps))
        lw.project()
    assert float64_loss() < 0.6 * start  # seen 0.36 of the start


def test_offsets_stay_in_range_and_codes_within_one_step(gen):
    w = torch.randn(16, 64, generator=gen) * 0.05
    qw = quantize_weight(w, QuantConfig(bits=4, block_size=64))
    lw = LearnedWeight(w, qw, ("offsets",))
    assert lw.signed and lw.parameters() == [lw.delta]
    for _ in range(20):  # steps far larger than the bound, random directions
        lw.delta.grad = torch.randn(lw.delta.shape, generator=gen)
        sign_sgd_step([lw.delta], 0.3)
        lw.project()
        assert float(lw.delta.abs().max()) <= OFFSET_BOUND
    moved = (lw.pack().unpack().float() - qw.unpack().float()).abs()
    assert float(moved.max()) <= 1.0 and bool((moved == 1).any())  # at most one code from nearest rounding
    with pytest.raises(ValueError, match="at most one"):
        LearnedWeight(w, qw, ("offsets", "weights"))
    with pytest.raises(ValueError, match="at most one"):
        LearnedWeight(w, qw, ("offsets", "rounding"))


def test_masked_positions_do_not_change_the_loss_or_get_gradient(gen):
    out = torch.randn(3, 5, 8, generator=gen, dtype=torch.float64).requires_grad_(True)
    target = torch.randn(3, 5, 8, generator=gen, dtype=torch.float64)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1, 3:] = False  # padded positions of the second sample
    mask[2, 4:] = False
    loss = relative_error(out, target, mask)
    d = (out.detach() - target)[mask]
    ref = d.square().sum() / target[mask].square().sum()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    loss.backward()
    assert bool((out.grad[~mask] == 0).all()) and bool((out.grad[mask] != 0).any())
    other = out.detach().clone()
    other[~mask] = 1e6  # whatever the padded rows hold
    assert relative_error(other, target, mask).item() == pytest.approx(loss.item(), rel=1e-12)
