"""Quality across domains on MiniLM: each method calibrated on two kinds of text, judged on held-out sets of other
kinds, at memory Normal and Low, beside peer packages on the same weights and data.

Calibration (128 sentences each, in `tokenizer(batch, padding=True)` batches of 8, as a user's loop makes them):
  own: the project's sentences (lowbit.calib.minilm.pick_sentences); docstrings: Python standard library docstring
  sentences (lowbit.calib.texts). Evaluation: lowest and mean cosine of the sentence embeddings to fp32 on
  lowbit.models.SENTENCES ("readme") and the hand-written varied set ("varied"); nothing here is tuned on either.
Each lowbit model is quantized once and judged at memory Normal and Low (`lowbit.set_backend`). The "worst" column
is the lowest cosine over every cell of the row; the second table gives each method's worst over all rows, which
is what defaults should be chosen by. Peers (benchmarks.xdomain_peers) give dequantized float weights: they have
memory Normal cells only, and a row that cannot run here says why.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from .harness import Row, describe_environment, load_average, report

MEMORIES = ("normal", "low")
BLOCK = 64
BATCH = 8  # recon holds back a tenth of the items: 128 sentences in batches of 8 give it 16


@dataclass(frozen=True)
class Recipe:
    """One lowbit row: a label and the QuantConfig fields (bits and block set by the row)."""

    label: str
    bits: int
    fields: dict = field(default_factory=dict)


GPTQ, GPTQ_ACT = dict(method="gptq"), dict(method="gptq", gptq_act_order=True)
RECIPES = [Recipe("rtn", 4), Recipe("hqq", 4, dict(method="hqq")), Recipe("gptq", 4, GPTQ),
           Recipe("gptq act-order", 4, GPTQ_ACT), Recipe("awq", 4, dict(method="awq")),
           Recipe("recon", 4, dict(method="recon")),
           Recipe("rtn", 3), Recipe("hqq", 3, dict(method="hqq")), Recipe("gptq", 3, GPTQ),
           Recipe("gptq act-order", 3, GPTQ_ACT), Recipe("recon", 3, dict(method="recon"))]
QUICK = [r for r in RECIPES if r.bits == 4 and r.label in ("rtn", "gptq")]


@dataclass
class Setup:
    """The fp32 model, its reference embeddings per evaluation set, and the calibration sentences per kind."""

    model: object
    evals: dict[str, list[str]]
    refs: dict[str, torch.Tensor]
    calibrations: dict[str, list[str]]


def build_setup(n_calib: int = 128, n_eval: int | None = None) -> Setup:
    """MiniLM, the evaluation sets (first `n_eval` of each when given) and `n_calib` calibration sentences per kind."""
    from lowbit.calib.minilm import pick_sentences
    from lowbit.calib.texts import spread, text_set
    from lowbit.models import SENTENCES, embed, load_minilm

    model = load_minilm()
    evals = {"readme": list(SENTENCES), "varied": list(text_set("heldout_varied"))}
    if n_eval is not None:
        evals = {k: v[:n_eval] for k, v in evals.items()}
    refs = {k: embed(model, v) for k, v in evals.items()}
    calibrations = {"own": pick_sentences(n_calib), "docstrings": spread(text_set("docstrings"), n_calib)}
    return Setup(model, evals, refs, calibrations)


def cosines(model, setup: Setup) -> dict[str, tuple[float, float]]:
    """{eval set: (lowest, mean)} cosine of `model`'s embeddings to fp32's."""
    from lowbit.models import embed

    out = {}
    for name, sentences in setup.evals.items():
        cos = (embed(model, sentences) * setup.refs[name]).sum(-1)
        out[name] = (cos.min().item(), cos.mean().item())
    return out


def judge(model, setup: Setup, memories=MEMORIES) -> dict[str, float | str]:
    """The row's cells: '<eval> <memory> min/mean' for each memory mode, switched with lowbit.set_backend."""
    import lowbit

    cells: dict[str, float | str] = {}
    for memory in memories:
        if memory is not None:
            lowbit.set_backend(model, lowbit.BackendConfig(memory=memory))
        for name, (lo, mean) in cosines(model, setup).items():
            cells[f"{name} {memory or 'normal'} min"] = lo
            cells[f"{name} {memory or 'normal'} mean"] = mean
    return cells


def cell_names(setup: Setup) -> list[str]:
    return [f"{e} {m} {s}" for m in MEMORIES for e in setup.evals for s in ("min", "mean")]


def make_row(method: str, bits: int, calibration: str, cells: dict, seconds: float, setup: Setup,
             note: str = "") -> Row:
    """A table row with every cell column (empty where not measured) and the worst lowest cosine."""
    lows = [v for k, v in cells.items() if k.endswith(" min") and isinstance(v, float)]
    values = {"method": method, "bits": bits, "calibration": calibration}
    values.update({k: cells.get(k, "") for k in cell_names(setup)})
    values.update({"worst": min(lows) if lows else "", "seconds": seconds, "note": note})
    return Row(values)


def lowbit_rows(recipe: Recipe, setup: Setup, batch: int = BATCH) -> Iterator[Row]:
    """The recipe once without data, or once per calibration kind; each model judged at memory Normal and Low."""
    import lowbit
    from lowbit.calib.texts import padded_batches
    from lowbit.quant import QuantConfig

    cfg = QuantConfig(bits=recipe.bits, block_size=BLOCK, **recipe.fields)
    kinds = list(setup.calibrations) if cfg.data_aware else ["none"]
    for kind in kinds:
        cal = padded_batches(setup.model.tokenizer, setup.calibrations[kind], batch) if cfg.data_aware else None
        t0 = time.perf_counter()
        try:
            q = lowbit.quantize(copy.deepcopy(setup.model), cfg, calibration=cal, progress=False)
        except (ValueError, RuntimeError) as e:  # a method that refuses this data is a result, not a crash
            yield make_row(recipe.label, recipe.bits, kind, {}, time.perf_counter() - t0, setup,
                           f"failed: {type(e).__name__}: {e}"[:200])
            continue
        seconds = time.perf_counter() - t0
        row = make_row(recipe.label, recipe.bits, kind, judge(q, setup), seconds, setup)
        print(row.values, flush=True)
        yield row


def worst_table(rows: list[Row]) -> list[Row]:
    """Per (method, bits): the lowest cosine over all its rows and cells and where it was, the same over memory Normal
    cells only (all that peers have), and the best row's lowest."""
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        groups.setdefault((r.values["method"], r.values["bits"]), []).append(r)
    out = []
    for (method, bits), members in groups.items():
        cells = [(v, f"{r.values['calibration']}: {k.removesuffix(' min')}") for r in members
                 for k, v in r.values.items() if k.endswith(" min") and isinstance(v, float)]
        normal = [c for c in cells if c[1].endswith(" normal")]
        values = {"method": method, "bits": bits, "worst cell": min(cells)[0] if cells else "",
                  "where": min(cells)[1] if cells else "", "worst at normal": min(normal)[0] if normal else "",
                  "best lowest": max(cells)[0] if cells else "", "note": "" if cells else members[0].values["note"]}
        out.append(Row(values))
    return out


def run(recipes=RECIPES, peers: bool = True, n_calib: int = 128, n_eval: int | None = None, threads: int = 1,
        batch: int = BATCH, out_dir: str | None = "benchmarks/results", name: str = "xdomain_minilm",
        setup: Setup | None = None, peers_only: bool = False) -> list[Row]:
    """Every recipe and peer, int4 before int3; saves <name>.{md,csv,json} and <name>_worst.* unless out_dir is None
    (after every row too, marked unfinished, so a long run that is stopped keeps what it measured).
    `setup` (from build_setup) replaces n_calib and n_eval; the run never changes its model."""
    torch.set_num_threads(threads)
    t_start, commit = time.perf_counter(), _commit()  # the code this run started with
    setup = setup or build_setup(n_calib, n_eval)
    rows: list[Row] = []
    for bits in sorted({r.bits for r in recipes}, reverse=True):
        for recipe in (r for r in recipes if r.bits == bits and not peers_only):
            for row in lowbit_rows(recipe, setup, batch):
                rows.append(row)
                _save(rows, setup, threads, batch, time.perf_counter() - t_start, out_dir, name, commit, False)
        if peers:
            from .xdomain_peers import peer_rows

            for row in peer_rows(setup, [bits], batch):
                rows.append(row)
                _save(rows, setup, threads, batch, time.perf_counter() - t_start, out_dir, name, commit, False)
    _save(rows, setup, threads, batch, time.perf_counter() - t_start, out_dir, name, commit, True)
    return rows


def _save(rows, setup: Setup, threads: int, batch: int, seconds: float, out_dir, name: str, commit: str,
          final: bool) -> None:
    if out_dir is None and not final:
        return
    env = describe_environment("cpu")
    env["commit"] = commit
    notes = (f"all-MiniLM-L6-v2, every Linear (37), asymmetric, block {BLOCK}, float16 scales, method defaults unless "
             f"named. Calibration: {len(next(iter(setup.calibrations.values())))} sentences per kind (own = "
             "lowbit.calib.minilm.pick_sentences; docstrings = lowbit.calib.texts 'docstrings'), "
             f"tokenizer(batch, padding=True) in batches of {batch}. Evaluation: lowest / mean cosine to fp32 on "
             f"readme = lowbit.models.SENTENCES ({len(setup.evals['readme'])}) and varied = lowbit.calib.texts "
             f"'heldout_varied' ({len(setup.evals['varied'])}), at memory normal and low (precision normal). worst = "
             "the row's lowest cosine over all its cells. seconds = wall time of the quantize call (peers: their "
             f"quantization). {threads} threads; whole run {seconds:.0f} s; 1-min load average at the end "
             f"{load_average():.1f} (the machine is shared).")
    if not final:
        notes = f"UNFINISHED: the run was still going after these {len(rows)} rows. " + notes
    title = "Quality across domains: MiniLM int4/int3 block 64, two calibration kinds, held-out sets of other kinds"
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet if not final else sys.stdout):
        report(name, rows, env, out_dir=out_dir, title=title, notes=notes, floatfmt=".4f")
        report(f"{name}_worst", worst_table(rows), env, out_dir=out_dir,
               title="Quality across domains: each method's worst cell (pick defaults by this)", notes=notes,
               floatfmt=".4f")


def merge(parts: list[str], out_dir: str = "benchmarks/results", name: str = "xdomain_minilm") -> list[Row]:
    """One table (and its worst-cell table) from runs split with --bits / --peers-only, read from their saved JSON:
    rows in the order of `parts`, the first of each (method, bits, calibration) kept; the notes keep each part's."""
    import json
    from pathlib import Path

    rows, seen, notes = [], set(), []
    for part in parts:
        saved = json.loads((Path(out_dir) / f"{part}.json").read_text())
        md_lines = (Path(out_dir) / f"{part}.md").read_text().splitlines()
        notes.append(f"[{part}, {saved['env']['date']}, commit {saved['env'].get('commit', '?')}] {md_lines[4]}")
        for values in saved["rows"]:
            key = (values["method"], values["bits"], values["calibration"])
            if key not in seen:
                seen.add(key)
                rows.append(Row(values))
    env = describe_environment("cpu")
    env["commit"] = _commit()
    title = "Quality across domains: MiniLM int4/int3 block 64, two calibration kinds, held-out sets of other kinds"
    text = f"Merged from {len(parts)} runs (the first row of each method, bits and calibration kept):\n\n" + \
        "\n\n".join(notes)
    report(name, rows, env, out_dir=out_dir, title=title, notes=text, floatfmt=".4f")
    report(f"{name}_worst", worst_table(rows), env, out_dir=out_dir,
           title="Quality across domains: each method's worst cell (pick defaults by this)", notes=text,
           floatfmt=".4f")
    return rows


def _commit() -> str:
    import subprocess
    from pathlib import Path

    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="int4 RTN and GPTQ only, no peers")
    p.add_argument("--no-peers", action="store_true", help="lowbit's rows only")
    p.add_argument("--calib", type=int, default=128, help="calibration sentences per kind (default 128)")
    p.add_argument("--batch", type=int, default=BATCH, help=f"sentences per padded batch (default {BATCH})")
    p.add_argument("--peers-only", action="store_true", help="the peers' rows only (at the recipes' bits)")
    p.add_argument("--bits", type=int, nargs="+", default=None, help="only these bits (default: 4 and 3)")
    p.add_argument("--methods", nargs="+", default=None, help="only these lowbit rows, by label (e.g. recon)")
    p.add_argument("--kinds", nargs="+", default=None, help="only these calibration kinds (own, docstrings)")
    p.add_argument("--fields", default=None, help="JSON of QuantConfig fields set on every lowbit row, e.g. "
                   "'{\"recon_init\": \"rtn\"}' (how recon's defaults were compared)")
    p.add_argument("--name", default="xdomain_minilm", help="results file name (default xdomain_minilm)")
    p.add_argument("--merge", nargs="+", metavar="PART", help="merge saved runs (result names) into --name instead")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results", help="results folder ('' to skip saving)")
    args = p.parse_args(argv)
    if args.merge:
        merge(args.merge, args.out or "benchmarks/results", args.name)
        return 0
    recipes = [r for r in (QUICK if args.quick else RECIPES) if (args.bits is None or r.bits in args.bits)
               and (args.methods is None or r.label in args.methods)]
    if args.fields:
        import json
        from dataclasses import replace

        recipes = [replace(r, label=f"{r.label} {args.fields}", fields={**r.fields, **json.loads(args.fields)})
                   for r in recipes]
    if not recipes:
        raise ValueError(f"--bits {args.bits} --methods {args.methods}: no recipe matches (bits 4 and 3; labels "
                         f"{sorted({r.label for r in RECIPES})})")
    setup = build_setup(args.calib)
    if args.kinds:
        unknown = set(args.kinds) - set(setup.calibrations)
        if unknown:
            raise ValueError(f"--kinds {sorted(unknown)}: the calibration kinds are {list(setup.calibrations)}")
        setup.calibrations = {k: v for k, v in setup.calibrations.items() if k in args.kinds}
    run(recipes, peers=not (args.quick or args.no_peers), threads=args.threads, batch=args.batch,
        out_dir=args.out or None, name=args.name, setup=setup, peers_only=args.peers_only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
