"""The per-process connection to rxd: a main channel for syscalls, a control channel handed to
the C control thread, and the C trap set up with the session token so fault channels can attach.

Sync on purpose: a stub call is a blocking syscall. A lock makes one request at a time per process;
threads that fault meanwhile use the C fault channels, which never take this lock.
"""

from __future__ import annotations

import array
import itertools
import os
import socket
import threading
from typing import Any

from rxkernel.native import ffi, lib
from rxkernel.proto import (
    CHANNEL_CONTROL,
    CHANNEL_MAIN,
    CLOSED,
    NEED_DATA,
    RX_ERR_BAD_STATE,
    RX_ERR_PEER_CLOSED,
    RX_ERR_UNAVAILABLE,
    SYSCALL_NUMBERS,
    Connection,
    Hello,
    HelloReply,
    Reply,
    Request,
    Role,
    RxError,
    default_socket_path,
)

_MAX_FDS = 16
_RECV = 1 << 18


def _rx_errno(rc: int, what: str) -> RxError:
    return RxError(RX_ERR_BAD_STATE, f"{what}: {os.strerror(-rc)}")


def _fds_of(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(array.array("i", payload[: len(payload) - len(payload) % 4]))
    return fds


def _attach_vdso(fds: list[int], info: dict[str, Any]) -> None:
    """Load the vDSO image rxd sent (not our own install's) against its vvar page; the fds are
    closed either way (the mappings keep what they need). A reconnect attaches again."""
    try:
        if len(fds) != 2 or "vvar_size" not in info:
            raise RxError(RX_ERR_BAD_STATE, f"rxd sent {len(fds)} fds in the hello, not the vDSO and its vvar", local=False)
        rc = lib.rxv_attach(fds[0], fds[1], info["vvar_size"])
        if rc < 0:
            detail = ffi.string(lib.rxv_last_error()).decode(errors="replace")
            raise RxError(RX_ERR_BAD_STATE, f"loading rxd's vDSO failed ({rc}) {detail}".strip(), local=False)
    finally:
        for fd in fds:
            os.close(fd)


class RxConnection:
    def __init__(self, path: str | None = None) -> None:
        self.path = path or default_socket_path()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._sock = self._open(CHANNEL_MAIN)
        self._conn = Connection(Role.CLIENT, kind=CHANNEL_MAIN)
        try:
            hello, fds = self._hello_with_fds(self._sock, self._conn)
            assert hello.info is not None
            self.info: dict[str, Any] = hello.info
            self.process_koid: int = hello.info["process_koid"]
            session: bytes = hello.info["session"]
            _attach_vdso(fds, hello.info)
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
    def _hello_with_fds(sock: socket.socket, conn: Connection) -> tuple[HelloReply, list[int]]:
        """The main channel's hello: its reply carries fds (the vDSO image and the vvar)."""
        sock.sendall(conn.send(Hello(CHANNEL_MAIN, None)))
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
                raise RxError(event.status, "rxd refused the connection", local=False)
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
        """Send one syscall and wait for its reply: (result, fds that came with it)."""
        number = SYSCALL_NUMBERS[name]
        with self._lock:
            if self.closed:
                raise RxError(RX_ERR_PEER_CLOSED, "the connection to rxd is closed", local=False)
            req_id = next(self._ids)
            try:
                self._sock.sendall(self._conn.send(Request(req_id, number, args)))
                reply, fds = self._receive()
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

    def _receive(self) -> tuple[Reply, list[int]]:
        fds: list[int] = []
        while True:
            event = self._conn.next_event()
            if isinstance(event, Reply):
                return event, fds
            if event is CLOSED:
                raise RxError(RX_ERR_PEER_CLOSED, "rxd closed the connection", local=False)
            assert event is NEED_DATA
            data, ancdata, _, _ = self._sock.recvmsg(_RECV, socket.CMSG_SPACE(_MAX_FDS * 4))
            fds.extend(_fds_of(ancdata))
            self._conn.receive_data(data)

    def _lose(self) -> None:
        self.closed = True
        self._sock.close()

    def close(self) -> None:
        if not self.closed:
            lib.rx_control_stop()
            self._lose()

    def forget_after_fork(self) -> None:
        """In a fork child: this connection belongs to the parent. Drop our copy of the socket
        without telling rxd anything (the parent still uses it)."""
        self.closed = True
        self._sock.close()

