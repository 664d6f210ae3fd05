"""`BackendConfig`: how quantized layers compute (MNN's BackendConfig: a memory mode and a precision mode).

Memory (MNN ints: Normal=0, High=1, Low=2):
  Normal: weights are dequantized once, at the first forward, to the compute dtype and run with F.linear / F.conv:
          the speed of the float model. The packed codes are then released (re-derived exactly when saved), so the
          layer holds one float copy plus the small scales/zeros: <= 1.02x the fp32 bytes from block 64 on.
  Low:    weights stay packed in memory; layers compute with the fused dequantization kernels (Triton on CUDA;
          the CPU int4 kernel for <= 4 bits and torch's dynamic int8 for 5..8 bits on CPU) or with dynamic int8
          activations: the smallest resident memory. Where no fused kernel serves a weight, the layer falls back to
          the dense path (weights dequantized once) and warns once.
  High:   trade memory for speed: per M bucket, the packed kernel or a cached float copy, whichever is faster there
          (`dispatch.high_dense_min_m`; the decision's note says when the copy is taken). Resident: the packed
          codes plus, once such an M ran, the float copy (~1.14x fp32 at int4 block 64).
Precision (MNN ints: Normal=0, High=1, Low=2, Low_BF16=3):
  Normal/High: fp32 activations and accumulation; under memory Low/High on the CPU lowbit's native kernel keeps fp32
            activations at High (exact up to fp32 summation) and at Normal rounds them to int8 with a scale per 32
            input channels (NATIVE_ACTIVATIONS: as accurate as the float path to ~1e-3 of MiniLM's cosine).
  Low:      reduced precision is allowed where the device runs it natively: fp16 on CUDA, bf16 on a CPU with native
            bf16, int8 activations under memory Low (Triton A8W at large M on CUDA). A CPU without native fp16/bf16
            stays in fp32 rather than running slower.
  Low_BF16: bf16 activations, asked for explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

BACKEND_CONFIG_VERSION = 1


class Memory(str, Enum):
    """Where the weights live while the model runs (MNN's MemoryMode)."""

    NORMAL = "normal"
    """Dequantize once at load to the compute dtype; float speed, disk savings only."""
    HIGH = "high"
    """Packed weights for small M plus a cached float copy for large M."""
    LOW = "low"
    """Weights stay packed; fused dequantization kernels or dynamic int8 activations."""


class Precision(str, Enum):
    """Activation and accumulation precision (MNN's PrecisionMode)."""

    NORMAL = "normal"
    """fp32 activations and accumulation (the native CPU kernel: int8 activations with a scale per 32 channels)."""
    HIGH = "high"
    """fp32 activations and accumulation, also in the native CPU kernel."""
    LOW = "low"
    """fp16/bf16 where the device runs it natively, int8 activations per row under memory Low; else fp32."""
    LOW_BF16 = "low_bf16"
    """bf16 activations, asked for explicitly."""


# What each precision means for lowbit's native CPU kernel at memory Low/High (README's precision table; dispatch
# names it in Decision.activations): fp32 activations at High, int8 with a scale per 32 input channels at Normal
# (llama.cpp's Q8_0 granularity: MiniLM's lowest cosine within 0.001 of the float path,
# benchmarks/results/precision_minilm.md), int8 per row at Low / Low_BF16 (fastest).
NATIVE_ACTIVATIONS = {Precision.HIGH: "fp32", Precision.NORMAL: "int8/32", Precision.LOW: "int8/row",
                      Precision.LOW_BF16: "int8/row"}

# MNN's integer encodings
_MNN_MEMORY = {0: Memory.NORMAL, 1: Memory.HIGH, 2: Memory.LOW}
_MNN_PRECISION = {0: Precision.NORMAL, 1: Precision.HIGH, 2: Precision.LOW, 3: Precision.LOW_BF16}


def _parse(value, enum_cls, mnn: dict, field: str):
    """An Enum member from a member, a name/value (case-insensitive) or an MNN integer; ValueError otherwise."""
    if isinstance(value, enum_cls):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value in mnn:
        return mnn[value]
    if isinstance(value, str):
        key = value.strip().lower().replace("-", "_")
        for member in enum_cls:
            if key in (member.value, member.name.lower()):
                return member
    names = ", ".join(repr(m.value) for m in enum_cls)
    ints = ", ".join(f"{i}={m.value}" for i, m in mnn.items())
    raise ValueError(f"{field}={value!r} is not valid: use one of {names} (case-insensitive) or an MNN int ({ints})")


@dataclass(frozen=True)
class BackendConfig:
    """How quantized layers compute: `memory` (Normal/High/Low) and `precision` (Normal/High/Low/Low_BF16).

    Both accept Enum members, names ("low", "Low_BF16", case-insensitive) or MNN's integers. See the module
    docstring for what each mode means; `lowbit.set_backend(model, cfg)` switches an already quantized model.
    """

    memory: Memory = Memory.NORMAL
    precision: Precision = Precision.NORMAL

    def __post_init__(self):
        object.__setattr__(self, "memory", _parse(self.memory, Memory, _MNN_MEMORY, "memory"))
        object.__setattr__(self, "precision", _parse(self.precision, Precision, _MNN_PRECISION, "precision"))

    def to_dict(self) -> dict:
        """JSON-ready dict with a version field; `from_dict` reads it back."""
        return {"memory": self.memory.value, "precision": self.precision.value, "version": BACKEND_CONFIG_VERSION}

    @classmethod
    def from_dict(cls, d: dict) -> BackendConfig:
        """Inverse of `to_dict`; unknown keys and newer versions raise ValueError naming them."""
        d = dict(d)
        version = d.pop("version", BACKEND_CONFIG_VERSION)
        if not isinstance(version, int) or version > BACKEND_CONFIG_VERSION:
            raise ValueError(f"BackendConfig version {version!r} is newer than this lowbit reads "
                             f"({BACKEND_CONFIG_VERSION})")
        unknown = sorted(set(d) - {"memory", "precision"})
        if unknown:
            raise ValueError(f"unknown BackendConfig keys {unknown}; valid keys: ['memory', 'precision']")
        return cls(**d)
