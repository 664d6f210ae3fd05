"""A stand-in for lowbit.kernels.torch_ops whose ops fail on purpose, for tests of lowbit.runtime.probes.

good: always right. wrong_m1: wrong numbers at M = 1. crash_odd_k: kills its process at M >= 16 when K % 16 != 0.
corrupt: right when called first in a process, kills it at M >= 16 after earlier calls (memory corrupted silently).
absent: not in this "torch build". The probe runs this module in child processes (PYTHONPATH must reach it).
"""

import os
import signal

from lowbit.kernels.torch_ops import shape_class  # noqa: F401  (the probe reads it from the runner module)

OPS = ("good", "wrong_m1", "crash_odd_k", "corrupt", "absent")
SQNR_FLOOR_DB = {op: 30.0 for op in OPS}
_calls = []


def op_present(op):
    return op != "absent"


def probe_cases(op):
    return [(m, n, k) for m in (1, 3, 17) for n in (16, 45) for k in (64, 72)]


def run_case(op, m, n, k):
    _calls.append((m, n, k))
    if op == "wrong_m1" and m == 1:
        return 3.0
    if op == "crash_odd_k" and k % 16 and m >= 16:
        os.kill(os.getpid(), signal.SIGSEGV)
    if op == "corrupt" and m >= 16 and len(_calls) > 1:
        os.kill(os.getpid(), signal.SIGSEGV)
    return 60.0
