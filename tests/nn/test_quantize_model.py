"""lowbit.quantize / swap_quantized / quantized_weights / set_backend on whole models."""

import copy
import warnings

import pytest
import torch
from torch import nn

import lowbit
from lowbit.nn import QuantConv1d, QuantLinear, QuantLSTM, quantized_weights, resident_bytes, swap_quantized
from lowbit.nn.weight_cache import override_capabilities
from lowbit.quant import QuantConfig, QuantizedWeight
from lowbit.runtime import BackendConfig, Capabilities
from lowbit.runtime.dispatch import reset_fallback_warnings

pytestmark = pytest.mark.usefixtures("one_thread")


class Net(nn.Module):
    """Conv1d front end, a BiLSTM, a Linear head, plus a tiny Linear that must stay float."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(16, 32, 5, padding=2)
        self.rnn = nn.LSTM(32, 48, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(96, 40)
        self.tiny = nn.Linear(40, 4)

    def forward(self, x):  # x (B, 16, T) -> (B, T, 4)
        h = torch.relu(self.conv(x)).transpose(1, 2)
        h, _ = self.rnn(h)
        return self.tiny(torch.relu(self.head(h)))


def make_net(seed=0):
    torch.manual_seed(seed)
    return Net().eval()


def sqnr(ref, y):
    return (20 * torch.log10(ref.norm() / (ref - y).norm())).item()


@pytest.fixture
def x():
    return torch.randn(2, 16, 9, generator=torch.Generator().manual_seed(5))


@pytest.mark.filterwarnings("ignore:lowbit")
@pytest.mark.parametrize("memory", ["normal", "low"])
def test_end_to_end_conv_bilstm_linear(x, memory):
    net = make_net()
    with torch.no_grad():
        ref = net(x)
    q = lowbit.quantize(net, QuantConfig(bits=8, block_size=-1), backend=BackendConfig(memory))
    assert q is net
    assert isinstance(net.conv, QuantConv1d) and isinstance(net.rnn, QuantLSTM) and isinstance(net.head, QuantLinear)
    assert type(net.tiny) is nn.Linear
    with torch.no_grad():
        assert sqnr(ref, net(x)) > 30


def test_summary(x):
    net = lowbit.quantize(make_net(), QuantConfig(bits=4, block_size=32))
    s = net.lowbit_summary
    assert [r.name for r in s.swapped] == ["conv", "rnn", "head"]
    assert [(r.name, r.reason) for r in s.skipped] == [("tiny", "tiny: 160 weights < min_weights=1024")]
    lstm_weights = 2 * (4 * 48 * 32 + 4 * 48 * 48) + 2 * (4 * 48 * 96 + 4 * 48 * 48)
    assert s.swapped[1].weights == lstm_weights and s.swapped[1].bytes_before == 4 * lstm_weights
    assert s.bytes_after == sum(qw.nbytes for qw in quantized_weights(net).values())
    assert s.bytes_after < 0.2 * s.bytes_before
    text = str(s)
    assert "int4 b32 asym rtn" in text and "tiny: 160" in text and "kept float 1" in text


def test_skip_globs_overrides_and_min_weights():
    net = lowbit.quantize(make_net(), QuantConfig(bits=4), skip=["con*"], min_weights=0,
                          overrides={"head": QuantConfig(bits=8, block_size=-1), "ti?y": QuantConfig(bits=2)})
    assert type(net.conv) is nn.Conv1d
    assert net.lowbit_summary.skipped[0].reason == "skip pattern 'con*'"
    meta = {n: qw.metadata() for n, qw in quantized_weights(net).items()}
    assert meta["head.weight"]["bits"] == 8 and meta["head.weight"]["block_size"] == -1
    assert meta["tiny.weight"]["bits"] == 2 and meta["rnn.weight_hh_l1_reverse"]["bits"] == 4
    net2 = lowbit.quantize(make_net(), QuantConfig(), skip="rnn", min_weights=0)  # a name skips its subtree
    assert type(net2.rnn) is nn.LSTM


def test_layers_a_kernel_cannot_take_stay_float():
    model = nn.Sequential(nn.MultiheadAttention(64, 4), nn.LSTM(64, 64, proj_size=32), nn.Linear(64, 64))
    lowbit.quantize(model, QuantConfig())
    reasons = {r.name: r.reason for r in model.lowbit_summary.skipped}
    assert "MultiheadAttention" in reasons["0.out_proj"] and "proj_size=32" in reasons["1"]
    assert isinstance(model[2], QuantLinear)
    nan_model = nn.Sequential(nn.Linear(64, 64))
    with torch.no_grad():
        nan_model[0].weight[3, 7] = float("nan")
    lowbit.quantize(nan_model, QuantConfig())
    assert "NaN" in nan_model.lowbit_summary.skipped[0].reason and type(nan_model[0]) is nn.Linear


def test_shared_module_and_custom_forward():
    class Scaled(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    shared = nn.Linear(64, 64)
    model = nn.Sequential(shared, nn.ReLU(), shared, Scaled(64, 64))
    lowbit.quantize(model, QuantConfig())
    assert isinstance(model[0], QuantLinear) and model[0] is model[2]
    assert type(model[3]) is Scaled
    assert "overrides Linear.forward" in model.lowbit_summary.skipped[0].reason


def test_state_dict_round_trip_exact(x):
    net = lowbit.quantize(make_net(), QuantConfig(bits=3, block_size=16, method="hqq"))
    sd = net.state_dict()
    assert {"conv.weight_packed", "conv.weight_scale", "conv.weight_zero", "conv.bias",
            "rnn.weight_ih_l0_packed", "rnn.weight_hh_l1_reverse_zero", "rnn.bias_ih_l1", "head.weight_packed",
            "tiny.weight"} <= set(sd)
    other = lowbit.quantize(make_net(seed=1), QuantConfig(bits=3, block_size=16, method="hqq"))
    with torch.no_grad():
        y_before = other(x)  # builds caches from the other weights; loading must invalidate them
    other.load_state_dict(sd)
    sd2 = other.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    with torch.no_grad():
        assert torch.equal(other(x), net(x)) and not torch.equal(y_before, net(x))


def test_meta_device_load_with_assign(x):
    net = lowbit.quantize(make_net(), QuantConfig(bits=4, block_size=32))
    sd, weights = net.state_dict(), quantized_weights(net)
    with torch.device("meta"):
        shell = Net()
    empty = {n: QuantizedWeight.from_tensors({k: torch.empty_like(t, device="meta") for k, t in qw.tensors().items()},
                                             qw.metadata()) for n, qw in weights.items()}
    shell = swap_quantized(shell, empty)
    assert shell.head.weight_packed.device.type == "meta" and shell.head.bias.device.type == "meta"
    shell.load_state_dict(sd, assign=True)
    assert all(t.device.type == "cpu" for t in shell.state_dict().values())
    with torch.no_grad():
        torch.testing.assert_close(shell.eval()(x), net(x), rtol=0, atol=0)
    # quantize() on a meta model leaves the layers float, with the reason
    with torch.device("meta"):
        meta_net = Net()
    lowbit.quantize(meta_net, QuantConfig())
    assert "meta device" in meta_net.lowbit_summary.skipped[0].reason


def test_quantized_weights_inverse_of_swap(x):
    net = lowbit.quantize(make_net(), QuantConfig(bits=5, block_size=48, symmetric=True))
    weights = quantized_weights(net)
    assert len(weights) == 1 + 8 + 1
    fresh = swap_quantized(make_net(seed=3), weights)
    with torch.no_grad():
        for name, p in net.named_parameters():  # the float parameters (biases, tiny) come from the same net
            fresh.get_parameter(name).copy_(p)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), net(x), rtol=0, atol=0)
    qw = weights["rnn.weight_hh_l0_reverse"]
    assert qw.bits == 5 and qw.shape == (192, 48) and qw.dtype == torch.float32


def test_swap_root_module_and_errors():
    lin = nn.Linear(64, 32)
    qw = lowbit.quantize_weight(lin.weight.detach(), QuantConfig())
    assert isinstance(swap_quantized(lin, {"weight": qw}), QuantLinear)
    with pytest.raises(ValueError, match="no module named 'nope'"):
        swap_quantized(make_net(), {"nope.weight": qw})
    with pytest.raises(ValueError, match="cannot hold packed weights"):
        swap_quantized(make_net(), {"rnn.weight_ih_l0": qw})
    with pytest.raises(ValueError, match="does not match"):
        swap_quantized(make_net(), {"head.weight": qw})
    with pytest.raises(TypeError, match="QuantConfig"):
        lowbit.quantize(make_net(), {"bits": 4})
    with pytest.raises(TypeError, match="overrides"):
        lowbit.quantize(make_net(), overrides={"head": 4})
    with pytest.raises(TypeError, match="skip"):
        lowbit.quantize(make_net(), skip=[3])
    with pytest.raises(ValueError, match="min_weights"):
        lowbit.quantize(make_net(), min_weights=-1)


@pytest.mark.filterwarnings("ignore:lowbit")
def test_set_backend_switches_without_requantizing(x):
    net = lowbit.quantize(make_net(), QuantConfig(bits=4, block_size=32))
    packed = net.head.weight_packed
    with torch.no_grad():
        y_normal = net(x)
    normal_bytes = resident_bytes(net)
    lowbit.set_backend(net, BackendConfig("low"))
    assert net.head.backend.memory.value == "low" and net.rnn.backend.memory.value == "low"
    assert torch.equal(net.head.weight_packed, packed)  # memory Normal released the codes; re-derived exactly
    assert resident_bytes(net) < normal_bytes  # the dequantized copies were dropped
    with torch.no_grad():
        y_low = net(x)  # (memory Low then builds float copies of its small conv and LSTM: the summary marks them)
    assert sqnr(y_normal, y_low) > 30
    lowbit.set_backend(net, BackendConfig("normal"))
    with torch.no_grad():
        torch.testing.assert_close(net(x), y_normal, rtol=1e-6, atol=1e-6)


def test_fallback_warning_fires_exactly_once(x):
    net = lowbit.quantize(make_net(), QuantConfig(bits=4, block_size=32), backend=BackendConfig("low"))
    override_capabilities(Capabilities())
    reset_fallback_warnings()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with torch.no_grad():
                for _ in range(3):
                    net(x)
        lstm = [str(w.message) for w in caught if "lowbit" in str(w.message) and "LSTM" in str(w.message)]
        msgs = [str(w.message) for w in caught if "lowbit" in str(w.message) and "LSTM" not in str(w.message)]
        # one reason per distinct (bits, group) asked: every layer here is int4 block 32; and the LSTM's own one
        # (its float copy, dispatch.select_lstm)
        assert len(msgs) == 1 and len(lstm) == 1, (msgs, lstm)
        assert "memory=low for a 4-bit weight (group 32) on cpu" in msgs[0] and "running dense" in msgs[0]
    finally:
        override_capabilities(None)
        reset_fallback_warnings()


def test_deepcopy_and_to_keep_working(x):
    net = lowbit.quantize(make_net(), QuantConfig(bits=8, block_size=-1))
    with torch.no_grad():
        y = net(x)
        twin = copy.deepcopy(net)
        twin.head.clear_cache()  # hold the codes packed again: memory Normal's float copy stood in for them
        with torch.no_grad():
            twin.head.weight_scale.mul_(2)  # the copy owns its buffers and rebuilds its caches
        assert not torch.equal(twin(x), y) and torch.equal(net(x), y)
        torch.testing.assert_close(net.to(torch.device("cpu"))(x), y)


def test_kernel_for_reports_dispatch():
    from lowbit.nn import kernel_for
    from lowbit.runtime import Kernel

    net = lowbit.quantize(make_net(), QuantConfig(bits=4, block_size=32))
    assert kernel_for(net.head, "weight", 1) is Kernel.DENSE
    lowbit.set_backend(net, BackendConfig("high"))
    override_capabilities(Capabilities(cpu_int4=True))
    try:
        assert kernel_for(net.head, "weight", 1) is Kernel.CPU_INT4
        assert kernel_for(net.rnn, "weight_hh_l0", 64) is Kernel.DENSE
        override_capabilities(Capabilities())
        assert kernel_for(net.conv, "weight", 1) is Kernel.DENSE
    finally:
        override_capabilities(None)
