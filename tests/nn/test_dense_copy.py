"""Memory Normal holds one float copy: the packed codes are released and re-derived bit-exactly when needed."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lowbit
from lowbit.nn import QuantConv2d, QuantLinear, resident_bytes
from lowbit.nn.dense_copy import packed_from_dense, released
from lowbit.quant import QuantConfig, quantize_weight
from lowbit.runtime import BackendConfig

INT4_B64 = QuantConfig(bits=4, block_size=64)


def linear(rng, n=48, k=256, cfg=INT4_B64, backend="normal"):
    lin = nn.Linear(k, n)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n, k, generator=rng) / k**0.5)
    qw = quantize_weight(lin.weight.detach(), cfg)
    return lin, qw, QuantLinear.from_float(lin, qw, BackendConfig(backend))


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8, 16])
@pytest.mark.parametrize("block", [-1, 32, 144])  # 144: a short last block at K=200
@pytest.mark.parametrize("method", ["rtn", "hqq"])
def test_codes_rederive_exactly_from_the_fp32_copy(rng, bits, block, method):
    if method == "hqq" and bits == 16:
        return
    w = torch.randn(40, 200, generator=rng)
    qw = quantize_weight(w, QuantConfig(bits=bits, block_size=block, method=method))
    dense = qw.dequantize(torch.float32).reshape(qw.n, qw.k)
    assert torch.equal(packed_from_dense(dense, qw.scale, qw.zero, qw.bits, qw.block_size), qw.packed)


def test_normal_releases_the_codes_and_computes_the_dequantized_layer(rng):
    lin, qw, q = linear(rng)
    x = torch.randn(5, 256, generator=rng)
    with torch.no_grad():
        y = q(x)
    assert released(q, "weight") and q.weight_packed is None
    torch.testing.assert_close(y, F.linear(x, qw.dequantize(torch.float32), lin.bias), rtol=0, atol=0)
    fp32_bytes = lin.weight.numel() * 4 + lin.bias.numel() * 4
    assert resident_bytes(q) <= 1.02 * fp32_bytes  # float copy + bias + fp16 scale/zero (1.6% at block 64)
    assert torch.equal(q.state_dict()["weight_packed"], qw.packed) and q.weight_packed is None
    assert list(q.state_dict()) == ["bias", "weight_packed", "weight_scale", "weight_zero"]  # the usual order
    assert torch.equal(q.quantized_weight("weight").packed, qw.packed)


def test_saving_a_released_model_writes_the_same_file(rng, tmp_path):
    lin, qw, q = linear(rng, cfg=QuantConfig(bits=3, block_size=32, method="hqq"))
    lowbit.save(q, tmp_path / "before.safetensors")
    with torch.no_grad():
        q(torch.randn(2, 256, generator=rng))
    assert released(q, "weight")
    lowbit.save(q, tmp_path / "after.safetensors")
    assert (tmp_path / "before.safetensors").read_bytes() == (tmp_path / "after.safetensors").read_bytes()


def test_switching_mode_and_loading_hold_the_codes_again(rng):
    lin, qw, q = linear(rng)
    x = torch.randn(3, 256, generator=rng)
    with torch.no_grad():
        y = q(x)
        q.set_backend(BackendConfig("low"))
        assert torch.equal(q.weight_packed, qw.packed) and "weight_dense" not in q._buffers
        q.set_backend(BackendConfig("normal"))
        assert torch.equal(q(x), y) and released(q, "weight")
        other = quantize_weight(torch.randn(48, 256, generator=rng), QuantConfig(bits=4, block_size=64))
        q.load_state_dict({"weight_packed": other.packed, "weight_scale": other.scale, "weight_zero": other.zero,
                           "bias": lin.bias.detach()})
        torch.testing.assert_close(q(x), F.linear(x, other.dequantize(torch.float32), lin.bias), rtol=0, atol=0)
    assert released(q, "weight")


def test_an_in_place_scale_edit_of_released_codes_is_refused(rng):
    _, _, q = linear(rng)
    x = torch.randn(3, 256, generator=rng)
    with torch.no_grad():
        q(x)
        q.weight_scale.mul_(2)
        with pytest.raises(RuntimeError, match="scale or zero changed"):
            q(x)


def test_codes_a_copy_cannot_reproduce_stay_packed(rng):
    lin, qw, q = linear(rng)
    with torch.no_grad():
        q.weight_scale[0, 0] = 0.0  # a zero scale: the float copy of that block is 0 whatever the codes
        y = q(torch.randn(2, 256, generator=rng))
    assert not released(q, "weight") and torch.equal(q.weight_packed, qw.packed) and torch.isfinite(y).all()


def test_conv_at_memory_normal_releases_and_matches(rng):
    conv = nn.Conv2d(6, 8, 3, padding=1)
    qw = quantize_weight(conv.weight.detach(), QuantConfig(bits=4, block_size=-1))
    q = QuantConv2d.from_float(conv, qw, BackendConfig("normal"))
    x = torch.randn(2, 6, 7, 7, generator=rng)
    with torch.no_grad():
        y = q(x)
    assert released(q, "weight")
    torch.testing.assert_close(y, F.conv2d(x, qw.dequantize(torch.float32), conv.bias, padding=1),
                               rtol=0, atol=0)


def test_gradients_reach_the_input_at_memory_normal(rng):
    lin, qw, q = linear(rng)
    with torch.inference_mode():
        q(torch.randn(2, 256, generator=rng))  # the copy is built here, yet must serve autograd later
    x = torch.randn(4, 256, generator=rng, requires_grad=True)
    q(x).sum().backward()
    torch.testing.assert_close(x.grad, qw.dequantize(torch.float32).sum(0).expand(4, -1))
