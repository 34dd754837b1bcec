"""A page store: one sealed memfd holding one object's pages at offset page×4096 (DESIGN.md §3).

The store knows nothing about mappings or copy-on-write (that is CowPages, above it): it tracks
which pages are committed, asks PhysicalMemory before committing, and frees host memory on decommit.
Its memfd is sized sparse at the store's capacity and sealed against shrink, grow and further seals,
so no client holding the fd can change its size or seal it against rxd's writes.

`committed` is one byte per page: pages rxd counts as memory (the page may not be allocated on the
host yet: a client's touch allocates it; eager commits allocate at once). Invariant: a page that is
not committed is a hole, so it reads as zero (decommit punches).

`holders` are the processes that were sent an fd of this store (on their control channel); when
the store dies they are told to close it.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import os
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from rxkernel.native import lib
from rxkernel.proto import PAGE_SHIFT, RX_ERR_INTERNAL, RX_ERR_NO_RESOURCES, RX_ERR_NOT_SUPPORTED, RxError

from ._memory import PhysicalMemory
from ._pagemap import PageMap

if TYPE_CHECKING:
    from ._process import Process

_store_ids = itertools.count(1)
# fallocate granularity for eager commits run in a worker thread: big enough to be cheap, small
# enough that cancellation (rxd shutting down) is prompt.
_ALLOCATE_CHUNK = 64 << 20
# Freeing host memory costs about as much as allocating it (~0.1 s per GiB): punches larger than
# this run in a worker thread so the event loop never stalls on them.
_INLINE_PUNCH_BYTES = 2 << 20


# Cache maintenance walks resident pages at roughly memory speed (see README): larger op ranges
# run in a worker thread, like large punches.
_INLINE_CACHE_OP_BYTES = 4 << 20


async def cache_op(runs: list[tuple[PageStore, int, int]], op: int) -> int:
    """Apply cache op `op` (RX_VMO_OP_CACHE_*) to store byte ranges (store, offset, length), on the
    pages the host holds only (rx_cache_op never allocates). Returns the pages walked."""

    def run(items: list[tuple[int, int, int]]) -> int:
        pages = 0
        for fd, offset, length in items:
            rc = lib.rx_cache_op(fd, offset, length, op)
            if rc == -errno.ENOSYS:
                raise RxError(RX_ERR_NOT_SUPPORTED, "cache operations are not implemented for this CPU architecture")
            _check(rc, "cache op")
            pages += rc
        return pages

    runs = [(store, offset, length) for store, offset, length in runs if length and store.fd >= 0]
    if sum(length for _, _, length in runs) <= _INLINE_CACHE_OP_BYTES:
        return run([(store.fd, offset, length) for store, offset, length in runs])
    # Our own fds: a store whose last reader goes away meanwhile is closed by the reaper.
    dups: dict[PageStore, int] = {}
    try:
        for store, _, _ in runs:
            if store not in dups:
                dups[store] = os.dup(store.fd)
        return await trio.to_thread.run_sync(run, [(dups[store], offset, length) for store, offset, length in runs])
    finally:
        for fd in dups.values():
            os.close(fd)


class _Reaper:
    """Frees host memory on a thread of its own, in order: punching or closing gigabytes on the
    event loop would stall every client. Accounting never waits for it: pages stop counting when
    rxd decides to free them, the host catches up here."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], object]) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="rxd-reaper", daemon=True)
                self._thread.start()
        self._jobs.put(job)

    def _run(self) -> None:
        while True:
            self._jobs.get()()


_reaper = _Reaper()


def _check(rc: int, what: str) -> None:
    if rc < 0:
        raise RxError(RX_ERR_INTERNAL, f"{what}: {os.strerror(-rc)}")


class PageStore:
    def __init__(self, capacity_bytes: int, memory: PhysicalMemory, name: str) -> None:
        self.store_id = next(_store_ids)
        self.capacity_pages = capacity_bytes >> PAGE_SHIFT
        self.memory = memory
        self.committed = PageMap()
        self.holders: set[Process] = set()
        try:
            self.fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE):
                raise RxError(RX_ERR_NO_RESOURCES, "rxd has no file descriptors left for another page store") from e
            raise
        try:
            os.ftruncate(self.fd, capacity_bytes)
            fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
        except BaseException:
            os.close(self.fd)
            raise

    @property
    def committed_pages(self) -> int:
        return self.committed.count_set

    @property
    def metadata_bytes(self) -> int:
        return self.committed.memory_bytes

    def reopen_readonly(self) -> int:
        """A new O_RDONLY fd on the same memfd: a writable MAP_SHARED of it fails in the host."""
        return os.open(f"/proc/self/fd/{self.fd}", os.O_RDONLY | os.O_CLOEXEC)

    def commit(self, start: int, end: int) -> int:
        """Count pages [start, end) as committed; returns how many were new. All or nothing."""
        new = (end - start) - self.committed.count(start, end)
        if new:
            self.memory.reserve(new)
            self.committed.set_range(start, end, True)
        return new

    async def allocate(self, start: int, end: int) -> None:
        """Make committed pages [start, end) real host memory now, off the event loop."""
        for off in range(start << PAGE_SHIFT, end << PAGE_SHIFT, _ALLOCATE_CHUNK):
            length = min(_ALLOCATE_CHUNK, (end << PAGE_SHIFT) - off)
            _check(await trio.to_thread.run_sync(lib.rx_allocate, self.fd, off, length), "fallocate")

    def decommit_nowait(self, start: int, end: int) -> int:
        """Free pages [start, end) now in the accounting; the reaper punches the holes. Only for
        pages no client can have mapped (so nothing can read them before the punch lands)."""
        freed = self.committed.set_range(start, end, False)
        if freed:
            self.memory.release(freed)
            fd, offset, length = self.fd, start << PAGE_SHIFT, (end - start) << PAGE_SHIFT
            if length <= _INLINE_PUNCH_BYTES:
                _check(lib.rx_punch_hole(fd, offset, length), "punch hole")
            else:
                dup = os.dup(fd)  # the store may close before the reaper gets here

                def punch() -> None:
                    lib.rx_punch_hole(dup, offset, length)
                    os.close(dup)

                _reaper.submit(punch)
        return freed

    def take_pages(self, other: PageStore, runs: list[tuple[int, int]], delta: int = 0) -> None:
        """Copy `other`'s committed pages in `runs` (its page numbers) to page + delta here and
        move their accounting with them (the budget sees no difference); `other` forgets them
        without punching, since whoever empties it next closes or punches it. Targets must be holes."""
        for s, e in runs:
            for rs, re, v in other.committed.runs(s, e):
                if v:
                    n = re - rs
                    _check(lib.rx_copy_range(self.fd, (rs + delta) << PAGE_SHIFT, other.fd, rs << PAGE_SHIFT, n << PAGE_SHIFT), "copy")
                    assert self.committed.set_range(rs + delta, re + delta, True) == n
                    other.committed.set_range(rs, re, False)

    async def decommit(self, start: int, end: int) -> int:
        """Free pages [start, end): the caller has already taken every mapping of them away."""
        freed = self.committed.set_range(start, end, False)
        if freed:
            self.memory.release(freed)
            offset, length = start << PAGE_SHIFT, (end - start) << PAGE_SHIFT
            if length <= _INLINE_PUNCH_BYTES:
                rc = lib.rx_punch_hole(self.fd, offset, length)
            else:
                # Shielded: the pages are already uncounted, so the punch must happen.
                with trio.CancelScope(shield=True):
                    rc = await trio.to_thread.run_sync(lib.rx_punch_hole, self.fd, offset, length)
            _check(rc, "punch hole")
        return freed

    def read(self, offset: int, length: int) -> bytes:
        # pread of a hole returns zeros without allocating (unlike a read through a mapping).
        data = os.pread(self.fd, length, offset)
        return data + bytes(length - len(data)) if len(data) < length else data

    def write(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, offset)
            view, offset = view[n:], offset + n

    def zero(self, offset: int, length: int) -> None:
        _check(lib.rx_zero_range(self.fd, offset, length), "zero range")

    def close(self) -> None:
        """Free everything: no node uses this store and no mapping of it is left anywhere."""
        if self.fd < 0:
            return
        self.memory.release(self.committed.count_set)
        self.committed = PageMap()
        fd, size = self.fd, self.capacity_pages << PAGE_SHIFT
        # Clients that were sent the fd may still hold it (a misbehaving one could keep it):
        # punch everything first so the host memory goes regardless.
        punch = bool(self.holders)

        def free() -> None:
            if punch:
                lib.rx_punch_hole(fd, 0, size)
            os.close(fd)

        _reaper.submit(free)
        self.fd = -1
        for process in list(self.holders):
            process.forget_store(self)

