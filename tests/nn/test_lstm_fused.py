"""QuantLSTM's fused path (lowbit.nn.lstm_fused): torch's LSTM on float gate weights at every memory mode on the CPU,
bit for bit nn.LSTM with the dequantized weights (and within fp32 rounding of a float64 LSTM), the float copy at
memory Low announced and marked, and every state change followed."""

import copy
import warnings

import pytest
import torch
from lstm_models import random_lstm
from torch import nn

from lowbit.nn import QuantLSTM, kernel_for, quantize, resident_bytes
from lowbit.nn.lstm_fused import FlatWeights
from lowbit.nn.lstm_fused import float_copy_note as lowbit_note
from lowbit.nn.weight_cache import forced_kernel
from lowbit.quant import QuantConfig, quantize_weight
from lowbit.runtime import BackendConfig, Kernel
from lowbit.runtime.dispatch import LSTM_PACKED_MIN_WEIGHTS, Decision, reset_fallback_warnings, select_lstm

pytestmark = pytest.mark.usefixtures("one_thread")


def build(rng, bidirectional=True, num_layers=2, batch_first=True, bias=True, input_size=24, hidden=16):
    return random_lstm(rng, bidirectional, num_layers, batch_first, bias, input_size, hidden)


def quantized(lstm, bits, memory, block=16):
    names = [n for n, _ in lstm.named_parameters() if n.startswith("weight")]
    weights = {n: quantize_weight(getattr(lstm, n).detach(), QuantConfig(bits=bits, block_size=block)) for n in names}
    deq = copy.deepcopy(lstm)
    with torch.no_grad():
        for n, qw in weights.items():
            getattr(deq, n).copy_(qw.dequantize())
    return QuantLSTM.from_float(lstm, weights, BackendConfig(memory)), deq


def flat(out):
    y, (h, c) = out
    return torch.cat([y.flatten(), h.flatten(), c.flatten()])


@pytest.mark.filterwarnings("ignore:lowbit")
@pytest.mark.parametrize("memory", ["normal", "low", "high"])
@pytest.mark.parametrize("bidirectional,num_layers,batch_first,bias,bits", [
    (True, 2, True, True, 4), (False, 1, False, True, 8), (True, 1, False, False, 2), (False, 3, True, True, 4),
])
def test_fused_lstm_is_torchs_lstm_on_the_dequantized_weights(rng, memory, bidirectional, num_layers, batch_first,
                                                               bias, bits):
    lstm = build(rng, bidirectional, num_layers, batch_first, bias)
    q, deq = quantized(lstm, bits, memory)
    d = 2 if bidirectional else 1
    x = torch.randn(*((3, 7) if batch_first else (7, 3)), 24, generator=rng)  # batch 3, 7 steps
    hx = tuple(torch.randn(num_layers * d, 3, 16, generator=rng) for _ in range(2))
    unbatched = torch.randn(5, 24, generator=rng)
    deq64 = copy.deepcopy(deq).double()
    with torch.no_grad():
        for args in ((x,), (x, hx), (unbatched,)):
            y = flat(q(*args))
            assert isinstance(q._bound, FlatWeights)  # the fused path served
            assert torch.equal(y, flat(deq(*args)))
            ref = flat(deq64(*(a.double() if isinstance(a, torch.Tensor) else tuple(t.double() for t in a)
                               for a in args)))
            torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)
            assert torch.equal(flat(q(*args)), y)  # the kept flat weights, the same numbers


def test_memory_low_runs_a_float_copy_announced_once_and_marked(rng):
    lstm = build(rng)
    model = nn.Sequential(lstm)
    q = quantize(copy.deepcopy(model), QuantConfig(bits=4, block_size=16), backend=BackendConfig("low"))
    assert "[memory Low on CPU: float copy, LSTM]" in q.lowbit_summary.swapped[0].config
    x = torch.randn(2, 5, 24, generator=rng)
    before = resident_bytes(q)
    reset_fallback_warnings()
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q(x)
        q(x)
    lowbit = [str(w.message) for w in caught if "lowbit" in str(w.message)]
    assert len(lowbit) == 1 and "LSTM" in lowbit[0] and "float copy" in lowbit[0]
    fp32_bytes = sum(p.numel() * 4 for n, p in lstm.named_parameters() if n.startswith("weight"))
    assert resident_bytes(q) - before == fp32_bytes  # the float copy, counted once


@pytest.mark.filterwarnings("ignore:lowbit")
def test_edits_and_modes_are_followed(rng):
    lstm = build(rng, num_layers=1)
    q, deq = quantized(lstm, 4, "low")
    x = torch.randn(2, 6, 24, generator=rng)
    with torch.no_grad():
        q(x)
        kept = q._bound
        q.bias_ih_l0.add_(0.5)  # an in-place bias edit: flat weights rebuilt
        deq.bias_ih_l0.add_(0.5)
        assert torch.equal(flat(q(x)), flat(deq(x))) and q._bound is not kept
        q.weight_hh_l0_scale.mul_(2)  # an in-place scale edit: the float copy rebuilt from the new scale
        deq.weight_hh_l0.mul_(2)
        torch.testing.assert_close(flat(q(x)), flat(deq(x)), rtol=1e-6, atol=1e-6)
        with forced_kernel(Kernel.EMULATED):  # a forced kernel runs the per-step projections
            y = flat(q(x))
            assert q._bound is None
        torch.testing.assert_close(y, flat(deq(x)), rtol=1e-5, atol=1e-5)
        q.set_backend(BackendConfig("normal"))
        assert q._bound is None
        assert torch.equal(flat(q(x)), flat(deq(x))) and isinstance(q._bound, FlatWeights)


def test_gradients_reach_the_input_and_biases(rng):
    lstm = build(rng, num_layers=1)
    q, deq = quantized(lstm, 8, "normal")
    q.train()
    deq.train()
    for b in (q.bias_ih_l0, deq.bias_ih_l0):
        b.requires_grad_(True)
    x = torch.randn(2, 4, 24, generator=rng, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    flat(q(x)).square().sum().backward()
    flat(deq(x2)).square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(q.bias_ih_l0.grad, deq.bias_ih_l0.grad, rtol=1e-6, atol=1e-7)


def test_select_lstm_rule():
    low, normal = BackendConfig("low"), BackendConfig("normal")
    small = select_lstm("cpu", low, LSTM_PACKED_MIN_WEIGHTS - 1)
    assert small.kernel is Kernel.DENSE and "float copy" in small.fallback_reason
    assert select_lstm("cpu", low, LSTM_PACKED_MIN_WEIGHTS) is None  # large: the packed kernels per step win
    assert select_lstm("cuda", low, 10) is None
    assert select_lstm("cpu", normal, LSTM_PACKED_MIN_WEIGHTS * 4) == Decision(Kernel.DENSE)


@pytest.mark.filterwarnings("ignore:lowbit")
def test_a_large_lstm_keeps_its_packed_projections_at_memory_low(rng):
    lstm = nn.LSTM(384, 384, batch_first=True).eval()  # 4*384*768 = 1.18M weights >= LSTM_PACKED_MIN_WEIGHTS
    assert lowbit_note(lstm) == ""
    q, deq = quantized(lstm, 8, "low", block=-1)
    x = torch.randn(1, 3, 384, generator=rng)
    with torch.no_grad():
        y = flat(q(x))
        assert q._bound is None and kernel_for(q, "weight_hh_l0", 1) is Kernel.CPU_INT4
        assert sqnr(flat(deq(x)), y) >= 30  # int8 activations in the packed kernel
        q.set_backend(BackendConfig("normal"))
        assert torch.equal(flat(q(x)), flat(deq(x))) and isinstance(q._bound, FlatWeights)


def sqnr(ref, y):
    return (20 * torch.log10(ref.norm() / (ref - y).norm())).item()
