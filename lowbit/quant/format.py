"""`QuantizedWeight`: the one packed-weight container every part of lowbit reads and writes."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from .config import FLOAT_BITS, SCALE_DTYPES
from .formats import AFFINE, FormatSpec, register_format
from .packing import pack_words, packed_row_bytes, unpack_bits

FORMAT_NAME = "lowbit.blocked"  # the affine format's tag in metadata (files keep it)
FORMAT_VERSION = 1
_TENSOR_FIELDS = ("packed", "scale", "zero")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def group_size_for(k: int, block_size: int) -> int:
    """Input channels per block: block_size, or all of K for block_size == -1 (per channel) and for a block wider
    than K (one block per row: nothing is ever sized by a block larger than the row)."""
    return k if block_size == -1 or block_size > k else block_size



def num_blocks_for(k: int, block_size: int) -> int:
    """Blocks per row; the last block is shorter when block_size does not divide K."""
    return math.ceil(k / group_size_for(k, block_size))

def expected_shapes(shape: tuple[int, ...], bits: int, block_size: int, symmetric: bool) -> dict[str, tuple[int, ...]]:
    """Shapes the stored tensors (packed, scale, zero) of a weight with this metadata must have."""
    n, k = shape[0], math.prod(shape[1:])
    if bits == FLOAT_BITS:
        return {"packed": (n, k)}
    blocks = num_blocks_for(k, block_size)
    shapes = {"packed": (n, packed_row_bytes(k, bits)), "scale": (n, blocks)}
    if not symmetric:
        shapes["zero"] = (n, blocks)
    return shapes


def symmetric_zero(bits: int) -> int:
    """The implicit zero of symmetric weights: codes are signed values offset by 2**(bits-1)."""
    return 1 << (bits - 1)


def dequantize_blocks(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The dequantization rule, written once for the torch side: w = (q - zero) * scale, per block.

    q: (N, K) integer codes; scale, zero: (N, ceil(K/group_size)); returns (N, K) in `dtype` (math in fp32).
    """
    k = q.shape[1]
    out = q.to(torch.float32)  # the one (N, K) float32 buffer: each block's scale and zero broadcast, in place
    whole = k // group_size  # blocks of full width; a shorter last block when group_size does not divide K
    if whole:
        blocks = out[:, :whole * group_size].unflatten(1, (whole, group_size))
        blocks.sub_(zero[:, :whole, None].float()).mul_(scale[:, :whole, None].float())
    if whole * group_size < k:
        out[:, whole * group_size:].sub_(zero[:, whole:whole + 1].float()).mul_(scale[:, whole:whole + 1].float())
    return out.to(dtype)


def container_bits(bits: int) -> int:
    """The bit width kernels compute with: 2 and 4 and 8 as is, 3 in a 4-bit container, 5..7 in 8 bits."""
    return 2 if bits == 2 else 4 if bits <= 4 else 8


@dataclass(frozen=True)
class ComputeWeight:
    """A quantized weight in the layout kernels read (built once at load by `QuantizedWeight.compute_layout`).

    qweight: int32 (N, ceil(K / (32 // container_bits))): codes packed along K, value j at bits
             [(j % per) * cb, ...) of word j // per (per = 32 // cb); words past K hold zeros.
    scale:   float32 (N, num_blocks).
    zero:    float32 (N, num_blocks), always explicit (symmetric weights carry 2**(bits-1)).
    bits: the true bit width (codes < 2**bits); container_bits in {2, 4, 8}; group_size: channels per block
    (K when per-channel); n, k: the 2-D weight shape.
    Rule: w[n, k] = (q[n, k] - zero[n, k // group_size]) * scale[n, k // group_size].
    """

    qweight: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    bits: int
    container_bits: int
    group_size: int
    n: int
    k: int

    def unpack(self) -> torch.Tensor:
        """Codes as uint8 (N, K)."""
        from .packing import unpack_words

        return unpack_words(self.qweight, self.container_bits, self.k)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The float weight (N, K)."""
        return dequantize_blocks(self.unpack(), self.scale, self.zero, self.group_size, dtype)

    def to(self, device) -> ComputeWeight:
        return replace(self, qweight=self.qweight.to(device), scale=self.scale.to(device), zero=self.zero.to(device))


@dataclass(frozen=True)
class QuantizedWeight:
    """A compressed weight: dense b-bit codes plus per-block scales and zeros (format "lowbit.blocked" v1).

    Tensor fields (all on one device):
      packed: integer weights (bits 2..8): uint8 (N, ceil(K*bits/8)), each row a little-endian bit stream with
              value k at bits [k*bits, (k+1)*bits) (see `lowbit.quant.packing`); rows rounded up to whole bytes.
              float16 storage (bits=16): float16 (N, K) holding the weight itself.
      scale:  (N, num_blocks) float16 or float32; None for bits=16.
      zero:   (N, num_blocks), same dtype as scale, asymmetric only; None when symmetric (implicit 2**(bits-1))
              and for bits=16. Zeros are floats (HQQ's are not integers).
    Plain fields:
      shape: the original weight shape (N, ...) (Linear (N, K); Conv (O, I/groups, *kernel); LSTM gates (4H, I)).
             The 2-D view is (N, K) with K = prod(shape[1:]): input channels flattened in row-major order.
      dtype: the original floating dtype, restored by `dequantize()`.
      bits: 2..8, or 16 for float16 storage. block_size: channels per block along K, or -1 (one per row); a block
             wider than K is one block per row (`group_size` is then K), whatever its stored value.
      symmetric: codes are q = clamp(round(w / scale), -2**(b-1), 2**(b-1)-1) + 2**(b-1).
      method: the name of the method that made it ("rtn", "hqq", "gptq", "awq", "recon", a registered one; "fp16"
             for float16 storage).
    Rule: w[n, k] ~= (q[n, k] - zero[n, k // block]) * scale[n, k // block]. When block_size does not divide K the
    last block is shorter (no padding is stored); its scale/zero come from its own elements only.
    """

    packed: torch.Tensor
    scale: torch.Tensor | None
    zero: torch.Tensor | None
    shape: tuple[int, ...]
    dtype: torch.dtype
    bits: int
    block_size: int
    symmetric: bool
    method: str

    @property
    def format(self) -> str:
        """The registered format name (`lowbit.quant.formats`): "affine"."""
        return AFFINE

    @property
    def n(self) -> int:
        return self.shape[0]

    @property
    def k(self) -> int:
        return math.prod(self.shape[1:])

    @property
    def is_float(self) -> bool:
        return self.bits == FLOAT_BITS

    @property
    def group_size(self) -> int:
        return group_size_for(self.k, self.block_size)

    @property
    def num_blocks(self) -> int:
        return num_blocks_for(self.k, self.block_size)

    @property
    def device(self) -> torch.device:
        return self.packed.device

    @property
    def nbytes(self) -> int:
        """True storage size in bytes: packed codes (or fp16 weight) plus scales and zeros."""
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    def zero_or_implicit(self) -> torch.Tensor:
        """(N, num_blocks) zeros, materialising the implicit symmetric zero."""
        if self.zero is not None:
            return self.zero
        return torch.full_like(self.scale, float(symmetric_zero(self.bits)))

    def unpack(self) -> torch.Tensor:
        """Integer codes as uint8 (N, K)."""
        if self.is_float:
            raise ValueError("a float16-stored weight (bits=16) has no integer codes")
        return unpack_bits(self.packed, self.bits, self.k)

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The float weight in its original shape, in `dtype` (default: the original dtype)."""
        return self.dequantize_rows(0, self.shape[0], dtype).reshape(self.shape)

    def dequantize_rows(self, start: int, stop: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Rows start:stop of the weight flattened to (N, K), in `dtype`: the same numbers as dequantize() there,
        without the whole float weight (lm_head's 32000 x 2048 is 262 MB of float32)."""
        dtype = dtype or self.dtype
        if self.is_float:
            return self.packed[start:stop].reshape(stop - start, -1).to(dtype)
        codes = unpack_bits(self.packed[start:stop], self.bits, self.k)
        return dequantize_blocks(codes, self.scale[start:stop], self.zero_or_implicit()[start:stop], self.group_size,
                                 dtype)

    def compute_layout(self) -> ComputeWeight:
        """Codes widened to a 2/4/8-bit container and packed in int32 words along K, fp32 scale and zero."""
        if self.is_float:
            raise ValueError("a float16-stored weight (bits=16) has no compute layout; use dequantize()")
        cb = container_bits(self.bits)
        return ComputeWeight(
            qweight=pack_words(self.unpack(), cb),
            scale=self.scale.float().contiguous(),
            zero=self.zero_or_implicit().float().contiguous(),
            bits=self.bits, container_bits=cb, group_size=self.group_size, n=self.n, k=self.k,
        )

    def to(self, device) -> QuantizedWeight:
        moved = {name: t.to(device) for name, t in self.tensors().items()}
        return replace(self, **{name: moved.get(name) for name in _TENSOR_FIELDS})

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensor fields that exist, by name ("packed", "scale", "zero")."""
        return {name: getattr(self, name) for name in _TENSOR_FIELDS if getattr(self, name) is not None}

    def metadata(self) -> dict:
        """JSON-ready description; with `tensors()` it is everything `from_tensors` needs."""
        return {
            "format": FORMAT_NAME, "version": FORMAT_VERSION, "shape": list(self.shape),
            "dtype": str(self.dtype).removeprefix("torch."), "bits": self.bits, "block_size": self.block_size,
            "symmetric": self.symmetric, "method": self.method,
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], metadata: dict) -> QuantizedWeight:
        """Rebuild from `tensors()` and `metadata()`; raises ValueError when they disagree."""
        meta = check_metadata(metadata)
        qw = cls(packed=tensors.get("packed"), scale=tensors.get("scale"), zero=tensors.get("zero"), **meta)
        check_tensor_shapes(qw)
        return qw

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes the tensor fields must have for this metadata."""
        return expected_shapes(self.shape, self.bits, self.block_size, self.symmetric)

    def __repr__(self) -> str:
        return (f"QuantizedWeight(shape={self.shape}, bits={self.bits}, block_size={self.block_size}, "
                f"symmetric={self.symmetric}, method={self.method!r}, nbytes={self.nbytes})")


def check_metadata(meta: dict) -> dict:
    """Validate a `QuantizedWeight.metadata()` dict; return the constructor fields (no "format": affine)."""
    if meta.get("format", FORMAT_NAME) != FORMAT_NAME:
        raise ValueError(f"not a lowbit packed weight: format {meta.get('format')!r}, expected {FORMAT_NAME!r}")
    version = meta.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"packed-weight format version {version!r} is newer than this lowbit reads ({FORMAT_VERSION})")
    try:
        shape = tuple(int(d) for d in meta["shape"])
        dtype = _DTYPES[meta["dtype"]]
        bits, block, sym, method = int(meta["bits"]), int(meta["block_size"]), bool(meta["symmetric"]), meta["method"]
    except KeyError as e:
        raise ValueError(f"packed-weight metadata is missing or has a bad value for {e}") from None
    if len(shape) < 2 or min(shape) <= 0:
        raise ValueError(f"packed-weight metadata has an invalid shape {shape}")
    if not (2 <= bits <= 8 or bits == FLOAT_BITS):
        raise ValueError(f"packed-weight metadata has bits={bits}; expected 2..8 or 16")
    if block != -1 and block <= 0:
        raise ValueError(f"packed-weight metadata has block_size={block}; expected -1 or a positive int")
    return dict(shape=shape, dtype=dtype, bits=bits, block_size=block, symmetric=sym, method=method)


def check_tensor_shapes(qw: QuantizedWeight) -> None:
    """The tensors of a rebuilt QuantizedWeight must match its metadata exactly."""
    expected = qw.expected_shapes()
    present = qw.tensors()
    for name, shape in expected.items():
        if name not in present:
            raise ValueError(f"packed weight is missing its {name!r} tensor")
        if tuple(present[name].shape) != shape:
            raise ValueError(f"packed weight {name!r} has shape {tuple(present[name].shape)}, metadata implies {shape}")
    extra = sorted(set(present) - set(expected))
    if extra:
        raise ValueError(f"packed weight has tensors {extra} that its metadata does not use")
    want = torch.float16 if qw.is_float else torch.uint8
    if present["packed"].dtype != want:
        raise ValueError(f"packed weight 'packed' has dtype {present['packed'].dtype}, expected {want}")
    for name in ("scale", "zero"):
        if name in present and present[name].dtype not in (torch.float16, torch.float32):
            raise ValueError(f"packed weight {name!r} has dtype {present[name].dtype}, expected float16 or float32")


def _expected_tensors(meta: dict) -> dict:
    """{field: (shape, allowed dtypes)} of an affine weight's stored tensors (the format spec's view)."""
    f = check_metadata(meta)
    shapes = expected_shapes(f["shape"], f["bits"], f["block_size"], f["symmetric"])
    packed = (torch.float16,) if f["bits"] == FLOAT_BITS else (torch.uint8,)
    return {field: (shape, packed if field == "packed" else tuple(SCALE_DTYPES.values()))
            for field, shape in shapes.items()}


AFFINE_FORMAT = register_format(FormatSpec(
    name=AFFINE, tag=FORMAT_NAME, weight_type=QuantizedWeight, from_tensors=QuantizedWeight.from_tensors,
    expected_tensors=_expected_tensors))
