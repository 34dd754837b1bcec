"""One process's mappings, sorted by address (Zircon's VmAddressRegion role, flat: the client
reserves its own ranges, so rxd needs no tree of regions). Mappings never overlap.

Changed by map, unmap and protect without the VMO lock (none of them awaits between finding
and changing a mapping); the fault path therefore looks the mapping up again under the lock.
"""

from __future__ import annotations

from rxkernel.proto import RangeList

from ._mapping import Mapping


class AddressSpace(RangeList[Mapping]):
    """find / overlapping / cut come from proto's RangeList (the one place a mapping record is
    cut); this adds what a mapping's start and end mean for its VMO."""

    def add(self, m: Mapping) -> bool:
        """Record the new mapping `m` here and in its VMO's list (it holds a reference on the
        VMO); False, and nothing recorded, when it would overlap a mapping."""
        if not self.insert(m):
            return False
        m.vmo.mappings.append(m)
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
        m.vmo.drop_ref()
