"""The C source of the native CPU kernels: `lowbit_cpu.c` (which includes `lowbit_cpu_rows.h`) beside this file,
shipped as package data.

The build cache key hashes the text of every file, so an edited source is rebuilt on next use.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

# the first is compiled; it includes the others
SOURCE_FILES = ("lowbit_cpu.c", "lowbit_cpu_rows.h", "lowbit_cpu_rows_neon.h", "lowbit_cpu_static.h",
                "lowbit_cpu_static_pw.h", "lowbit_cpu_tile512.h", "lowbit_cpu_tile256.h", "lowbit_cpu_sub.h",
                "lowbit_cpu_f32.h", "lowbit_cpu_conv.h", "lowbit_cpu_dwconv.h", "lowbit_cpu_conv_tile.h",
                "lowbit_cpu_gemv.h", "lowbit_cpu_static_nhwc.h", "lowbit_cpu_decode.h")


@functools.cache
def c_sources() -> dict[str, str]:
    """{file name: text} of every source file."""
    return {name: resources.files(__package__).joinpath(name).read_text(encoding="utf-8") for name in SOURCE_FILES}


def c_source() -> str:
    """All source text, in SOURCE_FILES order (what the build cache key hashes)."""
    return "\n".join(c_sources().values())


def c_source_path() -> Path | None:
    """lowbit_cpu.c as a file on disk (compiler messages then point into the package), or None inside a zip."""
    path = resources.files(__package__).joinpath(SOURCE_FILES[0])
    return Path(str(path)) if isinstance(path, Path) and path.is_file() else None
