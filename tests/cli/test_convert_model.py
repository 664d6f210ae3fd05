"""`lowbit convert --model MODULE:FUNCTION --calib DATA --method gptq|awq OUT` end to end."""

import json
import textwrap

import pytest
import torch

import lowbit
from lowbit.cli import main

MODULE = textwrap.dedent('''
    import torch
    from torch import nn


    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv1d(8, 64, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64 * 16, 64),
                             nn.ReLU(), nn.Linear(64, 32)).eval()


    def batches():
        g = torch.Generator().manual_seed(1)
        return [torch.randn(4, 8, 16, generator=g) for _ in range(6)]
''')


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "calib_user_mod.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    return importlib.import_module("calib_user_mod")


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_convert_model_gptq_writes_a_loadable_checkpoint(user_module, tmp_path, capsys, method):
    out = tmp_path / "m.safetensors"
    rc = main(["convert", "--model", "calib_user_mod:build", "--calib", "calib_user_mod:batches", "--method", method,
               "--bits", "4", "--block", "32", "--quiet", "--json", str(out)])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    layers = {r["weight"]: r for r in report["layers"]}
    assert set(layers) == {"0.weight", "3.weight", "5.weight"} and report["items"] == 6
    errs = [r["error after"] for r in report["layers"]]
    assert errs == sorted(errs, reverse=True)  # worst first
    # 24 calibration rows for the Linear of K = 1024 are degenerate (rank < K/4): it keeps RTN, and says so
    kept = report["kept data-free"]
    assert set(kept) == {"3.weight"} and "24 of 1024 directions" in kept["3.weight"], kept
    assert all(r["method"] == (method if r["weight"] not in kept else "rtn") for r in report["layers"])
    model = lowbit.load(user_module.build(), out)
    ref = lowbit.quantize(user_module.build(), lowbit.QuantConfig(bits=4, block_size=32, method=method),
                          calibration=user_module.batches(), progress=False)
    x = user_module.batches()[0]
    with torch.no_grad():
        assert torch.allclose(model(x), ref(x), atol=1e-5)


def test_convert_model_table_and_errors(user_module, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    assert main(["convert", "--model", "calib_user_mod:build", "--calib", "calib_user_mod:batches", "--method",
                 "gptq", "--quiet", str(out)]) == 0
    text = capsys.readouterr().out
    assert "rel. output error before" in text and "calibration: function calib_user_mod:batches" in text
    assert main(["convert", "--method", "gptq", str(out), str(out)]) == 1
    assert "--model and --calib" in capsys.readouterr().err
    assert main(["convert", "--model", "calib_user_mod:build", "--method", "gptq", str(out)]) == 1
    assert "--calib" in capsys.readouterr().err
    assert main(["convert", "--model", "calib_user_mod:nope", "--method", "rtn", str(out)]) == 1
    assert "no callable 'nope'" in capsys.readouterr().err


def test_convert_model_with_a_per_layer_config(user_module, tmp_path, capsys):
    """--config with --model: a GPTQ layer, an HQQ layer, a skipped one; the checkpoint equals lowbit.quantize with
    the same overrides."""
    config = tmp_path / "plan.json"
    config.write_text(json.dumps({"version": 1, "layers": {
        "0": "skip", "5.weight": {"bits": 3, "block_size": 32, "method": "gptq", "gptq_act_order": True},
        "3": {"bits": 8, "block_size": -1, "method": "hqq"}}}))  # GPTQ where 24 rows span K = 64 (not 1024)
    out = tmp_path / "m.safetensors"
    args = ["convert", "--model", "calib_user_mod:build", "--config", str(config), "--quiet", "--float-inputs",
            str(out)]
    assert main(args) == 1 and "--calib" in capsys.readouterr().err and not out.exists()  # GPTQ needs data
    assert main([*args[:3], "--calib", "calib_user_mod:batches", *args[3:]]) == 0
    overrides = {"5": lowbit.QuantConfig(bits=3, block_size=32, method="gptq", gptq_act_order=True),
                 "3": lowbit.QuantConfig(bits=8, block_size=-1, method="hqq")}
    ref = lowbit.quantize(user_module.build(), overrides=overrides, skip=["0"], calibration=user_module.batches(),
                          sequential=False, progress=False)
    model = lowbit.load(user_module.build(), out)
    assert isinstance(model[0], torch.nn.Conv1d)  # skipped: still float
    assert model[5].quantized_weight("weight").method == "gptq" and model[3].quantized_weight("weight").bits == 8
    x = user_module.batches()[0]
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=1e-5)
    config.write_text(json.dumps({"version": 1, "layers": {"nope": {"bits": 4}}}))
    assert main(args) == 1 and "'nope' matches no layer" in capsys.readouterr().err
