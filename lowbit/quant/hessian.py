"""Second-order statistics of a layer's inputs, and the output error they give without storing any activation.

For a layer y = x Wᵀ (+ b) fed rows x (M, K), everything the data-aware methods need is in
  xtx = Σ xᵀx (K, K), the proxy Hessian of ‖(W - Ŵ) xᵀ‖² (GPTQ's H = 2·xtx/M up to a factor that cancels),
  abs_sum = Σ |x| (K,), for the activation-aware channel scales,
  count = M.
The output error of any replacement Ŵ on those inputs is then exact: ‖x (W - Ŵ)ᵀ‖²_F = Σ_n d_n xtx d_nᵀ, d = W - Ŵ.
xtx is float32, accumulated in place by GEMMs per batch (`addmm_`, as GPTQ's reference code keeps it; on wide inputs
only the upper triangle, mirrored when read: the product is symmetric): a float64
running sum cost a float32 product, its float64 copy and the add per batch (3x the time on 5632-wide inputs) and
twice the memory, for a rounding (~1e-7 relative per batch) far below the statistic's own sampling noise. abs_sum
is float64.
"""

from __future__ import annotations

import torch

_PANEL = 1024  # rows of xtx per product when only the upper triangle is accumulated (K = 5632: 58% of the work)


class InputStats:
    """Running xtx (K, K) float32, abs_sum (K,) float64 and row count of the inputs a layer has seen.

    For K >= 2 * _PANEL each batch updates only xtx's upper triangle, in row panels (one GEMM each); the lower
    triangle is mirrored from it when `xtx` is read."""

    def __init__(self, k: int, device: torch.device | str = "cpu"):
        self.k = k
        self._xtx = torch.zeros(k, k, dtype=torch.float32, device=device)
        self._mirrored = True
        self.abs_sum = torch.zeros(k, dtype=torch.float64, device=device)
        self.count = 0

    def add(self, x: torch.Tensor) -> None:
        """Add rows x (M, K) (any float dtype; computed and accumulated in float32)."""
        if x.dim() != 2 or x.shape[1] != self.k:
            raise ValueError(f"inputs must be (M, {self.k}), got {tuple(x.shape)}")
        x = x.detach().float()
        if self.k < 2 * _PANEL:
            self._xtx.addmm_(x.T, x)
        else:
            for start in range(0, self.k, _PANEL):  # the diagonal block and everything right of it
                self._xtx[start:start + _PANEL, start:].addmm_(x[:, start:start + _PANEL].T, x[:, start:])
            self._mirrored = False
        self.abs_sum += x.abs().sum(0).double()
        self.count += x.shape[0]

    @property
    def xtx(self) -> torch.Tensor:
        """Σ xᵀx (K, K) float32, symmetric."""
        if not self._mirrored:
            for start in range(0, self.k, _PANEL):
                stop = start + _PANEL
                self._xtx[stop:, start:stop] = self._xtx[start:stop, stop:].T
            self._mirrored = True
        return self._xtx

    @property
    def abs_mean(self) -> torch.Tensor:
        """Mean |x| per input channel (K,), float64."""
        return self.abs_sum / max(self.count, 1)


def output_error_sq(delta: torch.Tensor, xtx: torch.Tensor) -> torch.Tensor:
    """‖x deltaᵀ‖² per output row (N,) float64 for delta (N, K), from xtx = Σ xᵀx (K, K)."""
    d = delta.float()  # float32 products (the statistic itself is float32-accurate), float64 sums
    return ((d @ xtx.float()) * d).sum(1, dtype=torch.float64)


def relative_output_error(w: torch.Tensor, w_hat: torch.Tensor, xtx: torch.Tensor) -> float:
    """‖x (W - Ŵ)ᵀ‖ / ‖x Wᵀ‖ on the inputs summarised by xtx (bias excluded); 0 when the output is all zero."""
    w2, wh2 = w.reshape(w.shape[0], -1).double(), w_hat.reshape(w.shape[0], -1).double()
    ref = output_error_sq(w2, xtx).sum().item()
    err = output_error_sq(w2 - wh2, xtx).sum().item()
    return (max(err, 0.0) / ref) ** 0.5 if ref > 0 else 0.0


def split_by_hessians(w: torch.Tensor, hessians, name: str = "weight"):
    """(w as (N, K), the Hessians as a list, rows per Hessian): one xtx per equal group of output rows (a grouped
    conv has one per group). ValueError naming `name` when they cannot split N evenly."""
    hs = [hessians] if isinstance(hessians, torch.Tensor) else list(hessians)
    w2d = w.detach().reshape(w.shape[0], -1)
    if not hs or w.shape[0] % len(hs):
        raise ValueError(f"{name}: {len(hs)} Hessians cannot split {w.shape[0]} output rows into equal groups")
    return w2d, hs, w.shape[0] // len(hs)
