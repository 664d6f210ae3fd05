"""Calibration images with MNN's preprocessing fields (format RGB/BGR/GRAY, mean, normal, width, height).

Each image becomes a float tensor (C, height, width) = (pixel - mean) * normal per channel, batched `batch_size` at a
time into (B, C, H, W) items. Needs Pillow (`pip install pillow`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MAX_SIDE = 16384  # pixels per side of the preprocessed image (width, height fields)
MAX_PIXELS = 1 << 25  # pixels per image, in the file and after resizing (33.5M: 400 MB as float32 RGB)


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _channels(value, n: int, name: str) -> np.ndarray:
    try:
        v = np.asarray(value if isinstance(value, (list, tuple)) else [value] * n, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError(f"image field {name!r}={value!r} must be a number or a list of {n} numbers") from None
    if v.shape != (n,):
        raise ValueError(f"image field {name!r}={value!r} needs {n} values for this format")
    if not np.isfinite(v).all():
        raise ValueError(f"image field {name!r}={value!r} must be finite")
    return v


def check_image_fields(fields: dict) -> tuple[str, int, int]:
    """(format, width, height) of MNN's image fields: width and height plain ints in 1..MAX_SIDE (a float such as
    16.9 is refused, never truncated), at most MAX_PIXELS per image."""
    fmt = str(fields.get("format", "RGB")).upper()
    if fmt not in ("RGB", "BGR", "GRAY"):
        raise ValueError(f"image format {fmt!r} is not one of RGB, BGR, GRAY")
    if "width" not in fields or "height" not in fields:
        raise ValueError("calibration images need 'width' and 'height' in the config")
    for key in ("width", "height"):
        v = fields[key]
        if type(v) is not int or not 1 <= v <= MAX_SIDE:
            raise ValueError(f"image field {key!r}={v!r} must be a whole number of pixels in 1..{MAX_SIDE}")
    if fields["width"] * fields["height"] > MAX_PIXELS:
        raise ValueError(f"image size {fields['width']}x{fields['height']} is more than {MAX_PIXELS} pixels per "
                         "image; give the size the model takes")
    return fmt, fields["width"], fields["height"]


def _open(f: Path, mode: str, size: tuple[int, int]):
    """One image converted and resized; a file that is no image, or whose own size is a decompression bomb, is a
    ValueError naming it (the size is read from the header before any pixel is decoded)."""
    from PIL import Image

    try:
        with Image.open(f) as img:
            if img.size[0] * img.size[1] > MAX_PIXELS:
                raise ValueError(f"it is {img.size[0]}x{img.size[1]} pixels, more than {MAX_PIXELS}")
            return img.convert(mode).resize(size)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"calibration image {f} cannot be used: {' '.join(str(e).split())[:200]}") from None


def load_images(folder: Path, fields: dict, batch_size: int = 1, limit: int | None = None) -> list[torch.Tensor]:
    """Batches (B, C, H, W) float32 of the images in `folder` preprocessed as MNN's quantization JSON says."""
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise ImportError("calibration images need Pillow: pip install pillow (or pass a folder of .pt/.npy "
                          "tensors)") from None
    fmt, width, height = check_image_fields(fields)
    n = 1 if fmt == "GRAY" else 3
    mean, normal = _channels(fields.get("mean", 0.0), n, "mean"), _channels(fields.get("normal", 1.0), n, "normal")
    files = image_files(folder)[:limit]
    tensors = []
    for f in files:
        img = _open(f, "L" if fmt == "GRAY" else "RGB", (width, height))
        a = np.asarray(img, dtype=np.float32).reshape(img.size[1], img.size[0], n)
        if fmt == "BGR":
            a = a[..., ::-1]
        tensors.append(torch.from_numpy(((a - mean) * normal).transpose(2, 0, 1).copy()))
    return [torch.stack(tensors[i:i + batch_size]) for i in range(0, len(tensors), batch_size)]
