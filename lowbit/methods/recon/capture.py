"""One block's calibration inputs (from the quantized model) or outputs (from the float model), one item at a time.

The forward of each item is cut short as soon as the block's first call is seen, so a pass costs the model up to
the block. Only this block's tensors are kept: memory is one block's inputs and outputs, never the whole model's.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import torch
from torch import nn

from ...calib import CalibrationError
from ...calib.capture import call_model


class _Captured(CalibrationError):
    """Ends an item's forward once the block is captured (a CalibrationError, so calib passes it on unwrapped)."""


def fresh_args(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Shallow dict copies of mapping arguments: some models add keys to their input dict (sentence-transformers)."""
    return tuple(dict(a) if isinstance(a, Mapping) else a for a in args), dict(kwargs)


def capture(model: nn.Module, items: list, module: nn.Module, outputs: bool, desc: str = "",
            progress: bool = False) -> list:
    """Per item: (args, kwargs) of `module`'s first call, or its output when `outputs`; None if it never ran."""
    from tqdm.auto import tqdm

    found = []

    def pre_hook(_m, args, kwargs):
        found.append(fresh_args(args, kwargs))
        raise _Captured

    def post_hook(_m, _args, out):
        found.append(out)
        raise _Captured

    handle = (module.register_forward_hook(post_hook) if outputs
              else module.register_forward_pre_hook(pre_hook, with_kwargs=True))
    kept = []
    try:
        with torch.no_grad():
            for index, item in enumerate(tqdm(items, desc=desc, disable=not progress, leave=False, file=sys.stderr)):
                found.clear()
                try:
                    call_model(model, item, index)
                except _Captured:
                    pass
                kept.append(found[0] if found else None)
    finally:
        handle.remove()
    return kept


def float_leaves(value) -> list[torch.Tensor]:
    """The floating tensors of an output (a tensor, or nested tuples/lists/dicts), in a fixed order."""
    if isinstance(value, torch.Tensor):
        return [value] if value.is_floating_point() else []
    if isinstance(value, Mapping):  # dicts and the tokenizers' BatchEncoding (a UserDict)
        return [t for k in sorted(value, key=str) for t in float_leaves(value[k])]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in float_leaves(v)]
    return []


def relative_error(out, target, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the output's float tensors of ‖out - target‖² / ‖target‖² (a scale-free reconstruction loss).

    mask: bool over the leading dims of the rows that count ((batch, seq) real tokens, (batch,) samples, or both
    combined); tensors whose leading dims are not the mask's count whole."""
    from ...calib.mask import matches

    outs, targets = float_leaves(out), float_leaves(target)
    if len(outs) != len(targets) or not outs:
        raise ValueError(f"the block's output has {len(outs)} float tensors, its float target {len(targets)}")
    terms = []
    for o, t in zip(outs, targets, strict=True):
        if matches(t, mask):
            m = mask.to(t.device)
            o, t = o[m], t[m]
        terms.append((o.float() - t.float()).square().sum() / t.float().square().sum().clamp_min(1e-30))
    return torch.stack(terms).mean()
