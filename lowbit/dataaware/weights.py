"""One weight, its input statistics and a config in; the packed weight and its output errors out."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..quant.awq import clip_quantize
from ..quant.config import QuantConfig, QuantMethod
from ..quant.format import QuantizedWeight
from ..quant.gptq import gptq_quantize
from ..quant.hessian import output_error_sq
from ..quant.quantize import quantize_weight


@dataclass
class WeightResult:
    """A quantized parameter with its relative output error ‖ΔW x‖/‖W x‖ on the calibration inputs, before (plain
    RTN/HQQ with the same bits and block) and after the data-aware step."""

    name: str
    qweight: QuantizedWeight
    error_before: float
    error_after: float


def plain_config(cfg: QuantConfig) -> QuantConfig:
    """The data-free config a data-aware one is compared with (HQQ for GPTQ on HQQ grids, else RTN); a data-free
    config is returned as it is."""
    if not cfg.data_aware:
        return cfg
    hqq = cfg.method is QuantMethod.HQQ or (cfg.method is QuantMethod.GPTQ and cfg.gptq_scales == "hqq")
    return replace(cfg, method=QuantMethod.HQQ if hqq else QuantMethod.RTN, awq=False)


def grouped_error(w: torch.Tensor, w_hat: torch.Tensor, hessians: list[torch.Tensor]) -> float:
    """Relative output error of w_hat against w (N, ...) with one xtx per equal group of rows."""
    n = w.shape[0]
    w2, wh2 = w.reshape(n, -1).double(), w_hat.reshape(n, -1).double()
    rows = n // len(hessians)
    err = ref = 0.0
    for i, h in enumerate(hessians):
        sl = slice(i * rows, (i + 1) * rows)
        ref += output_error_sq(w2[sl], h).sum().item()
        err += output_error_sq(w2[sl] - wh2[sl], h).sum().item()
    return (max(err, 0.0) / ref) ** 0.5 if ref > 0 else 0.0


def quantize_param(w: torch.Tensor, hessians: list[torch.Tensor], cfg: QuantConfig, name: str) -> WeightResult:
    """GPTQ or clip-searched RTN (AWQ) of w given its inputs' xtx per group of rows; plain RTN/HQQ if not
    data-aware. Errors are measured on the same statistics."""
    plain = quantize_weight(w, plain_config(cfg), name)
    if cfg.is_float or not cfg.data_aware:
        qw = plain
    elif cfg.method is QuantMethod.GPTQ:
        qw = gptq_quantize(w, hessians, cfg, name)
    else:  # AWQ (its channel scales were folded into the model before this step)
        qw = clip_quantize(w, hessians, cfg, name)
    before = grouped_error(w, plain.dequantize(torch.float64), hessians)
    after = grouped_error(w, qw.dequantize(torch.float64), hessians)
    return WeightResult(name, qw, before, after)
