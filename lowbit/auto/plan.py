"""`AutoPlan`: the per-layer settings automatic quantization chose, with sizes, errors and the frontier.

`quantize(model, calibration)` applies it; `overrides` feeds `lowbit.quantize(model, overrides=plan.overrides)` (a
plan with GPTQ layers also needs `calibration=` and `sequential=False` to be the measured model); `to_json(path)` writes
the per-layer config file `lowbit convert --config` reads (docs/FORMAT.md section 7: `{"version": 1, "layers":
{...}}`, nothing else; with GPTQ layers only `lowbit convert --model ... --calib ... --config` can apply it).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..checkpoint.outputs import write_file_atomic
from ..quant.config import QuantConfig
from .sensitivity import candidate_label

_JSON_KEYS = ("bits", "block_size", "method", "symmetric", "scale_dtype")
_GPTQ_KEYS = ("gptq_act_order", "gptq_damp", "gptq_scales")  # written for GPTQ layers only


@dataclass
class LayerChoice:
    """One layer: its setting, packed bytes, float32 bytes, and the output error of this layer alone at it."""

    name: str
    cfg: QuantConfig
    bytes: int
    float_bytes: int
    error: float

    @property
    def label(self) -> str:
        return candidate_label(self.cfg)


@dataclass
class AutoPlan:
    """What `auto_quantize` chose and how well it holds.

    target: ("size", bytes) or ("error", value). estimated_error: the additive estimate (sum of the layers' errors
    alone); measured_error: the whole plan measured on the tuning data (with GPTQ candidates: on the items
    GPTQ was not fitted on, see gptq_fit_every, or all of it when they were fitted on a separate
    gptq_calibration). Under an error target the verification
    also tries smaller frontier plans (the estimate is usually pessimistic) and repairs; `repairs` logs each step.
    frontier: estimated (bytes, error) of the best plans at every size; uniform: {setting: (bytes, estimated
    error)} for each candidate applied to every layer. Sizes are those of the planned layers' weights; other_bytes is
    the rest of the model's parameters and buffers, kept as they are.
    """

    layers: list[LayerChoice]
    metric: str
    target: tuple[str, float]
    estimated_error: float
    measured_error: float
    other_bytes: int = 0
    frontier: list[tuple[int, float]] = field(default_factory=list)
    uniform: dict[str, tuple[int, float]] = field(default_factory=dict)
    repairs: list[str] = field(default_factory=list)  # verification log: frontier plans tried, then repairs
    seconds: float = 0.0
    cache_hits: int = 0
    evaluations: int = 0
    held_back: int = 0  # data items held back from the sensitivity pass and the choice of smaller plans
    gptq_fit_every: int = 0  # GPTQ candidates were fitted on data items 0, n, 2n, ... (0: all of the fit data)
    gptq_calibration: str = ""  # the separate calibration= source GPTQ candidates were fitted on ("" when none)
    model_prefix: str = ""  # where the Hugging Face model sits in a wrapper ("0.model."), see `wrapper_prefix`

    @property
    def total_bytes(self) -> int:
        """Packed bytes of the planned layers' weights."""
        return sum(c.bytes for c in self.layers)

    @property
    def repair_steps(self) -> int:
        """Layers raised by the greedy repair (the log's other lines are frontier plans tried)."""
        return sum(not r.startswith(("smaller:", "larger:")) for r in self.repairs)

    @property
    def float_bytes(self) -> int:
        """float32 bytes of the same weights."""
        return sum(c.float_bytes for c in self.layers)

    @property
    def overrides(self) -> dict[str, QuantConfig]:
        """{layer name: QuantConfig} for `lowbit.quantize(model, overrides=...)`."""
        return {c.name: c.cfg for c in self.layers}

    def config_file(self) -> dict:
        """The per-layer config file's content (the `lowbit convert --config` schema)."""
        layers = {}
        for c in self.layers:
            d = c.cfg.to_dict()
            keys = _JSON_KEYS + (_GPTQ_KEYS if c.cfg.data_aware else ())
            layers[c.name] = {"bits": 16} if c.cfg.is_float else {k: d[k] for k in keys}
        out = {"version": 1, "layers": layers}
        if self.model_prefix:  # convert of the model's own folder drops it from the layer names
            out["model_prefix"] = self.model_prefix
        if self.needs_calibration and self.gptq_fit_every:  # lowbit convert --config fits GPTQ on these items
            out["gptq_fit"] = {"every": self.gptq_fit_every}
        return out

    @property
    def needs_calibration(self) -> bool:
        """True when some layer is data-aware (GPTQ): applying the plan needs the tuning data again."""
        return any(c.cfg.data_aware for c in self.layers)

    def quantize(self, model, calibration=None, **kwargs):
        """Apply the plan as it was measured: `lowbit.quantize(model, overrides=self.overrides,
        calibration=calibration, sequential=False)`. GPTQ layers need `calibration` (what they were fitted on in the
        tuning: the tuning data, or auto_quantize's calibration= when one was given; a ValueError says so when it is
        missing); their inputs are the float model's, as in the tuning, and GPTQ is fitted on the same items as in
        the tuning (every `gptq_fit_every`-th item of the tuning data, from the first, or all of the calibration)."""
        from ..api import quantize
        from ..calib import as_calibration
        from .calibrated import fit_items

        if calibration is None and self.needs_calibration:
            gptq = sum(c.cfg.data_aware for c in self.layers)
            fitted = (f"the calibration it was tuned with: {self.gptq_calibration}" if self.gptq_calibration
                      else "the data the plan was tuned on")
            raise ValueError(f"this plan quantizes {gptq} layers with GPTQ, which needs calibration data: pass "
                             f"calibration= ({fitted}), or lowbit convert --model M --calib D --config plan.json OUT")
        kwargs.setdefault("sequential", False)
        if self.needs_calibration and self.gptq_fit_every:
            calibration = fit_items(as_calibration(calibration, kwargs.pop("limit", None)), self.gptq_fit_every)
        return quantize(model, overrides=self.overrides, calibration=calibration if self.needs_calibration else None,
                        **kwargs)

    def to_json(self, path) -> Path:
        """Write `config_file()` to `path` atomically (a temporary file renamed over it); returns the path."""
        path = Path(path)
        _atomic_text(path, json.dumps(self.config_file(), indent=1) + "\n")
        return path

    def to_dict(self) -> dict:
        """Everything as JSON-ready data (the CLI's --json)."""
        return {"metric": self.metric, "target": list(self.target), "estimated_error": self.estimated_error,
                "measured_error": self.measured_error, "bytes": self.total_bytes, "float_bytes": self.float_bytes,
                "other_bytes": self.other_bytes, "seconds": self.seconds, "cache_hits": self.cache_hits,
                "evaluations": self.evaluations, "held_back": self.held_back,
                "needs_calibration": self.needs_calibration, "gptq_calibration": self.gptq_calibration,
                "repairs": self.repairs,
                "layers": [{"name": c.name, "setting": c.label, "bytes": c.bytes, "error": c.error} for c in
                           self.layers], "config": self.config_file()}

    def table(self) -> str:
        """A table of the layers (setting, bytes, error alone) and a summary line."""
        from tabulate import tabulate

        rows = [[c.name, c.label, c.bytes, f"{c.bytes / c.float_bytes:.1%}", f"{c.error:.3g}"] for c in self.layers]
        table = tabulate(rows, headers=["layer", "setting", "bytes", "of fp32", "error alone"], tablefmt="github")
        return f"{table}\n\n{self.summary()}"

    def summary(self) -> str:
        kind, value = self.target
        goal = f"size <= {value:,.0f} bytes" if kind == "size" else f"{self.metric} error <= {value:.4g}"
        return (f"target {goal}: {self.total_bytes:,} bytes ({self.total_bytes / self.float_bytes:.1%} of fp32, "
                f"{8 * self.total_bytes / max(self.float_bytes / 4, 1):.2f} bits/weight); {self.metric} error "
                f"estimated {self.estimated_error:.4g} (sum of layers alone), measured {self.measured_error:.4g}"
                f"{f'; {self.repair_steps} repair steps' if self.repair_steps else ''}; tuned in {self.seconds:.1f} s "
                f"({self.evaluations} evaluations, {self.cache_hits} from cache)")

    def plot(self, path) -> Path:
        """The size-error frontier with the uniform settings and this plan marked, saved to `path`.

        Uses matplotlib (an optional extra) for any image format; without it a `.svg` path is still drawn (plain
        SVG), anything else raises ImportError saying what to install.
        """
        path = Path(path)
        per_weight = 8 / max(self.float_bytes / 4, 1)  # bytes -> bits per weight
        front = [(b * per_weight, e) for b, e in self.frontier]
        uniform = {k: (b * per_weight, e) for k, (b, e) in self.uniform.items()}
        mine = (self.total_bytes * per_weight, self.measured_error)
        labels = ("bits per weight (planned layers)", f"{self.metric} error (log)")
        try:
            import matplotlib
        except ImportError:
            if path.suffix.lower() != ".svg":
                raise ImportError("AutoPlan.plot needs matplotlib for this format (lowbit[plot] extra): pip install "
                                  "matplotlib (or save as .svg, drawn without it)") from None
            from .svgplot import frontier_svg

            _atomic_text(path, frontier_svg(front, uniform, mine, *labels))
            return path
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.plot([x for x, _ in front], [_floor(e) for _, e in front], "-", label="auto plans (estimated)")
        for name, (x, e) in uniform.items():
            ax.plot(x, _floor(e), "x", color="gray")
            ax.annotate(name, (x, _floor(e)), fontsize=6, color="gray")
        ax.plot(mine[0], _floor(mine[1]), "o", color="red", label="this plan (measured)")
        ax.set(xlabel=labels[0], ylabel=labels[1], yscale="log")
        ax.legend()
        tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        plt.close(fig)
        os.replace(tmp, path)
        return path


def wrapper_prefix(model) -> str:
    """The name (with its dot) of the Hugging Face model inside a wrapper: '0.model.' in the SentenceTransformer
    around MiniLM, '' for a bare model. A plan's layer names start with it; the model's own folder names its
    tensors without it, so `lowbit convert FOLDER --config plan.json` drops it."""
    for name, module in model.named_modules():
        if name and hasattr(module, "base_model_prefix") and hasattr(module, "config"):
            return name + "."
    return ""


def _atomic_text(path: Path, text: str) -> None:
    """Written as checkpoints are (temporary file, rename; never over a non-regular file; never in a folder that
    does not exist)."""
    write_file_atomic(Path(path), text.encode())  # a missing folder is an error: nothing is created unasked


def _floor(e: float) -> float:
    return max(e, 1e-9) if math.isfinite(e) else e
