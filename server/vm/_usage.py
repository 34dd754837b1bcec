"""Where memory is attributed: which committed pages a mapping shows, and to whom they count.

The budget itself is counted in _pmm.py (committed pages) and per store (PageStore.committed);
this file answers the statistics' questions from the trees, without estimating anything:
- private/shared: a page is private when only one VMO can read it and only one process maps that
  VMO; otherwise it is shared, and each of its n sharers (VMOs that read it × processes mapping
  each) gets 1/n of it in scaled_shared. Pages a clone still shares with its parent are shared.
- active: committed pages that some live mapping shows, wherever they live; the rest are inactive.
- wired: rxd's own per-page metadata (the page maps of every live node).
Read-only walks, event-loop only (no awaits), so they see one consistent tree.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._cowpages import CowPages
from ._mapping import Mapping
from ._runs import merge_runs
from ._vmo import Vmo


def mapped_committed_pages(m: Mapping) -> int:
    """Pages of m's VMO's own store inside m."""
    off = m.vmo.node_offset
    return m.vmo.store.committed.count(m.first_page + off, min(m.end_page, m.vmo.size_pages) + off)


def _readers(owner: CowPages, start: int, end: int) -> list[tuple[int, int, int]]:
    """(s, e, n): how many visible nodes read owner's pages [s, e)."""
    edges: dict[int, int] = {}
    for node, lo, hi, d in owner.see_through(start, end):
        if node.fronts:
            edges[lo + d] = edges.get(lo + d, 0) + 1
            edges[hi + d] = edges.get(hi + d, 0) - 1
    out, n, prev = [], 0, start
    for at in sorted(edges):
        if n and at > prev:
            out.append((prev, at, n))
        n += edges[at]
        prev = at
    return out


def mapped_pages(m: Mapping) -> tuple[int, int, float]:
    """(private, shared, scaled shared) committed pages m shows."""
    vmo, off = m.vmo, m.vmo.node_offset
    procs = max(vmo.share_count(), 1)
    private = shared = 0
    scaled = 0.0
    end = min(m.end_page, vmo.size_pages)
    if m.first_page >= end:
        return 0, 0, 0.0
    for s, e, owner, os_ in vmo.node.resolve(m.first_page + off, end + off):
        if owner is None:
            continue
        if owner is vmo.node and procs == 1:
            private += e - s
            continue
        for rs, re, n in _readers(owner, os_, os_ + (e - s)) if owner is not vmo.node else [(s, e, 1)]:
            n *= procs
            if n == 1:
                private += re - rs
            else:
                shared += re - rs
                scaled += (re - rs) / n
    return private, shared, scaled


def live_nodes(vmos: Iterable[Vmo]) -> set[CowPages]:
    """Every node a live VMO stands on or reads through."""
    nodes: set[CowPages] = set()
    for vmo in vmos:
        nodes.add(vmo.node)
        nodes.update(vmo.node.ancestors())
    return nodes


def wired_bytes(nodes: Iterable[CowPages]) -> int:
    return sum(n.store.metadata_bytes + n.shadowed.memory_bytes + n.zeroed.memory_bytes for n in nodes)


def active_pages(vmos: Iterable[Vmo]) -> int:
    """Committed pages some live mapping shows, wherever they live (each counted once)."""
    shown: dict[CowPages, list[tuple[int, int]]] = {}
    for vmo in vmos:
        off, limit = vmo.node_offset, vmo.size_pages
        for s, e in merge_runs([(m.first_page, min(m.end_page, limit)) for m in vmo.mappings]):
            if s < e:
                for rs, re, owner, os_ in vmo.node.resolve(s + off, e + off):
                    if owner is not None:
                        shown.setdefault(owner, []).append((os_, os_ + re - rs))
    return sum(owner.store.committed.count(s, e) for owner, runs in shown.items() for s, e in merge_runs(runs))
