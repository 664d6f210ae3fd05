"""benchmarks.gemm_cpu_int8 on one tiny shape: every callable checked and timed, lowbit through the native kernel,
and an earlier run's ratios merged row by row."""

from __future__ import annotations

import json
import math

import torch
from native_marks import needs_native

from benchmarks import gemm_cpu_int8
from benchmarks.harness import Row


@needs_native
def test_rows_time_every_callable_through_the_native_kernel():
    rows = gemm_cpu_int8.shape_rows(256, 48, (1, 5), rounds=1, threads=1, precision="normal",
                                    gen=torch.Generator().manual_seed(0))
    assert [(r.values["M"], r.values["K"], r.values["N"]) for r in rows] == [(1, 256, 48), (5, 256, 48)]
    for r in rows:
        v = r.values
        for label, _ in gemm_cpu_int8.FORMATS:
            assert v[f"{label} kernel"] == "CPU_INT4"  # memory Low serves 8-bit weights natively
            assert v[f"{label} ms"] > 0
            assert math.isclose(v[f"{label} x dyn8"], v["dyn8 ms"] / v[f"{label} ms"])
            assert v[f"sqnr {label}"] > 35  # int8 activations per 32 channels on an int8 weight
        assert v["sqnr torch dyn int8"] > gemm_cpu_int8.MIN_SQNR_DB


def test_before_columns_match_rows_by_shape_m_and_threads(tmp_path):
    keys = {"K": 64, "N": 32, "threads": 1}
    before = [{**keys, "M": 1, "int8 pc x dyn8": 0.5, "int8 b128 x dyn8": 0.25}]
    path = tmp_path / "before.json"
    path.write_text(json.dumps({"env": {}, "rows": before}))
    rows = [Row({**keys, "M": 1}), Row({**keys, "M": 8})]
    gemm_cpu_int8.add_before(rows, str(path))
    assert rows[0].values["int8 pc x dyn8 before"] == 0.5 and rows[0].values["int8 b128 x dyn8 before"] == 0.25
    assert math.isnan(rows[1].values["int8 pc x dyn8 before"])  # no earlier row for M = 8
