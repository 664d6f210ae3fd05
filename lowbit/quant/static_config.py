"""`StaticConfig`: offline full INT8 (static W8A8) settings, mirroring MNN's quantization JSON (quantized.out).

MNN field names (`from_mnn`) map onto ours: feature_quantize_method -> activation_method, weight_quantize_method ->
weight_method, used_sample_num / used_image_num -> samples, feature_clamp_value -> activation_clamp,
weight_clamp_value -> weight_clamp, batch_size, skip_quant_op_names -> skip, debug.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from enum import Enum

CONFIG_VERSION = 1


class ActivationMethod(str, Enum):
    """How one activation scale (per tensor, symmetric) is chosen from calibration data."""

    KL = "kl"
    """TensorRT-style: histogram of |x| (kl_bins bins), the threshold whose 128-level quantization loses the least
    information (smallest KL divergence); two passes (range, then histogram)."""
    MINMAX = "minmax"
    """The largest |x| seen."""
    EMA = "ema"
    """Exponential moving average (ema_decay) of each item's largest |x|."""
    PERCENTILE = "percentile"
    """The `percentile`-th percentile of |x| (from a histogram; two passes)."""
    MSE = "mse"
    """The threshold minimising the expected squared error (clipping + rounding) over the histogram of |x|."""


class WeightMethod(str, Enum):
    """How weight scales (per output channel or per tensor, symmetric) are chosen."""

    MAX_ABS = "max_abs"
    """scale = max|w| / weight_clamp."""
    ADMM = "admm"
    """Alternating refinement: round with the scale, then the least-squares scale for those codes (MNN's ADMM)."""


_MNN_METHODS = {"KL": "kl", "MINMAX": "minmax", "MIN_MAX": "minmax", "EMA": "ema", "PERCENTILE": "percentile",
                "MSE": "mse", "MAX_ABS": "max_abs", "ADMM": "admm"}
_MNN_FIELDS = {"feature_quantize_method": "activation_method", "weight_quantize_method": "weight_method",
               "used_sample_num": "samples", "used_image_num": "samples", "feature_clamp_value": "activation_clamp",
               "weight_clamp_value": "weight_clamp", "batch_size": "batch_size", "skip_quant_op_names": "skip",
               "debug": "debug", "per_channel": "per_channel", "smooth_alpha": "smooth_alpha",
               "percentile": "percentile"}
# MNN preprocessing fields, accepted and handed to the image loader of the CLI
IMAGE_FIELDS = ("format", "mean", "normal", "width", "height", "path")


@dataclass(frozen=True)
class StaticConfig:
    """Offline INT8: int8 weights and activations with fixed (calibrated) activation scales.

    activation_method: see `ActivationMethod` (default KL). weight_method: `WeightMethod` (default max_abs).
    samples: calibration items used (None = all; MNN's used_sample_num). batch_size: items stacked per model call by
    the CLI's file/image loader. activation_clamp / weight_clamp: largest int8 magnitude (1..127; MNN's clamp values).
    per_channel: one weight scale per output channel (else one per tensor). skip: layer names or fnmatch globs kept
    float (MNN's skip_quant_op_names). percentile: for PERCENTILE, in (0, 100]. kl_bins: histogram bins (>= 256).
    ema_decay: for EMA, in [0, 1). admm_iters: ADMM rounds (>= 1). smooth_alpha: SmoothQuant migration strength in
    [0, 1] for Linear layers (None = off). fold_bn: fold eval-mode BatchNorm into the preceding conv. debug: build
    the per-layer cosine/SNR/overflow table after quantization. fuse_relu: compute an nn.ReLU that directly follows
    a quantized Conv/Linear in that layer's int8 epilogue (`lowbit.static.fuse`).
    """

    activation_method: ActivationMethod = ActivationMethod.KL
    weight_method: WeightMethod = WeightMethod.MAX_ABS
    samples: int | None = None
    batch_size: int = 1
    activation_clamp: int = 127
    weight_clamp: int = 127
    per_channel: bool = True
    skip: tuple[str, ...] = ()
    percentile: float = 99.99
    kl_bins: int = 2048
    ema_decay: float = 0.99
    admm_iters: int = 10
    smooth_alpha: float | None = None
    fold_bn: bool = True
    debug: bool = False
    fuse_relu: bool = True

    def __post_init__(self):
        for name, enum in (("activation_method", ActivationMethod), ("weight_method", WeightMethod)):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, enum(value.lower() if isinstance(value, str) else value))
            except ValueError:
                raise ValueError(f"{name}={value!r} is not one of {[m.value for m in enum]}") from None
        if isinstance(self.skip, str) or not all(isinstance(s, str) for s in self.skip):
            raise ValueError(f"skip={self.skip!r} must be a list of layer names or globs")
        object.__setattr__(self, "skip", tuple(self.skip))
        for name in ("activation_clamp", "weight_clamp"):
            v = getattr(self, name)
            if type(v) is not int or not 1 <= v <= 127:
                raise ValueError(f"{name}={v!r} must be an int in 1..127")
        self._check_counts()
        if not 0 < self.percentile <= 100:
            raise ValueError(f"percentile={self.percentile!r} must be in (0, 100]")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay={self.ema_decay!r} must be in [0, 1)")
        if self.smooth_alpha is not None and not 0 <= self.smooth_alpha <= 1:
            raise ValueError(f"smooth_alpha={self.smooth_alpha!r} must be in [0, 1] or None")

    def _check_counts(self) -> None:
        if self.samples is not None and (type(self.samples) is not int or self.samples < 1):
            raise ValueError(f"samples={self.samples!r} must be a positive int or None (all)")
        for name, low in (("batch_size", 1), ("kl_bins", 256), ("admm_iters", 1)):
            v = getattr(self, name)
            if type(v) is not int or v < low:
                raise ValueError(f"{name}={v!r} must be an int >= {low}")
        if any(type(v) is not bool for v in (self.per_channel, self.fold_bn, self.debug, self.fuse_relu)):
            raise ValueError("per_channel, fold_bn, debug and fuse_relu must be true or false")

    def to_dict(self) -> dict:
        """JSON-ready dict with a version field; `from_dict` reads it back."""
        d = asdict(self)
        d.update(activation_method=self.activation_method.value, weight_method=self.weight_method.value,
                 skip=list(self.skip), version=CONFIG_VERSION)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> StaticConfig:
        """Inverse of `to_dict`; unknown keys and newer versions are errors."""
        d = dict(d)
        version = d.pop("version", CONFIG_VERSION)
        if type(version) is not int or version > CONFIG_VERSION:
            raise ValueError(f"StaticConfig version {version!r} is newer than this lowbit reads ({CONFIG_VERSION})")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown StaticConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StaticConfig:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_mnn(cls, d: dict) -> tuple[StaticConfig, dict]:
        """(config, image preprocessing fields) from MNN's quantization JSON; unknown fields are errors."""
        ours, image = {}, {}
        for key, value in d.items():
            if key in IMAGE_FIELDS:
                image[key] = value
            elif key in _MNN_FIELDS:
                if key.endswith("_method") and isinstance(value, str):
                    value = _MNN_METHODS.get(value.upper(), value)
                ours[_MNN_FIELDS[key]] = value
            else:
                raise ValueError(f"unknown quantization config field {key!r}; known: "
                                 f"{sorted([*_MNN_FIELDS, *IMAGE_FIELDS])}")
        return cls(**ours), image
