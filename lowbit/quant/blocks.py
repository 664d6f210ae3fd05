"""Views of a 2-D weight as blocks along K, and per-row chunking that bounds temporary memory."""

from __future__ import annotations

from collections.abc import Iterator

import torch

_CHUNK_ELEMENTS = 1 << 22


def block_views(w: torch.Tensor, group_size: int) -> list[torch.Tensor]:
    """Split (N, K) into 3-D views (N, nb, g): the full blocks, then the shorter last block if K % g != 0."""
    n, k = w.shape
    full = k // group_size
    views = []
    if full:
        views.append(w[:, : full * group_size].reshape(n, full, group_size))  # (N, K') -> (N, nb, g)
    if k % group_size:
        views.append(w[:, full * group_size :].reshape(n, 1, k % group_size))  # the short tail block
    return views


def row_chunks(n_rows: int, row_len: int) -> Iterator[slice]:
    """Row slices of about _CHUNK_ELEMENTS elements each (rows are independent: blocks never cross rows)."""
    step = max(1, _CHUNK_ELEMENTS // max(1, row_len))
    for start in range(0, n_rows, step):
        yield slice(start, min(n_rows, start + step))
