"""The C source of the native CPU kernels: `lowbit_cpu.c` beside this file, shipped as package data.

The build cache key hashes this text, so an edited source is rebuilt on next use.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path


@functools.cache
def c_source() -> str:
    """The text of lowbit_cpu.c."""
    return resources.files(__package__).joinpath("lowbit_cpu.c").read_text(encoding="utf-8")


def c_source_path() -> Path | None:
    """lowbit_cpu.c as a file on disk (compiler messages then point into the package), or None inside a zip."""
    path = resources.files(__package__).joinpath("lowbit_cpu.c")
    return Path(str(path)) if isinstance(path, Path) and path.is_file() else None
