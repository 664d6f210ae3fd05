"""The `lowbit` CLI: results on stdout, one-line errors on stderr, exit codes 0/1/2."""

import importlib
import json
import re

import pytest

from lowbit.cli import main


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("lowbit: error: "), err
    return lines[0]


def test_convert_then_info(tmp_path, capsys, model_file):
    out_file = tmp_path / "q.safetensors"
    code, out, err = _run(capsys, "convert", model_file, out_file, "--bits", "3", "--block", "32", "--hqq", "--quiet")
    assert code == 0 and err == ""
    header = out.splitlines()[0]
    assert "tensors quantized" in header and "ratio" in header and "time" in header
    assert out.splitlines()[2].split("|")[1].strip() == "1"  # one quantized tensor (fc.weight)
    code, out, _ = _run(capsys, "info", out_file)
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("| fc.weight "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == ["fc.weight", "32x96", "3", "32", "hqq", str(32 * 36 + 2 * 32 * 3 * 2), f"{32 * 96 * 4 / 1536:.2f}"]
    assert "TOTAL" in out
    code, out, _ = _run(capsys, "info", out_file, "--json")
    report = json.loads(out)
    assert report["totals"]["quantized"] == 1 and report["totals"]["format_version"] == 1
    assert {r["name"] for r in report["tensors"]} == {"fc.weight", "fc.bias", "emb.weight"}
    assert report["totals"]["bytes"] == sum(r["bytes"] for r in report["tensors"])


def test_convert_progress_goes_to_stderr(tmp_path, capsys, model_file):
    code, out, err = _run(capsys, "convert", model_file, tmp_path / "q.safetensors", "--external-data", "--fp16")
    assert code == 0 and "convert" in err and "convert:" not in out
    assert (tmp_path / "q.safetensors.data").is_file()


def test_info_system(capsys):
    code, out, _ = _run(capsys, "info", "--system")
    assert code == 0 and "cpu_int8_dynamic" in out and "triton" in out
    code, out, _ = _run(capsys, "info", "--system", "--json")
    assert code == 0 and "cpu_features" in json.loads(out)


@pytest.mark.parametrize("make, argv, match", [
    (None, ["info", "{tmp}/none.safetensors"], "checkpoint .*none.safetensors does not exist"),
    ("truncated", ["info", "{tmp}/q.safetensors"], "q.safetensors is truncated"),
    ("corrupted", ["info", "{tmp}/q.safetensors"], "corrupted header"),
    (None, ["convert", "{model}", "{tmp}/blocker/out.safetensors"], "output directory .*blocker does not exist"),
    ("layers_unknown", ["convert", "{model}", "{tmp}/o.safetensors", "--config", "{tmp}/l.json"],
     "entry 'decoder.fc' matches no layer"),
    ("layers_bits", ["convert", "{model}", "{tmp}/o.safetensors", "--config", "{tmp}/l.json"],
     "entry 'fc' has bits=12, out of range"),
    (None, ["convert", "{model}", "{tmp}/o.safetensors", "--bits", "9"], "bits=9 is not supported"),
    (None, ["convert", "{model}", "{tmp}/o.safetensors", "--block", "20"], "block_size=20 is not supported"),
    (None, ["convert", "{model}", "{tmp}/o.safetensors", "--hqq", "--symmetric"], "HQQ optimises a zero"),
    (None, ["info"], "give a checkpoint file"),
    (None, ["convert", "{model}", "{tmp}/o.safetensors", "--skip", "fc", "decoder"],
     "skip pattern 'decoder' matches no tensor or layer"),
    ("layers_bias", ["convert", "{model}", "{tmp}/o.safetensors", "--config", "{tmp}/l.json"],
     "l.json: entry 'fc.bias' names only tensors that are never quantized"),
    ("layers_latin1", ["convert", "{model}", "{tmp}/o.safetensors", "--config", "{tmp}/l.json"],
     "overrides file .*l.json is not UTF-8 text"),
    ("bad_metadata", ["info", "{tmp}/q.safetensors"], "q.safetensors has a corrupted header: '__metadata__' must be"),
])
def test_errors_are_one_line_with_exit_1(tmp_path, capsys, model_file, make, argv, match):
    (tmp_path / "blocker").write_text("a file, not a directory")
    main(["convert", str(model_file), str(tmp_path / "q.safetensors"), "--quiet"])
    data = (tmp_path / "q.safetensors").read_bytes()
    if make == "truncated":
        (tmp_path / "q.safetensors").write_bytes(data[: len(data) // 2])
    elif make == "corrupted":
        (tmp_path / "q.safetensors").write_bytes(data[:8] + b"#" * 20 + data[28:])
    elif make == "layers_unknown":
        (tmp_path / "l.json").write_text(json.dumps({"layers": {"decoder.fc": {"bits": 4}}}))
    elif make == "layers_bits":
        (tmp_path / "l.json").write_text(json.dumps({"layers": {"fc": {"bits": 12}}}))
    elif make == "layers_bias":
        (tmp_path / "l.json").write_text(json.dumps({"layers": {"fc.bias": {"bits": 8}}}))
    elif make == "layers_latin1":
        (tmp_path / "l.json").write_bytes('{"layers": {"fc": {"bits": 8}}, "note": "café"}'.encode("latin-1"))
    elif make == "bad_metadata":
        header = b'{"__metadata__": {"lowbit": 7}, "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}'
        (tmp_path / "q.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(8))
    capsys.readouterr()
    code, out, err = _run(capsys, *[a.format(tmp=tmp_path, model=model_file) for a in argv])
    assert code == 1 and out == ""
    assert re.search(match, _one_error_line(err)), err
    assert not (tmp_path / "o.safetensors").exists()


@pytest.mark.parametrize("argv", [[], ["convert"], ["convert", "a"], ["info", "--nope"], ["frobnicate"]])
def test_usage_errors_exit_2(capsys, argv):
    code, out, err = _run(capsys, *argv)
    assert code == 2 and "usage: lowbit" in err and out == ""


def test_help_exits_0(capsys):
    for cmd in ("convert", "info", "validate", "bench", "demo"):
        code, out, _ = _run(capsys, cmd, "--help")
        assert code == 0 and f"usage: lowbit {cmd}" in out


def test_bench_missing_suite_is_a_clean_error(capsys, monkeypatch):
    real = importlib.import_module

    def fake_import(name, *a, **k):
        if name == "benchmarks.gemm_cpu":
            raise ModuleNotFoundError("No module named 'benchmarks.gemm_cpu'", name=name)
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake_import)
    code, _, err = _run(capsys, "bench", "--quick")
    assert code == 1 and "benchmarks.gemm_cpu is not available" in _one_error_line(err)


def test_bench_runs_the_suite(capsys, monkeypatch):
    import sys
    import types

    calls = []
    suite = types.ModuleType("benchmarks.gemm_cpu")
    suite.main = lambda argv: calls.append(argv) or ["row"]  # the real suite returns its rows
    monkeypatch.setitem(sys.modules, "benchmarks.gemm_cpu", suite)
    code, _, _ = _run(capsys, "bench", "--quick")
    assert code == 0 and calls == [["--quick", "--out", ""]]
    code, _, _ = _run(capsys, "bench", "--out", "results")
    assert code == 0 and calls[-1] == ["--out", "results"]
