"""`quantize_decoder(folder, out, calibration, cfg)`: a decoder LLM quantized block by block, never built whole.

Order of work (the memory held at any time: one block's float weights, the calibration activations, the parts of
the model outside the blocks — embeddings, final norm, lm_head — and one block's quantized tensors being written):
 1. the causal LM of `folder/config.json` is built with its parameters on the meta device; the tensors outside
    the decoder blocks are loaded from the memory-mapped safetensors shards;
 2. the model runs on each calibration item up to its first block (`capture_block_inputs`): the hidden states go
    to an `ActivationStore` (bf16, spilled to disk past a budget), the block's other arguments are kept per item;
 3. for each block in order: load its weights, quantize its Linears group by group against the current
    activations (`quantize_block`: GPTQ's Hessians from the real tokens only), write its tensors to the output,
    run every item through the quantized block to get the next activations, put the block back on meta;
 4. lm_head (when it is not tied to the embedding; a tied one stays float) is quantized on the final hidden states,
    which reach it through the model's own final norm: the blocks are replaced by a stand-in that returns the
    stored states.
The output is an ordinary lowbit checkpoint (`lowbit.load` / `from_pretrained(path, model=...)`), written atomically
with each tensor at the offset planned from the source header.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..checkpoint.convert import _meta, folder_output
from ..checkpoint.errors import CheckpointError
from ..checkpoint.header import expected_entries, tensor_name
from ..checkpoint.hf_folder import copy_files
from ..checkpoint.output_folder import replacing_folder
from ..checkpoint.quantization_config import stamp_quantization_config
from ..checkpoint.safetensors_io import TensorEntry
from ..checkpoint.save import write_checkpoint
from ..nn import swap
from ..pipeline.registry import method_for
from ..pipeline.report import LayerError
from ..pipeline.weights import WeightResult
from ..quant.config import QuantConfig
from .activations import ActivationStore, BlockCall, as_token_batch, capture_block_inputs
from .block import call_block, quantize_block
from .skeleton import (
    ShardReader,
    build_skeleton,
    checkpoint_name,
    decoder_blocks,
    fix_mmap_threshold,
    free_module,
    load_module,
)


@dataclass
class SequentialSummary:
    """What `quantize_decoder` did: per-weight output errors (before = plain RTN/HQQ, after = the method, on the
    calibration tokens), the blocks, items, activations spilled to disk, sizes in bytes and wall time."""

    output: Path
    blocks: int
    items: int
    results: list[LayerError] = field(default_factory=list)  # errors only: the packed weights are on disk
    spilled: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    fallbacks: dict = field(default_factory=dict)  # weight -> why it kept RTN/HQQ (header says the method)
    block_seconds: list[float] = field(default_factory=list)  # wall time of each block, in order

    def __str__(self) -> str:
        from tabulate import tabulate

        rows = sorted(((r.name, r.before, r.after) for r in self.results), key=lambda r: -r[2])
        table = tabulate(rows[:20], headers=["weight (worst 20)", "error before", "error after"], floatfmt=".4f",
                         tablefmt="github")
        return (f"{table}\n\n{self.blocks} blocks, {len(self.results)} weights quantized on {self.items} calibration "
                f"items ({self.spilled} spilled to disk); {self.bytes_before / 1e6:.1f} MB -> "
                f"{self.bytes_after / 1e6:.1f} MB in {self.seconds:.1f} s -> {self.output}"
                + (f"\nper block: median {sorted(self.block_seconds)[len(self.block_seconds) // 2]:.1f} s, "
                   f"max {max(self.block_seconds):.1f} s" if self.block_seconds else "")
                + "".join(f"\nnote: {n}" for n in self.notes)
                + "".join(f"\nkept the data-free (RTN/HQQ) result: {k}: {v}" for k, v in self.fallbacks.items()))


def fits_per_weight(method) -> bool:
    """The block-by-block walk can run `method`: data-free, or data-aware with a per-weight fit from its inputs'
    statistics (`MethodSpec.fit_weight`: GPTQ, AWQ's clipping); not a method that trains whole blocks (recon)."""
    spec = method_for(method)
    return not spec.needs_calibration or spec.fit_weight is not None


def _meta_linear_reason() -> str | None:
    """What `why_float` says of a Linear only because its weight is on meta (planning happens before loading)."""
    return swap.why_float("", nn.Linear(64, 64, device="meta"), None, [], 0, 4096)


def planned_linears(model: nn.Module, skip, min_weights: int) -> dict[str, nn.Linear]:
    """{model name: Linear} of every Linear lowbit.quantize would quantize, decided on the meta skeleton."""
    modules, meta_reason, out = dict(model.named_modules()), _meta_linear_reason(), {}
    for name, m in modules.items():
        if isinstance(m, nn.Linear) and swap.quant_class(m) is not None:
            reason = swap.why_float(name, m, modules.get(name.rpartition(".")[0]), list(skip), min_weights,
                                    m.weight.numel())
            if reason in (None, meta_reason):
                out[name] = m
    return out


def plan_output(reader: ShardReader, targets: dict[str, nn.Linear], cfg: QuantConfig, dtype: torch.dtype):
    """(output entries, {name: quantized metadata}): every source tensor, kept or quantized, plus the quantized
    Linears whose weight the source holds only under another name (a tied lm_head). targets: {checkpoint name of
    the weight: its Linear}."""
    entries, quantized = [], {}
    for name in [*reader.where, *(n for n in targets if n not in reader.where)]:
        if name in targets:
            shape = tuple(targets[name].weight.shape)
            quantized[name] = _meta(name, TensorEntry(name, dtype, shape), cfg)
            entries += expected_entries(name, quantized[name], cfg.scale_torch_dtype)
        else:
            dtype_, shape = reader.slice(name)
            entries.append(TensorEntry(name, dtype_, shape))
    return entries, quantized


def _write_quantized(writer, name: str, result: WeightResult, planned: dict) -> None:
    """The packed tensors of `result`, which must be laid out as planned (the header is written first). A weight
    that kept its data-free start (result.fallback) differs only in `method`, which the summary reports."""
    got = result.qweight.metadata()
    if {**got, "method": None} != {**planned, "method": None} or (got != planned and not result.fallback):
        raise CheckpointError(f"{name}: quantized as {got}, planned {planned}")
    for f, t in result.qweight.tensors().items():
        writer.write(tensor_name(name, f), t)


def _error(r: WeightResult) -> LayerError:
    return LayerError(r.name, r.qweight.method, r.error_before, r.error_after)


class _Replay(nn.Module):
    """Stand-in for the first block: returns the stored final hidden states of the current item."""

    def __init__(self):
        super().__init__()
        self.value = None

    def forward(self, hidden, *args, **kwargs):
        return self.value


class _PassThrough(nn.Module):
    def forward(self, hidden, *args, **kwargs):
        return hidden


def quantize_decoder(folder: str | Path, out: str | Path, calibration, cfg: QuantConfig | None = None, skip=(),
                     min_weights: int = 1024, dtype: torch.dtype | None = None,
                     act_dtype: torch.dtype = torch.bfloat16, act_budget: int = 2 << 30,
                     progress: bool = True) -> SequentialSummary:
    """Quantize the causal LM in HF `folder` (config.json + safetensors) block by block into `out`.

    calibration: a list of items, each token ids (T,) / (B, T) or a dict with input_ids and attention_mask (padded
    tokens are left out of the statistics). cfg: the QuantConfig (GPTQ or AWQ, whose scales are folded inside
    each block, or RTN/HQQ which need no calibration pass). out: a file, or a folder (existing, or ending in '/')
    that gets model.safetensors plus config.json and the tokenizer files. dtype: the blocks' compute dtype, by
    default the checkpoint's (`compute_dtype`: bfloat16 for a bf16 checkpoint, float32 otherwise); GPTQ itself
    always works in float32/float64 on its own copy of each weight. act_dtype / act_budget: the activations'
    storage dtype and the bytes kept in memory before spilling to disk.
    Returns a `SequentialSummary`.
    """
    t0 = time.perf_counter()
    cfg = cfg or QuantConfig(method="gptq")
    if not fits_per_weight(cfg.method):
        raise ValueError(f"sequential decoder quantization needs a method that fits each weight on its inputs' "
                         f"statistics (gptq, awq, rtn, hqq or a plug-in with fit_weight), not {cfg.method.value!r}: "
                         "use lowbit.quantize on the whole model")
    items = list(calibration or [])
    if cfg.data_aware and not items:
        raise ValueError(f"{cfg.method.value} needs calibration tokens: pass a list of token-id tensors (or --calib)")
    folder = Path(folder)
    dst, carry, out_folder = folder_output(out, folder)
    fix_mmap_threshold()
    reader = ShardReader(folder)
    dtype = dtype or compute_dtype(reader)
    model = build_skeleton(folder, dtype)
    skip = [*([skip] if isinstance(skip, str) else skip or []), *swap.tied_modules(model)]
    blocks_name, blocks = decoder_blocks(model)
    linears = planned_linears(model, skip, min_weights)
    tail = {n: m for n, m in linears.items() if not n.startswith(blocks_name + ".")}
    targets = {checkpoint_name(reader, n + ".weight"): m for n, m in linears.items()}
    summary = SequentialSummary(Path(dst), len(blocks), len(items))
    entries, quantized = plan_output(reader, targets, cfg, dtype)
    load_module(model, "", reader, dtype, exclude=blocks_name + ".")
    store = ActivationStore(act_budget, act_dtype)

    def fill(writer) -> None:
        written = set()
        ck_blocks = blocks_checkpoint_prefix(reader, blocks_name, blocks)
        for name in reader.where:  # everything outside the blocks that stays as it is
            if name not in targets and not name.startswith(ck_blocks):
                writer.write(name, reader.get(name))
                written.add(name)
        calls = capture_block_inputs(model, blocks[0], items, store) if items else []
        parked = _park_outside_blocks(model, tail)
        _run_blocks(writer, model, blocks_name, blocks, reader, store, calls, cfg, skip, min_weights, targets,
                    quantized, summary, progress, dtype)
        for prefix, module in parked:
            load_module(module, prefix, reader, dtype)
        for name, linear in tail.items():  # an untied lm_head (a tied one stays float: swap.tied_modules)
            r = _quantize_tail(model, blocks, linear, name, items, store, calls, cfg)
            ck = checkpoint_name(reader, name + ".weight")
            _write_quantized(writer, ck, r, quantized[ck])
            summary.results.append(_error(r))

    try:
        if out_folder is None:  # OUT ends in .safetensors: the weights alone
            write_checkpoint(dst, entries, quantized, fill, inputs=reader.files)
        else:  # a folder, built beside and swapped in whole, its config.json saying quant_method lowbit
            with replacing_folder(out_folder, [*reader.files, *carry]) as tmp:
                write_checkpoint(tmp / Path(dst).name, entries, quantized, fill, inputs=reader.files)
                stamp_quantization_config(copy_files(carry, tmp, reader.files), cfg)
    finally:
        summary.spilled = store.spilled
        store.close()
    summary.bytes_before = sum(m.weight.numel() * reader.slice(n)[0].itemsize if n in reader.where else 0
                               for n, m in targets.items())
    summary.bytes_after = sum(e.nbytes for e in entries if e.name.rpartition("_")[0] in targets)
    summary.seconds = time.perf_counter() - t0
    return summary


def _park_outside_blocks(model: nn.Module, tail: dict[str, nn.Module]) -> list[tuple[str, nn.Module]]:
    """Put the input embedding and the Linears after the blocks (lm_head) back on meta while the blocks are walked
    (the ~1B shape's two 32000 x 2048 bf16 matrices are 262 MB); returns (name prefix, module) to load again."""
    names = {id(m): n for n, m in model.named_modules()}
    parked = list(tail.items())
    embed = model.get_input_embeddings()
    if embed is not None and id(embed) in names:
        parked.append((names[id(embed)], embed))
    for _, module in parked:
        free_module(module)
    return [(n + ".", m) for n, m in parked]


def compute_dtype(reader: ShardReader) -> torch.dtype:
    """The blocks' compute dtype for this checkpoint: bfloat16 when its floating weights are bf16 (the dtype the
    model was trained and is served in; CPU bf16 GEMMs run at twice float32's rate on AVX512-BF16/AMX), float32
    for float32 and float16 ones (float16 GEMMs are slow on CPUs)."""
    for name in reader.where:
        dt, shape = reader.slice(name)
        if dt.is_floating_point and len(shape) == 2:
            return torch.bfloat16 if dt == torch.bfloat16 else torch.float32
    return torch.float32


def blocks_checkpoint_prefix(reader: ShardReader, blocks_name: str, blocks: nn.ModuleList) -> str:
    """How the checkpoint names the blocks ('model.layers.' or, in files without the base prefix, 'layers.')."""
    param = next(n for n, _ in blocks[0].named_parameters())
    return checkpoint_name(reader, f"{blocks_name}.0.{param}").removesuffix(f"0.{param}")


def _run_blocks(writer, model, blocks_name, blocks, reader, store, calls, cfg, skip, min_weights, targets,
                quantized, summary, progress, dtype) -> None:
    from tqdm import tqdm

    ck_blocks = blocks_checkpoint_prefix(reader, blocks_name, blocks)
    bar = tqdm(range(len(blocks)), desc="sequential", file=sys.stderr, disable=not progress, leave=False)
    for i in bar:
        started = time.perf_counter()
        bar.set_description(f"block {i + 1}/{len(blocks)}")
        prefix = f"{blocks_name}.{i}."
        block = blocks[i]
        load_module(block, prefix, reader, dtype)
        results = quantize_block(block, prefix, store, calls, cfg, skip, min_weights)
        for r in results:
            ck = checkpoint_name(reader, r.name)
            if ck not in targets:
                raise CheckpointError(f"{r.name} was quantized but not planned (block {i} differs from the others)")
            _write_quantized(writer, ck, r, quantized[ck])
        _write_kept(writer, reader, block, prefix, ck_blocks + f"{i}.", targets)
        with torch.no_grad():
            for j, call in enumerate(calls):
                store[j] = call_block(block, store.get(j, dtype), call)
        summary.results += [_error(r) for r in results]
        summary.fallbacks.update({r.name: r.fallback for r in results if r.fallback})
        if results and results[0].error_after == results[0].error_after:
            bar.set_postfix(error=f"{max(r.error_after for r in results):.4f}")
        free_module(block)
        reader.release()
        summary.block_seconds.append(time.perf_counter() - started)
    bar.close()


def _write_kept(writer, reader: ShardReader, block: nn.Module, prefix: str, ck_prefix: str, targets) -> None:
    """The block's tensors that stay float, as the source has them, except those the method changed in the block
    (AWQ's folded norm gains): those are written from the block, in the source's dtype."""
    params = {checkpoint_name(reader, prefix + n): p for n, p in block.named_parameters()}
    for name in reader.where:
        if name in targets or not name.startswith(ck_prefix):
            continue
        source, now = reader.get(name), params.get(name)
        changed = now is not None and not torch.equal(now.detach(), source.to(now.dtype))
        writer.write(name, now.detach().to(source.dtype) if changed else source)


def _quantize_tail(model, blocks, linear, name, items, store, calls: list[BlockCall], cfg) -> WeightResult:
    """Quantize a Linear after the blocks (lm_head) on what reaches it from the stored final hidden states, held
    out and checked against its data-free start as the blocks' Linears are."""
    from ..calib.capture import HOLD_EVERY
    from ..pipeline.weights import quantize_param
    from ..quant.hessian import InputStats
    from .block import _Done, _plain, add_split

    if not cfg.data_aware:
        return _plain(linear.weight.data, cfg, name + ".weight")
    stats, held, rows, index = InputStats(linear.in_features), InputStats(linear.in_features), [None], [0]

    def add(_m, args):
        x = args[0].reshape(-1, args[0].shape[-1])
        add_split(x if rows[0] is None else x[rows[0]], index[0], len(items) >= HOLD_EVERY, stats, held)
        raise _Done  # the statistics are all it is run for: its (vocabulary-wide) output is never computed

    hook = linear.register_forward_pre_hook(add)
    saved, replay = list(blocks), _Replay()
    for k in range(len(blocks)):
        blocks[k] = replay if k == 0 else _PassThrough()
    try:
        with torch.no_grad():
            for j, item in enumerate(items):
                rows[0], index[0], replay.value = calls[j].rows, j, store.get(j, linear.weight.dtype)
                try:
                    model(**as_token_batch(item, j), use_cache=False)
                except _Done:
                    pass
    finally:
        hook.remove()
        for k, b in enumerate(saved):
            blocks[k] = b
    return quantize_param(linear.weight.data, [stats.xtx], cfg, name + ".weight",
                          held=[held.xtx] if held.count else None, rows=stats.count + held.count)
