"""Dispatch: one request in, one reply out (ARCHITECTURE.md "Layers").

Shapes are checked against proto's table (check_args), then the handler named there runs. A
caller's mistake is an RxError reply; an exception from inside a handler is rxd's own bug: it
becomes RX_ERR_INTERNAL for that request and a logged traceback, and every other client carries on.

Two steps, so the call front end can serve a batch without a task per request: `begin` counts and
checks the request and, when its handler is a plain function (it never waits), runs it at once;
`finish` runs an async handler, in the task of the channel it came on.
"""

from __future__ import annotations

import os
import socket
from typing import Any, cast

import structlog
import trio

from rxkernel.proto import (
    RX_ERR_INTERNAL,
    RX_ERR_NOT_SUPPORTED,
    RX_OK,
    Connection,
    Reply,
    Request,
    RxError,
    check_args,
)

from ..object import Kernel, Process
from ..syscalls import HANDLERS, SYNC_HANDLERS, Call
from ..syscalls._table import AsyncHandler, SyncHandler
from ._stream import Stream

log = structlog.get_logger("rxd")

# What a thread channel serves; everything else keeps the one-at-a-time order of the main channel.
THREAD_SYSCALLS = frozenset({"rx_futex_wait", "rx_futex_wake", "rx_futex_requeue", "rx_system_wait_pressure", "rx_job_wait_events"})


class Served:
    """A request being served: its Call, and its outcome (status, result) once there is one."""

    __slots__ = ("call", "id", "number", "args", "status", "result", "handler")

    def __init__(self, call: Call, req_id: int, number: int, args: list[Any]) -> None:
        self.call = call
        self.id = req_id
        self.number = number
        self.args = args
        self.status: int | None = None  # None until served
        self.result: tuple[Any, ...] = ()
        self.handler: AsyncHandler | None = None  # set when an async handler is still to run

    def close_fds(self) -> None:
        """Once the reply is sent: the fds that were ours only to send go."""
        for fd in self.call.close_after:
            os.close(fd)


def begin(kernel: Kernel, process: Process, channel: socket.socket | None, req_id: int, number: int, args: list[Any],
          thread: bool = False) -> Served:
    """Check the request and, if its handler never waits, serve it: then `.status` is set;
    otherwise `.handler` is, for `finish`."""
    process.syscalls += 1
    served = Served(Call(kernel, process, channel), req_id, number, args)
    try:
        syscall = check_args(number, args)
        if thread and syscall.name not in THREAD_SYSCALLS:
            raise RxError(RX_ERR_NOT_SUPPORTED, f"{syscall.name} is served on the main channel only")
        handler = HANDLERS[syscall.name]
        if syscall.name not in SYNC_HANDLERS:
            served.handler = cast(AsyncHandler, handler)
            return served
        served.result = cast(SyncHandler, handler)(served.call, *args)
        served.status = RX_OK
    except RxError as e:
        served.status, served.result = e.status, (e.message,)
    except Exception:
        _internal_error(served)
    return served


async def finish(served: Served) -> None:
    """Run the async handler `begin` left, if any."""
    if served.status is None:
        assert served.handler is not None
        try:
            served.result = await served.handler(served.call, *served.args)
            served.status = RX_OK
        except RxError as e:
            served.status, served.result = e.status, (e.message,)
        except trio.BrokenResourceError:
            raise  # the client's channel broke while the call waited (a futex wait): drop it
        except Exception:
            _internal_error(served)


def _internal_error(served: Served) -> None:
    log.exception("syscall failed inside rxd", number=served.number, pid=served.call.process.pid)
    served.status, served.result = RX_ERR_INTERNAL, ("internal error in rxd (logged)",)


async def serve_request(kernel: Kernel, sock: Stream, conn: Connection, process: Process, req: Request, thread: bool = False) -> None:
    """One request on a channel Python reads itself: served, and its reply sent."""
    served = begin(kernel, process, sock.sock, req.id, req.number, list(req.args), thread)
    await finish(served)
    assert served.status is not None
    try:
        await sock.send_all(conn.send(Reply(served.id, served.status, served.result)), served.call.fds)
    finally:
        served.close_fds()
