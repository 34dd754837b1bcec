"""Sleepers: client threads parked on their own channels until a wake, a deadline or EOF; and
hung_up, the check that a channel's peer closed it, without reading a byte.

A blocking syscall (rx_system_wait_pressure, rx_job_wait_events) is served on the calling
thread's own channel, and nothing may arrive there while it waits. So the channel's task parks on
`wait_readable` of that channel inside a cancel scope, which is the whole wait: a wake cancels
the scope, the deadline is the scope's, and the channel turning readable means the thread went
away (EOF) or broke the protocol. One task and one scope per sleeper, no nursery and no task of
its own: a wake of n sleepers is n cancels. (Futex waiters park the same way, with a queue per
word: object/_futex.py.)
"""

from __future__ import annotations

import math
import socket

import trio


def hung_up(channel: socket.socket) -> bool:
    """The peer closed `channel` (EOF with nothing unread before it) or it broke; without
    reading anything, so a request that arrived first stays for its reader."""
    try:
        return channel.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


class Sleepers:
    """Everyone parked until the next `wake_all`. Event-loop only."""

    __slots__ = ("_scopes",)

    def __init__(self) -> None:
        self._scopes: set[trio.CancelScope] = set()

    def __len__(self) -> int:
        return len(self._scopes)

    def wake_all(self) -> None:
        scopes, self._scopes = self._scopes, set()
        for scope in scopes:
            scope.cancel()

    async def sleep(self, channel: socket.socket | None, deadline: float = math.inf) -> None:
        """Until the next wake_all or `deadline` (trio time), whichever is first. Raises
        trio.BrokenResourceError if `channel` (the sleeping thread's) turns readable first;
        None: an in-process caller with no channel."""
        with trio.CancelScope(deadline=deadline) as scope:
            self._scopes.add(scope)
            try:
                if channel is None:
                    await trio.sleep_forever()
                else:
                    await trio.lowlevel.wait_readable(channel)
                    raise trio.BrokenResourceError("the waiting thread's channel closed or spoke out of turn")
            finally:
                self._scopes.discard(scope)
