"""Sorted, non-overlapping address ranges: the one Python routine that cuts a mapping record.

rx_vmar_unmap and rx_vmar_protect act on [addr, addr+length) whatever mappings it crosses, so both
ends of the wire must cut their records of what is mapped where at exactly those two addresses.
rxd (server/vm/_aspace.py) and the stub library (client/_process.py) keep different records (rxd:
the VMO, offset, rights, fault-around state; the client: the permissions its views need) but cut
them here, the same way. The C trap keeps a third record, only address ranges (native: the signal
handler may touch nothing else), and cuts it in its own map_cut_locked.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Generic, Protocol, Self, TypeVar


class Ranged(Protocol):
    """A record of one range. `split_at` shrinks it to [base, at) and returns [at, old end)."""

    base: int
    length: int

    def split_at(self, at: int) -> Self: ...


R = TypeVar("R", bound=Ranged)


class RangeList(Generic[R]):
    """Records sorted by base address, never overlapping (insert refuses an overlap)."""

    __slots__ = ("_bases", "_items")

    def __init__(self) -> None:
        self._bases: list[int] = []
        self._items: list[R] = []

    def __iter__(self) -> Iterator[R]:
        return iter(list(self._items))  # a copy: callers remove records while they walk

    def __len__(self) -> int:
        return len(self._items)

    def find(self, addr: int) -> R | None:
        """The record containing `addr`, if any."""
        i = bisect.bisect_right(self._bases, addr) - 1
        if i >= 0:
            r = self._items[i]
            if addr < r.base + r.length:
                return r
        return None

    def overlapping(self, start: int, end: int) -> list[R]:
        """Records that overlap [start, end), in address order."""
        i = max(bisect.bisect_right(self._bases, start) - 1, 0)
        out = []
        while i < len(self._items) and self._items[i].base < end:
            if self._items[i].base + self._items[i].length > start:
                out.append(self._items[i])
            i += 1
        return out

    def insert(self, r: R) -> bool:
        """Add `r`; False (and nothing added) when it would overlap a record."""
        if self.overlapping(r.base, r.base + r.length):
            return False
        i = bisect.bisect_left(self._bases, r.base)
        self._bases.insert(i, r.base)
        self._items.insert(i, r)
        self._inserted(i, r)
        return True

    def remove(self, r: R) -> None:
        i = bisect.bisect_left(self._bases, r.base)
        assert self._items[i] is r, (r, self._items[i])
        del self._bases[i], self._items[i]
        self._removed(i)

    def clear(self) -> None:
        self._bases.clear()
        self._items.clear()
        self._cleared()

    # Told of every change of the order, for a subclass that keeps a copy of it (rxd's fault fast
    # path keeps one in C): record r is now at index i / the record at i left / all left.
    def _inserted(self, i: int, r: R) -> None:
        pass

    def _removed(self, i: int) -> None:
        pass

    def _cleared(self) -> None:
        pass

    def cut(self, start: int, end: int) -> list[R]:
        """Split records so that none crosses `start` or `end`; returns those inside [start, end),
        in address order."""
        out = []
        for r in self.overlapping(start, end):
            for at in (start, end):
                if r.base < at < r.base + r.length:
                    upper = r.split_at(at)
                    i = bisect.bisect_left(self._bases, r.base)
                    self._bases.insert(i + 1, upper.base)
                    self._items.insert(i + 1, upper)
                    self._inserted(i + 1, upper)
                    if at == start:
                        r = upper
            out.append(r)
        return out
