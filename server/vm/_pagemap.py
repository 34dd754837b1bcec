"""Compact per-page state: one byte per page in sparse 64 KiB chunks (ARCHITECTURE.md "Page state").

Linux spends 64 bytes of `struct page` per 4 KiB page; a PageMap spends one byte per page, and only
for the 256 MiB stretches of a VMO where any page was ever set. Runs are found with bytearray.find
(C speed), so scanning a 512-page fault window costs a handful of calls, not 512 Python steps.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ._runs import Runs

CHUNK_SHIFT = 16
CHUNK_PAGES = 1 << CHUNK_SHIFT
_ZERO = b"\x00"
_ONE = b"\x01"


def pieces(start: int, end: int) -> Sequence[tuple[int, int, int]]:
    """Split pages [start, end) at chunk boundaries: (chunk index, offset in chunk, end in chunk).
    Nearly every range is inside one chunk (a fault window, a write): that case builds no loop."""
    index = start >> CHUNK_SHIFT
    if start >= end:
        return ()
    if (end - 1) >> CHUNK_SHIFT == index:
        base = index << CHUNK_SHIFT
        return ((index, start - base, end - base),)
    out = []
    while start < end:
        index = start >> CHUNK_SHIFT
        base = index << CHUNK_SHIFT
        stop = min(end, base + CHUNK_PAGES)
        out.append((index, start - base, stop - base))
        start = stop
    return out


class PageMap:
    """A set of page indices in [0, 2**40 / 4096), with counts and runs over ranges."""

    __slots__ = ("_chunks", "count_set")

    def __init__(self) -> None:
        self._chunks: dict[int, bytearray] = {}
        self.count_set = 0  # invariant: the number of set pages over all chunks

    @property
    def memory_bytes(self) -> int:
        return len(self._chunks) * CHUNK_PAGES

    def get(self, page: int) -> bool:
        chunk = self._chunks.get(page >> CHUNK_SHIFT)
        return chunk is not None and chunk[page & (CHUNK_PAGES - 1)] == 1

    def count(self, start: int, end: int) -> int:
        """How many pages in [start, end) are set."""
        total = 0
        for index, lo, hi in pieces(start, end):
            chunk = self._chunks.get(index)
            if chunk is not None:
                total += chunk.count(_ONE, lo, hi)
        return total

    def set_range(self, start: int, end: int, value: bool) -> int:
        """Set or clear [start, end); returns how many pages changed state."""
        changed = 0
        for index, lo, hi in pieces(start, end):
            chunk = self._chunks.get(index)
            if chunk is None:
                if not value:
                    continue
                chunk = self._chunks[index] = bytearray(CHUNK_PAGES)
            before = chunk.count(_ONE, lo, hi)
            chunk[lo:hi] = (_ONE if value else _ZERO) * (hi - lo)
            delta = (hi - lo - before) if value else before
            changed += delta
            if not value and chunk.find(_ONE) < 0:
                del self._chunks[index]  # the chunk is empty again: give its memory back
        self.count_set += changed if value else -changed
        return changed

    def runs(self, start: int, end: int) -> Iterator[tuple[int, int, bool]]:
        """Maximal runs (run_start, run_end, is_set) covering [start, end) in order."""
        run_start, run_value = start, None
        for index, lo, hi in pieces(start, end):
            base = index << CHUNK_SHIFT
            chunk = self._chunks.get(index)
            pos = lo
            while pos < hi:
                value = chunk is not None and chunk[pos] == 1
                if chunk is None:
                    nxt = hi
                else:
                    nxt = chunk.find(_ZERO if value else _ONE, pos, hi)
                    if nxt < 0:
                        nxt = hi
                if run_value is None:
                    run_value = value
                elif value != run_value:
                    yield run_start, base + pos, run_value
                    run_start, run_value = base + pos, value
                pos = nxt
        if run_value is not None:
            yield run_start, end, run_value

    def runs_of(self, start: int, end: int, value: bool = True) -> Runs:
        """The runs of [start, end) that are set (or, with value False, clear)."""
        return [(s, e) for s, e, v in self.runs(start, end) if v == value]
