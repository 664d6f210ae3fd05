"""MNN's debug mode: per static layer, float vs int8 output on the same inputs over the calibration set.

For each item, every static layer's own input is fed to a float copy of the layer (BatchNorm already folded) and
to the int8 layer; cosine = <yf, yq> / (|yf| |yq|), SNR = 10 log10(sum yf^2 / sum (yf - yq)^2), overflow = the
fraction of input values whose |x| exceeds clamp * step. Rows are sorted worst cosine first.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..calib import CalibrationSet, run_pass
from ..nn.static import FUSED_ACTS
from .calibrate import layer_input
from .summary import DebugRow


def _first(y):
    return y[0] if isinstance(y, tuple) else y


def debug_table(model: nn.Module, cal: CalibrationSet, float_layers: dict[str, nn.Module],
                progress: bool = True) -> list[DebugRow]:
    named = dict(model.named_modules())
    layers = {n: named[n] for n in float_layers}
    acc = {n: torch.zeros(6, dtype=torch.float64) for n in layers}  # fq, ff, qq, ee, overflow, count

    def make(name):
        q, f = layers[name], float_layers[name]

        def hook(args, kwargs):
            x = layer_input(args, kwargs)
            yf, yq = _first(f(x)).double(), _first(q.forward(x)).double()  # LSTM: the output sequence
            if getattr(q, "fused_relu", False):  # the int8 layer computes the ReLU that followed it
                yf = torch.relu(yf)
            if getattr(q, "fused_act", None) is not None:  # or the ReLU6 / hard-swish
                yf = FUSED_ACTS[q.fused_act](yf)
            limit = q.input_clamp * q.input_scale
            acc[name] += torch.tensor([(yf * yq).sum(), (yf * yf).sum(), (yq * yq).sum(), ((yf - yq) ** 2).sum(),
                                       float((x.abs() > limit).sum()), x.numel()], dtype=torch.float64)
        return hook

    run_pass(model, cal, {n: make(n) for n in layers}, layers, desc="static int8: debug", progress=progress)
    rows = []
    for name, (fq, ff, qq, ee, over, count) in ((n, a.tolist()) for n, a in acc.items()):
        cos = fq / math.sqrt(ff * qq) if ff > 0 and qq > 0 else float("nan")
        snr = 10 * math.log10(ff / ee) if ee > 0 else float("inf")
        rows.append(DebugRow(name, cos, snr, over / max(count, 1)))
    return sorted(rows, key=lambda r: (r.cosine if r.cosine == r.cosine else -2.0))
