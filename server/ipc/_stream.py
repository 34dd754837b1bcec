"""A socket stream for rxd's channels that costs nothing extra when the socket is ready.

trio's socket wrapper makes every send and recv a checkpoint, a full trip through the scheduler
even when the kernel could answer at once; on rxd's hot paths (a syscall, a fault) that was most
of the CPU per request. This stream calls the non-blocking socket directly and parks in
wait_readable / wait_writable only when it would block. Fairness is kept explicitly: a channel that
keeps finding data ready yields to the scheduler every FAIR_SHARE receives, so one busy client
cannot starve the others.
"""

from __future__ import annotations

import array
import socket
import struct

import trio

FAIR_SHARE = 16


class Stream:
    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._ready_streak = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def peer_credentials(self) -> tuple[int, int, int]:
        """(pid, uid, gid) of the peer, from the kernel (SO_PEERCRED), not from anything it says."""
        raw = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
        return pid, uid, gid

    async def recv(self, size: int) -> bytes:
        while True:
            try:
                data = self.sock.recv(size)
            except BlockingIOError:
                self._ready_streak = 0
                await trio.lowlevel.wait_readable(self.sock)
                continue
            self._ready_streak += 1
            if self._ready_streak >= FAIR_SHARE:
                self._ready_streak = 0
                await trio.lowlevel.checkpoint()
            return data

    async def send_all(self, data: bytes, fds: list[int] | None = None) -> None:
        """Send every byte; `fds` ride on the first byte (SCM_RIGHTS)."""
        view = memoryview(data)
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        while view:
            try:
                n = self.sock.sendmsg([view], ancillary) if ancillary else self.sock.send(view)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.sock)
                continue
            ancillary = []
            view = view[n:]

    def close(self) -> None:
        # Wake any task parked on this socket (it gets ClosedResourceError) before the fd goes.
        if self.sock.fileno() >= 0:
            trio.lowlevel.notify_closing(self.sock)
        self.sock.close()
