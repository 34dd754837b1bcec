"""Copy-on-write page trees (Zircon's VmCowPages role): where each page of a VMO really lives.

Every VMO stands on a CowPages node; a node owns one page store and may have a parent it reads
through for the pages it lacks. A snapshot turns the original's pages into an immutable hidden
node (no VMO stands on it) whose two children are the original and the new child; an
at-least-on-write child reads straight through to its (visible, still written) parent; a slice is
a second VMO standing on the same node at an offset. All nodes of one tree share one lock.

Resolving page i of node N: N's own committed page; else zero if N has a zero marker there (a ZERO
on a clone) or i is past N.parent_limit; else page i + parent_offset of the parent, recursively.
A page nobody wrote resolves to nothing: it reads as zero everywhere and costs nothing.

Invariants (hold whenever the tree's lock is free):
- a hidden node's page that no visible descendant resolves to is not committed (freed at once, so
  committed bytes always equal what some VMO can still read);
- a client maps node N's page i writable only from N's own store, and only if N is visible;
- whatever a client maps for N's page i from anywhere other than N's own store (the zero page, an
  ancestor's page) is marked in N.shadowed until that mapping is taken away, so a change to what
  page i resolves to can find and invalidate it;
- an uncommitted page of any store is a hole (reads as zero).

Lock order: tree.lock → (awaiting acks). Nothing else is held across an await; see
ARCHITECTURE.md "Locks" for the whole order.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import TYPE_CHECKING

from rxkernel.native import ffi
from rxkernel.proto import PAGE_SHIFT

from ..base import FastLock, MirroredInt
from ._pagemap import PageMap
from ._pagestore import PageStore
from ._runs import Runs, coalesce, merge_runs, subtract_runs
from ._shootdown import Targets

if TYPE_CHECKING:
    from ._context import VmContext
    from ._mapper import Mapper
    from ._mapping import Mapping
    from ._vmo import Vmo

# A resolved run: node pages [start, end) live in `owner`'s store from owner_start on (owner None:
# they read as zero).
Resolved = tuple[int, int, "CowPages | None", int]


class CowTree:
    """What every node of one tree shares: the lock that makes tree changes atomic, and the VM
    context (memory, coherence, deferred collapses) they all answer to."""

    __slots__ = ("lock", "vm")

    def __init__(self, vm: VmContext) -> None:
        self.lock = FastLock(ffi.new("int32_t *"))  # its word: the fault fast path reads it
        self.vm = vm


class CowPages:
    __slots__ = (
        "tree", "_store", "_parent", "children", "fronts", "shadowed", "_zeroed",
        "ff",
    )
    parent_offset = MirroredInt("parent_offset")  # pages: my page i is the parent's page i + parent_offset
    parent_limit = MirroredInt("parent_limit")  # pages [0, parent_limit) read through to the parent

    # Every field is guarded by tree.lock, with one exception written at its definition:
    # collapse.release_node (a VMO's last reference going, which cannot await) removes what no one
    # can see without the lock; lock holders re-check what they rely on after each await.
    def __init__(self, tree: CowTree, store: PageStore) -> None:
        self.tree = tree
        # What the fault fast path reads (struct rx_ff_node): kept current by the properties.
        self.ff = ffi.new("struct rx_ff_node *")
        self.store = store  # replaced by a snapshot (fresh store) and by a collapse (adopted one)
        self.parent: CowPages | None = None
        self.children: list[CowPages] = []
        self.fronts: list[Vmo] = []  # VMOs standing on this node (the VMO and its slices)
        self.shadowed = PageMap()  # see the module invariants
        self.zeroed = PageMap()  # zero markers: read as zero, not through to the parent
        self.ff.shadowed, self.ff.tree_locked = self.shadowed.handle, tree.lock.word

    @property
    def zeroed(self) -> PageMap:
        return self._zeroed

    @zeroed.setter
    def zeroed(self, zeroed: PageMap) -> None:  # (a snapshot hands its markers up to the new parent)
        self._zeroed = zeroed
        self.ff.zeroed = zeroed.handle

    @property
    def store(self) -> PageStore:
        return self._store

    @store.setter
    def store(self, store: PageStore) -> None:
        self._store = store
        self.ff.store = store.ff

    def children_changed(self) -> None:
        """Call after changing `children`: the fault fast path commits only on childless nodes."""
        self.ff.nchildren = len(self.children)

    @property
    def parent(self) -> CowPages | None:
        return self._parent

    @parent.setter
    def parent(self, parent: CowPages | None) -> None:
        self._parent = parent
        self.ff.parent = parent.ff if parent is not None else ffi.NULL

    def __repr__(self) -> str:
        kind = "visible" if self.fronts else "hidden"
        return f"<CowPages {kind} store={self.store.store_id} committed={self.store.committed_pages} children={len(self.children)}>"

    @property
    def hidden(self) -> bool:
        return not self.fronts

    def ancestors(self) -> Iterator[CowPages]:
        node = self.parent
        while node is not None:
            yield node
            node = node.parent

    # -- resolution ------------------------------------------------------------------------------

    def holes(self, start: int, end: int) -> Runs:
        """Pages of [start, end) that read through to the parent."""
        if self.parent is None:
            return []
        end = min(end, self.parent_limit)
        out: Runs = []
        for s, e in self.store.committed.runs_of(start, end, False) if start < end else []:
            out.extend(self.zeroed.runs_of(s, e, False))
        return out

    def resolve(self, start: int, end: int) -> list[Resolved]:
        """Where pages [start, end) live, as runs in page order."""
        out: list[Resolved] = []
        parent, po, lim = self.parent, self.parent_offset, self.parent_limit
        for s, e, own in self.store.committed.runs(start, end):
            if own:
                out.append((s, e, self, s))
            elif parent is None:
                out.append((s, e, None, 0))
            else:
                for zs, ze, zeroed in self.zeroed.runs(s, e):
                    if not zeroed and zs < lim:
                        for ps, pe, owner, os_ in parent.resolve(zs + po, min(ze, lim) + po):
                            out.append((ps - po, pe - po, owner, os_))
                        zs = min(ze, lim)
                    if zs < ze:
                        out.append((zs, ze, None, 0))
        return _merge_resolved(out)

    def see_through(self, start: int, end: int, delta: int = 0) -> Iterator[tuple[CowPages, int, int, int]]:
        """(node, lo, hi, delta) for this node's [start, end) and every descendant range that
        reads through to it there; node page p is this node's page p + delta. A queue, not nested
        generators: every item would pass through each level of a deep chain."""
        queue = collections.deque([(self, start, end, delta)])  # breadth first: see seen()
        while queue:
            node, lo, hi, d = queue.popleft()
            yield node, lo, hi, d
            for c in node.children:
                clo, chi = max(lo - c.parent_offset, 0), min(hi - c.parent_offset, c.parent_limit)
                if clo < chi:
                    for s, e in c.holes(clo, chi):
                        queue.append((c, s, e, d + c.parent_offset))

    def seen(self, start: int, end: int) -> Runs:
        """Pages of [start, end) that some VMO resolves to this node: through its own window of
        this node, or of a descendant that reads through to it."""
        found: Runs = []
        for n, lo, hi, d in self.see_through(start, end):
            # A VMO sees only its window of its node: a slice of part of it, the VMO all of it.
            shown = [(max(lo, w0), min(hi, w1)) for w0, w1 in n.windows() if max(lo, w0) < min(hi, w1)]
            if shown:
                found = merge_runs([*found, *((a + d, b + d) for a, b in shown)])
                if found == [(start, end)]:
                    break  # all of it is seen: no need to visit the rest of the subtree
        return found

    def windows(self) -> Runs:
        """The node pages its VMOs show (each VMO its [node_offset, + size) window), merged."""
        return merge_runs([(v.node_offset, v.node_offset + v.size_pages) for v in self.fronts])

    def unseen_committed(self, start: int, end: int) -> Runs:
        """Committed pages of [start, end) no visible node can read: garbage to free."""
        committed = self.store.committed.runs_of(start, end)
        if not committed:  # (seen() walks the whole subtree: not for nothing)
            return []
        return subtract_runs(committed, merge_runs([r for s, e in committed for r in self.seen(s, e)]))

    def free_unseen(self, start: int = 0, end: int | None = None) -> int:
        """Free every committed page of this node in [start, end) that no one can read (a hidden
        node's, or one outside every window of a visible node's VMOs: a slice's parent closed).
        No client maps such a page (only readers of a page ever map it), so no shootdown; that
        is also why release_node may call it without the tree lock (see there)."""
        if end is None:
            end = self.store.capacity_pages
        freed = 0
        for s, e in self.unseen_committed(start, end):
            freed += self.store.decommit_nowait(s, e)
        return freed

    # -- who maps what ---------------------------------------------------------------------------

    def add_targets(self, targets: dict[Mapper, list[tuple[int, int]]], runs: Runs, exclude: Mapping | None) -> None:
        """Address ranges where mappings of this node's VMOs show node pages `runs`."""
        for vmo in self.fronts:
            vo = vmo.node_offset
            for m in vmo.mappings:
                if m is exclude:
                    continue
                mf, me = m.first_page + vo, m.end_page + vo
                for s, e in runs:
                    lo, hi = max(s, mf), min(e, me)
                    if lo < hi:
                        targets.setdefault(m.process, []).append((m.addr_of(lo - vo), (hi - lo) << PAGE_SHIFT))

    def change_targets(self, runs: Runs, exclude: Mapping | None = None, own: bool = False) -> tuple[Targets, list[tuple[CowPages, Runs]]]:
        """Every mapping that shows this node's pages `runs` from somewhere else than its own
        node's store — here, and in every descendant reading through — plus (with `own`) this
        node's mappings of its own committed pages there. Returns the targets and the shadow marks
        to clear once they acked. Call it before changing what those pages resolve to."""
        targets: dict[Mapper, list[tuple[int, int]]] = {}
        marks: list[tuple[CowPages, Runs]] = []
        for s, e in runs:
            for node, lo, hi, _ in self.see_through(s, e):
                shadow = node.shadowed.runs_of(lo, hi)
                if shadow:
                    marks.append((node, shadow))
                mine = shadow
                if own and node is self:
                    mine = merge_runs(shadow + node.store.committed.runs_of(lo, hi))
                node.add_targets(targets, mine, exclude)
        return {p: coalesce(r) for p, r in targets.items()}, marks


def clear_marks(marks: list[tuple[CowPages, Runs]]) -> None:
    for node, runs in marks:
        for s, e in runs:
            node.shadowed.set_range(s, e, False)


def _merge_resolved(runs: list[Resolved]) -> list[Resolved]:
    out: list[Resolved] = []
    for s, e, owner, os_ in runs:
        if s >= e:
            continue
        if out:
            ps, pe, powner, pos = out[-1]
            if pe == s and powner is owner and (owner is None or pos + (pe - ps) == os_):
                out[-1] = (ps, e, owner, pos)
                continue
        out.append((s, e, owner, os_))
    return out
