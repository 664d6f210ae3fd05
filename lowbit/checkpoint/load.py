"""`load`: swap a float model's layers as a checkpoint says and load its weights (no pickle, memory-mapped)."""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import CheckpointError
from .reader import Checkpoint, open_checkpoint


def find_prefix(names: list[str], model_sd: dict | set) -> str:
    """The prefix the model adds to the file's names ("" when they match as they are).

    A checkpoint converted from a bare Hugging Face model ("encoder.layer.0...") loads into a wrapper such as a
    SentenceTransformer ("0.auto_model.encoder.layer.0..."): the prefix is accepted when it maps every file name.
    """
    if not names or any(n in model_sd for n in names):
        return ""
    probe = min(names)
    for key in model_sd:
        if key.endswith("." + probe):
            prefix = key[: -len(probe)]
            if all(prefix + n in model_sd for n in names):
                return prefix
    return ""


def check_against_model(ckpt: Checkpoint, model_sd: dict[str, torch.Tensor], prefix: str = "",
                        transient: frozenset = frozenset()) -> list[str]:
    """Every model tensor must be in the file with the same shape, and every file tensor must be in the model.

    transient: the model's non-persistent buffers (e.g. BERT's position_ids, saved by older versions): file tensors
    of those names are ignored. Returns the float tensor names to load.
    """
    for name, qmeta in ckpt.quantized.items():
        if prefix + name not in model_sd:
            raise CheckpointError(f"{ckpt.path}: quantized tensor {name!r} has no parameter of that name in the model")
        if tuple(model_sd[prefix + name].shape) != tuple(qmeta["shape"]):
            raise CheckpointError(f"tensor shape mismatch for {name!r}: {list(qmeta['shape'])} in {ckpt.path}, "
                                  f"{list(model_sd[prefix + name].shape)} in the model")
    floats = [n for n in ckpt.floats if prefix + n not in transient or prefix + n in model_sd]
    for name in floats:
        if prefix + name not in model_sd:
            raise CheckpointError(f"{ckpt.path} has tensor {name!r} that the model does not have (wrong model?)")
        if ckpt.entries[name].shape != tuple(model_sd[prefix + name].shape):
            raise CheckpointError(f"tensor shape mismatch for {name!r}: {list(ckpt.entries[name].shape)} in "
                                  f"{ckpt.path}, {list(model_sd[prefix + name].shape)} in the model")
    in_file = {prefix + n for n in [*ckpt.quantized, *floats]}
    missing = sorted(k for k in model_sd if k not in in_file and k.startswith(prefix))
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise CheckpointError(f"{ckpt.path} is missing tensor {missing[0]!r} of the model "
                              f"(missing: {missing[:3]}{more})")
    return floats


def _as_model_dtype(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    # float tensors stored as float16 (convert --fp16) come back in the model's dtype; integer buffers stay as is
    if t.is_floating_point() and like.is_floating_point() and t.dtype != like.dtype:
        return t.to(like.dtype)
    return t


def load(model: torch.nn.Module, path: str | Path, backend=None) -> torch.nn.Module:
    """Swap `model`'s layers for the quantized ones `path` describes and load every tensor; returns the model.

    model: the float model the checkpoint was made from, or a wrapper holding it under a prefix (a
    SentenceTransformer around a converted Hugging Face model; the wrapper's other tensors are left as they are).
    It may live on the `meta` device (nothing is materialised twice: plain tensors are assigned, quantized ones go
    to `lowbit.nn.swap_quantized`). Tensors are zero-copy
    copy-on-write views of the memory-mapped file, so only the pages used are read. backend: a
    `lowbit.BackendConfig` (default: BackendConfig()). Raises CheckpointError naming the tensor when the file and the
    model disagree (missing tensor, extra tensor, shape mismatch); the model is unchanged in that case.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"load() needs the float nn.Module to load into, got {type(model).__name__}")
    ckpt = open_checkpoint(path)
    model_sd = model.state_dict(keep_vars=True)
    transient = frozenset(k for k, _ in model.named_buffers()) - set(model_sd)
    prefix = find_prefix([*ckpt.quantized, *ckpt.floats], set(model_sd) | transient)
    floats = check_against_model(ckpt, model_sd, prefix, transient)
    weights = {prefix + name: ckpt.quantized_weight(name) for name in ckpt.quantized}
    if weights:
        from ..nn import swap_quantized
        from ..runtime import BackendConfig

        swap_quantized(model, weights, backend if backend is not None else BackendConfig())
    floats = {prefix + n: _as_model_dtype(ckpt.tensor(n), model_sd[prefix + n]) for n in floats}
    result = model.load_state_dict(floats, strict=False, assign=True)
    if result.unexpected_keys:
        raise CheckpointError(f"{ckpt.path}: tensors {result.unexpected_keys[:3]} could not be placed in the model")
    return model
