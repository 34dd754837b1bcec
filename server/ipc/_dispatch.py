"""Dispatch: one request in, one reply out (ARCHITECTURE.md "Layers").

Shapes are checked against proto's table (check_args), then the handler named there runs. A
caller's mistake is an RxError reply; an exception from inside a handler is rxd's own bug: it
becomes RX_ERR_INTERNAL for that request and a logged traceback, and every other client carries on.
"""

from __future__ import annotations

import os

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
from ..syscalls import HANDLERS, Call
from ._stream import Stream

log = structlog.get_logger("rxd")

# What a thread channel serves; everything else keeps the one-at-a-time order of the main channel.
THREAD_SYSCALLS = frozenset({"rx_futex_wait", "rx_futex_wake", "rx_futex_requeue", "rx_system_wait_pressure", "rx_job_wait_events"})


async def serve_request(kernel: Kernel, sock: Stream, conn: Connection, process: Process, req: Request, thread: bool = False) -> None:
    process.syscalls += 1
    call = Call(kernel, process, sock.sock)
    try:
        syscall = check_args(req.number, list(req.args))
        if thread and syscall.name not in THREAD_SYSCALLS:
            raise RxError(RX_ERR_NOT_SUPPORTED, f"{syscall.name} is served on the main channel only")
        result = await HANDLERS[syscall.name](call, *req.args)
        reply = Reply(req.id, RX_OK, result)
    except RxError as e:
        reply = Reply(req.id, e.status, (e.message,))
    except trio.BrokenResourceError:
        raise  # the client's channel broke while the call waited (a futex wait): drop it
    except Exception:
        log.exception("syscall failed inside rxd", number=req.number, pid=process.pid)
        reply = Reply(req.id, RX_ERR_INTERNAL, ("internal error in rxd (logged)",))
    try:
        await sock.send_all(conn.send(reply), call.fds)
    finally:
        for fd in call.close_after:
            os.close(fd)
