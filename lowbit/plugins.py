"""Plug-ins: modules that register quantize methods, packed formats, kernel rows or checkpoint sections.

A registration made in one script is gone in the next process (`lowbit convert`, a fresh `lowbit.load`). Modules
named here are imported once per process, before the first lookup that could need them: the CLI's start, and a
method or format name the registries do not know (a config, a checkpoint header). They are named by
  - the environment variable LOWBIT_PLUGINS: module names separated by commas (e.g. "my_pkg.lowbit_codebook");
  - installed packages' entry points in the group "lowbit.plugins" (each entry's value is a module).
A plug-in that cannot be imported is an ImportError naming it and where it was named. This module imports nothing
of lowbit, so every floor may call `load_plugins()`.
"""

from __future__ import annotations

import importlib
import os
from importlib import metadata

ENV = "LOWBIT_PLUGINS"
GROUP = "lowbit.plugins"
_STATE = {"loaded": None}


def plugin_modules() -> list[tuple[str, str]]:
    """(module name, where it was named) for every plug-in of this process, in order, without duplicates."""
    named = [(m.strip(), f"${ENV}") for m in os.environ.get(ENV, "").split(",") if m.strip()]
    named += [(ep.value.split(":")[0], f"entry point {ep.name!r} ({GROUP})")
              for ep in metadata.entry_points(group=GROUP)]
    seen, out = set(), []
    for module, where in named:
        if module not in seen:
            seen.add(module)
            out.append((module, where))
    return out


def load_plugins() -> tuple[str, ...]:
    """Import every plug-in once per process (later calls return the same names); returns their module names."""
    if _STATE["loaded"] is not None:
        return _STATE["loaded"]
    _STATE["loaded"] = ()  # a plug-in importing lowbit's registries does not start loading again
    loaded = []
    for module, where in plugin_modules():
        try:
            importlib.import_module(module)
        except ImportError as e:
            _STATE["loaded"] = None
            raise ImportError(f"lowbit plug-in {module!r} (named by {where}) cannot be imported: {e}") from e
        loaded.append(module)
    _STATE["loaded"] = tuple(loaded)
    return _STATE["loaded"]


def reset() -> None:
    """Forget that plug-ins were loaded (tests): the next `load_plugins()` imports what is named then."""
    _STATE["loaded"] = None


__all__ = ["ENV", "GROUP", "load_plugins", "plugin_modules", "reset"]
