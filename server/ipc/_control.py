"""rxd's end of one client's control channel: the transport of shootdowns and store fds.

Requests go out with a seq number (and fds, SCM_RIGHTS), acks come back matched by seq
(proto/WIRE.md "Control channel"). Who is sent what, and what happens to a client that does not
ack, is the VM layer's shootdown policy (vm/_shootdown.py); this file only carries it. It fills
the VM layer's ControlPort role.
"""

from __future__ import annotations

import collections
import itertools

import trio

from rxkernel.proto import CLOSED, CONTROL_FORGET, ControlAck, ControlRequest, RemoteProtocolError
from rxkernel.proto import Connection as ProtoConnection

from ..object import Process
from ._stream import Stream


class ControlChannel:
    """rxd's end of one client's control channel: requests out, acks matched back by seq."""

    def __init__(self, process: Process, sock: Stream, conn: ProtoConnection) -> None:
        self.process = process
        self._sock = sock
        self._conn = conn
        self._seq = itertools.count(1)
        # Event-loop only: the pending table and the posted queue change between awaits.
        self._pending: dict[int, list[object]] = {}  # seq -> [trio.Event, status]
        self._send_lock = trio.Lock()  # guards the socket's send side: one frame at a time
        self._posted: collections.deque[tuple[int, list[tuple[int, ...]]]] = collections.deque()
        self._posted_ready = trio.Event()
        self.closed = False

    async def run(self) -> None:
        """The channel's life: acks in, posted requests out. A peer that vanishes (a killed
        client resets the socket) ends it like EOF, not as an error; a peer that sends what is
        not an ack breaks the stream (RemoteProtocolError, for the caller to log and close)."""
        broken: RemoteProtocolError | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._send_posted)
            try:
                await self.read_acks()
            except RemoteProtocolError as e:  # (an OSError too: caught before the others)
                broken = e
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            nursery.cancel_scope.cancel()
        if broken is not None:
            raise broken

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
