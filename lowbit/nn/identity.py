"""`Same(obj)`: an object's identity for cache stamps, which id() cannot be: a dead object's id() is soon a new
object's (CPython reuses the address), so a stamp of ids can match a buffer that replaced the one it was built for.
`version_of(t)`: a tensor's in-place edit counter for the same stamps."""

from __future__ import annotations

import weakref

import torch


class Same:
    """Equal to another `Same` of the very same live object; never equal once that object died. Holds it weakly."""

    __slots__ = ("_hash", "_ref")

    def __init__(self, obj):
        self._ref = weakref.ref(obj)
        self._hash = id(obj)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Same):
            return NotImplemented
        mine = self._ref()
        return mine is not None and mine is other._ref()

    def __hash__(self) -> int:
        return self._hash


def same(obj) -> Same | None:
    """`Same(obj)`, or None for None."""
    return None if obj is None else Same(obj)


def version_of(t: torch.Tensor | None) -> int | None:
    """t's version counter (bumped by every in-place edit); None for None and for an inference tensor, which carries
    no counter and cannot be edited in place."""
    if t is None or t.is_inference():
        return None
    return t._version
