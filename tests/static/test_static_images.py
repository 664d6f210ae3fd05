"""Calibration images with MNN's preprocessing fields (lowbit.static.images) and `lowbit quant` on an image folder.
Needs Pillow (the `images` extra, installed by `make setup`)."""

import json

import numpy as np
import pytest
import torch
from torch import nn

import lowbit
from lowbit.cli import main
from lowbit.static.images import load_images

Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed: pip install -e '.[images]'")


def _write(folder, n=3, size=(5, 4), mode="RGB", seed=0):
    """n random images of `size` (width, height); returns their pixel arrays (H, W, C) in file order."""
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = []
    for i in range(n):
        shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
        a = rng.integers(0, 256, shape, dtype=np.uint8)
        Image.fromarray(a, mode).save(folder / f"img{i}.png")
        arrays.append(a.astype(np.float64))
    return arrays


def test_rgb_bgr_mean_normal_batches(tmp_path):
    arrays = _write(tmp_path / "rgb")
    mean, normal = [10.0, 20.0, 30.0], [0.5, 0.25, 0.125]
    batches = load_images(tmp_path / "rgb", {"format": "BGR", "mean": mean, "normal": normal, "width": 5,
                                             "height": 4}, batch_size=2)
    assert [tuple(b.shape) for b in batches] == [(2, 3, 4, 5), (1, 3, 4, 5)] and batches[0].dtype == torch.float32
    got = torch.cat(batches).double()
    for i, a in enumerate(arrays):
        bgr = a[..., ::-1]
        ref = ((bgr - np.array(mean)) * np.array(normal)).transpose(2, 0, 1)
        np.testing.assert_allclose(got[i].numpy(), ref, rtol=0, atol=1e-5)
    rgb = load_images(tmp_path / "rgb", {"format": "RGB", "width": 5, "height": 4}, limit=1)
    np.testing.assert_array_equal(rgb[0][0].numpy(), arrays[0].transpose(2, 0, 1))


def test_gray_resize_and_errors(tmp_path):
    arrays = _write(tmp_path / "gray", n=2, size=(8, 6), mode="L")
    batches = load_images(tmp_path / "gray", {"format": "GRAY", "mean": 128, "normal": 1 / 128, "width": 8,
                                              "height": 6})
    np.testing.assert_allclose(batches[0][0, 0].numpy(), (arrays[0] - 128) / 128, atol=1e-6)
    small = load_images(tmp_path / "gray", {"format": "GRAY", "width": 4, "height": 3})
    assert tuple(small[0].shape) == (1, 1, 3, 4)
    with pytest.raises(ValueError, match="format 'YUV'"):
        load_images(tmp_path / "gray", {"format": "YUV", "width": 4, "height": 3})
    with pytest.raises(ValueError, match="'width' and 'height'"):
        load_images(tmp_path / "gray", {"format": "GRAY"})
    with pytest.raises(ValueError, match="needs 3 values"):
        load_images(tmp_path / "gray", {"format": "RGB", "mean": [1, 2], "width": 4, "height": 3})


def image_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 4)).eval()


def test_quant_cli_on_an_image_folder(tmp_path, capsys):
    _write(tmp_path / "imgs", n=4, size=(12, 10))
    cfg = tmp_path / "quant.json"
    cfg.write_text(json.dumps({"format": "RGB", "mean": [127.5] * 3, "normal": [1 / 127.5] * 3, "width": 16,
                               "height": 16, "feature_quantize_method": "KL", "batch_size": 2,
                               "used_sample_num": 4}))
    out = tmp_path / "m.safetensors"
    rc = main(["quant", "--model", "test_static_images:image_model", "--calib", str(tmp_path / "imgs"),
               "--config", str(cfg), "--quiet", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert "2 layers int8" in capsys.readouterr().out
    model = lowbit.load(image_model(), out)
    assert type(model[0]).__name__ == "StaticQuantConv2d" and model[0].fused_relu
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    ref = image_model()(x)
    assert torch.nn.functional.cosine_similarity(model(x).flatten(), ref.flatten(), 0) > 0.99
