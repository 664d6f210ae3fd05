"""The multiple-choice knapsack allocation against brute force on small random instances."""

import numpy as np
import pytest

from lowbit.quant.allocate import (
    best_within_size,
    brute_force,
    lagrangian_choice,
    pareto_plans,
    smallest_within_error,
)


def _instance(rng, layers, options):
    bytes_ = [list(rng.integers(1, 200, size=rng.integers(1, options + 1))) for _ in range(layers)]
    error = [list(rng.random(len(b)) ** 2) for b in bytes_]
    return bytes_, error


@pytest.mark.parametrize("seed", range(25))
def test_both_targets_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    bytes_, error = _instance(rng, layers=int(rng.integers(1, 5)), options=5)
    front = pareto_plans(bytes_, error)
    lo, hi = sum(min(b) for b in bytes_), sum(max(b) for b in bytes_)
    for budget in rng.integers(lo - 5, hi + 5, size=6):
        ref, i = brute_force(bytes_, error, budget=budget), best_within_size(front, budget)
        assert (ref is None) == (i is None)
        if ref is not None:
            choice = front.choice(i)
            assert sum(b[j] for b, j in zip(bytes_, choice, strict=True)) <= budget
            assert np.isclose(front.total_error[i], ref[2], rtol=1e-12, atol=1e-12)
            assert np.isclose(sum(e[j] for e, j in zip(error, choice, strict=True)), ref[2])
    e_lo, e_hi = sum(min(e) for e in error), sum(max(e) for e in error)
    for limit in rng.uniform(e_lo * 0.9, e_hi * 1.1, size=6):
        ref, i = brute_force(bytes_, error, limit=limit), smallest_within_error(front, limit)
        assert (ref is None) == (i is None)
        if ref is not None:
            choice = front.choice(i)
            assert sum(e[j] for e, j in zip(error, choice, strict=True)) <= limit + 1e-12
            assert sum(b[j] for b, j in zip(bytes_, choice, strict=True)) == ref[1] == front.total_bytes[i]


def test_frontier_is_sorted_and_non_dominated():
    bytes_, error = _instance(np.random.default_rng(7), layers=6, options=6)
    front = pareto_plans(bytes_, error)
    assert np.all(np.diff(front.total_bytes) > 0) and np.all(np.diff(front.total_error) < 0)


@pytest.mark.parametrize("lam", [0.0, 1e-4, 1e-3, 1e-2, 1.0])
def test_lagrangian_plans_are_optimal_at_their_own_size(lam):
    bytes_, error = _instance(np.random.default_rng(3), layers=4, options=5)
    choice = lagrangian_choice(bytes_, error, lam)
    size = sum(b[j] for b, j in zip(bytes_, choice, strict=True))
    err = sum(e[j] for e, j in zip(error, choice, strict=True))
    assert np.isclose(err, brute_force(bytes_, error, budget=size)[2])


def test_thinning_keeps_a_near_optimal_plan():
    bytes_, error = _instance(np.random.default_rng(11), layers=12, options=6)
    exact, thin = pareto_plans(bytes_, error), pareto_plans(bytes_, error, max_points=16)
    assert len(thin) < len(exact) and thin.total_bytes[0] == exact.total_bytes[0]
    budget = int(np.median(exact.total_bytes))
    i = best_within_size(thin, budget)
    assert thin.total_bytes[i] <= budget
    assert thin.total_error[i] <= exact.total_error[best_within_size(exact, budget)] * 1.5


def test_bad_inputs():
    with pytest.raises(ValueError, match="option"):
        pareto_plans([[1, 2]], [[0.1]])
    with pytest.raises(ValueError, match="per layer"):
        pareto_plans([], [])
    with pytest.raises(ValueError, match="finite"):
        pareto_plans([[1]], [[float("nan")]])
