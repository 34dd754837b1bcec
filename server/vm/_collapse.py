"""What a VMO leaves behind: freeing pages nobody can read, dropping dead nodes, collapsing chains.

Closing a VMO (or a clone writing its own copy) can leave ancestors' pages that no visible node
resolves to any more: they are garbage and are freed at once (ARCHITECTURE.md "Copy-on-write").
A hidden node left with one child is merged into it later, in a task of the collapse queue,
because a merge moves pages and so takes mappings away (it needs acks, so the tree lock).
"""

from __future__ import annotations

import structlog
import trio

from rxkernel.proto import CONTROL_INVALIDATE

from ..base import requires_lock
from ._cowpages import CowPages, clear_marks
from ._runs import Runs, merge_runs

log = structlog.get_logger("rxd.vm")


class CollapseQueue:
    """Background merges of hidden nodes into their only child, one task per node, under the
    tree lock. Needs the event loop's nursery (set when rxd starts serving); before that, and in
    tests that run without one, chains are simply left longer (still correct)."""

    def __init__(self) -> None:
        self.nursery: trio.Nursery | None = None
        self._pending: set[CowPages] = set()  # event-loop only

    def defer(self, node: CowPages) -> None:
        """Merge hidden `node` into its only child soon."""
        if self.nursery is None or node in self._pending:
            return
        self._pending.add(node)
        self.nursery.start_soon(self._collapse, node)

    async def _collapse(self, node: CowPages) -> None:
        try:
            async with node.tree.lock:
                # Again if a close changed the node while collapsing awaited acks (collapse then
                # gives up), as long as it is still a live hidden node with one child.
                while node.hidden and len(node.children) == 1 and node.store.fd >= 0:
                    await collapse_locked(node)
        except Exception:
            log.exception("collapsing a copy-on-write node failed; the tree stays correct, only longer")
        finally:
            self._pending.discard(node)


def free_unseen_above(node: CowPages, start: int, end: int, through: Runs | None = None) -> None:
    """`node` stopped reading through at [start, end) (or at `through`, the runs it read through
    before it changed): ancestors' pages there may be garbage now. Only the pages it really read
    through are looked at, level by level, so a change deep in a long chain stays cheap.
    Called under the tree lock, or without it from release_node (the exception, see there): it
    only frees pages no visible node can read, which no client maps, so it never awaits."""
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
    Collapsing a hidden node with a single child needs shootdowns: the collapse queue runs it
    later, under the tree lock.

    Runs WITHOUT the tree lock: it is called when a VMO's last reference goes (a handle close,
    a process teardown), which cannot await. That is safe because it only removes what no VMO
    can reach any more (pages no visible node resolves to, nodes nothing stands on or reads
    through) and never awaits; a lock holder that awaited acks re-checks the nodes it relies on
    afterwards (collapse_locked's `unchanged`, commit's and snapshot's `alive` checks)."""
    if not node.hidden:
        # Other VMOs still stand on it (a slice, or the VMO a slice was cut from): what none of
        # their windows shows and no clone reads is garbage now, here and above.
        node.free_unseen()
        free_unseen_above(node, 0, node.parent_limit)
        return
    while node.hidden:
        parent = node.parent
        if node.children:
            # What only this node's VMOs read, here and in every ancestor, is garbage now.
            node.free_unseen()
            free_unseen_above(node, 0, node.parent_limit)
            if len(node.children) == 1:
                node.tree.vm.collapses.defer(node)
            return
        # Nothing stands on it and nothing reads through it: it goes, with all its pages.
        through = node.holes(0, node.parent_limit)
        node.store.close()
        if parent is None:
            return
        parent.children.remove(node)
        parent.children_changed()
        free_unseen_above(node, 0, 0, through)
        node = parent


@requires_lock(lambda node: node.tree.lock)
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
        # release_node changes trees without the lock (see there): after an await, give up if
        # it removed either node.
        return node.children == [child] and child.parent is node and node.store.fd >= 0 and child.store.fd >= 0

    adopt = (
        child.parent_offset == 0
        and child.store.committed_pages <= node.store.committed_pages
        and node.store.capacity_pages >= child.store.capacity_pages  # the child may grow into it
    )
    if adopt:
        # The child's own pages move into the parent's store, which becomes the child's.
        # Writers must stop writing the child's old store before its pages are copied.
        own = child.store.committed.runs_of(0, child.store.capacity_pages)
        targets, marks = child.change_targets(own, own=True)
        await node.tree.vm.coherence.shootdown(targets, CONTROL_INVALIDATE)
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
        runs = [(s - po, e - po) for s, e in node.store.committed.runs_of(po, po + child.parent_limit)]
        through = merge_runs([r for s, e in runs for r in child.holes(s, e)])
        targets, marks = child.change_targets(through)
        await node.tree.vm.coherence.shootdown(targets, CONTROL_INVALIDATE)
        clear_marks(marks)
        if not unchanged():
            return
        child.store.take_pages(node.store, [(s + po, e + po) for s, e in through], -po)
        node.store.close()
    # The child now reads where the parent did, through the parent's zero markers and limit.
    po = child.parent_offset
    for s, e in node.zeroed.runs_of(po, po + child.parent_limit):
        for hs, he in child.holes(s - po, e - po):
            child.zeroed.set_range(hs, he, True)
    child.parent_limit = max(0, min(child.parent_limit, node.parent_limit - po))
    child.parent_offset = node.parent_offset + po
    child.parent = node.parent
    if node.parent is not None:
        siblings = node.parent.children
        siblings[siblings.index(node)] = child
    node.children = []
    node.children_changed()
    node.parent = None
    for vmo in child.fronts:  # it holds pages of its own now that it only read before
        vmo.refresh_reservation()
