"""`StaticQuantLSTM`: nn.LSTM with int8 gate weights and int8 inputs to both projections, int32 accumulation.

The input projection of layer 0 quantizes the LSTM's input with the calibrated step `input_scale`; every other
projection (weight_hh_*, and weight_ih_* of layers > 0) reads hidden states h = o * tanh(c), which lie in (-1, 1),
so its step is fixed at 1 / input_clamp without calibration (a caller's h0 beyond that range widens the step for
that call). Gates, biases and the cell update stay float, as in `QuantLSTM`. Weights are 8-bit symmetric
per-channel packed weights (rows = the 4H gate rows). Attributes `input_scale`, `input_clamp` are kept in the
checkpoint's "static" metadata.
"""

from __future__ import annotations

import warnings

import torch

from ..kernels.cpu_static_int8 import (
    int8_matmul,
    native_epilogue,
    native_linear_static,
    pack_static_native,
    prepare_static_int8,
)
from ..quant.static_int8 import int8_codes, quantize_symmetric
from ..runtime.static_int8 import select_static_impl
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
        self._prepared, self._impls, self._native, self._h_step = {}, {}, {}, 1.0 / input_clamp
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

    def _weight(self, name: str):
        packed = self._buffers[f"{name}_packed"]
        key = (packed.data_ptr(), packed._version)
        entry = self._prepared.get(name)
        if entry is None or entry[0] != key:
            qw = self.quantized_weight(name)
            entry = (key, prepare_static_int8(int8_codes(qw), qw.scale.reshape(-1)))
            self._prepared[name] = entry
        return entry[1]

    def _native_weight(self, name: str, w):
        entry = self._native.get(name)
        if entry is None or entry[0] is not w:
            entry = (w, pack_static_native(w.wt.t(), w.scale))
            self._native[name] = entry
        return entry[1]

    def quant_linear(self, name: str, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x (..., K) @ W_name.T + bias with x quantized at this projection's fixed step."""
        step = self.input_scale if name.startswith("weight_ih_l0") else self._h_step
        w = self._weight(name)
        x2 = x.reshape(-1, x.shape[-1]).float()
        bucket = 1 if x2.shape[0] <= 1 else 2 if x2.shape[0] < 16 else 16
        key = (x2.device.type, bucket)
        if key not in self._impls:
            self._impls[key] = select_static_impl(x2.device.type, bucket, w.n, w.k,
                                                  weight_cache.current_capabilities())
            if self._impls[key][1] is not None:
                warnings.warn(f"lowbit static int8: {self._impls[key][1]}; using the exact float64 emulation",
                              stacklevel=3)
        impl = self._impls[key][0]
        if impl == "native":  # the epilogue vectors depend on the step, which changes per call for h: cheap (N,)
            nw = self._native_weight(name, w)
            y = native_linear_static(x2, nw, step, self.input_clamp, native_epilogue(nw, step, bias))
        else:
            xq = quantize_symmetric(x2, step, self.input_clamp)
            y = int8_matmul(xq, w, impl if impl == "int_mm" else "emulated").to(torch.float32)
            y.mul_(w.scale.to(y.device) * step)
            if bias is not None:
                y.add_(bias.float())
        bad = ~torch.isfinite(x2.abs().amax(1))
        if bool(bad.any()):
            y[bad] = float("nan")
        return y.reshape(*x.shape[:-1], w.n).to(x.dtype)

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
