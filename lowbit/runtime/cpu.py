"""This machine's CPU as lowbit reads it: ISA features and model name from /proc/cpuinfo (read when called)."""

from __future__ import annotations

import platform
from pathlib import Path

# /proc/cpuinfo flag (x86 "flags", ARM "Features") -> the name we report
_CPU_FLAGS = {
    "avx2": "avx2", "fma": "fma", "f16c": "f16c", "avx512f": "avx512", "avx512_vnni": "avx512_vnni",
    "avx_vnni": "avx_vnni", "avx512_bf16": "avx512_bf16", "avx512_fp16": "avx512_fp16", "amx_bf16": "amx_bf16",
    "amx_int8": "amx_int8", "asimd": "neon", "asimddp": "neon_dotprod", "i8mm": "i8mm", "bf16": "bf16",
    "fphp": "fp16", "sve": "sve",
}


def cpu_features(cpuinfo: str | None = None) -> tuple[str, ...]:
    """Sorted ISA feature names from /proc/cpuinfo text (read when not given); platform fallbacks elsewhere."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    found = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            found.update(_CPU_FLAGS[f] for f in value.split() if f in _CPU_FLAGS)
    if not cpuinfo and platform.machine().lower() in ("arm64", "aarch64"):
        found.add("neon")  # every 64-bit ARM CPU has NEON (macOS has no /proc/cpuinfo)
    return tuple(sorted(found))


def _cpu_name(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    try:
        for line in Path(cpuinfo_path).read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_identity() -> str:
    """The CPU model and the ISA features lowbit reads: what a probe report is valid for."""
    return f"{_cpu_name()} [{' '.join(cpu_features())}]"
