"""Multi-file outputs (an exported or converted model folder) replaced as a whole, never mixed.

`replacing_folder(out_dir, inputs)` yields an empty temporary folder beside `out_dir` (`.<name>.<random>.lowbit.tmpdir`
in the same parent, so that a rename can move it); the caller writes every file there; on success the folder is
swapped in by one directory rename:
- Linux: `renameat2(RENAME_EXCHANGE)` swaps the two folders atomically, then the old set (now under the temporary
  name) is deleted. A kill at any moment leaves `out_dir` the old set or the new set, whole.
- Elsewhere (or a file system without exchange): `out_dir` is renamed to `.<name>.<random>.lowbit.old`, the new folder
  to `out_dir`, then the old one is deleted. A kill between the two renames leaves `out_dir` missing and the old set
  under the `.old` name: the next start renames it back before anything else.
Two runs writing one folder each build their own temporary folder and swap under an exclusive lock on the parent
directory, so the last swap wins whole. A temporary folder is locked (`flock` on its descriptor) while its run lives;
the next start deletes ours that nobody holds (a killed run's leftovers). An existing `out_dir` is replaced only
when every file in it is one a model folder holds (weights, shards, config, tokenizer): other files are never
deleted, and a folder holding one of the inputs is refused.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import CheckpointError
from .outputs import STALE_AFTER_S, fcntl, name_max, named_os_error, pair_lock

TEMP_DIR_SUFFIX = ".lowbit.tmpdir"
OLD_DIR_SUFFIX = ".lowbit.old"
_RENAME_EXCHANGE = 2
_SHARD = re.compile(r"model-\d{5}-of-\d{5}\.safetensors$")


def _model_file(name: str) -> bool:
    from .hf_folder import CARRIED_FILES, CONFIG_NAME, INDEX_NAME, WEIGHTS_NAME

    return name in (WEIGHTS_NAME, CONFIG_NAME, INDEX_NAME, WEIGHTS_NAME + ".data", *CARRIED_FILES) \
        or bool(_SHARD.match(name)) or name.endswith(".lowbit.tmp")


def _check_replaceable(out_dir: Path, inputs: list[Path]) -> None:
    """Refuse an output folder that holds an input, or a file no model folder has (it would be deleted)."""
    if out_dir.exists() and (out_dir.is_symlink() or not out_dir.is_dir()):
        raise CheckpointError(f"output {out_dir} exists and is not a directory; this command writes a folder")
    if not out_dir.parent.is_dir():
        raise FileNotFoundError(f"the directory {out_dir.parent} that would hold {out_dir} does not exist")
    real = out_dir.resolve()
    for src in inputs:
        if real == Path(src).resolve() or real in Path(src).resolve().parents:
            raise CheckpointError(f"output folder {out_dir} holds the input {src}; replacing the folder would "
                                  "delete it: write to another folder")
    if out_dir.is_dir():
        for entry in sorted(os.listdir(out_dir)):
            path = out_dir / entry
            what = "not a file of a model folder" if not _model_file(entry) else \
                "a symbolic link" if path.is_symlink() else None if path.is_file() else "not a regular file"
            if what:
                raise CheckpointError(f"output folder {out_dir} holds {entry!r}, which is {what}; the whole folder "
                                      "is replaced, so give an empty or new folder")


def _prefix(out_dir: Path) -> str:
    """`.<name>.`, the name shortened so that prefix + random part + suffix fits the file system's NAME_MAX."""
    budget, short = name_max(out_dir.parent) - len(TEMP_DIR_SUFFIX) - 20, out_dir.name
    while short and len(os.fsencode(short)) > budget:
        short = short[:-1]
    return f".{short}."


def _ours(name: str, out_dir: Path, suffix: str) -> bool:
    prefix = _prefix(out_dir)
    return name.startswith(prefix) and name.endswith(suffix) and len(name) > len(prefix) + len(suffix)


def _unlocked(path: Path) -> int | None:
    """An fd holding the lock of temporary folder `path` when nobody else holds it (None: in use or no locks)."""
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except OSError:
        os.close(fd)
        return None


def clean_stale(out_dir: Path) -> list[Path]:
    """Restore an old set a killed swap left aside, then delete our unlocked temporary folders of `out_dir`."""
    parent, removed, now = out_dir.parent, [], time.time()
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    for name in names:
        path = parent / name
        is_old, is_tmp = _ours(name, out_dir, OLD_DIR_SUFFIX), _ours(name, out_dir, TEMP_DIR_SUFFIX)
        if not (is_old or is_tmp) or path.is_symlink() or not path.is_dir():
            continue
        with contextlib.suppress(OSError):
            if now - path.stat().st_mtime < STALE_AFTER_S:  # just created: its run may not hold the lock yet
                continue
        fd = _unlocked(path)
        if fd is None:
            continue
        try:
            if is_old and not os.path.lexists(out_dir):
                os.rename(path, out_dir)  # a swap killed between its two renames: the old set comes back
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        finally:
            os.close(fd)
    return removed


def _exchange(a: Path, b: Path) -> None:
    """Atomically swap two directories (Linux renameat2); OSError(ENOSYS) where that does not exist."""
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _swap_in(tmp: Path, out_dir: Path) -> Path | None:
    """Put `tmp` at `out_dir`; returns where the old set went (to be deleted), None when there was none."""
    if not os.path.lexists(out_dir):
        os.rename(tmp, out_dir)
        return None
    try:
        _exchange(tmp, out_dir)
        return tmp
    except OSError as e:
        if e.errno not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EPERM):
            raise
    old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=_prefix(out_dir), suffix=OLD_DIR_SUFFIX))
    try:
        os.rename(out_dir, old)  # onto the empty placeholder: replaces it
    except BaseException:
        with contextlib.suppress(OSError):
            os.rmdir(old)
        raise
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        os.rename(old, out_dir)  # put the old set back (a kill here is undone by the next start's clean_stale)
        raise
    return old


def _lock_dir(path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    if fcntl is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


@contextmanager
def replacing_folder(out_dir: str | Path, inputs: Iterable[Path] = ()) -> Iterator[Path]:
    """Yield an empty folder to write the new set into; on normal exit it replaces `out_dir` whole (see module
    docstring); on an exception it is deleted and `out_dir` is left as it was."""
    out_dir, inputs = Path(out_dir), list(inputs)
    clean_stale(out_dir)
    _check_replaceable(out_dir, inputs)
    try:
        tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=_prefix(out_dir), suffix=TEMP_DIR_SUFFIX))
    except OSError as e:
        raise named_os_error(e, out_dir) from None
    fd = _lock_dir(tmp)
    old = None
    try:
        os.chmod(tmp, (out_dir.stat().st_mode & 0o777) if out_dir.is_dir() else 0o755)
        yield tmp
        with pair_lock(out_dir.parent):
            _check_replaceable(out_dir, inputs)  # again: another run may have put something there
            old = _swap_in(tmp, out_dir)
        if old is not None:  # best effort: the new set is in; a leftover goes at the next start
            with contextlib.suppress(OSError):
                shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        if old is None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if fd is not None:
            os.close(fd)
