"""Futexes on rx-mapped memory: Zircon's zx_futex_wait / wake / requeue, shared across processes.

Key. A futex is keyed by the VMO page behind the address, as (CowPages node, byte offset in the
node), not by the address: every process that maps one VMO, at any address and through any slice
of it, meets on the same futex (Zircon's futexes are process-local; ours are not). The node is the
one a write through that VMO lands in, so the key is stable across snapshots (the VMO keeps its
node, the node gets a fresh store) and across collapses (the surviving child keeps its node).

Value. rxd reads the 32-bit word the VMO shows now, through the copy-on-write tree, under the
tree lock, and queues the waiter before it awaits anything: a wake that a client sends after it
changed the word is served after this check, so it finds the waiter. No lost wake-ups.

Waiting. A waiter parks its own channel's task (a client thread's channel, so nothing else
waits behind it) on `wait_readable` of that channel inside a cancel scope: a wake cancels the
scope, the deadline is the scope's, and the socket turning readable means the thread went away
(EOF) or broke the protocol; either way the waiter leaves the queue. A wake skips waiters whose
channel is already closed (a process killed before rxd saw it go) rather than count them, so a
wake is never spent on the dead.

Robust words (the sync objects' Mutex, rxkernel.client._sync): owner pid in the low 30 bits,
RX_FUTEX_OWNER_DIED and RX_FUTEX_WAITERS above. A waiter names the owner it saw; if no live rx
process has that pid, rxd takes the word from the dead owner (owner cleared, OWNER_DIED set,
WAITERS kept) instead of waiting. When a process dies, rxd does the same for every word with
waiters that it owned and wakes one waiter there.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog
import trio

from rxkernel.native import lib
from rxkernel.proto import (
    PAGE_SHIFT,
    PAGE_SIZE,
    RX_ERR_BAD_STATE,
    RX_ERR_INVALID_ARGS,
    RX_ERR_OUT_OF_RANGE,
    RX_ERR_TIMED_OUT,
    RX_FUTEX_OWNER_DIED,
    RX_FUTEX_OWNER_MASK,
    RX_FUTEX_WAITERS,
    RX_TIME_INFINITE,
    RxError,
)

if TYPE_CHECKING:
    from ._cowpages import CowPages
    from ._kernel import Kernel
    from ._process import Process
    from ._stream import Stream
    from ._vmo import Vmo

log = structlog.get_logger("rxd.futex")

Key = tuple["CowPages", int]


class Waiter:
    __slots__ = ("key", "process", "stream", "scope", "woken")

    def __init__(self, key: Key, process: Process, stream: Stream | None) -> None:
        self.key = key
        self.process = process
        self.stream = stream
        self.scope: trio.CancelScope | None = None
        self.woken = False

    def gone(self) -> bool:
        """The waiting thread's channel is closed (its process may be dead, not yet torn down)."""
        if not self.process.alive:
            return True
        if self.stream is None:
            return False
        try:
            return self.stream.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True


class Futexes:
    """Every futex with waiters: key → waiters in arrival order (a dict as an ordered set)."""

    def __init__(self, kernel: Kernel, monotonic_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self.kernel = kernel
        self.monotonic_ns = monotonic_ns  # the rx monotonic clock deadlines are on
        self.queues: dict[Key, dict[Waiter, None]] = {}
        self.waiting = 0
        self.owner_died = 0

    # -- addresses to keys -------------------------------------------------------------------

    def locate(self, process: Process, addr: int) -> tuple[Key, Vmo, int]:
        """(key, vmo, byte offset in the VMO) of the futex word at `addr` in `process`."""
        if addr & 3:
            raise RxError(RX_ERR_INVALID_ARGS, f"futex address {addr:#x} is not 4-byte aligned")
        m = process.aspace.find(addr)
        if m is None:
            raise RxError(RX_ERR_INVALID_ARGS, f"futex address {addr:#x} is not in an rx mapping")
        vmo = m.vmo
        page = m.page_of(addr)
        if page >= vmo.size_pages:
            raise RxError(RX_ERR_OUT_OF_RANGE, f"futex address {addr:#x} is past the end of its VMO")
        offset = (page << PAGE_SHIFT) | (addr & (PAGE_SIZE - 1))
        return (vmo.node, offset + (vmo.node_offset << PAGE_SHIFT)), vmo, offset

    @staticmethod
    def value_locked(vmo: Vmo, offset: int) -> int:
        return int.from_bytes(vmo.read_locked(offset, 4), sys.byteorder)

    # -- the three calls ---------------------------------------------------------------------

    async def wait(self, process: Process, stream: Stream | None, addr: int, expected: int, deadline: int, owner: int) -> None:
        key, vmo, offset = self.locate(process, addr)
        async with vmo.lock:
            if self.value_locked(vmo, offset) != expected:
                raise RxError(RX_ERR_BAD_STATE, "the futex value is not the expected one")
            owner &= RX_FUTEX_OWNER_MASK
            if owner and not self._pid_alive(owner) and self._take_from_dead(key, expected) is not None:
                raise RxError(RX_ERR_BAD_STATE, f"the futex owner (pid {owner}) is dead: the word was taken from it")
            waiter = Waiter(key, process, stream)
            self._queue(waiter)
        try:
            await self._park(waiter, deadline)
        finally:
            if not waiter.woken:
                self._dequeue(waiter)
        if not waiter.woken:
            raise RxError(RX_ERR_TIMED_OUT, "the futex deadline passed")

    def wake(self, process: Process, addr: int, count: int) -> int:
        key, _, _ = self.locate(process, addr)
        return self._wake(key, count)

    async def requeue(
        self, process: Process, addr: int, wake_count: int, expected: int, requeue_addr: int, requeue_count: int
    ) -> int:
        key, vmo, offset = self.locate(process, addr)
        target, _, _ = self.locate(process, requeue_addr)
        if target == key:
            raise RxError(RX_ERR_INVALID_ARGS, "requeue_addr is the same futex as addr")
        async with vmo.lock:
            if self.value_locked(vmo, offset) != expected:
                raise RxError(RX_ERR_BAD_STATE, "the futex value is not the expected one")
            woken = self._wake(key, wake_count)
            moved = 0
            for waiter in list(self.queues.get(key, ())):
                if moved >= requeue_count:
                    break
                self._dequeue(waiter)
                waiter.key = target
                self._queue(waiter)
                moved += 1
        return woken

    # -- process death -----------------------------------------------------------------------

    def process_died(self, process: Process) -> None:
        """Hand the robust words `process` owned, where someone waits, to their next waiter."""
        pid = process.pid & RX_FUTEX_OWNER_MASK
        if self._pid_alive(pid):  # another live rx process with this pid: not ours to judge
            return
        for key in list(self.queues):
            word = self._own_word(key)
            if word is not None and word & RX_FUTEX_OWNER_MASK == pid and self._take_from_dead(key, word) == word:
                log.info("futex owner died; waking a waiter", pid=pid)
                self._wake(key, 1)

    # -- internals ---------------------------------------------------------------------------

    def _queue(self, waiter: Waiter) -> None:
        self.queues.setdefault(waiter.key, {})[waiter] = None
        self.waiting += 1

    def _dequeue(self, waiter: Waiter) -> None:
        queue = self.queues.get(waiter.key)
        if queue is not None and queue.pop(waiter, False) is None:
            self.waiting -= 1
            if not queue:
                del self.queues[waiter.key]

    def _wake(self, key: Key, count: int) -> int:
        woken = 0
        for waiter in list(self.queues.get(key, ())):
            if woken >= count:
                break
            self._dequeue(waiter)
            if waiter.gone():
                # Not counted: a wake spent on a dead thread would leave a live one asleep.
                if waiter.scope is not None:
                    waiter.scope.cancel()
                continue
            waiter.woken = True
            if waiter.scope is not None:
                waiter.scope.cancel()
            woken += 1
        return woken

    async def _park(self, waiter: Waiter, deadline: int) -> None:
        while True:
            with trio.CancelScope() as scope:
                if deadline != RX_TIME_INFINITE:
                    scope.deadline = trio.current_time() + (deadline - self.monotonic_ns()) / 1e9
                waiter.scope = scope
                if waiter.stream is None:
                    await trio.sleep_forever()
                else:
                    # Nothing may arrive while the thread waits: readable means EOF or a broken client.
                    await trio.lowlevel.wait_readable(waiter.stream.sock)
                    raise trio.BrokenResourceError("the waiting thread's channel closed or spoke out of turn")
            if waiter.woken or self.monotonic_ns() >= deadline:
                return
            # trio's clock and the rx clock drift apart by a few ppm: wait out the remainder.

    def _pid_alive(self, pid: int) -> bool:
        return any(p.alive and p.pid & RX_FUTEX_OWNER_MASK == pid for p in self.kernel.processes.values())

    @staticmethod
    def _own_word(key: Key) -> int | None:
        """The word at `key` if it is in its node's own store (else a takeover could reach pages
        other VMOs share, and is not done)."""
        node, offset = key
        if node.store.fd < 0 or not node.store.committed.get(offset >> PAGE_SHIFT):
            return None
        return int.from_bytes(node.store.read(offset, 4), sys.byteorder)

    def _take_from_dead(self, key: Key, expected: int) -> int | None:
        """Clear the owner of the robust word at `key` if it still holds `expected`, and set
        OWNER_DIED. Returns the value found (== expected: done), or None where rxd may not."""
        node, offset = key
        if self._own_word(key) is None:
            return None
        desired = (expected & RX_FUTEX_WAITERS) | RX_FUTEX_OWNER_DIED
        found = lib.rx_word_cas(node.store.fd, offset, expected, desired)
        if found == expected:
            self.owner_died += 1
        return found if found >= 0 else None
