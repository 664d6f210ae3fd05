"""Per-layer sensitivity: the output error and the bytes of each layer alone at each candidate setting.

One layer at a time is fake-quantized (lowbit/auto/fakequant.py), everything else float; the model runs over the
data and the metric compares its outputs with the float model's. Two ways to fill the table:
  "all":     one model run per layer and candidate (exact, slow: layers x candidates runs);
  "anchors": (default) for Linear layers, every candidate's layer-output noise ‖X (Ŵ - W)ᵀ‖² over all the layer's
             tuning inputs X (from xtx, lowbit/auto/calibrated.py) is computed (cheap), the model is run only at
             three anchor candidates (the 20th, 50th and 80th percentile of noise), and the other candidates' errors
             follow a piecewise power law error = a * noise**p through the anchors (p ~ 1 for quadratic metrics such
             as 1 - cosine and SNR). Other layers (Conv, LSTM) are measured as in "all".
Data-aware candidates (GPTQ) are computed from the layer's float inputs on the same data (one collection pass).
Every model run is scored with all the metrics asked for (auto_quantize asks for every built-in one, so another
metric needs no new runs). Results are cached on disk per (model hash, data hash, output selection, user metric) in
`$XDG_CACHE_HOME/lowbit/auto` (default ~/.cache/lowbit/auto), saved after every layer so an interrupted run resumes.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from ..methods import method_for, methods
from ..quant.config import QuantConfig
from .calibrated import LayerInputs
from .fakequant import data_hash, fake_quantized, model_hash, run_outputs
from .metrics import BUILTIN, Metric

CACHE_VERSION = 5  # 5: padded positions (attention_mask) left out of the outputs compared
MODES = ("anchors", "all")
_ANCHOR_RANKS = (0.2, 0.5, 0.8)  # by noise among the integer candidates: ~6, ~4-5 and ~3 bits
CLIP_BITS = (2, 3)  # GPTQ candidates at these bits search each block's clipping ratio (see default_candidates)


def candidate_label(cfg: QuantConfig) -> str:
    """A short readable name: 'fp16', 'int4-b64-hqq', 'int8-pc-rtn-sym', 'int3-b64-gptq-clip'."""
    if cfg.is_float:
        return "fp16"
    block = "pc" if cfg.block_size == -1 else f"b{cfg.block_size}"
    scales = f"-{cfg.gptq_scales}" if cfg.method.value == "gptq" and cfg.gptq_scales != "rtn" else ""
    return f"int{cfg.bits}-{block}-{cfg.method.value}{scales}{'-sym' if cfg.symmetric else ''}"


@functools.cache
def candidate_key(cfg: QuantConfig) -> str:
    """Cache key of a candidate: its label plus a hash of every field (a changed HQQ parameter is a new key)."""
    digest = hashlib.sha1(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:10]
    return f"{candidate_label(cfg)}:{digest}"


def default_candidates(bits=(2, 3, 4, 5, 6, 8), blocks=(32, 64, 128, -1), methods=("hqq",),
                       keep_float: bool = True, data_aware_bits=(2, 3, 4),
                       data_aware_blocks=(32, 64, 128), clip_bits=CLIP_BITS) -> list[QuantConfig]:
    """bits x blocks x methods (asymmetric), plus fp16 storage ("keep float") when keep_float.

    Data-aware methods ("gptq": act-order GPTQ with static groups) take only data_aware_bits x data_aware_blocks
    (intersected with bits and blocks): above 4 bits GPTQ gains little over HQQ, and each setting costs a GPTQ run
    per layer (0.1-0.6 s for a MiniLM layer on one core). At clip_bits, GPTQ searches each block's clipping ratio
    against the layer's inputs (gptq_scales="clip"): at 3 bits on MiniLM that lifts uniform int3 b64 from 0.921 to
    0.937 lowest cosine, at 4 bits it gains nothing and costs time (128 sentences; benchmarks/results/
    dataaware_minilm_calib_sweep_1t.md and dataaware_minilm_1t.md), and it lifts the auto plan at 3 bits per weight
    from 0.882 to 0.922 (benchmarks/results/auto_minilm_gptq_fit512.md).
    "awq" is not a candidate (its channel scales are folded into the producing layer, so a layer's error is not
    its own); use lowbit.quantize(..., calibration=) for it.
    GPTQ is opt-in (methods=("hqq", "gptq")): with it, auto_quantize fits GPTQ on every other data item and
    measures every candidate on the rest (lowbit/auto/calibrated.py), so GPTQ's errors are not measured on the
    items it was fitted to (benchmarks/results/auto_minilm_gptq.md).
    """
    out = []
    for m in methods:
        cfg = QuantConfig(method=m)
        if cfg.awq or not method_for(cfg.method).auto_candidate:
            raise ValueError(f"method {m!r} is not an auto candidate (awq: its channel scales are folded into the "
                             f"layer before, so one layer's error is not its own); use {auto_methods()}")
        aware = cfg.data_aware
        for b in bits:
            for g in blocks:
                if aware and (b not in data_aware_bits or g not in data_aware_blocks):
                    continue
                clip = aware and b in clip_bits
                out.append(QuantConfig(bits=b, block_size=g, method=m, gptq_act_order=aware,
                                       gptq_scales="clip" if clip else "rtn"))
    return out + ([QuantConfig(bits=16)] if keep_float else [])


def auto_methods() -> str:
    """The registered methods `lowbit auto` may try per layer (`MethodSpec.auto_candidate`): "rtn, hqq or gptq"."""
    names = [n for n in methods() if method_for(n).auto_candidate]
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


@dataclass
class Sensitivity:
    """Per layer {"bytes": {key: int | None (cannot take it)}, "noise": {key: float},
    "error": {metric name: {key: measured error}}}."""

    layers: dict[str, dict[str, dict]] = field(default_factory=dict)
    path: Path | None = None
    hits: int = 0
    runs: int = 0

    def load(self) -> None:
        if self.path is None or not self.path.is_file():
            return
        try:
            raw = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return  # a damaged cache is recomputed, never trusted
        if isinstance(raw, dict) and raw.get("version") == CACHE_VERSION:
            self.layers = raw["layers"]

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"version": CACHE_VERSION, "layers": self.layers}, f)
        os.replace(tmp, self.path)

    def options(self, name: str, cands: list[QuantConfig], metric: str) -> list[tuple[QuantConfig, int, float]]:
        """[(cfg, bytes, error)] of the candidates layer `name` can take: measured, else fitted from the anchors."""
        entry = self.layers[name]
        errors = entry["error"].get(metric, {})
        fit = fit_error_to_noise(entry["noise"], errors)
        out = []
        for c in cands:
            k = candidate_key(c)
            if entry["bytes"].get(k) is None:
                continue
            err = errors[k] if k in errors else fit(entry["noise"][k])
            out.append((c, int(entry["bytes"][k]), float(err)))
        return out


def anchor_keys(entry: dict, cands: list[QuantConfig]) -> list[str]:
    """The candidate keys the anchors mode measures for a layer's cache entry: the integer candidates at the noise
    ranks _ANCHOR_RANKS (sorted, deduplicated), or the first sized candidate when no integer one has a size."""
    ranked = sorted((entry["noise"][candidate_key(c)], candidate_key(c)) for c in cands
                    if not c.is_float and entry["bytes"].get(candidate_key(c)) is not None)
    if not ranked:
        return [k for k in entry["noise"] if entry["bytes"].get(k) is not None][:1]
    return sorted({ranked[round(r * (len(ranked) - 1))][1] for r in _ANCHOR_RANKS})


def fit_error_to_noise(noise: dict, errors: dict):
    """The function error(noise) through the measured anchors ({key: noise}, {key: error} of a cache entry): a
    piecewise power law (linear in log-log) between them, the nearest segment's exponent beyond them (clipped to
    [0.5, 2]; 1 with a single anchor); 0 at noise <= 0 and everywhere when no anchor has positive noise and error."""
    pts = sorted((math.log(noise[k]), math.log(e)) for k, e in errors.items() if k in noise and noise[k] > 0 and e > 0)
    if not pts:
        return lambda n: 0.0
    xs, ys = [x for x, _ in pts], [y for _, y in pts]

    def slope(i: int) -> float:
        dx = xs[i + 1] - xs[i]
        return 1.0 if dx < 1e-2 else min(max((ys[i + 1] - ys[i]) / dx, 0.5), 2.0)

    def fit(n: float) -> float:
        if n <= 0:
            return 0.0
        x = math.log(n)
        i = min(max(bisect.bisect_right(xs, x) - 1, 0), max(len(xs) - 2, 0))
        if len(xs) == 1:
            return math.exp(ys[0] + (x - xs[0]))
        if xs[i] <= x <= xs[i + 1] and xs[i + 1] - xs[i] >= 1e-2:
            return math.exp(ys[i] + (ys[i + 1] - ys[i]) * (x - xs[i]) / (xs[i + 1] - xs[i]))
        j = i if x < xs[i] else i + 1  # beyond the anchors: from the nearest one with its segment's exponent
        return math.exp(ys[j] + slope(i) * (x - xs[j]))

    return fit


def measure(model: nn.Module, data, layers: dict[str, list[str]], candidates: list[QuantConfig], metrics: list[Metric],
            ref: list, select=None, cache=True, progress: bool = True, mode: str = "anchors",
            inputs: LayerInputs | None = None) -> Sensitivity:
    """Sensitivity of every layer at every candidate. cache: True (default folder), False, or a folder. inputs: the
    layers' input statistics (collected on first need; pass one to share it with the verification)."""
    from tqdm.auto import tqdm

    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is unknown: use one of {MODES}")
    sens = Sensitivity()
    if cache:
        users = sorted(m.name for m in metrics if m.name not in BUILTIN)
        fit = "" if inputs is None else f"{data_hash(inputs.data)}|{inputs.noise_data is not None}"  # GPTQ's items
        key = hashlib.sha256(f"{model_hash(model)}|{data_hash(data)}|{fit}|{select!r}|{users}".encode())
        folder = cache_dir() if cache is True else Path(cache)
        sens.path = folder / f"sens-{key.hexdigest()[:24]}.json"
        sens.load()
    modules = dict(model.named_modules())
    inputs = inputs or LayerInputs(model, data, layers, progress)
    bar = tqdm(total=len(layers) * len(candidates), desc="lowbit auto: sensitivity", disable=not progress,
               file=sys.stderr, leave=False)
    for name in layers:
        entry = sens.layers.setdefault(name, {"bytes": {}, "noise": {}, "error": {}})
        before = json.dumps(entry, sort_keys=True)
        todo = candidates
        if mode == "anchors" and type(modules[name]) is nn.Linear:
            _noise_all(entry, modules[name], candidates, inputs, name)
            todo = [c for c in candidates if candidate_key(c) in anchor_keys(entry, candidates)]
        for cfg in todo:
            k = candidate_key(cfg)
            if any(k not in entry["error"].get(m.name, {}) for m in metrics) and entry["bytes"].get(k, 0) is not None:
                _measure_one(model, data, metrics, ref, select, inputs, cfg, name, entry)
                sens.runs += 1
        inputs.forget(name)
        sens.hits += len(candidates) if json.dumps(entry, sort_keys=True) == before else 0
        bar.update(len(candidates))
        sens.save()
    bar.close()
    return sens


def _noise_all(entry, module, candidates, inputs: LayerInputs, name) -> None:
    for cfg in candidates:
        k = candidate_key(cfg)
        if k in entry["noise"] or (k in entry["bytes"] and entry["bytes"][k] is None):
            continue
        try:
            ws, nbytes = inputs.weights(name, cfg)
        except ValueError:  # this layer's shape cannot take the setting: not an option for it
            entry["bytes"][k] = None
            continue
        delta = ws["weight"].float() - module.weight.detach().float()
        entry["bytes"][k], entry["noise"][k] = nbytes, inputs.noise(name, {"weight": delta})


def _measure_one(model, data, metrics, ref, select, inputs: LayerInputs, cfg, name, entry) -> None:
    k = candidate_key(cfg)
    try:
        ws, nbytes = inputs.weights(name, cfg)
    except ValueError:
        entry["bytes"][k] = None
        return
    with fake_quantized(model, {name: ws}):
        out = run_outputs(model, data, select)
    entry["bytes"][k] = nbytes
    for m in metrics:
        entry["error"].setdefault(m.name, {})[k] = m(ref, out)


def cache_dir() -> Path:
    """Where sensitivity tables are cached: $XDG_CACHE_HOME/lowbit/auto (default ~/.cache/lowbit/auto)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lowbit" / "auto"
