"""HQQ: half-quadratic quantization (Badri & Shaji, 2023), vectorised over all blocks at once.

Starting from the RTN min/max scale and zero, it alternates
  1. codes   q = clamp(round(w / s + z), 0, 2^b - 1) and the error in code units  e = w / s - (q - z),
  2. a proximal lp shrinkage (p < 1) of that error: e' = sign(e) * relu(|e| - |e|^(p-1) / beta),
  3. the closed-form zero for the shrunk error: z = mean_g(q - (w / s - e')),
with beta growing by kappa each step. Each block keeps the zero with the lowest squared error seen (so HQQ never
ends worse than its RTN start), and the loop stops early once the mean absolute error stops improving.

The error is measured in units of the block's quantization step (w / s) rather than in weight units as the
published code does: there the shrinkage threshold |e|^(p-1)/beta dwarfs the errors of typical weights (|w| ~ 0.02
gives a threshold ~0.6 against errors ~0.002), so every error is shrunk to zero and the step degenerates into a
plain least-squares zero fit. In code units the threshold is scale-free and the lp step does what it is meant to.
Math is float32 whatever the input dtype; works on any device torch does.
"""

from __future__ import annotations

import torch

from .blocks import block_views
from .config import QuantConfig
from .rtn import rtn_codes, rtn_scale_zero, to_storage


def shrink_lp(e: torch.Tensor, beta: float, p: float) -> torch.Tensor:
    """Proximal operator of the lp norm (p <= 1), the generalised soft threshold used by HQQ."""
    if p == 1:
        return torch.sign(e) * torch.relu(e.abs() - 1.0 / beta)
    return torch.sign(e) * torch.relu(e.abs() - (e.abs() + 1e-8).pow(p - 1) / beta)


def _code_errors(w_codes, zero, qmax):
    """Codes and reconstruction error in code units (N, nb, g) for the current zero (N, nb, 1)."""
    q = torch.round(w_codes + zero).clamp_(0, qmax)
    return q, w_codes - (q - zero)


def hqq_zero(blocks: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, cfg: QuantConfig):
    """Optimised float32 zeros (N, nb) for blocks (N, nb, g) given fixed scales and starting zeros (N, nb)."""
    w_codes = blocks.float() / scale.float().unsqueeze(-1)  # the weights in units of their block's step
    z = zero.float().unsqueeze(-1)
    qmax = float((1 << bits) - 1)
    beta = cfg.hqq_beta
    best_z, best_err, last_mean = z.clone(), None, float("inf")
    for step in range(cfg.hqq_iters + 1):
        q, err = _code_errors(w_codes, z, qmax)
        block_err = err.square().sum(-1, keepdim=True)  # same order as the weight-space error: s is per block
        if best_err is None:
            best_err = block_err
        else:
            better = block_err < best_err
            best_z = torch.where(better, z, best_z)
            best_err = torch.where(better, block_err, best_err)
        mean_abs = err.abs().mean().item()
        if step == cfg.hqq_iters or (cfg.hqq_early_stop and mean_abs >= last_mean):
            break
        last_mean = mean_abs
        shrunk = shrink_lp(err, beta, cfg.hqq_lp_norm)
        z = (q - (w_codes - shrunk)).mean(-1, keepdim=True)
        beta *= cfg.hqq_kappa
    return best_z.squeeze(-1)


def hqq_scale_zero(blocks: torch.Tensor, bits: int, cfg: QuantConfig, scale_dtype: torch.dtype):
    """Stored scale and HQQ-optimised zero (N, nb) for blocks (N, nb, g)."""
    scale, zero = rtn_scale_zero(blocks, bits, symmetric=False, scale_dtype=scale_dtype)
    z = hqq_zero(blocks, scale, zero, bits, cfg)
    return scale, to_storage(z, scale_dtype, "zero")


def quantize_hqq_rows(w: torch.Tensor, bits: int, group_size: int, cfg: QuantConfig, scale_dtype: torch.dtype):
    """HQQ for a 2-D chunk of rows (N, K): codes uint8 (N, K), scale (N, nb), zero (N, nb)."""
    codes, scales, zeros = [], [], []
    for blocks in block_views(w, group_size):
        scale, zero = hqq_scale_zero(blocks, bits, cfg, scale_dtype)
        codes.append(rtn_codes(blocks, scale, zero, bits).flatten(1))  # final codes from the stored scale/zero
        scales.append(scale)
        zeros.append(zero)
    return torch.cat(codes, 1), torch.cat(scales, 1), torch.cat(zeros, 1)
