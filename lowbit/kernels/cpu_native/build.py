"""Compile the native CPU kernels on first use and load them with ctypes; never crash when that fails.

The shared library goes to a per-user cache (~/.cache/lowbit/native-<hash>/, or $XDG_CACHE_HOME), keyed by a hash
of the source, the compiler, the flags and the CPU, so it is built once per machine. A file lock serialises
concurrent builds and the .so is written under a temporary name and renamed, so a half-written library is never
loaded.

ISA variants (`VARIANTS`), one library each, all from the same lowbit_cpu.c (its #if blocks follow the flags):
avx512vnni (AVX-512 F/BW/VL + VNNI: vpdpbusd on 256-bit vectors), avxvnni (the VEX form on client CPUs), avx2,
portable (plain C, with OpenMP, then without), and native (-march=native: whatever this compiler makes of this
CPU); on aarch64 (lowbit_cpu_rows_neon.h) i8mm (usdot), dotprod (sdot) and neon (armv8-a Advanced SIMD,
also what portable compiles to there). By default the variants whose features /proc/cpuinfo reports (x86 `flags`,
aarch64 `Features`) are tried best first, then portable; a compiler that refuses a variant's flags falls through to
the next. LOWBIT_NATIVE_VARIANT=<name> pins one (tests,
reproducible numbers; on an AVX-512 machine "avx2" builds what an AVX2-only CPU runs); pinning a variant the CPU
does not report is an error rather than an illegal instruction later.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from .source import SOURCE_FILES, c_source, c_source_path, c_sources

_AVX2 = ("-mavx2", "-mfma", "-mf16c")
# variant -> (flag sets tried in order, /proc/cpuinfo flags the CPU must report), best first
_TARGETS = {
    "avx512vnni": ((("-O3", *_AVX2, "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-fopenmp"),),
                   ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni")),
    "avxvnni": ((("-O3", *_AVX2, "-mavxvnni", "-fopenmp"),), ("avx2", "fma", "f16c", "avx_vnni")),
    "avx2": ((("-O3", *_AVX2, "-fopenmp"),), ("avx2", "fma", "f16c")),
    "i8mm": ((("-O3", "-march=armv8.2-a+dotprod+i8mm", "-fopenmp"),), ("asimd", "asimddp", "i8mm")),
    "dotprod": ((("-O3", "-march=armv8.2-a+dotprod", "-fopenmp"),), ("asimd", "asimddp")),
    "neon": ((("-O3", "-march=armv8-a", "-fopenmp"), ("-O3", "-march=armv8-a")), ("asimd",)),
    "portable": ((("-O3", "-fopenmp"), ("-O3",)), ()),
    "native": ((("-O3", "-march=native", "-fopenmp"),), ()),
}
_ISA_NAMES = {0: "portable", 1: "avx2", 2: "avxvnni", 3: "avx512vnni", 4: "neon", 5: "dotprod", 6: "i8mm"}  # lb_isa()
# -fno-trapping-math: lowbit never enables FP traps; without it GCC vectorizes no float select or conversion
_COMMON_FLAGS = ("-shared", "-fPIC", "-std=c11", "-fno-math-errno", "-fno-trapping-math")
_LOCK = threading.Lock()


class NativeBuildError(RuntimeError):
    """The native kernels could not be compiled or loaded (the message says why)."""


@dataclass(frozen=True)
class NativeLibrary:
    """A loaded kernel library: the ctypes handle, the flags it was built with, and what it compiled in."""

    lib: ctypes.CDLL
    path: str
    flags: tuple[str, ...]
    simd: bool
    openmp: bool
    variant: str = ""
    """The ISA compiled in ("avx512vnni", "avxvnni", "avx2", "i8mm", "dotprod", "neon", "portable"), read back from
    the library."""


def compiler_command() -> str:
    """The C compiler to use: $LOWBIT_CC, else $CC, else `cc` (read at build time, never at import)."""
    return os.environ.get("LOWBIT_CC") or os.environ.get("CC") or "cc"


def cache_root() -> Path:
    """Per-user cache directory for built libraries."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lowbit"


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str] | None:
    """The feature flags /proc/cpuinfo reports (x86 `flags`, aarch64 `Features`; its text, read when not given); None
    when it cannot be read."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return None
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return frozenset(flags)


def cpu_runs(variant: str, flags: frozenset[str] | None = None) -> bool:
    """True when this CPU (or `flags`) reports every feature `variant` is compiled for."""
    need = _TARGETS[variant][1]
    flags = cpu_flags() if flags is None and need else flags
    return not need or (flags is not None and set(need) <= flags)


def _cpu_signature() -> str:
    """CPU model and feature flags: -march=native output is only valid on the CPU it was built for."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f.read().splitlines() if ln.startswith(("model name", "flags", "Features"))]
        return "\n".join(sorted(set(lines)))
    except OSError:
        return platform.processor()


def _key(compiler: str, flags: tuple[str, ...]) -> str:
    text = "\0".join([c_source(), compiler, " ".join(flags), platform.machine(), _cpu_signature()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cached_source(folder: Path) -> Path:
    """A copy of the source files in the cache folder, for packages installed as a zip; the file to compile."""
    for name, text in c_sources().items():
        dst = folder / name
        if not dst.exists():
            fd, tmp = tempfile.mkstemp(dir=folder, suffix=".src")
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, dst)
    return folder / SOURCE_FILES[0]


def _compile(compiler: str, flags: tuple[str, ...], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    src = c_source_path() or _cached_source(out.parent)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".so.tmp")
    os.close(fd)
    cmd = [compiler, *flags, *_COMMON_FLAGS, str(src), "-o", tmp, "-lm"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise NativeBuildError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip()[-500:]}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load(path: Path, flags: tuple[str, ...]) -> NativeLibrary:
    lib = ctypes.CDLL(str(path))
    i64, ptr, i32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    lib.lb_quant_act.argtypes = [ptr, i64, i64, i64, i64, i64, i32, ptr, ptr, ptr, i32]
    lib.lb_quant_act.restype = None
    for fn in (lib.lb_gemm_q4, lib.lb_gemm_q8):
        fn.argtypes = [ptr, ptr, ptr, i64, i64, i64, i64, ptr, ptr, ptr, i64, i32, ptr, ptr, i32]
        fn.restype = None
    lib.lb_gemm_q8t.argtypes = [ptr, ptr, ptr, i64, i64, i64, i64, ptr, ptr, ptr, i64, i32, ptr, ptr, i32]
    lib.lb_gemm_q8t.restype = lib.lb_q8t_rows.restype = i32
    lib.lb_gemm_f32.argtypes = [ptr, ptr, ptr, i64, i64, i64, i64, ptr, i64, ptr, ptr, i32, i32]
    lib.lb_dequant.argtypes = [ptr, ptr, ptr, i64, i64, i64, i64, i64, i64, ptr, i32, i32]
    lib.lb_gemm_f32.restype = lib.lb_dequant.restype = None
    f32 = ctypes.c_float
    lib.lb_rms_norm.argtypes = [ptr, ptr, ptr, i64, i64, f32]
    lib.lb_add_rms_norm.argtypes = [ptr, ptr, ptr, ptr, i64, i64, f32]
    lib.lb_rope.argtypes = [ptr, ptr, ptr, i64, i64, i64]
    lib.lb_silu_mul.argtypes = [ptr, ptr, i64]
    lib.lb_attend1.argtypes = [ptr, ptr, ptr, ptr, i64, i64, i64, i64, i64, f32, i32]
    for fn in (lib.lb_rms_norm, lib.lb_add_rms_norm, lib.lb_rope, lib.lb_silu_mul, lib.lb_attend1):
        fn.restype = None
    lib.lb_all_finite.argtypes, lib.lb_all_finite.restype = [ptr, i64], i32
    return NativeLibrary(lib, str(path), flags, bool(lib.lb_simd()), bool(lib.lb_openmp()),
                         _ISA_NAMES.get(lib.lb_isa(), "unknown"))


def _build_with(compiler: str, flags: tuple[str, ...], root: Path) -> NativeLibrary:
    out = root / f"native-{_key(compiler, flags)}" / "lowbit_cpu.so"
    if not out.exists():
        import fcntl

        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out.parent / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same library
            if not out.exists():
                _compile(compiler, flags, out)
    return _load(out, flags)


PORTABLE_FLAGS = (("-O3",),)  # plain C, no SIMD, no OpenMP: what any C compiler builds
VARIANT_ENV = "LOWBIT_NATIVE_VARIANT"
VARIANTS = {name: sets for name, (sets, _) in _TARGETS.items()}
# what the default build tries, where the CPU runs it (the x86 and ARM variants never both)
AUTO_ORDER = ("avx512vnni", "avxvnni", "avx2", "i8mm", "dotprod", "neon", "portable")


def runnable_variants(flags: frozenset[str] | None = None) -> tuple[str, ...]:
    """The variants of AUTO_ORDER this CPU (or `flags`) runs, best first; without /proc/cpuinfo: native, portable."""
    flags = flags if flags is not None else cpu_flags()
    if flags is None:
        return ("native", "portable")
    return tuple(v for v in AUTO_ORDER if cpu_runs(v, flags))


def variant_flag_sets(variant: str | None = None) -> tuple[tuple[str, ...], ...]:
    """The flag sets to try: those of `variant` (default: $LOWBIT_NATIVE_VARIANT), else those of every variant this
    CPU runs, best first."""
    variant = variant if variant is not None else os.environ.get(VARIANT_ENV, "")
    if not variant:
        return tuple(fs for v in runnable_variants() for fs in VARIANTS[v])
    if variant not in VARIANTS:
        raise NativeBuildError(f"{VARIANT_ENV}={variant!r} is unknown: use one of {', '.join(VARIANTS)}")
    if not cpu_runs(variant):
        raise NativeBuildError(f"{VARIANT_ENV}={variant!r}: this CPU does not report {' '.join(_TARGETS[variant][1])}"
                               f"; variants it runs: {', '.join(runnable_variants())}")
    return VARIANTS[variant]


def build_native(compiler: str | None = None, root: Path | None = None,
                 flag_sets: tuple[tuple[str, ...], ...] | None = None) -> NativeLibrary:
    """Build (or find in the cache) and load the kernels; raises NativeBuildError listing every attempt's failure.

    flag_sets: compiler flag sets tried in order (default: `variant_flag_sets()`, native SIMD + OpenMP down to plain C
    unless LOWBIT_NATIVE_VARIANT pins one).
    """
    flag_sets = flag_sets if flag_sets is not None else variant_flag_sets()
    compiler = compiler or compiler_command()
    if shutil.which(compiler) is None:
        raise NativeBuildError(f"C compiler {compiler!r} not found (set LOWBIT_CC or CC to a working compiler)")
    root = root or cache_root()
    errors = []
    with _LOCK:
        for flags in flag_sets:
            try:
                return _build_with(compiler, flags, root)
            except (NativeBuildError, OSError, subprocess.SubprocessError) as e:
                errors.append(f"[{' '.join(flags)}] {e}")
    raise NativeBuildError("could not build the native CPU kernels:\n" + "\n".join(errors))
