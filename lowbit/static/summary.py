"""`StaticSummary`: what `quantize_static` did per layer (int8 or float and why), plus the optional debug table."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass
class StaticRecord:
    """One layer: name, float type, status ("int8" or "float"), why / how, the activation step (int8 only)."""

    name: str
    kind: str
    status: str
    note: str
    input_scale: float | None = None


@dataclass
class DebugRow:
    """Float vs int8 output of one layer on the calibration set (MNN's debug mode)."""

    name: str
    cosine: float
    snr_db: float
    overflow: float  # fraction of input values beyond clamp * step (clipped)


@dataclass
class StaticSummary:
    records: list[StaticRecord]
    folded_bn: list[tuple[str, str]]
    config: object
    debug: list[DebugRow] | None = field(default=None)
    # (layer, ReLU / ReLU6 / Hardswish) computed in the int8 epilogue
    fused_relu: list[tuple[str, str]] = field(default_factory=list)

    @property
    def quantized(self) -> list[str]:
        return [r.name for r in self.records if r.status == "int8"]

    @property
    def kept_float(self) -> list[StaticRecord]:
        return [r for r in self.records if r.status == "float"]

    def __str__(self) -> str:
        lines = [f"static int8: {len(self.quantized)} layers int8, {len(self.kept_float)} kept float, "
                 f"{len(self.folded_bn)} BatchNorm folded, {len(self.fused_relu)} activations fused"]
        lines += [f"  {r.name:<40} {r.kind:<12} {r.status:<5} {r.note}" for r in self.records]
        if self.debug is not None:
            lines.append(self.debug_table())
        return "\n".join(lines)

    def debug_table(self) -> str:
        """Worst layers first: cosine, SNR (dB), overflow rate."""
        if not self.debug:
            return "(no debug table: quantize with debug=True)"
        rows = [f"  {'layer':<40} {'cosine':>9} {'SNR dB':>8} {'overflow':>9}"]
        rows += [f"  {d.name:<40} {d.cosine:9.5f} {d.snr_db:8.2f} {d.overflow:9.2e}" for d in self.debug]
        return "\n".join(rows)

    def to_json(self) -> str:
        return json.dumps({"records": [asdict(r) for r in self.records], "folded_bn": self.folded_bn,
                           "fused_relu": self.fused_relu,
                           "debug": None if self.debug is None else [asdict(d) for d in self.debug]}, indent=1)
