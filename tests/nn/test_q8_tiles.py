"""lowbit.nn.q8_tiles: at memory Low a QuantLinear's 8-bit codes are re-laid once for the tiled kernel and held once
(the row-major buffer released); checkpoints, state_dict and outputs are what the row-major layer gives, and every
way out (autograd, set_backend, load_state_dict, .to(), an edited scale) holds the row-major codes again."""

import math

import pytest
import torch
from native_marks import needs_native as native

import lowbit
from lowbit.kernels import cpu_native
from lowbit.nn import QuantLinear, q8_tiles
from lowbit.nn.swap import resident_bytes
from lowbit.quant import QuantConfig, quantize_weight

tiled_build = pytest.mark.skipif(cpu_native.q8t_rows() != 32, reason="layers take tiles on the AVX-512 VNNI build only")


def _pair(rng, n=64, k=192, bits=8, block=64):
    """(layer, twin): the same weight at memory Low, the twin never binding (the usual row-major path only)."""
    w = torch.randn(n, k, generator=rng) / math.sqrt(k)
    qw = quantize_weight(w, QuantConfig(bits=bits, block_size=block))
    bias = torch.randn(n, generator=rng)
    layer = QuantLinear(qw, bias.clone(), lowbit.BackendConfig("low", "normal")).eval()
    twin = QuantLinear(qw, bias.clone(), lowbit.BackendConfig("low", "normal")).eval()
    twin.bind_calls = False
    return layer, twin


def _bound(x: torch.Tensor, layer: QuantLinear) -> torch.Tensor:
    """0.5 * sum_k |W[n, k]| * d: how far int8 activations per 32 channels may move y from the float64 product."""
    w = layer.quantized_weight("weight").dequantize(torch.float64)
    d = x.double().abs().view(x.shape[0], -1, 32).amax(-1).repeat_interleave(32, 1) / 127
    return 0.5 * d @ w.abs().T + 1e-5


@native
@tiled_build
@pytest.mark.parametrize("block", [64, -1])
def test_codes_held_once_and_saved_as_before(rng, tmp_path, one_thread, block):
    layer, twin = _pair(rng, block=block)
    before = lowbit.save(layer, tmp_path / "before.safetensors").read_bytes()
    held_before = resident_bytes(layer)
    with torch.no_grad():
        for m in (5, 1, 3, 9):
            x = torch.randn(m, 192, generator=rng)
            y = layer(x)
            assert layer._buffers["weight_packed"] is None and q8_tiles.held(layer, "weight")
            assert torch.equal(y, layer(x)) and torch.equal(y, layer._forward(x))  # bound == usual path, tiled
            want = twin(x)  # the row-major codes: the same kernel from M = 4, other summation orders below
            if m >= 4:
                assert torch.equal(y, want)
            exact = x.double() @ layer.quantized_weight("weight").dequantize(torch.float64).T + layer.bias.double()
            assert bool(((y.double() - exact).abs() <= _bound(x, layer)).all())
    # one copy of the codes, plus the fp32 scale and scale * zero across lanes
    assert resident_bytes(layer) <= held_before + 2 * 4 * 64 * layer.weight_scale.shape[1]
    assert lowbit.save(layer, tmp_path / "after.safetensors").read_bytes() == before
    assert torch.equal(layer.state_dict()["weight_packed"], twin.state_dict()["weight_packed"])


@native
@tiled_build
def test_every_way_out_holds_the_row_major_codes_again(rng, one_thread):
    layer, twin = _pair(rng)
    x = torch.randn(6, 192, generator=rng)
    with torch.no_grad():
        layer(x)
        with torch.no_grad():  # an in-place edit of the scale: the tiles' scales follow it
            layer.weight_scale.mul_(2)
            twin.weight_scale.mul_(2)
        assert torch.equal(layer(x), twin(x)) and q8_tiles.held(layer, "weight")
    xg = x.clone().requires_grad_(True)
    layer(xg).sum().backward()  # autograd: the usual path on the row-major codes, for good
    assert layer._buffers["weight_packed"] is not None and xg.grad is not None
    with torch.no_grad():
        layer(x)
        assert not q8_tiles.held(layer, "weight") and torch.equal(layer(x), twin(x))
    for way_out in ("set_backend", "load_state_dict", "to"):
        layer, twin = _pair(rng)
        with torch.no_grad():
            layer(x)
        assert q8_tiles.held(layer, "weight")
        if way_out == "set_backend":
            layer.set_backend(lowbit.BackendConfig("low", "normal"))
        elif way_out == "load_state_dict":
            layer.load_state_dict(twin.state_dict())
        else:
            layer.to(torch.float32)
        assert not q8_tiles.held(layer, "weight") and torch.equal(layer.weight_packed, twin.weight_packed), way_out
        with torch.no_grad():
            assert torch.equal(layer(x), twin(x)) and torch.equal(layer(x), twin(x)), way_out


@native
def test_other_codes_stay_row_major(rng, one_thread):
    # the 4-bit container; 8-bit codes the kernel copies (5..7 bits, K padded); N not a multiple of the tile; and
    # every 8-bit layer on builds other than AVX-512 VNNI (AVX2's tiles would slow decode down)
    cases = ((4, 192, 64), (6, 192, 64), (8, 130, 64), (8, 192, 40))
    for bits, k, n in cases + (((8, 192, 64),) if cpu_native.q8t_rows() != 32 else ()):
        layer, _ = _pair(rng, n=n, k=k, bits=bits, block=-1)
        with torch.no_grad():
            layer(torch.randn(5, k, generator=rng))
            layer(torch.randn(5, k, generator=rng))
        assert layer._buffers["weight_packed"] is not None and not q8_tiles.held(layer, "weight"), (bits, k, n)
    layer, _ = _pair(rng)
    layer.tile_codes = False  # asked for
    with torch.no_grad():
        layer(torch.randn(5, 192, generator=rng))
        layer(torch.randn(5, 192, generator=rng))
    assert layer._buffers["weight_packed"] is not None and not q8_tiles.held(layer, "weight")
