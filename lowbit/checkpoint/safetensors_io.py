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

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
_MAX_HEADER = 100 << 20  # safetensors' own limit on the JSON header size


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


def read_header(path: str | Path) -> tuple[dict[str, TensorEntry], dict[str, str], int]:
    """Parse and check a safetensors header: (tensors by name, "__metadata__", byte offset of the data area).

    Raises CheckpointError naming the file when it is truncated, its header is not valid JSON, or a tensor's byte
    range disagrees with its dtype and shape or lies outside the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path} is truncated: {size} bytes, too short for a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER or 8 + n > size:
            raise CheckpointError(f"{path} is truncated or not a safetensors file: header claims {n} bytes, "
                                  f"the file has {size}")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} has a corrupted header (not valid JSON: {e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a corrupted header (a JSON {type(header).__name__}, not an object)")
    meta = header.pop("__metadata__", None) or {}
    entries = {name: _parse_entry(path, name, spec) for name, spec in header.items()}
    _check_ranges(path, entries, size - 8 - n)
    return entries, meta, 8 + n


def _parse_entry(path: Path, name: str, spec) -> TensorEntry:
    try:
        dtype = DTYPES[spec["dtype"]]
        shape = tuple(int(d) for d in spec["shape"])
        begin, end = (int(o) for o in spec["data_offsets"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path} has a corrupted header: bad entry for tensor {name!r}: {spec!r}") from None
    entry = TensorEntry(name, dtype, shape, begin, end)
    if min(shape, default=1) < 0 or end - begin != entry.nbytes:
        raise CheckpointError(f"{path}: tensor {name!r} has {end - begin} bytes, but dtype {spec['dtype']} and shape "
                              f"{list(shape)} need {entry.nbytes}")
    return entry


def _check_ranges(path: Path, entries: dict[str, TensorEntry], data_size: int) -> None:
    for e in entries.values():
        if e.begin < 0 or e.end > data_size:
            raise CheckpointError(f"{path} is truncated: tensor {e.name!r} ends at byte {e.end} of the data area, "
                                  f"which has only {data_size} bytes")


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

    The bytes go to a temporary file in the destination directory; `commit()` renames it over `path`. Leaving the
    context without commit (an exception, an interrupt) deletes the temporary file and leaves `path` untouched.
    """

    def __init__(self, path: str | Path, tensors: list[TensorEntry], metadata: dict[str, str]):
        self.path = Path(path)
        self.header, self.entries = plan_layout(tensors, metadata)
        self._pending = set(self.entries)
        self._tmp: str | None = None
        self._f = None

    def __enter__(self) -> AtomicWriter:
        parent = self.path.parent if str(self.path.parent) else Path(".")
        if not parent.is_dir():
            raise FileNotFoundError(f"output directory {parent} does not exist or is not a directory")
        try:
            fd, self._tmp = tempfile.mkstemp(dir=parent, prefix=f".{self.path.name}.", suffix=".tmp")
        except OSError as e:
            raise PermissionError(f"cannot write to output directory {parent}: {e.strerror}") from None
        # mkstemp creates 0600 files; a checkpoint gets the mode of the file it replaces, else rw-r--r--
        os.chmod(self._tmp, self.path.stat().st_mode & 0o777 if self.path.is_file() else 0o644)
        self._f = os.fdopen(fd, "wb")
        self._f.write(self.header)
        self._f.truncate(len(self.header) + sum(e.nbytes for e in self.entries.values()))
        return self

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Write one planned tensor; its dtype and shape must be the planned ones."""
        e = self.entries.get(name)
        if e is None or name not in self._pending:
            raise CheckpointError(f"tensor {name!r} is not planned for {self.path} or was already written")
        if tensor.dtype != e.dtype or tuple(tensor.shape) != e.shape:
            raise CheckpointError(f"tensor {name!r} is {tensor.dtype} {tuple(tensor.shape)}; "
                                  f"planned {e.dtype} {e.shape}")
        self._f.seek(len(self.header) + e.begin)
        if e.nbytes:
            self._f.write(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
        self._pending.discard(name)

    def commit(self) -> None:
        if self._pending:
            raise CheckpointError(f"tensors {sorted(self._pending)[:5]} were planned but never written")
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self._tmp, self.path)
        self._tmp = None

    def __exit__(self, *exc) -> None:
        if self._f is not None and not self._f.closed:
            self._f.close()
        if self._tmp is not None:
            os.unlink(self._tmp)
            self._tmp = None
