"""The VMO: a thin user-facing object standing on a copy-on-write node (Zircon's VmObjectPaged).

A VMO is a window onto a CowPages node: page i of the VMO is node page i + node_offset (non-zero
only for slices). It owns the list of its mappings so the node can keep every mapper coherent.
Every method that changes which pages exist or what backs them runs under `lock` (the tree's) and
ends in `_locked` (checked under RXD_CHECK_LOCKS); they may await shootdown acks while holding it,
and nothing else may. See _cowpages.py for the invariants; children are made in _clone.py, and
what a VMO leaves behind is freed in _collapse.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rxkernel.native import ffi
from rxkernel.proto import (
    CONTROL_INVALIDATE,
    PAGE_SHIFT,
    PAGE_SIZE,
    RX_ERR_BAD_STATE,
    RX_INFO_VMO_COMMIT_EAGER,
    RX_INFO_VMO_COMMIT_EXPLICIT,
    RX_INFO_VMO_IS_COW_CLONE,
    RX_INFO_VMO_IS_SLICE,
    RX_INFO_VMO_RESIZABLE,
    RX_INFO_VMO_TYPE_PAGED,
    RX_OBJ_TYPE_VMO,
    RX_VMO_COMMIT_EAGER,
    RX_VMO_RESIZABLE,
    RxError,
)

from ..base import FastLock, KernelObject, MirroredBool, requires_lock
from ._cacheop import cache_op
from ._charge import ChargeGroup
from ._collapse import free_unseen_above, release_node
from ._cowpages import CowPages, CowTree, clear_marks
from ._pagestore import PageStore
from ._runs import coalesce

if TYPE_CHECKING:
    from ._context import VmContext
    from ._mapper import Mapper
    from ._mapping import Mapping

# What kind of child a VMO is (for info and for the rules that differ).
KIND_ROOT, KIND_SNAPSHOT, KIND_AT_LEAST_ON_WRITE, KIND_SLICE = 0, 1, 2, 3


def _tree_lock(vmo: Vmo, *_: object) -> FastLock:
    return vmo.lock


class Reservation:
    """RX_OVERCOMMIT_NEVER: a VMO's whole size promised at creation (Linux's Committed_AS). What
    is not committed yet (`outstanding`: its size minus the pages its own store holds) counts as
    taken in PhysicalMemory and in the group's limits, so the VMO's own commits never fail; they
    are charged to `group`, the job that reserved. Guarded by the tree lock."""

    __slots__ = ("group", "pages", "outstanding")

    def __init__(self, group: ChargeGroup, pages: int, outstanding: int) -> None:
        self.group, self.pages, self.outstanding = group, pages, outstanding


class Vmo(KernelObject):
    obj_type = RX_OBJ_TYPE_VMO
    type_name = "VMO"
    # RX_VMO_COMMIT_EXPLICIT (a slice of such a VMO too): faults never commit, only syscalls do.
    commit_explicit = MirroredBool("commit_explicit")

    def __init__(
        self, koid: int, size: int, options: int, node: CowPages, node_offset: int = 0,
        parent: Vmo | None = None, kind: int = KIND_ROOT,
    ) -> None:
        super().__init__(koid)
        # What the fault fast path reads (struct rx_ff_vmo): size and commit_explicit are kept
        # there and read through properties.
        self.ff = ffi.new("struct rx_ff_vmo *")
        self.ff.node, self.ff.node_offset = node.ff, node_offset
        self.size = size  # bytes, a multiple of PAGE_SIZE; guarded by lock
        self.options = options
        self.node = node  # never changes (snapshots and collapses change the node's store instead)
        self.node_offset = node_offset  # pages
        self.kind = kind
        self.commit_explicit = False
        self.reservation: Reservation | None = None  # RX_OVERCOMMIT_NEVER (never on a slice)
        self.parent_koid = parent.koid if parent is not None else 0
        self.parent: Vmo | None = parent  # while it lives: counts this one in num_children
        self.num_children = 0
        if parent is not None:
            parent.num_children += 1
        node.fronts.append(self)
        # Every live mapping of this VMO, in any process. Changed by map, unmap and protect's
        # splits without the lock (they never await in between); readers under the lock re-check
        # a mapping's `alive` after each await.
        self.mappings: list[Mapping] = []
        self.alive = True  # guarded by nothing: set once, when the last reference goes
        node.tree.vm.vmos[koid] = self

    def __repr__(self) -> str:
        return f"<Vmo {self.koid} size={self.size:#x} node={self.node!r}>"

    @property
    def lock(self) -> FastLock:
        return self.node.tree.lock

    @property
    def vm(self) -> VmContext:
        return self.node.tree.vm

    @property
    def store(self) -> PageStore:
        return self.node.store

    @property
    def size(self) -> int:
        return self._size

    @size.setter
    def size(self, size: int) -> None:
        self._size = size
        self.ff.size_pages = size >> PAGE_SHIFT

    @property
    def size_pages(self) -> int:
        return self.size >> PAGE_SHIFT

    @property
    def committed_bytes(self) -> int:
        """Pages this VMO holds itself (a slice holds none: they are its parent's)."""
        if self.kind == KIND_SLICE:
            return 0
        return self.node.store.committed.count(0, self.size_pages) << PAGE_SHIFT

    @property
    def info_flags(self) -> int:
        flags = RX_INFO_VMO_TYPE_PAGED
        if self.options & RX_VMO_RESIZABLE:
            flags |= RX_INFO_VMO_RESIZABLE
        if self.options & RX_VMO_COMMIT_EAGER:
            flags |= RX_INFO_VMO_COMMIT_EAGER
        if self.commit_explicit:
            flags |= RX_INFO_VMO_COMMIT_EXPLICIT
        if self.kind in (KIND_SNAPSHOT, KIND_AT_LEAST_ON_WRITE):
            flags |= RX_INFO_VMO_IS_COW_CLONE
        if self.kind == KIND_SLICE:
            flags |= RX_INFO_VMO_IS_SLICE
        return flags

    def share_count(self) -> int:
        """How many processes map this VMO (Zircon's share_count)."""
        return len({m.process for m in self.mappings})

    def reads_through_a_writer(self) -> bool:
        """Some ancestor node still has VMOs writing it (this VMO is an at-least-on-write child or
        a descendant of one): what this VMO reads can still change, so it has no point-in-time
        snapshot."""
        return any(a.fronts for a in self.node.ancestors())

    def reachable_stores(self) -> list[PageStore]:
        """Every store a fault through this VMO may name: its node's and its ancestors'."""
        return [self.node.store, *(a.store for a in self.node.ancestors())]

    # -- reservations (RX_OVERCOMMIT_NEVER) ----------------------------------------------------------

    def own_pages(self) -> int:
        """Pages of this VMO its own store holds (what a reservation has been filled with)."""
        return self.node.store.committed.count(self.node_offset, self.node_offset + self.size_pages)

    def reserve(self, group: ChargeGroup, extra: int = 0) -> None:
        """Promise this VMO its whole size, charged to `group`: RX_ERR_NO_MEMORY if that (and
        `extra` pages more, checked together: a snapshot's parent) does not fit."""
        assert self.reservation is None and self.kind != KIND_SLICE
        outstanding = max(0, self.size_pages - self.own_pages())
        self.vm.memory.reserve(outstanding + extra, group)
        self.vm.memory.unreserve(extra, group)
        self.reservation = Reservation(group, self.size_pages, outstanding)
        self.ff.reserving = 1  # its commits fill the reservation: the trio side makes them

    def growth_if_snapshotted(self) -> int:
        """How much this VMO's reservation would grow if a snapshot took its pages to a hidden
        node (they would have to be copied back on write)."""
        return min(self.own_pages(), self.reservation.pages) if self.reservation is not None else 0

    def refresh_reservation(self) -> None:
        """Bring `outstanding` back in step after the own pages changed outside a commit (a
        decommit, a snapshot, a collapse, a resize). Only a snapshot or a resize can make it grow,
        and both checked that it fits first."""
        res = self.reservation
        if res is None:
            return
        res.pages = self.size_pages if self.alive else 0
        outstanding = max(0, res.pages - self.own_pages()) if self.alive else 0
        delta, res.outstanding = outstanding - res.outstanding, outstanding
        memory = self.vm.memory
        if delta > 0:
            memory.reserved_pages += delta
            res.group.add_reserved(delta)
        elif delta < 0:
            memory.unreserve(-delta, res.group)

    def _on_zero_refs(self) -> None:
        # No handle, mapping or token names this VMO any more: no client can reach it.
        self.alive = False
        self.refresh_reservation()  # (alive is False: the promise ends)
        self.vm.vmos.pop(self.koid, None)
        if self.parent is not None:
            self.parent.num_children -= 1
            self.parent = None
        node = self.node
        node.fronts.remove(self)
        release_node(node)

    # -- reading and committing ------------------------------------------------------------------

    @requires_lock(_tree_lock)
    def read_locked(self, offset: int, length: int) -> bytes:
        out = bytearray(length)
        base = self.node_offset << PAGE_SHIFT
        first, last = (offset >> PAGE_SHIFT) + self.node_offset, ((offset + length + PAGE_SIZE - 1) >> PAGE_SHIFT) + self.node_offset
        for s, e, owner, os_ in self.node.resolve(first, last):
            if owner is None:
                continue
            lo, hi = max(s << PAGE_SHIFT, offset + base), min(e << PAGE_SHIFT, offset + length + base)
            src = (os_ << PAGE_SHIFT) + lo - (s << PAGE_SHIFT)
            out[lo - offset - base : hi - offset - base] = owner.store.read(src, hi - lo)
        return bytes(out)

    @requires_lock(_tree_lock)
    async def cache_op_locked(self, offset: int, length: int, op: int) -> int:
        """Zircon's VmObjectPaged::CacheOp: cache op `op` (RX_VMO_OP_CACHE_*) on bytes
        [offset, offset+length) of every committed page this VMO reads, wherever it lives (its own
        store, an ancestor's for a clone, the parent's for a slice). Pages that read as zero are
        skipped and nothing is committed. Counts and returns the resident pages walked."""
        base = self.node_offset << PAGE_SHIFT
        first = (offset >> PAGE_SHIFT) + self.node_offset
        last = ((offset + length + PAGE_SIZE - 1) >> PAGE_SHIFT) + self.node_offset
        runs = []
        for s, e, owner, os_ in self.node.resolve(first, last):
            if owner is not None:
                lo, hi = max(s << PAGE_SHIFT, offset + base), min(e << PAGE_SHIFT, offset + length + base)
                runs.append((owner.store, (os_ << PAGE_SHIFT) + lo - (s << PAGE_SHIFT), hi - lo))
        pages = await cache_op(runs, op) if runs else 0
        self.vm.memory.counters.cache_op_pages += pages
        return pages

    @requires_lock(_tree_lock)
    async def commit_locked(
        self, start: int, end: int, group: ChargeGroup, exclude: Mapping | None = None, allocate: bool = False
    ) -> tuple[int, int]:
        """Make VMO pages [start, end) this VMO's own (all or nothing against the budget): pages
        it reads from an ancestor are copied (a copy-on-write split), pages that read as zero
        are committed fresh; they are charged to `group` (the job of the process whose fault or
        syscall this is). Mappings that showed the old content anywhere are taken away first,
        except `exclude`, whose fault reply replaces its own. Returns (new pages, copied)."""
        assert start <= end, (start, end)
        node, off = self.node, self.node_offset
        missing = [(s, e, owner, os_) for s, e, owner, os_ in node.resolve(start + off, end + off) if owner is not node]
        new = sum(e - s for s, e, _, _ in missing)
        if not new:
            return 0, 0
        store = node.store
        res = self.reservation
        if res is not None and res.outstanding:
            # Pages this VMO was promised: charged to the job that reserved them, never refused.
            covered = min(new, res.outstanding)
            store.commit([(s, e) for s, e, _, _ in missing], res.group, covered)
            res.outstanding -= covered
        else:
            store.commit([(s, e) for s, e, _, _ in missing], group)  # all or nothing against limits and budget
        copied = 0
        try:
            for s, e, owner, os_ in missing:
                if owner is not None:
                    store.copy_from(s, e, owner.store, os_)
                    copied += e - s
        except BaseException:
            # All or nothing here too: no client maps these pages from this store yet, so they
            # can go back to being holes, and the node reads what it read before.
            for s, e, _, _ in missing:
                store.decommit_nowait(s, e)
            self.refresh_reservation()
            raise
        for s, e, _, _ in missing:
            node.zeroed.set_range(s, e, False)
        self.vm.memory.counters.cow_pages_copied += copied
        # Shielded (see shootdown): once pages count as this node's, no stale view of them survives.
        targets, marks = node.change_targets([(s, e) for s, e, _, _ in missing], exclude)
        if exclude is not None:
            # `exclude` keeps its zero pages until its reply replaces them (the zero page is
            # private and never freed), but not an ancestor's page: that page can be freed
            # (punched) the moment its last other reader splits too, before our reply reaches
            # the client, and other threads there would read zeros meanwhile.
            mine = [
                (exclude.addr_of(lo - off), (hi - lo) << PAGE_SHIFT)
                for s, e, owner, _ in missing if owner is not None
                for lo, hi in node.shadowed.runs_of(max(s, exclude.first_page + off), min(e, exclude.end_page + off))
                if lo < hi
            ]
            if mine:
                targets[exclude.process] = coalesce([*targets.get(exclude.process, []), *mine])  # type: ignore[list-item]
        await self.vm.coherence.shootdown(targets, CONTROL_INVALIDATE)
        clear_marks(marks)
        for s, e, owner, os_ in missing:
            if owner is not None:
                # The last sharer's copy: the page moves, and keeps its charge (a page nobody
                # else reads is reused, as a Linux write fault reuses a page only it maps, and
                # as a collapse would have moved it): the same job pays whatever the timing.
                # A visible owner counts too: a slice's parent that closed keeps only the pages
                # in its slices' windows, and this one may have been the last reader of another.
                moved = [(cs - os_ + s, ce - os_ + s, g) for us, ue in owner.unseen_committed(os_, os_ + (e - s))
                         for cs, ce, g in owner.store.charges.runs_by_group(us, ue)]
                owner.free_unseen(os_, os_ + (e - s))
                for ms, me, g in moved:
                    store.recharge(ms, me, g)
        if allocate and store.fd >= 0:  # (the VMO may have died while we awaited acks)
            for s, e, owner, _ in missing:
                if owner is None:
                    await store.allocate(s, e)
        return new, copied

    @requires_lock(_tree_lock)
    async def release_locked(self, start: int, end: int) -> None:
        """VMO pages [start, end) read as zero afterwards and hold no memory (DECOMMIT, and ZERO
        of whole pages). A clone gets zero markers so it no longer reads through to its parent."""
        node, off = self.node, self.node_offset
        s, e = start + off, end + off
        clone = node.parent is not None and s < node.parent_limit
        if not clone and not node.store.committed.count(s, e):
            return
        targets, marks = node.change_targets([(s, e)], own=True)
        await self.vm.coherence.shootdown(targets, CONTROL_INVALIDATE)
        clear_marks(marks)
        through = node.holes(s, e)  # what it read from its ancestors until now
        if clone:
            node.zeroed.set_range(s, min(e, node.parent_limit), True)
        await node.store.decommit(s, e)
        free_unseen_above(node, s, e, through)
        for vmo in node.fronts:  # (a slice's decommit frees its parent's own pages)
            vmo.refresh_reservation()

    @requires_lock(_tree_lock)
    async def zero_locked(self, offset: int, length: int, group: ChargeGroup) -> None:
        """Bytes [offset, offset+length) read as zero afterwards; whole pages are released."""
        end = offset + length
        first_whole = -(-offset // PAGE_SIZE)
        last_whole = end // PAGE_SIZE
        for lo, hi in ((offset, min(end, first_whole * PAGE_SIZE)), (max(offset, last_whole * PAGE_SIZE), end)):
            if lo < hi:
                page = (lo >> PAGE_SHIFT) + self.node_offset
                if self.node.resolve(page, page + 1)[0][2] is not None:  # something to zero there
                    await self.write_locked(lo, bytes(hi - lo), group)
        if first_whole < last_whole:
            await self.release_locked(first_whole, last_whole)

    @requires_lock(_tree_lock)
    async def write_locked(self, offset: int, data: bytes, group: ChargeGroup) -> int:
        """Write `data` at byte `offset`, committing the pages it touches; returns how many it committed."""
        if not data:
            return 0
        new, _ = await self.commit_locked(offset >> PAGE_SHIFT, (offset + len(data) + PAGE_SIZE - 1) >> PAGE_SHIFT, group)
        if not self.alive:  # the caller died (and its handle with it) while we awaited acks
            raise RxError(RX_ERR_BAD_STATE, "the VMO was closed during the write")
        self.node.store.write(offset + (self.node_offset << PAGE_SHIFT), data)
        return new

    @requires_lock(_tree_lock)
    async def set_size_locked(self, size: int) -> None:
        node = self.node  # resizable VMOs are never slices: node_offset is 0
        old_pages, new_pages = self.size_pages, size >> PAGE_SHIFT
        self.size = size
        if new_pages >= old_pages:
            return
        # Every mapper loses pages past the new end, zero-mapped ones too: faults there must now
        # fail with RX_ERR_OUT_OF_RANGE instead of reading stale zeros. Children reading through
        # lose them as well.
        targets, marks = node.change_targets([(new_pages, old_pages)], own=True)
        everything: dict[Mapper, list[tuple[int, int]]] = {}
        node.add_targets(everything, [(new_pages, old_pages)], None)
        for p, r in everything.items():
            targets.setdefault(p, []).extend(r)
        await self.vm.coherence.shootdown(targets, CONTROL_INVALIDATE)
        clear_marks(marks)
        node.shadowed.set_range(new_pages, old_pages, False)
        await node.store.decommit(new_pages, old_pages)
        node.zeroed.set_range(new_pages, old_pages, False)
        through = node.holes(new_pages, old_pages)  # (before the limit below hides them)
        if node.parent is not None and node.parent_limit > new_pages:
            node.parent_limit = new_pages
        for c in node.children:
            c.parent_limit = max(0, min(c.parent_limit, new_pages - c.parent_offset))
        free_unseen_above(node, new_pages, old_pages, through)


def new_root_vmo(vm: VmContext, koid: int, size: int, options: int, capacity: int) -> Vmo:
    node = CowPages(CowTree(vm), PageStore(capacity, vm.memory, f"rx-vmo-{koid}"))
    return Vmo(koid, size, options, node)
