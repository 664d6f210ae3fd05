"""Every writing command refuses an output that is one of its inputs (lowbit/cli/overwrite.py), before any work and
with the input left byte for byte as it was; auto's --out/--plot/--size edges; a closed stdout pipe is quiet."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from lowbit.cli import main
from lowbit.cli.overwrite import module_file, refuse_overwrite

_MODEL = textwrap.dedent("""
    import torch
    from torch import nn

    def make():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 16))

    def data():
        g = torch.Generator().manual_seed(1)
        return [torch.randn(4, 32, generator=g) for _ in range(2)]
""")


@pytest.fixture
def work(tmp_path, monkeypatch):
    (tmp_path / "ow_model.py").write_text(_MODEL)
    data = tmp_path / "DATA"
    data.mkdir()
    for i in range(2):
        torch.save(torch.randn(4, 32), data / f"{i:02d}.pt")
    (tmp_path / "cfg.json").write_text('{"version": 1, "layers": {"0": {"bits": 8}}}')
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _tree(root):
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def _fails(capsys, argv, match):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert match in err, err
    return err


def _cases(w):
    module, data, cfg = w / "ow_model.py", w / "DATA", w / "cfg.json"
    auto = ["auto", "--model", "ow_model:make", "--size", "30%", "--bits", "4", "--blocks", "32", "--quiet",
            "--no-cache"]
    convert = ["convert", "--model", "ow_model:make", "--calib", data, "--method", "gptq", "--quiet"]
    quant = ["quant", "--model", "ow_model:make", "--calib", data, "--quiet"]
    return {
        "auto --out module": ([*auto, "--data", data, "--out", module], "(the --model module)"),
        "auto --out data file": ([*auto, "--data", data, "--out", data / "00.pt"], "inside the --data inputs"),
        "auto --out in data folder": ([*auto, "--data", data, "--out", data / "plan.json"], "inside the --data"),
        "auto --plot = --out": ([*auto, "--data", data, "--out", w / "p.svg", "--plot", w / "p.svg"],
                                "are the same file"),
        "auto --plot module": ([*auto, "--data", "ow_model:data", "--out", w / "p.json", "--plot", module],
                               "(the --model module)"),
        "auto --out data module": ([*auto, "--data", "ow_model:data", "--out", module], "(the --model module)"),
        "convert calib file": ([*convert, data / "00.pt"], "inside the --calib data"),
        "convert module": ([*convert, module], "(the --model module)"),
        "convert config": ([*convert, "--config", cfg, cfg], "(--config)"),
        "convert external data": ([*convert, "--external-data", w / "DATA" / "x"], "inside the --calib data"),
        "quant calib file": ([*quant, data / "01.pt"], "inside the --calib data"),
        "quant module": ([*quant, module], "(the --model module)"),
        "quant config": ([*quant, "--config", cfg, cfg], "(--config)"),
    }


@pytest.mark.parametrize("case", list(_cases(__import__("pathlib").Path("."))))
def test_no_command_writes_over_its_inputs(work, capsys, case):
    argv, match = _cases(work)[case]
    before = _tree(work)
    _fails(capsys, argv, match)
    assert _tree(work) == before  # nothing written, nothing replaced


def test_hard_link_and_symlink_to_an_input_are_the_input(work):
    os.link(work / "ow_model.py", work / "hard.py")
    os.symlink(work / "cfg.json", work / "soft.json")
    with pytest.raises(ValueError, match="is the input file"):
        refuse_overwrite({"OUT": work / "hard.py"}, {"the --model module": module_file("ow_model:make")})
    with pytest.raises(ValueError, match="is the input file"):
        refuse_overwrite({"OUT": work / "soft.json"}, {"--config": work / "cfg.json"})
    refuse_overwrite({"OUT": work / "new.safetensors"}, {"--config": work / "cfg.json", "x": None})


def test_export_folder_must_not_hold_its_input(work, capsys):
    from lowbit.checkpoint import save
    from lowbit.quant import QuantConfig, quantize_weight

    folder = work / "ckpt"
    folder.mkdir()
    qw = quantize_weight(torch.randn(16, 64), QuantConfig(bits=4, block_size=32))
    save({"fc.weight": qw}, folder / "model.safetensors")
    before = _tree(work)
    _fails(capsys, ["export", folder / "model.safetensors", folder], "holds the input")
    assert _tree(work) == before


@pytest.mark.parametrize(("size", "match"), [("1B", "at least 2 bytes"), ("1e400", "finite"), ("0MB", "> 0"),
                                             ("1e400%", "finite"), ("1.5", "at least 2 bytes")])
def test_auto_size_edges_refused(size, match):
    from lowbit.cli.auto import parse_size

    with pytest.raises(ValueError, match=match):
        parse_size(size)


def test_auto_plot_in_missing_folder_refused_before_tuning(work, capsys):
    argv = ["auto", "--model", "ow_model:make", "--data", "ow_model:data", "--size", "30%", "--quiet", "--no-cache",
            "--out", work / "plan.json", "--plot", work / "missing" / "f.svg"]
    _fails(capsys, argv, "does not exist")
    assert not (work / "plan.json").exists() and not (work / "missing").exists()


def test_unknown_top_level_config_key_named(work, capsys):
    from lowbit.checkpoint.overrides import load_overrides
    from lowbit.quant import QuantConfig

    (work / "typo.json").write_text('{"version": 1, "layers": {"0": {"bits": 4}}, "gptq_fitt": {"every": 2}}')
    with pytest.raises(ValueError, match=r"typo.json: unknown top-level key\(s\) \['gptq_fitt'\]; known: .*gptq_fit"):
        load_overrides(work / "typo.json", QuantConfig())


def test_config_rule_on_a_weightless_module_refused(work, capsys):
    (work / "gelu.json").write_text('{"version": 1, "layers": {"1": {"bits": 4}}}')
    before = _tree(work)
    _fails(capsys, ["convert", "--model", "ow_model:make", "--config", work / "gelu.json", work / "o.safetensors"],
           "names no layer with a weight")
    assert _tree(work) == before


def test_closed_stdout_pipe_is_quiet():
    """`lowbit ... | head -c 1`: no 'Broken pipe' error, no traceback; the shell sees SIGPIPE's 141."""
    code = ("import sys; from lowbit.cli import main; from lowbit.cli import info;"
            "info.run = lambda a: [print('x' * 1000) for _ in range(2000)] and 0;"
            "sys.exit(main(['info', '--system']))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.read(10)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == "", err


def test_bench_out_must_be_a_folder(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    _fails(capsys, ["bench", "--out", tmp_path / "notes.txt", "quantize"], "is not a folder")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_output_that_is_a_directory_fails_before_the_work(work, capsys):
    (work / "plan.json").mkdir()
    _fails(capsys, ["auto", "--model", "ow_model:make", "--data", "ow_model:data", "--size", "30%", "--quiet",
                    "--no-cache", "--out", work / "plan.json"], "is a directory")
    _fails(capsys, ["quant", "--model", "ow_model:make", "--calib", "ow_model:data", "--quiet", work / "plan.json"],
           "is a directory")
