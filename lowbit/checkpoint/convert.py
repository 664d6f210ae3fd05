"""`convert`: a float checkpoint on disk -> a lowbit checkpoint, tensor by tensor, without building the model.

The output layout is planned from the source header alone (packed shapes follow from shape, bits and block), so
the file is written in one pass with each tensor placed at its final offset; at any time only one source tensor
and its quantized form are in memory.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..quant.config import QuantConfig
from ..quant.format import FORMAT_NAME, FORMAT_VERSION
from . import compressed_tensors as ct
from .errors import CheckpointError
from .header import expected_entries, tensor_name
from .hf_folder import CONFIG_NAME, WEIGHTS_NAME, carried_files, config_file, copy_files
from .output_folder import replacing_folder
from .outputs import check_output
from .overrides import (
    MIN_ELEMENTS,
    check_rules_used,
    check_skip_used,
    find_rule,
    load_overrides,
    never_quantized,
    skip_matches,
)
from .quantization_config import stamp_quantization_config
from .safetensors_io import TensorEntry
from .save import write_checkpoint
from .shards import write_folder_checkpoint
from .sources import Source, open_source


@dataclass
class TensorPlan:
    """What happens to one source tensor: quantized with `cfg`, or kept (`reason`), maybe cast to float16."""

    source: TensorEntry
    cfg: QuantConfig | None
    reason: str = ""
    out: list[TensorEntry] = field(default_factory=list)
    exact: bool = False  # quantized with integer zeros and full blocks (what compressed-tensors holds exactly)

    @property
    def bytes_after(self) -> int:
        return sum(e.nbytes for e in self.out)


@dataclass
class ConvertSummary:
    """Result of a conversion: per-tensor plans, counts, sizes in bytes and wall time in seconds."""

    plans: list[TensorPlan]
    bytes_before: int
    bytes_after: int
    seconds: float
    carried: list[Path] = field(default_factory=list)  # config.json and tokenizer files copied into an OUT folder

    @property
    def n_quantized(self) -> int:
        return sum(p.cfg is not None for p in self.plans)

    @property
    def n_kept(self) -> int:
        return sum(p.cfg is None for p in self.plans)

    @property
    def ratio(self) -> float:
        return self.bytes_before / max(1, self.bytes_after)


def _meta(name: str, src: TensorEntry, cfg: QuantConfig) -> dict:
    method = "fp16" if cfg.is_float else cfg.method.value
    return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "shape": list(src.shape),
            "dtype": str(src.dtype).removeprefix("torch."), "bits": cfg.bits,
            "block_size": -1 if cfg.is_float else cfg.block_size, "symmetric": True if cfg.is_float else cfg.symmetric,
            "method": method}


def plan_tensor(src: TensorEntry, cfg: QuantConfig, rules, skip, kept_float16: bool,
                exact_for: str | None = None) -> TensorPlan:
    """Decide one tensor's fate from the default rule, --skip patterns and the overrides; exact_for
    ("compressed-tensors"): quantize to what that format holds exactly, keep what it cannot hold."""
    name = src.name
    reason = never_quantized(name, src.dtype, src.shape)
    if reason is None and exact_for and (len(src.shape) != 2 or ct.module_of(name) is None):
        reason = f"{exact_for} holds Linear weights only"
    rule = find_rule(rules, name) if reason is None else None
    if reason is None and any(skip_matches(p, name) for p in skip):
        reason = "skipped"
    elif reason is None and rule is not None:
        cfg = rule.cfg
        reason = "" if cfg is not None else "skipped by overrides"
    elif reason is None and src.nbytes // src.dtype.itemsize < MIN_ELEMENTS:
        reason = f"< {MIN_ELEMENTS} elements"
    if reason:
        cast = kept_float16 and src.dtype in (torch.float32, torch.float64, torch.bfloat16)
        out = TensorEntry(name, torch.float16 if cast else src.dtype, src.shape)
        return TensorPlan(src, None, reason + (", stored float16" if cast else ""), [out])
    if exact_for:  # a group size dividing K: no last short block
        cfg = replace(cfg, block_size=ct.requantize_group(src.shape[1], cfg.block_size))
    out = expected_entries(name, _meta(name, src, cfg), cfg.scale_torch_dtype)
    return TensorPlan(src, cfg, "", out, exact=bool(exact_for))


def _write_tensor(writer, source: Source, plan: TensorPlan) -> None:
    name = plan.source.name
    t = source.get(name)
    if plan.cfg is None:
        target = plan.out[0].dtype
        if target != t.dtype and bool((t.abs() > torch.finfo(torch.float16).max).any()):
            raise CheckpointError(f"{name} has values beyond float16's range; convert it without --fp16")
        writer.write(name, t.to(target))
        return
    cfg = plan.cfg
    qw = ct.quantize_exact(t, cfg.bits, cfg.block_size, cfg.symmetric, cfg.scale_torch_dtype) if plan.exact \
        else quantize_weight(t, cfg, name=name)
    for f, tensor in qw.tensors().items():
        writer.write(tensor_name(name, f), tensor)


def quantize_weight(t: torch.Tensor, cfg: QuantConfig, name: str = "weight"):
    """One weight with its config's registered data-free method (rtn, hqq: `lowbit.quant.quantize_weight`)."""
    from ..methods.plain import quantize_by_method

    return quantize_by_method(t, cfg, name)


def _needs_calibration(cfg: QuantConfig) -> bool:
    """The config's method needs calibration data (the method registry), or its awq flag does."""
    from ..methods import method_for

    return cfg.awq or method_for(cfg.method).needs_calibration


def convert(src: str | Path, dst: str | Path, cfg: QuantConfig | None = None, overrides=None, skip=(),
            external_data: bool = False, progress: bool = True, kept_float16: bool = False,
            exact_for: str | None = None, max_shard_size: int | str | None = None) -> ConvertSummary:
    """Convert a float checkpoint file to a lowbit checkpoint; returns a `ConvertSummary`.

    src: .safetensors, an HF sharded `*.index.json`, a torch .pt/.pth/.bin (weights_only), or a directory with one
    (a Hugging Face model folder as is). dst: a file, or a folder (existing, a path ending in "/", or any path not
    ending in .safetensors when src is a model folder): then the checkpoint is `dst/model.safetensors` and the source
    folder's config.json and tokenizer files are copied beside.
    cfg: the default QuantConfig (4-bit, block 64, RTN). overrides: per-layer settings, a JSON file path or dict
    (see `lowbit.checkpoint.overrides`). skip: names or globs kept untouched; each must match a tensor.
    kept_float16: store the float tensors that are not quantized (embeddings, norms, biases) as float16.
    exact_for="compressed-tensors": RTN with integer zeros and group sizes dividing K (so `export` packs every
    quantized weight as is); tensors that format cannot hold stay float. max_shard_size (folder outputs): shards
    and an HF index. The write is atomic (an earlier `dst` survives a failure; a folder is built beside and swapped
    in whole, see `lowbit.checkpoint.output_folder`); a `dst` that is one of the inputs (by any path or link), or an
    existing file that is not a regular file, is refused before anything is written (see `lowbit.checkpoint.outputs`).
    """
    t0 = time.perf_counter()
    cfg = cfg or QuantConfig()
    skip = (skip,) if isinstance(skip, str) else tuple(skip)
    source = open_source(src)
    if not source.entries:
        raise CheckpointError(f"{src} holds no tensors; there is nothing to convert")
    _check_exact(cfg, exact_for)
    dst, carry, folder = folder_output(dst, src)
    if max_shard_size is not None and (folder is None or external_data):
        raise ValueError("max_shard_size splits a model folder's weights: give a folder OUT (ending in '/'), "
                         "without external_data")
    if folder is None:
        check_output(Path(dst), source.files)
    rules = load_overrides(overrides, cfg) if overrides is not None else []
    rules = rebase_rules(rules, list(source.entries), overrides)
    aware = [r.pattern for r in rules if r.cfg is not None and _needs_calibration(r.cfg)]
    if aware or _needs_calibration(cfg):
        raise CheckpointError(f"{aware[0] if aware else 'the default config'}: method gptq/awq needs the model and "
                              "calibration data, which a checkpoint conversion has not: use lowbit convert --model "
                              "MODULE:FUNCTION --calib DATA --config LAYERS_JSON OUT")
    for rule in rules:
        if rule.cfg is not None:
            _check_exact(rule.cfg, exact_for)
    check_rules_used(rules, source.entries, str(overrides) if isinstance(overrides, (str, Path)) else "overrides")
    check_skip_used(skip, list(source.entries))
    plans = [plan_tensor(e, cfg, rules, skip, kept_float16, exact_for) for e in source.entries.values()]
    quantized = {p.source.name: _meta(p.source.name, p.source, p.cfg) for p in plans if p.cfg is not None}
    out_entries = [e for p in plans for e in p.out]

    def fill(writer) -> None:
        from tqdm import tqdm

        total = sum(p.source.nbytes for p in plans)
        with tqdm(total=total, unit="B", unit_scale=True, desc="convert", disable=not progress, file=sys.stderr,
                  leave=False) as bar:
            for p in plans:
                _write_tensor(writer, source, p)
                bar.update(p.source.nbytes)

    carried = []
    if folder is None:
        write_checkpoint(dst, out_entries, quantized, fill, external_data, inputs=source.files)
    else:
        with replacing_folder(folder, [*source.files, *carry]) as tmp:
            write_folder_checkpoint(tmp, out_entries, quantized, fill, external_data, max_shard_size)
            copied = copy_files(carry, tmp, source.files)
            stamp_quantization_config(copied, cfg)  # config.json says quant_method lowbit: transformers loads it packed
            carried = [folder / f.name for f in copied]
    return ConvertSummary(plans, sum(p.source.nbytes for p in plans), sum(p.bytes_after for p in plans),
                          time.perf_counter() - t0, carried)


def rebase_rules(rules: list, names: list[str], overrides) -> list:
    """The overrides with keys as the checkpoint names layers (a `lowbit auto` plan for a wrapped model declares
    the wrapper prefix its keys carry, "model_prefix")."""
    from .names import declared_prefix, rebase_keys, unmatched_message
    from .overrides import LayerRule

    if not rules:
        return rules
    keys = [r.pattern for r in rules]
    drop = declared_prefix(overrides)
    mapped = rebase_keys(keys, names, droppable=drop)
    if mapped is None:
        where = str(overrides) if isinstance(overrides, (str, Path)) else "overrides"
        raise CheckpointError(unmatched_message(where, keys, names, "the checkpoint", droppable=drop))
    return [LayerRule(mapped[r.pattern], r.cfg) for r in rules]


def folder_output(dst: str | Path, src: str | Path) -> tuple[Path, list[Path], Path | None]:
    """Where convert writes, what it copies there, and the output folder (None for a file output): an OUT that is a
    folder (existing, or named with a trailing slash), or any OUT not ending in .safetensors when the input is a
    model folder (a folder in gives a folder out), gets `OUT/model.safetensors` plus the source folder's
    config.json (checked to be a JSON object) and tokenizer files, links followed as `hf_folder` says."""
    out = Path(dst)
    folder_in = Path(src).is_dir() and os.path.lexists(Path(src) / CONFIG_NAME)
    as_folder = os.path.isdir(out) or str(dst).endswith(("/", os.sep)) \
        or (folder_in and not str(dst).endswith(".safetensors"))  # isdir: False for a too-long name
    if not as_folder:
        return out, [], None
    folder = Path(src) if Path(src).is_dir() else Path(src).parent
    config = config_file(folder)
    return out / WEIGHTS_NAME, ([config] if config else []) + carried_files(folder), out


def _check_exact(cfg: QuantConfig, exact_for: str | None) -> None:
    if exact_for is None:
        return
    if exact_for != ct.FORMAT:
        raise ValueError(f"unknown format {exact_for!r} to quantize for; supported: {ct.FORMAT}")
    if cfg.is_float or cfg.method.value != "rtn":
        raise ValueError(f"--format {exact_for} quantizes with RTN and integer zeros; got "
                         f"{'bits 16' if cfg.is_float else 'method ' + cfg.method.value} (HQQ's zeros are floats)")
