"""Activation ranges of the chosen layers' inputs over the calibration set (one or two passes of `run_pass`).

Pass 1 records, per layer, the largest |x| (and each item's, for EMA; per input channel, for smoothing). KL,
percentile and MSE need a second pass that counts |x| into a histogram over [0, that maximum]; the thresholds then
come from `lowbit.quant.observers`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch
from torch import nn

from ..calib import CalibrationSet, run_pass
from ..quant import observers
from ..quant.static_config import ActivationMethod, StaticConfig


@dataclass
class LayerRange:
    """What pass 1 saw of one layer's input: max |x|, the EMA of per-item maxima, per-channel max |x|, the shape."""

    absmax: float = 0.0
    ema: float | None = None
    shape: tuple | None = None  # the input shape of the first calibration item
    channel_absmax: torch.Tensor | None = None
    hist: torch.Tensor | None = field(default=None, repr=False)


def layer_input(args: tuple, kwargs: dict) -> torch.Tensor:
    x = args[0] if args else kwargs.get("input")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"a quantized layer was called with {type(x).__name__}, not a tensor")
    return x


def _channel_dim(module: nn.Module) -> int:
    return -1 if isinstance(module, nn.Linear) else 1


def channel_absmax(model: nn.Module, cal: CalibrationSet, layers: dict[str, nn.Module],
                   progress: bool = True) -> dict[str, torch.Tensor]:
    """Per input channel max |x| of each Linear layer's input (for SmoothQuant), one pass."""
    out: dict[str, torch.Tensor] = {}

    def make(name):
        def hook(args, kwargs):
            x = layer_input(args, kwargs).detach().float()
            c = x.abs().reshape(-1, x.shape[-1]).amax(0)
            out[name] = c if name not in out else torch.maximum(out[name], c)
        return hook

    run_pass(model, cal, {n: make(n) for n in layers}, layers, desc="static int8: channel ranges", progress=progress)
    return out


def collect_ranges(model: nn.Module, cal: CalibrationSet, layers: dict[str, nn.Module], cfg: StaticConfig,
                   progress: bool = True, channels: bool = False,
                   smooth: dict[str, torch.Tensor] | None = None) -> dict[str, LayerRange]:
    """Pass 1 (and pass 2 when the method needs a histogram); returns the per-layer ranges.

    smooth: {layer: (K,) multiplier} applied to that layer's input (last dim) before it is measured.
    """
    ranges = {name: LayerRange() for name in layers}
    smooth = smooth or {}

    def seen(name, args, kwargs) -> torch.Tensor:
        x = layer_input(args, kwargs).detach().float()
        return x * smooth[name] if name in smooth else x

    def first(name):
        r, dim = ranges[name], _channel_dim(layers[name])

        def hook(args, kwargs):
            x = seen(name, args, kwargs)
            r.shape = r.shape or tuple(x.shape)
            m = float(x.abs().max()) if x.numel() else 0.0
            r.absmax = max(r.absmax, m)
            r.ema = observers.ema(r.ema, m, cfg.ema_decay)
            if channels:
                c = x.abs().transpose(dim, -1).reshape(-1, x.shape[dim]).amax(0)
                r.channel_absmax = c if r.channel_absmax is None else torch.maximum(r.channel_absmax, c)
        return hook

    run_pass(model, cal, {n: first(n) for n in layers}, layers, desc="static int8: ranges", progress=progress)
    if cfg.activation_method in (ActivationMethod.KL, ActivationMethod.PERCENTILE, ActivationMethod.MSE):
        def second(name):
            r = ranges[name]
            r.hist = torch.zeros(cfg.kl_bins, dtype=torch.float64)

            def hook(args, kwargs):
                r.hist += observers.abs_histogram(seen(name, args, kwargs), cfg.kl_bins, r.absmax)
            return hook

        run_pass(model, cal, {n: second(n) for n in layers}, layers, desc="static int8: histograms",
                 progress=progress)
    return ranges


def thresholds(ranges: dict[str, LayerRange], cfg: StaticConfig, progress: bool = True) -> dict[str, float]:
    """The activation threshold of every layer for the configured method (KL search with a tqdm bar)."""
    from tqdm.auto import tqdm

    out = {}
    method = cfg.activation_method
    for name, r in tqdm(ranges.items(), desc=f"static int8: {method.value} thresholds", disable=not progress,
                        leave=False, file=sys.stderr):
        width = r.absmax / cfg.kl_bins
        if method is ActivationMethod.MINMAX or r.absmax == 0:
            out[name] = r.absmax
        elif method is ActivationMethod.EMA:
            out[name] = float(r.ema)
        elif method is ActivationMethod.KL:
            out[name] = observers.kl_threshold(r.hist, width)
        elif method is ActivationMethod.PERCENTILE:
            out[name] = observers.percentile_threshold(r.hist, width, cfg.percentile)
        else:
            out[name] = observers.mse_threshold(r.hist, width, cfg.activation_clamp)
    return out
