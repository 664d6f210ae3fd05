"""Which parts of a model are reconstructed together: blocks found by a declared pattern list, or named.

Patterns (recon_unit="block"), outermost match wins:
  - a transformer layer: a module whose class is in TRANSFORMER_LAYERS (BERT-family, Llama-family, GPT-2, torch's
    own), or any element of an nn.ModuleList holding at least two quantized Linear layers;
  - an LSTM: each nn.LSTM, all its layers and both directions over the whole sequence;
  - conv -> BatchNorm -> activation: a Conv1d/2d whose output feeds a BatchNorm module directly (seen on the first
    calibration item), then an activation module if one reads the BatchNorm's output;
  - any quantized layer left over is a block of its own.
recon_unit="layer" makes every quantized layer its own block, "model" makes the whole model one block; recon_blocks
names the modules to use (unknown names are a ValueError with the closest names). Blocks run in the order their
first module is called.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import torch
from torch import nn

from ...calib import run_hooked, trace_calls

TRANSFORMER_LAYERS = (
    "BertLayer", "RobertaLayer", "XLMRobertaLayer", "MPNetLayer", "DebertaLayer", "DebertaV2Layer", "ElectraLayer",
    "TransformerBlock", "LlamaDecoderLayer", "MistralDecoderLayer", "Qwen2DecoderLayer", "GemmaDecoderLayer",
    "PhiDecoderLayer", "GPT2Block", "GPTNeoXLayer", "OPTDecoderLayer", "T5Block", "ViTLayer", "CLIPEncoderLayer",
    "TransformerEncoderLayer", "TransformerDecoderLayer",
)
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.Mish)
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass
class Block:
    """Modules run one after the other (the first one with the captured inputs), holding `layers` to quantize."""

    name: str
    kind: str
    modules: list[tuple[str, nn.Module]]
    layers: list[str] = field(default_factory=list)

    @property
    def entry(self) -> nn.Module:
        return self.modules[0][1]

    @property
    def exit(self) -> nn.Module:
        return self.modules[-1][1]

    def describe(self) -> str:
        return f"{self.name} ({self.kind}, {len(self.layers)} layer{'s' * (len(self.layers) != 1)})"


def _inside(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def _with_layers(name: str, kind: str, modules, targets) -> Block:
    inner = [t for t in targets if any(_inside(t, m) for m, _ in modules)]
    return Block(name, kind, list(modules), inner)


def _is_transformer_layer(module: nn.Module, parent: nn.Module | None, targets: dict, name: str) -> bool:
    if type(module).__name__ in TRANSFORMER_LAYERS:
        return True
    linears = [t for t, m in targets.items() if isinstance(m, nn.Linear) and _inside(t, name)]
    return isinstance(parent, nn.ModuleList) and len(linears) >= 2


def _pattern_blocks(model: nn.Module, targets: dict) -> list[Block]:
    """Transformer layers and LSTMs, outermost first (nothing inside a chosen block is matched again)."""
    modules = dict(model.named_modules())
    blocks, taken = [], []
    for name, module in modules.items():
        if not name or any(_inside(name, t) for t in taken):
            continue
        parent = modules.get(name.rpartition(".")[0])
        if isinstance(module, nn.LSTM) and name in targets:
            kind = "lstm"
        elif _is_transformer_layer(module, parent, targets, name):
            kind = "transformer layer"
        else:
            continue
        block = _with_layers(name, kind, [(name, module)], targets)
        if block.layers:
            blocks.append(block)
            taken.append(name)
    return blocks


def _conv_chains(model: nn.Module, item, targets: dict, taken: set) -> list[Block]:
    """conv -> BatchNorm (-> activation) chains seen on one item: the BN reads the conv's very output tensor."""
    watched = {n: m for n, m in model.named_modules()
               if (n in targets and isinstance(m, (nn.Conv1d, nn.Conv2d)) and n not in taken)
               or isinstance(m, (*_BATCH_NORMS, *ACTIVATIONS))}
    seen_in, seen_out = {}, {}  # the tensors themselves: alive, so their ids are not reused within the forward

    def make(name):
        def hook(_m, args, out):
            seen_in.setdefault(name, args[0] if args else None)
            seen_out.setdefault(name, out)
        return hook

    run_hooked(model, item, [m.register_forward_hook(make(n)) for n, m in watched.items()])
    by_input = {}
    for n, x in seen_in.items():
        by_input.setdefault(id(x), n)
    blocks = []
    for name in [n for n in watched if n in targets and n in seen_out]:
        bn = by_input.get(id(seen_out[name]))
        if bn is None or not isinstance(watched[bn], _BATCH_NORMS):
            continue
        chain = [(name, watched[name]), (bn, watched[bn])]
        act = by_input.get(id(seen_out.get(bn)))
        if act is not None and isinstance(watched[act], ACTIVATIONS):
            chain.append((act, watched[act]))
        blocks.append(_with_layers("+".join(n for n, _ in chain), "conv-bn-act", chain, {name: None}))
    return blocks


def _named_blocks(model: nn.Module, names, targets: dict) -> list[Block]:
    modules = dict(model.named_modules())
    blocks = []
    for name in names:
        if name not in modules:
            close = difflib.get_close_matches(name, [n for n in modules if n], n=3)
            raise ValueError(f"recon_blocks: the model has no module {name!r}"
                             + (f"; did you mean {', '.join(map(repr, close))}?" if close else ""))
        block = _with_layers(name, "named", [(name, modules[name])], targets)
        if not block.layers:
            raise ValueError(f"recon_blocks: module {name!r} holds no layer being quantized")
        blocks.append(block)
    return blocks


def _order(model: nn.Module, item, blocks: list[Block]) -> list[Block]:
    """Blocks in the order their entry module first runs; never-called blocks last."""
    calls = trace_calls(model, item, {b.name: b.entry for b in blocks})
    first = {}
    for i, (name, _) in enumerate(calls):
        first.setdefault(name, i)
    return sorted(blocks, key=lambda b: first.get(b.name, len(calls)))


def find_blocks(model: nn.Module, targets: dict[str, nn.Module], unit: str, names=(), item=None) -> list[Block]:
    """The blocks to reconstruct, in run order, covering every target layer exactly once (see the module doc)."""
    if unit == "model":
        return [Block("model", "model", [("", model)], list(targets))]
    if names:
        blocks = _named_blocks(model, names, targets)
    elif unit == "block":
        blocks = _pattern_blocks(model, targets)
        taken = {t for b in blocks for t in b.layers}
        blocks += _conv_chains(model, item, targets, taken) if item is not None else []
    else:
        blocks = []
    covered = [t for b in blocks for t in b.layers]
    if len(covered) != len(set(covered)):
        dup = sorted({t for t in covered if covered.count(t) > 1})
        raise ValueError(f"recon blocks overlap: {dup} are in more than one block")
    blocks += [Block(t, "layer", [(t, m)], [t]) for t, m in targets.items() if t not in set(covered)]
    return _order(model, item, blocks) if item is not None else blocks


def frozen_parameters(model: nn.Module) -> list[tuple[torch.Tensor, bool]]:
    """Turn off requires_grad on every parameter (only the learned copies get gradients); returns what to restore."""
    saved = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    return saved
