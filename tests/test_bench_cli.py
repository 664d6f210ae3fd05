"""`lowbit bench SUITE ...` and `python -m lowbit.bench.<suite>`: every suite is reachable both ways."""

import subprocess
import sys
import types

import pytest

from lowbit.cli import main
from lowbit.cli.bench import SUITES


def test_every_suite_is_a_module_with_main():
    import importlib

    for name in SUITES:
        mod = importlib.import_module(f"lowbit.bench.{name}")
        assert callable(mod.main), name


def test_a_named_suite_gets_its_arguments(monkeypatch):
    calls = []
    suite = types.ModuleType("lowbit.bench.minilm")
    suite.main = lambda argv: calls.append(argv) or 0
    monkeypatch.setitem(sys.modules, "lowbit.bench.minilm", suite)
    assert main(["bench", "minilm", "--threads", "1"]) == 0
    assert calls == [["--threads", "1", "--out", ""]]
    assert main(["bench", "minilm", "--out=x"]) == 0 and calls[-1] == ["--out=x"]


def test_unknown_suite_is_an_error(capsys):
    assert main(["bench", "nope"]) == 1
    assert "unknown benchmark suite 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("suite", ["convert_memory", "minilm", "quantize", "gemm_cpu"])
def test_python_m_help(suite):
    out = subprocess.run([sys.executable, "-m", f"lowbit.bench.{suite}", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "usage:" in out.stdout
