"""One weight, its input statistics and a config in; the packed weight and its output errors out."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..quant.config import QuantConfig, QuantMethod
from ..quant.format import QuantizedWeight
from ..quant.hessian import output_error_sq
from ..quant.quantize import quantize_weight
from .checks import degenerate, held_out_worse
from .registry import method_for


@dataclass
class WeightResult:
    """A quantized parameter with its relative output error ‖ΔW x‖/‖W x‖ on the calibration inputs, before (plain
    RTN/HQQ with the same bits and block) and after the data-aware step. `held_out`: the data-aware weight passed a
    check on held-out inputs; `fallback`: why the data-free weight was kept instead ("" when it was not)."""

    name: str
    qweight: QuantizedWeight
    error_before: float
    error_after: float
    fallback: str = ""
    held_out: bool = False


def plain_config(cfg: QuantConfig) -> QuantConfig:
    """The data-free config a data-aware one is compared with (HQQ for GPTQ on HQQ grids, else RTN); a data-free
    config is returned as it is."""
    if not cfg.data_aware:
        return cfg
    hqq = cfg.method is QuantMethod.HQQ or (cfg.method is QuantMethod.GPTQ and cfg.gptq_scales == "hqq")
    return replace(cfg, method=QuantMethod.HQQ if hqq else QuantMethod.RTN, awq=False)


_ROWS_PER_PRODUCT = 4096  # rows of W per (rows, K) x (K, K) product: bounds the float32 copies at lm_head's size


def output_norm_sq(w: torch.Tensor, hessians: list[torch.Tensor],
                   w_hat: torch.Tensor | QuantizedWeight | None = None) -> float:
    """‖x (W - Ŵ)ᵀ‖² (or ‖x Wᵀ‖² without w_hat) summed over the groups of rows of w (N, ...), one xtx per equal
    group, computed in float32 row chunks (each costs its share of a (N, K) x (K, K) product). A QuantizedWeight
    w_hat is dequantized chunk by chunk."""
    n = w.shape[0]
    w2, rows = w.reshape(n, -1), n // len(hessians)
    total = 0.0
    for start in range(0, n, _ROWS_PER_PRODUCT):
        stop = min(start + _ROWS_PER_PRODUCT, n)
        d = w2[start:stop].float() if w_hat is None else w2[start:stop].float() - _rows(w_hat, start, stop)
        for i, h in enumerate(hessians):  # the groups of rows this chunk overlaps
            lo, hi = max(start, i * rows), min(stop, (i + 1) * rows)
            if lo < hi:
                total += output_error_sq(d[lo - start:hi - start], h).sum().item()
    return total


def _rows(w_hat: torch.Tensor | QuantizedWeight, start: int, stop: int) -> torch.Tensor:
    if isinstance(w_hat, QuantizedWeight):
        return w_hat.dequantize_rows(start, stop, torch.float32)
    return w_hat.reshape(w_hat.shape[0], -1)[start:stop].float()


def grouped_error(w: torch.Tensor, w_hat: torch.Tensor | QuantizedWeight, hessians: list[torch.Tensor],
                  ref: float | None = None) -> float:
    """Relative output error of w_hat against w (N, ...) with one xtx per equal group of rows; ref: w's
    output_norm_sq on these hessians when already known."""
    ref = output_norm_sq(w, hessians) if ref is None else ref
    err = output_norm_sq(w, hessians, w_hat)
    return (max(err, 0.0) / ref) ** 0.5 if ref > 0 else 0.0


def _data_aware(w, hessians, cfg, name) -> QuantizedWeight:
    """The method's own fit (GPTQ, AWQ's clipping: `MethodSpec.fit_weight`); a data-free method with awq=True is
    fitted as AWQ (its channel scales were folded in before this step)."""
    fit = method_for(cfg.method).fit_weight or method_for(QuantMethod.AWQ).fit_weight
    return fit(w, hessians, cfg, name)


def quantize_param(w: torch.Tensor, hessians: list[torch.Tensor], cfg: QuantConfig, name: str,
                   held: list[torch.Tensor] | None = None, rows: int | None = None,
                   consume: bool = False) -> WeightResult:
    """GPTQ or clip-searched RTN (AWQ) of w given its inputs' xtx per group of rows; plain RTN/HQQ if not
    data-aware, or when the data-aware weight cannot be trusted (lowbit.pipeline.checks):
      - the inputs are degenerate (all zero, constant, too few distinct rows; `rows` is their count);
      - held (the xtx of held-out inputs, per group) is given and the data-aware weight fitted on `hessians` has a
        larger output error there than the plain one. When it passes, the weight returned is refitted on all the
        data (hessians + held), as cross-validation does.
    Errors (before/after) are those of the returned weight on all the calibration inputs (hessians + held).
    consume: the caller gives both lists up (it holds no other reference to their matrices). The total is then
    summed in place into hessians' matrices and held's are dropped from their list, so that one (K, K) set fewer
    is alive while the final fit runs (127 MB at K = 5632).
    """
    plain, has_held = quantize_weight(w, plain_config(cfg), name), bool(held)
    if cfg.is_float or not cfg.data_aware:
        before = grouped_error(w, plain, _total(hessians, held, consume))
        return WeightResult(name, plain, before, before)
    why = degenerate(hessians, rows, held)
    if not why and has_held and any(float(h.diagonal().sum()) > 0 for h in held):
        why = _held_out_fallback(w, hessians, held, plain, cfg, name)
    total = _total(hessians, held, consume)
    ref_total = output_norm_sq(w, total)
    before = grouped_error(w, plain, total, ref_total)
    if why:
        return WeightResult(name, plain, before, before, fallback=why)
    qw = _data_aware(w, total, cfg, name)
    after = grouped_error(w, qw, total, ref_total)
    return WeightResult(name, qw, before, after, held_out=has_held)


def _total(hessians: list[torch.Tensor], held: list[torch.Tensor] | None, in_place: bool) -> list[torch.Tensor]:
    """hessians + held per group: a new list of sums, or (in_place) summed into hessians with held emptied."""
    if not held:
        return hessians
    if not in_place:
        return [h + g for h, g in zip(hessians, held, strict=True)]
    for h, g in zip(hessians, held, strict=True):
        h.add_(g)
    held.clear()
    return hessians


def _held_out_fallback(w, hessians, held, plain, cfg, name) -> str:
    """Why the data-aware weight fitted on `hessians` is not kept: its output error on the held-out inputs is
    above the plain weight's ("" when it is not)."""
    held_plain = output_norm_sq(w, held, plain)  # squared errors: both share one reference norm
    held_aware = output_norm_sq(w, held, _data_aware(w, hessians, cfg, name))
    if not held_out_worse(max(held_aware, 0.0) ** 0.5, max(held_plain, 0.0) ** 0.5):  # as relative errors
        return ""
    ref_held = output_norm_sq(w, held)
    aware, plain_err = ((max(e, 0.0) / ref_held) ** 0.5 if ref_held > 0 else 0.0 for e in (held_aware, held_plain))
    return f"worse on held-out data (output error {aware:.4f}, {plain.method} {plain_err:.4f})"
