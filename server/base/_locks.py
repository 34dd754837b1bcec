"""rxd's lock: a trio lock with a cheap uncontended path, and a check that `*_locked` callers hold it.

rxd runs on one trio thread, so "guarded by" means: nobody else changes the field while the lock's
holder awaits. Methods whose name ends in `_locked` need the lock held by the calling task, as
Zircon's `...Locked() TA_REQ(lock_)`. With RXD_CHECK_LOCKS=1 in the environment (the test suite
sets it) `@requires_lock` makes each such call assert that; without it the decorator returns the
function unchanged, so production pays nothing.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import trio

CHECK_LOCKS = os.environ.get("RXD_CHECK_LOCKS", "") not in ("", "0")

P = ParamSpec("P")
R = TypeVar("R")


class FastLock:
    """A fair lock for trio tasks whose uncontended acquire does not visit the scheduler (trio's
    Lock always does, and also registers a parking-lot breaker on every acquire). Waiters queue
    in a ParkingLot and a release hands the lock straight to the first of them, as trio.Lock
    does; callers reach a checkpoint soon after anyway (their next I/O).

    `word`, when given (a C int32_t*), is 1 while any task holds the lock and 0 while it is
    free: rxd's fault thread reads it (rxfastfault.h) and leaves a locked tree to trio."""

    __slots__ = ("_owner", "_lot", "word")

    def __init__(self, word: Any = None) -> None:
        self._owner: trio.lowlevel.Task | None = None
        self._lot = trio.lowlevel.ParkingLot()
        self.word = word

    def locked(self) -> bool:
        return self._owner is not None

    def held_by_me(self) -> bool:
        """The calling task holds the lock (for the checks)."""
        return self._owner is trio.lowlevel.current_task()

    async def acquire(self) -> None:
        task = trio.lowlevel.current_task()
        if self._owner is None and not self._lot:
            self._owner = task
            if self.word is not None:
                self.word[0] = 1
            return
        if self._owner is task:
            raise RuntimeError("attempt to re-acquire an already held FastLock")
        await self._lot.park()  # release() made us the owner before waking us
        assert self._owner is task

    def release(self) -> None:
        if self._owner is not trio.lowlevel.current_task():
            raise RuntimeError("can't release a FastLock you don't own")
        if self._lot:
            (self._owner,) = self._lot.unpark(count=1)
        else:
            self._owner = None
            if self.word is not None:
                self.word[0] = 0

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class LockNotHeld(AssertionError):
    """A `*_locked` function ran without its lock: a bug in rxd (only raised with RXD_CHECK_LOCKS)."""


def requires_lock(lock_of: Callable[..., FastLock]) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a `*_locked` function (sync or async): `lock_of(*args)` names its lock. Checked
    only with RXD_CHECK_LOCKS; otherwise the function itself is returned."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        if not CHECK_LOCKS:
            return fn

        @functools.wraps(fn)
        def checked(*args: P.args, **kwargs: P.kwargs) -> R:
            if not lock_of(*args).held_by_me():
                raise LockNotHeld(f"{fn.__qualname__} needs its lock held by the calling task")
            return fn(*args, **kwargs)

        return checked

    return decorate
