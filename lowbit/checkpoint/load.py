"""`load`: swap a float model's layers as a checkpoint says and load its weights (no pickle, memory-mapped)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import torch

from .aliases import drop_alias_tensors, module_aliases, without_alias_keys
from .errors import CheckpointError
from .reader import Checkpoint, open_checkpoint
from .safetensors_io import dtype_name
from .sections import file_sections


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
        _check_dtype(ckpt, name, model_sd[prefix + name])
    in_file = {prefix + n for n in [*ckpt.quantized, *floats]}
    missing = sorted(k for k in model_sd if k not in in_file and k.startswith(prefix))
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise CheckpointError(f"{ckpt.path} is missing tensor {missing[0]!r} of the model "
                              f"(missing: {missing[:3]}{more})")
    return floats


def _check_dtype(ckpt: Checkpoint, name: str, like: torch.Tensor) -> None:
    """A floating model tensor takes any floating file tensor (cast on load); any other needs its exact dtype."""
    have = ckpt.entries[name].dtype
    fits = have.is_floating_point if like.is_floating_point() else have == like.dtype
    if fits:
        return
    rule = "a floating tensor loads any floating dtype" if like.is_floating_point() else "it needs that exact dtype"
    raise CheckpointError(f"{ckpt.path}: tensor {name!r} is {dtype_name(have)} in the file but "
                          f"{str(like.dtype).removeprefix('torch.')} in the model ({rule}); wrong model?")


def check_swappable(path: Path, model: torch.nn.Module, weights: dict) -> None:
    """Every module that receives packed weights must be one `swap_quantized` replaces, with exactly its weights.

    Run before the swap, so that a file the model cannot take fails before any layer changes. It reads the swap's
    own table (which float module becomes which quantized one, and which of its parameters are packed).
    """
    from ..nn import QuantModule
    from ..nn.swap import quant_class, quantized_param_names

    by_module: dict[str, list[str]] = defaultdict(list)
    for full in weights:
        module, _, param = full.rpartition(".")
        by_module[module].append(param)
    modules = dict(model.named_modules())
    for name, params in by_module.items():
        m, label = modules.get(name), repr(name) if name else "the model itself"
        if isinstance(m, QuantModule):
            raise CheckpointError(f"{path}: module {label} is already quantized; load into the float model")
        if m is None or quant_class(m) is None:
            kind = type(m).__name__ if m is not None else "no module"
            raise CheckpointError(f"{path}: quantized weights {sorted(params)} belong to {label}, which is {kind}: "
                                  "only Linear, Conv1d, Conv2d and LSTM layers take packed weights (wrong model?)")
        if getattr(m, "proj_size", 0):
            raise CheckpointError(f"{path}: LSTM {label} has proj_size={m.proj_size}, which QuantLSTM does not support")
        if sorted(params) != sorted(quantized_param_names(m)):
            raise CheckpointError(f"{path}: {type(m).__name__} {label} needs packed weights "
                                  f"{quantized_param_names(m)}; the file has {sorted(params)}")


def _snapshot(model: torch.nn.Module) -> list[tuple]:
    """References to every module's children, parameters and buffers (no tensor is copied)."""
    return [(m, dict(m._modules), dict(m._parameters), dict(m._buffers)) for m in model.modules()]


def _restore(snapshot: list[tuple]) -> None:
    for m, modules, params, buffers in snapshot:
        for live, saved in ((m._modules, modules), (m._parameters, params), (m._buffers, buffers)):
            live.clear()
            live.update(saved)


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
    `lowbit.BackendConfig` (default: BackendConfig()). Everything is checked before the model is touched (the file
    by `open_checkpoint`, as `lowbit info` does; then every tensor's name, shape and dtype and every swapped layer's
    type against the model); a CheckpointError naming the file and tensor leaves the model exactly as it was. Returns
    the model (a new module only when the model itself is the one quantized layer).
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"load() needs the float nn.Module to load into, got {type(model).__name__}")
    ckpt = open_checkpoint(path)
    sections = file_sections(ckpt.path, ckpt.body)
    saved = _snapshot(model)
    for kind, section in sections.items():  # e.g. a static int8 file folds its BatchNorms first (structure only)
        if section.prepare is None:
            continue
        try:
            section.prepare(model, ckpt.body[kind])
        except ValueError as e:
            _restore(saved)
            raise CheckpointError(f"{ckpt.path}: {e}") from None
    try:
        return _load_checked(ckpt, model, backend, sections, saved)
    except CheckpointError:
        _restore(saved)
        raise


def _load_checked(ckpt: Checkpoint, model, backend, sections: dict, saved) -> torch.nn.Module:
    model_sd = model.state_dict(keep_vars=True)
    transient = frozenset(k for k, _ in model.named_buffers()) - set(model_sd)
    prefix = find_prefix([*ckpt.quantized, *ckpt.floats], set(model_sd) | transient)
    aliases = module_aliases(model)  # a module under two names: its tensors are in the file twice, as torch saves
    ckpt, model_sd = drop_alias_tensors(ckpt, aliases, prefix), without_alias_keys(model_sd, aliases)
    floats = check_against_model(ckpt, model_sd, prefix, transient)
    weights = {prefix + name: ckpt.quantized_weight(name) for name in ckpt.quantized}
    check_swappable(ckpt.path, model, weights)
    vectors = _input_scales(ckpt, model, prefix)
    tensors = {prefix + n: _as_model_dtype(ckpt.tensor(n), model_sd[prefix + n]) for n in floats}
    try:
        model = _swap_and_assign(ckpt, model, weights, tensors, backend)
        modules = dict(model.named_modules())
        for layer, s in vectors.items():
            modules[layer].set_input_scale(s)
        for kind, section in sections.items():  # e.g. static int8 layers replace their weight-only forms
            if section.apply is not None:
                model = section.apply(model, ckpt.body[kind], set(weights))
        return model
    except BaseException as e:  # everything was checked above; should anything still fail, undo every change
        _restore(saved)
        if isinstance(e, (ValueError, RuntimeError)) and not isinstance(e, CheckpointError):
            raise CheckpointError(f"{ckpt.path}: {e}") from e
        raise


def _input_scales(ckpt: Checkpoint, model, prefix: str) -> dict[str, torch.Tensor]:
    """{layer: AWQ input-scale vector} of a format-3 file; each layer must be a Linear's or Conv1d/2d's weight, and
    a conv's vector must have one entry per input channel."""
    from ..nn.swap import INPUT_SCALE_LAYERS
    from .header import INPUT_SCALE, tensor_name

    modules, out = dict(model.named_modules()), {}
    for name in ckpt.body.get("input_scales", []):
        layer, _, param = (prefix + name).rpartition(".")
        module = modules.get(layer)
        if param != "weight" or not isinstance(module, INPUT_SCALE_LAYERS):
            raise CheckpointError(f"{ckpt.path}: input scale of {name!r}: only a Linear's, Conv1d's or Conv2d's "
                                  "weight takes one")
        s = ckpt.tensor(tensor_name(name, INPUT_SCALE))
        channels = getattr(module, "in_channels", getattr(module, "in_features", None))
        if tuple(s.shape) != (channels,):
            raise CheckpointError(f"{ckpt.path}: input scale of {name!r} has shape {list(s.shape)}, but the layer "
                                  f"has {channels} input channels")
        out[layer] = s
    return out


def _swap_and_assign(ckpt: Checkpoint, model, weights: dict, tensors: dict, backend) -> torch.nn.Module:
    if weights:
        from ..nn import swap_quantized
        from ..runtime import BackendConfig

        model = swap_quantized(model, weights, backend if backend is not None else BackendConfig())
    result = model.load_state_dict(tensors, strict=False, assign=True)
    if result.unexpected_keys:
        raise CheckpointError(f"{ckpt.path}: tensors {result.unexpected_keys[:3]} could not be placed in the model")
    return model
