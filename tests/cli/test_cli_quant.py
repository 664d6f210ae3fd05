"""`lowbit quant`: MNN-style config, a folder of .pt calibration tensors, checkpoint written and loadable."""

import json

import torch
from torch import nn

import lowbit
from lowbit.cli import main


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(4, 8, 3, padding=1), nn.BatchNorm1d(8), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 6, 3)).eval()


def test_quant_cli_end_to_end(tmp_path, capsys):
    calib = tmp_path / "calib"
    calib.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(3):
        torch.save(torch.randn(2, 4, 6, generator=g), calib / f"{i}.pt")
    cfg = tmp_path / "quant.json"
    cfg.write_text(json.dumps({"feature_quantize_method": "EMA", "weight_quantize_method": "ADMM",
                               "used_sample_num": 2, "skip_quant_op_names": ["4"], "debug": True}))
    out = tmp_path / "m.safetensors"
    rc = main(["quant", "--model", "test_cli_quant:tiny_model", "--calib", str(calib), "--config", str(cfg),
               "--quiet", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "1 layers int8, 1 kept float, 1 BatchNorm folded" in text and "cosine" in text
    model = lowbit.load(tiny_model(), out)
    assert type(model[0]).__name__ == "StaticQuantConv1d" and isinstance(model[4], nn.Linear)
    x = torch.randn(5, 4, 6, generator=g)
    ref = tiny_model()(x)
    assert torch.nn.functional.cosine_similarity(model(x).flatten(), ref.flatten(), 0) > 0.999


def test_quant_cli_errors_write_nothing(tmp_path, capsys):
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps({"feature_quantize_method": "KL", "unknown_field": 1}))
    out = tmp_path / "m.safetensors"
    data = tmp_path / "data"  # not tmp_path: an output inside the calibration folder is refused
    data.mkdir()
    rc = main(["quant", "--model", "test_cli_quant:tiny_model", "--calib", str(data), "--config", str(cfg),
               str(out)])
    assert rc == 1 and "unknown quantization config field 'unknown_field'" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["quant", "--model", "test_cli_quant:tiny_model", "--calib", str(empty), "--quiet", str(out)])
    assert rc == 1 and not out.exists()
    assert "lowbit: error:" in capsys.readouterr().err
