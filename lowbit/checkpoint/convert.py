"""`convert`: a float checkpoint on disk -> a lowbit checkpoint, tensor by tensor, without building the model.

The output layout is planned from the source header alone (packed shapes follow from shape, bits and block), so
the file is written in one pass with each tensor placed at its final offset; at any time only one source tensor
and its quantized form are in memory.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..quant.config import QuantConfig
from ..quant.format import FORMAT_NAME, FORMAT_VERSION
from ..quant.quantize import quantize_weight
from .errors import CheckpointError
from .header import expected_entries, tensor_name
from .hf_folder import CONFIG_NAME, WEIGHTS_NAME, carried_files, copy_files
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
from .safetensors_io import TensorEntry
from .save import write_checkpoint
from .sources import Source, open_source


@dataclass
class TensorPlan:
    """What happens to one source tensor: quantized with `cfg`, or kept (`reason`), maybe cast to float16."""

    source: TensorEntry
    cfg: QuantConfig | None
    reason: str = ""
    out: list[TensorEntry] = field(default_factory=list)

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


def plan_tensor(src: TensorEntry, cfg: QuantConfig, rules, skip, kept_float16: bool) -> TensorPlan:
    """Decide one tensor's fate from the default rule, --skip patterns and the overrides."""
    name = src.name
    reason = never_quantized(name, src.dtype, src.shape)
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
    out = expected_entries(name, _meta(name, src, cfg), cfg.scale_torch_dtype)
    return TensorPlan(src, cfg, "", out)


def _write_tensor(writer, source: Source, plan: TensorPlan) -> None:
    name = plan.source.name
    t = source.get(name)
    if plan.cfg is None:
        target = plan.out[0].dtype
        if target != t.dtype and bool((t.abs() > torch.finfo(torch.float16).max).any()):
            raise CheckpointError(f"{name} has values beyond float16's range; convert it without --fp16")
        writer.write(name, t.to(target))
        return
    qw = quantize_weight(t, plan.cfg, name=name)
    for f, tensor in qw.tensors().items():
        writer.write(tensor_name(name, f), tensor)


def convert(src: str | Path, dst: str | Path, cfg: QuantConfig | None = None, overrides=None, skip=(),
            external_data: bool = False, progress: bool = True, kept_float16: bool = False) -> ConvertSummary:
    """Convert a float checkpoint file to a lowbit checkpoint; returns a `ConvertSummary`.

    src: .safetensors, an HF sharded `*.index.json`, a torch .pt/.pth/.bin (weights_only), or a directory with one
    (a Hugging Face model folder as is). dst: a file, or a folder (existing, or a path ending in "/"): then the
    checkpoint is `dst/model.safetensors` and the source folder's config.json and tokenizer files are copied beside.
    cfg: the default QuantConfig (4-bit, block 64, RTN). overrides: per-layer settings, a JSON file path or dict
    (see `lowbit.checkpoint.overrides`). skip: names or globs kept untouched; each must match a tensor.
    kept_float16: store the float tensors that are not quantized (embeddings, norms, biases) as float16. The write
    is atomic (an earlier `dst` survives a failure); a `dst` that is one of the inputs (by any path or link), or an
    existing file that is not a regular file, is refused before anything is written (see `lowbit.checkpoint.outputs`).
    """
    t0 = time.perf_counter()
    cfg = cfg or QuantConfig()
    skip = (skip,) if isinstance(skip, str) else tuple(skip)
    source = open_source(src)
    dst, carry = folder_output(dst, src)
    check_output(Path(dst), source.files)
    for f in carry:  # every refusal before the first write
        check_output(Path(dst).parent / f.name, [*source.files, f])
    rules = load_overrides(overrides, cfg) if overrides is not None else []
    aware = [r.pattern for r in rules if r.cfg is not None and r.cfg.data_aware]
    if aware or cfg.data_aware:
        raise CheckpointError(f"{aware[0] if aware else 'the default config'}: method gptq/awq needs the model and "
                              "calibration data, which a checkpoint conversion has not: use lowbit convert --model "
                              "MODULE:FUNCTION --calib DATA --config LAYERS_JSON OUT")
    check_rules_used(rules, source.entries, str(overrides) if isinstance(overrides, (str, Path)) else "overrides")
    check_skip_used(skip, list(source.entries))
    plans = [plan_tensor(e, cfg, rules, skip, kept_float16) for e in source.entries.values()]
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

    write_checkpoint(dst, out_entries, quantized, fill, external_data, inputs=source.files)
    carried = copy_files(carry, Path(dst).parent, source.files)
    return ConvertSummary(plans, sum(p.source.nbytes for p in plans), sum(p.bytes_after for p in plans),
                          time.perf_counter() - t0, carried)


def folder_output(dst: str | Path, src: str | Path) -> tuple[Path, list[Path]]:
    """Where convert writes, and what it copies there: an OUT that is a folder (existing, or named with a trailing
    slash) gets `OUT/model.safetensors` plus the source folder's config.json and tokenizer files."""
    out = Path(dst)
    if not (os.path.isdir(out) or str(dst).endswith(("/", os.sep))):  # isdir: False for a too-long name
        return out, []
    out.mkdir(exist_ok=True)
    folder = Path(src) if Path(src).is_dir() else Path(src).parent
    config = [folder / CONFIG_NAME] if (folder / CONFIG_NAME).is_file() else []
    return out / WEIGHTS_NAME, config + carried_files(folder)
