"""QuantLSTM's fused path: torch's own LSTM (`torch._VF.lstm`, what nn.LSTM runs) on float gate weights.

`dispatch.select_lstm` decides: at memory Normal the weights are the layer's float copies (`lowbit.nn.dense_copy`);
at memory Low and High on the CPU, for layers small enough that a packed kernel serving the recurrence one time step
at a time is slower, a float copy of each gate weight kept in the weight cache (counted by `resident_bytes`,
announced once by `warn_fallback`, marked in the quantize summary by `float_copy_note`). The flat weight list (nn.LSTM's
`_flat_weights` order) is built once and kept as the layer's `_bound` (`FlatWeights`) while the layer's buffers,
biases, backend and the kernel table stay as they were; `set_backend`, `clear_cache`, `.to()` and copies drop it.

Eager CPU calls only: under torch.compile (dynamo does not trace RNNs), a forced kernel, another device, a compute
dtype other than the input's, a weight of another format at memory Low, or a subclass with its own projections
(static INT8's), QuantLSTM runs its per-step path. Outputs are nn.LSTM's with the dequantized weights, bit for bit.
"""

from __future__ import annotations

import math

import torch
from torch import _VF, nn

from ..runtime.dispatch import LSTM_PACKED_MIN_WEIGHTS, Kernel, compute_dtype, warn_fallback
from ..runtime.kernel_table import generation
from . import ops
from .identity import version_of as _version
from .weight_cache import compute_view, current_capabilities, entry_for, epoch, forcing, prepared

_TENSOR = torch.Tensor
_FIELDS = ("packed", "scale", "zero", "dense")


def float_copy_note(lstm: nn.Module) -> str:
    """For the quantize summary: " [memory Low on CPU: float copy, LSTM]" for an nn.LSTM whose quantized twin runs a
    float copy at memory Low on the CPU (`dispatch.select_lstm`: under LSTM_PACKED_MIN_WEIGHTS weights per layer and
    direction), else ""."""
    if not isinstance(lstm, nn.LSTM):
        return ""
    sfxs = ("", "_reverse") if lstm.bidirectional else ("",)
    weights = max(getattr(lstm, f"weight_ih_l{i}{s}").numel() + getattr(lstm, f"weight_hh_l{i}{s}").numel()
                  for i in range(lstm.num_layers) for s in sfxs)
    return " [memory Low on CPU: float copy, LSTM]" if weights < LSTM_PACKED_MIN_WEIGHTS else ""


class FlatWeights:
    """Float gate weights and biases in nn.LSTM's flat order (per layer and direction: w_ih, w_hh[, b_ih, b_hh]),
    valid while `holds`: the same backend object and input dtype, the same buffer and bias objects with unchanged
    version counters, no forced kernel, the same kernel table and capabilities."""

    __slots__ = ("backend", "dtype", "epoch", "generation", "held", "weights")

    def __init__(self, layer, weights: list[torch.Tensor], dtype: torch.dtype):
        self.backend, self.dtype, self.weights = layer.backend, dtype, weights
        bufs, params = layer._buffers, layer._parameters
        keys = [f"{name}_{f}" for name in layer.quant_meta for f in _FIELDS]
        self.held = (tuple((k, bufs.get(k), _version(bufs.get(k))) for k in keys),
                     tuple((k, t, _version(t)) for k, t in params.items()))
        self.epoch, self.generation = epoch(), generation()

    def holds(self, layer, x: torch.Tensor) -> bool:
        if layer.backend is not self.backend or x.dtype is not self.dtype or self.epoch != epoch() \
                or self.generation != generation() or forcing():
            return False
        for table, held in zip((layer._buffers, layer._parameters), self.held, strict=True):
            for key, t, v in held:
                if table.get(key) is not t or (v is not None and t._version != v):
                    return False
        return len(layer._parameters) == len(self.held[1])


def flat_weights(layer, x: torch.Tensor, weight_names: list[str], bias_names: list[str]) -> list[torch.Tensor] | None:
    """The flat weights torch's fused LSTM takes for x, or None where the per-step path serves (see the module
    docstring); built once per layer state."""
    if type(x) is not _TENSOR or not x.is_cpu or not ops.eager(x):
        return None
    held = layer.__dict__.get("_bound")
    if held is not None and held.holds(layer, x):
        return held.weights
    flat = _build(layer, x, weight_names, bias_names)
    layer.__dict__["_bound"] = flat  # __dict__ directly: nn.Module.__setattr__ costs ~5 us
    return None if flat is None else flat.weights


def _build(layer, x: torch.Tensor, weight_names: list[str], bias_names: list[str]) -> FlatWeights | None:
    backend = layer.backend
    decision = layer.fused_decision(x.device.type)
    if decision is None:
        return None
    dtype = compute_dtype(x.device.type, current_capabilities(), backend)
    biases = [getattr(layer, n) for n in bias_names]
    if x.dtype is not dtype or any(b.dtype is not dtype for b in biases):
        return None
    if decision.fallback_reason is None:
        weights = [layer.dense_weight(n, x) for n in weight_names]  # memory Normal's copies, built once
    elif all(layer.is_affine(n) for n in weight_names):
        warn_fallback(decision)
        weights = [_float_copy(layer, n, dtype) for n in weight_names]
    else:
        return None  # another format: its own fallback per projection
    if any(w is None or w.dtype is not dtype for w in weights):
        return None
    flat = []
    for i in range(0, len(weight_names), 2):  # names come per layer and direction: (ih, hh) and (b_ih, b_hh)
        flat += weights[i:i + 2] + biases[i:i + 2]
    return FlatWeights(layer, flat, dtype)


def _float_copy(layer, name: str, dtype: torch.dtype) -> torch.Tensor:
    """Parameter `name` dequantized to (N, K) in `dtype`, kept in its weight cache (built once)."""
    packed, scale, zero, shape, bits, block = layer._op_args(name)
    qw = compute_view(packed, scale, zero, [shape[0], math.prod(shape[1:])], bits, block)
    return prepared(entry_for(qw), Kernel.DENSE, qw, dtype)


def run(layer, input: torch.Tensor, hx, flat: list[torch.Tensor]):
    """nn.LSTM's forward (no PackedSequence) on `flat`: input (T, B, I) / (B, T, I) / unbatched (T, I), hx (h0, c0)
    or None -> (output, (h_n, c_n))."""
    unbatched = input.dim() == 2
    batch_dim = 0 if layer.batch_first else 1
    x = input.unsqueeze(batch_dim) if unbatched else input
    if hx is None:
        zeros = torch.zeros(layer.num_layers * (2 if layer.bidirectional else 1), x.shape[batch_dim],
                            layer.hidden_size, dtype=x.dtype, device=x.device)
        hx = (zeros, zeros)
    elif unbatched:
        hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
    out, h, c = _VF.lstm(x, hx, flat, layer.bias, layer.num_layers, layer.dropout, layer.training,
                         layer.bidirectional, layer.batch_first)
    if unbatched:
        return out.squeeze(batch_dim), (h.squeeze(1), c.squeeze(1))
    return out, (h, c)
