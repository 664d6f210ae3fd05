"""Never worse than the data-free start: what a layer's calibration inputs can support, and the held-out check.

A data-aware step (GPTQ, AWQ's clipping and scales) fits a weight to its layer's calibration inputs. Two things
make that fit worse than plain rounding (RTN/HQQ) on the data the model will see:
  - inputs that carry too little information: all zero (dead), constant, or a few repeated rows (all-zero token
    ids; one calibration sentence). `degenerate(xtx, rows)` finds them from the statistics alone: the inputs'
    correlation matrix has fewer than RANK_FRACTION · K non-negligible eigenvalues. Such a layer keeps the
    data-free result, with a note (GPTQ would move every rounding error into the unseen directions);
  - a fit to the calibration rows that does not generalise: `held_out_worse` compares the output error of the
    data-aware and the data-free weights on held-out calibration data (lowbit.calib.run_pass's `held`: one item in
    8, or one row in 8 when there are fewer than 8 items); the data-free one is kept when it is better there.
"""

from __future__ import annotations

import math

import torch

RANK_FRACTION = 0.25  # real text/image calibration fills every direction of MiniLM's and SeqNet's layer inputs
_EIG_TOLERANCE = 1e-6  # eigenvalues of the correlation matrix below this fraction of the largest count as zero


def _correlation(xtx: torch.Tensor, plus: torch.Tensor | None = None) -> torch.Tensor | None:
    """diag(S)^-1/2 · S · diag(S)^-1/2 of S = xtx (+ plus) over the live channels, float64 (one float64 copy: the sum
    is formed in it, not in the inputs' dtype); None when every channel is dead."""
    d = xtx.diagonal().double() if plus is None else xtx.diagonal().double() + plus.diagonal().double()
    live = d > 0
    if not bool(live.any()):
        return None
    inv = d[live].rsqrt()
    if not bool(live.all()):
        xtx, plus = xtx[live][:, live], None if plus is None else plus[live][:, live]
    c = xtx.to(torch.float64, copy=True)
    if plus is not None:
        c.add_(plus)
    return c.mul_(inv.unsqueeze(0)).mul_(inv.unsqueeze(1))


def input_rank(xtx: torch.Tensor, plus: torch.Tensor | None = None) -> int:
    """Numerical rank of the inputs' correlation matrix diag(S)^-1/2 · S · diag(S)^-1/2 of S = xtx (+ plus), dead
    channels out."""
    c = _correlation(xtx, plus)
    if c is None:
        return 0
    ev = torch.linalg.eigvalsh(c)
    return int((ev > _EIG_TOLERANCE * ev.max()).sum())


def surely_spanning(xtx: torch.Tensor, min_rank: float, plus: torch.Tensor | None = None) -> bool:
    """True when a Cholesky factorisation proves input_rank(xtx, plus) ≥ min_rank (an eigendecomposition costs 3-5x as
    much: 5 s at K = 5632); False means "not proven", not "degenerate".

    On the K live channels, if fewer than r = min_rank eigenvalues of the correlation matrix C exceeded t·λmax
    (t = _EIG_TOLERANCE), then log det C ≤ r·log λmax + (K - r)·log(t·λmax). log det C comes from the Cholesky
    pivots and λmax ≤ ‖C‖∞ (Gershgorin), so a log det above that bound rules the low rank out."""
    c = _correlation(xtx, plus)
    if c is None or c.shape[0] < min_rank:
        return False
    k, fraction = c.shape[0], min_rank / c.shape[0]
    lmax = max(float(c[i:i + 512].abs().sum(1).max()) for i in range(0, k, 512))  # no (K, K) temporary
    _, info = torch.linalg.cholesky_ex(c, out=(c, torch.empty((), dtype=torch.int32)))  # in place: K = 5632 is 254 MB
    if int(info) != 0:
        return False
    logdet = 2 * float(c.diagonal().log().sum())
    bound = fraction * k * math.log(lmax) + (1 - fraction) * k * math.log(_EIG_TOLERANCE * lmax)
    return logdet > bound


def degenerate(hessians: list[torch.Tensor], rows: int | None = None,
               held: list[torch.Tensor] | None = None) -> str:
    """Why these input statistics (one xtx per group, plus the held-out ones when given) cannot support a
    data-aware fit, or "" when they can."""
    pairs = list(zip(hessians, held or [None] * len(hessians), strict=True))
    if rows == 0 or all(not bool((_diagonal(h, g) > 0).any()) for h, g in pairs):
        return "its calibration inputs are all zero (dead)"
    k = hessians[0].shape[0]
    if all(surely_spanning(h, RANK_FRACTION * k, g) for h, g in pairs):
        return ""
    rank = min(input_rank(h, g) for h, g in pairs)
    if rank < RANK_FRACTION * k:
        what = "one row" if rows == 1 else "constant or repeated rows" if rank <= 2 else "too few distinct rows"
        return (f"its calibration inputs span {rank} of {k} directions ({what}"
                + (f"; {rows} rows" if rows is not None and rows > 1 else "") + ")")
    return ""


def _diagonal(h: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
    return h.diagonal() if g is None else h.diagonal() + g.diagonal()


# held-out errors closer than this (relative) are a tie, kept data-aware: they come from float32 products whose
# last bits vary with the summation order BLAS picks (memory alignment), so a closer call would not be reproducible
HELD_OUT_TIE = 1e-5


def held_out_worse(error_aware: float, error_plain: float) -> bool:
    """True when the data-aware weight's held-out output error is above the data-free one's by more than a tie."""
    return error_aware > error_plain * (1 + HELD_OUT_TIE)


__all__ = ["HELD_OUT_TIE", "RANK_FRACTION", "degenerate", "held_out_worse", "input_rank", "surely_spanning"]
