"""Futex syscalls (Zircon's lib/syscalls/futex.cc; keyed across processes: object/_futex.py)."""

from __future__ import annotations

from typing import Any

from ._table import Call, syscall


@syscall
async def rx_futex_wait(call: Call, addr: int, expected: int, deadline: int, owner: int) -> tuple[Any, ...]:
    await call.kernel.futexes.wait(call.process, call.channel, addr, expected, deadline, owner)
    return ()


@syscall
def rx_futex_wake(call: Call, addr: int, count: int) -> tuple[Any, ...]:
    return (call.kernel.futexes.wake(call.process, addr, count),)


@syscall
async def rx_futex_requeue(
    call: Call, addr: int, wake_count: int, expected: int, requeue_addr: int, requeue_count: int, requeue_owner: int
) -> tuple[Any, ...]:
    futexes = call.kernel.futexes
    return (await futexes.requeue(call.process, addr, wake_count, expected, requeue_addr, requeue_count, requeue_owner),)
