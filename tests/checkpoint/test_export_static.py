"""Export of static int8 (W8A8) checkpoints (issue 26 item 1): refused unless weight-only is asked for; then the
SmoothQuant smoothing is folded back so the exported weights are the model's own, checked against the float model."""

import copy

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from lowbit.checkpoint import CheckpointError, export, open_checkpoint, save
from lowbit.checkpoint import compressed_tensors as ct
from lowbit.quant.static_config import StaticConfig
from lowbit.static.quantize import quantize_static


def _ct_weight(sd: dict, module: str, bits: int = 8) -> torch.Tensor:
    """Decode a symmetric per-channel pack-quantized weight with compressed-tensors' own unpack."""
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32

    shape = torch.Size(sd[f"{module}.weight_shape"].tolist())
    q = unpack_from_int32(sd[f"{module}.weight_packed"], bits, shape)
    return q.double() * sd[f"{module}.weight_scale"].double()


def _static_folder(tmp_path, smooth_alpha):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 32)).eval()
    float_model = copy.deepcopy(model)
    x = torch.randn(32, 64) * torch.linspace(0.1, 8.0, 64)  # uneven channels: smoothing has work to do
    quantize_static(model, [x[i:i + 8] for i in range(0, 32, 8)], StaticConfig(smooth_alpha=smooth_alpha),
                    progress=False)
    folder = tmp_path / f"static_{smooth_alpha}"
    folder.mkdir()
    save(model, folder / "model.safetensors")
    return folder, float_model


@pytest.mark.parametrize("smooth_alpha", [0.75, None])
def test_static_checkpoint_is_refused_naming_what_would_be_dropped(tmp_path, smooth_alpha):
    folder, _ = _static_folder(tmp_path, smooth_alpha)
    smooth = "2 of them SmoothQuant-scaled" if smooth_alpha else "fixed steps;"
    with pytest.raises(CheckpointError, match=f"static int8 \\(W8A8\\).*2 layer\\(s\\).*{smooth}.*--weight-only"):
        export(folder, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_weight_only_folds_the_smoothing_back(tmp_path):
    pytest.importorskip("compressed_tensors")
    folder, float_model = _static_folder(tmp_path, 0.75)
    with pytest.raises(CheckpointError, match="SmoothQuant-scaled.*--requantize"):  # W*s folded back is no int8 grid
        export(folder, tmp_path / "out", weight_only=True, progress=False)
    summary = export(folder, tmp_path / "out", weight_only=True, requantize=True, progress=False)
    assert [p.action for p in summary.plans] == ["requantized", "requantized"]
    assert any("input steps of 2 layer(s) were dropped" in n and "smoothing of 2" in n for n in summary.notes)
    sd = load_file(tmp_path / "out" / "model.safetensors")
    ckpt = open_checkpoint(folder / "model.safetensors")
    plans = {p.name: p for p in summary.plans}
    for module in ("0", "2"):
        ref = float_model.get_submodule(module).weight.detach().double()
        got = _ct_weight(sd, module)
        stored = ckpt.quantized_weight(f"{module}.weight").dequantize().double()  # W*s, what was packed before
        smooth = torch.tensor(ckpt.body["static"]["layers"][module]["input_smooth"], dtype=torch.float64)
        lowbit_own = stored * smooth  # the weight lowbit's static layer applies
        assert float((got - ref).norm() / ref.norm()) < 0.05  # the model's own weight, int8 twice
        assert float((stored - ref).norm() / ref.norm()) > 0.3  # what the unfixed export wrote
        assert plans[f"{module}.weight"].rel_error == pytest.approx(
            float((got - lowbit_own).norm() / lowbit_own.norm()), rel=1e-6)  # the reported added error
        assert torch.equal(sd[f"{module}.bias"], float_model.get_submodule(module).bias.detach())


def test_weight_only_without_smoothing_packs_as_is(tmp_path):
    pytest.importorskip("compressed_tensors")
    folder, float_model = _static_folder(tmp_path, None)
    summary = export(folder, tmp_path / "out", weight_only=True, progress=False)
    assert [p.action for p in summary.plans] == ["packed", "packed"]
    assert summary.quantization_config["config_groups"]["group_0"]["weights"] == ct.weights_args(8, -1, True)
    sd = load_file(tmp_path / "out" / "model.safetensors")
    ref = float_model[0].weight.detach().double()
    assert float((_ct_weight(sd, "0") - ref).norm() / ref.norm()) < 0.01
