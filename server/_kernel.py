"""The kernel's global state: memory, processes, VMOs, export tokens, koids.

rxd is single-threaded (one trio loop); this object is only touched from it. Worker threads
(eager fallocate) get plain fds and offsets, never kernel objects.
"""

from __future__ import annotations

import dataclasses
import itertools
import secrets

import structlog
import trio

from rxkernel.proto import RX_ERR_INVALID_ARGS, RX_ERR_NOT_FOUND, RX_OBJ_TYPE_SYSTEM, RxError, reduce_rights

from ._cowpages import CowPages
from ._futex import Futexes
from ._handles import KernelObject
from ._memory import PhysicalMemory
from ._process import Process
from ._vmo import Vmo, collapse_locked, new_root_vmo

log = structlog.get_logger("rxd.kernel")


class SystemResource(KernelObject):
    """What rx_system_handle() names: the whole system, for system-wide information."""

    obj_type = RX_OBJ_TYPE_SYSTEM
    type_name = "system"


@dataclasses.dataclass(slots=True)
class ForkEntry:
    """One mapping of a forking process, for its child to map again at the same place."""

    addr: int
    length: int
    vmo_offset: int
    perms: int
    options: int
    vmo: Vmo  # the snapshot; the ticket holds one reference per distinct snapshot
    rights: int


@dataclasses.dataclass(slots=True)
class _Token:
    exporter: Process
    obj: KernelObject
    rights: int


class Kernel:
    def __init__(self, memory_bytes: int, ack_deadline: float = 5.0) -> None:
        self.memory = PhysicalMemory(memory_bytes)
        self.ack_deadline = ack_deadline
        self.processes: dict[int, Process] = {}
        self.sessions: dict[bytes, Process] = {}
        self.vmos: dict[int, Vmo] = {}
        self._tokens: dict[str, _Token] = {}
        self._fork_tickets: dict[str, tuple[Process, list[ForkEntry]]] = {}
        self._koids = itertools.count(1024)
        self.system = SystemResource(self.new_koid())
        self.system.add_ref()  # lives as long as the kernel
        # Background work that needs the event loop (collapsing COW chains); set by the server.
        self.nursery: trio.Nursery | None = None
        self._collapsing: set[CowPages] = set()
        self.futexes = Futexes(self)

    def new_koid(self) -> int:
        return next(self._koids)

    def new_process(self, pid: int, uid: int) -> Process:
        process = Process(self, self.new_koid(), pid, uid)
        process.add_ref()  # the kernel's own reference; dropped at teardown
        self.processes[process.koid] = process
        self.sessions[process.session] = process
        return process

    def new_vmo(self, size: int, options: int, capacity: int) -> Vmo:
        return self.register_vmo(new_root_vmo(self, self.new_koid(), size, options, capacity))

    def register_vmo(self, vmo: Vmo) -> Vmo:
        self.vmos[vmo.koid] = vmo
        return vmo

    def defer_collapse(self, node: CowPages) -> None:
        """Merge hidden `node` into its only child soon, under the tree lock (it needs acks)."""
        if self.nursery is None or node in self._collapsing:
            return
        self._collapsing.add(node)
        self.nursery.start_soon(self._collapse, node)

    async def _collapse(self, node: CowPages) -> None:
        try:
            async with node.tree.lock:
                # Again if a close changed the node while collapsing awaited acks (collapse then
                # gives up), as long as it is still a live hidden node with one child.
                while node.hidden and len(node.children) == 1 and node.store.fd >= 0:
                    await collapse_locked(node)
        except Exception:
            log.exception("collapsing a copy-on-write node failed; the tree stays correct, only longer")
        finally:
            self._collapsing.discard(node)

    def export(self, exporter: Process, obj: KernelObject, rights: int, requested: int) -> str:
        new_rights = reduce_rights(rights, requested)
        if new_rights is None:
            raise RxError(RX_ERR_INVALID_ARGS, f"rights {requested:#x} exceed the handle's {rights:#x}")
        token = secrets.token_hex(16)  # 128 random bits
        self._tokens[token] = _Token(exporter, obj, new_rights)
        exporter.tokens.add(token)
        obj.add_ref()
        return token

    def claim(self, token: str) -> tuple[KernelObject, int]:
        """One-time: the token is spent whether or not the caller keeps the handle."""
        entry = self._tokens.pop(token, None)
        if entry is None:
            raise RxError(RX_ERR_NOT_FOUND, "no such token (never issued, already spent, or its exporter is gone)")
        entry.exporter.tokens.discard(token)
        return entry.obj, entry.rights

    def revoke_token(self, token: str) -> None:
        entry = self._tokens.pop(token, None)
        if entry is not None:
            entry.exporter.tokens.discard(token)
            entry.obj.drop_ref()

    def new_fork_ticket(self, parent: Process, entries: list[ForkEntry]) -> str:
        ticket = secrets.token_hex(16)
        self._fork_tickets[ticket] = (parent, entries)
        parent.fork_tickets.add(ticket)
        return ticket

    def claim_fork_ticket(self, ticket: str) -> list[ForkEntry]:
        """One-time, like export tokens; the caller takes over the snapshots' references."""
        found = self._fork_tickets.pop(ticket, None)
        if found is None:
            raise RxError(RX_ERR_NOT_FOUND, "no such fork ticket (already claimed, cancelled, or its parent is gone)")
        found[0].fork_tickets.discard(ticket)
        return found[1]

    def cancel_fork_ticket(self, parent: Process, ticket: str) -> None:
        found = self._fork_tickets.get(ticket)
        if found is None or found[0] is not parent:
            return  # claimed already (or never ours): nothing to free
        for vmo in {e.vmo for e in self.claim_fork_ticket(ticket)}:
            vmo.drop_ref()

    @property
    def outstanding_tokens(self) -> int:
        return len(self._tokens)
