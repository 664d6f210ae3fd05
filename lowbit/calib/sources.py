"""Calibration sources: what a model is run on to see its activations.

An item is one model call. A tuple is unpacked as positional arguments, a dict as keyword arguments, anything else
(a tensor, a string, a list) is the one argument; wrap a dict in a 1-tuple to pass it whole (`(features,)`).
Sources (`as_calibration`):
  - any iterable of items (a list, a generator, a DataLoader);
  - a folder (str or Path) of `.pt` / `.npy` / `.safetensors` files, one item per file in name order: `.pt` holds an
    item (tensor, tuple or dict), `.npy` one array, `.safetensors` one tensor (the one argument), tensors named
    "0", "1", ... (positional arguments) or other names (keyword arguments);
  - "module:function", a function called with no arguments that returns an iterable of items;
  - a `CalibrationSet` (returned as is, or cut to `limit`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..models.resolve import find_function

FILE_SUFFIXES = (".pt", ".npy", ".safetensors")


@dataclass(frozen=True)
class Item:
    """One model call: model(*args, **kwargs)."""

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    @classmethod
    def of(cls, value) -> Item:
        """The item for a source value: tuple -> positional args, dict -> kwargs, else one argument."""
        if isinstance(value, Item):
            return value
        if isinstance(value, tuple):
            return cls(value, {})
        if isinstance(value, dict):
            return cls((), dict(value))
        return cls((value,), {})

    def fresh(self) -> tuple[tuple, dict]:
        """(args, kwargs) with dicts shallow-copied: some models (sentence-transformers) add keys to their input."""
        args = tuple(dict(a) if isinstance(a, Mapping) else a for a in self.args)
        return args, dict(self.kwargs)

    def describe(self) -> str:
        """A short description naming shapes, for error messages."""
        parts = [_describe_value(a) for a in self.args]
        parts += [f"{k}={_describe_value(v)}" for k, v in self.kwargs.items()]
        return "(" + ", ".join(parts) + ")"


def _describe_value(v) -> str:
    if isinstance(v, torch.Tensor):
        return f"Tensor{tuple(v.shape)} {str(v.dtype).removeprefix('torch.')}"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k}: {_describe_value(x)}" for k, x in list(v.items())[:6]) + "}"
    if isinstance(v, (list, tuple)):
        return f"{type(v).__name__}[{len(v)}]"
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


class CalibrationSet:
    """A re-iterable, finite sequence of `Item`s (each pass of the quantizer iterates it once).

    Built by `as_calibration`; `len()` is the number of items (model calls), `source` says where they came from.
    A folder's files are read lazily on every pass, so only one item is in memory at a time.
    """

    def __init__(self, items: list, source: str, loader=None, mask_fn=None):
        self._items, self.source, self._loader = items, source, loader
        self.mask_fn = mask_fn  # mask_fn(*args, **kwargs) -> bool (batch, seq) of real positions (lowbit.calib.mask)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Item]:
        for entry in self._items:
            yield Item.of(self._loader(entry) if self._loader else entry)

    def limited(self, limit: int | None) -> CalibrationSet:
        """The first `limit` items (all when None)."""
        if limit is None or limit >= len(self):
            return self
        return CalibrationSet(self._items[:limit], f"{self.source} (first {limit})", self._loader, self.mask_fn)


def _check_limit(limit) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit={limit!r} must be a positive int (the number of calibration items) or None")


def as_calibration(source, limit: int | None = None, mask_fn=None) -> CalibrationSet:
    """A `CalibrationSet` from any supported source (see the module docstring), holding at most `limit` items.

    mask_fn(*args, **kwargs) -> bool (batch, seq) tensor of the real (unpadded) positions of an item, for inputs
    whose padding is not marked by an `attention_mask` (see lowbit.calib.mask); it replaces the set's own.

    Raises ValueError for an empty source or a folder without tensor files, FileNotFoundError for a missing path,
    ValueError for a "module:function" that cannot be resolved (`lowbit.models.resolve.find_function`) and
    RuntimeError when the function raises.
    """
    _check_limit(limit)
    if isinstance(source, CalibrationSet):
        cal = source.limited(limit)
    elif isinstance(source, (str, Path)) and _is_function_spec(source):
        items = _take(_call_function(str(source)), limit)
        cal = CalibrationSet(items, f"function {source}")
    elif isinstance(source, (str, Path)):
        cal = _folder(Path(source), limit)
    elif isinstance(source, (torch.Tensor, dict, tuple)):
        raise TypeError(f"calibration must be an iterable of model inputs, not one {type(source).__name__}: pass a "
                        "list of inputs (e.g. [x] for one batch, [(x, mask)] for positional args)")
    elif isinstance(source, Iterable):
        cal = CalibrationSet(_take(source, limit), f"{type(source).__name__} of inputs")
    else:
        raise TypeError(f"calibration source {source!r} is not supported: use an iterable of inputs, a folder of "
                        f"{'/'.join(FILE_SUFFIXES)} files or 'module:function'")
    if len(cal) == 0:
        raise ValueError(f"calibration source {cal.source} is empty: it yielded no inputs")
    if mask_fn is not None:
        if not callable(mask_fn):
            raise TypeError(f"mask_fn must be callable (inputs -> bool (batch, seq) tensor), got {mask_fn!r}")
        cal = CalibrationSet(cal._items, cal.source, cal._loader, mask_fn)
    return cal


def _take(iterable: Iterable, limit: int | None) -> list:
    items = []
    for value in iterable:
        if limit is not None and len(items) >= limit:
            break
        items.append(value)
    return items


def _is_function_spec(source) -> bool:
    text = str(source)
    if ":" not in text or Path(text).exists():
        return False
    module, _, func = text.partition(":")
    return bool(module) and func.isidentifier() and all(p.isidentifier() for p in module.split("."))


def _call_function(spec: str):
    """The items of a calibration MODULE:FUNCTION, resolved as every command resolves a model's
    (`lowbit.models.resolve.find_function`: one-line ValueErrors naming the spec)."""
    func = find_function(spec, what="calibration function")
    try:
        out = func()
    except Exception as e:
        raise RuntimeError(f"calibration function {spec!r} raised {type(e).__name__}: {e}") from e
    if not isinstance(out, Iterable) or isinstance(out, (torch.Tensor, dict, str)):
        raise TypeError(f"calibration function {spec!r} must return an iterable of inputs, got {type(out).__name__}")
    return out


def _folder(path: Path, limit: int | None) -> CalibrationSet:
    if not path.exists():
        raise FileNotFoundError(f"calibration folder {path} does not exist")
    if not path.is_dir():
        raise ValueError(f"calibration source {path} is not a folder (nor 'module:function'); put one "
                         f"{'/'.join(FILE_SUFFIXES)} file per input in a folder")
    files = sorted(p for p in path.iterdir() if p.suffix in FILE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"calibration folder {path} has no {'/'.join(FILE_SUFFIXES)} files")
    return CalibrationSet(files[:limit] if limit else files, f"folder {path}", load_file)


def load_file(path: Path):
    """One item from a .pt / .npy / .safetensors file (see the module docstring); a file that cannot be read as
    tensors is a ValueError naming it."""
    try:
        if path.suffix == ".npy":
            # mapped, then copied: a header claiming more than the file holds fails instead of allocating it
            return torch.from_numpy(np.array(np.load(path, mmap_mode="r", allow_pickle=False)))
        if path.suffix == ".safetensors":
            return _safetensors_item(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # numpy, safetensors (SafetensorError) and torch (UnpicklingError...) each raise their own
        detail = " ".join(str(e).split())[:200] or type(e).__name__
        raise ValueError(f"calibration file {path} cannot be read as tensors: {detail}") from None


def _safetensors_item(path: Path):
    from safetensors.torch import load_file as load_st

    tensors = load_st(str(path))
    if len(tensors) == 1:
        return next(iter(tensors.values()))
    if all(k.isdigit() for k in tensors):
        return tuple(tensors[k] for k in sorted(tensors, key=int))
    return dict(tensors)
