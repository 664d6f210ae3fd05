"""The native kernels' C test drivers (tests/kernels/native/: test_rows.c the Linear entry points, test_conv.c the
convolutions on packed weights, test_static.c the static INT8 kernels, test_decode.c the decode-step glue, each
against a reference computed in the driver in double) for each ISA variant: natively for those this CPU runs (linked
against the library build_native makes) and, on any host with Debian's gcc-aarch64-linux-gnu and qemu-user,
cross-compiled for each ARM variant and run under qemu-aarch64 on a CPU model that has exactly the features the
variant needs. Plus the variant tables for ARM."""

import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lowbit.kernels.cpu_native.build import (
    _ISA_NAMES,
    VARIANT_ENV,
    VARIANTS,
    NativeBuildError,
    build_native,
    compiler_command,
    cpu_flags,
    cpu_runs,
    runnable_variants,
    variant_flag_sets,
)
from lowbit.kernels.cpu_native.source import c_source_path

NATIVE = Path(__file__).parent / "native"
# driver -> the fewest cases its summary reports
DRIVERS = {"test_rows": 1000, "test_conv": 300, "test_static": 60, "test_decode": 20}
ISA = {name: code for code, name in _ISA_NAMES.items()}
ARM_CC, QEMU = "aarch64-linux-gnu-gcc", "qemu-aarch64"
# variant -> qemu CPU model (qemu 7.2): cortex-a57 is armv8.0 (no sdot), cortex-a76 has sdot but no i8mm, max has all
ARM_CPUS = {"neon": "cortex-a57", "dotprod": "cortex-a76", "i8mm": "max"}
# Static ARM executables run under qemu; OMP_WAIT_POLICY=passive: idle OpenMP threads sleep rather than spin (the
# driver's 2-thread cases otherwise cost seconds on a loaded 2-core machine)
RUN_ENV = {"OMP_WAIT_POLICY": "passive", "PATH": "/usr/bin:/bin"}
SUMMARY = re.compile(r"isa=(\d+) cases=(\d+) failed=(\d+) max_rel_err=(\S+) tol=(\S+)")


def _arm_tools_missing() -> str | None:
    """Why the ARM cross tests cannot run here (None when they can)."""
    missing = [tool for tool in (ARM_CC, QEMU) if shutil.which(tool) is None]
    if missing:
        return (f"{' and '.join(missing)} not installed (Debian: apt-get install gcc-aarch64-linux-gnu "
                f"libc6-dev-arm64-cross qemu-user; `make setup` does it when run as root)")
    libc = subprocess.run([ARM_CC, "-print-file-name=libc.a"], capture_output=True, text=True).stdout.strip()
    if not Path(libc).is_absolute():
        return "the aarch64 C library is not installed (Debian: apt-get install libc6-dev-arm64-cross)"
    return None


def _run_driver(cmd: list[str], variant: str, driver: str) -> tuple[int, float]:
    """Runs a driver; asserts it passed; returns (cases, max relative error)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=RUN_ENV)
    match = SUMMARY.search(proc.stdout)
    assert proc.returncode == 0 and match, f"{variant}: {' '.join(cmd)} -> rc {proc.returncode}\n{proc.stdout[-3000:]}"
    cases, failed, err, tol = int(match[2]), int(match[3]), float(match[4]), float(match[5])
    assert failed == 0 and cases >= DRIVERS[driver] and err <= tol, f"{driver}: {match[0]}"
    print(f"{variant} {driver}: {match[0]}")
    return cases, err


def _driver_command(compiler: str, flags, driver: str, objects: list[str], out: Path) -> list[str]:
    """The command that builds one driver (optimised lightly: it is mostly the reference) against `objects`."""
    return [compiler, *flags, "-O1", "-std=c11", f"-I{NATIVE}", str(NATIVE / f"{driver}.c"), *objects, "-o", str(out),
            "-lm"]


@pytest.mark.parametrize("driver", list(DRIVERS))
@pytest.mark.parametrize("variant", runnable_variants())
def test_driver_native(variant, driver, tmp_path):
    lib = build_native(flag_sets=VARIANTS[variant])
    assert variant == "portable" or lib.variant == variant
    _run_linked(lib.path, lib.variant, driver, tmp_path)  # portable: whatever it compiles to (neon on aarch64)


def _cross_compile(variant: str, folder: Path) -> tuple[dict[str, Path], str]:
    """lowbit_cpu.c compiled once with the variant's first flag set (the one with OpenMP), each driver linked to it
    statically: ({driver: executable}, "") or ({}, why not)."""
    flags = VARIANTS[variant][0]
    obj = folder / f"lowbit_cpu_{variant}.o"
    cmds = [[ARM_CC, *flags, "-std=c11", "-fno-math-errno", "-c", str(c_source_path()), "-o", str(obj)]]
    exes = {d: folder / f"{d}_{variant}" for d in DRIVERS}
    cmds += [_driver_command(ARM_CC, (*flags, "-static"), d, [str(obj)], exe) for d, exe in exes.items()]
    for cmd in cmds:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if proc.returncode == 0:
            continue
        probe = subprocess.run([ARM_CC, *flags, "-x", "c", "-c", "-o", "/dev/null", "-"], input="int x;\n",
                               capture_output=True, text=True, timeout=60)
        if probe.returncode != 0:  # an older cross compiler (i8mm needs GCC 10): build.py falls through the same way
            return {}, f"skip: {ARM_CC} does not take {' '.join(flags)}: {probe.stderr.strip()[-300:]}"
        return {}, f"{' '.join(cmd)}:\n{proc.stderr[-3000:]}"
    return exes, ""


def _cross_test(variant: str, folder: Path) -> str:
    """Cross-compiles the drivers for `variant` and runs them under qemu on its CPU model (and test_rows on the model
    one level down, which lacks the variant's instructions, so it must die there): "" when all hold, else why not."""
    exes, why = _cross_compile(variant, folder)
    if not exes:
        return why
    try:
        for driver, exe in exes.items():
            _run_driver([QEMU, "-cpu", ARM_CPUS[variant], str(exe), str(ISA[variant])], variant, driver)
    except AssertionError as e:
        return str(e)
    lower = {"neon": None, "dotprod": "cortex-a57", "i8mm": "cortex-a76"}[variant]
    if lower and subprocess.run([QEMU, "-cpu", lower, str(exes["test_rows"]), str(ISA[variant])], capture_output=True,
                                timeout=300, env=RUN_ENV).returncode == 0:
        return f"{variant} ran on {lower}, which lacks its instructions: the build does not use them"
    return ""


@pytest.fixture(scope="module")
def arm_results(tmp_path_factory):
    """variant -> _cross_test's answer, the variants run side by side (each takes a few CPU seconds)."""
    reason = _arm_tools_missing()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("arm")
    with ThreadPoolExecutor(len(ARM_CPUS)) as pool:
        futures = {v: pool.submit(_cross_test, v, folder) for v in ARM_CPUS}
        return {v: f.result() for v, f in futures.items()}


@pytest.mark.parametrize("variant", list(ARM_CPUS))
def test_driver_arm_under_qemu(arm_results, variant):
    why = arm_results[variant]
    if why.startswith("skip: "):
        pytest.skip(why[6:])
    assert why == "", why


# The avxvnni variant (VEX vpdpbusd: Alder Lake and later, Zen 5) on this machine: qemu-x86_64 7.2's TCG does not
# execute AVX-VNNI ("TCG doesn't support requested feature: CPUID.07H:EAX.avx-vnni", SIGILL at vpdpbusd), so its code
# is built with LB_EMULATE_AVXVNNI (lowbit_cpu.c: vpdpbusd computed exactly in AVX2, every other line the variant's)
# and run natively; under a qemu-x86_64 whose TCG has AVX-VNNI the real build runs too.
X86_QEMU = "qemu-x86_64"
EMULATED_AVXVNNI = (*(f for f in VARIANTS["avxvnni"][0] if f != "-mavxvnni"), "-DLB_EMULATE_AVXVNNI")
VNNI_PROBE = """#include <immintrin.h>
#include <stdio.h>
int main(void) {
    int o[8];
    _mm256_storeu_si256((__m256i*)o, _mm256_dpbusd_avx_epi32(_mm256_set1_epi32(5), _mm256_set1_epi32(0x01020304),
                                                             _mm256_set1_epi32(-1)));
    printf("%d\\n", o[0]);
    return 0;
}
"""


def _run_linked(lib_path: str, variant: str, driver: str, folder: Path, prefix: tuple[str, ...] = ()) -> None:
    """Builds `driver` against the shared library at lib_path and runs it (under `prefix`, an emulator, if given)."""
    exe = folder / f"{driver}_{variant}"
    subprocess.run(_driver_command(compiler_command(), (), driver, [lib_path, f"-Wl,-rpath,{Path(lib_path).parent}"],
                                   exe), check=True, capture_output=True, timeout=120)
    _run_driver([*prefix, str(exe), str(ISA[variant])], variant, driver)


@pytest.mark.parametrize("driver", list(DRIVERS))
def test_driver_avxvnni_emulated(driver, tmp_path):
    if not cpu_runs("avx2"):
        pytest.skip("the emulated avxvnni build needs an AVX2 CPU")
    lib = build_native(flag_sets=(EMULATED_AVXVNNI,))
    assert lib.variant == "avxvnni"
    _run_linked(lib.path, "avxvnni", driver, tmp_path)


EMULATION_CHECK = """#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
%s
int main(void) { /* random bytes, bytes at the extremes (0x80, 0xff), accumulators near INT32_MAX (wrapping) */
    uint64_t r = 88172645463325252ull;
    long bad = 0;
    for (long it = 0; it < 200000; ++it) {
        uint8_t b[96];
        for (int i = 0; i < 96; ++i) {
            r ^= r << 13, r ^= r >> 7, r ^= r << 17;
            b[i] = (uint8_t)(it %% 3 ? r : r & 1 ? 0xff : 0x80);
        }
        __m256i acc = _mm256_loadu_si256((const __m256i*)b), u = _mm256_loadu_si256((const __m256i*)(b + 32));
        const __m256i s = _mm256_loadu_si256((const __m256i*)(b + 64));
        if (it %% 5 == 0) acc = _mm256_set1_epi32(0x7fffff00);
        const __m256i x = %s(acc, u, s), y = lb_dpbusd_emulated(acc, u, s);
        bad += _mm256_movemask_epi8(_mm256_cmpeq_epi8(x, y)) != -1;
    }
    printf("%%ld\\n", bad);
    return 0;
}
"""


def test_emulated_vpdpbusd_is_the_instruction(tmp_path):
    """lowbit_cpu.c's lb_dpbusd_emulated (its text) against this CPU's vpdpbusd (EVEX with AVX-512 VNNI, VEX with
    AVX-VNNI: the same operation) on 200k random vectors: bit-identical."""
    if cpu_runs("avxvnni"):
        flags, op = ("-mavx2", "-mavxvnni"), "_mm256_dpbusd_avx_epi32"
    elif cpu_runs("avx512vnni"):
        flags, op = ("-mavx2", "-mavx512f", "-mavx512vl", "-mavx512vnni"), "_mm256_dpbusd_epi32"
    else:
        pytest.skip("this CPU has no vpdpbusd to compare with")
    text = c_source_path().read_text()
    fn = re.search(r"static inline __m256i lb_dpbusd_emulated\(.*?\n}\n", text, re.S)
    exe = tmp_path / "dpbusd_check"
    subprocess.run([compiler_command(), "-O1", *flags, "-x", "c", "-", "-o", str(exe)], input=EMULATION_CHECK % (
        fn[0], op), text=True, check=True, capture_output=True, timeout=60)
    assert subprocess.run([str(exe)], capture_output=True, text=True, timeout=60).stdout.strip() == "0"


def _qemu_x86_avxvnni(folder: Path) -> str | None:
    """None when qemu-x86_64 -cpu max executes VEX vpdpbusd (a probe's dot product checked), else why not."""
    if shutil.which(X86_QEMU) is None:
        return f"{X86_QEMU} is not installed (Debian: apt-get install qemu-user)"
    exe = folder / "vnni_probe"
    cc = subprocess.run([compiler_command(), "-O1", "-mavx2", "-mavxvnni", "-x", "c", "-", "-o", str(exe)],
                        input=VNNI_PROBE, capture_output=True, text=True, timeout=60)
    if cc.returncode != 0:
        return f"{compiler_command()} cannot build AVX-VNNI code: {cc.stderr.strip()[-300:]}"
    run = subprocess.run([X86_QEMU, "-cpu", "max", str(exe)], capture_output=True, text=True, timeout=60)
    if run.returncode != 0 or run.stdout.strip() != str(5 - 10):
        version = subprocess.run([X86_QEMU, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
        return f"{version}: its TCG does not execute VEX vpdpbusd (rc {run.returncode}, {run.stdout.strip()!r})"
    return None


def test_driver_avxvnni_under_qemu(tmp_path):
    why = _qemu_x86_avxvnni(tmp_path)
    if why:
        pytest.skip(f"{why}; test_driver_avxvnni_emulated runs the variant's code with vpdpbusd emulated")
    lib = build_native(flag_sets=VARIANTS["avxvnni"])
    for driver in DRIVERS:
        _run_linked(lib.path, "avxvnni", driver, tmp_path, (X86_QEMU, "-cpu", "max"))


ARM_FEATURES = ("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics "
                "fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp{extra}\nCPU implementer\t: 0x41\n")


def test_arm_variants_follow_cpuinfo_features():
    neoverse_n1 = cpu_flags(ARM_FEATURES.format(extra=""))
    assert {"asimd", "asimddp"} <= neoverse_n1
    assert runnable_variants(neoverse_n1) == ("dotprod", "neon", "portable")
    assert runnable_variants(cpu_flags(ARM_FEATURES.format(extra=" i8mm bf16")))[0] == "i8mm"
    assert runnable_variants(frozenset({"fp", "asimd"})) == ("neon", "portable")
    assert {_ISA_NAMES[c] for c in (4, 5, 6)} == set(ARM_CPUS)


def test_pinning_an_arm_variant_on_x86_is_an_error(monkeypatch):
    if "asimd" in (cpu_flags() or ()):
        pytest.skip("this CPU runs the ARM variants")
    monkeypatch.setenv(VARIANT_ENV, "dotprod")
    with pytest.raises(NativeBuildError, match="does not report asimd asimddp"):
        variant_flag_sets()
