"""AWQ input-scale vectors of Conv1d / Conv2d layers: one s per input channel, the input divided channel-wise.

References are float64 torch ops written out here: F.unfold of the padded input for the search objective, and
F.conv on x / s with the dequantized packed weight for the layers and the model.
"""

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

import lowbit
from lowbit.checkpoint import CheckpointError
from lowbit.methods.awq import scale_inputs
from lowbit.quant import QuantConfig, quantize_weight
from lowbit.quant.awq import clip_quantize, search_channel_scales
from lowbit.runtime import BackendConfig

CFG = QuantConfig(bits=4, block_size=16, method="awq")
RTN = QuantConfig(bits=4, block_size=16)
C_IN = 8


def _outlier_scale(channels: int) -> torch.Tensor:
    scale = torch.ones(channels)
    scale[3] = 30.0  # one input channel with outlier magnitudes: AWQ's case
    return scale


class ConvNet(nn.Module):
    """A plain, a grouped and a depthwise Conv2d, then a Conv1d: (B, 8, H, W) -> (B, 8, W)."""

    def __init__(self):
        super().__init__()
        self.plain = nn.Conv2d(C_IN, 16, 3, padding=1)
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.depthwise = nn.Conv2d(16, 16, 3, padding="same", groups=16)
        self.seq = nn.Conv1d(16, 8, 3, padding=1)

    def forward(self, x):
        h = torch.relu(self.plain(x))
        h = torch.relu(self.grouped(h))
        return self.seq(self.depthwise(h).mean(2))


CONVS = ("plain", "grouped", "depthwise", "seq")
VECTORED = ("plain", "grouped", "seq")  # a depthwise row reads one channel: s would only rescale rows, no vector


def _inputs(gen, n, batch=2):
    return [torch.randn(batch, C_IN, 8, 8, generator=gen) * _outlier_scale(C_IN).view(1, -1, 1, 1) for _ in range(n)]


@pytest.fixture(scope="module")
def models():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many tiny matmuls: two OpenMP threads on a busy 2-core machine wait on each other
    try:
        torch.manual_seed(0)
        model = ConvNet().eval()
        gen = torch.Generator().manual_seed(1)
        cal, held_out = _inputs(gen, 4), _inputs(gen, 2)
        awq = lowbit.quantize(copy.deepcopy(model), CFG, calibration=cal, progress=False, min_weights=0)
        rtn = lowbit.quantize(copy.deepcopy(model), RTN, min_weights=0)
    finally:
        torch.set_num_threads(threads)
    return model, awq, rtn, held_out


# ---- (a) the search objective, computed independently from the unfolded inputs ----

def _unfold(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(M, C_in · prod(kernel)) float64 patches of x as the conv sees them (zero padding, stride 1)."""
    x = x.double()
    if isinstance(conv, nn.Conv1d):
        x = x.unsqueeze(2)
        kernel, padding = (1, conv.kernel_size[0]), (0, conv.padding[0])
    else:
        kernel, padding = conv.kernel_size, conv.padding
    cols = F.unfold(x, kernel, padding=padding)  # (B, C*k, L)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _columns(s: torch.Tensor, conv: nn.Module) -> torch.Tensor:
    """s (C_in,) as the (O, K) multiplier of the flattened weight, entry by entry."""
    out, per_group = conv.weight.shape[:2]
    kprod = conv.weight[0, 0].numel()
    rows_per_group = out // conv.groups
    cols = torch.empty(out, per_group * kprod, dtype=torch.float64)
    for o in range(out):
        for j in range(per_group):
            cols[o, j * kprod:(j + 1) * kprod] = s[(o // rows_per_group) * per_group + j]
    return cols


def _objective(conv: nn.Module, patches: torch.Tensor, s: torch.Tensor) -> float:
    """Σ_groups ‖X_g W_gᵀ - X_g (Q(W_g·s) / s)ᵀ‖², Q = RTN quantize-dequantize of the scaled weight."""
    w = conv.weight.detach().double().reshape(conv.weight.shape[0], -1)
    cols = _columns(s, conv)
    w_hat = quantize_weight((w * cols).float(), RTN).dequantize().double() / cols
    k, rows = w.shape[1], w.shape[0] // conv.groups
    return sum(((patches[:, g * k:(g + 1) * k] @ (w - w_hat)[g * rows:(g + 1) * rows].T) ** 2).sum().item()
               for g in range(conv.groups))


@pytest.mark.parametrize("make, shape, gain", [
    (lambda: nn.Conv2d(C_IN, 12, 3, padding=1), (6, C_IN, 9, 9), 0.9),
    (lambda: nn.Conv2d(C_IN, 12, 3, padding=1, groups=2), (6, C_IN, 9, 9), 0.9),
    # depthwise: a row holds one channel, so s scales whole rows and only the fp16 step rounding changes
    (lambda: nn.Conv2d(C_IN, C_IN, 3, padding=1, groups=C_IN), (6, C_IN, 9, 9), 1.0),
    (lambda: nn.Conv1d(C_IN, 12, 5, padding=2), (6, C_IN, 31), 0.9),
])
def test_channel_search_beats_plain_rounding_on_its_objective(make, shape, gain):
    torch.manual_seed(3)
    conv = make()
    x = torch.randn(shape) * _outlier_scale(C_IN).view(1, -1, *[1] * (len(shape) - 2))
    patches = _unfold(conv, x)
    k = conv.weight[0].numel()
    parts = [patches[:, g * k:(g + 1) * k] for g in range(conv.groups)]
    s, base, best = search_channel_scales(conv.weight.detach(), [p.T @ p for p in parts],
                                          [p.abs().mean(0) for p in parts], CFG)
    assert s.shape == (C_IN,) and bool((s > 0).all())
    at_s, at_one = _objective(conv, patches, s), _objective(conv, patches, torch.ones(C_IN, dtype=torch.float64))
    assert at_s <= gain * at_one, (at_s, at_one)
    assert at_one == pytest.approx(base, rel=1e-6) and at_s == pytest.approx(best, rel=1e-6)


# ---- (2) the float conv keeps its function while its weight is scaled ----

@pytest.mark.parametrize("conv", [
    nn.Conv2d(C_IN, 12, 3, padding=1, groups=2, padding_mode="reflect"),
    nn.Conv2d(C_IN, C_IN, 3, padding="same", groups=C_IN, padding_mode="circular"),
    nn.Conv1d(C_IN, 6, 3, padding=1, padding_mode="replicate"),
])
def test_scale_inputs_keeps_the_float_conv_function(conv):
    torch.manual_seed(4)
    x = torch.randn(2, C_IN, 7, 7) if isinstance(conv, nn.Conv2d) else torch.randn(2, C_IN, 11)
    s = torch.rand(C_IN) * 4 + 0.1
    with torch.no_grad():
        before = conv(x)
        saved = []
        handle = scale_inputs(conv, s, saved)
        try:
            torch.testing.assert_close(conv(x), before, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(conv(x[0]), before[0], rtol=1e-5, atol=1e-5)  # unbatched
            torch.testing.assert_close(conv(input=x), before, rtol=1e-5, atol=1e-5)
        finally:
            handle.remove()
            for p, data in saved:
                p.data = data
        assert torch.equal(conv(x), before)


# ---- (b) the quantized model computes conv(x / s, dequant) and beats RTN ----

def _reference(model: nn.Module, quantized: nn.Module) -> nn.Module:
    """The float model in float64 with each conv's weight the dequantized packed one and its input divided by s."""
    ref = copy.deepcopy(model).double()
    for name in CONVS:
        layer, conv = quantized.get_submodule(name), ref.get_submodule(name)
        with torch.no_grad():
            conv.weight.copy_(layer.quantized_weight("weight").dequantize().double())
        if name not in VECTORED:
            continue
        s = layer.weight_input_scale.double()
        spatial = conv.weight.dim() - 2
        conv.register_forward_pre_hook(lambda _m, args, s=s, d=spatial: (args[0] / s.view(-1, *[1] * d),))
    return ref


def test_every_conv_but_the_depthwise_gets_a_vector(models):
    _, awq, _, _ = models
    scaled = awq.lowbit_summary.input_scaled
    assert sorted(scaled) == sorted(VECTORED) and all(r < 1 for r in scaled.values()), scaled
    assert not hasattr(awq.depthwise, "weight_input_scale")
    for name in VECTORED:
        layer = awq.get_submodule(name)
        assert layer.weight_input_scale.shape == (layer.in_channels,)


def test_model_is_conv_of_x_over_s_and_beats_rtn(models):
    model, awq, rtn, held_out = models
    ref = _reference(model, awq)
    with torch.no_grad():
        for x in held_out:
            got, want = awq(x).double(), ref(x.double())
            assert (got - want).abs().max().item() <= 1e-4 * want.abs().max().item()
        x = torch.cat(held_out)
        y = model(x).double()
        err_awq, err_rtn = (awq(x).double() - y).norm().item(), (rtn(x).double() - y).norm().item()
    assert err_awq < 0.8 * err_rtn, (err_awq, err_rtn)


def test_clipping_sees_the_divided_inputs(models):
    """The first conv reads the model input: its packed weight is the clip search on W·s with the statistics of
    x / s, recomputed here from F.unfold."""
    model, awq, _, _ = models
    gen = torch.Generator().manual_seed(1)
    cal = _inputs(gen, 4)  # the fixture's calibration set
    conv, layer = model.plain, awq.plain
    s = layer.weight_input_scale
    patches = torch.cat([_unfold(conv, x / s.view(1, -1, 1, 1)) for x in cal]).float()
    w = conv.weight.detach() * _columns(s.double(), conv).float().reshape(conv.weight.shape)
    indep = clip_quantize(w, patches.T.double() @ patches.double(), CFG).dequantize()
    torch.testing.assert_close(layer.quantized_weight("weight").dequantize(), indep, rtol=0, atol=1e-6)


@pytest.mark.parametrize("memory", ["normal", "high", "low"])
@pytest.mark.parametrize("name", VECTORED)
def test_layer_divides_its_input_at_every_memory_mode(models, name, memory):
    _, awq, _, held_out = models
    layer = copy.deepcopy(awq.get_submodule(name))
    layer.set_backend(BackendConfig(memory=memory))
    twin = type(layer)(layer.quantized_weight("weight"), layer.bias, layer.stride, layer.padding, layer.dilation,
                       layer.groups, layer.padding_mode, BackendConfig(memory=memory))  # no vector
    gen = torch.Generator().manual_seed(5)
    shape = (2, layer.in_channels, 9) if name == "seq" else (2, layer.in_channels, 6, 6)
    x = torch.randn(shape, generator=gen) * 3
    s = layer.weight_input_scale.view(-1, *[1] * (len(shape) - 2))
    with torch.no_grad():
        assert torch.equal(layer(x), twin(x / s))
        assert torch.equal(layer(x[0]), twin(x[0] / s))  # unbatched


# ---- (c) checkpoint round trip ----

def test_checkpoint_round_trip_is_format_3(models, tmp_path):
    model, awq, _, held_out = models
    path = lowbit.save(awq, tmp_path / "conv.safetensors")
    with safe_open(str(path), "pt") as f:
        body = json.loads(f.metadata()["lowbit"])
        stored = {n: f.get_tensor(f"{n}.weight_input_scale") for n in VECTORED}
    assert body["version"] == 3 and body["input_scales"] == sorted(f"{n}.weight" for n in VECTORED)
    back = lowbit.load(copy.deepcopy(model), path)
    for name in VECTORED:
        assert torch.equal(back.get_submodule(name).weight_input_scale, stored[name])
    with torch.no_grad():
        assert torch.equal(back(held_out[0]), awq(held_out[0]))
    with pytest.raises(CheckpointError, match="AWQ input-scale vectors .* cannot represent"):
        lowbit.export(path, tmp_path / "out", progress=False)


def test_load_refuses_a_vector_that_does_not_fit_the_conv(models, tmp_path):
    model, awq, _, _ = models
    path = lowbit.save(awq, tmp_path / "conv.safetensors")
    other = copy.deepcopy(model)
    other.grouped = nn.Conv2d(32, 16, 3, padding=1, groups=8)  # same weight shape (16, 4, 3, 3), 32 input channels
    with pytest.raises(CheckpointError, match="input scale of 'grouped.weight' has shape \\[16\\].* 32 input"):
        lowbit.load(other, path)


# ---- (d) set_input_scale checks ----

@pytest.mark.parametrize("bad, match", [
    (torch.ones(4), r"QuantConv2d: input scale must be a floating tensor of shape \(16,\)"),  # C_in / groups
    (torch.ones(16, dtype=torch.int32), r"shape \(16,\), got torch.int32"),
    ([1.0] * 16, "got list"),
    (-torch.ones(16), "finite and positive"),
    (torch.full((16,), float("inf")), "finite and positive"),
    (torch.zeros(16), "finite and positive"),
])
def test_set_input_scale_rejects_bad_vectors(models, bad, match):
    layer = copy.deepcopy(models[1].grouped)
    with pytest.raises(ValueError, match=match):
        layer.set_input_scale(bad)
