"""quantize_static end to end: small trained models (CNN; conv + BN + BiLSTM + Linear), save/load, debug, errors."""

import copy
import functools

import pytest
import torch
from torch import nn

import lowbit
from lowbit.calib import CalibrationError
from lowbit.nn.static import StaticQuantConv1d, StaticQuantConv2d, StaticQuantLinear
from lowbit.static import StaticConfig, quantize_static


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU(),  # depthwise
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


class ConvBiLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(8, 24, 5, padding=2)
        self.bn = nn.BatchNorm1d(24)
        self.rnn = nn.LSTM(24, 16, batch_first=True, bidirectional=True)
        self.head = nn.Linear(32, 6)

    def forward(self, x):  # (B, 8, T) -> (B, T, 6)
        h = torch.relu(self.bn(self.conv(x))).transpose(1, 2)
        return self.head(self.rnn(h)[0])


def _data(kind, n, gen):
    if kind == "cnn":
        templates = torch.randn(10, 3, 8, 8, generator=torch.Generator().manual_seed(7))
        y = torch.randint(0, 10, (n,), generator=gen)
        return templates[y] + 0.8 * torch.randn(n, 3, 8, 8, generator=gen), y
    x = torch.randn(n, 8, 20, generator=gen)
    y = (x[:, :6].cumsum(-1) > 0).long().argmax(1)  # (B, T): a sequence labelling target
    return x, y


@functools.cache
def _trained(kind):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convs: threads only contend on a shared machine
    try:
        return _train(kind)
    finally:
        torch.set_num_threads(threads)


def _train(kind):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    model = SmallCNN() if kind == "cnn" else ConvBiLSTM()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        x, y = _data(kind, 32, gen)
        out = model(x)
        loss = nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module", params=["cnn", "lstm"])
def trained(request):
    return request.param, copy.deepcopy(_trained(request.param))


@pytest.mark.parametrize("kind,method", [("cnn", "kl"), ("cnn", "minmax"), ("lstm", "kl"), ("lstm", "percentile")])
def test_top1_agreement_on_held_out_data(kind, method):
    float_model = copy.deepcopy(_trained(kind))
    model = copy.deepcopy(float_model)
    gen = torch.Generator().manual_seed(2)
    cal = [_data(kind, 16, gen)[0] for _ in range(4)]
    held_out = _data(kind, 200, torch.Generator().manual_seed(3))[0]
    quantize_static(model, cal, StaticConfig(activation_method=method), progress=False)
    kinds = {type(m) for m in model.modules()}
    assert (StaticQuantConv2d if kind == "cnn" else StaticQuantConv1d) in kinds and StaticQuantLinear in kinds
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    with torch.no_grad():
        ref, out = float_model(held_out), model(held_out)
    agree = float((ref.argmax(-1) == out.argmax(-1)).float().mean())
    assert agree >= 0.99, f"{kind}/{method}: top-1 agreement {agree:.4f}"
    if kind == "lstm":
        assert type(model.rnn).__name__ == "StaticQuantLSTM" and not model.lowbit_summary.kept_float


def test_save_load_debug_and_skip(tmp_path, trained):
    kind, float_model = trained
    model = copy.deepcopy(float_model)
    gen = torch.Generator().manual_seed(2)
    cal = [_data(kind, 8, gen)[0] for _ in range(2)]
    skip = ["fc"] if kind == "cnn" else ["head"]
    quantize_static(model, cal, StaticConfig(debug=True, weight_method="admm"), skip=skip, progress=False)
    summary = model.lowbit_summary
    assert skip[0] in [r.name for r in summary.kept_float] and isinstance(model.get_submodule(skip[0]), nn.Linear)
    assert summary.debug and all(d.cosine > 0.99 and d.snr_db > 20 for d in summary.debug)
    assert summary.debug == sorted(summary.debug, key=lambda d: d.cosine) and "cosine" in summary.debug_table()
    x = _data(kind, 4, gen)[0]
    y = model(x)
    lowbit.save(model, tmp_path / "m.safetensors")
    loaded = lowbit.load((SmallCNN() if kind == "cnn" else ConvBiLSTM()).eval(), tmp_path / "m.safetensors")
    assert torch.equal(loaded(x), y)


def test_bad_inputs(tmp_path):
    model = copy.deepcopy(_trained("cnn"))
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="empty"):
        quantize_static(copy.deepcopy(model), [], progress=False)
    with pytest.raises(CalibrationError, match="item 0"):
        quantize_static(copy.deepcopy(model), [torch.randn(2, 5, 12, 12)], progress=False)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(CalibrationError, match="NaN"):
        quantize_static(copy.deepcopy(model), [bad], progress=False)
    with pytest.raises(ValueError, match="skip pattern 'nope' matches no module"):
        quantize_static(copy.deepcopy(model), [x], skip=["nope"], progress=False)
    with pytest.raises(TypeError, match="StaticConfig"):
        quantize_static(copy.deepcopy(model), [x], config={"activation_method": "kl"}, progress=False)
    training = copy.deepcopy(model).train()
    with pytest.warns(UserWarning, match="training mode"):
        quantize_static(training, [x], progress=False)
    assert not training.training
    nan_out = training(torch.full((1, 3, 8, 8), float("nan")))
    assert bool(torch.isnan(nan_out).all())


class OutlierMLP(nn.Module):
    """Two Linears whose shared input has a few huge channels (as transformer LayerNorm outputs do)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 32), nn.Linear(32, 8)
        self.register_buffer("gain", torch.ones(64))
        self.gain[:3] = 60.0
        with torch.no_grad():  # small weights on the outlier channels, so every channel matters in the output
            self.fc1.weight[:, :3] /= 60.0

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x * self.gain)))


def test_smooth_alpha_helps_outlier_channels_and_round_trips(tmp_path):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(4)
    cal = [torch.randn(32, 64, generator=gen) for _ in range(3)]
    x = torch.randn(64, 64, generator=gen)
    torch.manual_seed(0)
    with torch.no_grad():
        ref = OutlierMLP().eval()(x)

    def snr(model):
        with torch.no_grad():
            y = model(x)
        return float(10 * torch.log10(ref.pow(2).sum() / (ref - y).pow(2).sum()))
    torch.manual_seed(0)
    plain = quantize_static(OutlierMLP().eval(), cal, StaticConfig(activation_method="minmax"), progress=False)
    torch.manual_seed(0)
    smooth = quantize_static(OutlierMLP().eval(), cal, StaticConfig(activation_method="minmax", smooth_alpha=0.5),
                             progress=False)
    assert smooth.fc1.input_smooth is not None and snr(smooth) > snr(plain) + 3
    lowbit.save(smooth, tmp_path / "s.safetensors")
    torch.manual_seed(0)
    loaded = lowbit.load(OutlierMLP().eval(), tmp_path / "s.safetensors")
    assert torch.equal(loaded(x), smooth(x))


def test_emulated_kernel_matches_int_mm():
    from lowbit.nn.weight_cache import override_capabilities
    from lowbit.runtime import Capabilities

    model = quantize_static(copy.deepcopy(_trained("cnn")), [torch.randn(8, 3, 8, 8)], progress=False)
    # 28x28 planes: without the native library a depthwise conv on smaller ones runs a float copy (torch's conv is
    # faster there than the emulation), while the native channels-last kernel runs it int8 at every size
    x = torch.randn(2, 3, 28, 28)
    fast = model(x)
    override_capabilities(Capabilities())  # nothing probed: torch._int_mm is not trusted
    try:
        for m in model.modules():
            if hasattr(m, "_impls"):
                m._impls = {}
        with pytest.warns(UserWarning, match="emulation"):
            slow = model(x)
    finally:
        override_capabilities(None)
    torch.testing.assert_close(slow, fast, rtol=1e-5, atol=1e-5)


def test_static_lstm_two_layers_and_large_h0():
    torch.manual_seed(0)
    lstm = nn.LSTM(12, 16, num_layers=2, bidirectional=True).eval()
    gen = torch.Generator().manual_seed(5)
    cal = [torch.randn(7, 3, 12, generator=gen) for _ in range(3)]
    model = quantize_static(nn.Sequential(copy.deepcopy(lstm)).eval(), cal, StaticConfig(activation_method="minmax"),
                            progress=False)
    x = torch.randn(9, 2, 12, generator=gen)
    h0, c0 = 3 * torch.randn(4, 2, 16, generator=gen), torch.randn(4, 2, 16, generator=gen)
    with torch.no_grad():
        (ref, (hr, _)), (out, (hq, _)) = lstm(x, (h0, c0)), model[0](x, (h0, c0))
    assert type(model[0]).__name__ == "StaticQuantLSTM"
    assert float(torch.nn.functional.cosine_similarity(ref.flatten(), out.flatten(), 0)) > 0.999
    torch.testing.assert_close(hq, hr, atol=0.03, rtol=0)
