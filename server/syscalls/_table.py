"""The handler table: one handler (async, or a plain function when it never waits) per entry of proto's syscall table (checked in
tests/test_proto.py), registered by the @syscall decorator in the file of its object kind."""

from __future__ import annotations

import dataclasses
import inspect
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..object import Kernel, Process


@dataclasses.dataclass(slots=True)
class Call:
    """One request being served: who asks, and fds to attach to the reply."""

    kernel: Kernel
    process: Process
    channel: socket.socket | None = None  # the socket it came on (a futex wait watches it for EOF)
    fds: list[int] = dataclasses.field(default_factory=list)  # sent with the reply
    close_after: list[int] = dataclasses.field(default_factory=list)  # ours to close once sent


AsyncHandler = Callable[..., Awaitable[tuple[Any, ...]]]
SyncHandler = Callable[..., tuple[Any, ...]]
Handler = TypeVar("Handler", AsyncHandler, SyncHandler)
HANDLERS: dict[str, AsyncHandler | SyncHandler] = {}
# The handlers that are plain functions: they never wait, so the call front end runs them in line,
# a batch at a time, with no task of their own. A handler that may wait (a lock, an ack, I/O) is
# async and runs in its channel's task.
SYNC_HANDLERS: set[str] = set()


def syscall(fn: Handler) -> Handler:
    HANDLERS[fn.__name__] = fn
    if not inspect.iscoroutinefunction(fn):
        SYNC_HANDLERS.add(fn.__name__)
    return fn
