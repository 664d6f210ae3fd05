"""Modules registered under two names (`self.b = self.a`): torch's state_dict writes every tensor under both, and
`load_state_dict` takes both; `lowbit.load` accepts such files the same way.

The first name `named_modules` gives a module is its canonical name; the others are aliases. A checkpoint's tensors
under an alias must repeat the canonical tensor of the same name (same shape and dtype: written by `save` from the
same module); they are checked and then skipped, since loading the canonical module loads the alias too.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .errors import CheckpointError


def module_aliases(model: torch.nn.Module) -> dict[str, str]:
    """{alias module name: canonical module name} (children of an alias included); empty without aliases."""
    canonical, aliases = {}, {}
    for name, module in model.named_modules(remove_duplicate=False):
        first = canonical.setdefault(id(module), name)
        if first != name:
            aliases[name] = first
    return aliases


def _canonical(name: str, aliases: dict[str, str]) -> str | None:
    module, _, leaf = name.rpartition(".")
    if module not in aliases:
        return None
    base = aliases[module]
    return f"{base}.{leaf}" if base else leaf


def without_alias_keys(state_dict: dict, aliases: dict[str, str]) -> dict:
    """The model's state dict without the entries torch writes again under an alias."""
    return {k: v for k, v in state_dict.items() if _canonical(k, aliases) is None}


def drop_alias_tensors(ckpt, aliases: dict[str, str], prefix: str):
    """The checkpoint without its tensors under aliases (each checked against its canonical twin)."""
    if not aliases:
        return ckpt
    quantized = dict(ckpt.quantized)
    for name in list(quantized):
        twin = _canonical(prefix + name, aliases)
        if twin is not None:
            twin = twin[len(prefix):]
            if twin not in quantized or quantized[twin]["shape"] != quantized[name]["shape"]:
                raise CheckpointError(f"{ckpt.path}: quantized tensor {name!r} belongs to an alias of module "
                                      f"{twin.rpartition('.')[0]!r}, whose {twin!r} is not stored alike")
            del quantized[name]
    floats = []
    packed = {t for group in ckpt.groups.values() for t in group.values()}  # every format's stored tensors
    for name in ckpt.floats:
        twin = _canonical(prefix + name, aliases)
        if twin is None:
            floats.append(name)
            continue
        twin = twin[len(prefix):]
        mine, other = ckpt.entries[name], ckpt.entries.get(twin)
        if other is None or (other.shape, other.dtype) != (mine.shape, mine.dtype):
            raise CheckpointError(f"{ckpt.path}: tensor {name!r} belongs to an alias of module "
                                  f"{twin.rpartition('.')[0]!r}, but {twin!r} is not stored with the same shape "
                                  "and dtype (wrong model?)")
        if twin not in packed and twin not in ckpt.floats:
            raise CheckpointError(f"{ckpt.path}: tensor {name!r} repeats {twin!r}, which the file does not use")
    return replace(ckpt, body={**ckpt.body, "quantized": quantized}, floats=floats)
