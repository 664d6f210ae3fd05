"""`export`: a lowbit checkpoint -> a compressed-tensors `pack-quantized` folder (what vLLM loads).

The folder holds `model.safetensors` (packed int32 codes, scales in the model's dtype, shapes, packed zero points;
float tensors as they are), `config.json` (the source's, with `quantization_config` added) and the tokenizer files
found next to that config. Weights that pack-quantized cannot hold exactly (`compressed_tensors.unrepresentable`)
are never changed silently: refused naming why (default), requantized with an integer zero (`requantize=True`, the
added error measured and reported) or kept in float (`allow_float=True`: lowbit's dequantized weight, listed in
`ignore`, with a warning). The folder is built beside the output and swapped in whole (`output_folder`): a crash or
a concurrent export never leaves a mix of two models; an output folder that holds an input is refused.
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from tqdm import tqdm

from ..quant.format import QuantizedWeight
from . import compressed_tensors as ct
from .compressed_tensors import module_of
from .errors import CheckpointError
from .export_checks import check_names, section_folds
from .hf_folder import CONFIG_NAME, carried_files, config_file, copy_files, read_config, write_json
from .output_folder import replacing_folder
from .reader import Checkpoint, open_checkpoint
from .safetensors_io import TensorEntry
from .shards import ShardedWriter, checkpoint_in_folder, parse_size

FORMATS = (ct.FORMAT,)
SMOOTHED = "SmoothQuant-scaled (its input_smooth folded back into the weight)"


@dataclass
class ExportPlan:
    """One quantized weight: `action` "packed" (as is), "requantized" or "float"; `reason` why it is not packed as
    is; `group` the compressed-tensors group (-1 = channel); errors relative to lowbit's own dequantized weight."""

    name: str
    action: str
    reason: str = ""
    bits: int = 0
    group: int = -1
    symmetric: bool = True
    rel_error: float = 0.0
    max_abs_error: float = 0.0


@dataclass
class ExportSummary:
    out_dir: Path
    plans: list[ExportPlan]
    quantization_config: dict
    files: list[Path]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, action: str) -> int:
        return sum(p.action == action for p in self.plans)

    def table(self) -> str:
        """Counts, then one row per weight that was not packed as is or whose numbers changed, then the notes."""
        from tabulate import tabulate

        head = tabulate([[self.count("packed"), self.count("requantized"), self.count("float"),
                          len(self.quantization_config["ignore"]), f"{self.seconds:.1f} s"]],
                        headers=["packed", "requantized", "kept float", "ignored modules", "time"], tablefmt="github")
        changed = [p for p in self.plans if p.action != "packed" or p.rel_error]
        rows = [[p.name, p.action, p.reason, f"{p.rel_error:.3e}", f"{p.max_abs_error:.3e}"] for p in changed]
        parts = [head]
        if rows:
            parts.append(tabulate(rows, headers=["weight", "action", "why", "added rel. error", "added max abs"],
                                  tablefmt="github", disable_numparse=True))
        notes = "\n".join(f"note: {n}" for n in self.notes)
        return "\n\n".join(parts + ([notes] if notes else []))


def _error(ref: torch.Tensor, new: torch.Tensor) -> tuple[float, float]:
    d = (new.double() - ref.double()).flatten()
    norm = float(ref.double().norm())
    return (float(d.norm()) / norm if norm else float(d.norm())), float(d.abs().max()) if d.numel() else 0.0


def _plan(name: str, qw: QuantizedWeight, requantize: bool, smoothed: bool) -> tuple[ExportPlan, object]:
    """The plan of one weight and the QuantizedWeight whose shapes it will be written with (None: float)."""
    reason = SMOOTHED if smoothed and module_of(name) else ct.unrepresentable(name, qw)
    if reason is None:
        return ExportPlan(name, "packed", "", qw.bits, ct.effective_group(qw), qw.symmetric), qw
    if requantize and ct.can_requantize(name, qw):
        block = ct.requantize_group(qw.k, qw.block_size)
        target = replace(qw, shape=(qw.n, qw.k), block_size=block)
        return ExportPlan(name, "requantized", reason, qw.bits, ct.effective_group(target), qw.symmetric), target
    return ExportPlan(name, "float", reason), None


def _refuse(plans: list[ExportPlan], path: Path, what: str, fix: str, actions=("requantized", "float")) -> None:
    bad = [p for p in plans if p.action in actions]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        listed = "; ".join(f"{p.name}: {p.reason}" for p in bad[:3])
        raise CheckpointError(f"{path}: {len(bad)} weight(s) {what}: {listed}{more}; {fix}")


def _fix_for(plans: list[ExportPlan]) -> str:
    """How to get every weight packed, for the reasons at hand."""
    reasons = " ".join(p.reason for p in plans if p.action == "float")
    tips = []
    if "non-integer zeros" in reasons:
        tips.append("convert with --format compressed-tensors (integer zeros, full blocks) or --symmetric")
    if "non-integer zeros" in reasons or "short block" in reasons or SMOOTHED in reasons or "float16" in reasons:
        tips.append("pass --requantize (RTN with integer zeros; the added error is reported)")
    tips.append("or --allow-float to keep them in float, listed in ignore")
    return ", ".join(tips)


def _entries(ckpt: Checkpoint, plans: list[ExportPlan], targets: dict, out, zp_layout: str) -> list[TensorEntry]:
    entries = [TensorEntry(out(n), ckpt.entries[n].dtype, ckpt.entries[n].shape) for n in ckpt.floats]
    for p in plans:
        meta = ckpt.quantized[p.name]
        dtype = getattr(torch, meta["dtype"])
        if targets[p.name] is None:
            entries.append(TensorEntry(out(p.name), dtype, tuple(meta["shape"])))
            continue
        module = module_of(out(p.name))
        for suffix, (dt, shape) in ct.ct_shapes(targets[p.name], dtype, zp_layout).items():
            entries.append(TensorEntry(f"{module}.{suffix}", dt, shape))
    return entries


def _write_weight(writer, ckpt: Checkpoint, p: ExportPlan, smooth: torch.Tensor | None, out, zp_layout) -> None:
    qw = ckpt.quantized_weight(p.name)
    ref = qw.dequantize()
    if smooth is not None:  # the stored weight is W*s; input_smooth holds 1/s per input channel
        ref = (ref.double() * smooth.double()).to(ref.dtype)
    if p.action == "float":
        writer.write(out(p.name), ref)
        return
    new = ct.requantize(qw, qw.dtype, ref.float() if smooth is not None else None) \
        if p.action == "requantized" else qw
    if p.action == "requantized" or not ct.scale_cast_exact(qw, qw.dtype):
        cast = replace(new, scale=new.scale.to(qw.dtype))
        p.rel_error, p.max_abs_error = _error(ref, cast.dequantize().reshape(ref.shape))
    module = module_of(out(p.name))
    for suffix, t in ct.ct_tensors(new, qw.dtype, zp_layout).items():
        writer.write(f"{module}.{suffix}", t)


def _float_modules(ckpt: Checkpoint, plans: list[ExportPlan], out) -> list[str]:
    """Modules whose weight stays float: plain rank-2 floating `*.weight` tensors and weights kept in float."""
    names = [n for n in ckpt.floats if len(ckpt.entries[n].shape) == 2 and ckpt.entries[n].dtype.is_floating_point]
    names += [p.name for p in plans if p.action == "float"]
    return sorted({module_of(out(n)) or out(n).rpartition(".")[0] for n in names} - {""})


def _source(src: Path) -> Path:
    return checkpoint_in_folder(src) if src.is_dir() else src


def _config(src: Path, config: str | Path | None) -> Path | None:
    """The config.json to pair with the weights: the one given, else the one next to src (links as hf_folder)."""
    if config is None:
        return config_file(src.parent)
    path = Path(config)
    if not path.is_file():
        raise FileNotFoundError(f"model config {path} does not exist or is not a regular file")
    return path


def _notes(plans: list[ExportPlan], config_path: Path | None, had_qc: bool) -> list[str]:
    notes = []
    odd = sorted({p.bits for p in plans if p.action != "float" and p.bits not in ct.VLLM_BITS})
    if odd:
        notes.append(f"{odd}-bit weights are valid compressed-tensors but vLLM's WNA16 kernels serve "
                     f"{' and '.join(map(str, ct.VLLM_BITS))} bits only")
    cast = [p.name for p in plans if p.action == "packed" and p.rel_error]
    if cast:
        notes.append(f"{len(cast)} weight(s) had scales rounded to the model dtype (error in the table)")
    if config_path is None:
        notes.append(f"no {CONFIG_NAME} found next to the input (pass config=): the written one holds only "
                     "quantization_config, which vLLM cannot load alone")
    if had_qc:
        notes.append(f"the source {CONFIG_NAME} already had a quantization_config; it was replaced")
    return notes


def export(src: str | Path, out_dir: str | Path, format: str = ct.FORMAT, config: str | Path | None = None,
           requantize: bool = False, strict: bool = False, progress: bool = True, allow_float: bool = False,
           weight_only: bool = False, max_shard_size: int | str | None = None,
           zero_point_layout: str = "transformers") -> ExportSummary:
    """Write a lowbit checkpoint as a compressed-tensors `pack-quantized` folder (see docs/FORMAT.md section 8).

    src: a lowbit checkpoint file, or a folder holding one as model.safetensors (what `lowbit convert` writes into
    a folder). config: the original config.json (default: the one next to src); its tokenizer files are copied too,
    and the checkpoint's tensor names are checked against the architecture it describes (`export_checks`).
    Every quantized weight must be packed: weights pack-quantized cannot hold exactly are refused naming why, unless
    requantize=True (Linear weights get an integer zero and a group dividing K; error reported) or allow_float=True
    (kept in float, listed in `ignore`, with a warning); strict=True refuses requantizing too. Static int8
    checkpoints need weight_only=True (activation steps dropped, smoothing folded back). max_shard_size (bytes or
    "500MB") splits the weights into shards with an HF index. zero_point_layout: "transformers" (loads with
    transformers' from_pretrained) or "vllm" (the package's packed rows; see compressed_tensors). The folder is
    built beside `out_dir` and swapped in whole (`output_folder`). Returns an `ExportSummary`.
    """
    t0 = time.perf_counter()
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; supported: {', '.join(FORMATS)}")
    if strict and (requantize or allow_float):
        raise ValueError("strict=True refuses weights that requantize=True or allow_float=True would change; "
                         "pass one of them")
    ct.zero_point_shape(1, 1, 4, zero_point_layout)  # a bad layout name fails before anything is read
    max_bytes = parse_size(max_shard_size) if max_shard_size is not None else None
    src, out_dir = _source(Path(src)), Path(out_dir)
    ckpt = open_checkpoint(src)
    if ckpt.body.get("input_scales"):  # pack-quantized has no per-input-channel divisor: the layers would be wrong
        raise CheckpointError(f"{src} holds AWQ input-scale vectors ({ckpt.body['input_scales'][:3]}), which "
                              f"{format} cannot represent; quantize with awq_fold= for those layers or another method")
    if not ckpt.quantized:
        raise CheckpointError(f"{src} holds no quantized weight; there is nothing to pack (convert the model first)")
    folds, notes = section_folds(ckpt, weight_only)
    config_path = _config(src, config)
    base = read_config(config_path) if config_path else {}
    prefix, name_notes = check_names(ckpt.path, [*ckpt.quantized, *ckpt.floats], base, config_path)
    planned = [_plan(name, ckpt.quantized_weight(name), requantize, name in folds) for name in sorted(ckpt.quantized)]
    plans, targets = [p for p, _ in planned], {p.name: t for p, t in planned}
    if strict:
        _refuse(plans, ckpt.path, "cannot be written exactly as pack-quantized",
                "without strict, pass requantize=True (or allow_float=True to keep them in float)")
    elif not allow_float:
        packed = len(plans) - sum(p.action == "float" for p in plans)
        _refuse(plans, ckpt.path, f"would stay float (only {packed} of {len(plans)} quantized weights would be "
                "packed)", _fix_for(plans), actions=("float",))
    elif any(p.action == "float" for p in plans):
        kept = [p.name for p in plans if p.action == "float"]
        warnings.warn(f"export of {src}: {len(kept)} of {len(plans)} quantized weights are written in FLOAT, not "
                      f"packed (allow_float): {kept[:3]}{' ...' if len(kept) > 3 else ''}", stacklevel=2)

    def out(name: str) -> str:
        return name[len(prefix):]

    groups: dict[tuple[int, int, bool], list[str]] = {}
    for p in plans:
        if p.action != "float":
            groups.setdefault((p.bits, p.group, p.symmetric), []).append(module_of(out(p.name)))
    qc = ct.quantization_config(groups, _float_modules(ckpt, plans, out))
    carried = carried_files(config_path.parent) if config_path else []
    inputs = [ckpt.path, *([ckpt.external] if ckpt.external else []), *([config_path] if config_path else []),
              *carried]
    entries = _entries(ckpt, plans, targets, out, zero_point_layout)
    with replacing_folder(out_dir, inputs) as tmp:
        with ShardedWriter(tmp, entries, {"format": "pt"}, max_bytes) as writer:
            for name in ckpt.floats:
                writer.write(out(name), ckpt.tensor(name))
            for p in tqdm(plans, desc="export", disable=not progress, file=sys.stderr, leave=False):
                try:
                    _write_weight(writer, ckpt, p, folds.get(p.name), out, zero_point_layout)
                except (ValueError, RuntimeError) as e:
                    if isinstance(e, CheckpointError):
                        raise
                    raise CheckpointError(f"{src}: cannot export layer {p.name!r} ({p.action}): {e}") from None
            weights = writer.commit()
        write_json(tmp / CONFIG_NAME, {**base, "quantization_config": qc}, inputs)
        copied = copy_files(carried, tmp, inputs)
    files = [out_dir / f.name for f in [*weights, tmp / CONFIG_NAME, *copied]]
    had_qc = (base.get("quantization_config") or {}).get("quant_method", "lowbit") != "lowbit"  # lowbit's own: expected
    notes += name_notes + _notes(plans, config_path, had_qc)
    return ExportSummary(out_dir, plans, qc, files, notes, time.perf_counter() - t0)


def packed_bytes(summary: ExportSummary) -> int:
    """Bytes of the written files."""
    return sum(f.stat().st_size for f in summary.files if f.is_file())
