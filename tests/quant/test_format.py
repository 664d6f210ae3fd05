"""QuantizedWeight: metadata/tensor round trip, compute layout, validation; QuantConfig errors; input errors."""

import pytest
import torch

from lowbit import QuantConfig, QuantizedWeight, quantize_weight
from lowbit.quant import ComputeWeight


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 7, 8, 16])
@pytest.mark.parametrize("symmetric", [False, True])
def test_tensors_metadata_round_trip(bits, symmetric, rng):
    cfg = QuantConfig(bits=bits, block_size=32, symmetric=symmetric)
    qw = quantize_weight(torch.randn(6, 3, 30, generator=rng), cfg)
    back = QuantizedWeight.from_tensors(qw.tensors(), qw.metadata())
    assert back.metadata() == qw.metadata()
    assert torch.equal(back.dequantize(), qw.dequantize())


@pytest.mark.parametrize("bits,container", [(2, 2), (3, 4), (4, 4), (5, 8), (6, 8), (8, 8)])
@pytest.mark.parametrize("block", [16, 64, -1])
def test_compute_layout_dequantizes_identically(bits, container, block, rng):
    qw = quantize_weight(torch.randn(7, 90, generator=rng), QuantConfig(bits=bits, block_size=block))
    cw = qw.compute_layout()
    assert isinstance(cw, ComputeWeight) and cw.container_bits == container
    assert cw.qweight.dtype == torch.int32 and cw.qweight.shape == (7, -(-90 // (32 // container)))
    assert cw.zero.dtype == cw.scale.dtype == torch.float32
    assert torch.equal(cw.unpack(), qw.unpack())
    assert torch.equal(cw.dequantize(), qw.dequantize())


def test_symmetric_compute_layout_has_explicit_zero(rng):
    cw = quantize_weight(torch.randn(4, 64, generator=rng), QuantConfig(bits=4, symmetric=True)).compute_layout()
    assert torch.equal(cw.zero, torch.full_like(cw.scale, 8.0))


def test_to_moves_every_tensor(rng):
    qw = quantize_weight(torch.randn(4, 64, generator=rng), QuantConfig()).to("meta")
    assert all(t.device.type == "meta" for t in qw.tensors().values())


def test_from_tensors_rejects_contradictions(rng):
    qw = quantize_weight(torch.randn(4, 64, generator=rng), QuantConfig(bits=4, block_size=32))
    t, meta = qw.tensors(), qw.metadata()
    with pytest.raises(ValueError, match="'scale' has shape"):
        QuantizedWeight.from_tensors({**t, "scale": t["scale"][:, :1]}, meta)
    with pytest.raises(ValueError, match="missing its 'zero'"):
        QuantizedWeight.from_tensors({k: v for k, v in t.items() if k != "zero"}, meta)
    with pytest.raises(ValueError, match="newer"):
        QuantizedWeight.from_tensors(t, {**meta, "version": 99})
    with pytest.raises(ValueError, match="not a lowbit packed weight"):
        QuantizedWeight.from_tensors(t, {**meta, "format": "gguf"})
    with pytest.raises(ValueError, match="bits=9"):
        QuantizedWeight.from_tensors(t, {**meta, "bits": 9})
    with pytest.raises(ValueError, match="dtype"):
        QuantizedWeight.from_tensors({**t, "packed": t["packed"].to(torch.int16)}, meta)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(bits=1), "bits=1"),
        (dict(bits=9), "bits=9"),
        (dict(bits=4.0), "bits=4.0"),
        (dict(block_size=0), "block_size=0"),
        (dict(block_size=40), "multiple of 16"),
        (dict(block_size=-2), "block_size=-2"),
        (dict(method="smoothquant"), "method='smoothquant'"),
        (dict(method="hqq", symmetric=True), "HQQ"),
        (dict(scale_dtype="bfloat16"), "scale_dtype"),
        (dict(hqq_lp_norm=2.0), "hqq_lp_norm"),
        (dict(hqq_iters=-1), "hqq_iters"),
    ],
)
def test_config_errors_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        QuantConfig(**kwargs)


def test_config_accepts_method_names_and_round_trips():
    cfg = QuantConfig(bits=3, block_size=-1, method="HQQ")
    assert cfg.method.value == "hqq"
    assert QuantConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown QuantConfig keys"):
        QuantConfig.from_dict({"bitz": 4})
    with pytest.raises(ValueError, match="newer"):
        QuantConfig.from_dict({"version": 2})


@pytest.mark.parametrize(
    "w,exc,match",
    [
        (torch.tensor([[1.0, float("nan")] * 8]), ValueError, r"NaN or inf \(first at index \(0, 1\)"),
        (torch.tensor([[1.0, float("inf")] * 8]), ValueError, "NaN or inf"),
        (torch.ones(4, 16, dtype=torch.int32), TypeError, "only floating-point"),
        (torch.ones(16), ValueError, "rank >= 2"),
        (torch.ones(0, 16), ValueError, "empty"),
        (torch.ones(4, 16, device="meta"), ValueError, "meta device"),
        ([[1.0, 2.0]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_weights_rejected(w, exc, match):
    with pytest.raises(exc, match=match):
        quantize_weight(w, QuantConfig())


def test_bad_config_type_rejected():
    with pytest.raises(TypeError, match="QuantConfig"):
        quantize_weight(torch.ones(4, 16), {"bits": 4})
