"""`capabilities()`: which kernel families this process can run (MNN's MNN_LOW_MEMORY build flag, found at run time).

Computed when called, never at import: Triton is imported, CUDA queried and /proc/cpuinfo read only here.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, fields, replace

import torch

from .config import NATIVE_ACTIVATIONS
from .cpu import _cpu_name, cpu_features, cpu_identity
from .kernel_row import KernelRow, kernel_module
from .kernel_table import kernel_rows
from .probes import WHOLE_OP, refusal_for, torch_cpu_capability, torch_op_report

__all__ = ["Capabilities", "capabilities", "cpu_features", "cpu_identity"]

@dataclass(frozen=True)
class Capabilities:
    """What this process can run. Every field is a plain value, so the object is hashable and testable.

    triton: Triton is importable. gpu: a CUDA device is visible. triton_gpu: the Triton kernels can run on it.
    cpu_int8_dynamic: torch's dynamic int8 linear (fbgemm/x86 on x86, qnnpack on ARM) through lowbit.kernels.cpu_int8.
    cpu_int8_weight: torch's weight-only int8 matmul (_weight_int8pack_mm) through lowbit.kernels.cpu_int8.
    quantized_engines: torch.backends.quantized.supported_engines.
    cpu_int4: lowbit.kernels.cpu_int4 can run here; cpu_int4_impl names what serves it ("" when unknown/none).
    torch_int4pack: torch's _weight_int4pack_mm_for_cpu op exists. kleidiai: torch's ARM KleidiAI is usable.
    native_extension: cpu_int4 is served by lowbit's compiled CPU extension; native_variant: its ISA variant
    ("avx512vnni", "avxvnni", "avx2", ARM "i8mm", "dotprod", "neon", or "portable"; "" without it), chosen at
    build or pinned by LOWBIT_NATIVE_VARIANT.
    cpu_features: ISA features from /proc/cpuinfo (avx2, avx512, neon, ...). cpu_bf16 / cpu_fp16: native support.
    cpu_name, gpu_names: device names.
    torch_cpu_capability: the ISA level of torch's own CPU kernels (ATEN_CPU_CAPABILITY lowers it).
    torch_ops_probed: torch's quantized CPU ops whose numbers were checked on this machine (`lowbit.runtime.probes`);
    torch_op_refusals: (op, shape class or "*", reason) for each shape class an op got wrong or crashed on.
    An op refused for "*" counts as unavailable above (cpu_int8_dynamic, cpu_int8_weight, torch_int4pack).
    cpu_activations: "precision: scheme" for the native CPU kernel at memory Low (config.NATIVE_ACTIVATIONS; () without
    it): which activation scheme each precision runs.
    kernels: every row of the kernel table (lowbit.runtime.kernel_table) this process can run, by `KernelRow.label`
    (a registered row without a `capability` field is dispatched to only when listed here).
    """

    triton: bool = False
    gpu: bool = False
    triton_gpu: bool = False
    cpu_int8_dynamic: bool = False
    cpu_int8_weight: bool = False
    quantized_engines: tuple[str, ...] = ()
    cpu_int4: bool = False
    cpu_int4_impl: str = ""
    torch_int4pack: bool = False
    kleidiai: bool = False
    native_extension: bool = False
    native_variant: str = ""
    cpu_features: tuple[str, ...] = ()
    cpu_bf16: bool = False
    cpu_fp16: bool = False
    cpu_name: str = ""
    gpu_names: tuple[str, ...] = ()
    torch_cpu_capability: str = ""
    torch_ops_probed: tuple[str, ...] = ()
    torch_op_refusals: tuple[tuple[str, str, str], ...] = ()
    cpu_activations: tuple[str, ...] = ()
    kernels: tuple[str, ...] = ()

    def torch_op_refusal(self, op: str, m: int, n: int, k: int) -> str | None:
        """Why torch's `op` must not run an (M, K) x (N, K) product here (from the probe), or None."""
        return refusal_for(self.torch_op_refusals, op, m, n, k)

    def rows(self) -> list[tuple[str, str]]:
        """(name, value) pairs for a two-column table (`lowbit info --system`)."""
        out = []
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "torch_op_refusals":
                out.extend((f"refused: {op} [{cls}]", why) for op, cls, why in v)
                continue
            if isinstance(v, tuple):
                v = ", ".join(v) or "-"
            elif isinstance(v, bool):
                v = "yes" if v else "no"
            out.append((f.name, str(v) or "-"))
        return out


def _call(module, fn: str, default=False):
    f = getattr(module, fn, None) if module is not None else None
    return f() if callable(f) else default


def _gpu_names() -> tuple[str, ...]:
    if not torch.cuda.is_available():
        return ()
    return tuple(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))


def _kleidiai() -> bool:
    kl = getattr(torch.backends, "kleidiai", None)
    return bool(kl is not None and kl.is_available())


def _int4_impl(cpu_int4) -> str:
    """What cpu_int4 would use for a typical 4-bit block-64 weight (its `default_impl`), "" when unknown."""
    pick = getattr(cpu_int4, "default_impl", None) if cpu_int4 is not None else None
    if not callable(pick):
        return ""
    from ..quant.config import QuantConfig
    from ..quant.quantize import quantize_weight

    probe = quantize_weight(torch.linspace(-1, 1, 64 * 128).reshape(64, 128), QuantConfig(bits=4, block_size=64))
    return str(pick(probe))


def _native_variant() -> str:
    """The native kernel's ISA variant (`lowbit.kernels.cpu_native.native_variant`), "" when unknown."""
    return str(_call(kernel_module("cpu_native"), "native_variant", ""))


def _probed(row: KernelRow, gpu: bool, trusted: set[str]) -> bool:
    """The row's `available_*` (its module imported now), a GPU for a CUDA row, and its torch op trusted whole."""
    ok = row.probe()
    return ok and (gpu or row.device != "cuda") and (row.torch_op is None or row.torch_op in trusted)


def capabilities() -> Capabilities:
    """Probe this process: kernel families, CPU features, device names (see `Capabilities`).

    Each row of the kernel table is probed here (its `available_*`); a Linear row's answer fills its `capability`
    field, and `kernels` lists every row that can run. The first call on a machine also checks torch's quantized CPU
    ops in child processes (`lowbit.runtime.probes`, a few seconds, then cached on disk), and may build lowbit's
    native CPU kernel with the C compiler (cached too).
    """
    feats = cpu_features()
    gpu_names = _gpu_names()
    impl = _int4_impl(kernel_module("cpu_int4"))
    triton_ok = importlib.util.find_spec("triton") is not None
    report = torch_op_report(cpu_identity())
    trusted = set(report.ops) - {op for op, cls, _ in report.refusals if cls == WHOLE_OP}
    probed = {row: _probed(row, bool(gpu_names), trusted) for row in kernel_rows()}
    flags = {}
    for row in kernel_rows("linear"):
        if isinstance(row.capability, str):
            flags[row.capability] = flags.get(row.capability, True) and probed[row]
    native = "native" in impl.lower()
    caps = Capabilities(
        triton=triton_ok,
        gpu=bool(gpu_names),
        triton_gpu=flags["triton_gpu"] and triton_ok,
        cpu_int8_dynamic=flags["cpu_int8_dynamic"],
        cpu_int8_weight=flags["cpu_int8_weight"],
        quantized_engines=tuple(torch.backends.quantized.supported_engines),
        cpu_int4=flags["cpu_int4"],
        cpu_int4_impl=impl,
        torch_int4pack="int4pack" in trusted,
        kleidiai=_kleidiai() and "kleidiai" in trusted,
        native_extension=native,
        native_variant=_native_variant() if native else "",
        cpu_features=feats,
        cpu_bf16=bool({"avx512_bf16", "amx_bf16", "bf16"} & set(feats)),
        cpu_fp16=bool({"avx512_fp16", "fp16"} & set(feats)),
        cpu_name=_cpu_name(),
        gpu_names=gpu_names,
        torch_cpu_capability=torch_cpu_capability(),
        torch_ops_probed=report.ops,
        torch_op_refusals=report.refusals,
        cpu_activations=tuple(f"{p.value}: {a}" for p, a in NATIVE_ACTIVATIONS.items()) if native else (),
    )
    listed = (row.label for row, ok in probed.items() if (ok if row.capability is None else row.available_in(caps)))
    return replace(caps, kernels=tuple(dict.fromkeys(listed)))
