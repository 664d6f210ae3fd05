"""Weight memory on transparent huge pages (2 MiB) for the native kernels' prepared tensors.

Why: at M = 1 (decode) every weight byte is read once per token from DRAM, and with 4 KiB pages each 4 KiB of a
weight costs a TLB miss (two-level page walks under a hypervisor) and stops the hardware prefetcher at the page
edge. On the 2-core EPYC guest this halved the M = 1 kernel's stream: int4 b128 2048x2048 at ~10 GB/s on 4 KiB
pages against ~18 GB/s on huge pages, interleaved in one process (benchmarks/results/gemv_cpu.md).

`huge_copy(t)` copies a tensor into an arena of anonymous mappings advised MADV_HUGEPAGE before their first touch
(the kernel then backs them with huge pages at fault time where /sys/kernel/mm/transparent_hugepage allows it,
"madvise" or "always"); tensors are packed one after another (64-byte aligned), so a small weight shares its huge
page with its neighbours instead of wasting one. Each tensor has its own storage of its own size (over the shared
mapping), so storage-based accounting and serialization see only its bytes. Pages are only backed once written:
the unused tail of the last chunk costs address space, not memory. A mapping is unmapped when no tensor in it is
left (freed tensors' pages stay resident until then). Where mmap or madvise is
unavailable (not Linux, THP off) the copy is plain memory, so the result is always a correct contiguous copy.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
import threading

import torch

HUGE_PAGE = 2 << 20
CHUNK_BYTES = 64 << 20  # one mapping holds many weights (the 1B Llama's int4 weights: ~7 chunks)
MIN_BYTES = 64 << 10  # smaller tensors (biases, small scales) stay in ordinary memory: no page walks to save
_ALIGN = 64

MADV_COLLAPSE = 25  # Linux >= 6.1: back an already written range with huge pages now (older kernels: EINVAL)
_LOCK = threading.Lock()
_STATE: dict = {"chunk": None, "offset": 0}


def huge_pages_supported() -> bool:
    """True when anonymous mappings can be advised MADV_HUGEPAGE here (Linux with the constant exposed)."""
    return hasattr(mmap, "MADV_HUGEPAGE") and hasattr(mmap, "MAP_ANONYMOUS")


def _new_chunk(nbytes: int) -> tuple[mmap.mmap, int]:
    """A fresh advised mapping of at least nbytes past its first huge-page boundary, and that boundary's offset."""
    size = -(-max(nbytes, CHUNK_BYTES) // HUGE_PAGE) * HUGE_PAGE + HUGE_PAGE
    mm = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        mm.madvise(mmap.MADV_HUGEPAGE)
    except OSError:  # THP compiled out: ordinary pages, still correct
        pass
    base = torch.frombuffer(mm, dtype=torch.uint8, count=1).data_ptr()
    return mm, (-base) % HUGE_PAGE


def _take(nbytes: int) -> torch.Tensor:
    """nbytes of arena memory: a uint8 tensor with its own storage of exactly nbytes (so memory accounting by
    storage, `lowbit.nn.resident_bytes`, sees its size, not the chunk's), 64-byte aligned, holding the mapping."""
    with _LOCK:
        mm, off = _STATE["chunk"], _STATE["offset"]
        if mm is None or off + nbytes > len(mm):
            mm, off = _new_chunk(nbytes)
        _STATE["chunk"], _STATE["offset"] = mm, off + -(-nbytes // _ALIGN) * _ALIGN
        return torch.frombuffer(mm, dtype=torch.uint8, count=nbytes, offset=off)


def huge_copy(t: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU copy of `t` (same dtype, shape and values) in huge-page-advised memory; tensors under
    MIN_BYTES, or where huge pages are not supported, come back as `t.contiguous()` (possibly `t` itself)."""
    nbytes = t.numel() * t.element_size()
    if t.device.type != "cpu" or nbytes < MIN_BYTES or not huge_pages_supported():
        return t.contiguous()
    out = _take(nbytes).view(t.dtype).view(t.shape)
    out.copy_(t)
    return out


def advise_huge(t: torch.Tensor) -> torch.Tensor:
    """Ask the kernel to move the whole huge pages inside `t`'s memory onto huge pages in place (MADV_HUGEPAGE, then
    MADV_COLLAPSE), for tensors shared with another owner that a copy would double; returns `t`. The unaligned
    edges (under 2 MiB each side) stay on small pages; refusals (older kernels, THP off, not Linux) are ignored."""
    nbytes = t.numel() * t.element_size()
    if t.device.type != "cpu" or not t.is_contiguous() or not sys.platform.startswith("linux"):
        return t
    start = -(-t.data_ptr() // HUGE_PAGE) * HUGE_PAGE
    end = (t.data_ptr() + nbytes) // HUGE_PAGE * HUGE_PAGE
    if end > start and huge_pages_supported():
        libc = ctypes.CDLL(None, use_errno=True)
        for advice in (mmap.MADV_HUGEPAGE, MADV_COLLAPSE):
            libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), ctypes.c_int(advice))
    return t
