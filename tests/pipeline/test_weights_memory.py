"""quantize_param's memory-saving paths give the results of the plain ones."""

import torch

import lowbit.methods  # noqa: F401  (registers gptq)
from lowbit.pipeline.checks import degenerate
from lowbit.pipeline.weights import quantize_param
from lowbit.quant import QuantConfig


def _stats(seed: int, m: int, k: int = 64) -> torch.Tensor:
    """xtx of m rows near one fixed 32-dimensional subspace (the same for every seed: held-out rows are drawn from
    the calibration's distribution)."""
    mix = torch.randn(k // 2, k, generator=torch.Generator().manual_seed(99))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k // 2, generator=g) @ mix + 0.1 * torch.randn(m, k, generator=g)
    return x.T @ x


def test_consumed_statistics_give_the_same_result_and_are_summed_in_place():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(48, 64, generator=g) * 0.05
    cfg = QuantConfig(bits=4, block_size=16, method="gptq")
    fit, held = _stats(1, 400), _stats(2, 60)
    ref = quantize_param(w, [fit.clone()], cfg, "fc.weight", held=[held.clone()], rows=460)
    mine, theirs = [fit.clone()], [held.clone()]
    got = quantize_param(w, mine, cfg, "fc.weight", held=theirs, rows=460, consume=True)
    assert torch.equal(got.qweight.packed, ref.qweight.packed) and torch.equal(got.qweight.scale, ref.qweight.scale)
    assert (got.error_before, got.error_after, got.held_out) == (ref.error_before, ref.error_after, True)
    assert theirs == [] and torch.equal(mine[0], fit + held)


def test_degenerate_with_held_is_degenerate_of_the_sum():
    """Fit rows spanning a few directions, held rows the rest: the sum spans, the fit alone does not."""
    g = torch.Generator().manual_seed(3)
    few = torch.randn(40, 2, generator=g) @ torch.randn(2, 64, generator=g)
    fit, held = few.T @ few, _stats(4, 200)
    assert degenerate([fit], 40) != ""
    assert degenerate([fit], 240, [held]) == degenerate([fit + held], 240) == ""
    assert degenerate([fit], 40, [torch.zeros_like(held)]) == degenerate([fit], 40)
