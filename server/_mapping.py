"""Mappings and per-process address spaces (Zircon's VmMapping / VmAddressRegion roles).

The client reserves address ranges itself (it is its own address space); rxd records what is mapped
where so it can resolve a fault address and find every mapping of a VMO page when it must take it
away. Mappings in one address space never overlap (invariant kept by AddressSpace.insert).

Fault-around policy lives here too, per mapping, because sequential detection is per mapping:
- a fault right where the last run ended is sequential: the window doubles, up to 2 MiB;
- any other fault starts over: reads get an aligned 64 KiB window (zero pages and already
  committed pages cost nothing to map), writes commit just the faulting page;
- RX_VM_MAP_RANDOM turns fault-around off (one page per fault), like MADV_RANDOM.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from rxkernel.proto import PAGE_SHIFT, RX_VM_MAP_RANDOM

if TYPE_CHECKING:
    from ._process import Process
    from ._vmo import Vmo

FAULT_AROUND_READ_PAGES = 16
FAULT_AROUND_MAX_PAGES = 512


class Mapping:
    __slots__ = (
        "process", "base", "length", "vmo", "vmo_offset", "perms", "max_perms", "options", "rights", "alive",
        "_next_page", "_window",
    )

    def __init__(
        self, process: Process, base: int, length: int, vmo: Vmo, vmo_offset: int, perms: int, max_perms: int,
        options: int, rights: int,
    ) -> None:
        self.process = process
        self.base = base
        self.length = length
        self.vmo = vmo
        self.vmo_offset = vmo_offset
        self.perms = perms
        self.max_perms = max_perms  # what the handle allowed at map time; protect cannot exceed it
        self.options = options
        self.rights = rights  # of the handle it was mapped with: rx.fork()'s snapshot gets no more
        self.alive = True
        self._next_page = -1
        self._window = 0

    def __repr__(self) -> str:
        return f"<Mapping {self.base:#x}+{self.length:#x} vmo={self.vmo.koid} off={self.vmo_offset:#x} perms={self.perms}>"

    @property
    def end(self) -> int:
        return self.base + self.length

    @property
    def first_page(self) -> int:
        """The VMO page mapped at `base`."""
        return self.vmo_offset >> PAGE_SHIFT

    @property
    def end_page(self) -> int:
        return (self.vmo_offset + self.length) >> PAGE_SHIFT

    def addr_of(self, page: int) -> int:
        return self.base + ((page - self.first_page) << PAGE_SHIFT)

    def page_of(self, addr: int) -> int:
        return self.first_page + ((addr - self.base) >> PAGE_SHIFT)

    def fault_window(self, page: int, write: bool, limit: int) -> tuple[int, int]:
        """Pages [start, end) a fault at `page` should bring in; `limit` is the VMO's page count."""
        end_limit = min(self.end_page, limit)
        if self.options & RX_VM_MAP_RANDOM:
            return page, page + 1
        if page == self._next_page:
            # Windows are powers of two; ending each on a multiple of its size keeps the next
            # ones aligned, so runs line up with the host's 2 MiB boundaries.
            window = min(max(self._window * 2, 2), FAULT_AROUND_MAX_PAGES)
            start = page
            end = (page + window) & ~(window - 1)
            if end <= page:
                end = page + window
        elif write:
            window, start, end = 1, page, page + 1
        else:
            window = FAULT_AROUND_READ_PAGES
            start = max(page & ~(window - 1), self.first_page)
            end = start + window
        end = min(end, end_limit)
        self._window, self._next_page = window, end
        return start, end


class AddressSpace:
    """One process's mappings, sorted by base address."""

    def __init__(self) -> None:
        self._bases: list[int] = []
        self._maps: list[Mapping] = []

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._maps))

    def __len__(self) -> int:
        return len(self._maps)

    def find(self, addr: int) -> Mapping | None:
        i = bisect.bisect_right(self._bases, addr) - 1
        if i >= 0:
            m = self._maps[i]
            if addr < m.end:
                return m
        return None

    def overlapping(self, start: int, end: int) -> list[Mapping]:
        i = max(bisect.bisect_right(self._bases, start) - 1, 0)
        out = []
        while i < len(self._maps) and self._maps[i].base < end:
            if self._maps[i].end > start:
                out.append(self._maps[i])
            i += 1
        return out

    def insert(self, m: Mapping) -> bool:
        """Add `m`; False (and nothing added) when it would overlap an existing mapping."""
        if self.overlapping(m.base, m.end):
            return False
        i = bisect.bisect_left(self._bases, m.base)
        self._bases.insert(i, m.base)
        self._maps.insert(i, m)
        return True

    def remove(self, m: Mapping) -> None:
        i = bisect.bisect_left(self._bases, m.base)
        assert self._maps[i] is m
        del self._bases[i], self._maps[i]

    def split(self, m: Mapping, at: int) -> Mapping:
        """Cut `m` at address `at` (page aligned, inside it); returns the new upper half."""
        upper = Mapping(
            m.process, at, m.end - at, m.vmo, m.vmo_offset + (at - m.base), m.perms, m.max_perms, m.options, m.rights
        )
        m.length = at - m.base
        i = bisect.bisect_left(self._bases, m.base)
        self._bases.insert(i + 1, upper.base)
        self._maps.insert(i + 1, upper)
        m.vmo.mappings.append(upper)
        upper.vmo.add_ref()
        return upper
