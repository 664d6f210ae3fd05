"""torch.compile(fullgraph=True) on CPU over the lowbit custom ops matches eager."""

import pytest
import torch
from torch import nn

import lowbit
from lowbit.quant import QuantConfig
from lowbit.runtime import BackendConfig


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1, groups=2)
        self.rnn = nn.LSTM(8, 16, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(32, 24)

    def forward(self, x):  # x (B, 4, 3, 5) -> (B, 5, 24)
        h = self.conv(x).mean(2).transpose(1, 2)  # (B, 8, 5) -> (B, 5, 8)
        h, _ = self.rnn(h)
        return self.fc(torch.relu(h))


@pytest.mark.filterwarnings("ignore:lowbit")
@pytest.mark.parametrize("memory", ["normal", "low"])
def test_compile_fullgraph_matches_eager(memory):
    torch.manual_seed(0)
    model = lowbit.quantize(Small().eval(), QuantConfig(bits=4, block_size=16), BackendConfig(memory), min_weights=0)
    x = torch.randn(2, 4, 3, 5)
    with torch.no_grad():
        eager = model(x)
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager" if memory == "low" else "inductor")
        torch.testing.assert_close(compiled(x), eager, rtol=1e-5, atol=1e-5)


def test_fake_impls_give_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    torch.manual_seed(0)
    model = lowbit.quantize(Small().eval(), QuantConfig(bits=8, block_size=-1), min_weights=0)
    x = torch.randn(3, 4, 3, 5)
    with torch.no_grad():
        expected = model(x).shape
    with FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad():
        assert model(torch.empty(3, 4, 3, 5)).shape == expected
