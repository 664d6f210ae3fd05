"""The panel Cholesky and inverse GPTQ's factor is made of, against torch.linalg's float64 factorisation."""

import pytest
import torch

from lowbit.quant.cholesky import reversed_cholesky_panels, reversed_inverse


def _spd(k: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * k, k, generator=g, dtype=torch.float64)
    return x.T @ x


@pytest.mark.parametrize("k, panel", [(5, 5), (5, 8), (12, 4), (50, 7), (64, 16)])
def test_panels_are_the_cholesky_factor_of_the_reversed_matrix(k, panel):
    h = _spd(k)
    panels = reversed_cholesky_panels(h.float(), 0.5, panel)
    m = torch.zeros(k, k, dtype=torch.float64)
    for j, p in enumerate(panels):
        m[j * panel:, j * panel:j * panel + p.shape[1]] = p
    ref = torch.linalg.cholesky(h.float().double().flip(0, 1) + 0.5 * torch.eye(k, dtype=torch.float64))
    torch.testing.assert_close(m, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("k, panel", [(5, 2), (33, 8), (64, 64)])
def test_reversed_inverse_is_the_upper_factor_of_the_inverse_and_frees_the_panels(k, panel):
    h = _spd(k, 1)
    panels = reversed_cholesky_panels(h, 0.0, panel)
    upper = reversed_inverse(panels, torch.float64)
    assert panels == [] and torch.equal(upper, upper.triu())
    torch.testing.assert_close(upper.T @ upper, torch.linalg.inv(h), rtol=1e-8, atol=1e-10)
    assert reversed_inverse(reversed_cholesky_panels(h, 0.0, panel), torch.float32).dtype == torch.float32


def test_not_positive_definite_is_none():
    h = _spd(9, 2)
    h[4, 4] = -1.0
    assert reversed_cholesky_panels(h, 0.0, 3) is None
    assert reversed_cholesky_panels(-torch.eye(6), 0.0, 4) is None
