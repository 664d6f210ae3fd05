"""The calibration activations between decoder blocks, and the arguments each block is called with.

`ActivationStore` holds one hidden-state tensor per calibration item in a storage dtype (bfloat16 by default: half
of float32's memory, and the blocks' inputs need no more precision than the bf16 weights give them); past
`budget_bytes` further items are written to files in a temporary folder and read back when needed.
`capture_block_inputs` runs the model up to its first block on each item and stops there with an exception raised
by a forward pre-hook (llm-compressor and GPTQModel do the same): the hidden states it was called with go to the
store, and the other arguments (rotary position embeddings, the 4-D attention mask, position ids) are kept per item
exactly as the model's forward built them, so every block is later called the way the model calls it.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn


class ActivationStore:
    """Per-item tensors in `dtype`; in memory up to `budget_bytes`, then spilled to files in a temporary folder."""

    def __init__(self, budget_bytes: int = 2 << 30, dtype: torch.dtype = torch.bfloat16):
        self.budget, self.dtype = budget_bytes, dtype
        self._mem: dict[int, torch.Tensor] = {}
        self._dir: Path | None = None
        self.in_memory = 0
        self.spilled = 0  # items on disk

    def __setitem__(self, i: int, t: torch.Tensor) -> None:
        t = t.detach().to(self.dtype).contiguous()
        old = self._mem.pop(i, None)
        if old is not None:
            self.in_memory -= old.numel() * old.element_size()
        if self.in_memory + t.numel() * t.element_size() <= self.budget:
            self._mem[i] = t
            self.in_memory += t.numel() * t.element_size()
            return
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="lowbit-activations-"))
        path = self._dir / f"{i}.pt"
        self.spilled += not path.exists()
        torch.save(t, path)

    def get(self, i: int, dtype: torch.dtype) -> torch.Tensor:
        t = self._mem.get(i)
        if t is None:
            t = torch.load(self._dir / f"{i}.pt", weights_only=True)
        return t.to(dtype)

    def close(self) -> None:
        self._mem.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


@dataclass
class BlockCall:
    """How the model calls its blocks for one item: the extra positional and keyword arguments, and which rows of
    the hidden states are real tokens (`rows`: bool (B*T,), None when none is padding)."""

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    rows: torch.Tensor | None = None


class _Reached(Exception):
    def __init__(self, args, kwargs):
        super().__init__("first decoder block reached")
        self.args, self.kwargs = args, kwargs


def as_token_batch(item, index: int) -> dict:
    """A calibration item as model keyword arguments: a LongTensor of ids (T,) or (B, T), or a dict with
    input_ids and optionally attention_mask."""
    if isinstance(item, torch.Tensor):
        item = {"input_ids": item}
    if not isinstance(item, dict) or "input_ids" not in item:
        raise ValueError(f"calibration item {index}: expected token ids (a LongTensor) or a dict with 'input_ids', "
                         f"got {type(item).__name__}")
    out = {k: v for k, v in item.items() if k in ("input_ids", "attention_mask")}
    for k, v in out.items():
        if not isinstance(v, torch.Tensor) or v.dtype.is_floating_point or v.dim() not in (1, 2):
            raise ValueError(f"calibration item {index}: {k} must be an integer tensor (T,) or (B, T)")
        out[k] = v.unsqueeze(0) if v.dim() == 1 else v
    if "attention_mask" in out and out["attention_mask"].shape != out["input_ids"].shape:
        raise ValueError(f"calibration item {index}: attention_mask {tuple(out['attention_mask'].shape)} does not "
                         f"match input_ids {tuple(out['input_ids'].shape)}")
    return out


def capture_block_inputs(model: nn.Module, first_block: nn.Module, items: list, store: ActivationStore) \
        -> list[BlockCall]:
    """Run `model` on each item up to `first_block`; its inputs go to `store`, the rest of each call is returned."""

    def stop(_module, args, kwargs):
        raise _Reached(args, kwargs)

    calls = []
    handle = first_block.register_forward_pre_hook(stop, with_kwargs=True)
    try:
        with torch.no_grad():
            for i, item in enumerate(items):
                batch = as_token_batch(item, i)
                try:
                    model(**batch, use_cache=False)
                except _Reached as r:
                    kwargs = dict(r.kwargs)
                    hidden = r.args[0] if r.args else kwargs.pop("hidden_states")
                    store[i] = hidden
                    mask = batch.get("attention_mask")
                    rows = None if mask is None or bool(mask.all()) else mask.reshape(-1).bool()
                    calls.append(BlockCall(tuple(r.args[1:]), kwargs, rows))
                else:
                    raise RuntimeError(f"{type(model).__name__} finished without calling its first decoder block")
    finally:
        handle.remove()
    return calls
