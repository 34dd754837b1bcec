"""The trio side of the call front end (rxcallfront.h; ARCHITECTURE.md "The call front end").

Call channels (a process's main channel) are read by C, not by a trio task each: one pump task
waits for the front end's epoll fd, and each rx_cf_poll hands it every whole request that came on
any channel, a batch per wake-up. The pump serves the requests whose handler never waits right
there (dispatch.begin) and sends their replies through C; a request whose handler is async goes
to its channel's task, which runs it and replies the same way. A channel's task also ends the
channel (the peer closed, or a frame proto refuses) or, for frames C does not cut (a byte msgpack
never uses, a frame over the limit), takes the channel back to serve it with Python's reader.

Fairness: C hands out one request per channel at a time and none again until its reply went, so
a busy client gets a turn per poll like everyone else; the pump lets other tasks run after every
full batch (_BATCH requests, a few hundred microseconds) even when requests keep coming. An
exception inside rxd while serving one channel closes that connection only, as it did when each
channel had its own task.
"""

from __future__ import annotations

import math
import socket
from typing import Any

import structlog
import trio

from rxkernel.native import ffi, lib
from rxkernel.proto import MAX_FRAME_BYTES, RemoteProtocolError, decode_request_frame, encode_reply_frame

from ..object import Kernel, Process
from ._dispatch import Served, begin, finish
from ._stream import Stream

log = structlog.get_logger("rxd")

_BATCH = 64
_REQUEST, _CLOSED, _HANDOFF = lib.RX_CF_REQUEST, lib.RX_CF_CLOSED, lib.RX_CF_HANDOFF
_BROKEN = -1  # (ours: a frame proto refused)


class _Channel:
    __slots__ = ("process", "sock", "inbox", "thread")

    def __init__(self, process: Process, sock: socket.socket, inbox: trio.MemorySendChannel[tuple[int, Any]], thread: bool) -> None:
        self.process = process
        self.sock = sock
        self.inbox = inbox  # to the channel's task: (kind, Served | bytes | RemoteProtocolError | errno)
        self.thread = thread


class CallFrontEnd:
    def __init__(self, kernel: Kernel) -> None:
        handle = lib.rx_cf_new(MAX_FRAME_BYTES, kernel.call_counters, kernel.vdso.vvar)
        if handle == ffi.NULL:
            raise OSError("rxd could not set up its call front end (out of memory or file descriptors)")
        self._handle = ffi.gc(handle, lib.rx_cf_free)
        self._kernel = kernel
        self._events = ffi.new("struct rx_cf_event[]", _BATCH)
        self._channels: dict[int, _Channel] = {}
        self._running = False

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The pump: serve what the channels send until cancelled."""
        fd = lib.rx_cf_fd(self._handle)
        self._running = True
        task_status.started()
        try:
            while True:
                if self._poll() == _BATCH:  # more may be waiting: others run, then we poll again
                    await trio.lowlevel.checkpoint()
                else:
                    # (A short batch took everything there was: whatever comes next, or stays on
                    # C's ready list, makes the fd readable, so no empty poll is needed first.)
                    await trio.lowlevel.wait_readable(fd)
        finally:
            self._running = False

    def _poll(self) -> int:
        n = lib.rx_cf_poll(self._handle, self._events, _BATCH)
        for i in range(n):
            ev = self._events[i]
            channel = self._channels.get(ev.channel)
            if channel is None:
                continue  # (its task has gone)
            try:
                if ev.kind == _REQUEST:
                    self._request(ev.channel, channel, ffi.buffer(ev.data, ev.len))
                elif ev.kind == _HANDOFF:
                    channel.inbox.send_nowait((_HANDOFF, bytes(ffi.buffer(ev.data, ev.len))))
                else:
                    channel.inbox.send_nowait((_CLOSED, ev.error))
            except Exception:
                # rxd's own bug (a reply that does not encode, say): it costs this connection,
                # as it did when each channel had its own task, not the pump and everyone.
                log.exception("serving a call channel failed inside rxd; closing the connection", pid=channel.process.pid)
                channel.inbox.send_nowait((_CLOSED, 0))
        return int(n)

    def _request(self, cid: int, channel: _Channel, frame: Any) -> None:
        try:
            req_id, number, args = decode_request_frame(frame)
        except RemoteProtocolError as e:
            channel.inbox.send_nowait((_BROKEN, e))
            return
        if not channel.process.alive:
            channel.inbox.send_nowait((_CLOSED, 0))  # torn down meanwhile: serve it nothing more
            return
        served = begin(self._kernel, channel.process, channel.sock, req_id, number, args, channel.thread)
        if served.status is None:
            channel.inbox.send_nowait((_REQUEST, served))
        else:
            self._reply(cid, channel, served)

    def _reply(self, cid: int, channel: _Channel, served: Served) -> None:
        assert served.status is not None
        try:
            data = encode_reply_frame(served.id, served.status, served.result)
            fds = served.call.fds
            rc = lib.rx_cf_reply(self._handle, cid, data, len(data), ffi.new("int[]", fds) if fds else ffi.NULL, len(fds))
        finally:
            served.close_fds()
        if rc < 0:
            channel.inbox.send_nowait((_CLOSED, -rc))

    async def serve(self, sock: Stream, process: Process, thread: bool = False) -> bytes | None:
        """Serve the call channel `sock` (its hello answered, nothing buffered) through the
        front end until it closes (None), or until the front end hands it back: then the bytes
        it read, and the caller reads the channel itself from there. b"" at once when the front
        end is not running or will not take the channel."""
        if not self._running:
            return b""
        cid = int(lib.rx_cf_add(self._handle, sock.fileno()))
        if cid < 0:
            return b""
        send, inbox = trio.open_memory_channel[tuple[int, Any]](math.inf)
        channel = _Channel(process, sock.sock, send, thread)
        self._channels[cid] = channel
        try:
            async for kind, payload in inbox:
                if kind == _REQUEST:
                    await finish(payload)
                    self._reply(cid, channel, payload)  # (an exception here is this connection's)
                elif kind == _HANDOFF:
                    return bytes(payload)
                elif kind == _BROKEN:
                    raise payload
                else:
                    assert kind == _CLOSED, kind
                    return None
            return None  # (not reached: the send side lives as long as this task)
        finally:
            del self._channels[cid]
            lib.rx_cf_remove(self._handle, cid)
