"""The llm_overhead bench on the tiny model: its kernel clock counts every Linear call of a decode step (7 per block
plus lm_head; 4 per block plus lm_head once fused) and the breakdown adds up."""

import json

import pytest
import torch

pytest.importorskip("transformers")

from benchmarks import llm_overhead  # noqa: E402


def test_tiny_breakdown(tmp_path):
    threads = torch.get_num_threads()
    try:
        args = ["--shape", "tiny", "--layers", "2", "--tokens", "4", "--reps", "1", "--settings", "eager", "+static",
                "--out", str(tmp_path), "--name", "t"]
        assert llm_overhead.main(args) == 0
    finally:
        torch.set_num_threads(threads)
    rows = {(r["twin"], r["setting"]): r for r in json.loads((tmp_path / "t.json").read_text())["rows"]}
    assert len(rows) == 10
    for setting in ("eager", "+static"):
        assert rows[("int4-b128", setting)]["calls"] == 2 * 7 + 1
        assert rows[("int4-b128 fused", setting)]["calls"] == rows[("int4-b128 prepared", setting)]["calls"] == 9
        for twin in ("int4-b128", "int4-b128 fused", "int4-b128 prepared"):
            r = rows[(twin, setting)]
            assert 0 < r["kernel ms"] < r["cpu ms"]
            assert r["linear overhead ms"] == pytest.approx(r["cpu ms"] - r["kernel ms"] - r["non-linear ms"])
            assert 0 < r["in-call ms"] < r["cpu ms"] - r["kernel ms"]
            assert r["rest ms"] == pytest.approx(r["cpu ms"] - r["kernel ms"] - r["in-call ms"])
        assert rows[("no-linears", setting)]["calls"] is None and rows[("no-linears", setting)]["aten ops"] > 0
