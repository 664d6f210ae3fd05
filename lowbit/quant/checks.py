"""Checks on user input and on stored packed weights; every failure is a ValueError/TypeError naming the problem."""

from __future__ import annotations

import torch

from .config import FLOAT_BITS
from .format import FORMAT_NAME as _FORMAT_NAME
from .format import FORMAT_VERSION as _FORMAT_VERSION

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def check_float_weight(w: torch.Tensor, name: str = "weight") -> None:
    """A weight to quantize: a non-empty floating tensor of rank >= 2 with only finite values."""
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(w).__name__}")
    if not w.is_floating_point():
        raise TypeError(f"{name} has dtype {w.dtype}; only floating-point weights can be quantized")
    if w.dim() < 2:
        raise ValueError(f"{name} has shape {tuple(w.shape)}: expected rank >= 2 (N, K, ...)")
    if w.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(w.shape)})")
    if w.device.type == "meta":
        raise ValueError(f"{name} is on the meta device and has no values to quantize")
    finite = torch.isfinite(w)
    if not bool(finite.all()):
        bad = (~finite).nonzero()[0].tolist()
        raise ValueError(f"{name} contains NaN or inf (first at index {tuple(bad)}, value {w[tuple(bad)].item()})")


def check_metadata(meta: dict) -> dict:
    """Validate a `QuantizedWeight.metadata()` dict; return the constructor fields."""
    if meta.get("format") != _FORMAT_NAME:
        raise ValueError(f"not a lowbit packed weight: format {meta.get('format')!r}, expected {_FORMAT_NAME!r}")
    version = meta.get("version")
    if not isinstance(version, int) or version > _FORMAT_VERSION:
        raise ValueError(
            f"packed-weight format version {version!r} is newer than this lowbit reads ({_FORMAT_VERSION})")
    try:
        shape = tuple(int(d) for d in meta["shape"])
        dtype = _DTYPES[meta["dtype"]]
        bits, block, sym, method = int(meta["bits"]), int(meta["block_size"]), bool(meta["symmetric"]), meta["method"]
    except KeyError as e:
        raise ValueError(f"packed-weight metadata is missing or has a bad value for {e}") from None
    if len(shape) < 2 or min(shape) <= 0:
        raise ValueError(f"packed-weight metadata has an invalid shape {shape}")
    if not (2 <= bits <= 8 or bits == FLOAT_BITS):
        raise ValueError(f"packed-weight metadata has bits={bits}; expected 2..8 or 16")
    if block != -1 and block <= 0:
        raise ValueError(f"packed-weight metadata has block_size={block}; expected -1 or a positive int")
    return dict(shape=shape, dtype=dtype, bits=bits, block_size=block, symmetric=sym, method=method)


def check_tensor_shapes(qw) -> None:
    """The tensors of a rebuilt QuantizedWeight must match its metadata exactly."""
    expected = qw.expected_shapes()
    present = qw.tensors()
    for name, shape in expected.items():
        if name not in present:
            raise ValueError(f"packed weight is missing its {name!r} tensor")
        if tuple(present[name].shape) != shape:
            raise ValueError(f"packed weight {name!r} has shape {tuple(present[name].shape)}, metadata implies {shape}")
    extra = sorted(set(present) - set(expected))
    if extra:
        raise ValueError(f"packed weight has tensors {extra} that its metadata does not use")
    want = torch.float16 if qw.is_float else torch.uint8
    if present["packed"].dtype != want:
        raise ValueError(f"packed weight 'packed' has dtype {present['packed'].dtype}, expected {want}")
    for name in ("scale", "zero"):
        if name in present and present[name].dtype not in (torch.float16, torch.float32):
            raise ValueError(f"packed weight {name!r} has dtype {present[name].dtype}, expected float16 or float32")
