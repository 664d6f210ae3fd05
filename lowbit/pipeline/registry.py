"""The method registry: what a quantization method is, in one record per method, looked up by name.

Every caller that used to decide by `if method == ...` (lowbit.quantize, the CLI's --method choices, convert's
needs-calibration check, auto's candidates, the per-weight fit) reads a `MethodSpec` instead. The built-in methods
register themselves when `lowbit.methods` is imported (rtn, hqq: methods/plain.py; gptq, awq: methods/sequential.py;
recon: methods/recon). A new method is one module that calls `register_method`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..plugins import load_plugins
from ..quant.config import declare_method, forget_method

# walk ranks: when one model mixes methods, the highest-ranked method's walk quantizes every layer (a recon walk
# starts its gptq/awq layers too; a sequential walk quantizes its rtn/hqq layers first)
DATA_FREE, SEQUENTIAL, RECONSTRUCTION = 0, 1, 2


@dataclass(frozen=True)
class MethodSpec:
    """One quantization method.

    name: the `QuantConfig(method=...)` value (lower case).
    needs_calibration: the method needs calibration inputs (`lowbit.quantize(..., calibration=)`); a checkpoint-only
        `convert` refuses it.
    run: the whole-model walk, `run(model, cfg, backend, skip, overrides, min_weights, calibration, limit,
        sequential, progress, awq_fold) -> model` with the packed weights swapped in and `model.lowbit_summary` set.
        None for a data-free method: the data-free walk (lowbit.methods.plain) calls its quantize_weight per weight.
    rank: which walk drives a model that mixes methods (DATA_FREE < SEQUENTIAL < RECONSTRUCTION; the highest wins).
    quantize_weight: `(w, cfg, name) -> QuantizedWeight` for a data-free method (None when it needs calibration).
    fit_weight: `(w, hessians, cfg, name) -> QuantizedWeight`, the data-aware fit from the inputs' xtx per group of
        rows (GPTQ, AWQ's clipping); None otherwise.
    auto_candidate: `lowbit auto` may try it per layer. summary: a one-line description.
    """

    name: str
    needs_calibration: bool
    run: Callable | None = None
    rank: int = DATA_FREE
    quantize_weight: Callable | None = None
    fit_weight: Callable | None = None
    auto_candidate: bool = False
    summary: str = ""


_METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add `spec` under `spec.name` (ValueError if the name is taken by another spec); from then on
    `QuantConfig(method=spec.name)` is valid. Returns the spec."""
    if not isinstance(spec, MethodSpec):
        raise TypeError(f"register_method takes a MethodSpec, got {type(spec).__name__}")
    name = spec.name.lower()
    if name in _METHODS and _METHODS[name] != spec:
        raise ValueError(f"method {name!r} is already registered")
    if not spec.needs_calibration and spec.quantize_weight is None:
        raise ValueError(f"method {name!r}: a data-free method must give quantize_weight")
    if spec.needs_calibration and spec.run is None:
        raise ValueError(f"method {name!r}: a method that needs calibration must give its walk (run)")
    declare_method(name, spec.needs_calibration)
    _METHODS[name] = spec
    return spec


def unregister_method(name: str) -> None:
    """Remove a method registered with `register_method` (the built-in QuantMethod names stay valid configs)."""
    _METHODS.pop(name, None)
    forget_method(name)


def method_for(name) -> MethodSpec:
    """The spec registered under `name` (a str or QuantMethod); ValueError listing the known methods otherwise."""
    key = str(getattr(name, "value", name)).lower()
    if key not in _METHODS:
        load_plugins()
    if key not in _METHODS:
        raise ValueError(f"method={key!r} is unknown: use one of {', '.join(methods())}")
    return _METHODS[key]


def methods() -> tuple[str, ...]:
    """The registered method names, data-free ones first (by rank, then in registration order)."""
    return tuple(sorted(_METHODS, key=lambda n: _METHODS[n].rank))


__all__ = ["DATA_FREE", "RECONSTRUCTION", "SEQUENTIAL", "MethodSpec", "method_for", "methods", "register_method",
           "unregister_method"]
