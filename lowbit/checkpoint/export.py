"""`export`: a lowbit checkpoint -> a compressed-tensors `pack-quantized` folder (what vLLM loads).

The folder holds `model.safetensors` (packed int32 codes, scales in the model's dtype, shapes, packed zero points;
float tensors as they are), `config.json` (the source's, with `quantization_config` added) and the tokenizer files
found next to that config. Weights that pack-quantized cannot hold exactly (`compressed_tensors.unrepresentable`)
are never changed silently: kept in float (lowbit's dequantized weight, listed in `ignore`), requantized with an
integer zero (`requantize=True`, the added error measured and reported), or refused (`strict=True`).
Every file is written atomically (temporary file + rename); an output that is an input is refused.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..quant.format import QuantizedWeight
from . import compressed_tensors as ct
from .errors import CheckpointError
from .hf_folder import CONFIG_NAME, WEIGHTS_NAME, carried_files, copy_files, read_config, write_json
from .outputs import check_output
from .reader import Checkpoint, open_checkpoint
from .safetensors_io import AtomicWriter, TensorEntry

FORMATS = (ct.FORMAT,)


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


def _plan(name: str, qw: QuantizedWeight, requantize: bool) -> tuple[ExportPlan, QuantizedWeight | None]:
    """The plan of one weight and the QuantizedWeight whose shapes it will be written with (None: float)."""
    reason = ct.unrepresentable(name, qw)
    if reason is None:
        return ExportPlan(name, "packed", "", qw.bits, ct.effective_group(qw), qw.symmetric), qw
    if requantize and ct.can_requantize(name, qw):
        block = ct.requantize_group(qw.k, qw.block_size)
        target = replace(qw, shape=(qw.n, qw.k), block_size=block)
        return ExportPlan(name, "requantized", reason, qw.bits, ct.effective_group(target), qw.symmetric), target
    return ExportPlan(name, "float", reason), None


def _refuse(plans: list[ExportPlan], path: Path, what: str, fix: str) -> None:
    bad = [p for p in plans if p.action != "packed"]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        listed = "; ".join(f"{p.name}: {p.reason}" for p in bad[:3])
        raise CheckpointError(f"{path}: {len(bad)} weight(s) {what}: {listed}{more}; {fix}")


def _entries(ckpt: Checkpoint, plans: list[ExportPlan], targets: dict) -> list[TensorEntry]:
    out = [TensorEntry(n, ckpt.entries[n].dtype, ckpt.entries[n].shape) for n in ckpt.floats]
    for p in plans:
        meta = ckpt.quantized[p.name]
        dtype = getattr(torch, meta["dtype"])
        if targets[p.name] is None:
            out.append(TensorEntry(p.name, dtype, tuple(meta["shape"])))
            continue
        module = ct.module_of(p.name)
        for suffix, (dt, shape) in ct.ct_shapes(targets[p.name], dtype).items():
            out.append(TensorEntry(f"{module}.{suffix}", dt, shape))
    return out


def _write_weight(writer: AtomicWriter, ckpt: Checkpoint, p: ExportPlan) -> None:
    qw = ckpt.quantized_weight(p.name)
    ref = qw.dequantize()
    if p.action == "float":
        writer.write(p.name, ref)
        return
    new = ct.requantize(qw, qw.dtype) if p.action == "requantized" else qw
    if p.action == "requantized" or not ct.scale_cast_exact(qw, qw.dtype):
        cast = replace(new, scale=new.scale.to(qw.dtype))
        p.rel_error, p.max_abs_error = _error(ref, cast.dequantize().reshape(ref.shape))
    module = ct.module_of(p.name)
    for suffix, t in ct.ct_tensors(new, qw.dtype).items():
        writer.write(f"{module}.{suffix}", t)


def _float_modules(ckpt: Checkpoint, plans: list[ExportPlan]) -> list[str]:
    """Modules whose weight stays float: plain rank-2 floating `*.weight` tensors and weights kept in float."""
    names = [n for n in ckpt.floats if len(ckpt.entries[n].shape) == 2 and ckpt.entries[n].dtype.is_floating_point]
    names += [p.name for p in plans if p.action == "float"]
    return sorted({ct.module_of(n) or n.rpartition(".")[0] for n in names} - {""})


def _source(src: Path) -> Path:
    if src.is_dir():
        if not (src / WEIGHTS_NAME).is_file():
            raise FileNotFoundError(f"{src} holds no {WEIGHTS_NAME} (a lowbit checkpoint) to export")
        return src / WEIGHTS_NAME
    return src


def _prepare_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise CheckpointError(f"output {out_dir} exists and is not a directory; export writes a folder")
    if not out_dir.parent.is_dir():
        raise FileNotFoundError(f"the directory {out_dir.parent} that would hold {out_dir} does not exist")
    out_dir.mkdir(exist_ok=True)


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
           requantize: bool = False, strict: bool = False, progress: bool = True) -> ExportSummary:
    """Write a lowbit checkpoint as a compressed-tensors `pack-quantized` folder (see docs/FORMAT.md section 8).

    src: a lowbit checkpoint file, or a folder holding one as model.safetensors (what `lowbit convert` writes into
    a folder). config: the original config.json (default: the one next to src); its tokenizer files are copied too.
    Weights pack-quantized cannot hold exactly are kept in float and listed in `ignore` (default), requantized with
    an integer zero (requantize=True; Linear weights only, error reported), or refused (strict=True). Returns an
    `ExportSummary` (`.table()` is what the CLI prints).
    """
    t0 = time.perf_counter()
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; supported: {', '.join(FORMATS)}")
    if strict and requantize:
        raise ValueError("strict=True refuses weights that requantize=True would change; pass one of them")
    src, out_dir = _source(Path(src)), Path(out_dir)
    ckpt = open_checkpoint(src)
    if ckpt.body.get("input_scales"):  # pack-quantized has no per-input-channel divisor: the layers would be wrong
        raise CheckpointError(f"{src} holds AWQ input-scale vectors ({ckpt.body['input_scales'][:3]}), which "
                              f"{format} cannot represent; quantize with awq_fold= for those layers or another method")
    config_path = Path(config) if config is not None else src.parent / CONFIG_NAME
    if config is not None and not config_path.is_file():
        raise FileNotFoundError(f"model config {config_path} does not exist")
    config_path = config_path if config_path.is_file() else None
    base = read_config(config_path) if config_path else {}
    planned = [_plan(name, ckpt.quantized_weight(name), requantize) for name in sorted(ckpt.quantized)]
    plans, targets = [p for p, _ in planned], {p.name: t for p, t in planned}
    if strict:
        _refuse(plans, ckpt.path, "cannot be written exactly as pack-quantized",
                "without strict they are kept in float (listed in ignore), or pass requantize=True")
    groups: dict[tuple[int, int, bool], list[str]] = {}
    for p in plans:
        if p.action != "float":
            groups.setdefault((p.bits, p.group, p.symmetric), []).append(ct.module_of(p.name))
    qc = ct.quantization_config(groups, _float_modules(ckpt, plans))
    carried = carried_files(config_path.parent) if config_path else []
    inputs = [ckpt.path, *([ckpt.external] if ckpt.external else []), *([config_path] if config_path else []),
              *carried]
    _prepare_dir(out_dir)
    for name in (WEIGHTS_NAME, CONFIG_NAME, *(f.name for f in carried)):  # all refusals before the first write
        check_output(out_dir / name, inputs)
    _write_weights(ckpt, plans, targets, out_dir / WEIGHTS_NAME, inputs, progress)
    had_qc = (base.get("quantization_config") or {}).get("quant_method", "lowbit") != "lowbit"  # lowbit's own: expected
    write_json(out_dir / CONFIG_NAME, {**base, "quantization_config": qc}, inputs)
    files = [out_dir / WEIGHTS_NAME, out_dir / CONFIG_NAME, *copy_files(carried, out_dir, inputs)]
    return ExportSummary(out_dir, plans, qc, files, _notes(plans, config_path, had_qc), time.perf_counter() - t0)


def _write_weights(ckpt: Checkpoint, plans: list[ExportPlan], targets: dict, path: Path, inputs: list[Path],
                   progress: bool) -> None:
    from tqdm import tqdm

    check_output(path, inputs)
    with AtomicWriter(path, _entries(ckpt, plans, targets), {"format": "pt"}) as writer:
        for name in ckpt.floats:
            writer.write(name, ckpt.tensor(name))
        for p in tqdm(plans, desc="export", disable=not progress, file=sys.stderr, leave=False):
            _write_weight(writer, ckpt, p)
        writer.commit()


def packed_bytes(summary: ExportSummary) -> int:
    """Bytes of the written files."""
    return sum(f.stat().st_size for f in summary.files if f.is_file())

