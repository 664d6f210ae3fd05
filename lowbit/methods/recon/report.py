"""What a recon quantization did: the data-aware summary (per-weight errors before/after) plus one row per block."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ...pipeline.report import DataAwareSummary
from .train import BlockReport

_BLOCK_HEADERS = ["block", "kind", "layers", "steps", "held-out start", "held-out best", "best step", "train loss",
                  "seconds", "note"]


@dataclass
class ReconSummary(DataAwareSummary):
    """`DataAwareSummary` + the blocks reconstructed, in order, each with its held-out error before and after
    (relative output error ‖y_q - y‖²/‖y‖² of the block against the float block, on the held-out tenth)."""

    blocks: list[BlockReport] = field(default_factory=list)

    def block_table(self) -> str:
        from tabulate import tabulate

        return tabulate([b.row() for b in self.blocks], headers=_BLOCK_HEADERS, tablefmt="github")

    def to_json(self) -> dict:
        return {**super().to_json(), "blocks": [asdict(b) for b in self.blocks]}

    def __str__(self) -> str:
        return f"{super().__str__()}\n\n{self.block_table()}"
