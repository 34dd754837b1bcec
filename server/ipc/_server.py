"""rxd's socket side: accept connections, run the hello, serve each channel in its own task.

One misbehaving client never stalls the others: every channel is its own task, requests of one
process run one at a time on its main channel, and the only shared waits are VMO locks, which
are held across client acks for at most the ack deadline. A broken stream closes that connection
only; an exception in a handler becomes RX_ERR_INTERNAL for that request and a logged traceback.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
import trio

from rxkernel.proto import (
    CHANNEL_CONTROL,
    CHANNEL_FAULT,
    CHANNEL_MAIN,
    CHANNEL_THREAD,
    CLOSED,
    MAX_FRAME_BYTES,
    NEED_DATA,
    PAGE_SIZE,
    RX_ERR_ACCESS_DENIED,
    RX_ERR_NO_RESOURCES,
    RX_MAX_IO,
    RX_OK,
    Connection,
    FaultRequest,
    Hello,
    HelloReply,
    RemoteProtocolError,
    Request,
    Role,
    RxError,
)

from ..object import Kernel, Process
from ..vm import resolve_fault
from ._control import ControlChannel
from ._dispatch import serve_request
from ._callfront import CallFrontEnd
from ._fastfaults import FaultServer
from ._stream import Stream

log = structlog.get_logger("rxd")

HELLO_TIMEOUT = 10.0
# Thread channels one process may hold open: each is an fd in rxd, and rxd's fds are everyone's.
MAX_THREAD_CHANNELS = 1024
_RECV = 1 << 18


def prepare_socket_path(path: str) -> None:
    """The socket lives in a 0700 directory we own and is itself 0600: only our user gets in.
    A socket already there is removed only when it is stale (nobody accepts on it): an rxd that
    took a live rxd's path would orphan it and every client that connects by name. SystemExit
    with a one-line reason when rxd must not start."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    st = os.stat(directory)
    if st.st_uid != os.getuid():
        raise SystemExit(f"rxd: {directory} belongs to uid {st.st_uid}, not us")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(directory, 0o700)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise SystemExit(f"rxd: {path} exists and is not a socket; not touching it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # the socket of an rxd that died: nobody accepts on it any more
        return
    except OSError as e:  # EAGAIN (a full backlog) and the like: someone is there
        raise SystemExit(f"rxd: {path} is in use ({e.strerror}); is another rxd running?") from None
    finally:
        probe.close()
    raise SystemExit(f"rxd: another rxd is listening on {path}; stop it first or use --socket")


class Server:
    def __init__(self, kernel: Kernel, socket_path: str, fast_faults: bool = True, call_front: bool = True) -> None:
        self.kernel = kernel
        self.socket_path = socket_path
        # The fault fast path (_fastfaults.py), or None: every fault is decided in Python.
        self.faults = FaultServer(kernel.vm) if fast_faults else None
        # The call front end (_callfront.py), or None: a task per call channel reads it.
        self.calls = CallFrontEnd(kernel) if call_front else None

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        prepare_socket_path(self.socket_path)
        listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Bound and listening under a temporary name, then renamed into place: a client that
        # sees the path can connect (bind makes the file before listen makes it connectable).
        staging = self.socket_path + ".new"
        if len(staging.encode()) >= 108:  # (sun_path's limit: no room for the suffix)
            staging = self.socket_path
        with contextlib.suppress(FileNotFoundError):
            if staging != self.socket_path:
                os.unlink(staging)
        old_umask = os.umask(0o177)
        try:
            await listener.bind(staging)
        finally:
            os.umask(old_umask)
        os.chmod(staging, 0o600)
        listener.listen(512)
        if staging != self.socket_path:
            os.rename(staging, self.socket_path)
        log.info("rxd listening", socket=self.socket_path, memory_bytes=self.kernel.memory.total_pages * PAGE_SIZE)
        try:
            async with trio.open_nursery() as nursery:
                if self.faults is not None:
                    await nursery.start(self.faults.run)
                if self.calls is not None:
                    await nursery.start(self.calls.run)
                self.kernel.serve_in(nursery)
                nursery.start_soon(self.kernel.vdso.discipline)
                task_status.started()
                while True:
                    sock, _ = await listener.accept()
                    # Our own stream over the plain socket: see _stream.py for why.
                    plain = socket.socket(fileno=sock.detach())
                    nursery.start_soon(self._connection, Stream(plain))
        finally:
            listener.close()
            for process in list(self.kernel.processes.values()):
                process.teardown("rxd shutting down")
            try:
                os.unlink(self.socket_path)
            except FileNotFoundError:
                pass

    async def _connection(self, sock: Stream) -> None:
        try:
            conn = Connection(Role.SERVER, max_buffer_size=MAX_FRAME_BYTES)
            try:
                with trio.fail_after(HELLO_TIMEOUT):
                    hello = await _next_event(sock, conn)
                if not isinstance(hello, Hello):
                    return
                pid, uid, _ = sock.peer_credentials()
                if hello.kind == CHANNEL_MAIN:
                    await self._main_channel(sock, conn, pid, uid, hello.job)
                else:
                    await self._side_channel(sock, conn, hello, pid)
            except trio.TooSlowError:
                log.warning("no hello in time; closing")
            except RemoteProtocolError as e:
                log.warning("broken stream; closing the connection", error=str(e))
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as e:
                log.debug("connection lost", error=str(e))
            except Exception:
                # A bug in rxd, not the client's doing: log it, drop this connection, serve on.
                log.exception("connection task failed inside rxd; closing the connection")
        finally:
            sock.close()

    async def _main_channel(self, sock: Stream, conn: Connection, pid: int, uid: int, job_token: str | None) -> None:
        try:
            process = self.kernel.new_process(pid, uid, job_token)
        except RxError as e:  # the hello named no job: the client's mistake, told in words
            log.info("hello refused", pid=pid, error=str(e))
            await sock.send_all(conn.send(HelloReply(e.status, {"message": str(e)})))
            return
        log.info("process connected", pid=pid, koid=process.koid)
        try:
            with trio.CancelScope() as scope:
                process.attach(scope)
                info = {
                    "process_koid": process.koid,
                    "session": process.session,
                    "max_frame": MAX_FRAME_BYTES,
                    "max_io": RX_MAX_IO,
                    "page_size": PAGE_SIZE,
                    "memory_bytes": self.kernel.memory.total_pages * PAGE_SIZE,
                    # The fds ride on the reply: the vDSO image, then the read-only vvar page.
                    "vdso_size": self.kernel.vdso.image_size,
                    "vvar_size": self.kernel.vdso.vvar_size,
                }
                await sock.send_all(conn.send(HelloReply(RX_OK, info)), self.kernel.vdso.fds)
                process.main_channel = sock.sock
                await self._serve_calls(sock, conn, process, thread=False)
        finally:
            process.teardown("disconnected")

    async def _side_channel(self, sock: Stream, conn: Connection, hello: Hello, pid: int) -> None:
        assert hello.token is not None
        process = self.kernel.sessions.get(hello.token)
        if process is None or process.pid != pid or not process.alive:
            await sock.send_all(conn.send(HelloReply(RX_ERR_ACCESS_DENIED)))
            return
        if hello.kind == CHANNEL_THREAD and process.thread_channels >= MAX_THREAD_CHANNELS:
            await sock.send_all(conn.send(HelloReply(RX_ERR_NO_RESOURCES)))
            return
        await sock.send_all(conn.send(HelloReply(RX_OK)))
        with trio.CancelScope() as scope:
            process.attach(scope)
            try:
                await self._serve_side_channel(sock, conn, hello, process)
            finally:
                process.detach(scope)

    async def _serve_side_channel(self, sock: Stream, conn: Connection, hello: Hello, process: Process) -> None:
        if hello.kind == CHANNEL_CONTROL:
            control = ControlChannel(process, sock, conn)
            process.control = control
            try:
                await control.run()
            finally:
                if process.control is control:
                    process.control = None
        elif hello.kind == CHANNEL_FAULT:
            await self._fault_channel(sock, conn, process)
        elif hello.kind == CHANNEL_THREAD:
            process.thread_channels += 1
            try:
                # One client thread's own channel for calls that may block (futex waits): a
                # wait holds up only this channel, never the process's main one or anyone else.
                await self._serve_calls(sock, conn, process, thread=True)
            finally:
                process.thread_channels -= 1

    async def _serve_calls(self, sock: Stream, conn: Connection, process: Process, thread: bool) -> None:
        """A call channel's requests, one at a time, until it closes: through the call front
        end while it has the channel, then (or without one) read here."""
        calls = self.calls
        event = await _first_for_python(conn, None if calls is None else lambda: calls.serve(sock, process, thread))
        while True:
            if event is NEED_DATA:
                event = await _next_event(sock, conn)
            if event is CLOSED:
                return
            assert isinstance(event, Request)
            await serve_request(self.kernel, sock, conn, process, event, thread)
            event = NEED_DATA

    async def _fault_channel(self, sock: Stream, conn: Connection, process: Process) -> None:
        async def answer(seq: int, addr: int, write: bool) -> bytes:
            return conn.send(await resolve_fault(self.kernel.vm, process, seq, addr, write))

        # The fault thread serves the channel and hands us what it cannot decide; it gives the
        # channel back (with the bytes it read) only for frames it leaves to proto.
        faults = self.faults
        event = await _first_for_python(conn, None if faults is None else lambda: faults.serve(sock, process, answer))
        while True:
            if event is NEED_DATA:
                event = await _next_event(sock, conn)
            if event is CLOSED:
                return
            assert isinstance(event, FaultRequest)
            await sock.send_all(await answer(event.seq, event.addr, event.write))
            event = NEED_DATA


async def _first_for_python(conn: Connection, c_server: Callable[[], Awaitable[bytes | None]] | None) -> Any:
    """A channel that a C server (the fault thread, the call front end) may serve first: it gets
    the channel when nothing is buffered, and this returns once it is done with it, with the first
    event for Python to read: CLOSED when the channel closed there, NEED_DATA or an event made of
    the bytes it handed back."""
    event = conn.next_event()
    if event is NEED_DATA and c_server is not None and not conn.unparsed:  # (C starts on a frame's first byte)
        left = await c_server()
        if left is None:
            return CLOSED
        if left:
            conn.receive_data(left)
        event = conn.next_event()
    return event


async def _next_event(sock: Stream, conn: Connection) -> Any:
    while True:
        event = conn.next_event()
        if event is not NEED_DATA:
            return event
        conn.receive_data(await sock.recv(_RECV))
