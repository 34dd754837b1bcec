"""The handler table: one async handler per entry of proto's syscall table (checked in
tests/test_proto.py), registered by the @syscall decorator in the file of its object kind."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from ..object import Kernel, Process


@dataclasses.dataclass(slots=True)
class Call:
    """One request being served: who asks, and fds to attach to the reply."""

    kernel: Kernel
    process: Process
    channel: socket.socket | None = None  # the socket it came on (a futex wait watches it for EOF)
    fds: list[int] = dataclasses.field(default_factory=list)  # sent with the reply
    close_after: list[int] = dataclasses.field(default_factory=list)  # ours to close once sent


Handler = Callable[..., Awaitable[tuple[Any, ...]]]
HANDLERS: dict[str, Handler] = {}


def syscall(fn: Handler) -> Handler:
    HANDLERS[fn.__name__] = fn
    return fn
