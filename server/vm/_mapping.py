"""A mapping: part of a VMO mapped at an address in one process (Zircon's VmMapping role).

The client reserves address ranges itself (it is its own address space); rxd records what is mapped
where (AddressSpace, _aspace.py) so it can resolve a fault address and find every mapping of a
VMO page when it must take it away.

Fault-around policy lives here too, per mapping, because sequential detection is per mapping:
- a fault right where the last run ended is sequential: the window doubles, up to 2 MiB;
- any other fault starts over: reads get an aligned 64 KiB window (zero pages and already
  committed pages cost nothing to map), writes commit just the faulting page;
- RX_VM_MAP_RANDOM turns fault-around off (one page per fault), like MADV_RANDOM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rxkernel.native import ffi, lib
from rxkernel.proto import PAGE_SHIFT

from ..base import MirroredInt

if TYPE_CHECKING:
    from ._mapper import Mapper
    from ._vmo import Vmo

# The window sizes are defined once, in C (rxfastfault.h: RX_FF_AROUND_*), where both fault
# paths compute their windows.
_WINDOW = ffi.new("uint64_t[2]")  # rx_ff_fault_window's answer (rxd's trio thread only)


class Mapping:
    __slots__ = (
        "process", "base", "vmo", "vmo_offset", "max_perms", "options", "rights", "alive", "ff",
    )
    length = MirroredInt("length")
    perms = MirroredInt("perms")

    def __init__(
        self, process: Mapper, base: int, length: int, vmo: Vmo, vmo_offset: int, perms: int, max_perms: int,
        options: int, rights: int,
    ) -> None:
        self.process = process
        # What the fault fast path reads (struct rx_ff_mapping): length, perms and the
        # fault-around state live there, and are read here through properties.
        ff = self.ff = ffi.new("struct rx_ff_mapping *")
        ff.base, ff.first_page, ff.vmo, ff.options = base, vmo_offset >> PAGE_SHIFT, vmo.ff, options
        ff.next_page = -1
        # length: a cut (AddressSpace.cut, from unmap or protect) shrinks it without the tree
        # lock and without awaiting, so fault resolution re-finds its mapping under the lock.
        # Fields without a note never change.
        self.base = base
        self.length = length
        self.vmo = vmo
        self.vmo_offset = vmo_offset
        self.perms = perms  # changed by protect under the tree lock
        self.max_perms = max_perms  # what the handle allowed at map time; protect cannot exceed it
        self.options = options
        self.rights = rights  # of the handle it was mapped with: rx.fork()'s snapshot gets no more
        self.alive = True  # False once rxd forgot it (unmapped, replaced, or its process gone)
        # Fault-around state (ff.next_page, ff.window): guarded by the VMO's tree lock (faults
        # resolve under it).


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

    def split_at(self, at: int) -> Mapping:
        """Cut this mapping at address `at` (page aligned, inside it); returns the new upper half,
        which is a mapping of the same VMO in its own right (it holds a reference of its own).
        Only AddressSpace.cut calls this (proto's RangeList: the one place records are cut)."""
        upper = Mapping(
            self.process, at, self.end - at, self.vmo, self.vmo_offset + (at - self.base), self.perms, self.max_perms,
            self.options, self.rights,
        )
        self.length = at - self.base
        self.vmo.mappings.append(upper)
        self.vmo.node.ff.nmappings += 1
        upper.vmo.add_ref()
        return upper

    def addr_of(self, page: int) -> int:
        return self.base + ((page - self.first_page) << PAGE_SHIFT)

    def page_of(self, addr: int) -> int:
        return self.first_page + ((addr - self.base) >> PAGE_SHIFT)

    def fault_window(self, page: int, write: bool, limit: int) -> tuple[int, int]:
        """Pages [start, end) a fault at `page` should bring in; `limit` is the VMO's page count.
        Computed in C (rx_ff_fault_window), where the fault fast path computes the same."""
        lib.rx_ff_fault_window(self.ff, page, write, limit, _WINDOW)
        return int(_WINDOW[0]), int(_WINDOW[1])
