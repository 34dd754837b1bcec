"""Where memory is attributed: which committed pages a mapping shows, and to whom they count.

The budget itself is counted in _pmm.py (committed pages) and per store (PageStore.committed);
this file answers the statistics' questions from the trees, without estimating anything:
- private/shared: a page is private when only one VMO can read it and only one process maps that
  VMO; otherwise it is shared, and each of its n sharers (VMOs that read it × processes mapping
  each) gets 1/n of it in scaled_shared. Pages a clone still shares with its parent are shared.
- per VMO (RX_INFO_VMO, Zircon's committed_private/shared/scaled_bytes): every committed page
  some VMO can read, wherever it lives (its own store, a hidden node it shares with a clone, an
  at-least-on-write parent it reads through), counts to each VMO that reads it: private to the
  only reader, else shared, and 1/n of it to each of its n readers in scaled. Summed over all
  VMOs, scaled is exactly the system's committed pages (the invariant in _cowpages.py: a page no
  VMO can read is freed).
- active: committed pages that some live mapping shows, wherever they live; the rest are inactive.
- wired: rxd's own per-page metadata (the page maps of every live node).
Read-only walks, event-loop only (no awaits), so they see one consistent tree.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from fractions import Fraction

from ._cowpages import CowPages
from ._mapping import Mapping
from ._runs import merge_runs
from ._vmo import Vmo


def mapped_committed_pages(m: Mapping) -> int:
    """Pages of m's VMO's own store inside m."""
    off = m.vmo.node_offset
    return m.vmo.store.committed.count(m.first_page + off, min(m.end_page, m.vmo.size_pages) + off)


def _readers(owner: CowPages, start: int, end: int) -> list[tuple[int, int, int]]:
    """(s, e, n): how many VMOs read owner's pages [s, e) (n > 0 only; a slice is a reader of
    its own window, as is the VMO it was cut from)."""
    edges: dict[int, int] = {}
    for node, lo, hi, d in owner.see_through(start, end):
        for vmo in node.fronts:
            vlo, vhi = max(lo, vmo.node_offset), min(hi, vmo.node_offset + vmo.size_pages)
            if vlo < vhi:
                edges[vlo + d] = edges.get(vlo + d, 0) + 1
                edges[vhi + d] = edges.get(vhi + d, 0) - 1
    out, n, prev = [], 0, start
    for at in sorted(edges):
        if n and at > prev:
            out.append((prev, at, n))
        n += edges[at]
        prev = at
    return out


def _shown(vmo: Vmo, first_page: int, end_page: int) -> Iterator[tuple[int, int]]:
    """(pages, readers) for each committed run that VMO pages [first_page, end_page) resolve to."""
    off = vmo.node_offset
    end = min(end_page, vmo.size_pages)
    if first_page >= end:
        return
    for s, e, owner, os_ in vmo.node.resolve(first_page + off, end + off):
        if owner is None:
            continue
        for rs, re, n in _readers(owner, os_, os_ + (e - s)):
            yield re - rs, n  # (resolve's runs are committed, and vmo itself is one reader)


def vmo_pages(vmo: Vmo) -> tuple[int, int, Fraction]:
    """(private, shared, scaled) committed pages VMO `vmo` can read, by how many VMOs read each."""
    private = shared = 0
    scaled = Fraction(0)
    for pages, n in _shown(vmo, 0, vmo.size_pages):
        if n == 1:
            private += pages
        else:
            shared += pages
            scaled += Fraction(pages, n)
    return private, shared, scaled + private


def mapped_pages(m: Mapping) -> tuple[int, int, float]:
    """(private, shared, scaled shared) committed pages m shows; a page's sharers are the VMOs
    that read it times the processes mapping m's VMO."""
    procs = max(m.vmo.share_count(), 1)
    private = shared = 0
    scaled = 0.0
    for pages, n in _shown(m.vmo, m.first_page, m.end_page):
        n *= procs
        if n == 1:
            private += pages
        else:
            shared += pages
            scaled += pages / n
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
