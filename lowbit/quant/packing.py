"""Dense bit packing of b-bit unsigned integers (b = 1..8), row by row.

Layout (the storage format, see docs/FORMAT.md): each row of K values is one little-endian bit stream; value j
occupies stream bits [j*b, (j+1)*b), and stream bit i is bit (i % 8) of byte i // 8. A row takes ceil(K*b/8) bytes
(rounded up per row), so 3-bit weights really cost 3 bits. For b in {2, 4, 8} the same stream read as little-endian
int32 words is the kernels' compute layout: value j sits at bits [(j % per)*b, ...) of word j // per, per = 32 // b.
"""

from __future__ import annotations

import torch

from .blocks import row_chunks  # rows go in chunks so the int64 temporaries stay bounded


def packed_row_bytes(k: int, bits: int) -> int:
    """Bytes one packed row of k b-bit values takes."""
    return (k * bits + 7) // 8


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= 8:
        raise ValueError(f"bits={bits} cannot be bit-packed: use 1..8")


def pack_bits(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack unsigned ints q (N, K) with values < 2**bits into uint8 (N, ceil(K*bits/8))."""
    _check_bits(bits)
    if q.dim() != 2:
        raise ValueError(f"pack_bits expects a 2-D (N, K) tensor, got shape {tuple(q.shape)}")
    n, k = q.shape
    if bits == 8:
        return q.to(torch.uint8).contiguous()
    groups = (k + 7) // 8
    out = torch.empty(n, groups * bits, dtype=torch.uint8, device=q.device)
    shifts = torch.arange(8, device=q.device, dtype=torch.int64) * bits
    byte_shifts = torch.arange(bits, device=q.device, dtype=torch.int64) * 8
    for rows in row_chunks(n, k):
        chunk = torch.nn.functional.pad(q[rows].to(torch.int64), (0, groups * 8 - k))
        # (rows, K) -> (rows, groups, 8): 8 values of b bits fill exactly b bytes of one int64 word
        words = (chunk.view(-1, groups, 8) << shifts).sum(-1, keepdim=True)
        out[rows] = ((words >> byte_shifts) & 0xFF).to(torch.uint8).view(-1, groups * bits)
    return out[:, : packed_row_bytes(k, bits)].contiguous()


def unpack_bits(packed: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    """Inverse of `pack_bits`: uint8 (N, ceil(K*bits/8)) -> uint8 (N, K)."""
    _check_bits(bits)
    if packed.dim() != 2 or packed.dtype != torch.uint8:
        raise ValueError(f"unpack_bits expects a 2-D uint8 tensor, got {packed.dtype} {tuple(packed.shape)}")
    n, row_bytes = packed.shape
    if row_bytes != packed_row_bytes(k, bits):
        need = packed_row_bytes(k, bits)
        raise ValueError(f"packed rows have {row_bytes} bytes but K={k} at {bits} bits needs {need}")
    if bits == 8:
        return packed.clone()
    groups = (k + 7) // 8
    out = torch.empty(n, groups * 8, dtype=torch.uint8, device=packed.device)
    shifts = torch.arange(8, device=packed.device, dtype=torch.int64) * bits
    byte_shifts = torch.arange(bits, device=packed.device, dtype=torch.int64) * 8
    mask = (1 << bits) - 1
    for rows in row_chunks(n, groups * 8):
        chunk = torch.nn.functional.pad(packed[rows].to(torch.int64), (0, groups * bits - row_bytes))
        # (rows, groups*b bytes) -> (rows, groups, b) -> one int64 word per group of 8 values
        words = (chunk.view(-1, groups, bits) << byte_shifts).sum(-1, keepdim=True)
        out[rows] = ((words >> shifts) & mask).to(torch.uint8).view(-1, groups * 8)
    return out[:, :k].contiguous()


def pack_words(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack q (N, K) for bits in {2, 4, 8} into int32 words along K: (N, ceil(K / (32 // bits)))."""
    if bits not in (2, 4, 8):
        raise ValueError(f"int32 word packing needs bits in (2, 4, 8), got {bits}")
    n, k = q.shape
    per_word = 32 // bits
    words = (k + per_word - 1) // per_word
    stream = pack_bits(q, bits)
    stream = torch.nn.functional.pad(stream, (0, words * 4 - stream.shape[1]))
    return stream.view(torch.int32).contiguous()  # little-endian bytes -> int32 words


def unpack_words(words: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    """Inverse of `pack_words`: int32 (N, ceil(K / (32 // bits))) -> uint8 (N, K)."""
    if bits not in (2, 4, 8):
        raise ValueError(f"int32 word packing needs bits in (2, 4, 8), got {bits}")
    stream = words.contiguous().view(torch.uint8)
    return unpack_bits(stream[:, : packed_row_bytes(k, bits)].contiguous(), bits, k)
