"""Packed-weight formats as plug-ins: the contract every packed weight keeps, and the registry of formats.

A format is one way of storing a compressed weight: the affine codes with scales and zeros of `QuantizedWeight`
("affine"), a codebook, a vector format. nn, runtime and checkpoint handle a packed weight through `PackedWeight`
only and find the code of a stored one through its format's `FormatSpec`, so a new format is one module (or folder):
its weight class, its quantizer, a reference kernel, and one `register_format(FormatSpec(...))`. Which packed
kernels read a format is said by the kernels (a kernel row names the formats it reads, matched against
`weight.format`); every format is served by DENSE and EMULATED through its own `dequantize`.

This module imports nothing from lowbit: `format.py` registers the affine format when `lowbit.quant` is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from ..plugins import load_plugins

AFFINE = "affine"


@runtime_checkable
class PackedWeight(Protocol):
    """What nn, runtime and checkpoint may rely on for a packed weight of any format.

    format: its registered format name (`format_for(w.format)`); shape: the original weight shape (N, ...), whose
    2-D view is (N, K = prod(shape[1:])) with input channels flattened row-major (as `F.unfold` lays out patches);
    dtype: the original floating dtype; bits: stored bits per weight element (reports); nbytes: the bytes of
    `tensors()`.
    dequantize(dtype=None): the float weight in `shape`, in `dtype` (default: `dtype`), a tensor the caller may keep.
    tensors(): {field: tensor}, every tensor the weight is made of, all on one device; a parameter P of a layer holds
    field f as buffer `P_f` and a checkpoint stores it as tensor `<param>_f`.
    metadata(): a JSON-ready dict with at least "format" (its spec's `tag`), "shape" (a list) and "dtype" (a torch
    dtype name); with `tensors()` it is everything its spec's `from_tensors` needs.
    to(device): the same weight with every tensor on `device`.
    """

    @property
    def format(self) -> str: ...

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def bits(self) -> int: ...

    @property
    def nbytes(self) -> int: ...

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor: ...

    def tensors(self) -> dict[str, torch.Tensor]: ...

    def metadata(self) -> dict: ...

    def to(self, device) -> PackedWeight: ...


# {field: (shape, allowed dtypes)} of the tensors a weight with some metadata is stored as
TensorSpecs = dict[str, tuple[tuple[int, ...], tuple[torch.dtype, ...]]]


@dataclass(frozen=True)
class FormatSpec:
    """One registered format.

    name: the name weights carry (`PackedWeight.format`) and kernel rows read; tag: what `metadata()["format"]` holds
    in files (default: name; the affine format keeps its historical "lowbit.blocked").
    weight_type: the class of its packed weights (how nn and checkpoint recognise one).
    from_tensors(tensors, metadata) -> weight: rebuild a weight, ValueError naming what disagrees.
    expected_tensors(metadata) -> {field: (shape, allowed dtypes)}: the stored tensors, from the metadata alone (a
    checkpoint is checked against them before any tensor is read); ValueError naming a bad metadata value.
    check_values(tensors) -> None: optional check of stored numbers a forward would turn into NaN or inf (ValueError
    naming the field and the value); a checkpoint runs it when it is opened.
    """

    name: str
    weight_type: type
    from_tensors: Callable[[dict[str, torch.Tensor], dict], PackedWeight]
    expected_tensors: Callable[[dict], TensorSpecs]
    check_values: Callable[[dict[str, torch.Tensor]], None] | None = None
    tag: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a format needs a non-empty name, got {self.name!r}")
        if not isinstance(self.weight_type, type):
            raise TypeError(f"format {self.name!r}: weight_type must be a class, got {self.weight_type!r}")
        if not self.tag:
            object.__setattr__(self, "tag", self.name)


_BY_NAME: dict[str, FormatSpec] = {}
_BY_TAG: dict[str, FormatSpec] = {}


def register_format(spec: FormatSpec) -> FormatSpec:
    """Make `spec` known to nn, runtime and checkpoint; ValueError when its name, tag or weight class is taken by
    another format (registering the same spec again is a no-op). Returns the spec."""
    if not isinstance(spec, FormatSpec):
        raise TypeError(f"register_format takes a FormatSpec, got {type(spec).__name__}")
    if _BY_NAME.get(spec.name) == spec:
        return spec
    for other in _BY_NAME.values():
        if spec.name == other.name or spec.tag == other.tag or spec.weight_type is other.weight_type:
            raise ValueError(f"format {spec.name!r} (tag {spec.tag!r}, {spec.weight_type.__name__}) clashes with the "
                             f"registered format {other.name!r}; unregister_format({other.name!r}) first")
    _BY_NAME[spec.name] = spec
    _BY_TAG[spec.tag] = spec
    return spec


def unregister_format(name: str) -> None:
    """Forget format `name` (tests that register a toy format); the affine format cannot be removed."""
    if name == AFFINE:
        raise ValueError("the affine format is built in and cannot be unregistered")
    spec = _BY_NAME.pop(name, None)
    if spec is not None:
        _BY_TAG.pop(spec.tag, None)


def formats() -> tuple[str, ...]:
    """The registered format names, sorted."""
    return tuple(sorted(_BY_NAME))


def format_for(name: str) -> FormatSpec:
    """The spec of format `name`; ValueError naming the registered ones otherwise."""
    spec = _BY_NAME.get(name)
    if spec is None:
        load_plugins()
        spec = _BY_NAME.get(name)
    if spec is None:
        raise ValueError(f"unknown packed-weight format {name!r}; registered: {list(formats())}")
    return spec


def format_of_metadata(metadata: dict) -> FormatSpec:
    """The spec of a stored weight from its metadata's "format" tag; no tag is the affine format (files written
    before formats were plug-ins always carry one). ValueError naming an unknown tag."""
    tag = metadata.get("format") if isinstance(metadata, dict) else None
    if tag is None:
        return format_for(AFFINE)
    spec = _BY_TAG.get(tag) if isinstance(tag, str) else None
    if spec is None and isinstance(tag, str):
        load_plugins()
        spec = _BY_TAG.get(tag)
    if spec is None:
        known = sorted(_BY_TAG)
        raise ValueError(f"unknown packed-weight format {str(tag)[:40]!r} (this lowbit reads {known}; a format "
                         "added by a plug-in must be registered before loading: see lowbit.plugins)")
    return spec


def is_packed_weight(obj) -> bool:
    """True when `obj` is a weight of a registered format."""
    return any(isinstance(obj, spec.weight_type) for spec in _BY_NAME.values())


def rebuild(tensors: dict[str, torch.Tensor], metadata: dict) -> PackedWeight:
    """The packed weight these stored tensors and metadata describe, through its format's `from_tensors`."""
    return format_of_metadata(metadata).from_tensors(tensors, metadata)


def format_refusal(weight, reads: tuple[str, ...] = (AFFINE,)) -> str | None:
    """Why a kernel that reads the formats `reads` cannot serve `weight` by its format alone (None: it may, and its
    other checks follow). Every kernel's `supports_*` asks this before reading any field of a format."""
    name = getattr(weight, "format", None)
    if name is None or name in reads:
        return None
    return f"the weight's format {name!r} is not {' or '.join(repr(r) for r in reads)}"
