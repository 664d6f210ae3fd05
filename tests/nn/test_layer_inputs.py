"""Inputs a quantized layer must handle as nn.Linear / nn.Conv1d / nn.Conv2d / nn.LSTM do, at every memory mode.

NaN and inf propagate, integer and bool inputs raise TypeError, gradients reach the input and the float biases (the
packed buffers stay frozen), and a scalar or wrongly shaped input names the expected shape. The reference is the
float layer holding the dequantized weights. Shapes keep M (rows per linear op) below dispatch.HIGH_DENSE_MIN_M, so
memory Low and High both run the packed CPU kernel (asserted), which rounds activations to int8; an LSTM runs torch's
fused LSTM on float gate weights at every mode on the CPU (lowbit.nn.lstm_fused), the float layer's numbers.
"""

import copy
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from lowbit.nn import QuantConv1d, QuantConv2d, QuantLinear, QuantLSTM, kernel_for
from lowbit.quant import QuantConfig, quantize_weight
from lowbit.runtime import BackendConfig, Kernel

KINDS = ["linear", "conv1d", "conv2d", "lstm"]
MEMORIES = ["normal", "low", "high"]
CFG = QuantConfig(bits=4, block_size=-1)
PACKED_SQNR = 30.0  # dB vs the dequantized float layer where int8 activation rounding enters (as test_quant_lstm)

pytestmark = pytest.mark.filterwarnings("ignore:lowbit")


def sqnr(ref, y):
    return (20 * torch.log10(ref.norm() / (ref - y).norm())).item()


@dataclass
class Case:
    quant: nn.Module
    deq: nn.Module  # the float layer with the dequantized weights
    float_layer: nn.Module
    x: torch.Tensor
    poison: list  # (index, value) written into x for the non-finite tests


def _float_layer(kind: str, g: torch.Generator) -> nn.Module:
    layer = {"linear": lambda: nn.Linear(64, 48), "conv1d": lambda: nn.Conv1d(16, 24, 4, padding=1),
             "conv2d": lambda: nn.Conv2d(8, 16, 3, padding=1, groups=2),
             "lstm": lambda: nn.LSTM(32, 16, num_layers=2, bidirectional=True, batch_first=True)}[kind]()
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return layer.eval()


INPUTS = {  # kind: (input shape, [(index, value)]): NaN in one sample, +-inf in others
    "linear": ((3, 5, 64), [((0, 1, 3), "nan"), ((2, 4, 10), "inf"), ((1, 2, 7), "-inf")]),
    "conv1d": ((2, 16, 9), [((0, 3, 4), "nan"), ((1, 5, 2), "inf")]),
    "conv2d": ((1, 8, 4, 5), [((0, 1, 2, 2), "nan"), ((0, 6, 0, 4), "-inf")]),  # one per group
    "lstm": ((3, 4, 32), [((0, 2, 5), "nan"), ((2, 1, 3), "inf")]),
}
QUANT = {"linear": QuantLinear, "conv1d": QuantConv1d, "conv2d": QuantConv2d}


def build(kind: str, memory: str) -> Case:
    g = torch.Generator().manual_seed(7)
    layer = _float_layer(kind, g)
    names = [n for n, _ in layer.named_parameters() if n.startswith("weight")]
    weights = {n: quantize_weight(getattr(layer, n).detach(), CFG) for n in names}
    backend = BackendConfig(memory)
    if kind == "lstm":
        quant = QuantLSTM.from_float(layer, weights, backend)
    else:
        quant = QUANT[kind].from_float(layer, weights["weight"], backend)
    deq = copy.deepcopy(layer)
    with torch.no_grad():
        for n, qw in weights.items():
            getattr(deq, n).copy_(qw.dequantize())
    shape, poison = INPUTS[kind]
    x = torch.randn(shape, generator=g)
    # Low and High really run the packed kernel; an LSTM runs torch's fused LSTM on float gate weights at every
    # mode on the CPU (lowbit.nn.lstm_fused), the float layer's numbers
    expected = Kernel.DENSE if memory == "normal" or kind == "lstm" else Kernel.CPU_INT4
    assert kernel_for(quant, names[0], 12) is expected
    return Case(quant, deq, layer, x, [(i, float(v)) for i, v in poison])


def run(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    y = module(x)
    return y[0] if isinstance(y, tuple) else y  # nn.LSTM: the output sequence


@pytest.mark.parametrize("memory", MEMORIES)
@pytest.mark.parametrize("kind", KINDS)
def test_nan_and_inf_propagate(kind, memory):
    case = build(kind, memory)
    x = case.x.clone()
    for index, value in case.poison:
        x[index] = value
    with torch.no_grad():
        y, ref, clean = run(case.quant, x), run(case.deq, x), run(case.quant, case.x)
    bad, ref_bad = ~torch.isfinite(y), ~torch.isfinite(ref)
    assert ref_bad.any() and not ref_bad.all()
    assert y[ref.isnan()].isnan().all()  # a NaN stays a NaN
    if kind == "lstm":  # sigmoid/tanh saturate: the float LSTM may turn an inf gate finite; NaN never is
        assert bad[ref_bad].all()
    else:  # every output a non-finite input reaches is non-finite in nn.Linear / nn.Conv (inf * w or inf * 0)
        assert torch.equal(bad, ref_bad)
    if memory == "normal" or kind == "lstm":
        torch.testing.assert_close(y[~bad], ref[~bad], rtol=1e-5, atol=1e-5)
    else:  # rows without a non-finite input are untouched by their neighbours
        assert sqnr(ref[~bad], y[~bad]) >= PACKED_SQNR and torch.equal(y[~bad], clean[~bad])


@pytest.mark.parametrize("dtype", [torch.int64, torch.int8, torch.bool])
@pytest.mark.parametrize("memory", MEMORIES)
@pytest.mark.parametrize("kind", KINDS)
def test_integer_input_raises_type_error(kind, memory, dtype):
    case = build(kind, memory)
    with pytest.raises((RuntimeError, ValueError, TypeError)):
        run(case.float_layer, case.x.to(dtype))  # the float layer refuses it too
    with pytest.raises(TypeError, match=f"floating-point input.*{dtype}"):
        run(case.quant, case.x.to(dtype))


@pytest.mark.parametrize("memory", MEMORIES)
@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_input_and_bias(kind, memory):
    """Input and bias gradients equal the dequantized float layer's; the packed buffers get none."""
    case = build(kind, memory)
    x = case.x.clone().requires_grad_(True)
    y = run(case.quant, x)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(3))
    (y * g).sum().backward()
    grads = {"input": x.grad.clone(), **{n: p.grad for n, p in case.quant.named_parameters()}}
    x.grad = None
    (run(case.deq, x) * g).sum().backward()
    want = {"input": x.grad, **{n: p.grad for n, p in case.deq.named_parameters() if n.startswith("bias")}}
    assert grads.keys() == want.keys()  # the only parameters left are the float biases
    for name, grad in grads.items():
        # linear in the weight: grad_x = grad_y @ W_dequantized exactly, whatever kernel ran forward (an LSTM runs
        # torch's fused LSTM on float gate weights at every mode, lowbit.nn.lstm_fused)
        torch.testing.assert_close(grad, want[name], rtol=1e-5, atol=1e-5, msg=name)
    assert all(not b.requires_grad and b.grad is None for b in case.quant.buffers())


def test_gradient_reaches_lstm_initial_state():
    case = build("lstm", "low")
    h0 = torch.randn(4, 3, 16, requires_grad=True)
    c0 = torch.randn(4, 3, 16, requires_grad=True)
    out, (h, c) = case.quant(case.x, (h0, c0))
    (out.sum() + h.sum() + c.sum()).backward()
    assert h0.grad.abs().sum() > 0 and c0.grad.abs().sum() > 0


BAD_SHAPES = {  # kind: [(input shape, expected shape in the message)]
    "linear": [((), r"\(\.\.\., 64\)"), ((3, 63), r"\(\.\.\., 64\), got shape \(3, 63\)")],
    "conv1d": [((), r"\(B, 16, L\) or \(16, L\)"), ((16,), r"got shape \(16,\)"), ((2, 15, 9), r"\(B, 16, L\)"),
               ((2, 16, 9, 1), r"\(B, 16, L\)"), ((2, 16, 1), r"smaller than the \(dilated\) kernel \(4,\)")],
    "conv2d": [((), r"\(B, 8, H, W\) or \(8, H, W\)"), ((8, 5), r"got shape \(8, 5\)"),
               ((1, 7, 4, 5), r"\(B, 8, H, W\)")],
    "lstm": [((), r"\(B, T, 32\) or unbatched \(T, 32\)"), ((32,), r"got shape \(32,\)"),
             ((3, 4, 31), r"\(B, T, 32\)")],
}


@pytest.mark.parametrize("memory", MEMORIES)
@pytest.mark.parametrize("kind", KINDS)
def test_bad_shapes_name_the_expected_shape(kind, memory):
    case = build(kind, memory)
    for shape, message in BAD_SHAPES[kind]:
        bad = torch.randn(shape)
        with pytest.raises((RuntimeError, ValueError, IndexError)):
            run(case.float_layer, bad)
        with pytest.raises(ValueError, match=message):
            run(case.quant, bad)


def test_lstm_bad_state_names_the_expected_shape():
    case = build("lstm", "low")
    h = torch.zeros(4, 3, 16)
    with pytest.raises(ValueError, match=r"\(4, 3, 16\) for c0, got shape \(4, 2, 16\)"):
        case.quant(case.x, (h, torch.zeros(4, 2, 16)))
    with pytest.raises(TypeError, match="floating-point"):
        case.quant(case.x, (h.long(), h))
    with pytest.raises(TypeError, match=r"hx = \(h0, c0\)"):
        case.quant(case.x, h)
