"""Where checkpoints are written, and what writing must never do: lose an input, replace what is not a regular
file, trip over a long name or a killed run's leftovers, or publish half of a pair.

- `check_output(path, inputs)` refuses, before anything is written, an output that is one of the inputs (the same
  path, a symbolic link or a hard link to it: compared by device and inode) or an existing file that is not a
  regular file (directory, device such as /dev/null, FIFO, socket, symbolic link: the final rename would replace
  it). `AtomicWriter.commit` checks again right before its rename.
- Temporary files are `.<name>.<random>.lowbit.tmp` in the destination directory, `<name>` shortened so the whole
  name fits the file system's NAME_MAX. A writer holds an exclusive `flock` on its temporary file while it lives,
  and the kernel drops that lock when the process dies. Before writing, `remove_stale_temps` deletes this output's
  temporary files that nobody holds and that have not changed for STALE_AFTER_S (10) seconds (a killed run's
  leftovers);
  files of any other name are never touched, and no reader ever opens a temporary name.
- `pair_lock(directory)`: the main file and its external data file are published (two renames) while holding an
  exclusive `flock` on their directory, so two writers of the same output publish one pair after the other, never
  interleaved (A's data, B's data, B's main, A's main). The lock lives in the kernel, so a killed run leaves no lock
  file behind. Where the file system has no locks, `save.write_checkpoint` still re-reads the data file's header
  after the renames and fails when it is not the one it wrote.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import CheckpointError

try:
    import fcntl
except ImportError:  # not POSIX: no locks, so stale temporary files are never removed
    fcntl = None

TEMP_SUFFIX = ".lowbit.tmp"
# A temporary file is born unlocked (mkstemp, then flock): the age test covers that window only; a killed run's
# leftovers go at the next start a few seconds later.
STALE_AFTER_S = 10.0
_RANDOM_MAX = 16  # tempfile's random part is 8 characters; keep room should it grow
_RANDOM_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")
_KINDS = ((stat.S_ISDIR, "directory"), (stat.S_ISLNK, "symbolic link"), (stat.S_ISCHR, "character device"),
          (stat.S_ISBLK, "block device"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"))


def name_max(directory: Path) -> int:
    """The longest file name (bytes) the file system holding `directory` accepts (255 when it cannot say)."""
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _parent(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def _same_file(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "special file")


def check_output(path: Path, inputs: Iterable[Path] = ()) -> None:
    """Refuse an output that is an input, an existing non-regular file, or a name the file system cannot hold."""
    for src in inputs:
        if _same_file(path, src):
            raise CheckpointError(f"output {path} is the input file {src} (the same file); write the result to "
                                  "another name: converting in place would destroy the input")
    try:
        mode = os.lstat(path).st_mode
    except OSError:  # absent (or its directory is): the writer reports a missing directory
        mode = None
    if mode is not None and stat.S_ISDIR(mode):
        raise IsADirectoryError(f"output {path} is a directory; give a file name such as {path / 'model.safetensors'}")
    if mode is not None and not stat.S_ISREG(mode):
        raise CheckpointError(f"output {path} exists and is a {_kind(mode)}, not a regular file; lowbit only "
                              "replaces regular files: give another output name")
    size, limit = len(os.fsencode(path.name)), name_max(_parent(path))
    if size > limit:
        raise CheckpointError(f"output file name {path.name!r} is {size} bytes, longer than the {limit} its file "
                              "system allows; give a shorter name")


def temp_affixes(path: Path) -> tuple[str, str]:
    """(prefix, suffix) of `path`'s temporary files: `.<name>.` shortened so that a whole temporary name fits."""
    budget = name_max(_parent(path)) - len(TEMP_SUFFIX) - _RANDOM_MAX - 2
    short = path.name
    while short and len(os.fsencode(short)) > budget:
        short = short[:-1]
    return f".{short}.", TEMP_SUFFIX


def lock_temp(fd: int) -> None:
    """Mark a temporary file as in use for as long as this process holds `fd` open."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # no locks on this file system: the age test alone then protects it
            pass


def _is_ours(name: str, prefix: str, suffix: str) -> bool:
    if not (name.startswith(prefix) and name.endswith(suffix)) or len(name) <= len(prefix) + len(suffix):
        return False
    middle = name[len(prefix):-len(suffix)]
    return len(middle) <= _RANDOM_MAX and set(middle) <= _RANDOM_CHARS


def _remove_if_stale(path: Path, now: float) -> bool:
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < STALE_AFTER_S:
            return False
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while its writer is alive
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete `path`'s temporary files left by killed runs (unlocked and unchanged for STALE_AFTER_S seconds)."""
    if fcntl is None:
        return []
    parent, (prefix, suffix) = _parent(path), temp_affixes(path)
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    now = time.time()
    stale = [parent / n for n in names if _is_ours(n, prefix, suffix)]
    return [p for p in stale if _remove_if_stale(p, now)]


@contextmanager
def pair_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on `directory` (other lowbit writers of a pair there wait; nothing is created)."""
    fd = None
    if fcntl is not None:
        try:
            fd = os.open(directory, os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without locks: write_checkpoint's digest check still catches a race
            pass
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def named_os_error(e: OSError, path: Path) -> OSError:
    """The same OS error (errno kept, so FileNotFoundError stays one), naming the checkpoint it is about."""
    if e.errno is None:
        return OSError(f"cannot write {path}: {e}")
    return OSError(e.errno, f"cannot write {path}: {e.strerror or os.strerror(e.errno)}")


def write_file_atomic(path: Path, data: bytes, inputs: Iterable[Path] = ()) -> None:
    """Write a small file (config.json, a tokenizer file) the way checkpoints are written: refused when it is an
    input or not a regular file, written to a locked temporary file in its directory, then renamed over `path`."""
    import tempfile

    path = Path(path)
    check_output(path, inputs)
    remove_stale_temps(path)
    prefix, suffix = temp_affixes(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=_parent(path), prefix=prefix, suffix=suffix)
    except OSError as e:
        raise named_os_error(e, path) from None
    try:
        lock_temp(fd)
        os.chmod(tmp, 0o644)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        check_output(path, inputs)  # again: it may have become a FIFO or a link while we wrote
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise named_os_error(e, path) from None
    finally:
        os.close(fd)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
