"""Making children: copy-on-write snapshots and slices (Zircon's VmObjectPaged::CreateChild).

A snapshot rearranges the tree under the parent's node (ARCHITECTURE.md "Copy-on-write"): the
node's store moves, in O(1), to a new hidden node that both the parent and the child read through.
An at-least-on-write child reads straight through to the parent's node. A slice is a second VMO
standing on the parent's node at an offset.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rxkernel.proto import (
    CONTROL_PROTECT,
    PAGE_SHIFT,
    RX_ERR_BAD_STATE,
    RX_ERR_NOT_SUPPORTED,
    RxError,
)

from ..base import requires_lock
from ._cowpages import CowPages
from ._pagestore import PageStore
from ._runs import coalesce, merge_runs
from ._vmo import KIND_AT_LEAST_ON_WRITE, KIND_SLICE, KIND_SNAPSHOT, Vmo

if TYPE_CHECKING:
    from ._mapper import Mapper

_PROT_READ = 1


@requires_lock(lambda parent, *_: parent.lock)
async def snapshot_locked(parent: Vmo, koid: int, offset: int, size: int, options: int, capacity: int, at_least_on_write: bool) -> Vmo:
    """A copy-on-write child of `parent` seeing its pages [offset, offset+size) (bytes).

    SNAPSHOT: the parent's node gives its store to a new hidden node that both the parent's node
    and the child read through, so neither sees the other's later writes. Mappings of the parent
    lose its committed pages first (their writes must fault and split from now on).
    AT_LEAST_ON_WRITE: the child reads straight through to the parent's node, which stays as it
    is: the child sees the parent's later writes until it writes a page itself."""
    vm = parent.vm
    node = parent.node
    if not at_least_on_write and parent.reads_through_a_writer():
        # An ancestor that is still written (this VMO reads through to it as an at-least-on-
        # write child) would keep changing what the snapshot sees: not a point in time.
        raise RxError(RX_ERR_NOT_SUPPORTED, "a snapshot of an at-least-on-write child (or of its descendants) is not supported")
    first = parent.node_offset + (offset >> PAGE_SHIFT)
    limit = max(0, min(size, parent.size - offset) >> PAGE_SHIFT)
    # Every store first: running out of fds must fail before anything changed.
    child_store = PageStore(capacity, vm.memory, f"rx-vmo-{koid}")
    try:
        fresh = None if at_least_on_write else PageStore(node.store.capacity_pages << PAGE_SHIFT, vm.memory, f"rx-vmo-{parent.koid}")
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
            committed = old.committed.runs_of(0, old.capacity_pages)
            targets: dict[Mapper, list[tuple[int, int]]] = {}
            node.add_targets(targets, committed, None)
            await vm.coherence.shootdown({p: [(a, n, _PROT_READ) for a, n in coalesce(r)] for p, r in targets.items()}, CONTROL_PROTECT)
            mapped = merge_runs([(m.first_page + f.node_offset, m.end_page + f.node_offset) for f in node.fronts for m in f.mappings])
            for lo, hi in mapped:  # (nothing to mark where nothing maps: a snapshot stays O(1))
                for s, e in old.committed.runs_of(lo, hi):
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
        above.children_changed()
    child.parent, child.parent_offset, child.parent_limit = above, first, limit
    above.children.append(child)
    above.children_changed()
    kind = KIND_AT_LEAST_ON_WRITE if at_least_on_write else KIND_SNAPSHOT
    return Vmo(koid, size, options, child, 0, parent, kind)


def node_extent(node: CowPages) -> int:
    """Pages of a node that some VMO standing on it can see."""
    return max((v.node_offset + v.size_pages for v in node.fronts), default=0)


def new_slice(parent: Vmo, koid: int, offset: int, size: int, options: int) -> Vmo:
    return Vmo(koid, size, options, parent.node, parent.node_offset + (offset >> PAGE_SHIFT), parent, KIND_SLICE)
