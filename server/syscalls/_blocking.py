"""Deadlines of the waits that block the calling thread on its own channel (futex waits,
rx_system_wait_pressure, rx_job_wait_events; how they sleep: base/_sleepers.py)."""

from __future__ import annotations

import math

import trio

from rxkernel.proto import RX_TIME_INFINITE

from ._table import Call


def trio_deadline(call: Call, deadline_ns: int) -> float:
    """An rx monotonic deadline (RX_TIME_INFINITE: none) as trio time."""
    if deadline_ns == RX_TIME_INFINITE:
        return math.inf
    return trio.current_time() + (deadline_ns - call.kernel.vdso.monotonic_ns()) / 1e9
