"""Call-order grouping of layers, shared by the data-aware walks (lowbit.dataaware, lowbit.sequential).

Layers are quantized group by group in the order the model first calls them; consecutive layers that read one
tensor (q/k/v after a norm, gate/up) share a group, so one pass collects their statistics together.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence


def group_by_call_order(calls: Iterable[tuple[str, int]], layers: Sequence[str],
                        alone: Collection[str] = ()) -> list[list[str]]:
    """calls: (layer name, key of the tensor it read) in call order, repeats allowed; layers: every layer to place.

    Returns groups in first-call order; a layer joins the previous group when it read the same tensor as the layer
    called just before it, unless it is in `alone` (LSTMs: their statistics are collected per call). Layers never
    called form one last group."""
    groups: list[list[str]] = []
    last, seen = None, set()
    for name, key in calls:
        if name in seen:
            continue
        seen.add(name)
        if groups and key == last and name not in alone:
            groups[-1].append(name)
        else:
            groups.append([name])
        last = key
    rest = [n for n in layers if n not in seen]
    return groups + ([rest] if rest else [])
