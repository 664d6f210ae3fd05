"""Layer names across a wrapper: a plan written against one spelling of a model applied to another.

`lowbit auto --model minilm` names layers as the SentenceTransformer wrapper does ("0.model.encoder.layer.0..."),
the model's Hugging Face folder as the bare model does ("encoder.layer.0..."). As `lowbit.load` accepts a file into
a wrapper by the one prefix that maps every name (`find_prefix`), a per-layer config is rebased by the one prefix
that, added to its keys, makes every key match a layer, or by dropping the prefix the config declares
("model_prefix", written by `lowbit auto`). Pure string work; no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from fnmatch import fnmatchcase

GLOB_CHARS = "*?["


def is_glob(key: str) -> bool:
    return any(c in key for c in GLOB_CHARS)


def matches_tensor(key: str, tensor: str) -> bool:
    """A config key matches a tensor by its name or its module's name, exactly or as a glob (LayerRule's rule)."""
    module = tensor.rpartition(".")[0]
    if not is_glob(key):
        return key in (tensor, module)
    return fnmatchcase(tensor, key) or fnmatchcase(module, key)


def _rebased(key: str, op: str, prefix: str) -> str:
    if op == "drop":
        return key[len(prefix):] if key.startswith(prefix) else key
    return key if key.startswith("*") else prefix + key


def _candidates(probe: str, names: list[str]) -> list[tuple[str, str]]:
    found = set()
    for n in names:
        for target in (n, n.rpartition(".")[0]):
            if target and probe.endswith("." + target):
                found.add(("drop", probe[: len(probe) - len(target)]))
            if target and target.endswith("." + probe):
                found.add(("add", target[: len(target) - len(probe)]))
    return sorted(found, key=lambda c: (len(c[1]), c))


def rebase_keys(keys: list[str], names: list[str], match: Callable[[str, str], bool] = matches_tensor,
                droppable: str = "") -> dict[str, str] | None:
    """{key: the key as `names` spell it}: unchanged when every key matches some name; else with the one prefix
    added (the shortest that makes every key match: the names are a wrapper's) or `droppable` dropped (the prefix
    the config declares, its "model_prefix": a prefix is never guessed away, as 'decoder.fc' must not become
    'fc'). None when neither makes every key match."""

    def hits(key: str) -> bool:
        return any(match(key, n) for n in names)

    if all(hits(k) for k in keys):
        return {k: k for k in keys}
    probe = next((k for k in keys if not is_glob(k) and not hits(k)), None)
    if probe is None:
        return None
    options = [c for c in _candidates(probe, names) if c[0] == "add"] + ([("drop", droppable)] if droppable else [])
    for op, prefix in options:
        mapped = {k: _rebased(k, op, prefix) for k in keys}
        if all(hits(v) for v in mapped.values()):
            return mapped
    return None


def declared_prefix(src) -> str:
    """A per-layer config's "model_prefix" (a JSON file path or its dict; '' when it has none or is unreadable:
    the config's own reader reports that)."""
    import json
    from pathlib import Path

    if isinstance(src, (str, Path)):
        try:
            src = json.loads(Path(src).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return ""
    prefix = src.get("model_prefix", "") if isinstance(src, dict) else ""
    return prefix if isinstance(prefix, str) else ""


def unmatched_message(where: str, keys: list[str], names: list[str], what: str,
                      match: Callable[[str, str], bool] = matches_tensor, droppable: str = "") -> str:
    """The error for keys no prefix maps: the first key left unmatched by the best prefix, and the form the names
    want."""

    def unmatched(mapped: dict[str, str]) -> list[str]:
        return [k for k in keys if not any(match(mapped[k], n) for n in names)]

    options = [{k: k for k in keys}]
    probe = next((k for k in keys if not is_glob(k) and not any(match(k, n) for n in names)), None)
    if probe is not None:
        options += [{k: _rebased(k, op, prefix) for k in keys} for op, prefix in _candidates(probe, names)
                    if op == "add"]
    if droppable:
        options.append({k: _rebased(k, "drop", droppable) for k in keys})
    bad = min((unmatched(m) for m in options), key=len)[0]
    plain = [n for n in names if n.endswith(".weight") and not any(w in n.lower() for w in ("norm", "embed"))]
    example = (plain or names or [""])[0]
    return (f"{where}: entry {bad!r} matches no layer in {what}, which names layers like "
            f"{example.rpartition('.')[0]!r} (or its weight {example!r}); name layers that way, or write every "
            "entry under the wrapper's prefix and declare it as \"model_prefix\" (as a `lowbit auto` plan does: "
            "'0.model.'), which is then dropped")
