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
RX_FUTEX_OWNER_DIED and RX_FUTEX_WAITERS above. A waiter names the owner it saw (which must be the
owner field of `expected`, and it needs a writable mapping, since rxd will write the word for
it); if no live rx process has that pid, rxd takes the word from the dead owner (owner cleared,
OWNER_DIED set, WAITERS kept) instead of waiting. When a process dies, rxd does the same for
every robust word with sleepers whose owner field is its pid, and wakes one waiter there; it also
wakes one sleeper of a robust word left free (the dead process may have been woken to take it).
A word is robust when a waiter named an owner, or a requeue moved waiters onto it naming one
(Zircon's new_requeue_owner). Only such words are ever written: a plain futex word that happens
to equal a pid is left alone.
The write is a CAS on the page in the VMO's own store, made the VMO's own first (a copy-on-write
split, under the tree lock) if it still reads through to an ancestor: clients only ever map own
pages writable, and they need the tree lock to get one, so the CAS is atomic against them.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import structlog
import trio

from rxkernel.native import lib
from rxkernel.proto import (
    PAGE_SHIFT,
    PAGE_SIZE,
    RX_ERR_ACCESS_DENIED,
    RX_ERR_BAD_STATE,
    RX_ERR_INTERNAL,
    RX_ERR_INVALID_ARGS,
    RX_ERR_OUT_OF_RANGE,
    RX_ERR_TIMED_OUT,
    RX_FUTEX_OWNER_DIED,
    RX_FUTEX_OWNER_MASK,
    RX_FUTEX_WAITERS,
    RX_RIGHT_WRITE,
    RX_TIME_INFINITE,
    RX_VM_PERM_WRITE,
    RxError,
)

from ..base import hung_up, requires_lock
from ..vm import ChargeGroup, CowPages, Vmo

if TYPE_CHECKING:
    from ._process import Process

log = structlog.get_logger("rxd.futex")

Key = tuple["CowPages", int]


class Waiter:
    __slots__ = ("key", "vmo", "offset", "owner", "process", "channel", "scope", "woken")

    def __init__(self, key: Key, vmo: Vmo, offset: int, owner: int, process: Process, channel: socket.socket | None) -> None:
        self.key = key
        self.vmo, self.offset = vmo, offset  # the word as the waiter's VMO shows it
        self.owner = owner  # the pid a robust waiter named as the word's owner, else 0
        self.process = process
        self.channel = channel  # the waiting thread's own channel (None: an in-process caller)
        self.scope: trio.CancelScope | None = None
        self.woken = False

    def gone(self) -> bool:
        """The waiting thread's channel is closed (its process may be dead, not yet torn down)."""
        if not self.process.alive:
            return True
        return self.channel is not None and hung_up(self.channel)


class Futexes:
    """Every futex with waiters: key → waiters in arrival order (a dict as an ordered set).
    Event-loop only; a waiter is queued under its VMO's tree lock, so a word's check and the
    queueing are one step for any writer that needs that lock."""

    def __init__(self, processes: Mapping[int, Process], monotonic_ns: Callable[[], int]) -> None:
        self.processes = processes  # the live processes, by koid (who may own a robust word)
        self.monotonic_ns = monotonic_ns  # the rx monotonic clock deadlines are on
        self.nursery: trio.Nursery | None = None  # for taking dead owners' words (set when serving)
        self.queues: dict[Key, dict[Waiter, None]] = {}
        self.waiting = 0
        self.owner_died = 0

    # -- addresses to keys -------------------------------------------------------------------

    def locate(self, process: Process, addr: int, write: bool = False) -> tuple[Key, Vmo, int]:
        """(key, vmo, byte offset in the VMO) of the futex word at `addr` in `process`; `write`:
        the caller needs a mapping (and handle) that may write the word."""
        if addr & 3:
            raise RxError(RX_ERR_INVALID_ARGS, f"futex address {addr:#x} is not 4-byte aligned")
        m = process.aspace.find(addr)
        if m is None:
            raise RxError(RX_ERR_INVALID_ARGS, f"futex address {addr:#x} is not in an rx mapping")
        if write and not (m.perms & RX_VM_PERM_WRITE and m.rights & RX_RIGHT_WRITE):
            raise RxError(RX_ERR_ACCESS_DENIED, "a robust wait (owner_pid) needs a writable mapping: rxd may write the word")
        vmo = m.vmo
        page = m.page_of(addr)
        if page >= vmo.size_pages:
            raise RxError(RX_ERR_OUT_OF_RANGE, f"futex address {addr:#x} is past the end of its VMO")
        offset = (page << PAGE_SHIFT) | (addr & (PAGE_SIZE - 1))
        return (vmo.node, offset + (vmo.node_offset << PAGE_SHIFT)), vmo, offset

    @staticmethod
    @requires_lock(lambda vmo, *_: vmo.lock)
    def value_locked(vmo: Vmo, offset: int) -> int:
        return int.from_bytes(vmo.read_locked(offset, 4), sys.byteorder)

    # -- the three calls ---------------------------------------------------------------------

    async def wait(self, process: Process, channel: socket.socket | None, addr: int, expected: int, deadline: int, owner: int) -> None:
        if owner and owner != expected & RX_FUTEX_OWNER_MASK:
            raise RxError(RX_ERR_INVALID_ARGS, f"owner_pid {owner} is not the owner field of expected {expected:#x}")
        key, vmo, offset = self.locate(process, addr, write=bool(owner))
        async with vmo.lock:
            if self.value_locked(vmo, offset) != expected:
                raise RxError(RX_ERR_BAD_STATE, "the futex value is not the expected one")
            if owner and not self._pid_alive(owner):
                await self._take_from_dead_locked(vmo, offset, expected, process.charge)
                raise RxError(RX_ERR_BAD_STATE, f"the futex owner (pid {owner}) is dead: the word was taken from it")
            waiter = Waiter(key, vmo, offset, owner, process, channel)
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
        self, process: Process, addr: int, wake_count: int, expected: int, requeue_addr: int, requeue_count: int,
        requeue_owner: int = 0,
    ) -> int:
        requeue_owner &= RX_FUTEX_OWNER_MASK
        key, vmo, offset = self.locate(process, addr)
        target, target_vmo, target_offset = self.locate(process, requeue_addr, write=bool(requeue_owner))
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
                waiter.key, waiter.vmo, waiter.offset = target, target_vmo, target_offset
                waiter.owner = requeue_owner  # a robust word now if the requeuer says who holds it
                self._queue(waiter)
                moved += 1
        return woken

    # -- process death -----------------------------------------------------------------------

    def process_died(self, process: Process) -> None:
        """Robust words with sleepers: hand those the dead process owned to their next waiter, and
        wake one sleeper on those left free (its waker may have been the one that died, between
        the wake and taking the word). A queue is robust when a waiter in it named an owner (or
        was requeued onto it with one): plain futexes are never written. In the background:
        taking a word may need a copy-on-write split."""
        pid = process.pid & RX_FUTEX_OWNER_MASK
        if self._pid_alive(pid) or self.nursery is None:  # a live namesake: not ours to judge
            return
        for key, queue in self.queues.items():
            robust = next((w for w in queue if w.owner), None)
            if robust is not None:
                self.nursery.start_soon(self._reap, key, robust.vmo, robust.offset, pid, robust.process.charge)

    async def _reap(self, key: Key, vmo: Vmo, offset: int, pid: int, group: ChargeGroup) -> None:
        try:
            async with vmo.lock:
                if not vmo.alive:
                    return
                word = self.value_locked(vmo, offset)
                owner = word & RX_FUTEX_OWNER_MASK
                if owner == pid and await self._take_from_dead_locked(vmo, offset, word, group) == word:
                    log.info("futex owner died; waking a waiter", pid=pid)
                    self._wake(key, 1)
                elif owner == 0:
                    self._wake(key, 1)  # spurious at worst; a sleeper re-checks the word
        except RxError as e:  # out of memory for the split, say: the waiters' own deadlines stand
            log.warning("could not take a futex word from a dead owner", pid=pid, error=str(e))

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
                if waiter.channel is None:
                    await trio.sleep_forever()
                else:
                    # Nothing may arrive while the thread waits: readable means EOF or a broken client.
                    await trio.lowlevel.wait_readable(waiter.channel)
                    raise trio.BrokenResourceError("the waiting thread's channel closed or spoke out of turn")
            if waiter.woken or self.monotonic_ns() >= deadline:
                return
            # trio's clock and the rx clock drift apart by a few ppm: wait out the remainder.

    def _pid_alive(self, pid: int) -> bool:
        return any(p.alive and p.pid & RX_FUTEX_OWNER_MASK == pid for p in self.processes.values())

    @requires_lock(lambda self, vmo, *_: vmo.lock)
    async def _take_from_dead_locked(self, vmo: Vmo, offset: int, expected: int, group: ChargeGroup) -> int:
        """Clear the owner of the robust word at VMO byte `offset` if it still holds `expected`,
        and set OWNER_DIED; a page this commits is charged to `group` (the waiter's job). Returns
        the value found (== expected: done)."""
        page = offset >> PAGE_SHIFT
        await vmo.commit_locked(page, page + 1, group)  # the VMO's own page now (a split if it was shared)
        store = vmo.node.store
        desired = (expected & RX_FUTEX_WAITERS) | RX_FUTEX_OWNER_DIED
        found = int(lib.rx_word_cas(store.fd, offset + (vmo.node_offset << PAGE_SHIFT), expected, desired))
        if found < 0:
            raise RxError(RX_ERR_INTERNAL, f"futex word CAS: {os.strerror(-found)}")
        if found == expected:
            self.owner_died += 1
        return found
