"""A page store: one sealed memfd holding one object's pages at offset page×4096 (DESIGN.md §3).

The store knows nothing about mappings or processes (Zircon's VmCowPages role): it tracks which
pages are committed, asks PhysicalMemory before committing, and frees host memory on decommit.
Its memfd is sized sparse at the store's capacity and sealed against shrink, grow and further seals,
so no client holding the fd can change its size or seal it against rxd's writes.

Two page maps, one byte per page each:
- committed:   pages rxd counts as memory (the page may not be allocated on the host yet: a client's
               touch allocates it; eager commits allocate at once);
- zero_mapped: pages some mapping was given the host zero page for. Committing such a page must
               first take those zero-page mappings away, or a reader would keep seeing zeros.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import queue
import threading

import trio

from rxkernel.native import lib
from rxkernel.proto import PAGE_SHIFT, RX_ERR_INTERNAL, RxError

from ._memory import PhysicalMemory
from ._pagemap import PageMap

_store_ids = itertools.count(1)
# fallocate granularity for eager commits run in a worker thread: big enough to be cheap, small
# enough that cancellation (rxd shutting down) is prompt.
_ALLOCATE_CHUNK = 64 << 20
# Freeing host memory costs about as much as allocating it (~0.1 s per GiB): punches larger than
# this run in a worker thread so the event loop never stalls on them.
_INLINE_PUNCH_BYTES = 2 << 20


class _Reaper:
    """Closes the memfds of dead stores on a thread of its own: the last close of a memfd frees
    all its pages, and doing that for gigabytes on the event loop would stall every client."""

    def __init__(self) -> None:
        self._fds: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def close(self, fd: int) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="rxd-reaper", daemon=True)
                self._thread.start()
        self._fds.put(fd)

    def _run(self) -> None:
        while True:
            os.close(self._fds.get())


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
        self.zero_mapped = PageMap()
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
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
        return self.committed.memory_bytes + self.zero_mapped.memory_bytes

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

    async def decommit(self, start: int, end: int) -> int:
        """Free pages [start, end): the caller has already taken every mapping of them away."""
        # zero_mapped stays as it is: clients may still map the zero page for the uncommitted
        # pages of the range (that is still right: they read as zero), and the next commit of
        # those pages must take those mappings away.
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
        """Free everything: the VMO is gone and no mapping of it is left anywhere."""
        if self.fd < 0:
            return
        self.memory.release(self.committed.count_set)
        self.committed = PageMap()
        self.zero_mapped = PageMap()
        _reaper.close(self.fd)
        self.fd = -1

