"""Never worse than the data-free start: degenerate calibration (all zero, constant, one row) and fits that do not
hold on held-out data keep RTN, with the layer named in the summary (lowbit.pipeline.checks)."""

import copy

import pytest
import torch
from torch import nn

import lowbit
from lowbit.nn import quantized_weights
from lowbit.pipeline.checks import degenerate, input_rank
from lowbit.quant import QuantConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 32)).eval()


def _rtn(model, name):
    return lowbit.quantize_weight(model.get_parameter(name).detach(), QuantConfig(bits=4, block_size=32)).dequantize()


def _quantize(model, method, cal):
    return lowbit.quantize(copy.deepcopy(model), QuantConfig(bits=4, block_size=32, method=method), calibration=cal,
                           min_weights=0, progress=False)


@pytest.mark.parametrize("method", ["gptq", "awq"])
@pytest.mark.parametrize("kind", ["zeros", "one row", "constant"])
def test_degenerate_calibration_keeps_rtn_with_a_note(method, kind):
    """Before: all-zero batches made GPTQ zero every weight of the first layer (dead inputs) and the summary
    reported an improvement; one row or constant rows let GPTQ/AWQ fit a single direction."""
    model = _mlp()
    g = torch.Generator().manual_seed(3)
    row = torch.randn(1, 64, generator=g)
    cal = {"zeros": [torch.zeros(16, 64)] * 8, "one row": [row], "constant": [row.repeat(16, 1)] * 8}[kind]
    q = _quantize(model, method, cal)
    summary = q.lowbit_summary
    for name, qw in quantized_weights(q).items():
        torch.testing.assert_close(qw.dequantize(), _rtn(model, name), rtol=0, atol=0)
        assert name in summary.fallbacks, (name, summary.fallbacks)
    assert all(e.after == e.before for e in summary.errors)  # no improvement is reported
    first = summary.fallbacks["0.weight"]
    assert ("all zero" in first) if kind == "zeros" else ("span 1 of 64" in first)
    assert "kept the data-free (RTN/HQQ) result for 2 weight(s): 0.weight" in str(summary)


def test_a_fit_that_fails_on_held_out_items_keeps_rtn():
    """8 items of 3 rows for K = 64: GPTQ fitted on 21 rows is exact there and worse than RTN on the held-out item."""
    model = _mlp()
    g = torch.Generator().manual_seed(5)
    few = [torch.randn(3, 64, generator=g) for _ in range(8)]
    q = _quantize(model, "gptq", few)
    assert "worse on held-out data" in q.lowbit_summary.fallbacks.get("0.weight", ""), q.lowbit_summary.fallbacks
    torch.testing.assert_close(quantized_weights(q)["0.weight"].dequantize(), _rtn(model, "0.weight"), rtol=0, atol=0)
    mix = torch.randn(64, 64, generator=g)  # correlated inputs (white ones give GPTQ nothing to gain over RTN)
    many = [torch.randn(64, 64, generator=g) @ mix for _ in range(16)]  # enough data: GPTQ is kept, beats RTN
    q = _quantize(model, "gptq", many)
    assert not q.lowbit_summary.fallbacks and all(e.after < e.before for e in q.lowbit_summary.errors)


def test_input_rank_and_degenerate():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 32, generator=g, dtype=torch.float64)
    assert input_rank(x.T @ x) == 32 and not degenerate([x.T @ x], 200)
    low = x[:, :4] @ torch.randn(4, 32, generator=g, dtype=torch.float64)
    assert input_rank(low.T @ low) == 4 and "span 4 of 32" in degenerate([low.T @ low], 200)
    assert "all zero" in degenerate([torch.zeros(32, 32, dtype=torch.float64)], 10)


def test_held_out_ties_keep_the_data_aware_weight():
    """A difference within float32 noise is a tie (reproducible whatever summation order BLAS picks)."""
    from lowbit.pipeline.checks import HELD_OUT_TIE, held_out_worse

    assert not held_out_worse(0.1 * (1 + HELD_OUT_TIE / 2), 0.1)
    assert held_out_worse(0.1 * (1 + 2 * HELD_OUT_TIE), 0.1)
    assert not held_out_worse(0.09, 0.1)


def test_surely_spanning_never_vouches_for_a_low_rank_input():
    """The Cholesky certificate that lets degenerate() skip the eigendecomposition: True only where input_rank
    (the eigenvalue count) reaches the asked rank; on full-rank inputs it does prove it."""
    from lowbit.pipeline.checks import surely_spanning

    gen = torch.Generator().manual_seed(3)
    for rank in (1, 3, 7, 8, 12, 16, 24, 32):
        basis = torch.randn(rank, 32, generator=gen, dtype=torch.float64)
        x = torch.randn(400, rank, generator=gen, dtype=torch.float64) @ basis
        x[:, :2] *= 40  # outlier channels, as LLM activations have
        for want in (4, 8, 16):
            if surely_spanning(x.T @ x, want):
                assert input_rank(x.T @ x) >= want, (rank, want)
    full = torch.randn(400, 32, generator=gen, dtype=torch.float64)
    assert surely_spanning(full.T @ full, 8) and surely_spanning(full.T.float() @ full.float(), 8)
