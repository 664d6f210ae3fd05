"""What `export` checks before it writes: the checkpoint holds nothing the format would silently drop, and its
tensor names are the ones the config.json's architecture loads.

- Header sections (lowbit.checkpoint.sections) say through their `export` hook what export must do: static int8
  (W8A8) checkpoints are refused unless asked for the weights alone (`weight_only`), pack-quantized holding weights
  only; then each SmoothQuant-scaled layer's stored weight W*s is multiplied back by its `input_smooth` vector (1/s
  per input channel) so the written weight is the model's own W (lowbit.static.checkpoint.export_static). A section
  without the hook is refused.
- Names: the model the config describes is built on the meta device with transformers (optional; without it the
  names are not checked and the summary says so); the checkpoint's names must be its state-dict names, after
  removing one wrapper prefix (`0.model.`, `0.auto_model.` of a `--model minilm` checkpoint, as `lowbit.load` maps
  it). Names the model ties to another (lm_head of tied embeddings) may be absent; its non-persistent buffers
  (BERT's position_ids) may be present. A config transformers cannot build (an architecture it does not know) is
  not checked, and the notes say so.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from .errors import CheckpointError
from .sections import file_sections


def section_folds(ckpt, weight_only: bool) -> tuple[dict[str, torch.Tensor], list[str]]:
    """({weight name: per-input-channel factor to fold back}, notes) from each header section's `export` hook
    (static int8: refused unless weight_only, its smoothing folded back); a section without one is refused."""
    folds, notes = {}, []
    for kind, section in file_sections(ckpt.path, ckpt.body).items():
        if section.export is None:
            raise CheckpointError(f"{ckpt.path} has header section {kind!r}, which pack-quantized cannot hold; serve "
                                  "the checkpoint with lowbit")
        f, n = section.export(ckpt.path, ckpt.body[kind], weight_only)
        folds.update(f)
        notes += n
    return folds, notes


def _build_meta_model(config: dict, config_path: Path):
    """The architecture `config` names, on the meta device; None (no transformers, no model_type) or a string
    saying why transformers cannot build it."""
    try:
        import transformers
    except ImportError:
        return None
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        return None
    rest = {k: v for k, v in config.items() if k not in ("model_type", "quantization_config")}
    archs = config.get("architectures") or []
    cls = getattr(transformers, archs[0], None) if isinstance(archs, list) and archs else None
    try:
        hf_config = transformers.AutoConfig.for_model(model_type, **rest)
        with torch.device("meta"):
            return cls._from_config(hf_config) if cls is not None else transformers.AutoModel.from_config(hf_config)
    except Exception as e:  # an architecture transformers does not know (vLLM may): said in the notes
        return f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"


def _prefix(names: list[str], expected: set[str]) -> str:
    """The wrapper prefix most names carry before an expected name ("" when names match as they are)."""
    if not names or any(n in expected for n in names):
        return ""
    votes = Counter(n[: i + 1] for n in names for i, c in enumerate(n) if c == "." and n[i + 1:] in expected)
    return votes.most_common(1)[0][0] if votes else ""


def _tied_keys(model) -> list[str]:
    """Parameters transformers ties to another ({target: source}; the target may be absent from a file)."""
    tied = getattr(model, "all_tied_weights_keys", None) or getattr(model, "_tied_weights_keys", None) or {}
    return [k for k in tied if isinstance(k, str)]


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return f"{names[:3]}{more}"


def check_names(path: Path, names: list[str], config: dict, config_path: Path | None) -> tuple[str, list[str]]:
    """(prefix to strip from the checkpoint's names, notes); CheckpointError naming the first missing and unexpected
    names when they are not what `config`'s architecture loads."""
    if config_path is None:
        return "", []
    model = _build_meta_model(config, config_path)
    if model is None or isinstance(model, str):
        why = model or "needs transformers and a model_type"
        return "", [f"tensor names not checked against {config_path}: transformers cannot build it ({why})"]
    expected = set(model.state_dict())
    shared = {n for n, _ in model.named_parameters(remove_duplicate=False)} - {n for n, _ in model.named_parameters()}
    tied = shared | set(_tied_keys(model))
    buffers = {n for n, _ in model.named_buffers()} - expected
    prefix = _prefix(names, expected | buffers)
    mapped = {n[len(prefix):] if n.startswith(prefix) else "\0" + n for n in names}
    missing = sorted(expected - mapped - tied)
    unexpected = sorted(n.lstrip("\0") if n.startswith("\0") else prefix + n for n in mapped - expected - buffers)
    if missing or unexpected:
        arch = type(model).__name__
        raise CheckpointError(f"{path}: its tensor names are not those of the {arch} that {config_path} describes"
                              f"{f' (after removing the prefix {prefix!r})' if prefix else ''}: missing "
                              f"{_listed(missing)}, unexpected {_listed(unexpected)}; export the checkpoint of that "
                              "model, or pass --config the config.json it was made from")
    return prefix, ([f"tensor names mapped to {type(model).__name__}'s by removing the prefix {prefix!r}"]
                    if prefix else [])
