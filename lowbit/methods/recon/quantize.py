"""`quantize_recon`: method="recon" over a whole model, block by block (BRECQ), then the ordinary packed swap.

Order of work:
 1. layers are chosen as `lowbit.quantize` chooses them; data-free ones (rtn/hqq/float) are quantized first;
 2. a seeded tenth of the calibration items is held out; with fewer than 10 items, a seeded tenth of the samples
    within each batch (ValueError when there are neither 10 items nor batches of 2 or more); padded positions
    (lowbit.calib.mask) count in no loss and no statistic;
 3. blocks are found (lowbit.methods.recon.blocks) and run in model order; per block: the float model's block
    outputs are the targets, the block's inputs come from the model with every earlier block already quantized;
    the block's layers start from recon_init (GPTQ/AWQ from the block's own input statistics) and are trained
    (lowbit.methods.recon.train); when the block with plain RTN/HQQ weights has a lower held-out error than the
    trained one, the block keeps RTN/HQQ (named in the summary); the packed result replaces the float weights for
    the next blocks;
 4. optionally (recon_final_steps) one whole-model distillation pass over every learned weight;
 5. the float weights are restored, the packed weights swapped in (same format, kernels, checkpoints as any other).
Memory: the model plus one block's cached inputs and outputs (and the packed weights).
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager

import torch

from ...calib import as_calibration, ensure_eval
from ...nn import swap
from ...nn.linear import as_backend
from ...pipeline.apply import FloatWeights, collect_weights, plain_results, quantized_in_place
from ...pipeline.plan import plan_layers
from ...pipeline.weights import WeightResult
from ...quant.config import QuantConfig, QuantMethod
from ...quant.recon import LearnedWeight
from .blocks import Block, find_blocks, frozen_parameters
from .capture import capture, relative_error
from .report import ReconSummary
from .start import final_result, gather_statistics, initial_results, layer_groups, learned_state, weight_hessians
from .train import BlockRunner, make_split, train_block


def quantize_recon(model, cfg: QuantConfig, backend=None, skip=(), overrides=None, min_weights: int = 1024,
                   calibration=None, limit: int | None = None, progress: bool = True):
    """`lowbit.quantize` for method="recon" (see the module docstring); the summary is `model.lowbit_summary`."""
    backend = as_backend(backend)
    skip, overrides = swap.check_patterns(skip, overrides)
    cal = as_calibration(calibration, limit)
    items = list(cal)
    split = make_split(items, cfg.recon_seed, cal.mask_fn)  # fails before any work when nothing can be held out
    start = time.perf_counter()
    summary = ReconSummary(calibration=cal.source, items=len(items))
    if ensure_eval(model):
        summary.notes.append("the model was in training mode: switched to eval() for calibration and left in eval")
    targets = plan_layers(model, cfg, overrides, skip, min_weights, summary)
    results = {}
    grads = frozen_parameters(model)
    try:
        with _cpu_threads(), quantized_in_place() as saved:
            _quantize_plain(targets, results, saved)
            aware = {n: t for n, t in targets.items() if t[1].data_aware and not t[1].is_float}
            _fold_awq(model, cal, aware, summary, progress)
            blocks = find_blocks(model, {n: t[0] for n, t in aware.items()}, cfg.recon_unit, cfg.recon_blocks,
                                 items[0])
            summary.notes.append("recon blocks: " + "; ".join(b.describe() for b in blocks))
            starts = {}
            for block in blocks:
                results.update(_reconstruct(model, block, items, split, aware, saved, cfg, summary, progress, starts))
            if cfg.recon_final_steps and aware:
                _distill(model, items, split, aware, results, saved, cfg, summary, progress)
            _keep_the_better(model, items, split, aware, results, starts, saved, summary)
    finally:
        for p, flag in grads:
            p.requires_grad_(flag)
    weights = collect_weights(targets, results, summary)
    model = swap.swap_quantized(model, weights, backend)
    summary.seconds = time.perf_counter() - start
    model.lowbit_summary = summary
    return model


@contextmanager
def _cpu_threads():
    """torch's threads capped at the CPUs this process may use (a container's affinity mask, else cpu_count)."""
    before = torch.get_num_threads()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, min(before, usable)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _quantize_plain(targets, results, saved: FloatWeights) -> None:
    for name, (module, cfg, record) in targets.items():
        if cfg.data_aware and not cfg.is_float:
            continue
        try:
            results[name] = plain_results(module, cfg, name)
        except ValueError as e:  # as lowbit.nn.quantize: such a layer stays float, with the reason
            record.reason = f"cannot quantize: {e}"
            continue
        saved.apply(module, results[name])


def _fold_awq(model, cal, aware, summary, progress) -> None:
    """recon_init="awq" (and awq=True layers): fold activation-aware channel scales first, as method="awq" does."""
    from ..awq import fold_groups, fold_scales

    names = [n for n, t in aware.items() if t[1].awq or t[1].method is QuantMethod.AWQ
             or (t[1].method is QuantMethod.RECON and t[1].recon_init == "awq")]
    if names:
        groups = fold_groups(dict(model.named_modules()), names, None)
        summary.folded = fold_scales(model, cal, groups, {n: aware[n][1] for n in names}, progress)


def _block_io(model, block: Block, items, saved, progress):
    with saved.floats_back():
        outputs = capture(model, items, block.exit, outputs=True, desc=f"targets {block.name}", progress=progress)
    inputs = capture(model, items, block.entry, outputs=False, desc=f"inputs {block.name}", progress=progress)
    return inputs, outputs


def _reconstruct(model, block: Block, items, split, aware, saved, cfg, summary, progress, starts_out) -> dict:
    """Train one block; returns {layer: [WeightResult]} and leaves its packed weights in the model; the starting
    points go to starts_out."""
    inputs, outputs = _block_io(model, block, items, saved, progress)
    layer_modules = {n: aware[n][0] for n in block.layers}
    starts, learned, hessians, floats = {}, {}, {}, {}
    # the starts are sequential inside the block too: each group of layers sees the earlier groups' start weights
    for group in layer_groups(block, layer_modules, inputs, split.train):
        collectors = gather_statistics(block, {n: layer_modules[n] for n in group}, inputs, split.train,
                                       split.train_masks)
        for name in group:
            module, layer_cfg, _ = aware[name]
            if collectors[name].count == 0:
                summary.notes.append(f"{name} was never called on the calibration inputs: quantized with RTN/HQQ")
                starts[name] = plain_results(module, layer_cfg, name)
            else:
                starts[name] = initial_results(name, collectors[name], layer_cfg)
                hessians.update(weight_hessians(name, collectors[name]))
            learned.update({r.name: learned_state(module, r, layer_cfg) for r in starts[name]})
            floats.update({r.name: _param(model, r.name).detach().clone() for r in starts[name]})
            saved.apply(module, starts[name])
    starts_out.update(starts)
    runner = BlockRunner(block, learned, {k: _param(model, k).dtype for k in learned})
    report = train_block(block, runner, inputs, outputs, split, cfg.recon_steps, cfg.recon_lr, cfg.recon_seed,
                         progress)
    summary.blocks.append(report)
    out = {}
    for name in block.layers:
        out[name] = [final_result(floats[r.name], r, learned[r.name], hessians.get(r.name)) for r in starts[name]]
    plain = _plain_if_better(model, block, aware, floats, starts, inputs, outputs, split, report)
    if plain:
        out.update(plain)
        summary.fallbacks.update({r.name: report.note for rs in plain.values() for r in rs})
    for name in block.layers:
        saved.apply(aware[name][0], out[name])
    return out


def _plain_if_better(model, block, aware, floats, starts, inputs, outputs, split, report) -> dict | None:
    """{layer: plain RTN/HQQ results of the float weights} when the block with them has a lower held-out error than
    the trained block (its report gets the note), else None: a block is never kept worse than its data-free start."""
    from ...quant.quantize import quantize_weight
    from .train import _mean_loss

    # the before/after errors: the start's "before" is this very RTN/HQQ error (same bits, block, statistics)
    plain = {n: [WeightResult(r.name, quantize_weight(floats[r.name], _data_free(aware[n][1]), r.name),
                              r.error_before, r.error_before) for r in starts[n]] for n in block.layers}
    learned = {r.name: LearnedWeight.from_packed(r.qweight, ()) for rs in plain.values() for r in rs}
    runner = BlockRunner(block, learned, {k: _param(model, k).dtype for k in learned})
    pairs = list(zip(inputs, outputs, strict=True))
    hold = [i for i in split.hold if pairs[i][0] is not None and pairs[i][1] is not None]
    loss = _mean_loss(runner, pairs, hold, True, split.hold_masks)
    if not loss < report.holdout_best:
        return None
    report.note = (f"kept {next(iter(plain.values()))[0].qweight.method}: held-out error {loss:.3g} below the "
                   f"trained {report.holdout_best:.3g}" + (f"; {report.note}" if report.note else ""))
    report.holdout_best = loss
    return plain


def _data_free(cfg: QuantConfig) -> QuantConfig:
    """RTN, or HQQ when the layer starts from HQQ, with the layer's bits and block."""
    from dataclasses import replace

    from .start import start_method

    hqq = cfg.method is QuantMethod.RECON and start_method(cfg) == "hqq"
    return replace(cfg, method=QuantMethod.HQQ if hqq else QuantMethod.RTN, awq=False)


def _model_error(model, items, targets, masks) -> float:
    outputs = capture(model, items, model, outputs=True)
    return float(torch.stack([relative_error(o, t, m) for o, t, m in zip(outputs, targets, masks, strict=True)])
                 .mean())


def _keep_the_better(model, items, split, aware, results, starts, saved, summary) -> None:
    """Model-level early stopping: the learned weights are kept only if the whole model's held-out output error is
    below the starting point's (block errors can fall while the model's output gets worse)."""
    learned_layers = [n for n in aware if n in starts and aware[n][1].method is QuantMethod.RECON]
    if not learned_layers:
        return
    held_out, masks = [items[i] for i in split.hold], [split.hold_masks[i] for i in split.hold]
    with saved.floats_back():
        targets = capture(model, held_out, model, outputs=True)
    learned = _model_error(model, held_out, targets, masks)
    trial = FloatWeights()
    for n in learned_layers:
        trial.apply(aware[n][0], starts[n])
    start = _model_error(model, held_out, targets, masks)
    keep_start = start < learned
    summary.notes.append(f"model held-out output error: start {start:.4g}, learned {learned:.4g}: kept the "
                         + ("start (recon_init); learning did not carry to the model's output" if keep_start
                            else "learned weights"))
    if keep_start:
        why = f"the whole model's held-out output error was lower with it ({start:.4g} vs learned {learned:.4g})"
        for n in learned_layers:
            results[n] = starts[n]
            saved.apply(aware[n][0], starts[n])
            # a data-free start (rtn/hqq, the default) kept is a fall-back the summary names
            summary.fallbacks.update({r.name: why for r in starts[n] if r.qweight.method in ("rtn", "hqq")})
    if not keep_start:
        trial.restore()


def _param(model, full_name: str) -> torch.Tensor:
    module_name, _, attr = full_name.rpartition(".")
    return getattr(model.get_submodule(module_name), attr)


def _distill(model, items, split, aware, results, saved, cfg, summary, progress) -> None:
    """A final pass: every learned weight trained at once against the float model's outputs."""
    learn = {n: aware[n][1].recon_learn if aware[n][1].method is QuantMethod.RECON else () for n in aware}
    learned = {r.name: LearnedWeight.from_packed(r.qweight, learn[n]) for n in aware for r in results.get(n, [])}
    block = Block("model", "final distillation", [("", model)], list(aware))
    inputs, outputs = _block_io(model, block, items, saved, progress)
    runner = BlockRunner(block, learned, {k: _param(model, k).dtype for k in learned})
    report = train_block(block, runner, inputs, outputs, split, cfg.recon_final_steps, cfg.recon_lr,
                         cfg.recon_seed, progress)
    summary.blocks.append(report)
    summary.notes.append("the per-weight 'after' errors are those of the block-wise step (before the final pass)")
    for n in aware:
        if n in results:
            results[n] = [type(r)(r.name, learned[r.name].pack(), r.error_before, r.error_after) for r in results[n]]
            saved.apply(aware[n][0], results[n])
