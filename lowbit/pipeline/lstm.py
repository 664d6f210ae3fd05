"""LSTM calibration: weight_ih from each layer's inputs, weight_hh from the float recurrence's h_{t-1}.

The collector keeps the LSTM's calibration inputs (one layer's activations), then walks its layers in order: for
layer l and each direction, xtx of the layer input sequence gives weight_ih's statistic, and the hidden states
h_{t-1} of the recurrence run with the layer's float weights give weight_hh's. The next layer's input is the
output of this layer run with the quantized weights (sequential) or the float ones.
"""

from __future__ import annotations

import torch
from torch import nn

from ..calib.capture import CalibrationError
from ..quant.config import QuantConfig
from ..quant.hessian import InputStats
from .weights import WeightResult, quantize_param


def run_direction(x: torch.Tensor, w_ih, w_hh, b_ih, b_hh, h0: torch.Tensor, c0: torch.Tensor, reverse: bool):
    """One LSTM direction over x (T, B, I): outputs (T, B, H) and the hidden state each step started from."""
    gates_x = x @ w_ih.T  # (T, B, 4H)
    if b_ih is not None:
        gates_x = gates_x + b_ih + b_hh
    h, c = h0, c0
    out, prev = x.new_empty(*x.shape[:2], h0.shape[-1]), x.new_empty(*x.shape[:2], h0.shape[-1])
    for t in (range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])):
        prev[t] = h
        i, f, g, o = (gates_x[t] + h @ w_hh.T).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        out[t] = h
    return out, prev


class LSTMCollector:
    """Keeps the inputs (x (T, B, I), h0, c0) of every call of an nn.LSTM."""

    def __init__(self, module: nn.LSTM):
        self.module = module
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    @property
    def count(self) -> int:
        return len(self.calls)

    def hook(self, args: tuple, kwargs: dict) -> None:
        m = self.module
        x = args[0] if args else kwargs.get("input")
        hx = args[1] if len(args) > 1 else kwargs.get("hx")
        if not isinstance(x, torch.Tensor):
            raise CalibrationError(f"LSTM calibration needs tensor inputs, got {type(x).__name__} (PackedSequence "
                                   "is not supported: skip this layer)")
        if x.dim() == 2:  # unbatched (T, I)
            x, hx = x.unsqueeze(1), None if hx is None else tuple(h.unsqueeze(1) for h in hx)
        elif m.batch_first:
            x = x.transpose(0, 1)
        d, b = 2 if m.bidirectional else 1, x.shape[1]
        if hx is None:
            zeros = torch.zeros(m.num_layers * d, b, m.hidden_size, dtype=x.dtype, device=x.device)
            hx = (zeros, zeros)
        self.calls.append((x.detach().float(), hx[0].detach().float(), hx[1].detach().float()))

    def _param(self, name: str):
        p = getattr(self.module, name, None)
        return None if p is None else p.detach().float()

    def walk(self, fit=None) -> None:
        """Layer by layer, each direction: the statistics of weight_ih (the layer's inputs) and weight_hh (h_{t-1} of
        the recurrence run with the float weights) go to `fit(ih_name, hh_name, st_ih, st_hh)`, which returns the
        float32 (w_ih, w_hh) that compute the next layer's inputs, or None for the float weights (also without fit)."""
        m = self.module
        dirs = ("", "_reverse") if m.bidirectional else ("",)
        inputs = [c[0] for c in self.calls]
        for layer in range(m.num_layers):
            outs = [[] for _ in inputs]
            for di, sfx in enumerate(dirs):
                ih, hh = f"weight_ih_l{layer}{sfx}", f"weight_hh_l{layer}{sfx}"
                b_ih, b_hh = self._param(f"bias_ih_l{layer}{sfx}"), self._param(f"bias_hh_l{layer}{sfx}")
                w_ih, w_hh = self._param(ih), self._param(hh)
                st_ih, st_hh = InputStats(w_ih.shape[1]), InputStats(w_hh.shape[1])
                states = [(h0[layer * len(dirs) + di], c0[layer * len(dirs) + di]) for _, h0, c0 in self.calls]
                floats = []
                for x, (h0, c0) in zip(inputs, states, strict=True):
                    st_ih.add(x.reshape(-1, x.shape[-1]))
                    out, prev = run_direction(x, w_ih, w_hh, b_ih, b_hh, h0, c0, reverse=bool(sfx))
                    st_hh.add(prev.reshape(-1, prev.shape[-1]))
                    floats.append(out)
                chosen = fit(ih, hh, st_ih, st_hh) if fit is not None else None
                for j, (x, (h0, c0)) in enumerate(zip(inputs, states, strict=True)):
                    outs[j].append(floats[j] if chosen is None
                                   else run_direction(x, *chosen, b_ih, b_hh, h0, c0, reverse=bool(sfx))[0])
            inputs = [torch.cat(o, -1) for o in outs]

    def quantize(self, cfg: QuantConfig, name: str, sequential: bool = True) -> list[WeightResult]:
        """Quantize every gate weight, layer by layer (see the module docstring)."""
        results = []

        def fit(ih, hh, st_ih, st_hh):
            r_ih = quantize_param(getattr(self.module, ih), [st_ih.xtx], cfg, f"{name}.{ih}", rows=st_ih.count)
            r_hh = quantize_param(getattr(self.module, hh), [st_hh.xtx], cfg, f"{name}.{hh}", rows=st_hh.count)
            results.extend([r_ih, r_hh])
            if not sequential:
                return None
            return r_ih.qweight.dequantize(torch.float32), r_hh.qweight.dequantize(torch.float32)

        self.walk(fit)
        return results
