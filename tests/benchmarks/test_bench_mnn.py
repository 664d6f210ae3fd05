"""benchmarks.mnn end to end on one tiny Linear: ONNX export, MNN conversion, MNN at memory Low vs float64."""

from __future__ import annotations

import pytest
import torch

from benchmarks import mnn

needs_mnn = pytest.mark.skipif(mnn.mnn_version() is None,
                               reason="MNN is not installed (optional extra: pip install 'lowbit[mnn]')")


@pytest.fixture(scope="module")
def weight() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(96, 256, generator=gen) / 16  # N=96 out, K=256 in: two blocks of 128 per row


@needs_mnn
@pytest.mark.parametrize("bits,block,lo,hi", [(4, 128, 0.03, 0.2), (8, -1, 1e-3, 0.03)])
@pytest.mark.parametrize("precision", ["normal", "low"])
def test_mnn_linear_matches_float64(tmp_path, weight, bits, block, lo, hi, precision):
    mnn.export_onnx(weight, tmp_path / "lin.onnx")
    path = tmp_path / f"lin_w{bits}.mnn"
    mnn.convert_mnn(tmp_path / "lin.onnx", path, bits, block)
    assert path.stat().st_size < weight.numel() * bits / 8 * 1.5  # the weights were stored quantized
    layer = mnn.MnnLinear(path, precision)
    gen = torch.Generator().manual_seed(1)
    for m in (1, 5):
        x = torch.randn(m, 256, generator=gen)
        y = layer(x)
        assert y.shape == (m, 96) and y.dtype == torch.float32
        err = mnn.rel_err(x.double() @ weight.double().T, y)
        # above lo: MNN really quantized to `bits`; below hi: its output is right
        assert lo < err < hi, f"relative error {err:.4f} outside ({lo}, {hi})"


@needs_mnn
def test_suite_checks_and_times_every_method(weight):
    rows = mnn.run_suite(shapes=((256, 96),), ms=(3,), rounds=1)
    names = [r.values["method"] for r in rows]
    assert {"torch fp32", "lowbit int4 b128 Low/normal", "MNN int4 b128 Low/low", "MNN int8 pc Low/normal"} <= set(
        names)
    for r in rows:
        v = r.values
        assert v["ms"] > 0 and v["rel err"] < (1e-5 if v["method"] == "torch fp32" else 0.2), v
        if v["method"].startswith("lowbit"):
            assert v["x MNN"] > 0, v  # its MNN peer (same format and precision) was timed too


@needs_mnn
def test_convert_failure_names_the_file(tmp_path):
    bad = tmp_path / "not_a_model.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(RuntimeError, match="not_a_model.onnx"):
        mnn.convert_mnn(bad, tmp_path / "out.mnn", 4, 128)
    assert list(tmp_path.iterdir()) == [bad]  # nothing half-written left behind


@needs_mnn
def test_bad_precision_is_named(tmp_path, weight):
    mnn.export_onnx(weight, tmp_path / "lin.onnx")
    mnn.convert_mnn(tmp_path / "lin.onnx", tmp_path / "lin.mnn", 8, -1)
    with pytest.raises(ValueError, match="precision='fast'"):
        mnn.MnnLinear(tmp_path / "lin.mnn", "fast")


def test_without_mnn_the_suite_says_so_and_exits_0(monkeypatch, capsys):
    monkeypatch.setattr(mnn, "mnn_version", lambda: None)
    assert mnn.main(["--out", ""]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "MNN is not installed" in out[0]
