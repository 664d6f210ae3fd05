"""The KV cache as lean decode steps read and grow it (`lowbit.hf.decode_step`).

- `append_in_place(cache, index, key, value)`: one token appended to a transformers DynamicCache layer without
  copying the cache (its keys/values become prefix views of buffers with spare rows);
- `valid_length(mask, keys)`: how many cache rows one query token attends to, when that is a prefix of the cache.
"""

from __future__ import annotations

import torch

_PREFIX: tuple = (None, None)  # the last mask seen and its valid prefix length (None: not a prefix)


def valid_length(mask: torch.Tensor | None, keys: torch.Tensor) -> int | None:
    """How many cache rows one query token attends to when that is a prefix of the cache: all of them without a
    mask; with a boolean mask (1, 1, 1, L) that is True on a prefix (a static cache's filled rows), its length;
    else None. The answer for the last mask object is kept: every layer of a step shares one mask."""
    global _PREFIX
    if mask is None:
        return keys.shape[2]
    seen = _PREFIX
    if seen[0] is mask:
        return seen[1]
    n = None
    if mask.dtype is torch.bool and mask.numel() == keys.shape[2]:
        row = mask.reshape(-1)
        n = int(row.sum())
        n = n if n and bool(row[:n].all()) else None
    _PREFIX = (mask, n)
    return n


_ROOM = 256  # rows of spare room a cache layer grows by (at least; a quarter of its length when that is more)


def append_in_place(cache, index: int, key: torch.Tensor, value: torch.Tensor):
    """Append one token's key/value (1, kv_heads, 1, D) to layer `index` of transformers' DynamicCache without
    copying the cache, or None where this does not apply (then `cache.update` serves).

    transformers' DynamicLayer grows by `torch.cat`, a copy of the whole cache per layer and token (at 264 cached
    tokens of a 1B Llama, 17 MB a token). Here the layer's keys/values become prefix views of buffers with spare
    rows (`_ROOM`), and a token is one row copied in; any other holder of the layer's tensors (crop: a shorter
    prefix; reorder, repeat, select, reset: new tensors) is seen and the buffers are made anew.
    """
    from transformers.cache_utils import DynamicCache, DynamicLayer

    if type(cache) is not DynamicCache or getattr(cache, "offloading", False) or index >= len(cache.layers):
        return None
    layer = cache.layers[index]
    if type(layer) is not DynamicLayer or not layer.is_initialized:
        return None
    keys, values = layer.keys, layer.values
    if keys.dim() != 4 or keys.dtype != key.dtype or values.dtype != value.dtype or keys.shape[0] != 1 \
            or keys.shape[0] != key.shape[0]:
        return None
    n = keys.shape[2]
    room = vars(layer).get("_lowbit_room")
    if room is None or room[0].shape[2] <= n or not (_prefix_of(keys, room[0]) and _prefix_of(values, room[1])):
        room = tuple(_grown(t, n + max(_ROOM, n // 4)) for t in (keys, values))
        layer._lowbit_room = room
    room[0][:, :, n].copy_(key[:, :, 0])
    room[1][:, :, n].copy_(value[:, :, 0])
    layer.keys, layer.values = room[0][:, :, :n + 1], room[1][:, :, :n + 1]
    return layer.keys, layer.values


def _prefix_of(view: torch.Tensor, buffer: torch.Tensor) -> bool:
    """view is buffer[:, :, :L] for some L (the same start, strides, heads and head size)."""
    return view.data_ptr() == buffer.data_ptr() and view.stride() == buffer.stride() \
        and view.shape[:2] == buffer.shape[:2] and view.shape[3] == buffer.shape[3]


def _grown(t: torch.Tensor, rows: int) -> torch.Tensor:
    """A (B, H, rows, D) buffer holding t (B, H, L, D) in its first L rows."""
    buffer = t.new_empty(t.shape[0], t.shape[1], rows, t.shape[3])
    buffer[:, :, :t.shape[2]].copy_(t)
    return buffer
