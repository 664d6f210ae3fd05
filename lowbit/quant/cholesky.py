"""The upper Cholesky factor U of (H + λI)⁻¹ that GPTQ reads, in float64, by column panels.

With J the reversal (rows and columns in reverse order), J (H + λI) J = M Mᵀ with M lower triangular gives
U = J M⁻¹ J, so neither H⁻¹ nor a second factorisation is formed. M is computed left-looking, one panel of
`PANEL` columns at a time, and kept as its panels below the diagonal only (half of a (K, K) float64 matrix);
M⁻¹ is then solved one panel of columns at a time, and each panel of M is freed as soon as no later column panel
of M⁻¹ needs it. At K = 5632 (a 1B model's down_proj) that is ~150 MB of float64 panels and the (K, K) result,
where a full float64 factorisation would hold 254 MB besides the result.
"""

from __future__ import annotations

import itertools

import torch

PANEL = 1024  # columns per panel: float64 GEMMs large enough to run at BLAS speed


def reversed_cholesky_panels(h: torch.Tensor, shift: float, panel: int | None = None) -> list[torch.Tensor] | None:
    """M = chol(J h J + shift·I) (lower), as panels: panel j is M[s_j:, s_j:e_j] in float64 with s_j = j·panel.
    None when J h J + shift·I is not positive definite (numerically). h (K, K) symmetric, any float dtype, is
    read one panel at a time (no full-size copy of it). panel: columns per panel (default PANEL)."""
    k, panel = h.shape[0], panel or PANEL
    panels: list[torch.Tensor] = []
    for s in range(0, k, panel):
        e = min(s + panel, k)
        p = h[:k - s, k - e:k - s].flip(0, 1).to(torch.float64)  # (J h J)[s:, s:e]
        p[:e - s].diagonal().add_(shift)
        for t, q in zip(range(0, s, panel), panels, strict=True):  # subtract M[s:, t-panel] M[s:e, t-panel]ᵀ
            rows = q[s - t:]
            p.addmm_(rows, rows[:e - s].t(), alpha=-1.0)
        diag, info = torch.linalg.cholesky_ex(p[:e - s])
        if int(info) != 0:
            return None
        p[:e - s] = diag
        if e < k:  # M[e:, s:e] = A[e:, s:e] · M[s:e, s:e]⁻ᵀ
            p[e - s:] = torch.linalg.solve_triangular(diag.t(), p[e - s:], upper=True, left=False)
        panels.append(p)
    return panels


def reversed_inverse(panels: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor | None:
    """J M⁻¹ J in `dtype` from M's panels (`reversed_cholesky_panels`), or None if it is not finite. The list is
    emptied as it is read: column panel j of M⁻¹ needs M's panels j and later only."""
    k = panels[0].shape[0]
    starts = list(itertools.accumulate((p.shape[1] for p in panels[:-1]), initial=0))
    out = torch.zeros(k, k, dtype=dtype, device=panels[0].device)
    for j, s in enumerate(starts):
        e = _end(starts, j, k)
        x = _column_panel(panels, starts, j, k)  # M⁻¹[s:, s:e]
        if not bool(torch.isfinite(x).all()):
            return None
        out[:k - s, k - e:k - s] = x.flip(0, 1)  # (J M⁻¹ J)[i, j] = M⁻¹[k-1-i, k-1-j]
        panels[j] = None  # no later column panel reads it
    panels.clear()
    return out


def _column_panel(panels, starts, j: int, k: int) -> torch.Tensor:
    """X = M⁻¹[s_j:, s_j:e_j] by forward substitution over block rows r ≥ j:
    M[r, r] X_r = I[r, j] - Σ_{j ≤ i < r} M[r, i] X_i."""
    s, e = starts[j], _end(starts, j, k)
    x = torch.zeros(k - s, e - s, dtype=torch.float64, device=panels[j].device)
    x[:e - s].diagonal().fill_(1.0)
    for r in range(j, len(starts)):
        sr, er = starts[r], _end(starts, r, k)
        xr = x[sr - s:er - s]
        for i in range(j, r):
            si, ei = starts[i], _end(starts, i, k)
            xr.addmm_(panels[i][sr - si:er - si], x[si - s:ei - s], alpha=-1.0)
        xr.copy_(torch.linalg.solve_triangular(panels[r][:er - sr], xr, upper=False))
    return x



def _end(starts: list[int], j: int, k: int) -> int:
    return starts[j + 1] if j + 1 < len(starts) else k


__all__ = ["PANEL", "reversed_cholesky_panels", "reversed_inverse"]
