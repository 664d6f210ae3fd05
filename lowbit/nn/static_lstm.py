"""`StaticQuantLSTM`: nn.LSTM with int8 gate weights and int8 inputs to both projections, int32 accumulation.

The input projection of layer 0 quantizes the LSTM's input with the calibrated step `input_scale`; every other
projection (weight_hh_*, and weight_ih_* of layers > 0) reads hidden states h = o * tanh(c), which lie in (-1, 1),
so its step is fixed at 1 / input_clamp without calibration (a caller's h0 beyond that range widens the step for
that call). Gates, biases and the cell update stay float, as in `QuantLSTM`. Weights are 8-bit symmetric
per-channel packed weights (rows = the 4H gate rows). Attributes `input_scale`, `input_clamp` are kept in the
checkpoint's "static" metadata.
"""

from __future__ import annotations

import torch

from ..quant.static_int8 import int8_codes
from . import weight_cache
from .lstm import QuantLSTM, lstm_param_names


class StaticQuantLSTM(QuantLSTM):
    """QuantLSTM computing both projections as static W8A8 (see the module docstring)."""

    def set_static(self, input_scale: float, input_clamp: int = 127, input_smooth=None):
        if input_smooth is not None:
            raise ValueError("input_smooth (SmoothQuant) applies to Linear layers only, not LSTM")
        if not (isinstance(input_scale, float) and 0 < input_scale < float("inf")):
            raise ValueError(f"input_scale must be a positive finite float, got {input_scale!r}")
        if type(input_clamp) is not int or not 1 <= input_clamp <= 127:
            raise ValueError(f"input_clamp must be an int in 1..127, got {input_clamp!r}")
        self.input_scale, self.input_clamp, self.input_smooth = input_scale, input_clamp, None
        self._h_step = 1.0 / input_clamp
        return self

    def static_meta(self) -> dict:
        return {"input_scale": self.input_scale, "input_clamp": self.input_clamp}

    @classmethod
    def from_quant(cls, layer: QuantLSTM, input_scale: float, input_clamp: int = 127, input_smooth=None):
        """The static twin of a QuantLSTM holding 8-bit symmetric per-channel gate weights (buffers shared)."""
        w_names, b_names = lstm_param_names(layer.num_layers, layer.bidirectional, layer.bias)
        weights = {n: layer.quantized_weight(n) for n in w_names}
        for qw in weights.values():
            int8_codes(qw)  # refuses other formats
        new = cls(layer.input_size, layer.hidden_size, weights, {n: getattr(layer, n) for n in b_names},
                  layer.num_layers, layer.batch_first, layer.dropout, layer.bidirectional, layer.backend)
        new.train(layer.training)
        return new.set_static(float(input_scale), int(input_clamp), input_smooth)

    def quant_linear(self, name: str, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x (..., K) @ W_name.T + bias with x quantized at this projection's fixed step, through the kernel the
        static dispatch picks (the one weight cache: decisions, prepared weights; a NaN / inf row gives NaN)."""
        step = self.input_scale if name.startswith("weight_ih_l0") else self._h_step
        x2 = x.reshape(-1, x.shape[-1]).float()
        _, w, run = weight_cache.static_plan(self, name, x2.device, x2.shape[0])
        y = run(w, x2, bias, None, step=step, clamp=self.input_clamp)
        return y.reshape(*x.shape[:-1], y.shape[-1]).to(x.dtype)

    def forward(self, input: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor] | None = None):
        bound = 1.0
        if hx is not None and isinstance(hx, (tuple, list)) and len(hx) == 2 and isinstance(hx[0], torch.Tensor):
            bound = max(1.0, float(hx[0].detach().abs().max())) if hx[0].numel() else 1.0
        self._h_step = bound / self.input_clamp
        try:
            return super().forward(input, hx)
        finally:
            self._h_step = 1.0 / self.input_clamp

    def extra_repr(self) -> str:
        return super().extra_repr() + f", static: input_scale={self.input_scale:.4g}, clamp={self.input_clamp}"
