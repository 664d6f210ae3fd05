"""InputStats: Σ xᵀx by upper-triangle panels equals the full product, however reads and adds interleave."""

import pytest
import torch

import lowbit.quant.hessian as hessian
from lowbit.quant.hessian import InputStats


@pytest.mark.parametrize("panel", [4, 16, 40])
def test_upper_panels_give_the_full_symmetric_product(panel, monkeypatch):
    monkeypatch.setattr(hessian, "_PANEL", panel)
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(m, 83, generator=gen) for m in (5, 31, 64)]
    stats = InputStats(83)
    stats.add(xs[0])
    first = stats.xtx.clone()  # read between adds: the mirror must not go stale
    for x in xs[1:]:
        stats.add(x.bfloat16())
    x = torch.cat([xs[0], *(x.bfloat16().float() for x in xs[1:])]).double()
    torch.testing.assert_close(first.double(), xs[0].double().T @ xs[0].double(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(stats.xtx.double(), x.T @ x, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(stats.xtx, stats.xtx.T)
    assert stats.count == 100
    torch.testing.assert_close(stats.abs_sum, x.abs().sum(0))
