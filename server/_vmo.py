"""The VMO: a thin user-facing object over one page store (Zircon's VmObjectPaged role).

It owns the list of mappings of itself so it can keep every mapper coherent with its pages. Every
method that changes which pages exist or what backs them runs under `lock` and ends in `_locked`;
they may await shootdown acks while holding it, and nothing else may (see _coherence.py).

Invariants (hold whenever `lock` is free):
- a page that is committed is mapped, in any client, only from this VMO's store;
- a page some client has zero-mapped is marked in store.zero_mapped until those mappings go.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rxkernel.proto import (
    CONTROL_INVALIDATE,
    PAGE_SHIFT,
    PAGE_SIZE,
    RX_INFO_VMO_COMMIT_EAGER,
    RX_INFO_VMO_RESIZABLE,
    RX_INFO_VMO_TYPE_PAGED,
    RX_OBJ_TYPE_VMO,
    RX_VMO_COMMIT_EAGER,
    RX_VMO_RESIZABLE,
)

from ._coherence import coalesce, shootdown
from ._handles import KernelObject
from ._pagestore import PageStore
from ._stream import FastLock

if TYPE_CHECKING:
    from ._kernel import Kernel
    from ._mapping import Mapping
    from ._process import Process


class Vmo(KernelObject):
    obj_type = RX_OBJ_TYPE_VMO
    type_name = "vmo"

    def __init__(self, kernel: Kernel, koid: int, size: int, options: int, capacity: int) -> None:
        super().__init__(koid)
        self.kernel = kernel
        self.size = size  # bytes, a multiple of PAGE_SIZE; guarded by lock
        self.options = options
        self.store = PageStore(capacity, kernel.memory, f"rx-vmo-{koid}")
        self.mappings: list[Mapping] = []  # every live mapping of this VMO, in any process
        self.lock = FastLock()
        self.alive = True

    def __repr__(self) -> str:
        return f"<Vmo {self.koid} size={self.size:#x} committed={self.store.committed_pages}>"

    @property
    def size_pages(self) -> int:
        return self.size >> PAGE_SHIFT

    @property
    def committed_bytes(self) -> int:
        return self.store.committed_pages << PAGE_SHIFT

    @property
    def info_flags(self) -> int:
        flags = RX_INFO_VMO_TYPE_PAGED
        if self.options & RX_VMO_RESIZABLE:
            flags |= RX_INFO_VMO_RESIZABLE
        if self.options & RX_VMO_COMMIT_EAGER:
            flags |= RX_INFO_VMO_COMMIT_EAGER
        return flags

    def share_count(self) -> int:
        """How many processes map this VMO (Zircon's share_count)."""
        return len({m.process for m in self.mappings})

    def _on_zero_refs(self) -> None:
        # No handle, mapping or token names this VMO any more: no client can reach its pages.
        self.alive = False
        self.store.close()
        self.kernel.vmos.pop(self.koid, None)

    # -- coherence helpers ----------------------------------------------------------------------

    def _targets(
        self, start: int, end: int, pages: str | None, exclude: Mapping | None = None
    ) -> dict[Process, list[tuple[int, ...]]]:
        """Address ranges, per process, where mappings show pages [start, end); with `pages` =
        "committed" or "zero_mapped", only the runs of pages in that state."""
        runs: list[tuple[int, int]]
        if pages is None:
            runs = [(start, end)]
        else:
            pagemap = getattr(self.store, pages)
            runs = [(s, e) for s, e, v in pagemap.runs(start, end) if v]
        targets: dict[Process, list[tuple[int, int]]] = {}
        for m in self.mappings:
            if m is exclude:
                continue
            for s, e in runs:
                lo, hi = max(s, m.first_page), min(e, m.end_page)
                if lo < hi:
                    targets.setdefault(m.process, []).append((m.addr_of(lo), (hi - lo) << PAGE_SHIFT))
        return {p: coalesce(r) for p, r in targets.items()}

    async def commit_locked(self, start: int, end: int, exclude: Mapping | None = None, allocate: bool = False) -> int:
        """Commit pages [start, end) (all or nothing against the budget); first take away any
        zero-page mappings of them, except in `exclude`, whose fault reply replaces its own.
        With `allocate`, the host pages are made real too (eager commit)."""
        assert start <= end, (start, end)
        new = self.store.commit(start, end)
        if new and self.store.zero_mapped.count(start, end):
            # The shootdown is shielded (see _coherence.shootdown), so once pages count as
            # committed no zero-page mapping of them survives, even if the caller is cancelled.
            await shootdown(self._targets(start, end, "zero_mapped", exclude), CONTROL_INVALIDATE)
            self.store.zero_mapped.set_range(start, end, False)
        if allocate and new:
            await self.store.allocate(start, end)
        return new

    async def decommit_locked(self, start: int, end: int) -> int:
        """Free pages [start, end): every mapper loses them first, then the host memory goes."""
        if self.store.committed.count(start, end):
            await shootdown(self._targets(start, end, "committed"), CONTROL_INVALIDATE)
        return await self.store.decommit(start, end)

    async def zero_locked(self, offset: int, length: int) -> None:
        """Bytes [offset, offset+length) read as zero afterwards; whole pages are released."""
        end = offset + length
        first_whole = -(-offset // PAGE_SIZE)
        last_whole = end // PAGE_SIZE
        for lo, hi in ((offset, min(end, first_whole * PAGE_SIZE)), (max(offset, last_whole * PAGE_SIZE), end)):
            if lo < hi and self.store.committed.get(lo >> PAGE_SHIFT):
                self.store.zero(lo, hi - lo)
        if first_whole < last_whole:
            await self.decommit_locked(first_whole, last_whole)

    async def write_locked(self, offset: int, data: bytes) -> None:
        if data:
            await self.commit_locked(offset >> PAGE_SHIFT, (offset + len(data) + PAGE_SIZE - 1) >> PAGE_SHIFT)
            self.store.write(offset, data)

    async def set_size_locked(self, size: int) -> None:
        old_pages, new_pages = self.size_pages, size >> PAGE_SHIFT
        if new_pages < old_pages:
            # Every mapper loses pages past the new end, zero-mapped ones too: faults there must
            # now fail with RX_ERR_OUT_OF_RANGE instead of reading stale zeros.
            self.size = size
            await shootdown(self._targets(new_pages, old_pages, None), CONTROL_INVALIDATE)
            await self.store.decommit(new_pages, old_pages)
        else:
            self.size = size
