"""`QuantConfig`: how one weight is compressed (bits, block, symmetry, method, HQQ parameters)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum

import torch

from ..plugins import load_plugins

CONFIG_VERSION = 1
FLOAT_BITS = 16  # bits=16 means "store the weight as float16" (MNN's --fp16)
SCALE_DTYPES = {"float16": torch.float16, "float32": torch.float32}  # the scale/zero storage dtypes, by name


class QuantMethod(str, Enum):
    """How scales and zeros are chosen."""

    RTN = "rtn"
    """Round to nearest: scale/zero from each block's min and max (absmax when symmetric)."""
    HQQ = "hqq"
    """Half-quadratic quantization: RTN start, then the zero is refined against an lp (p<1) error."""
    GPTQ = "gptq"
    """GPTQ (data-aware): columns rounded in turn, each one's error fed back through the inverse Hessian of the
    layer's calibration inputs (needs `lowbit.quantize(..., calibration=)`; math in lowbit/quant/gptq.py)."""
    AWQ = "awq"
    """Activation-aware (data-aware): per-input-channel scales and per-block clipping searched to minimise the layer's
    output error on calibration inputs, then RTN (math in lowbit/quant/awq.py)."""
    RECON = "recon"
    """Reconstruction (data-aware): codes, scales/zeros and/or rounding learned block by block against the float
    model's outputs (AdaRound/BRECQ; math in lowbit/quant/recon.py, model-level work in lowbit/recon)."""


DATA_AWARE_METHODS = (QuantMethod.GPTQ, QuantMethod.AWQ, QuantMethod.RECON)
# every valid method name -> whether it needs calibration inputs: the built-ins, plus the names that
# lowbit.pipeline.registry.register_method declares (the registry lives above quant; it tells this table)
_METHOD_NAMES = {m.value: m in DATA_AWARE_METHODS for m in QuantMethod}


class MethodName(str):
    """A registered method's name that is not a built-in `QuantMethod`; `.value` is the name itself, as a member's."""

    @property
    def value(self) -> str:
        return str(self)


def declare_method(name: str, needs_calibration: bool) -> None:
    """Make `name` a valid `QuantConfig.method` (called by `lowbit.pipeline.register_method`); a built-in name keeps
    its own needs-calibration flag (ValueError if `needs_calibration` contradicts it)."""
    if name in _METHOD_NAMES and _METHOD_NAMES[name] != needs_calibration:
        raise ValueError(f"method {name!r}: needs_calibration={needs_calibration} contradicts the built-in method")
    _METHOD_NAMES[name] = needs_calibration


def forget_method(name: str) -> None:
    """Undo `declare_method` for a name that is not a built-in `QuantMethod`."""
    if name not in QuantMethod._value2member_map_:
        _METHOD_NAMES.pop(name, None)


def method_names() -> tuple[str, ...]:
    """Every valid `QuantConfig.method` name: the built-in QuantMethod values, then the registered ones."""
    return tuple(_METHOD_NAMES)


def _method_of(value) -> QuantMethod | MethodName:
    name = str(getattr(value, "value", value)).lower()
    if name not in _METHOD_NAMES:
        load_plugins()  # a method registered by a plug-in (lowbit.plugins) is known from then on
    if name not in _METHOD_NAMES:
        raise ValueError(f"method={value!r} is unknown: use one of {', '.join(_METHOD_NAMES)}")
    return QuantMethod(name) if name in QuantMethod._value2member_map_ else MethodName(name)

GPTQ_SCALES = ("rtn", "hqq", "clip")
RECON_INITS = ("rtn", "hqq", "gptq", "awq")
RECON_LEARN = ("rounding", "scales", "weights", "offsets")
RECON_UNITS = ("layer", "block", "model")


@dataclass(frozen=True)
class QuantConfig:
    """How to compress one weight matrix.

    bits: 2..8 integer bits, or 16 to store the weight as float16.
    block_size: consecutive input channels sharing a scale/zero; -1 = one block per output channel.
        Must be -1 or a positive multiple of 16. A last block shorter than block_size is allowed.
    symmetric: absmax scale with an implicit zero of 2**(bits-1); asymmetric (default, as MNN) stores a zero.
    method: "rtn" or "hqq" (HQQ is asymmetric only), a data-aware "gptq", "awq" or "recon", or any name registered
        with `lowbit.pipeline.register_method` (then a `MethodName`, with `.value` as a QuantMethod member has).
    scale_dtype: storage dtype of scales and zeros ("float16" default, "float32" for extreme ranges).
    hqq_*: HQQ's published defaults (p=0.7, beta=10, kappa=1.01, 20 iterations, early stop).
    gptq_damp: damping added to the Hessian's diagonal, as a fraction of its mean diagonal (raised if not enough).
    gptq_block: columns per lazy batch update (speed only; the result is the same up to rounding).
    gptq_act_order: process columns by decreasing Hessian diagonal; blocks keep their scales/zeros, computed from the
        unmodified weight before the error feedback (static groups), so the packed format does not change.
    gptq_scales: how each block's scale/zero is found before its columns are rounded: "rtn" (min/max), "hqq", or
        "clip" (the clipping ratio minimising the block's output error on the calibration inputs, as AWQ's).
    awq: apply the activation-aware scale/clip search before GPTQ (method="gptq"; method="awq" always does it; with
        rtn/hqq it makes the layer use method="awq").
    awq_grid: number of exponents alpha in [0, 1) tried for the per-channel scales s = mean|x|**alpha.
    recon_*: method="recon" (see lowbit/methods/recon): recon_init, where codes and scales start (rtn, hqq, gptq,
        awq; "hqq", the default, starts symmetric weights from RTN: HQQ optimises a zero); recon_learn, "scales"
        (group scales and zeros) and at most one of "offsets" (SignRound's rounding offsets in [-0.5, 0.5] steps,
        trained with sign-SGD, the default), "rounding" (AdaRound) or "weights" (the weights through a
        straight-through round); recon_steps, optimiser steps per block; recon_lr, the signed step with "offsets"
        (linearly decayed; about 1/recon_steps), else Adam's learning rate (weights and offsets in units of their
        block's step); recon_unit, "layer", "block" (transformer layer, conv -> BatchNorm -> act, LSTM; other layers
        alone) or "model"; recon_blocks, module names to use as the blocks instead of the pattern list;
        recon_final_steps, steps of a final whole-model distillation pass;
        recon_seed, the seed of the hold-out split and the step order.
    """

    bits: int = 4
    block_size: int = 64
    symmetric: bool = False
    method: QuantMethod | MethodName = QuantMethod.RTN
    scale_dtype: str = "float16"
    hqq_lp_norm: float = 0.7
    hqq_beta: float = 10.0
    hqq_kappa: float = 1.01
    hqq_iters: int = 20
    hqq_early_stop: bool = True
    gptq_damp: float = 0.01
    gptq_block: int = 128
    gptq_act_order: bool = False
    gptq_scales: str = "rtn"
    awq: bool = False
    awq_grid: int = 20
    recon_init: str = "hqq"
    recon_learn: tuple[str, ...] = ("scales", "offsets")
    recon_steps: int = 200
    recon_lr: float = 5e-3
    recon_unit: str = "block"
    recon_blocks: tuple[str, ...] = ()
    recon_final_steps: int = 0
    recon_seed: int = 0

    def __post_init__(self):
        valid_bits = isinstance(self.bits, int) and not isinstance(self.bits, bool)
        if not valid_bits or not (2 <= self.bits <= 8 or self.bits == FLOAT_BITS):
            raise ValueError(f"bits={self.bits!r} is not supported: use an integer in 2..8, or 16 for float16 storage")
        if isinstance(self.block_size, bool) or not isinstance(self.block_size, int):
            raise ValueError(f"block_size={self.block_size!r} must be an int (-1 for one block per output channel)")
        if self.block_size != -1 and (self.block_size <= 0 or self.block_size % 16):
            raise ValueError(
                f"block_size={self.block_size} is not supported: use -1 (per channel) or a positive multiple of 16"
            )
        object.__setattr__(self, "method", _method_of(self.method))
        if not isinstance(self.symmetric, bool):
            raise ValueError(f"symmetric={self.symmetric!r} must be True or False")
        if self.method is QuantMethod.HQQ and self.symmetric:
            raise ValueError("method='hqq' with symmetric=True is not supported: HQQ optimises a zero (asymmetric)")
        if self.scale_dtype not in SCALE_DTYPES:
            raise ValueError(f"scale_dtype={self.scale_dtype!r} is not supported: use one of {tuple(SCALE_DTYPES)}")
        if not 0 < self.hqq_lp_norm <= 1:
            raise ValueError(f"hqq_lp_norm={self.hqq_lp_norm} must be in (0, 1]")
        if self.hqq_beta <= 0 or self.hqq_kappa < 1:
            raise ValueError(f"hqq_beta={self.hqq_beta} must be > 0 and hqq_kappa={self.hqq_kappa} >= 1")
        if isinstance(self.hqq_iters, bool) or not isinstance(self.hqq_iters, int) or self.hqq_iters < 0:
            raise ValueError(f"hqq_iters={self.hqq_iters!r} must be a non-negative int")
        self._check_data_aware()
        self._check_recon()

    def _check_data_aware(self):
        if not 0 < self.gptq_damp < 1:
            raise ValueError(f"gptq_damp={self.gptq_damp!r} must be in (0, 1) (a fraction of the mean diagonal)")
        if isinstance(self.gptq_block, bool) or not isinstance(self.gptq_block, int) or self.gptq_block < 1:
            raise ValueError(f"gptq_block={self.gptq_block!r} must be a positive int")
        if self.gptq_scales not in GPTQ_SCALES:
            raise ValueError(f"gptq_scales={self.gptq_scales!r} is unknown: use one of {GPTQ_SCALES}")
        if self.gptq_scales == "hqq" and self.symmetric:
            raise ValueError("gptq_scales='hqq' with symmetric=True is not supported: HQQ optimises a zero")
        if not isinstance(self.gptq_act_order, bool) or not isinstance(self.awq, bool):
            raise ValueError("gptq_act_order and awq must be True or False")
        if isinstance(self.awq_grid, bool) or not isinstance(self.awq_grid, int) or self.awq_grid < 1:
            raise ValueError(f"awq_grid={self.awq_grid!r} must be a positive int")

    def _check_recon(self):
        for name in ("recon_learn", "recon_blocks"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{name}={value!r} must be a list of strings")
            object.__setattr__(self, name, tuple(value))  # JSON gives lists; a tuple keeps the config hashable
        if self.recon_init not in RECON_INITS:
            raise ValueError(f"recon_init={self.recon_init!r} is unknown: use one of {RECON_INITS}")
        learn = set(self.recon_learn)
        if not learn or not learn <= set(RECON_LEARN) or len(learn & {"rounding", "weights", "offsets"}) > 1:
            raise ValueError(f"recon_learn={self.recon_learn!r}: use a non-empty subset of {RECON_LEARN}, at most one "
                             "of 'rounding', 'weights' and 'offsets'")
        if self.recon_unit not in RECON_UNITS:
            raise ValueError(f"recon_unit={self.recon_unit!r} is unknown: use one of {RECON_UNITS}")
        for name in ("recon_steps", "recon_final_steps", "recon_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r} must be a non-negative int")
        if not isinstance(self.recon_lr, (int, float)) or not 0 < self.recon_lr < 1:
            raise ValueError(f"recon_lr={self.recon_lr!r} must be in (0, 1)")

    @property
    def data_aware(self) -> bool:
        """True when the method needs calibration inputs (GPTQ, AWQ, recon, a registered method that says so, or
        the awq flag)."""
        return _METHOD_NAMES.get(self.method.value, False) or self.awq

    @property
    def is_float(self) -> bool:
        """True for bits=16: the weight is stored as float16, not integers."""
        return self.bits == FLOAT_BITS

    @property
    def scale_torch_dtype(self) -> torch.dtype:
        """The torch dtype scales and zeros are stored in (`scale_dtype` by name)."""
        return SCALE_DTYPES[self.scale_dtype]

    def to_dict(self) -> dict:
        """JSON-ready dict with a version field; `from_dict` reads it back."""
        d = asdict(self)
        d["method"] = self.method.value
        d["recon_learn"], d["recon_blocks"] = list(self.recon_learn), list(self.recon_blocks)
        d["version"] = CONFIG_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict) -> QuantConfig:
        """Inverse of `to_dict`; unknown keys and newer versions raise ValueError naming them."""
        d = dict(d)
        version = d.pop("version", CONFIG_VERSION)
        if not isinstance(version, int) or version > CONFIG_VERSION:
            raise ValueError(f"QuantConfig version {version!r} is newer than this lowbit reads ({CONFIG_VERSION})")
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown QuantConfig keys {unknown}; valid keys: {sorted(cls.__dataclass_fields__)}")
        return cls(**d)
