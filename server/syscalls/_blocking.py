"""Waits that block the calling thread on its own channel (rx_system_wait_pressure,
rx_job_wait_events; futex waits do the same in object/_futex.py): nothing may arrive on the
channel while the thread waits, so the channel becoming readable means the thread went away (or
spoke out of turn) and the wait ends, instead of holding a task and an fd until its deadline."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from rxkernel.proto import RX_TIME_INFINITE

from ._table import Call

T = TypeVar("T")


def trio_deadline(call: Call, deadline_ns: int) -> float:
    """An rx monotonic deadline (RX_TIME_INFINITE: none) as trio time."""
    if deadline_ns == RX_TIME_INFINITE:
        return math.inf
    return trio.current_time() + (deadline_ns - call.kernel.vdso.monotonic_ns()) / 1e9


async def wait_on_channel(call: Call, wait: Callable[[], Awaitable[T]]) -> T:
    """`wait()`'s result, or trio.BrokenResourceError if the caller's thread channel becomes
    readable first (the ipc layer then closes it quietly, as for any lost connection)."""
    if call.channel is None:
        return await wait()
    result: list[T] = []
    async with trio.open_nursery() as nursery:
        async def watch(channel: object = call.channel) -> None:
            await trio.lowlevel.wait_readable(channel)  # type: ignore[arg-type]
            nursery.cancel_scope.cancel()

        async def run() -> None:
            result.append(await wait())
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch)
        nursery.start_soon(run)
    if not result:
        raise trio.BrokenResourceError("the waiting thread's channel closed or spoke out of turn")
    return result[0]
