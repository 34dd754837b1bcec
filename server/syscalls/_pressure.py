"""rx_system_wait_pressure: block until the memory pressure level changes. Reading the level
needs no syscall (rx_system_get_pressure_level reads the vvar); waiting for a change does, on the
calling thread's own channel, like a futex wait."""

from __future__ import annotations

from typing import Any

import trio

from rxkernel.proto import PRESSURE_NAMES, RX_ERR_INVALID_ARGS, RX_TIME_INFINITE, RxError

from ._table import Call, syscall


@syscall
async def rx_system_wait_pressure(call: Call, known_level: int, deadline: int) -> tuple[Any, ...]:
    """The level once it differs from `known_level` (at once if it already does), or whatever it
    is at `deadline` (rx monotonic ns; RX_TIME_INFINITE: none). A thread that goes away while it
    waits (its channel closes) ends the wait."""
    if known_level not in PRESSURE_NAMES:
        raise RxError(RX_ERR_INVALID_ARGS, f"known_level {known_level} is not a level ({', '.join(PRESSURE_NAMES.values())})")
    pressure = call.kernel.vm.pressure
    at = trio.current_time() + (deadline - call.kernel.vdso.monotonic_ns()) / 1e9 if deadline != RX_TIME_INFINITE else float("inf")
    if call.channel is None:
        return (await pressure.wait_change(known_level, at),)
    async with trio.open_nursery() as nursery:
        # Nothing may arrive while the thread waits: readable means it went away (or spoke out of turn).
        async def watch(channel: Any = call.channel) -> None:
            await trio.lowlevel.wait_readable(channel)
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch)
        level = await pressure.wait_change(known_level, at)
        nursery.cancel_scope.cancel()
    if nursery.cancel_scope.cancelled_caught and pressure.level == known_level and trio.current_time() < at:
        raise trio.BrokenResourceError("the waiting thread's channel closed or spoke out of turn")
    return (level,)
