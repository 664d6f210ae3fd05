"""Register lowbit with transformers when (and only when) transformers' quantizer registry is imported.

Imports nothing heavy: `import lowbit` runs `install()`. If `transformers.quantizers.auto` is already in
`sys.modules` the registration runs now; otherwise a one-shot `sys.meta_path` finder wraps that module's loader so
the registration runs right after the module executes (the first `from_pretrained` imports it). A registration that
fails (a transformers without the public registration API) warns once and never breaks transformers' import.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import warnings

REGISTRY_MODULE = "transformers.quantizers.auto"
QUANT_METHOD = "lowbit"


def register() -> None:
    """Register `LowbitConfig` and the lowbit quantizer under quant_method "lowbit" (idempotent)."""
    from transformers.quantizers import auto

    if auto.AUTO_QUANTIZER_MAPPING.get(QUANT_METHOD) is not None:
        return
    from .config import LowbitConfig
    from .quantizer import LowbitHfQuantizer

    auto.register_quantization_config(QUANT_METHOD)(LowbitConfig)
    auto.register_quantizer(QUANT_METHOD)(LowbitHfQuantizer)


def _register_quietly() -> None:
    try:
        register()
    except (ImportError, AttributeError, TypeError, ValueError) as e:
        warnings.warn(f"lowbit could not register its transformers quantizer ({e}); quant_method 'lowbit' "
                      "folders will not load through transformers", stacklevel=2)


class _RegisterAfterExec(importlib.abc.Loader):
    """Runs the registry module's own loader, then registers lowbit; everything else is delegated."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _register_quietly()

    def __getattr__(self, name):  # get_source, get_code, ... for tracebacks and inspect
        return getattr(self._loader, name)


class _RegistryFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for the registry module it asks the path finder and wraps the loader (once)."""

    def find_spec(self, name, path, target=None):
        if name != REGISTRY_MODULE:
            return None
        uninstall()
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisterAfterExec(spec.loader)
        return spec


_FINDER = _RegistryFinder()


def install() -> None:
    """Register now if transformers' registry is loaded, else arrange to register right after it loads."""
    if REGISTRY_MODULE in sys.modules:
        _register_quietly()
    elif _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def uninstall() -> None:
    """Remove the import hook (a no-op when it is not installed)."""
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
