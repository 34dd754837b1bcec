"""The VM layer's shared state, one per rxd: physical memory, the shootdown policy, the queue of
deferred collapses, and every live VMO by koid. Every copy-on-write tree points here, so nothing
in vm/ needs to reach up to the kernel object that owns this."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from rxkernel.native import ffi, lib

from ._collapse import CollapseQueue
from ._pmm import PhysicalMemory
from ._pressure import Pressure, Thresholds
from ._psi import Stalls
from ._shootdown import Coherence

from ._charge import ChargeGroup

if TYPE_CHECKING:
    from ._mapper import Mapper
    from ._vmo import Vmo


# Why the fault fast path handed a fault to the trio side, by RX_FF_* number (rxfastfault.h).
SLOW_FAULT_REASONS = ("", "no_mapping", "locked", "denied", "out_of_range", "ancestor", "commit", "store", "gone", "frame")
assert len(SLOW_FAULT_REASONS) == lib.RX_FF_REASONS and lib.RX_FF_FRAME == SLOW_FAULT_REASONS.index("frame")


async def _nothing_to_free(group: ChargeGroup | None, faulting: Mapper) -> bool:
    return False


class VmContext:
    def __init__(self, memory_bytes: int, ack_deadline: float, pressure: Thresholds | None = None,
                 pressure_hysteresis: float = 10.0) -> None:
        self.memory = PhysicalMemory(memory_bytes)
        memory = self.memory
        thresholds = pressure if pressure is not None else Thresholds.of_budget(memory.total_pages)
        self.pressure = Pressure(thresholds, pressure_hysteresis, lambda: memory.free_pages)
        memory.on_free_changed = self.pressure.update
        self.pressure.fast_path = memory.ff
        memory.ff.floor = self.pressure.fast_floor()
        self.stalls = Stalls()  # PSI: time processes waited for memory, per charge group
        # OOM handling, for a fault whose commit was refused: free memory for the group whose
        # limit was hit (None: the budget) and say whether to retry. The kernel sets the killer.
        self.out_of_memory: Callable[[ChargeGroup | None, Mapper], Awaitable[bool]] = _nothing_to_free
        self.coherence = Coherence(ack_deadline, self.memory.counters)
        # What the fault fast path counts (struct rx_ff_counters): faults it served, and those
        # it handed to the trio side by reason (SLOW_FAULT_REASONS).
        self.fast_counters = ffi.new("struct rx_ff_counters *")
        self.collapses = CollapseQueue()
        # Every live VMO: a Vmo adds itself when made and leaves when its last reference goes.
        self.vmos: dict[int, Vmo] = {}
