"""The per-weight cache behind the ops: for each packed weight, the dispatch decisions and the prepared kernel weights.

Keyed by the packed tensor itself (weakly) and checked against a stamp of its buffers' version counters, so
load_state_dict (in place or assign=True), .to() and a new backend all rebuild it lazily; it is never part of the
state_dict. Decisions are kept per M bucket (`m_bucket`: M values dispatch cannot tell apart), so a layer fed many
sequence lengths holds a handful of them, not one per M.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from dataclasses import dataclass, field

import torch
from torch.utils.weak import WeakIdKeyDictionary

from ..quant.format import QuantizedWeight
from ..runtime import executor
from ..runtime.capabilities import Capabilities, capabilities
from ..runtime.config import BackendConfig
from ..runtime.dispatch import (
    A8W_MIN_M,
    GEMV_MAX_M,
    HIGH_DENSE_MIN_M,
    NATIVE_HIGH_DENSE_MIN_M,
    Decision,
    Kernel,
    WeightFormat,
    compute_dtype,
    select_kernel,
)
from ..runtime.kernel_row import StaticKernel, format_name
from ..runtime.kernel_table import find_row, generation
from ..runtime.static_dispatch import select_static
from .identity import same

# Every M where dispatch may change its mind: the probe's shape classes (1, 2..15, >= 16) and the thresholds.
_HIGH_CROSSOVERS = {m for table in NATIVE_HIGH_DENSE_MIN_M.values() for m in table.values() if m is not None}
M_BOUNDARIES = tuple(sorted({1, 2, 16, GEMV_MAX_M + 1, HIGH_DENSE_MIN_M, A8W_MIN_M, *_HIGH_CROSSOVERS}))


def m_bucket(m: int) -> int:
    """The largest boundary <= m: dispatch decides the same for every M of a bucket (a test checks it)."""
    return max((b for b in M_BOUNDARIES if b <= m), default=M_BOUNDARIES[0])


@dataclass
class WeightCache:
    """What one packed weight has decided and built.

    stamp: the buffers' versions when built (`stamp`); refused: (kernel, reason) from the Linear rows' format and
    `supports_*`; refused_by_op: the same for the other ops' rows (static, conv), filled when first asked;
    decisions: (device, M bucket, memory, precision) -> (Decision, compute dtype) (static: ("static", device,
    M bucket, fused) -> Decision);
    prepared: (kernel, dtype, rows or None) -> the kernel's prepared weight (rows: a conv group's output channels;
    other ops: (op, layout or kernel, dtype, options));
    plans: (device, M bucket, memory, precision) -> (Decision, dtype, prepared weight), the Linear op's hot path.
    """

    stamp: tuple
    refused: tuple
    refused_by_op: dict = field(default_factory=dict)
    decisions: dict = field(default_factory=dict)
    prepared: dict = field(default_factory=dict)
    plans: dict = field(default_factory=dict)


_CACHE: WeakIdKeyDictionary = WeakIdKeyDictionary()  # packed tensor -> WeightCache
_CAPS_OVERRIDE: list[Capabilities] = []
_FORCED: list[Kernel] = []
_EPOCH = [0]  # counts `override_capabilities` calls: bound layer calls (lowbit.nn.fastcall) check it


@functools.cache
def _probed_caps(_generation: int) -> Capabilities:
    return capabilities()


def current_capabilities() -> Capabilities:
    """The capabilities dispatch uses: probed once per process and kernel table (a registered row re-probes), or
    the one set by `override_capabilities`."""
    return _CAPS_OVERRIDE[-1] if _CAPS_OVERRIDE else _probed_caps(generation())


def override_capabilities(caps: Capabilities | None) -> None:
    """Make dispatch see `caps` (None restores the probed ones); drops every prepared-weight cache."""
    _CAPS_OVERRIDE.clear()
    if caps is not None:
        _CAPS_OVERRIDE.append(caps)
    _CACHE.clear()
    _EPOCH[0] += 1


def epoch() -> int:
    """Changes whenever `override_capabilities` drops every cache (what a bound layer call must not outlive)."""
    return _EPOCH[0]


@contextlib.contextmanager
def forced_kernel(kernel: Kernel):
    """Within the block every quantized layer runs `kernel`, whatever dispatch would pick (tests, benchmarks).

    The kernel must serve the weight and device (e.g. Triton needs a GPU or TRITON_INTERPRET=1); no fallback applies.
    """
    if not isinstance(kernel, Kernel):
        raise TypeError(f"kernel must be a lowbit.runtime.Kernel member, got {kernel!r}")
    _FORCED.append(kernel)
    try:
        yield
    finally:
        _FORCED.pop()


def forcing() -> bool:
    """True inside `forced_kernel` (nothing is then stored as a decision)."""
    return bool(_FORCED)


def drop_cache(packed: torch.Tensor) -> None:
    """Forget the prepared kernel weights of one packed tensor (set_backend frees the float copies this way)."""
    _CACHE.pop(packed, None)


def cached(packed: torch.Tensor) -> WeightCache | None:
    """The cache of `packed`, or None (for resident-bytes accounting)."""
    return _CACHE.get(packed)


@functools.cache
def backend(memory: str, precision: str) -> BackendConfig:
    return BackendConfig(memory, precision)


def _version(t: torch.Tensor | None) -> int:
    if t is None:
        return -1
    try:
        return t._version
    except RuntimeError:  # inference tensors carry no version counter; they cannot be modified in place either
        return 0


def stamp(packed: torch.Tensor, scale: torch.Tensor | None, zero: torch.Tensor | None) -> tuple:
    """Changes whenever the packed buffers are replaced, modified in place or moved, or the kernel table changes."""
    return (_version(packed), same(scale), _version(scale), same(zero), _version(zero), packed.device, generation())


def compute_view(packed, scale, zero, shape, bits, block_size) -> QuantizedWeight:
    """The QuantizedWeight the kernels read, from the op's buffers and format numbers.

    The op does not carry the original dtype or the quantization method (they do not change how it computes):
    dtype is the storage dtype (scale's, or float16 for bits=16) and method is "" (unknown here).
    """
    dtype = scale.dtype if scale is not None else packed.dtype
    return QuantizedWeight(packed=packed, scale=scale, zero=zero, shape=tuple(shape), dtype=dtype, bits=bits,
                           block_size=block_size, symmetric=zero is None, method="")


def entry_for(qw: QuantizedWeight) -> WeightCache:
    """The weight's cache, rebuilt when its buffers changed since it was built."""
    now = stamp(qw.packed, qw.scale, qw.zero)
    entry = _CACHE.get(qw.packed)
    if entry is None or entry.stamp != now:
        entry = WeightCache(now, executor.refusals(qw))
        _CACHE[qw.packed] = entry
    return entry


def fresh_entry(packed, scale, zero) -> WeightCache | None:
    """The weight's cache when it exists and its buffers did not change (the hot path's one check), else None."""
    entry = _CACHE.get(packed)
    return entry if entry is not None and entry.stamp == stamp(packed, scale, zero) else None


def choose(qw: QuantizedWeight, entry: WeightCache, device_type: str, m: int, memory: str, precision: str,
           n: int) -> tuple[Decision, torch.dtype]:
    """(Decision, compute dtype), decided once per (device, M bucket, modes) and weight.

    Callers announce the decision with `warn_fallback` (once per distinct reason)."""
    if _FORCED:
        caps = current_capabilities()
        return Decision(_FORCED[-1]), compute_dtype(device_type, caps, backend(memory, precision))
    key = (device_type, m_bucket(m), memory, precision)
    if key not in entry.decisions:
        config, caps = backend(memory, precision), current_capabilities()
        fmt = WeightFormat(qw.bits, qw.group_size, qw.symmetric, n, qw.k, entry.refused, format_name(qw))
        entry.decisions[key] = (select_kernel(device_type, m, fmt, caps, config),
                                compute_dtype(device_type, caps, config))
    return entry.decisions[key]


def prepared(entry: WeightCache, kernel, qw: QuantizedWeight, dtype: torch.dtype | None, rows: slice | None = None,
             op: str = "linear", **options):
    """The kernel's prepared weight (of output channels `rows` only, for a conv group), built once per entry;
    `op` and `options` as `executor.prepare` takes them (rows sharing a `layout` share one prepared weight)."""
    if op == "linear":
        key = (kernel, dtype, None if rows is None else (rows.start, rows.stop))
    else:
        row = find_row(op, kernel)
        key = (op, row.layout or row.name, dtype, tuple(sorted(options.items())))
    if key not in entry.prepared:
        entry.prepared[key] = executor.prepare(kernel, qw if rows is None else _rows(qw, rows), dtype, op, **options)
    return entry.prepared[key]


def op_refused(entry: WeightCache, qw: QuantizedWeight, op: str) -> tuple:
    """(kernel, reason) of the rows of `op` that cannot serve the weight, computed once per entry."""
    if op not in entry.refused_by_op:
        entry.refused_by_op[op] = executor.refusals(qw, op)
    return entry.refused_by_op[op]


def choose_static(qw: QuantizedWeight, entry: WeightCache, device_type: str, m: int, fused: bool = True) -> Decision:
    """The static W8A8 decision (`select_static`), once per (device, M bucket, fused) and weight; the first time a
    decision falls back to the float64 emulation it warns (UserWarning)."""
    key = ("static", device_type, _shape_class(m), fused)
    if key not in entry.decisions:
        fmt = WeightFormat(qw.bits, qw.group_size, qw.symmetric, qw.n, qw.k, op_refused(entry, qw, "static"))
        decision = select_static(device_type, m, fmt, current_capabilities(), fused)
        if decision.fallback_reason is not None:
            warnings.warn(f"lowbit static int8: {decision.fallback_reason}; using the exact float64 emulation",
                          stacklevel=4)
        entry.decisions[key] = decision
    return entry.decisions[key]


def _shape_class(m: int) -> int:
    """The probe's shape classes of M (1, 2..15, >= 16): all a static decision depends on."""
    return 1 if m <= 1 else 2 if m < 16 else 16


def static_plan(layer, name: str, device: torch.device, m: int, fused: bool = True, op: str = "static"):
    """(Decision, prepared weight, run) for a static W8A8 product of parameter `name` of `layer` at M rows on
    `device`: the decision of the "static" rows (`choose_static`), the prepared weight of that kernel's `op` row
    ("static", or "static_conv" for a conv's fused kernel) and `executor.runner`. The hot path is one fresh-entry
    check and one lookup; nothing kept holds the packed tensor itself (the cache is keyed weakly by it)."""
    packed, scale, zero, shape, bits, block = layer._op_args(name)
    entry = fresh_entry(packed, scale, zero)
    key = ("static", op, device, _shape_class(m), fused)
    plan = None if entry is None else entry.plans.get(key)
    if plan is not None:
        return plan
    qw = compute_view(packed, scale, zero, shape, bits, block)
    entry = entry_for(qw)
    decision = choose_static(qw, entry, device.type, m, fused)
    kernel = decision.kernel
    options = {"device": device} if kernel is StaticKernel.TRITON else {}
    plan = (decision, static_prepared(entry, qw, kernel, op, **options), executor.runner(kernel, op))
    entry.plans[key] = plan
    return plan


def static_prepared(entry: WeightCache, qw: QuantizedWeight, kernel, op: str = "static", **options):
    """The prepared weight of a static row (built once per entry, layout and options)."""
    row = find_row(op, kernel)
    key = (op, row.layout or row.name, None, tuple(sorted(options.items())))
    if key not in entry.prepared:
        entry.prepared[key] = executor.prepare(kernel, qw, None, op, **options)
    return entry.prepared[key]


def _rows(qw: QuantizedWeight, rows: slice) -> QuantizedWeight:
    """The weight of output channels `rows` (rows are independent in the format)."""
    pick = {name: t[rows].contiguous() for name, t in qw.tensors().items()}
    n = rows.stop - rows.start
    return QuantizedWeight(packed=pick["packed"], scale=pick.get("scale"), zero=pick.get("zero"),
                           shape=(n, *qw.shape[1:]), dtype=qw.dtype, bits=qw.bits, block_size=qw.block_size,
                           symmetric=qw.symmetric, method=qw.method)
