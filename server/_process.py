"""An rx process: one client connection, its handles, its address space, its control channel.

Identity comes from the kernel, not the client: the pid from SO_PEERCRED at connect, held as a
pidfd so a kill can never hit a recycled pid. The main connection's life is the process's life;
fault and control channels attach to it with the session token and die with it.
"""

from __future__ import annotations

import os
import secrets
import signal
from typing import TYPE_CHECKING

import structlog
import trio

from rxkernel.proto import CONTROL_FORGET, RX_OBJ_TYPE_PROCESS, SESSION_TOKEN_BYTES

from ._handles import HandleTable, KernelObject
from ._mapping import AddressSpace, Mapping

if TYPE_CHECKING:
    from ._coherence import ControlChannel
    from ._kernel import Kernel
    from ._pagestore import PageStore

log = structlog.get_logger("rxd.process")


class Process(KernelObject):
    obj_type = RX_OBJ_TYPE_PROCESS
    type_name = "process"

    def __init__(self, kernel: Kernel, koid: int, pid: int, uid: int) -> None:
        super().__init__(koid)
        self.kernel = kernel
        self.pid = pid
        self.uid = uid
        self.pidfd = _open_pidfd(pid)
        self.session = secrets.token_bytes(SESSION_TOKEN_BYTES)
        self.handles = HandleTable()
        self.aspace = AddressSpace()
        self.control: ControlChannel | None = None
        self.inval_seq = 0  # control requests sent so far (WIRE.md "Ordering")
        self.page_faults = 0
        self.cow_faults = 0
        self.syscalls = 0  # requests served on its main and thread channels
        self.alive = True
        # Stores whose fd the client holds (sent on its control channel), and whether writable.
        self.stores: dict[PageStore, bool] = {}
        self.tokens: set[str] = set()  # export tokens not yet claimed
        self.fork_tickets: set[str] = set()  # rx.fork() tickets its child has not claimed yet
        self.cancel_scopes: list[trio.CancelScope] = []  # one per channel task

    def __repr__(self) -> str:
        return f"<Process koid={self.koid} pid={self.pid}>"

    def attach(self, scope: trio.CancelScope) -> None:
        self.cancel_scopes.append(scope)

    def remove_mapping(self, m: Mapping) -> None:
        """Forget `m` in rxd (the client has unmapped it, or the process is gone)."""
        if not m.alive:
            return
        m.alive = False
        self.aspace.remove(m)
        m.vmo.mappings.remove(m)
        m.vmo.drop_ref()

    def forget_store(self, store: PageStore) -> None:
        """Tell the client to close its fd of `store` (it died, or nothing we map reaches it)."""
        store.holders.discard(self)
        if self.stores.pop(store, None) is not None and self.control is not None:
            self.control.post(CONTROL_FORGET, [(store.store_id,)])

    def prune_stores(self) -> None:
        """After an unmap: forget the stores no remaining mapping can reach."""
        if not self.stores:
            return
        keep = set()
        for m in self.aspace:
            node = m.vmo.node
            keep.add(node.store)
            keep.update(a.store for a in node.ancestors())
        for store in [s for s in self.stores if s not in keep]:
            self.forget_store(store)

    def kill(self) -> None:
        """SIGKILL the client (it failed the coherence protocol) and treat it as dead now."""
        if self.pidfd >= 0 and self.alive:
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.teardown("killed")

    def teardown(self, why: str) -> None:
        """The process is gone: drop everything it held. Idempotent; no awaits, so no one sees a
        half-dead process."""
        if not self.alive:
            return
        self.alive = False
        self.kernel.futexes.process_died(self)
        log.info("process gone", pid=self.pid, koid=self.koid, why=why, mappings=len(self.aspace), handles=len(self.handles))
        for m in list(self.aspace):
            self.remove_mapping(m)
        for store in self.stores:
            store.holders.discard(self)
        self.stores.clear()
        for token in list(self.tokens):
            self.kernel.revoke_token(token)
        for ticket in list(self.fork_tickets):
            self.kernel.cancel_fork_ticket(self, ticket)
        self.handles.clear()
        if self.control is not None:
            self.control.fail_all()
        for scope in self.cancel_scopes:
            scope.cancel()
        self.kernel.processes.pop(self.koid, None)
        self.kernel.sessions.pop(self.session, None)
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        self.drop_ref()  # the kernel's own reference, taken at creation


def _open_pidfd(pid: int) -> int:
    try:
        return os.pidfd_open(pid)
    except OSError:
        return -1
