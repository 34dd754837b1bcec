"""Coherence: taking mappings away from clients (DESIGN.md §5).

Each client runs a C control thread on a control channel. rxd sends INVALIDATE or PROTECT for
address ranges and waits for the ack; only then may it reuse, free or commit over those pages.
A client that does not ack within the deadline is killed (through its pidfd, so a recycled pid can
never be hit) and torn down as dead: its mappings are dropped, so the operation completes.

Lock order: Vmo.lock → (awaiting acks). No code waits for an ack while holding anything but the
lock of the VMO whose pages are changing; the control thread never waits on rxd, so a shootdown
can target the very process whose fault is being resolved without deadlock.
"""

from __future__ import annotations

import collections
import itertools
import os
from typing import TYPE_CHECKING

import structlog
import trio

from rxkernel.proto import CLOSED, CONTROL_FORGET, CONTROL_INVALIDATE, CONTROL_STORE, ControlAck, ControlRequest
from rxkernel.proto import Connection as ProtoConnection

if TYPE_CHECKING:
    from ._pagestore import PageStore
    from ._process import Process
    from ._stream import Stream

log = structlog.get_logger("rxd.coherence")

MAX_RANGES_PER_REQUEST = 256


class ControlChannel:
    """rxd's end of one client's control channel: requests out, acks matched back by seq."""

    def __init__(self, process: Process, sock: Stream, conn: ProtoConnection) -> None:
        self.process = process
        self._sock = sock
        self._conn = conn
        self._seq = itertools.count(1)
        self._pending: dict[int, list[object]] = {}  # seq -> [trio.Event, status]
        self._send_lock = trio.Lock()
        self._posted: collections.deque[tuple[int, list[tuple[int, ...]]]] = collections.deque()
        self._posted_ready = trio.Event()
        self.closed = False

    async def run(self) -> None:
        """The channel's life: acks in, posted requests out. A peer that vanishes (a killed
        client resets the socket) ends it like EOF, not as an error."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._send_posted)
            try:
                await self.read_acks()
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            nursery.cancel_scope.cancel()

    def post(self, op: int, ranges: list[tuple[int, ...]]) -> None:
        """Send a request nobody waits for (FORGET): in order, from the channel's own task."""
        if not self.closed:
            self._posted.append((op, ranges))
            self._posted_ready.set()

    def cancel_forget(self, store_id: int) -> None:
        """A STORE of store_id is about to go out: a FORGET of it still queued must not follow
        it (the client would drop the fd rxd now counts on). One already sent went first."""
        self._posted = collections.deque(p for p in self._posted if not (p[0] == CONTROL_FORGET and p[1] == [(store_id,)]))

    async def _send_posted(self) -> None:
        while True:
            await self._posted_ready.wait()
            self._posted_ready = trio.Event()
            while self._posted:
                op, ranges = self._posted.popleft()
                if not await self.request(op, ranges):
                    return

    async def request(self, op: int, ranges: list[tuple[int, ...]], fds: list[int] | None = None) -> bool:
        """Send one control request (`fds` ride with it) and wait for its ack; False if the
        channel died first or the client refused it."""
        if self.closed:
            return False
        seq = next(self._seq)
        self.process.inval_seq += 1
        event = ControlRequest(seq, op, self.process.inval_seq, tuple(ranges))
        done = trio.Event()
        slot: list[object] = [done, None]
        self._pending[seq] = slot
        try:
            async with self._send_lock:
                await self._sock.send_all(self._conn.send(event), fds)
            await done.wait()
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            self.fail_all()
            return False
        finally:
            self._pending.pop(seq, None)
        return slot[1] == 0

    async def read_acks(self) -> None:
        """Runs for the channel's life: match acks to requests; on EOF fail every waiter."""
        try:
            while True:
                data = await self._sock.recv(65536)
                self._conn.receive_data(data)
                while isinstance(event := self._conn.next_event(), ControlAck):
                    slot = self._pending.get(event.seq)
                    if slot is not None:
                        slot[1] = event.status
                        slot[0].set()  # type: ignore[attr-defined]
                if event is CLOSED:
                    return
        finally:
            self.fail_all()

    def fail_all(self) -> None:
        self.closed = True
        for slot in self._pending.values():
            slot[0].set()  # type: ignore[attr-defined]


async def shootdown(targets: dict[Process, list[tuple[int, ...]]], op: int = CONTROL_INVALIDATE) -> None:
    """Apply `op` to the ranges in every target process at once; return when each has acked or
    been killed. Empty range lists are skipped."""
    targets = {p: r for p, r in targets.items() if r and p.alive}
    if not targets:
        return
    # Shielded: a half-done shootdown would break the VMO invariants, and it is bounded anyway
    # (each target acks or is killed by the deadline).
    with trio.CancelScope(shield=True):
        async with trio.open_nursery() as nursery:
            for process, ranges in targets.items():
                nursery.start_soon(_shootdown_one, process, ranges, op)


async def _shootdown_one(process: Process, ranges: list[tuple[int, ...]], op: int) -> None:
    kernel = process.kernel
    ok = True
    with trio.move_on_after(kernel.ack_deadline) as scope:
        for i in range(0, len(ranges), MAX_RANGES_PER_REQUEST):
            kernel.memory.counters.shootdowns += 1
            control = process.control
            if control is None or not await control.request(op, ranges[i : i + MAX_RANGES_PER_REQUEST]):
                ok = False
                break
    if not process.alive:
        return  # it died meanwhile; its teardown already dropped its mappings
    if scope.cancelled_caught or not ok:
        why = "did not ack in time" if scope.cancelled_caught else "refused or lost its control channel"
        log.warning("killing client", pid=process.pid, koid=process.koid, reason=why, deadline=kernel.ack_deadline)
        kernel.memory.counters.clients_killed += 1
        process.kill()


async def send_stores(process: Process, needs: dict[PageStore, bool]) -> bool:
    """Make sure the client holds an fd for each store (writable where needed) before a fault
    reply names it; a read-only need gets an O_RDONLY reopening, so a writable MAP_SHARED of it
    fails in the host kernel. False if the client could not take one (its table is full or the
    channel is gone): the caller refuses the fault."""
    for store, writable in needs.items():
        have = process.stores.get(store)
        if have is not None and (have or not writable):
            continue
        control = process.control
        if control is None or store.fd < 0:
            return False
        try:
            fd = store.fd if writable else store.reopen_readonly()
        except OSError:
            return False  # rxd is out of fds: the fault is refused (RX_ERR_NO_RESOURCES)
        control.cancel_forget(store.store_id)
        ok = False
        try:
            # Shielded like a shootdown: if the request went out, the client holds the fd. A
            # client that does not ack in time is killed, like one that does not ack a shootdown.
            with trio.CancelScope(shield=True), trio.move_on_after(process.kernel.ack_deadline) as deadline:
                ok = await control.request(CONTROL_STORE, [(store.store_id, int(writable))], [fd])
        finally:
            if not writable:
                os.close(fd)
        if deadline.cancelled_caught and process.alive:
            log.warning("killing client", pid=process.pid, koid=process.koid, reason="did not take a store fd")
            process.kernel.memory.counters.clients_killed += 1
            process.kill()
        if not ok or not process.alive:
            return False
        process.stores[store] = writable
        store.holders.add(process)
    return True


def coalesce(ranges: list[tuple[int, int]]) -> list[tuple[int, ...]]:
    """Merge adjacent (addr, length) ranges so a control request carries few of them."""
    out: list[list[int]] = []
    for addr, length in sorted(ranges):
        if out and out[-1][0] + out[-1][1] == addr:
            out[-1][1] += length
        else:
            out.append([addr, length])
    return [tuple(r) for r in out]

