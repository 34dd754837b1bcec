"""The VMO: a thin user-facing object standing on a copy-on-write node (Zircon's VmObjectPaged).

A VMO is a window onto a CowPages node: page i of the VMO is node page i + node_offset (non-zero
only for slices). It owns the list of its mappings so the node can keep every mapper coherent.
Every method that changes which pages exist or what backs them runs under `lock` (the tree's) and
ends in `_locked`; they may await shootdown acks while holding it, and nothing else may.
See _cowpages.py for the invariants.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rxkernel.proto import (
    CONTROL_INVALIDATE,
    CONTROL_PROTECT,
    PAGE_SHIFT,
    PAGE_SIZE,
    RX_ERR_BAD_STATE,
    RX_ERR_INTERNAL,
    RX_ERR_NOT_SUPPORTED,
    RX_INFO_VMO_COMMIT_EAGER,
    RX_INFO_VMO_IS_COW_CLONE,
    RX_INFO_VMO_IS_SLICE,
    RX_INFO_VMO_RESIZABLE,
    RX_INFO_VMO_TYPE_PAGED,
    RX_OBJ_TYPE_VMO,
    RX_VMO_COMMIT_EAGER,
    RX_VMO_RESIZABLE,
    RxError,
)
from rxkernel.native import lib

from ._coherence import coalesce, shootdown
from ._cowpages import CowPages, CowTree, Runs, clear_marks, merge_runs, set_runs
from ._handles import KernelObject
from ._pagestore import PageStore, cache_op
from ._stream import FastLock

if TYPE_CHECKING:
    from ._kernel import Kernel
    from ._mapping import Mapping
    from ._process import Process

_PROT_READ = 1

# What kind of child a VMO is (for info and for the rules that differ).
KIND_ROOT, KIND_SNAPSHOT, KIND_AT_LEAST_ON_WRITE, KIND_SLICE = 0, 1, 2, 3


class Vmo(KernelObject):
    obj_type = RX_OBJ_TYPE_VMO
    type_name = "vmo"

    def __init__(
        self, kernel: Kernel, koid: int, size: int, options: int, node: CowPages, node_offset: int = 0,
        parent: Vmo | None = None, kind: int = KIND_ROOT,
    ) -> None:
        super().__init__(koid)
        self.kernel = kernel
        self.size = size  # bytes, a multiple of PAGE_SIZE; guarded by lock
        self.options = options
        self.node = node
        self.node_offset = node_offset  # pages
        self.kind = kind
        self.parent_koid = parent.koid if parent is not None else 0
        self.parent: Vmo | None = parent  # while it lives: counts this one in num_children
        self.num_children = 0
        if parent is not None:
            parent.num_children += 1
        node.fronts.append(self)
        self.mappings: list[Mapping] = []  # every live mapping of this VMO, in any process
        self.alive = True

    def __repr__(self) -> str:
        return f"<Vmo {self.koid} size={self.size:#x} node={self.node!r}>"

    @property
    def lock(self) -> FastLock:
        return self.node.tree.lock

    @property
    def store(self) -> PageStore:
        return self.node.store

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
        if self.kind in (KIND_SNAPSHOT, KIND_AT_LEAST_ON_WRITE):
            flags |= RX_INFO_VMO_IS_COW_CLONE
        if self.kind == KIND_SLICE:
            flags |= RX_INFO_VMO_IS_SLICE
        return flags

    def share_count(self) -> int:
        """How many processes map this VMO (Zircon's share_count)."""
        return len({m.process for m in self.mappings})

    def _on_zero_refs(self) -> None:
        # No handle, mapping or token names this VMO any more: no client can reach it.
        self.alive = False
        self.kernel.vmos.pop(self.koid, None)
        if self.parent is not None:
            self.parent.num_children -= 1
            self.parent = None
        node = self.node
        node.fronts.remove(self)
        release_node(node)

    # -- reading and committing ------------------------------------------------------------------

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
        self.store.memory.counters.cache_op_pages += pages
        return pages

    async def commit_locked(self, start: int, end: int, exclude: Mapping | None = None, allocate: bool = False) -> tuple[int, int]:
        """Make VMO pages [start, end) this VMO's own (all or nothing against the budget): pages
        it reads from an ancestor are copied (a copy-on-write split), pages that read as zero
        are committed fresh. Mappings that showed the old content anywhere are taken away first,
        except `exclude`, whose fault reply replaces its own. Returns (new pages, copied)."""
        assert start <= end, (start, end)
        node, off = self.node, self.node_offset
        missing = [(s, e, owner, os_) for s, e, owner, os_ in node.resolve(start + off, end + off) if owner is not node]
        new = sum(e - s for s, e, _, _ in missing)
        if not new:
            return 0, 0
        store = node.store
        store.memory.reserve(new)
        copied = 0
        for s, e, owner, os_ in missing:
            store.committed.set_range(s, e, True)
            node.zeroed.set_range(s, e, False)
            if owner is not None:
                rc = lib.rx_copy_range(store.fd, s << PAGE_SHIFT, owner.store.fd, os_ << PAGE_SHIFT, (e - s) << PAGE_SHIFT)
                if rc < 0:
                    raise RxError(RX_ERR_INTERNAL, f"copy-on-write copy failed: {rc}")
                copied += e - s
        store.memory.counters.cow_pages_copied += copied
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
                for lo, hi in set_runs(node.shadowed, max(s, exclude.first_page + off), min(e, exclude.end_page + off))
                if lo < hi
            ]
            if mine:
                targets[exclude.process] = coalesce([*targets.get(exclude.process, []), *mine])  # type: ignore[list-item]
        await shootdown(targets, CONTROL_INVALIDATE)
        clear_marks(marks)
        for s, e, owner, os_ in missing:
            if owner is not None and owner.hidden:
                owner.free_unseen(os_, os_ + (e - s))  # the last sharer's copy: the page moves
        if allocate and store.fd >= 0:  # (the VMO may have died while we awaited acks)
            for s, e, owner, _ in missing:
                if owner is None:
                    await store.allocate(s, e)
        return new, copied

    async def release_locked(self, start: int, end: int) -> None:
        """VMO pages [start, end) read as zero afterwards and hold no memory (DECOMMIT, and ZERO
        of whole pages). A clone gets zero markers so it no longer reads through to its parent."""
        node, off = self.node, self.node_offset
        s, e = start + off, end + off
        clone = node.parent is not None and s < node.parent_limit
        if not clone and not node.store.committed.count(s, e):
            return
        targets, marks = node.change_targets([(s, e)], own=True)
        await shootdown(targets, CONTROL_INVALIDATE)
        clear_marks(marks)
        through = node.holes(s, e)  # what it read from its ancestors until now
        if clone:
            node.zeroed.set_range(s, min(e, node.parent_limit), True)
        await node.store.decommit(s, e)
        free_unseen_above(node, s, e, through)

    async def zero_locked(self, offset: int, length: int) -> None:
        """Bytes [offset, offset+length) read as zero afterwards; whole pages are released."""
        end = offset + length
        first_whole = -(-offset // PAGE_SIZE)
        last_whole = end // PAGE_SIZE
        for lo, hi in ((offset, min(end, first_whole * PAGE_SIZE)), (max(offset, last_whole * PAGE_SIZE), end)):
            if lo < hi:
                page = (lo >> PAGE_SHIFT) + self.node_offset
                if self.node.resolve(page, page + 1)[0][2] is not None:  # something to zero there
                    await self.write_locked(lo, bytes(hi - lo))
        if first_whole < last_whole:
            await self.release_locked(first_whole, last_whole)

    async def write_locked(self, offset: int, data: bytes) -> None:
        if data:
            await self.commit_locked(offset >> PAGE_SHIFT, (offset + len(data) + PAGE_SIZE - 1) >> PAGE_SHIFT)
            if not self.alive:  # the caller died (and its handle with it) while we awaited acks
                raise RxError(RX_ERR_BAD_STATE, "the VMO was closed during the write")
            self.node.store.write(offset + (self.node_offset << PAGE_SHIFT), data)

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
        everything: dict[Process, list[tuple[int, int]]] = {}
        node.add_targets(everything, [(new_pages, old_pages)], None)
        for p, r in everything.items():
            targets.setdefault(p, []).extend(r)
        await shootdown(targets, CONTROL_INVALIDATE)
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


# -- creating children --------------------------------------------------------------------------


def new_root_vmo(kernel: Kernel, koid: int, size: int, options: int, capacity: int) -> Vmo:
    node = CowPages(CowTree(kernel), PageStore(capacity, kernel.memory, f"rx-vmo-{koid}"))
    return Vmo(kernel, koid, size, options, node)


async def snapshot_locked(parent: Vmo, koid: int, offset: int, size: int, options: int, capacity: int, at_least_on_write: bool) -> Vmo:
    """A copy-on-write child of `parent` seeing its pages [offset, offset+size) (bytes).

    SNAPSHOT: the parent's node gives its store to a new hidden node that both the parent's node
    and the child read through, so neither sees the other's later writes. Mappings of the parent
    lose its committed pages first (their writes must fault and split from now on).
    AT_LEAST_ON_WRITE: the child reads straight through to the parent's node, which stays as it
    is: the child sees the parent's later writes until it writes a page itself."""
    kernel = parent.kernel
    node = parent.node
    if not at_least_on_write and any(a.fronts for a in node.ancestors()):
        # An ancestor that is still written (this VMO reads through to it as an at-least-on-
        # write child) would keep changing what the snapshot sees: not a point in time.
        raise RxError(RX_ERR_NOT_SUPPORTED, "a snapshot of an at-least-on-write child (or of its descendants) is not supported")
    first = parent.node_offset + (offset >> PAGE_SHIFT)
    limit = max(0, min(size, parent.size - offset) >> PAGE_SHIFT)
    # Every store first: running out of fds must fail before anything changed.
    child_store = PageStore(capacity, kernel.memory, f"rx-vmo-{koid}")
    try:
        fresh = None if at_least_on_write else PageStore(node.store.capacity_pages << PAGE_SHIFT, kernel.memory, f"rx-vmo-{parent.koid}")
    except BaseException:
        child_store.close()
        raise
    child = CowPages(node.tree, child_store)
    if fresh is None:
        above = node
    else:
        old = node.store
        if old.committed_pages:
            # Every mapping of the original loses write access to its pages first (acked), so
            # no write slips into what becomes the shared, immutable original. They keep reading
            # them: the pages are the same, they just belong to the hidden node now, so they are
            # marked shadowed, and the first write to one splits it and takes the others away.
            committed = set_runs(old.committed, 0, old.capacity_pages)
            targets: dict[Process, list[tuple[int, int]]] = {}
            node.add_targets(targets, committed, None)
            await shootdown({p: [(a, n, _PROT_READ) for a, n in coalesce(r)] for p, r in targets.items()}, CONTROL_PROTECT)
            mapped = merge_runs([(m.first_page + f.node_offset, m.end_page + f.node_offset) for f in node.fronts for m in f.mappings])
            for lo, hi in mapped:  # (nothing to mark where nothing maps: a snapshot stays O(1))
                for s, e in set_runs(old.committed, lo, hi):
                    node.shadowed.set_range(s, e, True)
            if not parent.alive:  # its last handle closed while we awaited acks
                child_store.close()
                fresh.close()
                raise RxError(RX_ERR_BAD_STATE, "the VMO was closed while it was being snapshotted")
        above = CowPages(node.tree, old)
        above.parent, above.parent_offset, above.parent_limit = node.parent, node.parent_offset, node.parent_limit
        above.zeroed, node.zeroed = node.zeroed, above.zeroed
        if node.parent is not None:
            siblings = node.parent.children
            siblings[siblings.index(node)] = above
        node.store = fresh
        node.parent, node.parent_offset = above, 0
        # A slice keeps its whole parent's pages (as Zircon's does), even once the parent VMO
        # is gone: keep reading all of them, not just the slices' windows.
        has_slices = any(f.kind == KIND_SLICE for f in node.fronts)
        node.parent_limit = old.capacity_pages if has_slices else node_extent(node)
        above.children.append(node)
    child.parent, child.parent_offset, child.parent_limit = above, first, limit
    above.children.append(child)
    kind = KIND_AT_LEAST_ON_WRITE if at_least_on_write else KIND_SNAPSHOT
    return Vmo(kernel, koid, size, options, child, 0, parent, kind)


def node_extent(node: CowPages) -> int:
    """Pages of a node that some VMO standing on it can see."""
    return max((v.node_offset + v.size_pages for v in node.fronts), default=0)


def new_slice(parent: Vmo, koid: int, offset: int, size: int, options: int) -> Vmo:
    return Vmo(parent.kernel, koid, size, options, parent.node, parent.node_offset + (offset >> PAGE_SHIFT), parent, KIND_SLICE)


# -- releasing ----------------------------------------------------------------------------------


def free_unseen_above(node: CowPages, start: int, end: int, through: Runs | None = None) -> None:
    """`node` stopped reading through at [start, end) (or at `through`, the runs it read through
    before it changed): ancestors' pages there may be garbage now. Only the pages it really read
    through are looked at, level by level, so a change deep in a long chain stays cheap."""
    runs = node.holes(start, end) if through is None else through
    while node.parent is not None and runs:
        po = node.parent_offset
        runs = [(s + po, min(e, node.parent_limit) + po) for s, e in runs if s < node.parent_limit]
        node = node.parent
        if node.hidden:
            for s, e in runs:
                node.free_unseen(s, e)
        runs = [r for s, e in runs for r in node.holes(s, e)]


def release_node(node: CowPages) -> None:
    """A VMO left `node`: free what no one can see any more, now (so committed bytes are exact as
    soon as the last handle closes), and drop nodes that nothing stands on or reads through.
    Collapsing a hidden node with a single child needs shootdowns: the kernel runs it later,
    under the tree lock."""
    while node.hidden:
        parent = node.parent
        if node.children:
            # What only this node's VMOs read, here and in every ancestor, is garbage now.
            node.free_unseen()
            free_unseen_above(node, 0, node.parent_limit)
            if len(node.children) == 1:
                node.tree.kernel.defer_collapse(node)
            return
        # Nothing stands on it and nothing reads through it: it goes, with all its pages.
        through = node.holes(0, node.parent_limit)
        node.store.close()
        if parent is None:
            return
        parent.children.remove(node)
        free_unseen_above(node, 0, 0, through)
        node = parent


async def collapse_locked(node: CowPages) -> None:
    """Merge a hidden node that has one child left into that child, so chains do not grow with
    every snapshot closed. Pages move the cheap way round: when the child reads at offset 0 and
    holds fewer pages than the parent, it adopts the parent's store and its own pages are copied
    in; otherwise the parent's pages the child can see are copied down. Either way the mappings
    that showed pages of the store that goes are taken away first."""
    if not node.hidden or len(node.children) != 1:
        return
    child = node.children[0]
    node.free_unseen()

    def unchanged() -> bool:
        # Closing handles changes trees without the lock (it only ever removes what nobody can
        # see): after an await, give up if that removed either node.
        return node.children == [child] and child.parent is node and node.store.fd >= 0 and child.store.fd >= 0

    adopt = (
        child.parent_offset == 0
        and child.store.committed_pages <= node.store.committed_pages
        and node.store.capacity_pages >= child.store.capacity_pages  # the child may grow into it
    )
    if adopt:
        # The child's own pages move into the parent's store, which becomes the child's.
        # Writers must stop writing the child's old store before its pages are copied.
        own = set_runs(child.store.committed, 0, child.store.capacity_pages)
        targets, marks = child.change_targets(own, own=True)
        await shootdown(targets, CONTROL_INVALIDATE)
        clear_marks(marks)
        if not unchanged():
            return
        moving_to, leaving = node.store, child.store
        # Pages of the parent's store past the child's window were unseen, so already freed.
        moving_to.take_pages(leaving, own)
        child.store = moving_to
        leaving.close()
    else:
        # The parent's pages the child reads are copied down into the child's store.
        po = child.parent_offset
        runs = [(s - po, e - po) for s, e in set_runs(node.store.committed, po, po + child.parent_limit)]
        through = merge_runs([r for s, e in runs for r in child.holes(s, e)])
        targets, marks = child.change_targets(through)
        await shootdown(targets, CONTROL_INVALIDATE)
        clear_marks(marks)
        if not unchanged():
            return
        child.store.take_pages(node.store, [(s + po, e + po) for s, e in through], -po)
        node.store.close()
    # The child now reads where the parent did, through the parent's zero markers and limit.
    po = child.parent_offset
    for s, e in set_runs(node.zeroed, po, po + child.parent_limit):
        for hs, he in child.holes(s - po, e - po):
            child.zeroed.set_range(hs, he, True)
    child.parent_limit = max(0, min(child.parent_limit, node.parent_limit - po))
    child.parent_offset = node.parent_offset + po
    child.parent = node.parent
    if node.parent is not None:
        siblings = node.parent.children
        siblings[siblings.index(node)] = child
    node.children = []
    node.parent = None
