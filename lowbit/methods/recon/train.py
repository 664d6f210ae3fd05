"""Training one block's learned quantization against the float block's outputs, with a held-out tenth.

Each step takes one training item (a calibration batch), runs the block with its fake-quantized weights on the
item's cached (quantized-model) inputs and moves the learned tensors with Adam on the relative output error.
Every twentieth of the steps the held-out items are run with the hard (packed) weights; the best step on them is kept,
and training stops early once it has not improved for `PATIENCE` checks (AdaRound runs to the end: its offsets only
become hard as the regulariser anneals). A non-finite loss stops training, restores the best step and warns.
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass

import torch
from torch.func import functional_call

from ...quant.recon import LearnedWeight, annealed_beta, linear_decay, sign_sgd_step
from .blocks import Block
from .capture import fresh_args, relative_error

PATIENCE = 4  # held-out checks without improvement before stopping early
ITEMS_PER_STEP = 1  # calibration items (batches) averaged in one step's loss
CHECKS = 20  # held-out checks over a block's steps
SCALE_LR = 0.1  # scales and zeros move at this fraction of recon_lr (weights and offsets: recon_lr, in code units)
SIGN_SCALE_LR = 1.0  # with SignRound's offsets: the signed step of log-scales and zeros, relative to recon_lr
SIGN_PATIENCE = True  # SignRound's offsets stop early too (their decaying step makes late checks change little)
ROUNDING_WEIGHT = 0.1  # AdaRound regulariser weight, relative to the block's starting held-out error


@dataclass
class BlockReport:
    """What training one block did; losses are relative output errors ‖y_q - y‖²/‖y‖² (mean over items)."""

    name: str
    kind: str
    layers: int
    steps: int
    holdout_start: float
    holdout_best: float
    best_step: int
    train_loss: float
    seconds: float
    note: str = ""

    def row(self) -> list:
        return [self.name, self.kind, self.layers, self.steps, f"{self.holdout_start:.3g}",
                f"{self.holdout_best:.3g}", self.best_step, f"{self.train_loss:.3g}", f"{self.seconds:.1f}", self.note]


@dataclass
class Split:
    """Training and held-out data: item indices, and per item the rows that count (a bool mask over the leading
    dims of the block's outputs: real tokens, training or held-out samples; None = all). Unpacks as (train, hold)."""

    train: list[int]
    hold: list[int]
    train_masks: list
    hold_masks: list

    def __iter__(self):
        return iter((self.train, self.hold))


def split_items(n: int, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) item indices: a seeded tenth held out. ValueError when a tenth is not one item."""
    hold = n // 10
    if hold < 1:
        raise ValueError(f"method='recon' holds back a tenth of the calibration data to choose the best step, but "
                         f"only {n} usable calibration item(s) reached this block: pass at least 10 items "
                         "(model calls; e.g. split a batch into smaller ones)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(perm[hold:]), sorted(perm[:hold])


def make_split(items: list, seed: int, mask_fn=None) -> Split:
    """A seeded tenth of the items held out when that is at least one item; with fewer than 10 items, a seeded
    tenth (at least one) of the samples of every item of two or more (the batch: the token mask's first dim, else
    the first tensor argument's). Padded positions never count (lowbit.calib.mask)."""
    from ...calib.mask import item_mask

    masks = [item_mask(it, mask_fn) for it in items]
    if len(items) >= 10:
        train, hold = split_items(len(items), seed)
        return Split(train, hold, masks, masks)
    gen = torch.Generator().manual_seed(seed)
    train_masks, hold_masks, hold = [], [], []
    for i, (item, mask) in enumerate(zip(items, masks, strict=True)):
        b = _batch_size(item, mask)
        held = torch.zeros(max(b, 1), dtype=torch.bool)
        if b >= 2:
            held[torch.randperm(b, generator=gen)[:max(1, b // 10)]] = True
            hold.append(i)
        tok = mask if mask is not None else torch.ones(max(b, 1), 1, dtype=torch.bool)
        train_masks.append((tok & ~held.unsqueeze(1)).reshape(mask.shape if mask is not None else (-1,)))
        hold_masks.append((tok & held.unsqueeze(1)).reshape(mask.shape if mask is not None else (-1,)))
    if not hold:
        raise ValueError(f"method='recon' holds back a tenth of the calibration data to choose the best step, but "
                         f"only {len(items)} usable calibration item(s) of one sample each reached it: pass at least "
                         "10 items, or batches of 2 or more samples")
    return Split(list(range(len(items))), hold, train_masks, hold_masks)


def _batch_size(item, mask) -> int:
    if mask is not None:
        return int(mask.shape[0])
    first = next((a for a in item.args if isinstance(a, torch.Tensor) and a.dim() >= 2), None)
    return int(first.shape[0]) if first is not None else 1


def _masks(split, which: str) -> list | None:
    return getattr(split, which, None)


class BlockRunner:
    """Calls a block's modules in turn with the learned weights substituted (torch.func.functional_call)."""

    def __init__(self, block: Block, learned: dict[str, LearnedWeight], dtypes: dict[str, torch.dtype]):
        self.block = block
        self.per_module = []
        for mname, _ in block.modules:
            rel = {full[len(mname) + 1:] if mname else full: full for full in learned if _under(full, mname)}
            self.per_module.append(rel)
        self.learned, self.dtypes = learned, dtypes

    def __call__(self, args: tuple, kwargs: dict, hard: bool = False):
        out = None
        for i, (_, module) in enumerate(self.block.modules):
            params = {rel: self.learned[full].weight(hard).to(self.dtypes[full])
                      for rel, full in self.per_module[i].items()}
            call_args, call_kwargs = fresh_args(args, kwargs) if i == 0 else ((out,), {})
            out = functional_call(module, params, call_args, call_kwargs, strict=False)
        return out


def _under(full: str, prefix: str) -> bool:
    return prefix == "" or full.startswith(prefix + ".")


def _mean_loss(runner, pairs, indices, hard: bool, masks: list | None = None) -> float:
    with torch.no_grad():
        return float(torch.stack([relative_error(runner(*pairs[i][0], hard=hard), pairs[i][1],
                                                 masks[i] if masks else None) for i in indices]).mean())


class _Best:
    """The best held-out step so far and the learned tensors at it."""

    def __init__(self, learned: dict[str, LearnedWeight], loss: float):
        self.learned, self.loss, self.step = learned, loss, 0
        self.state = {k: lw.state() for k, lw in learned.items()}

    def offer(self, loss: float, step: int) -> bool:
        if not loss < self.loss:
            return False
        self.loss, self.step = loss, step
        self.state = {k: lw.state() for k, lw in self.learned.items()}
        return True

    def restore(self) -> None:
        for k, lw in self.learned.items():
            lw.load_state(self.state[k])


def train_block(block: Block, runner: BlockRunner, inputs: list, targets: list, split, steps: int, lr: float,
                seed: int, progress: bool = True) -> BlockReport:
    """Train `runner.learned` on the block's cached inputs/targets (per item; `split` = (train, held-out) item
    indices); leaves the best held-out step loaded. Items that never reached the block are left out."""
    from tqdm.auto import tqdm

    start = time.perf_counter()
    pairs = list(zip(inputs, targets, strict=True))
    train, hold = ([i for i in part if pairs[i][0] is not None and pairs[i][1] is not None] for part in split)
    train_masks, hold_masks = _masks(split, "train_masks"), _masks(split, "hold_masks")
    if not train or not hold:
        raise ValueError(f"recon block {block.name}: no {'training' if not train else 'held-out'} calibration "
                         "item reached it (the model never called it): name it out with skip=")
    learned = runner.learned
    params = [p for lw in learned.values() for p in lw.parameters()]
    rounding = any(lw.v is not None for lw in learned.values())
    best = _Best(learned, _mean_loss(runner, pairs, hold, True, hold_masks))
    report = BlockReport(block.name, block.kind, len(block.layers), 0, best.loss, best.loss, 0, float("nan"), 0.0)
    if best.loss != best.loss or best.loss == float("inf"):
        raise ValueError(f"recon block {block.name}: the quantized block's held-out error is not finite before "
                         "training (check the calibration data for NaN/inf, or skip the block's layers)")
    if not params or steps == 0:
        report.seconds = time.perf_counter() - start
        return report
    adam_groups = _param_groups({k: lw for k, lw in learned.items() if not lw.signed}, lr)
    opt = Adam(adam_groups) if adam_groups else None
    signed = _signed_groups(learned, lr)
    gen = torch.Generator().manual_seed(seed)
    check_every, order, running = max(1, steps // CHECKS), [], None
    bar = tqdm(range(1, steps + 1), desc=f"recon {block.name}", disable=not progress, leave=False, file=sys.stderr)
    for step in bar:
        losses = []
        for _ in range(min(ITEMS_PER_STEP, len(train))):
            if not order:
                order = torch.randperm(len(train), generator=gen).tolist()
            i = train[order.pop()]
            x, target = pairs[i]
            losses.append(relative_error(runner(*x), target, train_masks[i] if train_masks else None))
        loss = torch.stack(losses).mean()
        total = loss
        beta = annealed_beta(step, steps) if rounding else None
        if beta is not None:
            total = loss + ROUNDING_WEIGHT * report.holdout_start * sum(lw.regularizer(beta) for lw in learned.values())
        if not bool(torch.isfinite(total)):
            report.note = _stop_non_finite(block, best, step)
            break
        total.backward()
        if opt is not None:
            opt.step()
        for group in signed:
            sign_sgd_step(group["params"], group["lr"] * linear_decay(step, steps))
        for lw in learned.values():
            lw.project()
        running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
        report.steps = step
        if step % check_every == 0 or step == steps:
            held = _mean_loss(runner, pairs, hold, True, hold_masks)
            if held != held:
                report.note = _stop_non_finite(block, best, step)
                break
            best.offer(held, step)
            bar.set_postfix(loss=f"{running:.3g}", holdout=f"{held:.3g}", best=f"{best.loss:.3g}")
            stops = not rounding and (SIGN_PATIENCE or not signed)
            if stops and step - best.step >= PATIENCE * check_every:
                report.note = f"early stop at step {step}"
                break
    best.restore()
    report.holdout_best, report.best_step, report.train_loss = best.loss, best.step, running
    report.seconds = time.perf_counter() - start
    return report


class Adam:
    """Adam (Kingma & Ba) on groups of tensors, gradients cleared after each step. Written out because
    torch.optim imports torch._dynamo on its first step (seconds per process, for a dozen lines of math)."""

    def __init__(self, groups: list[dict], betas=(0.9, 0.999), eps: float = 1e-8):
        self.groups, self.betas, self.eps, self.t = groups, betas, eps, 0
        self.moments = [[(torch.zeros_like(p), torch.zeros_like(p)) for p in g["params"]] for g in groups]

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for group, moments in zip(self.groups, self.moments, strict=True):
            for p, (m, v) in zip(group["params"], moments, strict=True):
                if p.grad is None:
                    continue
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                p.sub_(group["lr"] * (m / c1) / ((v / c2).sqrt() + self.eps))
                p.grad = None


def _param_groups(learned: dict[str, LearnedWeight], lr: float) -> list[dict]:
    codes = [t for lw in learned.values() for t in (lw.delta, lw.v) if t is not None and t.requires_grad]
    grid = [t for lw in learned.values() for t in (lw.log_scale, lw.zero_shift) if t.requires_grad]
    return [g for g in ({"params": codes, "lr": lr}, {"params": grid, "lr": lr * SCALE_LR}) if g["params"]]


def _signed_groups(learned: dict[str, LearnedWeight], lr: float) -> list[dict]:
    """SignRound's tensors: offsets at recon_lr, their log-scales and zeros at SIGN_SCALE_LR · recon_lr."""
    signed = [lw for lw in learned.values() if lw.signed]
    codes = [lw.delta for lw in signed]
    grid = [t for lw in signed for t in (lw.log_scale, lw.zero_shift) if t.requires_grad]
    return [g for g in ({"params": codes, "lr": lr}, {"params": grid, "lr": lr * SIGN_SCALE_LR}) if g["params"]]


def _stop_non_finite(block: Block, best: _Best, step: int) -> str:
    note = (f"non-finite loss at step {step}: stopped and restored step {best.step} "
            f"(held-out error {best.loss:.3g}); lower recon_lr")
    warnings.warn(f"lowbit recon: block {block.name}: {note}", RuntimeWarning, stacklevel=3)
    best.restore()
    return note
