"""The real MiniLM sentence encoder end to end: embedding cosine to fp32 on lowbit.models.SENTENCES."""

import copy

import pytest
import torch

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
    from lowbit.models import load_minilm

    try:
        model = load_minilm()
    except ImportError as e:
        pytest.fail(f"the MiniLM test needs the bundled model: {e}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # steadier than 2 OpenMP threads on a busy 2-core CI machine
    try:
        return _measure(model)
    finally:
        torch.set_num_threads(threads)


def _measure(model):
    from lowbit.models import embed

    ref = embed(model)
    out = {}
    for name, cfg in CONFIGS.items():
        q = lowbit.quantize(copy.deepcopy(model), cfg)
        for memory in ("normal", "low"):
            lowbit.set_backend(q, BackendConfig(memory))
            out[name, memory] = (embed(q) * ref).sum(-1).min().item()
    print("\nMiniLM lowest cosine to fp32 over", len(ref), "sentences:")
    for (name, memory), cos in out.items():
        print(f"  {name:18s} memory={memory:6s} {cos:.5f}")
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
@pytest.mark.xfail(strict=False, reason=(
    "lowbit.quant's HQQ is below RTN on MiniLM int4 b64 (measured 2026-11-24: normal 0.95789 vs 0.95943, "
    "low 0.95449 vs 0.95555; a published HQQ reaches ~0.967): a quantizer issue, reported to its owner"))
@pytest.mark.parametrize("memory", ["normal", "low"])
def test_minilm_int4_hqq_not_below_rtn(results, memory):
    assert results["int4 b64 hqq", memory] >= results["int4 b64 rtn", memory]
