"""An rx process: one client connection, its handles, its address space, its control channel.

Identity comes from the kernel, not the client: the pid from SO_PEERCRED at connect, held as a
pidfd so a kill can never hit a recycled pid. The main connection's life is the process's life;
fault and control channels attach to it with the session token and die with it. To the VM layer
a Process is a `Mapper` (vm/_mapper.py); to the kernel, one entry in its registries, which it
leaves through the `on_gone` observer the kernel registered.
Event-loop only: every field is changed by rxd's one thread, and teardown never awaits, so no one
sees a half-dead process.
"""

from __future__ import annotations

import os
import secrets
import select
import signal
import socket
from collections.abc import Callable

import structlog
import trio

from rxkernel.proto import RX_OBJ_TYPE_PROCESS, SESSION_TOKEN_BYTES

from ..base import KernelObject, MirroredBool, MirroredInt, hung_up
from ..vm import (
    ChargeGroup,
    AddressSpace,
    ControlPort,
    Mapping,
    PageStore,
    drop_stores,
    forget_store,
    prune_stores,
)
from ._handles import HandleTable
from ._job import Job

log = structlog.get_logger("rxd.process")


class Process(KernelObject):
    obj_type = RX_OBJ_TYPE_PROCESS
    type_name = "process"
    # Kept in the address space's C struct, which the fault thread reads (base/_mirrored.py).
    inval_seq = MirroredInt("inval_seq", via="aspace")  # control requests sent so far (WIRE.md "Ordering")
    page_faults = MirroredInt("page_faults", via="aspace")  # served, by the fast path or the trio side
    alive = MirroredBool("alive", via="aspace")

    def __init__(self, koid: int, pid: int, uid: int, job: Job, on_gone: Callable[[Process], None]) -> None:
        super().__init__(koid)
        self.pid = pid
        self.job = job  # never changes; holds a reference on the job (add_process) until teardown
        self.oom_score_adj = 0  # RX_PROP_PROCESS_OOM_SCORE_ADJ
        job.add_process()
        self.uid = uid
        self.pidfd = _open_pidfd(pid)
        self.session = secrets.token_bytes(SESSION_TOKEN_BYTES)
        self.handles = HandleTable()
        self.aspace = AddressSpace()
        self.aspace.ff.charge = job.charge.ff  # (the job never changes)
        self.control: ControlPort | None = None
        # inval_seq, page_faults and alive live in the fault fast path's struct (aspace.ff),
        # which reads them; the properties below are their Python face.
        self.cow_faults = 0
        self.syscalls = 0  # requests served on its main and thread channels
        self.alive = True
        # Stores whose fd the client holds (sent on its control channel), and whether writable.
        self.stores: dict[PageStore, bool] = {}
        self.tokens: set[str] = set()  # export tokens not yet claimed (the kernel's Tokens keeps them)
        self.fork_tickets: set[str] = set()  # rx.fork() tickets its child has not claimed yet
        self.claimed_fork_tickets: set[str] = set()  # claimed before this process handed them off
        self.cancel_scopes: set[trio.CancelScope] = set()  # one per live channel task
        self.thread_channels = 0  # open thread channels (capped: each is an fd in rxd)
        self.main_channel: socket.socket | None = None  # set once the hello is answered
        self._on_gone = on_gone

    def __repr__(self) -> str:
        return f"<Process koid={self.koid} pid={self.pid}>"

    @property
    def charge(self) -> ChargeGroup:
        """Where pages this process commits are charged: its job's group."""
        return self.job.charge

    def attach(self, scope: trio.CancelScope) -> None:
        self.cancel_scopes.add(scope)

    def detach(self, scope: trio.CancelScope) -> None:
        self.cancel_scopes.discard(scope)

    def remove_mapping(self, m: Mapping) -> None:
        """Forget `m` in rxd (the client has unmapped it, or the process is gone)."""
        self.aspace.forget(m)

    def forget_store(self, store: PageStore) -> None:
        forget_store(self, store)

    def prune_stores(self) -> None:
        prune_stores(self)

    def kill(self) -> None:
        """SIGKILL the client (it failed the coherence protocol) and treat it as dead now."""
        if self.pidfd >= 0 and self.alive:
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.teardown("killed")

    def hung_up(self) -> bool:
        """The client exited (its pidfd is readable) or closed its main channel (EOF, with no
        request unread before it), whether or not the main channel's task has got that far."""
        if not self.alive:
            return True
        if self.pidfd >= 0 and select.select([self.pidfd], [], [], 0)[0]:
            return True
        return self.main_channel is not None and hung_up(self.main_channel)

    def teardown(self, why: str) -> None:
        """The process is gone: drop everything it held. Idempotent; no awaits."""
        if not self.alive:
            return
        self.alive = False
        log.info("process gone", pid=self.pid, koid=self.koid, why=why, mappings=len(self.aspace), handles=len(self.handles))
        for m in self.aspace:
            self.remove_mapping(m)
        drop_stores(self)  # first: a store freed below then has no holder to punch it for or tell
        self._on_gone(self)  # the kernel: futexes, tokens, fork tickets, registries
        self.handles.clear()
        if self.control is not None:
            self.control.fail_all()
        for scope in list(self.cancel_scopes):
            scope.cancel()
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        self.main_channel = None
        self.drop_ref()  # the kernel's own reference, taken at creation


def _open_pidfd(pid: int) -> int:
    try:
        return os.pidfd_open(pid)
    except OSError:
        return -1
