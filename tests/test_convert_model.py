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
    assert all(r["method"] == method for r in report["layers"])
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
