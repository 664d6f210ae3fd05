"""Running a model over calibration items with forward pre-hooks on chosen layers.

`run_pass` is the one loop: every item is fed to the model under `torch.no_grad()`, each chosen layer's hook sees
the (args, kwargs) it is called with, a tqdm bar counts items, and the forward is cut short (`stop_after`) once the
chosen layers have all been called, so a pass over the first layers of a deep model costs only those layers.
Hooks consume what they see (accumulate statistics, keep one layer's inputs), so memory holds one layer's worth,
never the whole model's activations. `trace_calls` gives the order layers run in and which ones share an input.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Mapping

import torch
from torch import nn

from .sources import CalibrationSet, Item

Hook = Callable[[tuple, dict], None]


class CalibrationError(ValueError):
    """A calibration item or activation the quantizer cannot use (the message names the item or the layer)."""


class _StopForward(Exception):
    """Raised by a hook to end a forward once every chosen layer has run (never escapes `run_pass`)."""


def ensure_eval(model: nn.Module) -> bool:
    """Switch `model` to eval mode for calibration; True (and a warning) when it was training."""
    was_training = any(m.training for m in model.modules())
    if was_training:
        warnings.warn("lowbit calibration: the model was in training mode; switched it to eval() (dropout off, "
                      "batch-norm running statistics used) and left it there", stacklevel=3)
        model.eval()
    return was_training


def _device_of(model: nn.Module) -> torch.device | None:
    p = next(iter(model.parameters()), None)
    return None if p is None or p.device.type == "meta" else p.device


def _move(value, device):
    if device is None:
        return value
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, Mapping):  # dicts and transformers' BatchEncoding
        return {k: _move(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_move(v, device) for v in value)
    return value


def _check_finite(name: str, index: int, args: tuple) -> None:
    for a in args:
        # one reduction instead of an elementwise test: any NaN or inf makes the sum non-finite
        if isinstance(a, torch.Tensor) and a.is_floating_point() and not bool(torch.isfinite(a.float().sum())):
            raise CalibrationError(f"calibration item {index}: the input of layer {name!r} contains NaN or inf "
                                   "(check the calibration data, or keep this layer float with skip=)")


def call_model(model: nn.Module, item: Item, index: int, device=None):
    """model(*args, **kwargs) for one item; a model error becomes a CalibrationError naming the item."""
    args, kwargs = item.fresh()
    try:
        return model(*_move(args, device), **_move(kwargs, device))
    except (_StopForward, CalibrationError):
        raise
    except Exception as e:  # any model error: report which input caused it, keep the original as the cause
        raise CalibrationError(f"the model rejected calibration item {index} {item.describe()}: "
                               f"{type(e).__name__}: {e}") from e


HOLD_EVERY = 8  # one item in 8 is held out (or, with fewer than 8 items, one row in 8 of every item)


def linear_like(module: nn.Module) -> bool:
    """A layer applied to the last dim of its input, row by row (nn.Linear and lowbit's quantized/static ones):
    padding masks and held-out rows apply to it; convs and RNNs, whose leading dims are not rows, keep all."""
    return isinstance(module, nn.Linear) or (isinstance(getattr(module, "in_features", None), int)
                                             and not hasattr(module, "kernel_size"))


def _split_rows(x: torch.Tensor, every: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows kept for fitting, every `every`-th row held out) of x (..., K) flattened to rows."""
    rows = x.reshape(-1, x.shape[-1])
    held = torch.zeros(rows.shape[0], dtype=torch.bool, device=rows.device)
    held[every - 1::every] = True
    return rows[~held], rows[held]


def run_pass(model: nn.Module, calibration: CalibrationSet, hooks: Mapping[str, Hook],
             modules: Mapping[str, nn.Module], desc: str = "calibration", progress: bool = True,
             stop_after: Mapping[str, int] | None = None, held: Mapping[str, Hook] | None = None) -> int:
    """Feed every item to `model`, calling hooks[name](args, kwargs) before each call of modules[name].

    Padding: a layer whose input is (batch, seq, features) for the item's mask (lowbit.calib.mask) gets only its
    real rows, as args[0] of shape (M, features). held: {name: hook} for held-out data: one item in HOLD_EVERY
    goes to held[name] instead of hooks[name]; with fewer items, one row in HOLD_EVERY of each item's (real) rows
    of Linear-like layers (convs and RNNs keep all rows for fitting). stop_after: {name: calls per item}; the
    forward of an item stops once every listed layer reached its count.
    Returns the number of items. Raises CalibrationError for a rejected item or a non-finite layer input.
    """
    from tqdm.auto import tqdm

    from .mask import item_mask, rows_of

    index, seen, mask = 0, {}, None
    device = _device_of(model)
    by_items = held is not None and len(calibration) >= HOLD_EVERY

    def make(name: str):
        row_wise = not linear_like(modules[name])

        def pre_hook(_module, args, kwargs):
            _check_finite(name, index, args)
            x = args[0] if args else None
            if not row_wise and x is not None:
                x = rows_of(x, mask)
                args = (x, *args[1:])
            if held is None or name not in held:
                hooks[name](args, kwargs)
            elif by_items:
                (held if index % HOLD_EVERY == HOLD_EVERY - 1 else hooks)[name](args, kwargs)
            elif not row_wise and isinstance(x, torch.Tensor):
                fit, out = _split_rows(x, HOLD_EVERY)
                hooks[name]((fit, *args[1:]), kwargs)
                if out.shape[0]:
                    held[name]((out, *args[1:]), kwargs)
            else:
                hooks[name](args, kwargs)
            seen[name] = seen.get(name, 0) + 1
            if stop_after and all(seen.get(n, 0) >= c for n, c in stop_after.items()):
                raise _StopForward
        return pre_hook

    handles = [modules[name].register_forward_pre_hook(make(name), with_kwargs=True) for name in hooks]
    mask_fn = getattr(calibration, "mask_fn", None)
    try:
        with torch.no_grad():
            for index, item in enumerate(tqdm(calibration, desc=desc, total=len(calibration), disable=not progress,
                                              leave=False, file=sys.stderr)):
                seen.clear()
                mask = item_mask(item, mask_fn)
                try:
                    call_model(model, item, index, device)
                except _StopForward:
                    pass
    finally:
        for h in handles:
            h.remove()
    return index + 1


def trace_calls(model: nn.Module, item: Item, modules: Mapping[str, nn.Module]) -> list[tuple[str, int]]:
    """[(name, input id)] for every call of the chosen modules on one item, in call order.

    Calls with the same input id read the very same tensor (e.g. the query, key and value projections).
    """
    calls, keep = [], []

    def make(name: str):
        def pre_hook(_module, args):
            x = args[0] if args else None
            keep.append(x)  # hold the tensor so its id is not reused within this forward
            calls.append((name, id(x) if isinstance(x, torch.Tensor) else -len(calls) - 1))
        return pre_hook

    run_hooked(model, item, [m.register_forward_pre_hook(make(name)) for name, m in modules.items()])
    return calls


def run_hooked(model: nn.Module, item: Item, handles) -> None:
    """One call model(item) without gradients on the model's device, then remove `handles` (the hooks registered
    for this call), also when the call fails."""
    try:
        with torch.no_grad():
            call_model(model, item, 0, _device_of(model))
    finally:
        for h in handles:
            h.remove()
