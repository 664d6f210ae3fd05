"""Raw safetensors reading and writing, without pickle and without holding a whole model in memory.

The safetensors layout (https://github.com/huggingface/safetensors): 8 bytes little-endian u64 `n`, then `n` bytes of
UTF-8 JSON (padded with spaces to a multiple of 8), then the data area. The JSON maps each tensor name to
{"dtype": "F32", "shape": [...], "data_offsets": [begin, end]} (offsets relative to the data area) and may hold a
"__metadata__" object of string -> string. lowbit writes tensors ordered by element size (largest first), then name,
so every tensor starts at a multiple of its element size; files stay readable by `safetensors.safe_open`.

Reading maps the file (copy-on-write mmap) and returns zero-copy `torch.frombuffer` views: pages are read from disk
only when a tensor is touched, so opening a file costs nothing and loading costs about the tensors actually used.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import mmap
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import CheckpointError
from .outputs import check_output, lock_temp, named_os_error, remove_stale_temps, temp_affixes

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U64": torch.uint64, "U32": torch.uint32, "U16": torch.uint16, "U8": torch.uint8, "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "F8_E4M3FNUZ": torch.float8_e4m3fnuz,
    "F8_E5M2FNUZ": torch.float8_e5m2fnuz, "F8_E8M0": torch.float8_e8m0fnu, "C64": torch.complex64,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
# safetensors dtypes of less than a byte per element: torch holds them packed with another shape; not read here
_SUB_BYTE = ("F4", "F6_E2M3", "F6_E3M2")
MAX_HEADER = 100 << 20  # safetensors' own limit on the JSON header size
_MAX_DIM = (1 << 63) - 1  # torch sizes are int64


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors header: dtype, shape and [begin, end) byte range within the data area."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int = 0
    end: int = 0

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * _element_size(self.dtype)


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def dtype_name(dtype: torch.dtype) -> str:
    if dtype not in DTYPE_NAMES:
        raise CheckpointError(f"dtype {dtype} cannot be stored in a safetensors file; use one of {sorted(DTYPES)}")
    return DTYPE_NAMES[dtype]


# ---------------------------------------------------------------------------------------------------- reading


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"key {dup!r} appears twice")
    return out


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def parse_json(text: str | bytes):
    """Strict JSON: no NaN/Infinity, no repeated keys. Raises ValueError (bad JSON, too many digits, bad UTF-8) or
    RecursionError (nesting too deep); callers turn these into a CheckpointError naming their file."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)


def is_count(v) -> bool:
    """A plain non-negative JSON integer (not a bool, not a float such as 4.0 or 1e999)."""
    return type(v) is int and 0 <= v <= _MAX_DIM


def read_header(path: str | Path) -> tuple[dict[str, TensorEntry], dict[str, str], int]:
    """Parse and check a safetensors header: (tensors by name, "__metadata__", byte offset of the data area).

    As strict as the safetensors library: the JSON must be valid (no NaN, no repeated key), shapes and offsets plain
    non-negative integers, "__metadata__" an object of strings, and the tensors must cover the data area exactly,
    back to back, without overlap or gap. Raises CheckpointError naming the file otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    size = path.stat().st_size
    with open(path, "rb") as f:
        n = header_length(path, f.read(8), size)
        raw = f.read(n)
    try:
        header = parse_json(raw)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(f"{path} has a corrupted header (not valid JSON: {_short(e)})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a corrupted header (a JSON {type(header).__name__}, not an object)")
    meta = _check_metadata(path, header.pop("__metadata__", None))
    entries = {name: _parse_entry(path, name, spec) for name, spec in header.items()}
    check_ranges(path, entries, size - 8 - n)
    return entries, meta, 8 + n


def header_length(path: Path, head: bytes, size: int) -> int:
    """The JSON length from the 8-byte prefix, checked against the file size before anything is read."""
    if len(head) < 8:
        raise CheckpointError(f"{path} is truncated: {size} bytes, too short for a safetensors header")
    (n,) = struct.unpack("<Q", head)
    if n > MAX_HEADER or 8 + n > size:
        raise CheckpointError(f"{path} is truncated or not a safetensors file: header claims {n} bytes, "
                              f"the file has {size}")
    return n


def _short(e: BaseException) -> str:
    msg = str(e) or type(e).__name__
    return msg if len(msg) < 200 else msg[:200] + "..."


def _check_metadata(path: Path, meta) -> dict[str, str]:
    if meta is None:
        return {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError(f"{path} has a corrupted header: '__metadata__' must be an object of strings, got "
                              f"{_short(repr(meta))}")
    return meta


def _parse_entry(path: Path, name: str, spec) -> TensorEntry:
    bad = f"{path} has a corrupted header: tensor {name!r}"
    if not isinstance(spec, dict) or not {"dtype", "shape", "data_offsets"} <= set(spec):
        raise CheckpointError(f"{bad} needs 'dtype', 'shape' and 'data_offsets', got {_short(repr(spec))}")
    dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if dtype in _SUB_BYTE:
        raise CheckpointError(f"{path}: tensor {name!r} has dtype {dtype} (under a byte per element), which lowbit "
                              f"does not read; supported: {sorted(DTYPES)}")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise CheckpointError(f"{bad} has unknown dtype {_short(repr(dtype))}; safetensors dtypes: {sorted(DTYPES)}")
    if not isinstance(shape, list) or not all(is_count(d) for d in shape):
        raise CheckpointError(f"{bad} has shape {_short(repr(shape))}; expected a list of non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(is_count(o) for o in offsets):
        raise CheckpointError(f"{bad} has data_offsets {_short(repr(offsets))}; expected [begin, end], "
                              "non-negative integers")
    entry = TensorEntry(name, DTYPES[dtype], tuple(shape), offsets[0], offsets[1])
    if entry.end < entry.begin or entry.end - entry.begin != entry.nbytes:
        raise CheckpointError(f"{path}: tensor {name!r} has {entry.end - entry.begin} bytes, but dtype {dtype} and "
                              f"shape {shape} need {entry.nbytes}")
    return entry


def check_ranges(path: Path, entries: dict[str, TensorEntry], data_size: int) -> None:
    """The tensors must tile the data area [0, data_size) exactly: in offset order, each begins where the previous
    ended (no overlap, which would alias two tensors; no gap, which would hide bytes), the last ends at the end."""
    for e in entries.values():
        if e.end > data_size:
            raise CheckpointError(f"{path} is truncated: tensor {e.name!r} ends at byte {e.end} of the data area, "
                                  f"which has only {data_size} bytes")
    at, prev = 0, None
    for e in sorted(entries.values(), key=lambda e: (e.begin, e.end)):
        if e.begin < at:
            raise CheckpointError(f"{path} has a corrupted header: tensor {e.name!r} (bytes {e.begin}..{e.end}) "
                                  f"overlaps tensor {prev!r}, which ends at byte {at}")
        if e.begin > at:
            raise CheckpointError(f"{path} has a corrupted header: {e.begin - at} bytes before tensor {e.name!r} "
                                  "belong to no tensor")
        at, prev = e.end, e.name
    if at != data_size:
        raise CheckpointError(f"{path} has a corrupted header: its last {data_size - at} bytes belong to no tensor")


class MappedFile:
    """A safetensors file mapped copy-on-write; `tensor(name)` returns zero-copy views (writes never reach disk)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.entries, self.metadata, self._data_start = read_header(self.path)
        with open(self.path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if self.path.stat().st_size else None

    def tensor(self, name: str) -> torch.Tensor:
        e = self.entries[name]
        count = math.prod(e.shape)
        if count == 0:
            return torch.empty(e.shape, dtype=e.dtype)
        flat = torch.frombuffer(self._map, dtype=e.dtype, count=count, offset=self._data_start + e.begin)
        return flat.view(e.shape)


# ---------------------------------------------------------------------------------------------------- writing


def plan_layout(tensors: list[TensorEntry], metadata: dict[str, str]) -> tuple[bytes, dict[str, TensorEntry]]:
    """The header bytes (length prefix included) and each tensor's byte range, for tensors given as name/dtype/shape.

    Order: element size descending, then name, so every tensor is aligned to its element size.
    """
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise CheckpointError(f"tensor names must be unique; repeated: {dup[:5]}")
    ordered = sorted(tensors, key=lambda t: (-_element_size(t.dtype), t.name))
    placed, header, offset = {}, {}, 0
    for t in ordered:
        placed[t.name] = TensorEntry(t.name, t.dtype, t.shape, offset, offset + t.nbytes)
        header[t.name] = {"dtype": dtype_name(t.dtype), "shape": list(t.shape),
                          "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    if metadata:
        header = {"__metadata__": metadata, **header}
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, placed


class AtomicWriter:
    """Write a safetensors file of a known layout tensor by tensor (any order), then publish it atomically.

    The bytes go to a temporary file in the destination directory (see `lowbit.checkpoint.outputs` for its name and
    lock); `commit()` renames it over `path`. Leaving the context without commit (an exception, an interrupt)
    deletes the temporary file and leaves `path` untouched. An output that is not a regular file is refused, both
    on entry and right before the rename. OS errors (disk full, ...) name `path`.
    """

    def __init__(self, path: str | Path, tensors: list[TensorEntry], metadata: dict[str, str]):
        self.path = Path(path)
        self.header, self.entries = plan_layout(tensors, metadata)
        self._pending = set(self.entries)
        self._tmp: str | None = None
        self._fd: int | None = None

    def __enter__(self) -> AtomicWriter:
        parent = self.path.parent if str(self.path.parent) else Path(".")
        if not parent.is_dir():
            raise FileNotFoundError(f"output directory {parent} does not exist or is not a directory")
        check_output(self.path)
        remove_stale_temps(self.path)
        prefix, suffix = temp_affixes(self.path)
        try:
            self._fd, self._tmp = tempfile.mkstemp(dir=parent, prefix=prefix, suffix=suffix)
        except OSError as e:
            raise PermissionError(f"cannot write to output directory {parent}: {e.strerror}") from None
        try:
            lock_temp(self._fd)
            # mkstemp creates 0600 files; a checkpoint gets the mode of the file it replaces, else rw-r--r--
            os.chmod(self._tmp, self.path.stat().st_mode & 0o777 if self.path.is_file() else 0o644)
            _pwrite_all(self._fd, self.header, 0)
            os.ftruncate(self._fd, len(self.header) + sum(e.nbytes for e in self.entries.values()))
        except BaseException as e:
            self.__exit__()
            if isinstance(e, OSError):
                raise named_os_error(e, self.path) from None
            raise
        return self

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Write one planned tensor; its dtype and shape must be the planned ones."""
        e = self.entries.get(name)
        if e is None or name not in self._pending:
            raise CheckpointError(f"tensor {name!r} is not planned for {self.path} or was already written")
        if tensor.dtype != e.dtype or tuple(tensor.shape) != e.shape:
            raise CheckpointError(f"tensor {name!r} is {tensor.dtype} {tuple(tensor.shape)}; "
                                  f"planned {e.dtype} {e.shape}")
        if e.nbytes:
            data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
            try:
                _pwrite_all(self._fd, data, len(self.header) + e.begin)
            except OSError as err:
                raise named_os_error(err, self.path) from None
        self._pending.discard(name)

    def commit(self) -> None:
        if self._pending:
            raise CheckpointError(f"tensors {sorted(self._pending)[:5]} were planned but never written")
        try:
            os.fsync(self._fd)
        except OSError as e:
            raise named_os_error(e, self.path) from None
        check_output(self.path)  # again: the output may have become a FIFO or a device while we wrote
        try:
            os.replace(self._tmp, self.path)  # still locked: no cleaner can take it for a leftover
        except OSError as e:
            raise named_os_error(e, self.path) from None
        self._tmp = None
        self.__exit__()

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
            self._tmp = None


def _pwrite_all(fd: int, data, offset: int) -> None:
    """Write all of `data` (bytes or a numpy array) at `offset` (pwrite may write less than asked)."""
    view = memoryview(data).cast("B")
    while view:
        n = os.pwrite(fd, view, offset) if hasattr(os, "pwrite") else _seek_write(fd, view, offset)
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view, offset = view[n:], offset + n


def _seek_write(fd: int, data: memoryview, offset: int) -> int:  # systems without pwrite (Windows)
    os.lseek(fd, offset, os.SEEK_SET)
    return os.write(fd, data)
