"""Jobs: groups of processes in a tree (Zircon's JobDispatcher), each with a charge group that
carries memcg-style commit limits (vm/_charge.py).

The kernel makes the root job and, below it, the default job every process joins when its hello
names none. A process is born in a job and never changes job; `rx.fork()` children join their
parent's. A job lives while a handle, a child job or a process refers to it. When it goes, its
charge group stays in the tree for as long as pages are still charged to it (a VMO another job's
process holds), as memcg keeps an offline cgroup until its last page is freed: a job's charge is
always the sum over its subtree.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import trio

from rxkernel.proto import RX_OBJ_TYPE_JOB, RX_OVERCOMMIT_HEURISTIC

from ..base import KernelObject, Sleepers
from ..vm import ChargeGroup


class Job(KernelObject):
    obj_type = RX_OBJ_TYPE_JOB
    type_name = "job"

    def __init__(self, koid: int, parent: Job | None, charge: ChargeGroup | None = None) -> None:
        super().__init__(koid)
        self.parent = parent
        self.children: set[Job] = set()
        self.num_processes = 0  # live processes born in this job (the kernel's registry has them)
        self.charge: ChargeGroup = charge if charge is not None else ChargeGroup(f"job {koid}", parent.charge if parent else None, koid)
        self.charge.koid = koid
        # Its properties (rx_object_set_property): the limits, kept in self.charge, and the
        # overcommit mode (None: its parent's).
        self.overcommit: int | None = None
        self._watchers = Sleepers()  # rx_job_wait_events callers: all wake at each event
        self.charge.events.listener = self._raised
        self.kill_on_oom = False  # RX_PROP_JOB_KILL_ON_OOM
        self.oom_group = False  # RX_PROP_JOB_OOM_GROUP
        self.alive = True
        self.on_gone: Callable[[Job], None] | None = None  # the kernel forgets it
        if parent is not None:
            parent.children.add(self)
            parent.add_ref()

    def __repr__(self) -> str:
        return f"<Job {self.koid} charged={self.charge.charged_pages}>"

    def _raised(self) -> None:
        self._watchers.wake_all()

    async def wait_events(self, known_total: int, deadline: float, channel: socket.socket | None) -> int:
        """Its events' total (high + max + oom + oom_kill) once it differs from `known_total`, or
        at `deadline` (trio time) whatever it is: how a watcher acts before COMMIT_MAX is met.
        The caller's thread `channel` is where it sleeps (base.Sleepers)."""
        while self.charge.events.total == known_total and trio.current_time() < deadline:
            await self._watchers.sleep(channel, deadline)
        return self.charge.events.total

    def effective_overcommit(self) -> int:
        """Its own RX_PROP_JOB_OVERCOMMIT, else the nearest ancestor's, else HEURISTIC."""
        job: Job | None = self
        while job is not None:
            if job.overcommit is not None:
                return job.overcommit
            job = job.parent
        return RX_OVERCOMMIT_HEURISTIC

    @property
    def depth(self) -> int:
        return 0 if self.parent is None else self.parent.depth + 1

    def is_below(self, other: Job) -> bool:
        """True if this job is a strict descendant of `other`."""
        job = self.parent
        while job is not None:
            if job is other:
                return True
            job = job.parent
        return False

    def subtree(self) -> list[Job]:
        """This job and every live descendant, parents first."""
        out, todo = [], [self]
        while todo:
            job = todo.pop()
            out.append(job)
            todo.extend(sorted(job.children, key=lambda j: j.koid, reverse=True))  # (popped in koid order)
        return out

    def add_process(self) -> None:
        self.num_processes += 1
        self.add_ref()

    def remove_process(self) -> None:
        """A process of this job finished its teardown (called once per process)."""
        self.num_processes -= 1
        self.drop_ref()

    def _on_zero_refs(self) -> None:
        self.alive = False
        if self.on_gone is not None:
            self.on_gone(self)
        self.charge.retire()
        parent, self.parent = self.parent, None
        if parent is not None:
            parent.children.discard(self)
            parent.drop_ref()
