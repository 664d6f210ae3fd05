"""MODULE:FUNCTION, the one way every command (convert, quant, auto, validate) builds a model from a name.

A model spec is a built-in name (`BUILTIN_MODELS`: "minilm", the bundled MiniLM with its example sentences) or
MODULE:FUNCTION: MODULE is imported as `import MODULE` would (the current directory is on the path when lowbit runs
as `python -m lowbit`), FUNCTION is looked up in it and called with no arguments. It returns either

    model                         # a torch.nn.Module
    (model, example_inputs)       # plus the inputs of one call: a tuple of positional arguments, or one argument
                                  # (None: no inputs)

A command that can do without inputs (convert, quant, auto) takes either form and ignores the inputs; a command that
needs them (validate) refuses a bare model, saying so in one line naming the function. The model is returned as the
function made it (no `.eval()`; commands that need eval mode set it). Errors are one line naming the spec:
ValueError for a spec that is neither a built-in name nor MODULE:FUNCTION, a module that cannot be imported (or
raised while importing) and a missing or non-callable FUNCTION; RuntimeError (chained to the original) when FUNCTION
raises; TypeError when it returns anything else.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch

BUILTIN_MODELS = {"minilm": "lowbit.models.minilm:minilm_example"}
CONTRACT = "MODULE:FUNCTION returning a model or (model, example_inputs)"


def find_function(spec: str, what: str = "model") -> Callable:
    """The function behind a model spec (a built-in name or MODULE:FUNCTION), imported but not called. `what` names
    the spec in errors ("calibration function" for `lowbit.calib.as_calibration`, which resolves the same way and
    has no built-in names)."""
    target = BUILTIN_MODELS.get(spec, spec) if what == "model" else spec
    module_name, sep, fn_name = str(target).partition(":")
    if not sep or not module_name or not fn_name:
        raise ValueError(f"unknown {what} {spec!r}: use one of {sorted(BUILTIN_MODELS)} or {CONTRACT}"
                         if what == "model" else f"{what} {spec!r}: expected MODULE:FUNCTION")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"{what} {spec!r}: cannot import module {module_name!r} ({e})") from None
    except Exception as e:  # a user's module that fails while importing (SyntaxError, NameError, ...)
        raise ValueError(f"{what} {spec!r}: importing module {module_name!r} raised {type(e).__name__}: {e}") from e
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        where = getattr(module, "__file__", None) or module_name
        raise ValueError(f"{what} {spec!r}: module {module_name!r} has no function {fn_name!r} (no callable "
                         f"{fn_name!r} in {where})")
    return fn


def load_model(spec: str, needs_inputs: bool = False) -> tuple[torch.nn.Module, tuple | None]:
    """Call the spec's function: `(model, inputs)`, inputs a tuple of positional arguments, or None when the
    function returned a model alone (refused with `needs_inputs`). See the module docstring for the errors."""
    fn = find_function(spec)
    try:
        result = fn()
    except Exception as e:
        raise RuntimeError(f"model function {spec!r} raised {type(e).__name__}: {e}") from e
    if isinstance(result, (tuple, list)) and len(result) == 2 and isinstance(result[0], torch.nn.Module) \
            and result[1] is None:
        result = result[0]  # (model, None): no inputs
    if isinstance(result, torch.nn.Module):
        if needs_inputs:
            raise ValueError(f"model function {spec!r} returned a model without example inputs, and this command "
                             "runs the model: return (model, example_inputs)")
        return result, None
    if isinstance(result, (tuple, list)) and len(result) == 2 and isinstance(result[0], torch.nn.Module):
        model, inputs = result
        return model, inputs if isinstance(inputs, tuple) else (inputs,)
    want = "(nn.Module, example_inputs)" if needs_inputs else "an nn.Module or (nn.Module, example_inputs)"
    raise TypeError(f"model function {spec!r} must return {want}, got {type(result).__name__}")
