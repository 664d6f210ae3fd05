"""The cross-domain bench's machinery on a tiny configuration (RTN, 4 sentences), so it keeps running."""

import json

import pytest
import torch
from conftest import has_minilm

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not has_minilm(), reason="needs the bundled MiniLM package")]


def test_xdomain_tiny_run_writes_every_cell(tmp_path):
    from benchmarks import xdomain
    from lowbit.models import embed
    from lowbit.quant import quantize_weight
    from lowbit.quant.config import QuantConfig

    threads = torch.get_num_threads()
    try:
        setup = xdomain.build_setup(n_calib=4, n_eval=4)
        rows = xdomain.run([xdomain.Recipe("rtn", 4)], peers=False, out_dir=str(tmp_path), name="tiny", setup=setup)
    finally:
        torch.set_num_threads(threads)
    (row,) = rows
    cells = {k: v for k, v in row.values.items() if k.endswith((" min", " mean"))}
    assert set(cells) == set(xdomain.cell_names(setup)) and len(cells) == 8
    assert all(0.9 < v <= 1.0 for v in cells.values())
    assert row.values["worst"] == min(v for k, v in cells.items() if k.endswith(" min"))
    # independent reference for memory normal: each Linear's weight replaced by its dequantized RTN weight
    model = setup.model
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.copy_(quantize_weight(m.weight, QuantConfig(bits=4, block_size=64)).dequantize())
    cos = (embed(model, setup.evals["varied"]) * setup.refs["varied"]).sum(-1)
    assert abs(cos.min().item() - cells["varied normal min"]) < 2e-4
    saved = json.loads((tmp_path / "tiny.json").read_text())
    assert saved["env"]["commit"] and saved["rows"][0]["method"] == "rtn"
    worst = json.loads((tmp_path / "tiny_worst.json").read_text())["rows"][0]
    assert worst["worst cell"] == row.values["worst"] and worst["where"].startswith("none: ")
    # a run split in parts merges into one table; a row measured twice is kept once
    merged = xdomain.merge(["tiny", "tiny"], out_dir=str(tmp_path), name="merged")
    assert [r.values for r in merged] == saved["rows"]
    assert "Merged from 2 runs" in (tmp_path / "merged.md").read_text()


def test_methods_filter_names_the_labels():
    from benchmarks.xdomain import main

    with pytest.raises(ValueError, match="labels .*'recon'"):
        main(["--methods", "adaround", "--fields", '{"recon_init": "rtn"}', "--out", ""])
