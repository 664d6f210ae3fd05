"""QuantLSTM vs nn.LSTM with the dequantized gate weights (tight) and vs the original LSTM (SQNR floor)."""

import copy

import pytest
import torch
from lstm_models import random_lstm
from torch import nn

from lowbit.nn import QuantLSTM
from lowbit.nn.weight_cache import override_capabilities
from lowbit.quant import QuantConfig, quantize_weight
from lowbit.runtime import BackendConfig, Capabilities

SQNR_FLOOR = {2: 3.0, 4: 15.0, 8: 30.0}
PACKED_SQNR = 30.0  # vs the dequantized LSTM when CPU kernels round activations to int8


pytestmark = pytest.mark.usefixtures("one_thread")


def sqnr(ref, y):
    return (20 * torch.log10(ref.norm() / (ref - y).norm())).item()


def build(rng, bidirectional=True, num_layers=2, batch_first=True, bias=True, input_size=40, hidden=32):
    return random_lstm(rng, bidirectional, num_layers, batch_first, bias, input_size, hidden)


def quantize_lstm(lstm, cfg):
    names = [n for n, _ in lstm.named_parameters() if n.startswith("weight")]
    return {n: quantize_weight(getattr(lstm, n).detach(), cfg) for n in names}


def dequantized(lstm, weights):
    deq = copy.deepcopy(lstm)
    with torch.no_grad():
        for n, qw in weights.items():
            getattr(deq, n).copy_(qw.dequantize())
    return deq


def outputs(module, x, hx=None):
    with torch.no_grad():
        out, (h, c) = module(x, hx)
    return torch.cat([out.flatten(), h.flatten(), c.flatten()])


@pytest.mark.filterwarnings("ignore:lowbit")
@pytest.mark.parametrize("memory", ["normal", "low"])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quant_lstm_matches(rng, bits, symmetric, memory):
    lstm = build(rng)
    weights = quantize_lstm(lstm, QuantConfig(bits=bits, block_size=16, symmetric=symmetric))
    q = QuantLSTM.from_float(lstm, weights, BackendConfig(memory))
    x = torch.randn(3, 6, 40, generator=rng)  # (B, T, I): batch_first
    y, y_deq, y_ref = outputs(q, x), outputs(dequantized(lstm, weights), x), outputs(lstm, x)
    if memory == "normal":
        torch.testing.assert_close(y, y_deq, rtol=1e-5, atol=1e-5)
    else:
        assert sqnr(y_deq, y) >= PACKED_SQNR
    assert sqnr(y_ref, y) >= SQNR_FLOOR[bits]


@pytest.mark.filterwarnings("ignore:lowbit")
@pytest.mark.parametrize("bidirectional,num_layers,batch_first,bias", [
    (False, 1, False, True), (True, 1, False, False), (False, 3, True, True),
])
def test_lstm_variants_reference_path(rng, bidirectional, num_layers, batch_first, bias):
    lstm = build(rng, bidirectional, num_layers, batch_first, bias, input_size=24, hidden=16)
    weights = quantize_lstm(lstm, QuantConfig(bits=4, block_size=16))
    deq = dequantized(lstm, weights)
    d = 2 if bidirectional else 1
    x = torch.randn(5, 2, 24, generator=rng)
    hx = (torch.randn(num_layers * d, 5 if batch_first else 2, 16, generator=rng),
          torch.randn(num_layers * d, 5 if batch_first else 2, 16, generator=rng))
    override_capabilities(Capabilities())
    try:
        q = QuantLSTM.from_float(lstm, weights, BackendConfig("low"))
        torch.testing.assert_close(outputs(q, x, hx), outputs(deq, x, hx), rtol=1e-5, atol=1e-5)
        unbatched = torch.randn(4, 24, generator=rng)
        torch.testing.assert_close(outputs(q, unbatched), outputs(deq, unbatched), rtol=1e-5, atol=1e-5)
    finally:
        override_capabilities(None)


def test_lstm_state_dict_names(rng):
    lstm = build(rng, num_layers=1)
    q = QuantLSTM.from_float(lstm, quantize_lstm(lstm, QuantConfig(bits=4, block_size=16, symmetric=True)))
    keys = set(q.state_dict())
    assert {"weight_ih_l0_packed", "weight_hh_l0_reverse_scale", "bias_ih_l0", "bias_hh_l0_reverse"} <= keys
    assert not any(k.endswith("_zero") for k in keys)


def test_lstm_errors(rng):
    lstm = build(rng, num_layers=1, bidirectional=False)
    weights = quantize_lstm(lstm, QuantConfig(bits=4, block_size=16))
    with pytest.raises(ValueError, match="missing"):
        QuantLSTM.from_float(lstm, {"weight_ih_l0": weights["weight_ih_l0"]})
    with pytest.raises(ValueError, match="proj_size"):
        QuantLSTM.from_float(nn.LSTM(40, 32, proj_size=8), weights)
    bad = dict(weights, weight_hh_l0=quantize_weight(torch.randn(128, 16), QuantConfig(block_size=16)))
    with pytest.raises(ValueError, match="does not match"):
        QuantLSTM.from_float(lstm, bad)
    q = QuantLSTM.from_float(lstm, weights)
    packed = nn.utils.rnn.pack_padded_sequence(torch.randn(3, 2, 40), [3, 2])
    with pytest.raises(TypeError, match="PackedSequence"):
        q(packed)
