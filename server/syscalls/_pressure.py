"""rx_system_wait_pressure: block until the memory pressure level changes. Reading the level
needs no syscall (rx_system_get_pressure_level reads the vvar); waiting for a change does, on the
calling thread's own channel, like a futex wait."""

from __future__ import annotations

from typing import Any

from rxkernel.proto import PRESSURE_NAMES, RX_ERR_INVALID_ARGS, RxError

from ._blocking import trio_deadline
from ._table import Call, syscall


@syscall
async def rx_system_wait_pressure(call: Call, known_level: int, deadline: int) -> tuple[Any, ...]:
    """The level once it differs from `known_level` (at once if it already does), or whatever it
    is at `deadline` (rx monotonic ns; RX_TIME_INFINITE: none). A thread that goes away while it
    waits (its channel closes) ends the wait."""
    if known_level not in PRESSURE_NAMES:
        raise RxError(RX_ERR_INVALID_ARGS, f"known_level {known_level} is not a level ({', '.join(PRESSURE_NAMES.values())})")
    pressure = call.kernel.vm.pressure
    at = trio_deadline(call, deadline)
    return (await pressure.wait_change(known_level, at, call.channel),)
