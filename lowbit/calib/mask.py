"""Which token positions of a calibration item are real: padded ones stay out of every calibration statistic.

A tokenizer's `padding=True` batch carries padded positions that every Linear computes but no sentence holds; left
in, they pull GPTQ's Hessians, AWQ's scales, recon's losses and static INT8's ranges towards the padding token.
  item_mask(item, mask_fn)   # bool (batch, seq) of real positions, or None (every row counts)
  rows_of(x, mask)           # a Linear-like input (batch, seq, features) -> its real rows (M, features)
The mask comes from `mask_fn(*args, **kwargs)` when the calibration set has one (`as_calibration(...,
mask_fn=)`, for inputs of other kinds), else from an `attention_mask` found in the item: a keyword argument, or a
key of a Mapping argument (a dict, transformers' BatchEncoding, sentence-transformers' features). Layers whose
input does not have the mask's (batch, seq) leading shape (convs, LSTMs, pooled heads) keep all their rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from .sources import Item

MaskFn = Callable[..., "torch.Tensor | None"]


def _attention_mask(value) -> torch.Tensor | None:
    if isinstance(value, Mapping):
        m = value.get("attention_mask")
        return m if isinstance(m, torch.Tensor) else None
    return None


def item_mask(item: Item, mask_fn: MaskFn | None = None) -> torch.Tensor | None:
    """Bool (batch, seq) of the item's real positions, or None when it has no mask (see the module docstring)."""
    if mask_fn is not None:
        mask = mask_fn(*item.args, **item.kwargs)
    else:
        mask = item.kwargs.get("attention_mask")
        if not isinstance(mask, torch.Tensor):
            mask = next((m for m in map(_attention_mask, item.args) if m is not None), None)
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        raise ValueError(f"a calibration mask must be a (batch, seq) tensor, got {type(mask).__name__}"
                         + (f" of shape {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else ""))
    mask = mask != 0  # a tokenizer's attention mask: 1 (or True) for a real token, 0 for padding
    return None if bool(mask.all()) else mask


def matches(x, mask: torch.Tensor | None) -> bool:
    """True when x's leading dims are the mask's and x has at least one more (the features): (batch, seq, ...) for
    a token mask, (batch, ...) for a (batch,) mask of samples."""
    return (mask is not None and isinstance(x, torch.Tensor) and x.dim() > mask.dim()
            and tuple(x.shape[:mask.dim()]) == tuple(mask.shape))


def rows_of(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """x's rows (M, features) at the mask's True positions when the mask fits it (`matches`), else x as it is."""
    return x[mask.to(x.device)].reshape(-1, x.shape[-1]) if matches(x, mask) else x


__all__ = ["MaskFn", "item_mask", "matches", "rows_of"]
