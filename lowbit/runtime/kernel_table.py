"""The runtime's one kernel table: every kernel family is one `KernelRow` (lowbit.runtime.kernel_row).

`select_kernel` / `select_static` (dispatch), `capabilities()` and the executor read these rows and nothing else;
adding a kernel family is its lowbit.kernels module plus one `register_kernel(row)`. The built-in rows are
`weight_rows.WEIGHT_ROWS` (weight-only Linear and the native conv) and `static_rows.STATIC_ROWS` (static W8A8).

Contract of `register_kernel(row)`: the row's (op, kernel name) must be new (ValueError otherwise); it takes part in
dispatch at memory Low/High on its device in `priority` order (lower first; the built-in rows use 5..30), is listed
in `Capabilities.kernels` when its `available` probe says so (the process's capabilities are re-probed after a
registration: `generation()` changes and nn's weight cache starts afresh), and is prepared and run by the executor
through its `prepare` / `run`. `unregister_kernel(op, kernel)` takes it out again (tests).
"""

from __future__ import annotations

from .kernel_row import KernelRow, kernel_module
from .static_rows import STATIC_ROWS
from .weight_rows import WEIGHT_ROWS

_ROWS: list[KernelRow] = [*WEIGHT_ROWS, *STATIC_ROWS]
_GENERATION = [0]


def _key(op: str, kernel) -> tuple[str, str]:
    return op, getattr(kernel, "value", kernel)


_INDEX = {_key(r.op, r.kernel): r for r in _ROWS}  # the executor's per-call lookup


def register_kernel(row: KernelRow) -> KernelRow:
    """Add a kernel family to the table (see the module docstring for the contract); returns the row."""
    if not isinstance(row, KernelRow):
        raise TypeError(f"register_kernel takes a lowbit.runtime.KernelRow, got {type(row).__name__}")
    if _key(row.op, row.kernel) in _INDEX:
        raise ValueError(f"a {row.op} kernel named {row.name!r} is already registered")
    if row.prepare is None or row.run is None:
        raise ValueError(f"kernel row {row.name!r} needs both prepare and run")
    if row.module is not None and "." in row.module and kernel_module(row.module) is None:
        raise ValueError(f"kernel row {row.name!r}: its module {row.module!r} cannot be imported")
    _ROWS.append(row)
    _INDEX[_key(row.op, row.kernel)] = row
    _GENERATION[0] += 1
    return row


def unregister_kernel(op: str, kernel) -> None:
    """Remove the row (op, kernel) added by `register_kernel`; a built-in row cannot be removed."""
    row = find_row(op, kernel)
    if row is None or row in WEIGHT_ROWS or row in STATIC_ROWS:
        raise ValueError(f"no registered {op} kernel named {_key(op, kernel)[1]!r} to remove")
    _ROWS.remove(row)
    del _INDEX[_key(op, kernel)]
    _GENERATION[0] += 1


def kernel_rows(op: str | None = None) -> tuple[KernelRow, ...]:
    """The table's rows (of `op` only when given), built-in rows first, then registered ones in order."""
    return tuple(r for r in _ROWS if op is None or r.op == op)


def find_row(op: str, kernel) -> KernelRow | None:
    """The row of `kernel` (a Kernel / StaticKernel member or a registered name) for `op`, or None."""
    return _INDEX.get(_key(op, kernel))


def row_for(op: str, kernel) -> KernelRow:
    """`find_row`, raising ValueError for an unknown kernel."""
    row = find_row(op, kernel)
    if row is None:
        raise ValueError(f"unknown kernel {kernel!r}")
    return row


def generation() -> int:
    """Changes whenever a row is registered or removed (caches of capabilities and decisions key on it)."""
    return _GENERATION[0]
