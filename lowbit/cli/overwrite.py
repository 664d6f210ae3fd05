"""The one check every writing command runs before it starts: no output may be one of its inputs.

Inputs are the files and folders a command reads: the model's source (`--model MODULE:FUNCTION` resolved to the
module's file without importing it), calibration or test data (a file, a folder: an output anywhere inside a data
folder counts, since the next run would read it as data; or MODULE:FUNCTION's file), `--config` and plan files, and
checkpoints. Two outputs of one command must differ too (`auto --out p.svg --plot p.svg`). Paths are compared after
resolving symbolic links, and by device and inode (hard links). A folder output (export) must not hold an input.
A file output that exists as a directory, device, FIFO or link is refused here too (`checkpoint.outputs`), before
the command spends minutes calibrating.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path

from ..checkpoint.outputs import check_output

PathLike = str | os.PathLike


def module_file(spec: str | None) -> Path | None:
    """The source file of `MODULE:FUNCTION` (None for 'minilm', a path, or a module that cannot be found: the
    command's own loader reports those). Parent packages may be imported; the module itself is not."""
    if not spec or spec == "minilm" or ":" not in spec:
        return None
    module = spec.partition(":")[0]
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError, AttributeError):
        return None
    origin = getattr(found, "origin", None)
    return Path(origin) if origin and os.path.isfile(origin) else None


def data_path(spec: str | None) -> Path | None:
    """What a data argument (--calib, --data) reads: the file or folder it names, the module file of
    MODULE:FUNCTION, or None ('minilm', absent)."""
    if not spec or spec == "minilm":
        return None
    if os.path.exists(spec):
        return Path(spec)
    return module_file(spec)


def _resolved(p: Path) -> Path:
    return Path(os.path.abspath(p)).resolve()


def _same(a: Path, b: Path) -> bool:
    if _resolved(a) == _resolved(b):
        return True
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _inside(child: Path, folder: Path) -> bool:
    """`child` is `folder` or lies under it (symbolic links resolved)."""
    c, f = _resolved(child), _resolved(folder)
    return c == f or f in c.parents


def refuse_overwrite(outputs: Mapping[str, PathLike | None], inputs: Mapping[str, PathLike | None],
                     folder_outputs: tuple[str, ...] = ()) -> None:
    """ValueError when an output is an input (or lies in an input folder), when a folder output holds an input, or
    when two outputs are the same file. Keys are the labels the message uses (e.g. '--out', 'the --model module');
    entries that are None are ignored; folder_outputs: labels of outputs that are folders the command fills."""
    outs = {k: Path(v) for k, v in outputs.items() if v is not None and str(v) != ""}
    ins = {k: Path(v) for k, v in inputs.items() if v is not None and str(v) != ""}
    for olabel, out in outs.items():
        for ilabel, src in ins.items():
            if src.is_dir() and _inside(out, src):
                raise ValueError(f"{olabel} {out} is inside {ilabel} {src}, which the command reads; write it "
                                 "outside that folder")
            if _same(out, src):
                raise ValueError(f"{olabel} {out} is the input file {src} ({ilabel}): writing it would destroy an "
                                 "input; give another name")
            if olabel in folder_outputs and _inside(src, out):
                raise ValueError(f"{olabel} {out} holds {ilabel} {src}, which the command reads and would replace; "
                                 "write to another folder")
    for olabel, out in outs.items():
        if olabel not in folder_outputs:  # a directory, device, FIFO or link there fails now, not after the work
            try:
                check_output(out)
            except (OSError, ValueError) as e:
                raise type(e)(f"{olabel}: {e}") from None
    labels = list(outs)
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            if _same(outs[a], outs[b]):
                raise ValueError(f"{a} and {b} are the same file ({outs[a]}): give each output its own name")


def refuse_missing_parent(label: str, path: PathLike | None) -> None:
    """An output's folder must exist: lowbit does not create folders the user did not ask for."""
    if path is None or str(path) == "":
        return
    parent = Path(os.path.abspath(path)).parent
    if not parent.is_dir():
        raise FileNotFoundError(f"{label} {path}: folder {parent} does not exist; create it first")
