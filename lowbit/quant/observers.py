"""Activation-range math for static int8 (plain tensors in, thresholds out; no modules, no configs).

All thresholds are on |x| (symmetric, per tensor); the int8 scale is threshold / clamp.
Histograms: `abs_histogram(x, bins, max_value)` counts the non-zero |x| in `bins` equal bins over [0, max_value]
(float64 counts, values above max_value in the last bin), bin width w = max_value / bins; bin i covers [i w, (i + 1) w).
  - `kl_threshold(hist, w, levels=128)`: TensorRT's search as MXNet/ncnn write it. For each i in levels..bins:
    the reference p = hist[:i] with the outliers (sum hist[i:]) added to p[i-1]; q = hist[:i] (without them)
    merged into `levels` groups of i // levels bins (the last group takes the rest), each group's sum spread evenly
    over its bins where p > 0; both smoothed (eps = 1e-4 moved into empty bins) and normalised; divergence
    sum p log(p / q). Returns i* w (the upper edge of the last bin kept, as MXNet) for the smallest divergence
    (the first one on ties).
  - `percentile_threshold(hist, w, p)`: the p-th percentile of |x|, linear inside the bin that crosses it.
  - `mse_threshold(hist, w, clamp)`: the candidate t (bin edges) minimising sum_b hist[b] e_b(t) with
    e_b = s^2 / 12 inside the range (uniform rounding noise, s = t / clamp) and (c_b - t)^2 outside (c_b the centre).
`ema(prev, value, decay)` and `scale_from_threshold` complete the observers.
"""

from __future__ import annotations

import numpy as np
import torch

_TINY = 1e-12


def abs_histogram(x: torch.Tensor, bins: int, max_value: float) -> torch.Tensor:
    """Counts (bins,) float64 of |x| over [0, max_value]; values beyond go to the last bin."""
    if max_value <= 0:
        out = torch.zeros(bins, dtype=torch.float64)
        out[0] = int((x != 0).sum())
        return out
    a = x.detach().abs().flatten().float()
    a = a[a != 0]  # exact zeros (after ReLU, padding) are exact at any step: they do not inform the threshold
    idx = torch.clamp((a * (bins / max_value)).long(), 0, bins - 1)
    return torch.bincount(idx, minlength=bins).to(torch.float64)


def rebin(hist: torch.Tensor, old_max: float, new_max: float) -> torch.Tensor:
    """The histogram over [0, old_max] re-counted over [0, new_max >= old_max] (old bins go where their centre is)."""
    bins = hist.numel()
    centres = (torch.arange(bins, dtype=torch.float64) + 0.5) * (old_max / bins)
    idx = torch.clamp((centres * (bins / new_max)).long(), 0, bins - 1)
    return torch.zeros(bins, dtype=torch.float64).index_add_(0, idx, hist.to(torch.float64))


def _check_hist(hist: torch.Tensor, levels: int = 1) -> torch.Tensor:
    if hist.dim() != 1 or hist.numel() < levels:
        raise ValueError(f"expected a 1-D histogram of at least {levels} bins, got shape {tuple(hist.shape)}")
    h = hist.to(torch.float64)
    if not bool(torch.isfinite(h).all()) or bool((h < 0).any()):
        raise ValueError("histogram counts must be finite and non-negative")
    return h


def _smooth(p: np.ndarray, eps: float = 1e-4) -> np.ndarray | None:
    """MXNet's smoothing: eps added to empty bins, taken evenly from the others (None when it cannot be done)."""
    zeros = p == 0
    n_zeros = int(zeros.sum())
    n_nonzeros = p.size - n_zeros
    if n_nonzeros == 0 or eps * n_zeros / n_nonzeros >= 1.0:
        return None
    return p + np.where(zeros, eps, -eps * n_zeros / n_nonzeros)


def kl_divergences(hist: torch.Tensor, levels: int = 128) -> torch.Tensor:
    """KL(p || q) for each candidate i = levels..bins (see the module docstring); float64 (bins - levels + 1,)."""
    h = _check_hist(hist, levels).numpy()  # numpy: ~2000 small vector steps, where torch's per-op cost dominates
    bins = h.size
    out = np.full(bins - levels + 1, np.inf)
    tail = np.cumsum(h[::-1])[::-1]  # tail[i] = sum h[i:]
    for i in range(levels, bins + 1):
        sliced = h[:i]
        p = sliced.copy()
        if i < bins:
            p[i - 1] += tail[i]
        group = np.minimum(np.arange(i) // (i // levels), levels - 1)  # (i,) group of each bin
        nonzero = p > 0
        sums = np.bincount(group, weights=sliced, minlength=levels)
        counts = np.bincount(group, weights=nonzero, minlength=levels)
        q = np.where(nonzero, sums[group] / np.maximum(counts[group], 1), 0.0)
        ps, qs = _smooth(p), _smooth(q)
        if ps is None or qs is None:
            continue
        pn, qn = ps / ps.sum(), qs / qs.sum()
        out[i - levels] = np.sum(pn * np.log(pn / qn))
    return torch.from_numpy(out)


def kl_threshold(hist: torch.Tensor, bin_width: float, levels: int = 128) -> float:
    """TensorRT's KL threshold on a histogram of |x| with bins of `bin_width` (see the module docstring)."""
    div = kl_divergences(hist, levels)
    if not bool(torch.isfinite(div).any()):
        return 0.0
    best = int(torch.argmin(div))
    return (best + levels) * bin_width


def percentile_threshold(hist: torch.Tensor, bin_width: float, percentile: float) -> float:
    """The `percentile`-th percentile of |x| from its histogram (linear inside the crossing bin)."""
    h = _check_hist(hist)
    total = float(h.sum())
    if total <= 0:
        return 0.0
    target = total * percentile / 100.0
    cdf = torch.cumsum(h, 0)
    i = int(torch.searchsorted(cdf, torch.tensor([target], dtype=torch.float64))[0].clamp(max=h.numel() - 1))
    before = float(cdf[i - 1]) if i > 0 else 0.0
    frac = (target - before) / float(h[i]) if float(h[i]) > 0 else 1.0
    return (i + min(max(frac, 0.0), 1.0)) * bin_width


def mse_errors(hist: torch.Tensor, bin_width: float, clamp: int, candidates: torch.Tensor) -> torch.Tensor:
    """Expected squared error per candidate threshold (float64 (C,)), see the module docstring."""
    h = _check_hist(hist)
    centres = (torch.arange(h.numel(), dtype=torch.float64) + 0.5) * bin_width
    t = candidates.to(torch.float64)[:, None]  # (C, 1) against (bins,)
    inside = (t / clamp) ** 2 / 12.0
    outside = (centres[None, :] - t) ** 2
    err = torch.where(centres[None, :] <= t, inside.expand(-1, h.numel()), outside)
    return err @ h


def mse_threshold(hist: torch.Tensor, bin_width: float, clamp: int = 127, step: int = 4) -> float:
    """The bin edge t (every `step` bins) with the smallest expected squared quantization error."""
    bins = _check_hist(hist).numel()
    candidates = torch.arange(step, bins + 1, step, dtype=torch.float64) * bin_width
    errors = torch.cat([mse_errors(hist, bin_width, clamp, c) for c in candidates.split(256)])
    return float(candidates[int(torch.argmin(errors))])


def ema(prev: float | None, value: float, decay: float) -> float:
    """decay * prev + (1 - decay) * value (value alone for the first observation)."""
    return value if prev is None else decay * prev + (1.0 - decay) * value


def scale_from_threshold(threshold: float, clamp: int = 127) -> float:
    """The int8 step for a threshold (a tiny positive step for an all-zero input, so division stays finite)."""
    if not threshold == threshold or threshold in (float("inf"), float("-inf")):
        raise ValueError(f"activation threshold {threshold} is not finite")
    return max(float(threshold), _TINY) / clamp
