"""Swaps keep each module's training flag: a conv + BatchNorm + 2-layer BiLSTM (dropout) + Linear model end to end.

Reference: the float model whose weights are replaced by the same QuantizedWeights dequantized (fake quantization).
Memory Normal computes exactly that model (dequantized weights + F.linear / F.conv), so it must match to float
tolerance; memory Low / High run the packed CPU kernel, whose only extra error is the int8 activation rounding
documented in lowbit.kernels.cpu_int4 (~40 dB per layer, see LOW_SQNR).
"""

import copy

import pytest
import torch
from torch import nn

import lowbit
from lowbit.nn import QuantConv2d, QuantLinear, QuantLSTM, quantized_weights, swap_quantized
from lowbit.quant import QuantConfig
from lowbit.runtime import BackendConfig

# dB vs the fake-quant reference at memory Low / High (packed int4 kernel, int8 activations per row). Measured
# 41-43 dB on this model (one int8 rounding per layer input, ~40 dB each, and the recurrence does not amplify it);
# 30 dB leaves room for other CPUs' kernel variants and is far above what a training-mode swap gives (dropout
# 0.3 between the LSTM layers: ~5-10 dB).
LOW_SQNR = 30.0
CONFIGS = {"int8 per-channel": QuantConfig(bits=8, block_size=-1), "int4 b32": QuantConfig(bits=4, block_size=32)}


pytestmark = pytest.mark.usefixtures("one_thread")


class OcrNet(nn.Module):
    """x (B, 4, 6, T) -> conv, BatchNorm, ReLU, mean over height -> 2-layer BiLSTM (dropout) -> Linear (B, T, 30)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 32, 3, padding=1)
        self.bn = nn.BatchNorm2d(32)
        self.rnn = nn.LSTM(32, 48, num_layers=2, bidirectional=True, batch_first=True, dropout=0.3)
        self.fc = nn.Linear(96, 30)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x))).mean(2).transpose(1, 2)  # (B, 32, 6, T) -> (B, T, 32)
        h, _ = self.rnn(h)
        return self.fc(h)


def make_net(seed: int = 0) -> OcrNet:
    g = torch.Generator().manual_seed(seed)
    net = OcrNet()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        net.bn.running_mean.copy_(torch.randn(32, generator=g) * 0.2)
        net.bn.running_var.copy_(torch.rand(32, generator=g) + 0.5)
    return net.eval()


def fake_quant(net: nn.Module, quantized: nn.Module) -> nn.Module:
    """`net` (float) with every weight `quantized` holds replaced by that QuantizedWeight dequantized."""
    ref = copy.deepcopy(net)
    with torch.no_grad():
        for name, qw in quantized_weights(quantized).items():
            ref.get_parameter(name).copy_(qw.dequantize())
    return ref


def sqnr(ref, y):
    return (20 * torch.log10(ref.norm() / (ref - y).norm())).item()


@pytest.fixture
def x():
    return torch.randn(2, 4, 6, 9, generator=torch.Generator().manual_seed(5))


def modes(model: nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules()}


@pytest.mark.filterwarnings("ignore:lowbit")
@pytest.mark.parametrize("memory", ["normal", "low", "high"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_eval_model_matches_fake_quant(x, config, memory):
    net = make_net()
    q = lowbit.quantize(copy.deepcopy(net), CONFIGS[config], BackendConfig(memory), min_weights=0)
    assert isinstance(q.conv, QuantConv2d) and isinstance(q.rnn, QuantLSTM) and isinstance(q.fc, QuantLinear)
    assert not any(modes(q).values())
    ref = fake_quant(net, q)
    with torch.no_grad():
        y, y_again, y_ref = q(x), q(x), ref(x)
    assert torch.equal(y, y_again)
    if memory == "normal":
        torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    else:
        assert sqnr(y_ref, y) >= LOW_SQNR


def test_issue_example_bilstm_int8():
    """The issue's reproduction: an eval-mode BiLSTM with dropout 0.5, quantized to int8 per channel."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.LSTM(64, 64, num_layers=2, dropout=0.5, bidirectional=True)).eval()
    x = torch.randn(7, 2, 64)
    with torch.no_grad():
        y_float = m(x)[0]
    lowbit.quantize(m, QuantConfig(bits=8, block_size=-1))
    assert m[0].training is False
    with torch.no_grad():
        y1, y2 = m(x)[0], m(x)[0]
    assert torch.equal(y1, y2)
    assert sqnr(y_float, y1) >= 40.0  # int8 weights alone: measured ~50 dB (~5 dB with dropout on)


def test_train_and_eval_reach_the_swapped_layers(x):
    q = lowbit.quantize(make_net(), CONFIGS["int4 b32"], min_weights=0)
    q.train()
    assert all(modes(q).values())
    torch.manual_seed(0)
    with torch.no_grad():
        assert not torch.equal(q(x), q(x))  # the LSTM's inter-layer dropout (and BatchNorm batch statistics)
    q.eval()
    assert not any(modes(q).values())
    with torch.no_grad():
        assert torch.equal(q(x), q(x))


def test_mixed_modes_are_kept_per_module():
    net = make_net().train()
    net.rnn.eval()
    before = modes(net)
    lowbit.quantize(net, CONFIGS["int4 b32"], min_weights=0)
    assert isinstance(net.rnn, QuantLSTM) and isinstance(net.fc, QuantLinear)
    assert modes(net) == before


@pytest.mark.parametrize("training", [False, True])
def test_swap_quantized_keeps_mode(training):
    q = lowbit.quantize(make_net(), CONFIGS["int4 b32"], min_weights=0)
    shell = make_net(seed=1).train(training)
    swap_quantized(shell, quantized_weights(q))
    assert all(v is training for v in modes(shell).values())
    lin = nn.Linear(64, 32).eval()  # the root module itself swapped
    root = swap_quantized(lin, {"weight": lowbit.quantize_weight(lin.weight.detach(), QuantConfig())})
    assert isinstance(root, QuantLinear) and root.training is False


@pytest.mark.filterwarnings("ignore:lowbit")
def test_load_into_eval_model_keeps_eval(tmp_path, x):
    net = make_net()
    q = lowbit.quantize(copy.deepcopy(net), CONFIGS["int4 b32"], min_weights=0)
    lowbit.save(q, tmp_path / "m.safetensors")
    loaded = lowbit.load(make_net(seed=2), tmp_path / "m.safetensors", BackendConfig("low"))
    assert isinstance(loaded.rnn, QuantLSTM) and not any(modes(loaded).values())
    with torch.no_grad():
        y, y_again, y_ref = loaded(x), loaded(x), fake_quant(net, q)(x)
    assert torch.equal(y, y_again)
    assert sqnr(y_ref, y) >= LOW_SQNR
