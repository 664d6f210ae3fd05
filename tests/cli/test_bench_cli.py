"""`lowbit bench SUITE ...` and `python -m benchmarks.<suite>`: every suite is reachable both ways."""

import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import lowbit
from lowbit.cli import bench, main
from lowbit.cli.bench import SUITES

ROOT = Path(__file__).resolve().parents[2]


def test_every_suite_is_a_module_with_main():
    import importlib

    for name in SUITES:
        mod = importlib.import_module(f"benchmarks.{name}")
        assert callable(mod.main), name


def test_a_named_suite_gets_its_arguments(monkeypatch):
    calls = []
    suite = types.ModuleType("benchmarks.minilm")
    suite.main = lambda argv: calls.append(argv) or 0
    monkeypatch.setitem(sys.modules, "benchmarks.minilm", suite)
    assert main(["bench", "minilm", "--threads", "1"]) == 0
    assert calls == [["--threads", "1", "--out", ""]]
    assert main(["bench", "minilm", "--out=x"]) == 0 and calls[-1] == ["--out=x"]


def test_unknown_suite_is_an_error(capsys):
    assert main(["bench", "nope"]) == 1
    assert "unknown benchmark suite 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("suite", ["convert_memory", "minilm", "quantize", "gemm_cpu"])
def test_python_m_help(suite):
    out = subprocess.run([sys.executable, "-m", f"benchmarks.{suite}", "--help"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0 and "usage:" in out.stdout


def test_the_suites_are_found_beside_the_package():
    assert bench.benchmarks_dir() == ROOT / "benchmarks"
    assert Path(bench.load_suite("gemm_cpu").__file__).resolve() == ROOT / "benchmarks" / "gemm_cpu.py"


def test_installed_without_the_benchmarks_says_so(tmp_path):
    """lowbit copied alone into a folder, as a wheel installs it: `lowbit bench` exits 1 with one line on stderr."""
    shutil.copytree(Path(lowbit.__file__).parent, tmp_path / "lowbit",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "lowbit", "bench", "--quick"], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path, env=env)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "not installed with lowbit" in out.stderr
    assert out.stderr.startswith("lowbit: error: the benchmark suites") and "source checkout" in out.stderr


def test_another_benchmarks_package_is_not_used(monkeypatch):
    other = types.ModuleType("benchmarks")
    other.__file__ = "/elsewhere/benchmarks/__init__.py"
    monkeypatch.setitem(sys.modules, "benchmarks", other)
    with pytest.raises(ImportError, match="not from lowbit's"):
        bench.load_suite("gemm_cpu")
