"""External weight data (MNN's --saveExternalData): tensors in a second file next to a small main file.

The main file `X` is a safetensors file with the lowbit metadata and no tensors; its "external_data" entry names the
data file (by default `X.data`, in the same directory) and the SHA-256 of the data file's header bytes. The data
file is itself a plain safetensors file holding every tensor. Both are mapped, never read whole: loading touches
one tensor at a time, so the peak resident memory of a load stays near the largest tensor, not the model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import CheckpointError, CheckpointFileNotFoundError
from .safetensors_io import header_length

DATA_SUFFIX = ".data"


def data_path_for(main: str | Path) -> Path:
    """Where the data file of main checkpoint `main` lives: `<main>.data` in the same directory."""
    main = Path(main)
    return main.with_name(main.name + DATA_SUFFIX)


def header_digest(header_bytes: bytes) -> str:
    """SHA-256 (hex) of a safetensors header, length prefix included: ties a data file to its main file."""
    return hashlib.sha256(header_bytes).hexdigest()


def file_header_digest(path: Path) -> str:
    """SHA-256 of a data file's header bytes; its length field is checked against the file size before reading."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        try:
            n = header_length(path, head, size)
        except CheckpointError as e:  # same check as any safetensors file, said of the data file
            raise CheckpointError(f"external data file {e}") from None
        return header_digest(head + f.read(n))


def external_record(main: Path, header_bytes: bytes) -> dict:
    """The "external_data" metadata entry for a data file written with these header bytes."""
    return {"file": data_path_for(main).name, "header_sha256": header_digest(header_bytes)}


def resolve_data_file(main: Path, record: dict) -> Path:
    """The data file a main checkpoint refers to, checked to exist and to be the one written with it."""
    if not isinstance(record, dict) or not isinstance(record.get("file"), str) \
            or not isinstance(record.get("header_sha256"), str):
        raise CheckpointError(f"{main} has corrupted lowbit metadata: bad 'external_data' entry {record!r}; expected "
                              '{"file": "<name>", "header_sha256": "<hex>"}')
    name = record["file"]
    if not name or name in (".", "..") or Path(name).name != name or "\0" in name:
        raise CheckpointError(f"{main}: external data file {name!r} must be a plain file name next to the checkpoint")
    path = main.with_name(name)
    if not path.is_file():
        raise CheckpointFileNotFoundError(f"external data file {path} of checkpoint {main} does not exist; copy it "
                                          "next to the main file")
    if file_header_digest(path) != record["header_sha256"]:
        raise CheckpointError(f"external data file {path} does not belong to {main} (header checksum differs); "
                              "it was overwritten by another conversion")
    return path
