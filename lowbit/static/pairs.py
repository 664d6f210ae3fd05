"""Producer -> consumer pairs found by running one item: the consumer's input is the very tensor the producer returned.

Shared by BatchNorm folding (`fold.py`: conv/linear -> BatchNorm) and ReLU fusion (`fuse.py`: conv/linear -> ReLU).
"""

from __future__ import annotations

from torch import nn

from ..calib import Item, run_hooked


def direct_pairs(model: nn.Module, item: Item, producers: dict[str, nn.Module],
                 consumers: dict[str, nn.Module]) -> list[tuple[str, str]]:
    """[(producer name, consumer name)] where the consumer's first input is the producer's output on `item`, each
    called exactly once in the forward (a module called twice may feed different consumers on each call)."""
    outputs, calls, pairs = {}, {}, []

    def after(name):
        def hook(_m, _args, out):
            calls[name] = calls.get(name, 0) + 1
            outputs[id(out)] = (name, out)  # the tensor is kept so its id stays unique in this forward
        return hook

    def before(name):
        def hook(_m, args):
            calls[name] = calls.get(name, 0) + 1
            src = outputs.get(id(args[0])) if args else None
            if src is not None and src[1] is args[0]:
                pairs.append((src[0], name))
        return hook

    handles = [m.register_forward_hook(after(n)) for n, m in producers.items()]
    handles += [m.register_forward_pre_hook(before(n)) for n, m in consumers.items()]
    run_hooked(model, item, handles)
    return [(p, c) for p, c in pairs if calls.get(p) == 1 and calls.get(c) == 1]
