"""Synchronization objects that live inside an rx mapping and work across processes.

    with rx.Vmo(4096) as vmo, vmo.map() as m:
        lock = rx.Mutex.create(m, 0)            # writes the initial state, once
        token = vmo.export()                     # another process: Vmo.import_token(token).map()
        with lock:                               # and rx.Mutex(its_mapping, 0)
            ...

Every object is a few 32-bit words at a 4-byte aligned offset of a mapping. Each process builds
the object over its own mapping of the same VMO at the same VMO offset (the addresses may
differ: futexes are keyed by the page behind the address). `create()` (or `init()`) writes the
initial state once; attaching with the constructor writes nothing.

Uncontended paths are atomic instructions in C (native/client/rxsync.c) and never ask rxd anything.
Only a thread that must sleep calls rx_futex_wait, and only a release that may have sleepers
calls rx_futex_wake or rx_futex_requeue: each object keeps a count of sleepers for that.
Waiting spins a bounded while (pause, then sched_yield) before sleeping; it never spins forever.

Layouts (little-endian u32 words, offsets in bytes):

    Mutex      SIZE 8    +0 word: owner pid (bits 0-29) | OWNER_DIED (bit 30) | WAITERS (bit 31)
                         +4 sleepers: threads that may sleep on the word (wait loop or requeued)
    Condition  SIZE 12   +0 seq: futex word, bumped by every notify
                         +4 waiters: count (bits 0-15) | requeue generation (bits 16-31)
                         +8 sleepers: waiters asleep in rxd (the others spin on seq)
    Semaphore  SIZE 8    +0 value (futex word)      +4 sleepers
    Event      SIZE 8    +0 futex word: flag (bit 0) | set generation (bits 1-31)
                         +4 sleepers
    Barrier    SIZE 12   +0 futex word: arrived in this generation (bits 0-15) | generation (bits 16-31)
                         +4 parties (1..65535)      +8 sleepers

A process that dies while counted as a sleeper leaves the count high: later releases then make a
wake call nobody needs. That costs time, never correctness.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol, TypeVar

from rxkernel.native import lib
from rxkernel.native._rxlock import LockWord
from rxkernel.proto import (
    RX_ERR_BAD_STATE,
    RX_ERR_INVALID_ARGS,
    RX_ERR_TIMED_OUT,
    RX_FUTEX_OWNER_DIED,
    RX_FUTEX_OWNER_MASK,
    RX_FUTEX_WAITERS,
    RX_FUTEX_WAKE_ALL,
    RxError,
)

from . import _stubs, _vdso

# The robust futex protocol of rx_futex_wait (native/include/rxwire.h has the same values;
# tests/test_wire.py checks them).
OWNER_MASK = RX_FUTEX_OWNER_MASK
OWNER_DIED = RX_FUTEX_OWNER_DIED
WAITERS = RX_FUTEX_WAITERS

# Adaptive spinning before a futex wait: pause rounds, then sched_yield()s. A mutex is held for
# a few hundred nanoseconds from Python, so a short spin usually finds it free; the yields let a
# preempted owner run when the processes outnumber the CPUs (8 hammering 2 vCPUs in the tests).
SPINS = 200
YIELDS = 8

_MINUS_ONE = 0xFFFFFFFF
_COUNT_MASK = 0xFFFF

T = TypeVar("T")


def _now_ns() -> int:
    """The rx monotonic clock, which futex deadlines are on (the vDSO: no request to rxd)."""
    return _vdso.rx_clock_get_monotonic()


def _deadline(timeout: float | None) -> int | None:
    if timeout is None:
        return None
    return _now_ns() + max(0, int(timeout * 1e9))


_pid = os.getpid()


def _reset_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_reset_pid)


def _wait(addr: int, expected: int, deadline: int | None, owner_pid: int = 0) -> bool:
    """One futex wait: False at the deadline; True when woken or when the word had changed."""
    try:
        _stubs.rx_futex_wait(addr, expected, deadline, owner_pid=owner_pid)
    except RxError as e:
        if e.status == RX_ERR_TIMED_OUT:
            return False
        if e.status != RX_ERR_BAD_STATE:
            raise
    return True


class _HasAddress(Protocol):
    @property
    def addr(self) -> int: ...

    @property
    def length(self) -> int: ...


class _Shared:
    SIZE = 0

    def __init__(self, mapping: _HasAddress, offset: int) -> None:
        if type(offset) is not int or offset < 0 or offset % 4 or offset + self.SIZE > mapping.length:
            raise RxError(
                RX_ERR_INVALID_ARGS,
                f"{type(self).__name__} needs {self.SIZE} bytes at a 4-byte aligned offset inside the mapping "
                f"(offset {offset!r}, mapping length {mapping.length})",
            )
        self.mapping = mapping
        self.offset = offset
        self.addr = mapping.addr + offset
        if self.addr % 4:
            raise RxError(RX_ERR_INVALID_ARGS, f"address {self.addr:#x} is not 4-byte aligned")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} at {self.addr:#x}>"


class Mutex(_Shared, LockWord):
    """A robust mutual-exclusion lock in shared memory (like threading.Lock, across processes).

    The word holds the owner's pid. If the owner process dies holding it, rxd clears the owner
    field and sets OWNER_DIED (at once for sleepers, and for a later locker when its wait names a
    pid that is no longer an rx process): the next acquire() SUCCEEDS, and `owner_died` is True
    while that holder has it, telling it the state the lock protects may be half-updated. The
    holder repairs what it must; release() clears the flag. (The alternative, failing with
    RX_ERR_PEER_CLOSED, would leave every later user wedged or needing its own recovery path.)

    The lock belongs to a process, not a thread: any thread of the owning process may release
    it, and it is not recursive. A pid reused by another rx process before anyone notices the
    death is not detected.

    Uncontended acquire() and release() (and `with`) are C methods of LockWord doing one CAS
    each (native/pyext/rxlock.c) and no request to rxd; anything else comes here, to
    _acquire_slow / _release_slow. SIZE = 8 bytes: the word (+0) and a count of sleepers (+4).
    """

    SIZE = 8

    def __init__(self, mapping: _HasAddress, offset: int) -> None:
        super().__init__(mapping, offset)
        self._sleepers = self.addr + 4
        self._bind(self.addr)

    @classmethod
    def create(cls, mapping: _HasAddress, offset: int) -> Mutex:
        """A Mutex at `offset` in `mapping`, initialised unlocked (do this once, in one process)."""
        m = cls(mapping, offset)
        m.init()
        return m

    def init(self) -> None:
        """Reset the words to unlocked, no sleepers (only while nobody uses the Mutex)."""
        lib.rx_atomic_store(self.addr, 0)
        lib.rx_atomic_store(self._sleepers, 0)

    def _acquire_slow(self, blocking: bool = True, timeout: float | None = -1) -> bool:
        """acquire() with arguments, or when the word was not simply free (LockWord.acquire tried
        one CAS). threading.Lock's rules: timeout=-1 (or None) is no limit, another negative
        timeout is a ValueError, and so is a timeout with blocking=False."""
        if timeout is None:
            timeout = -1
        if timeout < 0 and timeout != -1:
            raise ValueError("timeout value must be a non-negative number")
        if not blocking and timeout != -1:
            raise ValueError("can't specify a timeout for a non-blocking call")
        r = lib.rx_mutex_trylock(self.addr, _pid, 0)
        if not r & OWNER_MASK:
            return True
        if not blocking or timeout == 0:
            return False
        return self._lock_slow(None if timeout == -1 else _deadline(timeout), counted=False)

    def _lock_slow(self, deadline: int | None, counted: bool) -> bool:
        """Spin a while, then sleep on the word until it is ours or the deadline passes.
        `counted`: the caller is already counted in the sleepers (a requeued Condition waiter,
        which a release of the mutex may already have woken)."""
        pid = _pid
        extra = WAITERS if counted and lib.rx_atomic_load(self._sleepers) > 1 else 0
        r = lib.rx_mutex_lock_spin(self.addr, pid, extra, SPINS, YIELDS)
        if not r & OWNER_MASK:
            if counted:
                lib.rx_atomic_add(self._sleepers, _MINUS_ONE)
            return True
        if not counted:
            lib.rx_atomic_add(self._sleepers, 1)
        acquired = False
        slept = counted
        try:
            while True:
                if not r & OWNER_MASK:
                    # Seen free by a failed CAS (or freed by rxd after its owner died): take it, and keep WAITERS when
                    # others may sleep here, since the release that woke us cleared the bit.
                    extra = WAITERS if lib.rx_atomic_load(self._sleepers) > 1 else 0
                    r = lib.rx_mutex_trylock(self.addr, pid, extra)
                    if not r & OWNER_MASK:
                        acquired = True
                        return True
                    continue
                # The deadline first: a caller that gives up must not leave WAITERS behind for nobody.
                if deadline is not None and _now_ns() >= deadline:
                    return False
                if not r & WAITERS:
                    seen = lib.rx_atomic_cas(self.addr, r, r | WAITERS)
                    if seen != r:
                        r = seen
                        continue
                    r |= WAITERS
                slept = True
                if not _wait(self.addr, r, deadline, owner_pid=r & OWNER_MASK):
                    return False
                extra = WAITERS if lib.rx_atomic_load(self._sleepers) > 1 else 0
                r = lib.rx_mutex_lock_spin(self.addr, pid, extra, SPINS, YIELDS)
                if not r & OWNER_MASK:  # taken (a result with owner 0 means success here)
                    acquired = True
                    return True
        finally:
            others = lib.rx_atomic_add(self._sleepers, _MINUS_ONE) - 1
            if slept and not acquired and others > 0:
                # We may have been woken by a release (which cleared WAITERS) and are leaving without the
                # lock: a timeout racing the wake, or an exception (Ctrl-C) after it. Pass the wake on, or
                # the other sleepers stay asleep on a lock that nobody will release with a wake.
                _stubs.rx_futex_wake(self.addr, 1)

    def _release_slow(self) -> None:
        """release() when the word was not exactly our pid (flags set, or not ours)."""
        rc = lib.rx_mutex_unlock(self.addr, _pid)
        if rc:
            if rc < 0:
                raise RuntimeError("release of a Mutex this process does not hold")
            _stubs.rx_futex_wake(self.addr, 1)

    def locked(self) -> bool:
        """True if some process holds the lock now."""
        return bool(lib.rx_atomic_load(self.addr) & OWNER_MASK)

    @property
    def owner_died(self) -> bool:
        """True while this process holds the lock and its previous owner died holding it."""
        w = lib.rx_atomic_load(self.addr)
        return (w & OWNER_MASK) == _pid and bool(w & OWNER_DIED)

    @property
    def owner_pid(self) -> int:
        """The pid of the process holding the lock, or 0."""
        return int(lib.rx_atomic_load(self.addr) & OWNER_MASK)

    def _check_held(self) -> None:
        if lib.rx_atomic_load(self.addr) & OWNER_MASK != _pid:
            raise RuntimeError("the Mutex must be held by this process")



class Condition(_Shared):
    """A condition variable over a Mutex (like threading.Condition, across processes).

    SIZE = 12 bytes: a sequence word that waiters spin, then sleep on (+0), the waiter count with a
    requeue generation (+4), and how many of them sleep in rxd (+8). notify() with no waiters is
    an atomic load, and with only spinning waiters an increment: no request to rxd either way.
    notify_all() does not wake a herd: it moves the waiters onto the Mutex word with one
    rx_futex_requeue (after setting the mutex's WAITERS bit and adding them to its sleepers), so
    each release of the mutex wakes the next. The generation tells each waiter whether it was
    moved (and is then counted among the mutex's sleepers), in the same atomic step that takes it
    out of the condition's count.
    """

    SIZE = 12

    def __init__(self, mapping: _HasAddress, offset: int, mutex: Mutex) -> None:
        super().__init__(mapping, offset)
        self.mutex = mutex
        self._waiters = self.addr + 4
        self._sleepers = self.addr + 8

    @classmethod
    def create(cls, mapping: _HasAddress, offset: int, mutex: Mutex) -> Condition:
        """A Condition at `offset` in `mapping` over `mutex`, initialised (once, in one process)."""
        c = cls(mapping, offset, mutex)
        c.init()
        return c

    def init(self) -> None:
        """Reset the words to no waiters (only while nobody uses the Condition)."""
        lib.rx_atomic_store(self.addr, 0)
        lib.rx_atomic_store(self._waiters, 0)
        lib.rx_atomic_store(self._sleepers, 0)

    def __enter__(self) -> bool:
        return self.mutex.acquire()

    def __exit__(self, *exc: object) -> None:
        self.mutex.release()

    def acquire(self, blocking: bool = True, timeout: float | None = -1) -> bool:
        """Acquire the underlying Mutex (as threading.Condition.acquire)."""
        return self.mutex.acquire(blocking, timeout)

    def release(self) -> None:
        """Release the underlying Mutex."""
        self.mutex.release()

    def wait(self, timeout: float | None = None) -> bool:
        """Release the mutex, sleep until notified (or the timeout), re-acquire the mutex.
        False if the timeout expired. Spurious wake-ups are possible: use wait_for or a loop."""
        self.mutex._check_held()
        deadline = _deadline(timeout)
        seq = lib.rx_atomic_load(self.addr)
        w = lib.rx_atomic_add(self._waiters, 1)
        if w & _COUNT_MASK == _COUNT_MASK:
            lib.rx_atomic_add(self._waiters, _MINUS_ONE)
            raise RxError(RX_ERR_INVALID_ARGS, "too many waiters on one Condition (65535)")
        generation = w >> 16
        self.mutex.release()
        # From here on, whatever happens (Ctrl-C while asleep, an error from rxd), leave the count
        # and re-acquire the mutex before returning or raising, as threading.Condition does: the
        # caller's `with` releases it, and a leaked count would be added to the mutex's sleepers by
        # every later notify_all.
        woken = False
        try:
            if lib.rx_spin_while_eq(self.addr, seq, SPINS, YIELDS) != seq:
                woken = True
            else:
                lib.rx_atomic_add(self._sleepers, 1)
                try:
                    woken = _wait(self.addr, seq, deadline)
                finally:
                    lib.rx_atomic_add(self._sleepers, _MINUS_ONE)
        finally:
            if self._leave(generation):
                self.mutex._lock_slow(None, counted=True)
            else:
                self.mutex.acquire()
        return woken

    def _leave(self, generation: int) -> bool:
        """Take this waiter out of the count: False, or True if a notify_all already did (when
        the generation moved), which also counted it among the mutex's sleepers."""
        while True:
            w = lib.rx_atomic_load(self._waiters)
            if w >> 16 != generation:
                return True
            if lib.rx_atomic_cas(self._waiters, w, w - 1) == w:
                return False

    def wait_for(self, predicate: Callable[[], T], timeout: float | None = None) -> T:
        """wait() until predicate() is true (or the timeout); returns the predicate's last value."""
        deadline = _deadline(timeout)
        result = predicate()
        while not result:
            if deadline is None:
                self.wait()
            else:
                left = deadline - _now_ns()
                if left <= 0:
                    break
                self.wait(left / 1e9)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        """Wake up to `n` waiters (the Mutex must be held by this process)."""
        self.mutex._check_held()
        if n <= 0 or not lib.rx_atomic_load(self._waiters) & _COUNT_MASK:
            return
        lib.rx_atomic_add(self.addr, 1)  # spinning waiters see this; sleeping ones need a wake
        if lib.rx_atomic_load(self._sleepers):
            _stubs.rx_futex_wake(self.addr, min(n, RX_FUTEX_WAKE_ALL))

    def notify_all(self) -> None:
        """Wake every waiter, handing them to the Mutex one release at a time (the Mutex must be held)."""
        self.mutex._check_held()
        while True:
            w = lib.rx_atomic_load(self._waiters)
            count = w & _COUNT_MASK
            if not count:
                return
            if lib.rx_atomic_cas(self._waiters, w, (((w >> 16) + 1) & 0xFFFF) << 16) == w:
                break
        # All `count` now contend for the mutex as its sleepers (spinning ones see seq move and
        # go there themselves). We hold the mutex: its waiters bit makes our release wake the
        # first of those we move from the condition's futex to the mutex's.
        lib.rx_atomic_add(self.mutex._sleepers, count)
        seq = (lib.rx_atomic_add(self.addr, 1) + 1) & 0xFFFFFFFF
        if lib.rx_atomic_load(self._sleepers):
            lib.rx_atomic_or(self.mutex.addr, WAITERS)
            # requeue_owner: we hold the mutex, so the moved waiters wait on it robustly, and rxd
            # hands the word to one of them if this process dies before releasing it.
            _stubs.rx_futex_requeue(self.addr, 0, seq, self.mutex.addr, RX_FUTEX_WAKE_ALL, requeue_owner=_pid)

    notifyAll = notify_all


class Semaphore(_Shared):
    """A counting semaphore in shared memory (like threading.Semaphore, across processes).
    SIZE = 8 bytes: the value (+0, the futex word) and a count of sleepers (+4)."""

    SIZE = 8

    def __init__(self, mapping: _HasAddress, offset: int) -> None:
        super().__init__(mapping, offset)
        self._sleepers = self.addr + 4

    @classmethod
    def create(cls, mapping: _HasAddress, offset: int, value: int = 1) -> Semaphore:
        """A Semaphore at `offset` in `mapping` with `value` units (once, in one process)."""
        s = cls(mapping, offset)
        s.init(value)
        return s

    def init(self, value: int = 1) -> None:
        """Reset the value to `value` and no sleepers (only while nobody uses it)."""
        if not 0 <= value <= 0xFFFFFFFF:
            raise ValueError("semaphore value must be in 0..2**32-1")
        lib.rx_atomic_store(self.addr, value)
        lib.rx_atomic_store(self._sleepers, 0)

    @property
    def value(self) -> int:
        """The units available now."""
        return int(lib.rx_atomic_load(self.addr))

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take one unit, waiting for a release if none is left; False on timeout or if not blocking."""
        if lib.rx_atomic_dec_if_positive(self.addr):
            return True
        if not blocking:
            return False
        deadline = _deadline(timeout)
        lib.rx_spin_while_eq(self.addr, 0, SPINS, YIELDS)
        lib.rx_atomic_add(self._sleepers, 1)
        acquired = slept = False
        try:
            while not lib.rx_atomic_dec_if_positive(self.addr):
                slept = True
                if not _wait(self.addr, 0, deadline):
                    acquired = bool(lib.rx_atomic_dec_if_positive(self.addr))
                    return acquired
            acquired = True
            return True
        finally:
            others = lib.rx_atomic_add(self._sleepers, _MINUS_ONE) - 1
            if slept and not acquired and others > 0 and lib.rx_atomic_load(self.addr):
                # Leaving without a unit that a release may have woken us for (a timeout racing the
                # wake, or Ctrl-C after it): pass the wake on to another sleeper.
                _stubs.rx_futex_wake(self.addr, 1)

    def release(self, n: int = 1) -> None:
        """Give back `n` units, waking as many sleepers."""
        if not isinstance(n, int):
            raise TypeError(f"n must be an int, not {type(n).__name__}")
        if not 1 <= n <= 1 << 31:
            raise ValueError("n must be in 1..2**31")
        v = lib.rx_atomic_load(self.addr)
        while True:
            if v + n > 0xFFFFFFFF:
                raise ValueError(f"semaphore value {v} + {n} would overflow its 32-bit word")
            seen = lib.rx_atomic_cas(self.addr, v, v + n)
            if seen == v:
                break
            v = seen
        if lib.rx_atomic_load(self._sleepers):
            _stubs.rx_futex_wake(self.addr, min(n, RX_FUTEX_WAKE_ALL))

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class Event(_Shared):
    """An event flag in shared memory (like threading.Event, across processes).

    SIZE = 8 bytes: the futex word (+0) and a count of sleepers (+4). The word is the flag (bit 0)
    and a generation (bits 1-31) that every set() of a clear flag bumps, so a waiter also returns
    True for a set() followed by clear() while it waited (a pulse), as threading.Event's does:
    with the flag clear, the word only ever changes through a set()."""

    SIZE = 8

    def __init__(self, mapping: _HasAddress, offset: int) -> None:
        super().__init__(mapping, offset)
        self._sleepers = self.addr + 4

    @classmethod
    def create(cls, mapping: _HasAddress, offset: int) -> Event:
        """An Event at `offset` in `mapping`, initialised clear (once, in one process)."""
        e = cls(mapping, offset)
        e.init()
        return e

    def init(self) -> None:
        """Reset to clear, no sleepers (only while nobody uses it)."""
        lib.rx_atomic_store(self.addr, 0)
        lib.rx_atomic_store(self._sleepers, 0)

    def is_set(self) -> bool:
        """True if the flag is set."""
        return bool(lib.rx_atomic_load(self.addr) & 1)

    def set(self) -> None:
        """Set the flag, waking every waiter."""
        w = lib.rx_atomic_load(self.addr)
        while not w & 1:
            seen = lib.rx_atomic_cas(self.addr, w, ((w + 2) | 1) & _MINUS_ONE)
            if seen == w:
                if lib.rx_atomic_load(self._sleepers):
                    _stubs.rx_futex_wake(self.addr, RX_FUTEX_WAKE_ALL)
                return
            w = seen

    def clear(self) -> None:
        """Clear the flag; waiters sleep until the next set()."""
        w = lib.rx_atomic_load(self.addr)
        while w & 1:
            seen = lib.rx_atomic_cas(self.addr, w, w & ~1)
            if seen == w:
                return
            w = seen

    def wait(self, timeout: float | None = None) -> bool:
        """True once the flag is set, or was set at any moment since the call; False at the timeout."""
        start = lib.rx_atomic_load(self.addr)
        if start & 1:
            return True
        deadline = _deadline(timeout)
        if lib.rx_spin_while_eq(self.addr, start, SPINS, YIELDS) != start:
            return True
        lib.rx_atomic_add(self._sleepers, 1)
        try:
            while lib.rx_atomic_load(self.addr) == start:
                if not _wait(self.addr, start, deadline):
                    break
            return bool(lib.rx_atomic_load(self.addr) != start)
        finally:
            lib.rx_atomic_add(self._sleepers, _MINUS_ONE)


class Barrier(_Shared):
    """A reusable barrier for `parties` threads or processes (like threading.Barrier, without
    timeouts or abort). wait() returns the arrival index, 0 .. parties-1; the last to arrive
    starts the next generation, so the same barrier can be waited on again at once.

    SIZE = 12 bytes: the futex word (+0): arrivals in this generation (bits 0-15) | generation
    (bits 16-31, wrapping); parties (+4, 1..65535); sleepers (+8). An arrival counts itself with
    a CAS on the word, so it belongs to the generation it saw in the same atomic step (with the
    two in separate words, an arrival delayed between reading the generation and counting itself
    was counted in the next generation yet left with the previous one). The last arrival resets
    the count and bumps the generation in one CAS; the others wait until the generation moves.
    """

    SIZE = 12

    def __init__(self, mapping: _HasAddress, offset: int) -> None:
        super().__init__(mapping, offset)
        self._parties = self.addr + 4
        self._sleepers = self.addr + 8

    @classmethod
    def create(cls, mapping: _HasAddress, offset: int, parties: int) -> Barrier:
        """A Barrier at `offset` in `mapping` for `parties` waiters (once, in one process)."""
        b = cls(mapping, offset)
        b.init(parties)
        return b

    def init(self, parties: int) -> None:
        """Reset for `parties` waiters (1..65535), generation 0 (only while nobody waits)."""
        if not 1 <= parties <= _COUNT_MASK:
            raise ValueError("parties must be in 1..65535")
        lib.rx_atomic_store(self.addr, 0)
        lib.rx_atomic_store(self._sleepers, 0)
        lib.rx_atomic_store(self._parties, parties)

    @property
    def parties(self) -> int:
        """How many wait() calls complete a generation."""
        return int(lib.rx_atomic_load(self._parties))

    @property
    def generation(self) -> int:
        """Completed generations, modulo 65536."""
        return int(lib.rx_atomic_load(self.addr) >> 16)

    def wait(self) -> int:
        """Wait until `parties` callers arrived; returns this caller's arrival index (0 .. parties-1)."""
        parties = self.parties
        w = lib.rx_atomic_load(self.addr)
        while True:
            index = w & _COUNT_MASK
            last = index + 1 >= parties
            new = (((w >> 16) + 1) & _COUNT_MASK) << 16 if last else w + 1
            seen = lib.rx_atomic_cas(self.addr, w, new)
            if seen == w:
                break
            w = seen
        if last:
            if lib.rx_atomic_load(self._sleepers):
                _stubs.rx_futex_wake(self.addr, RX_FUTEX_WAKE_ALL)
            return int(index)
        # Later arrivals change the word too; only a new generation lets us through. It cannot move
        # twice (wrap back) while we wait: the next generation needs us.
        generation = w >> 16
        cur = new
        while True:
            seen = lib.rx_spin_while_eq(self.addr, cur, SPINS, YIELDS)
            if seen >> 16 != generation:
                return int(index)
            if seen == cur:
                break  # the spin budget ran out: sleep
            cur = seen
        lib.rx_atomic_add(self._sleepers, 1)
        try:
            while True:
                cur = lib.rx_atomic_load(self.addr)
                if cur >> 16 != generation:
                    return int(index)
                _wait(self.addr, cur, None)
        finally:
            lib.rx_atomic_add(self._sleepers, _MINUS_ONE)
