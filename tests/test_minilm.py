"""The real MiniLM sentence encoder end to end: embedding cosine to fp32 on lowbit.models.SENTENCES."""

import copy

import pytest

import lowbit
from lowbit.quant import QuantConfig
from lowbit.runtime import BackendConfig

pytestmark = pytest.mark.slow

CONFIGS = {
    "int8 per-channel": QuantConfig(bits=8, block_size=-1),
    "int4 b64 hqq": QuantConfig(bits=4, block_size=64, method="hqq"),
    "int4 b64 rtn": QuantConfig(bits=4, block_size=64, method="rtn"),
}


@pytest.fixture(scope="module")
def results():
    """{(config, memory): lowest cosine to fp32 over the sentences}."""
    from lowbit.models import embed, load_minilm

    try:
        model = load_minilm()
    except ImportError as e:
        pytest.fail(f"the MiniLM test needs the bundled model: {e}")
    ref = embed(model)
    out = {}
    for name, cfg in CONFIGS.items():
        q = lowbit.quantize(copy.deepcopy(model), cfg)
        for memory, precision in (("normal", "normal"), ("low", "normal"), ("low", "low")):
            lowbit.set_backend(q, BackendConfig(memory, precision))
            key = (name, memory) if precision == "normal" else (name, "low+precision low")
            out[key] = (embed(q) * ref).sum(-1).min().item()
    print("\nMiniLM lowest cosine to fp32 over", len(ref), "sentences:")
    for (name, memory), cos in out.items():
        print(f"  {name:18s} memory={memory:24s} {cos:.5f}")
    return out


@pytest.mark.filterwarnings("ignore:lowbit")
@pytest.mark.parametrize("memory", ["normal", "low"])
def test_minilm_int8(results, memory):
    assert results["int8 per-channel", memory] >= 0.999


@pytest.mark.filterwarnings("ignore:lowbit")
@pytest.mark.parametrize("memory", ["normal", "low"])
def test_minilm_int4_hqq(results, memory):
    assert results["int4 b64 hqq", memory] >= 0.95


@pytest.mark.filterwarnings("ignore:lowbit")
@pytest.mark.parametrize("memory", [
    pytest.param("normal", marks=pytest.mark.xfail(strict=True, reason=(
        "lowbit.quant HQQ (0.95789) is below RTN (0.95943) on MiniLM int4 b64 at the dequantized float weights; "
        "a published HQQ reaches ~0.967: an issue of the quantizer, reported, not of the layers"))),
    "low",
])
def test_minilm_int4_hqq_not_below_rtn(results, memory):
    assert results["int4 b64 hqq", memory] >= results["int4 b64 rtn", memory]
