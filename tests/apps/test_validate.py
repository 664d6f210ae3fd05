"""`lowbit validate`: error statistics, model specs, and a full run (peak memory in a child process) on a small MLP."""

import json
import math

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from lowbit.apps.validate import build_model, error_stats, format_report, validate
from lowbit.checkpoint import convert
from lowbit.cli import main
from lowbit.models.resolve import find_function
from lowbit.quant import QuantConfig

SPEC = "test_validate:mlp_example"  # pytest puts tests/ on sys.path; the child process inherits it


def mlp_example():
    """(model, inputs): two 1024x4096 Linear layers, 32 MB of float32 weights, so memory differences are visible."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1024, 4096), nn.GELU(), nn.Linear(4096, 1024))
    return model, (torch.randn(4, 1024, generator=torch.Generator().manual_seed(1)),)


def not_a_model():
    return 3


def test_error_stats_against_hand_computed_values():
    s = error_stats(torch.tensor([3.0, 4.0]), torch.tensor([3.0, 5.0]))
    assert s["max_abs"] == 1.0 and s["mean_abs"] == 0.5
    assert s["cosine"] == pytest.approx(29 / (5 * math.sqrt(34)), rel=1e-12)
    assert s["snr_db"] == pytest.approx(20 * math.log10(5.0), rel=1e-12)
    assert error_stats(torch.ones(3), torch.ones(3))["snr_db"] == math.inf


def test_model_spec_errors():
    with pytest.raises(ValueError, match="unknown model 'nope': use one of \\['minilm'\\] or MODULE:FUNCTION"):
        find_function("nope")
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_xyz'"):
        find_function("no_such_module_xyz:f")
    with pytest.raises(ValueError, match="module 'lowbit.apps.validate' has no function 'nothing'"):
        find_function("lowbit.apps.validate:nothing")
    with pytest.raises(TypeError, match="must return \\(nn.Module, example_inputs\\), got int"):
        build_model("test_validate:not_a_model")


def test_validate_report_numbers_and_peak_memory():
    report = validate(SPEC, cfg=QuantConfig(bits=4, block_size=64), reps=3)
    rows = {r["config"]: r for r in report["rows"]}
    ref, normal, high, low = (rows[c] for c in ("original (fp32)", "memory normal", "memory high", "memory low"))
    assert report["original_bytes"] == (2 * 1024 * 4096 + 4096 + 1024) * 4
    assert normal["ratio"] == pytest.approx(report["original_bytes"] / report["file_bytes"])
    assert 5 < normal["ratio"] < 8  # 4 bits + fp16 scale and zero per 64 weights = 4.5 bits
    assert normal["cosine"] > 0.99 and normal["snr_db"] > 15 and low["cosine"] > 0.99
    assert normal["max_abs"] >= normal["mean_abs"] > 0
    assert all(r["median_ms"] > 0 and r["p20_ms"] <= r["median_ms"] <= r["p80_ms"] for r in rows.values())
    # load + forward: fp32 touches its 32 MB of mapped weights; memory Normal dequantizes to 32 MB of float32
    assert ref["peak_mb"] > 28 and normal["peak_mb"] > 28 and low["peak_mb"] > 0
    # resident weights: Normal one fp32 copy (codes released, fp16 scale + zero per 64 weights stay: +1.6%),
    # High the packed codes plus that copy (M = 4 < 32 here: the packed kernel only), Low the packed codes and the
    # native kernel's own layout of them (0.14x + 0.16x of fp32 at int4 block 64)
    assert ref["resident_mb"] < normal["resident_mb"] <= 1.02 * ref["resident_mb"]
    assert low["resident_mb"] < 0.32 * ref["resident_mb"] and high["resident_mb"] >= low["resident_mb"]
    table = format_report(report)
    assert table.splitlines()[0].startswith("| config") and "memory low" in table and "SNR dB" in table


def test_validate_a_given_checkpoint_via_cli(tmp_path, capsys):
    model, _ = mlp_example()
    save_file(model.state_dict(), str(tmp_path / "mlp.safetensors"))
    convert(tmp_path / "mlp.safetensors", tmp_path / "q.safetensors", QuantConfig(bits=8, block_size=-1),
            progress=False)
    code = main(["validate", "--model", SPEC, "--checkpoint", str(tmp_path / "q.safetensors"), "--reps", "2",
                 "--no-memory", "--json"])
    out, _ = capsys.readouterr()
    assert code == 0
    report = json.loads(out)
    low = next(r for r in report["rows"] if r["config"] == "memory low")
    # memory Low runs the packed 8-bit kernel (int8 activations per row, ~40 dB per layer), no longer a dense copy
    assert low["cosine"] > 0.9995 and "peak_mb" not in low
    assert report["file_bytes"] == (tmp_path / "q.safetensors").stat().st_size
    code = main(["validate", "--model", "nope"])
    assert code == 1 and "lowbit: error: unknown model 'nope'" in capsys.readouterr().err


def test_peak_child_failure_is_reported():
    from lowbit.apps.validate import measure_peak

    with pytest.raises(RuntimeError, match="peak-memory process failed .*must return \\(nn.Module, example_inputs\\)"):
        measure_peak("test_validate:not_a_model", [{"checkpoint": "unused.safetensors"}])
