"""The kernel's global state: the VM context, processes, tokens, fork tickets, futexes, koids.

rxd is single-threaded (one trio loop); this object is only touched from it. Worker threads
(eager fallocate, large punches) get plain fds and offsets, never kernel objects. This is the top
of the object layer: it owns the registries and is the observer that a process's teardown and
the VM layer's VMO registry report to, so nothing below it calls up.
"""

from __future__ import annotations

import itertools

import trio

from rxkernel.native import ffi
from rxkernel.proto import PAGE_SIZE, RX_ERR_BAD_STATE, RX_ERR_NOT_FOUND, RX_ERR_WRONG_TYPE, RX_OBJ_TYPE_SYSTEM, RxError

from ..base import KernelObject
from ..vm import PhysicalMemory, Thresholds, VmContext, Vmo, new_root_vmo
from ._futex import Futexes
from ._job import Job
from ._oom import OomKiller
from ._process import Process
from ._tokens import ForkTickets, Tokens
from ._vdso import Vdso


class SystemResource(KernelObject):
    """What rx_system_handle() names: the whole system, for system-wide information."""

    obj_type = RX_OBJ_TYPE_SYSTEM
    type_name = "system"


class Kernel:
    def __init__(self, memory_bytes: int, ack_deadline: float = 5.0, clock_mode: str = "auto",
                 pressure: Thresholds | None = None, pressure_hysteresis: float = 10.0, oom_kill: bool = True) -> None:
        self.vm = VmContext(memory_bytes, ack_deadline, pressure, pressure_hysteresis)
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
        # The job tree: the root job's charge group is the system's (PhysicalMemory.root), and a
        # process whose hello names no job is born in the default job below it.
        self.root_job = Job(self.new_koid(), None, self.memory.root)
        self.root_job.add_ref()
        self.default_job = Job(self.new_koid(), self.root_job)
        self.default_job.add_ref()
        self.jobs: dict[int, Job] = {}  # every live job by koid (the two above included)
        for job in (self.root_job, self.default_job):
            self.register_job(job)
        self.oom = OomKiller(self.memory, self.processes, lambda g: self.jobs.get(g.koid), self.root_job, enabled=oom_kill)
        self.vm.out_of_memory = self.oom
        self.futexes = Futexes(self.processes, self.vdso.monotonic_ns)  # deadlines are on the rx clock
        # The call front end's counters (ipc/_callfront.py fills them; KMEM shows them).
        self.call_counters = ffi.new("struct rx_cf_counters *")
        self.vm.pressure.publish = self.vdso.set_pressure  # every client reads the level there

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
        self.fork_tickets.nursery = nursery
        nursery.start_soon(self.vm.pressure.run)
        nursery.start_soon(self.vm.stalls.run)

    def new_koid(self) -> int:
        return next(self._koids)

    def register_job(self, job: Job) -> None:
        self.jobs[job.koid] = job
        job.on_gone = self._job_gone

    def _job_gone(self, job: Job) -> None:
        self.jobs.pop(job.koid, None)
        self.vm.stalls.forget(job.charge)

    def _job_of_hello(self, token: str | None) -> Job:
        """The job a new process is born in, with a reference the caller drops once the process
        holds its own: the one its hello's token names (an export token of a job handle, spent
        now; or an rx.fork() ticket: the forking parent's job), else the default job. RxError
        (nothing spent) if the token names no job."""
        if token is None:
            self.default_job.add_ref()
            return self.default_job
        forked = self.fork_tickets.job_of(token)
        if forked is not None:
            forked.add_ref()
            return forked
        obj = self.tokens.peek(token)
        if obj is None:
            raise RxError(RX_ERR_NOT_FOUND, "the hello's job token names nothing (never issued, already spent, or its "
                          "exporter is gone): export a job handle with rx_handle_export for each process")
        if not isinstance(obj, Job):
            raise RxError(RX_ERR_WRONG_TYPE, f"the hello's job token names a {obj.type_name}, not a job")
        if not obj.alive:
            raise RxError(RX_ERR_BAD_STATE, "the hello's job token names a job that is gone")
        self.tokens.claim(token)  # its reference is now the caller's
        return obj

    def new_job(self, parent: Job) -> Job:
        job = Job(self.new_koid(), parent)
        self.register_job(job)
        return job

    def new_process(self, pid: int, uid: int, job_token: str | None = None) -> Process:
        """A process born in the job its hello names (Kernel._job_of_hello); it never changes job."""
        job = self._job_of_hello(job_token)
        try:
            process = Process(self.new_koid(), pid, uid, job, self._process_gone)
        finally:
            job.drop_ref()
        self.vm.stalls.joined(job.charge, 1)  # (PSI counts its tasks)
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
        self.vm.stalls.joined(process.job.charge, -1)
        process.job.remove_process()

    def new_vmo(self, size: int, options: int, capacity: int) -> Vmo:
        return new_root_vmo(self.vm, self.new_koid(), size, options, capacity)
