"""One process's mappings, sorted by address (Zircon's VmAddressRegion role, flat: the client
reserves its own ranges, so rxd needs no tree of regions). Mappings never overlap.

Changed by map, unmap and protect without the VMO lock (none of them awaits between finding
and changing a mapping); the fault path therefore looks the mapping up again under the lock.
"""

from __future__ import annotations

from rxkernel.native import ffi, lib
from rxkernel.proto import RangeList

from ._mapping import Mapping


class AddressSpace(RangeList[Mapping]):
    """find / overlapping / cut come from proto's RangeList (the one place a mapping record is
    cut); this adds what a mapping's start and end mean for its VMO, and keeps the fault fast
    path's copy of the table (`ff`, a struct rx_ff_proc: rxfastfault.h) in the same order. The
    process keeps its other mirrored fields there too (inval_seq, alive, held stores)."""

    __slots__ = ("ff",)

    def __init__(self) -> None:
        super().__init__()
        proc = lib.rx_ff_proc_new()
        if proc == ffi.NULL:
            raise MemoryError("rxd could not allocate a process's fault table")
        self.ff = ffi.gc(proc, lib.rx_ff_proc_free)

    def _inserted(self, i: int, r: Mapping) -> None:
        if lib.rx_ff_proc_insert(self.ff, i, r.ff) < 0:
            raise MemoryError("rxd could not grow a process's fault table")

    def _removed(self, i: int) -> None:
        lib.rx_ff_proc_remove(self.ff, i)

    def _cleared(self) -> None:
        lib.rx_ff_proc_clear(self.ff)

    def add(self, m: Mapping) -> bool:
        """Record the new mapping `m` here and in its VMO's list (it holds a reference on the
        VMO); False, and nothing recorded, when it would overlap a mapping."""
        if not self.insert(m):
            return False
        m.vmo.mappings.append(m)
        m.vmo.node.ff.nmappings += 1  # (the fault thread's count: rxfastfault.h)
        m.vmo.add_ref()
        return True

    def forget(self, m: Mapping) -> None:
        """rxd forgets `m` (the client unmapped or replaced it, or the process is gone): it leaves
        this address space and its VMO's list, and drops its reference on the VMO."""
        if not m.alive:
            return
        m.alive = False
        self.remove(m)
        m.vmo.mappings.remove(m)
        m.vmo.node.ff.nmappings -= 1
        m.vmo.drop_ref()
