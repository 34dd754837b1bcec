"""The per-process connection to rxd: a main channel for syscalls, a control channel handed to
the C control thread, the C trap set up with the session token so fault channels can attach, and
a channel per thread for calls that may block (futex waits).

Sync on purpose: a stub call is a blocking syscall. A lock makes one request at a time per process
on the main channel; threads that fault meanwhile use the C fault channels, and futex calls go on
the calling thread's own channel, so a thread blocked in a futex wait holds up no one.
"""

from __future__ import annotations

import array
import errno
import itertools
import os
import socket
import threading
import weakref
from typing import Any

from rxkernel.native import ffi, lib
from rxkernel.proto import (
    CHANNEL_CONTROL,
    CHANNEL_MAIN,
    CHANNEL_THREAD,
    MAX_FRAME_BYTES,
    NEED_DATA,
    RX_ERR_BAD_STATE,
    RX_ERR_PEER_CLOSED,
    RX_ERR_UNAVAILABLE,
    SYSCALL_NUMBERS,
    Connection,
    Hello,
    HelloReply,
    Reply,
    Role,
    RxError,
    decode_reply,
    default_socket_path,
    encode_request,
)

_MAX_FDS = 16


def _rx_errno(rc: int, what: str) -> RxError:
    return RxError(RX_ERR_BAD_STATE, f"{what}: {os.strerror(-rc)}")


class _CallChannel:
    """A socket that carries syscalls as Request/Reply, one at a time (its owner serializes).
    After the hello, each round trip is one call into C (rxcall.h), the GIL let go while rxd
    works; proto encodes the request and decodes the reply."""

    def __init__(self, sock: socket.socket, conn: Connection) -> None:
        self.sock = sock
        self.conn = conn  # for the hello; the round trips frame the stream in C
        self.ids = itertools.count(1)
        self._buf = ffi.gc(ffi.new("struct rx_call_buf *"), lib.rx_call_buf_release)

    def roundtrip(self, number: int, args: tuple[Any, ...]) -> tuple[Reply, int, list[int]]:
        req_id = next(self.ids)
        data = encode_request(req_id, number, args)
        buf = self._buf
        rc = lib.rx_call_roundtrip(self.sock.fileno(), data, len(data), buf, MAX_FRAME_BYTES)
        while rc == -errno.EINTR:  # a signal came: its handler runs here (and may raise), then on
            rc = lib.rx_call_resume(self.sock.fileno(), buf, MAX_FRAME_BYTES)
        fds = [buf.fds[i] for i in range(buf.nfds)]
        buf.nfds = 0
        if rc < 0:
            for fd in fds:
                os.close(fd)
            if rc == -errno.EPIPE:
                raise RxError(RX_ERR_PEER_CLOSED, "rxd closed the connection", local=False)
            if rc in (-errno.EPROTO, -errno.EMSGSIZE):
                raise RxError(RX_ERR_BAD_STATE, f"rxd sent a reply that is not a frame ({os.strerror(-rc)})", local=False)
            raise OSError(-rc, os.strerror(-rc))
        try:
            reply = decode_reply(ffi.buffer(buf.data, buf.frame))
        except RxError:
            for fd in fds:
                os.close(fd)
            raise
        return reply, req_id, fds


def _fds_of(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(array.array("i", payload[: len(payload) - len(payload) % 4]))
    return fds


def _attach_vdso(fds: list[int], info: dict[str, Any]) -> None:
    """Load the vDSO image rxd sent (not our own install's) against its vvar page. The fds stay
    open with the connection (rx_vdso_fds() hands copies to C programs); on failure they close.
    A reconnect attaches again."""
    try:
        if len(fds) != 2 or "vvar_size" not in info:
            raise RxError(RX_ERR_BAD_STATE, f"rxd sent {len(fds)} fds in the hello, not the vDSO and its vvar", local=False)
        rc = lib.rxv_attach(fds[0], fds[1], info["vvar_size"])
        if rc < 0:
            detail = ffi.string(lib.rxv_last_error()).decode(errors="replace")
            raise RxError(RX_ERR_BAD_STATE, f"loading rxd's vDSO failed ({rc}) {detail}".strip(), local=False)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


class RxConnection:
    def __init__(self, path: str | None = None, job: str | None = None) -> None:
        self.path = path or default_socket_path()
        self._lock = threading.Lock()
        self._caller: int | None = None  # the thread inside call(), holding _lock
        self._threads = threading.local()  # .channel: this thread's own _CallChannel
        self._thread_channels: weakref.WeakSet[_CallChannel] = weakref.WeakSet()
        self._sock = self._open(CHANNEL_MAIN)
        self._main = _CallChannel(self._sock, Connection(Role.CLIENT, kind=CHANNEL_MAIN))
        try:
            hello, fds = self._hello_with_fds(self._sock, self._main.conn, job)
            assert hello.info is not None
            self.info: dict[str, Any] = hello.info
            self.process_koid: int = hello.info["process_koid"]
            session: bytes = hello.info["session"]
            self._session = session
            _attach_vdso(fds, hello.info)
            self.vdso_fds: tuple[int, ...] = (fds[0], fds[1])  # the image, the read-only vvar
            rc = lib.rx_trap_setup(self.path.encode(), ffi.from_buffer("uint8_t[]", session))
            if rc < 0:
                raise _rx_errno(rc, "installing the fault trap")
            control = self._open(CHANNEL_CONTROL)
            try:
                self._hello(control, Connection(Role.CLIENT, kind=CHANNEL_CONTROL), session)
                rc = lib.rx_control_start(control.fileno())
                if rc < 0:
                    raise _rx_errno(rc, "starting the control thread")
            except BaseException:
                control.close()
                raise
            control.detach()  # the C control thread owns the fd now and closes it when done
        except BaseException:
            self._sock.close()
            for fd in getattr(self, "vdso_fds", ()):
                os.close(fd)
            raise
        self.closed = False

    def _open(self, kind: int) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(self.path)
        except OSError as e:
            sock.close()
            raise RxError(RX_ERR_UNAVAILABLE, f"cannot reach rxd at {self.path}: {e.strerror}", local=False) from None
        return sock

    @staticmethod
    def _hello_with_fds(sock: socket.socket, conn: Connection, job: str | None) -> tuple[HelloReply, list[int]]:
        """The main channel's hello (born in the job `job` names, if any): its reply carries fds
        (the vDSO image and the vvar)."""
        sock.sendall(conn.send(Hello(CHANNEL_MAIN, None, job)))
        fds: list[int] = []
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                data, ancdata, _, _ = sock.recvmsg(65536, socket.CMSG_SPACE(_MAX_FDS * 4))
                fds.extend(_fds_of(ancdata))
                conn.receive_data(data)
                continue
            if not isinstance(event, HelloReply) or event.status != 0:
                for fd in fds:
                    os.close(fd)
                if not isinstance(event, HelloReply):
                    raise RxError(RX_ERR_PEER_CLOSED, "rxd closed the connection during the hello", local=False)
                why = (event.info or {}).get("message")
                raise RxError(event.status, f"rxd refused the connection: {why}" if why else "rxd refused the connection", local=False)
            return event, fds

    @staticmethod
    def _hello(sock: socket.socket, conn: Connection, token: bytes | None) -> HelloReply:
        sock.sendall(conn.send(Hello(conn.kind or 0, token)))
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                conn.receive_data(sock.recv(65536))
                continue
            if not isinstance(event, HelloReply):
                raise RxError(RX_ERR_PEER_CLOSED, "rxd closed the connection during the hello", local=False)
            if event.status != 0:
                raise RxError(event.status, "rxd refused the connection", local=False)
            return event

    def call(self, name: str, *args: Any) -> tuple[tuple[Any, ...], list[int]]:
        """Send one syscall on the main channel and wait for its reply: (result, fds)."""
        number = SYSCALL_NUMBERS[name]
        with self._lock:
            if self.closed:
                raise RxError(RX_ERR_PEER_CLOSED, "the connection to rxd is closed", local=False)
            self._caller = threading.get_ident()
            try:
                reply, req_id, fds = self._main.roundtrip(number, args)
            except (OSError, RxError) as e:
                self._lose()
                if isinstance(e, RxError):
                    raise
                raise RxError(RX_ERR_PEER_CLOSED, f"lost rxd: {e.strerror or e}", local=False) from None
            except BaseException:
                # Interrupted mid-call (KeyboardInterrupt, an exception from a signal handler):
                # the reply is still on its way and would answer the next request. The stream
                # cannot be trusted any more; rxd will see us go and free what we held.
                self._lose()
                raise
            finally:
                self._caller = None
        return self._result(reply, req_id, fds)

    def in_call_here(self) -> bool:
        """Whether the calling thread is inside call() (holds the main channel): code that runs
        there unasked (a finalizer gc calls) must not make a call of its own, it would deadlock."""
        return self._caller == threading.get_ident()

    def thread_call(self, name: str, *args: Any) -> tuple[Any, ...]:
        """Send one syscall on the calling thread's own channel (opened on first use): for calls
        that may block, like futex waits. No lock: only this thread uses the channel."""
        number = SYSCALL_NUMBERS[name]
        if self.closed:
            raise RxError(RX_ERR_PEER_CLOSED, "the connection to rxd is closed", local=False)
        channel: _CallChannel | None = getattr(self._threads, "channel", None)
        if channel is None:
            channel = self._open_thread_channel()
        try:
            reply, req_id, fds = channel.roundtrip(number, args)
        except BaseException as e:
            # Lost, or interrupted mid-call: a reply may still be on its way, so this channel
            # cannot be trusted; closing it ends any wait rxd holds for us. The next call opens
            # a fresh one.
            self._threads.channel = None
            channel.sock.close()
            if isinstance(e, OSError):
                raise RxError(RX_ERR_PEER_CLOSED, f"lost rxd: {e.strerror or e}", local=False) from None
            raise
        result, extra = self._result(reply, req_id, fds)
        for fd in extra:
            os.close(fd)
        return result

    def _open_thread_channel(self) -> _CallChannel:
        sock = self._open(CHANNEL_THREAD)
        try:
            conn = Connection(Role.CLIENT, kind=CHANNEL_THREAD)
            self._hello(sock, conn, self._session)
        except BaseException:
            sock.close()
            raise
        channel = _CallChannel(sock, conn)
        weakref.finalize(channel, sock.close)  # the thread ended: its channel goes with it
        self._thread_channels.add(channel)
        self._threads.channel = channel
        return channel

    def _close_thread_channels(self, inherited: bool = False) -> None:
        """Every thread's channel goes. A thread may be inside a round trip on one, in C with its
        raw fd: shutting the socket down wakes it (EOF), and the fd closes only when nothing
        uses it any more (the channel is unreachable once its thread is out of the call: its
        finalizer closes it), so that fd number cannot be reused under that thread. In a fork
        child (`inherited`) the sockets are the parent's too: only our copies are closed, a
        shutdown would cut the parent's channels."""
        for channel in list(self._thread_channels):
            if inherited:
                channel.sock.close()
                continue
            try:
                channel.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread_channels.clear()
        self._threads = threading.local()

    @staticmethod
    def _result(reply: Reply, req_id: int, fds: list[int]) -> tuple[tuple[Any, ...], list[int]]:
        if reply.id != req_id:
            for fd in fds:
                os.close(fd)
            raise RxError(RX_ERR_BAD_STATE, f"reply {reply.id} does not answer request {req_id}", local=False)
        if reply.status != 0:
            for fd in fds:
                os.close(fd)
            message = reply.result[0] if reply.result and isinstance(reply.result[0], str) else ""
            raise RxError(reply.status, message, local=True)
        return reply.result, fds

    def _lose(self, inherited: bool = False) -> None:
        self.closed = True
        if self._caller not in (None, threading.get_ident()) and not inherited:
            # Another thread is inside a call, in C with the main socket's raw fd: wake it (EOF)
            # and let it close the socket as it fails (it comes back here), so the fd number
            # cannot be reused under it.
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        else:
            self._sock.close()
        self._close_thread_channels(inherited)
        for fd in self.vdso_fds:
            os.close(fd)
        self.vdso_fds = ()

    def close(self) -> None:
        if not self.closed:
            lib.rx_control_stop()
            self._lose()

    def forget_after_fork(self) -> None:
        """In a fork child: this connection belongs to the parent. Drop our copies of its sockets
        without telling rxd anything (the parent still uses them)."""
        self._lose(inherited=True)

