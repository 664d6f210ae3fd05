"""Per-layer setting allocation: the multiple-choice knapsack over (bytes, error), on plain numbers.

Each layer i has options j with a size `bytes[i][j]` (int) and an error `error[i][j]` (float, lower is better);
a plan picks one option per layer. Assuming the errors add up, `pareto_plans` builds the exact frontier of totals
(sum bytes, sum error) by dynamic programming over layers, keeping only the non-dominated partial sums. The two
questions users have are then look-ups on that frontier:

  best_within_size(frontier, budget)     -> the plan of least total error with total bytes <= budget
  smallest_within_error(frontier, limit) -> the plan of fewest total bytes with total error <= limit

The frontier is exact while it holds at most `max_points` plans; beyond that it is thinned to one plan (the
lowest error) per byte bucket of width range/max_points, so the result is within one bucket of optimal.
`lagrangian_choice(options, lam)` is the classic per-layer argmin of error + lam * bytes: its plans lie on the
convex hull of the same frontier (used to check it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_MAX_POINTS = 4096


@dataclass(frozen=True)
class Frontier:
    """Non-dominated plans: `total_bytes` ascending, `total_error` strictly descending, and how to rebuild each.

    total_bytes: (P,) int64; total_error: (P,) float64; back: per layer l, (parent index into layer l-1's front,
    option index) arrays for each point of layer l's front; the last layer's front is this one.
    """

    total_bytes: np.ndarray
    total_error: np.ndarray
    back: tuple[tuple[np.ndarray, np.ndarray], ...]

    def __len__(self) -> int:
        return len(self.total_bytes)

    def choice(self, point: int) -> list[int]:
        """The option index per layer of plan `point`."""
        out = []
        for parent, option in reversed(self.back):
            out.append(int(option[point]))
            point = int(parent[point])
        return out[::-1]


def _check(bytes_: list, error: list) -> None:
    if len(bytes_) != len(error) or not bytes_:
        raise ValueError(f"need one option list per layer for bytes and error, got {len(bytes_)} and {len(error)}")
    for i, (b, e) in enumerate(zip(bytes_, error, strict=True)):
        if len(b) != len(e) or not len(b):
            raise ValueError(f"layer {i}: {len(b)} sizes and {len(e)} errors; each layer needs >= 1 option")
        if np.any(~np.isfinite(np.asarray(e, dtype=np.float64))):
            raise ValueError(f"layer {i}: errors must be finite, got {list(e)}")


def _pareto(b: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points, sorted by bytes ascending (ties: lowest error)."""
    order = np.lexsort((e, b))
    e_sorted = e[order]
    best_before = np.minimum.accumulate(np.concatenate(([np.inf], e_sorted[:-1])))
    return order[e_sorted < best_before]


def _thin(b: np.ndarray, idx: np.ndarray, max_points: int) -> np.ndarray:
    """Keep at most ~max_points of the (pareto-sorted) points: the lowest-error one per byte bucket."""
    if len(idx) <= max_points:
        return idx
    bb = b[idx]
    width = max((bb[-1] - bb[0]) / max_points, 1)
    bucket = ((bb - bb[0]) / width).astype(np.int64)
    last = np.r_[bucket[1:] != bucket[:-1], True]  # the last point of a bucket has its lowest error
    last[0] = True  # the smallest plan stays reachable
    return idx[last]


def pareto_plans(bytes_: list, error: list, max_points: int = DEFAULT_MAX_POINTS) -> Frontier:
    """The frontier of (sum bytes, sum error) over all one-option-per-layer plans (see the module docstring)."""
    _check(bytes_, error)
    tb, te = np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.float64)
    back = []
    for b, e in zip(bytes_, error, strict=True):
        b, e = np.asarray(b, dtype=np.int64), np.asarray(e, dtype=np.float64)
        cb = (tb[:, None] + b[None, :]).ravel()  # (P, K) -> (P*K,)
        ce = (te[:, None] + e[None, :]).ravel()
        keep = _thin(cb, _pareto(cb, ce), max_points)
        back.append((keep // len(b), keep % len(b)))
        tb, te = cb[keep], ce[keep]
    return Frontier(tb, te, tuple(back))


def best_within_size(frontier: Frontier, budget: float) -> int | None:
    """The frontier point of least error with total bytes <= budget, or None when even the smallest is larger."""
    i = int(np.searchsorted(frontier.total_bytes, budget, side="right")) - 1
    return i if i >= 0 else None


def smallest_within_error(frontier: Frontier, limit: float) -> int | None:
    """The frontier point of fewest bytes with total error <= limit, or None when even the best error is above."""
    ok = np.nonzero(frontier.total_error <= limit)[0]
    return int(ok[0]) if len(ok) else None


def lagrangian_choice(bytes_: list, error: list, lam: float) -> list[int]:
    """Per layer the option minimising error + lam * bytes (ties: fewer bytes)."""
    _check(bytes_, error)
    out = []
    for b, e in zip(bytes_, error, strict=True):
        b, e = np.asarray(b, dtype=np.float64), np.asarray(e, dtype=np.float64)
        out.append(int(np.lexsort((b, e + lam * b))[0]))
    return out


def brute_force(bytes_: list, error: list, budget: float | None = None, limit: float | None = None):
    """Reference for tests: (choice, total bytes, total error) of the best plan by enumeration, or None."""
    import itertools

    best = None
    for choice in itertools.product(*(range(len(b)) for b in bytes_)):
        tb = sum(bytes_[i][j] for i, j in enumerate(choice))
        te = sum(error[i][j] for i, j in enumerate(choice))
        if budget is not None and tb <= budget and (best is None or (te, tb) < (best[2], best[1])):
            best = (list(choice), tb, te)
        if limit is not None and te <= limit and (best is None or (tb, te) < (best[1], best[2])):
            best = (list(choice), tb, te)
    return best
