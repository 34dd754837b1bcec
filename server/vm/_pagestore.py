"""A page store: one sealed memfd holding one object's pages at offset page×4096 (ARCHITECTURE.md).

This is where a page is copied, zeroed, allocated and punched (through native/'s store I/O). The
store knows nothing about mappings or copy-on-write (CowPages, above it, does): it tracks which
pages are committed, asks PhysicalMemory before it commits, and frees host memory on decommit.
Its memfd is sized sparse at the store's capacity and sealed against shrink, grow and further
seals, so no client holding the fd can change its size or seal it against rxd's writes.

`committed` is one byte per page: pages rxd counts as memory (the page may not be allocated on the
host yet: a client's touch allocates it; eager commits allocate at once). Invariant: a page that is
not committed is a hole, so it reads as zero (decommit punches).

`holders` are registered observers (the processes that were sent an fd of this store on their
control channel): when the store dies each is told, so it can tell its client to close the fd.
Guarded by: the tree lock of the node that owns the store, for `committed` changes that await
(decommit); everything else runs without awaiting, on rxd's one thread.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import os
import queue
import threading
from collections.abc import Callable
from typing import Protocol

import trio

from rxkernel.native import ffi, lib
from rxkernel.proto import PAGE_SHIFT, RX_ERR_INTERNAL, RX_ERR_NO_RESOURCES, RxError

from ._charge import ChargeGroup, ChargeMap
from ._pagemap import PageMap
from ._pmm import PhysicalMemory
from ._runs import Runs

_store_ids = itertools.count(1)
# fallocate granularity for eager commits run in a worker thread: big enough to be cheap, small
# enough that cancellation (rxd shutting down) is prompt.
_ALLOCATE_CHUNK = 64 << 20
# Freeing host memory costs about as much as allocating it (~0.1 s per GiB): punches larger than
# this run in a worker thread so the event loop never stalls on them.
_INLINE_PUNCH_BYTES = 2 << 20


class StoreHolder(Protocol):
    """Someone holding an fd of a store (a process): told when the store dies."""

    def forget_store(self, store: PageStore) -> None: ...


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


def check_rc(rc: int, what: str) -> None:
    """A native store call's -errno as an internal error (rxd's own fds failing is rxd's fault)."""
    if rc < 0:
        raise RxError(RX_ERR_INTERNAL, f"{what}: {os.strerror(-rc)}")


class PageStore:
    def __init__(self, capacity_bytes: int, memory: PhysicalMemory, name: str) -> None:
        self.store_id = next(_store_ids)
        self.capacity_pages = capacity_bytes >> PAGE_SHIFT
        self.memory = memory
        self.committed = PageMap()
        self.charges = ChargeMap()  # who each committed page is charged to
        self.ff = ffi.new("struct rx_ff_store *")  # what the fault fast path reads
        self.ff.committed, self.ff.charges, self.ff.store_id = self.committed.handle, self.charges.ff, self.store_id
        self.holders: set[StoreHolder] = set()
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
        return self.committed.memory_bytes + self.charges.memory_bytes

    def reopen_readonly(self) -> int:
        """A new O_RDONLY fd on the same memfd: a writable MAP_SHARED of it fails in the host."""
        return os.open(f"/proc/self/fd/{self.fd}", os.O_RDONLY | os.O_CLOEXEC)

    def commit(self, runs: Runs, group: ChargeGroup, covered: int = 0) -> int:
        """Count the pages of `runs` (holes, all of them) as committed and charged to `group`: all
        or nothing against the limits and the budget (RX_ERR_NO_MEMORY, nothing changed);
        `covered` of them fill `group`'s reservation (PhysicalMemory.commit). Returns how many."""
        new = sum(e - s for s, e in runs)
        if not covered:
            group = group.living()  # a process still finishing a call after its job went
        self.memory.commit(new, group, covered)
        for s, e in runs:
            self.committed.set_range(s, e, True)
            holder = self.charges.assign(s, e, group)
            if holder is not group:  # this store's table of groups is full (see _charge.py)
                group.hand_up(e - s, holder)
        return new

    def recharge(self, start: int, end: int, group: ChargeGroup) -> None:
        """Committed pages [start, end) are charged to `group` from now on (a moved page keeps
        its charge). Nothing is committed or freed, so no limit is checked."""
        group = group.living()
        for old, pages in self.charges.clear(start, end).items():
            old.remove(pages)
        holder = self.charges.assign(start, end, group)
        holder.add(end - start, count_events=False)

    def _uncharge(self, start: int, end: int, freed: int) -> None:
        """Pages [start, end) were freed (`freed` of them were committed): take their charges back."""
        charged = self.charges.clear(start, end)
        assert sum(charged.values()) == freed, (charged, freed)
        for group, pages in charged.items():
            self.memory.uncommit(pages, group)

    def copy_from(self, start: int, end: int, src: PageStore, src_start: int) -> None:
        """Copy src's pages [src_start, …) over this store's pages [start, end) (a copy-on-write
        split, once the pages are committed here)."""
        rc = lib.rx_copy_range(self.fd, start << PAGE_SHIFT, src.fd, src_start << PAGE_SHIFT, (end - start) << PAGE_SHIFT)
        check_rc(rc, "copy-on-write copy")

    async def allocate(self, start: int, end: int) -> None:
        """Make committed pages [start, end) real host memory now, off the event loop."""
        for off in range(start << PAGE_SHIFT, end << PAGE_SHIFT, _ALLOCATE_CHUNK):
            length = min(_ALLOCATE_CHUNK, (end << PAGE_SHIFT) - off)
            check_rc(await trio.to_thread.run_sync(lib.rx_allocate, self.fd, off, length), "fallocate")

    def decommit_nowait(self, start: int, end: int) -> int:
        """Free pages [start, end) now in the accounting; the reaper punches the holes. Only for
        pages no client can have mapped (so nothing can read them before the punch lands)."""
        freed = self.committed.set_range(start, end, False)
        if freed:
            self._uncharge(start, end, freed)
            fd, offset, length = self.fd, start << PAGE_SHIFT, (end - start) << PAGE_SHIFT
            if length <= _INLINE_PUNCH_BYTES:
                check_rc(lib.rx_punch_hole(fd, offset, length), "punch hole")
            else:
                dup = os.dup(fd)  # the store may close before the reaper gets here

                def punch() -> None:
                    lib.rx_punch_hole(dup, offset, length)
                    os.close(dup)

                _reaper.submit(punch)
        return freed

    def take_pages(self, other: PageStore, runs: Runs, delta: int = 0) -> None:
        """Copy `other`'s committed pages in `runs` (its page numbers) to page + delta here and
        move their accounting with them (the budget sees no difference); `other` forgets them
        without punching, since whoever empties it next closes or punches it. Targets must be holes."""
        for s, e in runs:
            for rs, re, v in other.committed.runs(s, e):
                if v:
                    n = re - rs
                    rc = lib.rx_copy_range(self.fd, (rs + delta) << PAGE_SHIFT, other.fd, rs << PAGE_SHIFT, n << PAGE_SHIFT)
                    check_rc(rc, "copy")
                    assert self.committed.set_range(rs + delta, re + delta, True) == n
                    other.committed.set_range(rs, re, False)
                    for cs, ce, group in other.charges.runs_by_group(rs, re):  # the charges move too
                        held = self.charges.assign(cs + delta, ce + delta, group)
                        if held is not group:
                            group.hand_up(ce - cs, held)
                    other.charges.clear(rs, re)

    async def decommit(self, start: int, end: int) -> int:
        """Free pages [start, end): the caller has already taken every mapping of them away."""
        freed = self.committed.set_range(start, end, False)
        if freed:
            self._uncharge(start, end, freed)
            offset, length = start << PAGE_SHIFT, (end - start) << PAGE_SHIFT
            if length <= _INLINE_PUNCH_BYTES:
                rc = lib.rx_punch_hole(self.fd, offset, length)
            else:
                # Shielded: the pages are already uncounted, so the punch must happen.
                with trio.CancelScope(shield=True):
                    rc = await trio.to_thread.run_sync(lib.rx_punch_hole, self.fd, offset, length)
            check_rc(rc, "punch hole")
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

    def close(self) -> None:
        """Free everything: no node uses this store and no mapping of it is left anywhere."""
        if self.fd < 0:
            return
        charged = self.charges.totals()
        assert sum(charged.values()) == self.committed.count_set, (charged, self.committed.count_set)
        for group, pages in charged.items():
            self.memory.uncommit(pages, group)
        self.committed = PageMap()
        self.charges = ChargeMap()
        self.ff.committed, self.ff.charges = self.committed.handle, self.charges.ff
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
        for holder in list(self.holders):
            holder.forget_store(self)
