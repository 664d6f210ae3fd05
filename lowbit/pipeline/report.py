"""What a data-aware quantization did: the swap summary plus each weight's output error before/after."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..nn.swap import QuantizeSummary


@dataclass
class LayerError:
    """Relative output error ‖ΔW x‖/‖W x‖ of one weight on the calibration inputs (bias excluded)."""

    name: str
    method: str
    before: float
    after: float


@dataclass
class DataAwareSummary(QuantizeSummary):
    """`QuantizeSummary` + per-weight errors (before = plain RTN/HQQ with the same bits/block, after = the
    data-aware result), the calibration set's size, passes, time, folded layers and notes."""

    errors: list[LayerError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    folded: dict = field(default_factory=dict)
    input_scaled: dict = field(default_factory=dict)  # AWQ layers with a stored input-scale vector: error ratio
    fallbacks: dict = field(default_factory=dict)  # weight -> why it kept the data-free (RTN/HQQ) result
    calibration: str = ""
    items: int = 0
    passes: int = 0
    seconds: float = 0.0

    def error_rows(self) -> list[dict]:
        """Rows worst first (by the error after), JSON-ready."""
        rows = sorted(self.errors, key=lambda e: -e.after)
        return [{"weight": e.name, "method": e.method, "error before": e.before, "error after": e.after,
                 "after / before": e.after / e.before if e.before else 1.0} for e in rows]

    def error_table(self) -> str:
        from tabulate import tabulate

        rows = [[r["weight"], r["method"], f"{r['error before']:.4f}", f"{r['error after']:.4f}",
                 f"{r['after / before']:.3f}"] for r in self.error_rows()]
        return tabulate(rows, headers=["weight", "method", "rel. output error before", "after", "after/before"],
                        tablefmt="github")

    def mean_ratio(self) -> float:
        ratios = [e.after / e.before for e in self.errors if e.before > 0]
        return sum(ratios) / len(ratios) if ratios else 1.0

    def to_json(self) -> dict:
        return {"calibration": self.calibration, "items": self.items, "passes": self.passes, "seconds": self.seconds,
                "notes": self.notes, "folded": {k: {"into": v[0], "error ratio": v[1]} for k, v in
                                                self.folded.items()},
                "input scale vectors": {k: {"error ratio": v} for k, v in self.input_scaled.items()},
                "kept data-free": dict(self.fallbacks),
                "layers": self.error_rows(), "bytes before": self.bytes_before, "bytes after": self.bytes_after}

    def _awq_lines(self) -> list[str]:
        out = []
        if self.folded:
            out.append(f"AWQ scales folded into the producing layer: {', '.join(sorted(self.folded))}")
        if self.input_scaled:
            out.append(f"AWQ scales stored as input-scale vectors: {', '.join(sorted(self.input_scaled))}")
        return out

    def fallback_line(self) -> str:
        """One line naming the weights that kept the data-free result and why ("" when none did)."""
        if not self.fallbacks:
            return ""
        return (f"kept the data-free (RTN/HQQ) result for {len(self.fallbacks)} weight(s): "
                + "; ".join(f"{k}: {v}" for k, v in self.fallbacks.items()))

    def __str__(self) -> str:
        head = (f"calibration: {self.calibration}, {self.items} items, {self.passes} passes, {self.seconds:.1f} s; "
                f"mean error after/before {self.mean_ratio():.3f}")
        lines = self.notes + ([self.fallback_line()] if self.fallbacks else []) + self._awq_lines()
        notes = "".join(f"\nnote: {n}" for n in lines)
        return f"{super().__str__()}\n\n{head}{notes}\n\n{self.error_table()}"
