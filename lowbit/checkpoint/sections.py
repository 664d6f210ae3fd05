"""Named sections of a checkpoint header, written and read back by the packages above `lowbit.checkpoint`.

A section is one top-level object of the header's "lowbit" JSON, beside the core keys (`CORE_KEYS`: format,
version, quantized, ...), and its key is its kind: "static" holds static int8 activation steps (lowbit.static).
`lowbit.checkpoint` knows no kind itself. The package that owns one registers it at import with
`register_section(Section(...))`; the packages that provide sections are named in `lowbit.SECTION_PROVIDERS` and
imported the first time a kind is looked up, so a process that never imported lowbit.static still loads a static
file. A header key that is neither a core key nor a registered kind is refused in one line naming the file and the
section (an unknown kind may change what the model computes, so it is never ignored).

The hooks, in the order `save`, `open_checkpoint` and `load` call them (all but `check` optional):
- `save(model) -> dict | None`: the object to store for this model, None when the model has none. `lowbit.save`
  asks every registered kind; a file holding a section is written as format version `version` at least.
- `check(path, obj)`: the header object is well formed (header stage, before any tensor is read); raises ValueError
  naming the file and the entry (turned into a CheckpointError).
- `check_values(path, obj)`: the numbers it holds, after every tensor was checked; raises CheckpointError.
- `prepare(model, obj)`: before the file's tensors are matched to the model, the structural changes the section
  implies (e.g. folded BatchNorms); raises ValueError, and the model is restored.
- `apply(model, obj, quantized) -> model`: after the swap and the tensors are in place (quantized: the full names
  of the swapped parameters); raises ValueError, and the model is restored.
- `export(path, obj, weight_only) -> (folds, notes)`: before `lowbit.export` writes pack-quantized, what it must do
  ({weight name: per-input-channel factor the stored weight is multiplied by}, notes for the summary), or a
  CheckpointError refusing the file; a section without this hook is refused by export.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..plugins import load_plugins
from .errors import CheckpointError


@dataclass(frozen=True)
class Section:
    """One kind of header section and its hooks (see the module docstring for each hook's contract)."""

    kind: str
    check: Callable[[Any, Any], Any]
    version: int = 1
    save: Callable[[Any], dict | None] | None = None
    check_values: Callable[[Any, dict], None] | None = None
    prepare: Callable[[Any, dict], None] | None = None
    apply: Callable[[Any, dict, set[str]], Any] | None = None
    export: Callable[[Any, dict, bool], tuple[dict, list[str]]] | None = None

    def __post_init__(self):
        if not isinstance(self.kind, str) or not self.kind.isidentifier():
            raise ValueError(f"section kind {self.kind!r} must be an identifier (it is a header key)")
        if type(self.version) is not int or self.version < 1:
            raise ValueError(f"section {self.kind!r}: version={self.version!r} must be an int >= 1")


# the header keys lowbit.checkpoint writes itself (header.build_metadata); any other key is a section
CORE_KEYS = frozenset({"format", "version", "lowbit_version", "quantized", "scheme", "external_data", "input_scales"})
_SECTIONS: dict[str, Section] = {}
_providers_imported = False


def register_section(section: Section) -> Section:
    """Add (or replace: re-imports and reloads register again) the section of `section.kind`; returns it."""
    if section.kind in CORE_KEYS:
        raise ValueError(f"section kind {section.kind!r} is a core header key ({sorted(CORE_KEYS)})")
    _SECTIONS[section.kind] = section
    return section


def unregister_section(kind: str) -> None:
    """Remove a registered kind (tests); unknown kinds are ignored."""
    _SECTIONS.pop(kind, None)


def _import_providers() -> None:
    """Import the packages `lowbit.SECTION_PROVIDERS` names (once), so their sections are registered."""
    global _providers_imported
    if _providers_imported:
        return
    import lowbit

    for name in getattr(lowbit, "SECTION_PROVIDERS", ()):
        importlib.import_module(name)  # a provider importing now (a circular import) is simply returned
    load_plugins()  # sections of plug-ins (lowbit.plugins)
    _providers_imported = True


def sections() -> dict[str, Section]:
    """Every registered kind -> its Section (the providers imported first)."""
    _import_providers()
    return dict(_SECTIONS)


def section_for(path, kind: str) -> Section:
    """The registered section of `kind`; CheckpointError naming file `path` and the section otherwise."""
    known = sections()
    if kind not in known:
        raise CheckpointError(f"{path} has header section {kind[:40]!r}, which this lowbit does not know (known: "
                              f"{sorted(known)}); it was written by a newer lowbit or a plug-in: install that")
    return known[kind]


def file_sections(path, body: dict) -> dict[str, Section]:
    """{kind: Section} of every section in a parsed header body (core keys skipped), each one known."""
    return {key: section_for(path, key) for key in body if key not in CORE_KEYS}


def model_sections(model) -> dict[str, dict]:
    """{kind: object to store} of every registered section that has something to store for `model`."""
    out = {}
    for kind, section in sections().items():
        obj = section.save(model) if section.save is not None else None
        if obj is not None:
            out[kind] = obj
    return out
