"""`lowbit auto`: a plan file convert --config reads, and the bad inputs (clear errors, nothing written)."""

import json
import textwrap

import pytest

from lowbit.checkpoint.overrides import load_overrides
from lowbit.cli import main
from lowbit.cli.auto import parse_size
from lowbit.quant import QuantConfig

FAST = ["--bits", "2,4,8", "--blocks", "32", "--quiet", "--no-cache"]


@pytest.fixture
def setup(tmp_path, monkeypatch):
    (tmp_path / "auto_cli_model.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def make():
            torch.manual_seed(0)
            return nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 16))

        def data():
            g = torch.Generator().manual_seed(1)
            return [torch.randn(4, 32, generator=g) for _ in range(2)]

        def calib():
            g = torch.Generator().manual_seed(2)
            return [torch.randn(16, 32, generator=g) for _ in range(3)]

        def bad_data():
            return [torch.randn(4, 5)]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _run(setup, *extra, data="auto_cli_model:data"):
    return main(["auto", "--model", "auto_cli_model:make", "--data", data, "--out", str(setup / "plan.json"),
                 *FAST, *extra])


def test_writes_a_config_convert_reads(setup, capsys):
    assert _run(setup, "--size", "30%", "--plot", str(setup / "f.svg")) == 0
    assert "wrote" in capsys.readouterr().out and (setup / "f.svg").read_text().startswith("<svg")
    rules = load_overrides(setup / "plan.json", QuantConfig())
    assert sorted(r.pattern for r in rules) == ["0", "2"]
    assert _run(setup, "--max-error", "0.01", "--json", "--metric", "snr") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["measured_error"] <= 0.01 and report["config"] == json.loads((setup / "plan.json").read_text())


@pytest.mark.parametrize(("args", "code", "match"), [
    (["--size", "30%", "--max-error", "0.1"], 2, "not allowed with"),
    ([], 2, "one of the arguments --size --max-error is required"),
    (["--size", "100"], 1, "unreachable: the smallest plan"),
    (["--max-error", "0", "--no-float"], 1, "unreachable with these candidates"),
    (["--size", "abc"], 1, "--size 'abc'"),
    (["--size", "30%", "--bits", "", "--no-float"], 1, "candidate set is empty"),
    (["--size", "30%", "--plot", "f.png"], 1, "matplotlib"),
])
def test_bad_inputs_write_nothing(setup, capsys, monkeypatch, args, code, match):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert _run(setup, *args) == code
    assert match in capsys.readouterr().err
    assert not (setup / "plan.json").exists()


def test_data_the_model_rejects(setup, capsys):
    assert _run(setup, "--size", "30%", data="auto_cli_model:bad_data") == 1
    assert "rejected calibration item 0" in capsys.readouterr().err
    assert not (setup / "plan.json").exists()


def test_data_is_required_for_a_user_model(setup, capsys):
    assert main(["auto", "--model", "auto_cli_model:make", "--size", "30%", "--out", str(setup / "p.json")]) == 1
    assert "--data is required" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "value"), [("25%", 0.25), ("0.2", 0.2), ("20MB", 20e6), ("2MiB", 2 * 2**20),
                                             ("123456", 123456), ("1.5kb", 1500)])
def test_parse_size(text, value):
    assert parse_size(text) == pytest.approx(value)


def test_parse_size_rejects():
    for bad in ("0", "150%", "-3", "12 parsecs"):
        with pytest.raises(ValueError, match="--size"):
            parse_size(bad)


def test_a_gptq_plan_converts_with_the_model_and_its_data(setup, capsys):
    """auto -> convert --model --calib --config --float-inputs: the checkpoint is the model auto measured."""
    import torch

    import lowbit
    from lowbit.auto.metrics import as_metric

    assert _run(setup, "--size", "20%", "--methods", "gptq", "--no-float", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["needs_calibration"] and {v["method"] for v in report["config"]["layers"].values()} == {"gptq"}
    assert report["config"]["gptq_fit"] == {"every": 2}  # GPTQ fitted on items 0, 2, ...; measured on the others
    out = setup / "q.safetensors"
    assert main(["convert", "--model", "auto_cli_model:make", "--calib", "auto_cli_model:data", "--config",
                 str(setup / "plan.json"), "--float-inputs", "--quiet", str(out)]) == 0
    import auto_cli_model

    model = lowbit.load(auto_cli_model.make(), out)
    float_model = auto_cli_model.make()
    with torch.no_grad():
        ref = [float_model(x) for x in auto_cli_model.data()[1::2]]
        got = [model(x) for x in auto_cli_model.data()[1::2]]
    assert as_metric("cosine")(ref, got) == pytest.approx(report["measured_error"], rel=1e-3, abs=1e-6)


def test_a_plan_fitted_on_separate_calibration_converts_with_it(setup, capsys):
    """auto --calib: GPTQ fitted on --calib, all of --data measured; convert --calib with the same data is that
    model."""
    import torch

    import lowbit
    from lowbit.auto.metrics import as_metric

    assert _run(setup, "--size", "20%", "--methods", "gptq", "--no-float", "--calib", "auto_cli_model:calib",
                "--holdout", "0", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["gptq_calibration"] and "gptq_fit" not in report["config"]
    out = setup / "q.safetensors"
    assert main(["convert", "--model", "auto_cli_model:make", "--calib", "auto_cli_model:calib", "--config",
                 str(setup / "plan.json"), "--float-inputs", "--quiet", str(out)]) == 0
    import auto_cli_model

    model, float_model = lowbit.load(auto_cli_model.make(), out), auto_cli_model.make()
    with torch.no_grad():
        ref = [float_model(x) for x in auto_cli_model.data()]
        got = [model(x) for x in auto_cli_model.data()]
    assert as_metric("cosine")(ref, got) == pytest.approx(report["measured_error"], rel=1e-3, abs=1e-6)


def test_min_speed_floor(setup, capsys):
    """--min-speed: a floor no memory mode meets writes no plan (exit 3, every mode's speed named); one the asked
    mode meets writes it with the speed; a bad ratio is refused by argparse."""
    assert _run(setup, "--size", "30%", "--min-speed", "1e9x") == 3
    err = capsys.readouterr().err
    assert "below --min-speed 1e+09x at every memory mode" in err and "memory high" in err
    assert not (setup / "plan.json").exists()
    assert _run(setup, "--size", "30%", "--min-speed", "1e-9", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["min_speed"] == "met at memory low" and (setup / "plan.json").exists()
    assert _run(setup, "--size", "30%", "--min-speed", "fast") == 2
    assert "is not a ratio to fp32" in capsys.readouterr().err
