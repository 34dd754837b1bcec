"""The kernel's global state: the VM context, processes, tokens, fork tickets, futexes, koids.

rxd is single-threaded (one trio loop); this object is only touched from it. Worker threads
(eager fallocate, large punches) get plain fds and offsets, never kernel objects. This is the top
of the object layer: it owns the registries and is the observer that a process's teardown and
the VM layer's VMO registry report to, so nothing below it calls up.
"""

from __future__ import annotations

import itertools

import trio

from rxkernel.proto import PAGE_SIZE, RX_OBJ_TYPE_SYSTEM

from ..base import KernelObject
from ..vm import PhysicalMemory, VmContext, Vmo, new_root_vmo
from ._futex import Futexes
from ._process import Process
from ._tokens import ForkTickets, Tokens
from ._vdso import Vdso


class SystemResource(KernelObject):
    """What rx_system_handle() names: the whole system, for system-wide information."""

    obj_type = RX_OBJ_TYPE_SYSTEM
    type_name = "system"


class Kernel:
    def __init__(self, memory_bytes: int, ack_deadline: float = 5.0, clock_mode: str = "auto") -> None:
        self.vm = VmContext(memory_bytes, ack_deadline)
        # The vDSO image and vvar page every client maps; also rxd's own clock: vdso.monotonic_ns()
        # is what every client's rx_clock_get_monotonic() reads.
        self.vdso = Vdso(self.memory.total_pages * PAGE_SIZE, clock_mode)
        self.processes: dict[int, Process] = {}
        self.sessions: dict[bytes, Process] = {}
        self.tokens = Tokens()
        self.fork_tickets = ForkTickets()
        self._koids = itertools.count(1024)
        self.system = SystemResource(self.new_koid())
        self.system.add_ref()  # lives as long as the kernel
        self.futexes = Futexes(self.processes, self.vdso.monotonic_ns)  # deadlines are on the rx clock

    @property
    def memory(self) -> PhysicalMemory:
        return self.vm.memory

    @property
    def vmos(self) -> dict[int, Vmo]:
        return self.vm.vmos

    def serve_in(self, nursery: trio.Nursery) -> None:
        """Background work from now on runs in `nursery` (collapsing chains, reaping dead owners'
        futex words); until then it is skipped."""
        self.vm.collapses.nursery = nursery
        self.futexes.nursery = nursery

    def new_koid(self) -> int:
        return next(self._koids)

    def new_process(self, pid: int, uid: int) -> Process:
        process = Process(self.new_koid(), pid, uid, self._process_gone)
        process.add_ref()  # the kernel's own reference; dropped at teardown
        self.processes[process.koid] = process
        self.sessions[process.session] = process
        return process

    def _process_gone(self, process: Process) -> None:
        """A process's teardown began: what the kernel holds on its behalf goes with it."""
        self.futexes.process_died(process)
        for token in list(process.tokens):
            self.tokens.revoke(token)
        for ticket in list(process.fork_tickets):
            self.fork_tickets.cancel(process, ticket)
        self.processes.pop(process.koid, None)
        self.sessions.pop(process.session, None)

    def new_vmo(self, size: int, options: int, capacity: int) -> Vmo:
        return new_root_vmo(self.vm, self.new_koid(), size, options, capacity)
