"""`QuantLSTM`: nn.LSTM with every gate weight (weight_ih_l*, weight_hh_l*, incl. _reverse) packed.

On the CPU an eager call runs torch's fused LSTM on float gate weights (`lowbit.nn.lstm_fused`: memory Normal's float
copies, at memory Low and High a float copy of the layer, announced once): a packed kernel would serve the
recurrence only one time step at a time. Elsewhere (torch.compile, other devices, a forced kernel, static INT8's
projections) per layer and direction the input projection runs as one linear op over all T*B rows and the recurrent
projection as one op per time step (M = batch). Gate order i, f, g, o and the update c' = f*c + i*g,
h' = o*tanh(c') are nn.LSTM's; biases stay float. proj_size and PackedSequence inputs are not supported (the swap
leaves such layers in float, with the reason).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..quant.formats import PackedWeight
from ..runtime.config import BackendConfig
from ..runtime.dispatch import Decision, select_lstm
from . import lstm_fused
from .linear import QuantModule
from .weight_cache import forcing


def lstm_param_names(num_layers: int, bidirectional: bool, bias: bool) -> tuple[list[str], list[str]]:
    """(weight names, bias names) in nn.LSTM's naming."""
    weights, biases = [], []
    for layer in range(num_layers):
        for sfx in ("", "_reverse") if bidirectional else ("",):
            weights += [f"weight_ih_l{layer}{sfx}", f"weight_hh_l{layer}{sfx}"]
            if bias:
                biases += [f"bias_ih_l{layer}{sfx}", f"bias_hh_l{layer}{sfx}"]
    return weights, biases


class QuantLSTM(QuantModule):
    """nn.LSTM (no projection) with packed gate weights; same forward signature and outputs as nn.LSTM.

    forward(input (T, B, I) or (B, T, I) when batch_first, or unbatched (T, I); hx=(h0, c0) each (L*D, B, H))
    -> (output (T, B, D*H), (h_n, c_n)), D = 2 when bidirectional.
    """

    def __init__(self, input_size: int, hidden_size: int, weights: dict[str, PackedWeight],
                 biases: dict[str, torch.Tensor] | None = None, num_layers: int = 1, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, backend: BackendConfig | None = None):
        super().__init__(backend)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.batch_first, self.dropout, self.bidirectional = batch_first, float(dropout), bidirectional
        biases = biases or {}
        self.bias = bool(biases)
        w_names, b_names = lstm_param_names(num_layers, bidirectional, self.bias)
        missing = sorted(set(w_names) - set(weights))
        if missing or set(weights) - set(w_names):
            raise ValueError(f"QuantLSTM needs exactly the gate weights {w_names}; missing {missing}, "
                             f"unexpected {sorted(set(weights) - set(w_names))}")
        for name in w_names:
            self.set_quantized(name, weights[name])
        for name in b_names:
            b = biases[name]
            self.register_parameter(name, b if isinstance(b, nn.Parameter) else nn.Parameter(b, requires_grad=False))

    @classmethod
    def from_float(cls, lstm: nn.LSTM, weights: dict[str, PackedWeight], backend: BackendConfig | None = None):
        """Replace `lstm`'s gate weights by `weights` (same shapes); biases are kept as they are."""
        if lstm.proj_size:
            raise ValueError(f"QuantLSTM does not support proj_size={lstm.proj_size}")
        for name, qw in weights.items():
            p = getattr(lstm, name, None)
            if p is None or tuple(qw.shape) != tuple(p.shape):
                raise ValueError(f"packed weight {name} of shape {qw.shape} does not match the LSTM's "
                                 f"{None if p is None else tuple(p.shape)}")
        _, b_names = lstm_param_names(lstm.num_layers, lstm.bidirectional, lstm.bias)
        return cls(lstm.input_size, lstm.hidden_size, weights, {n: getattr(lstm, n) for n in b_names},
                   lstm.num_layers, lstm.batch_first, lstm.dropout, lstm.bidirectional, backend).keep_mode(lstm)

    def _bias(self, layer_sfx: str) -> torch.Tensor | None:
        if not self.bias:
            return None
        return getattr(self, f"bias_ih_{layer_sfx}") + getattr(self, f"bias_hh_{layer_sfx}")

    def _direction(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, name: str, reverse: bool):
        """One layer, one direction: x (T, B, I), h/c (B, H) -> (out (T, B, H), h, c)."""
        xp = self.quant_linear(f"weight_ih_{name}", x, self._bias(name))  # (T, B, 4H), both biases folded in
        outs = [None] * x.shape[0]
        steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
        for t in steps:
            gates = xp[t] + self.quant_linear(f"weight_hh_{name}", h, None)
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs[t] = h
        return torch.stack(outs), h, c

    def _names(self) -> tuple[list[str], list[str]]:
        """`lstm_param_names` of this layer, computed once (a layer unpickled from an older version computes it)."""
        names = self.__dict__.get("_param_names")
        if names is None:
            names = self.__dict__["_param_names"] = lstm_param_names(self.num_layers, self.bidirectional, self.bias)
        return names

    def _own_projections(self) -> bool:
        """True unless a subclass computes the projections its own way (static INT8's), which the fused LSTM
        cannot."""
        return type(self).quant_linear is QuantModule.quant_linear

    def fused_decision(self, device_type: str) -> Decision | None:
        """`dispatch.select_lstm`'s decision where this layer runs torch's fused LSTM on float gate weights on
        `device_type` (`lowbit.nn.lstm_fused`; its kernel is DENSE), or None: the per-step packed projections."""
        if not self._own_projections() or device_type != "cpu":
            return None
        weights = max(math.prod(self.quant_meta[ih]["shape"]) + math.prod(self.quant_meta[hh]["shape"])
                      for ih, hh in zip(self._names()[0][::2], self._names()[0][1::2], strict=True))
        decision = select_lstm(device_type, self.backend, weights)
        return None if decision is None or (decision.fallback_reason is not None and forcing()) else decision

    def _check(self, input: torch.Tensor, hx) -> None:
        """nn.LSTM's input contract: a float (T, B, I) / (B, T, I) / unbatched (T, I) input, hx (h0, c0) each
        (L*D, B, H) or unbatched (L*D, H); TypeError / ValueError naming the expected shape otherwise."""
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"QuantLSTM takes a padded Tensor input, not {type(input).__name__} (PackedSequence is "
                            "not supported: pad the batch instead)")
        i, h, ld = self.input_size, self.hidden_size, self.num_layers * (2 if self.bidirectional else 1)
        seq = "(B, T, " if self.batch_first else "(T, B, "
        self.check_input(input, lambda t: t.dim() in (2, 3) and t.shape[-1] == i, f"{seq}{i}) or unbatched (T, {i})")
        if hx is None:
            return
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError(f"QuantLSTM takes hx = (h0, c0), got {type(hx).__name__}")
        batch = () if input.dim() == 2 else (input.shape[0 if self.batch_first else 1],)
        want = (ld, *batch, h)
        for name, t in zip(("h0", "c0"), hx, strict=True):
            self.check_input(t, lambda s: tuple(s.shape) == want, f"{want} for {name}")

    def forward(self, input: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor] | None = None):
        self._check(input, hx)
        if self._own_projections() and (hx is None or hx[0].dtype is hx[1].dtype is input.dtype):
            flat = lstm_fused.flat_weights(self, input, *self._names())
            if flat is not None:
                return lstm_fused.run(self, input, hx, flat)
        unbatched = input.dim() == 2
        x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)
        dirs = 2 if self.bidirectional else 1
        if hx is None:
            zeros = x.new_zeros(self.num_layers * dirs, x.shape[1], self.hidden_size)
            h0, c0 = zeros, zeros
        else:
            h0, c0 = (t.unsqueeze(1) for t in hx) if unbatched else hx
        hn, cn = [], []
        for layer in range(self.num_layers):
            outs = []
            for d in range(dirs):
                idx = layer * dirs + d
                out, h, c = self._direction(x, h0[idx], c0[idx], f"l{layer}{'_reverse' if d else ''}", d == 1)
                outs.append(out)
                hn.append(h)
                cn.append(c)
            x = torch.cat(outs, dim=-1) if dirs == 2 else outs[0]
            if self.training and self.dropout > 0 and layer < self.num_layers - 1:
                x = nn.functional.dropout(x, self.dropout, training=True)
        h_n, c_n = torch.stack(hn), torch.stack(cn)
        if unbatched:
            return x.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
        return (x.transpose(0, 1) if self.batch_first else x), (h_n, c_n)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, bias={self.bias}, "
                f"batch_first={self.batch_first}, bidirectional={self.bidirectional}, " + self._quant_repr())
