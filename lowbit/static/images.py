"""Calibration images with MNN's preprocessing fields (format RGB/BGR/GRAY, mean, normal, width, height).

Each image becomes a float tensor (C, height, width) = (pixel - mean) * normal per channel, batched `batch_size` at a
time into (B, C, H, W) items. Needs Pillow (`pip install pillow`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _channels(value, n: int, name: str) -> np.ndarray:
    v = np.asarray(value if isinstance(value, (list, tuple)) else [value] * n, dtype=np.float32)
    if v.shape != (n,):
        raise ValueError(f"image field {name!r}={value!r} needs {n} values for this format")
    return v


def load_images(folder: Path, fields: dict, batch_size: int = 1, limit: int | None = None) -> list[torch.Tensor]:
    """Batches (B, C, H, W) float32 of the images in `folder` preprocessed as MNN's quantization JSON says."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("calibration images need Pillow: pip install pillow (or pass a folder of .pt/.npy "
                          "tensors)") from None
    fmt = str(fields.get("format", "RGB")).upper()
    if fmt not in ("RGB", "BGR", "GRAY"):
        raise ValueError(f"image format {fmt!r} is not one of RGB, BGR, GRAY")
    if "width" not in fields or "height" not in fields:
        raise ValueError("calibration images need 'width' and 'height' in the config")
    n = 1 if fmt == "GRAY" else 3
    mean, normal = _channels(fields.get("mean", 0.0), n, "mean"), _channels(fields.get("normal", 1.0), n, "normal")
    files = image_files(folder)[:limit]
    tensors = []
    for f in files:
        img = Image.open(f).convert("L" if fmt == "GRAY" else "RGB").resize((int(fields["width"]),
                                                                            int(fields["height"])))
        a = np.asarray(img, dtype=np.float32).reshape(img.size[1], img.size[0], n)
        if fmt == "BGR":
            a = a[..., ::-1]
        tensors.append(torch.from_numpy(((a - mean) * normal).transpose(2, 0, 1).copy()))
    return [torch.stack(tensors[i:i + batch_size]) for i in range(0, len(tensors), batch_size)]
