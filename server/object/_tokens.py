"""One-time capabilities rxd hands out: export tokens (rx_handle_export / import) and rx.fork()
tickets. Each is 128 random bits and spent on first use. An export token dies with the process
that made it; a fork ticket too until its parent hands it to the child, then with the child.
Event-loop only."""

from __future__ import annotations

import dataclasses
import os
import secrets
from typing import TYPE_CHECKING

import trio

from rxkernel.proto import RX_ERR_INVALID_ARGS, RX_ERR_NOT_FOUND, RxError, reduce_rights

from ..base import KernelObject
from ..vm import Vmo

if TYPE_CHECKING:
    from ._job import Job
    from ._process import Process


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


class Tokens:
    """Export tokens: each holds a reference on its object until claimed or revoked."""

    def __init__(self) -> None:
        self._tokens: dict[str, _Token] = {}

    def __len__(self) -> int:
        return len(self._tokens)

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
        """One-time: the token is spent whether or not the caller keeps the handle. The caller
        takes over the token's reference."""
        entry = self._tokens.pop(token, None)
        if entry is None:
            raise RxError(RX_ERR_NOT_FOUND, "no such token (never issued, already spent, or its exporter is gone)")
        entry.exporter.tokens.discard(token)
        return entry.obj, entry.rights

    def peek(self, token: str) -> KernelObject | None:
        """What an unspent token names (nothing is spent)."""
        entry = self._tokens.get(token)
        return entry.obj if entry is not None else None

    def revoke(self, token: str) -> None:
        entry = self._tokens.pop(token, None)
        if entry is not None:
            entry.exporter.tokens.discard(token)
            entry.obj.drop_ref()


class _Ticket:
    __slots__ = ("parent", "entries", "job", "pidfd", "watch")

    def __init__(self, parent: Process, entries: list[ForkEntry], job: Job) -> None:
        self.parent: Process | None = parent  # None once handed to the child
        self.entries = entries
        self.job = job  # the job the child is born in (a reference: the parent may be gone)
        self.pidfd = -1  # the child's, once handed off
        self.watch: trio.CancelScope | None = None


class ForkTickets:
    """rx.fork() tickets: a parent's snapshots waiting for its child to claim them. A ticket is
    the parent's until rx_fork_handoff names the child, then the child's: it goes when the child
    claims it or exits (a pidfd watched in `nursery`), whatever the parent does meanwhile."""

    def __init__(self) -> None:
        self._tickets: dict[str, _Ticket] = {}
        self.nursery: trio.Nursery | None = None  # (set when serving)

    def new(self, parent: Process, entries: list[ForkEntry]) -> str:
        ticket = secrets.token_hex(16)
        parent.job.add_ref()
        self._tickets[ticket] = _Ticket(parent, entries, parent.job)
        parent.fork_tickets.add(ticket)
        return ticket

    def claim(self, ticket: str, by_child: bool = True) -> list[ForkEntry]:
        """One-time, like export tokens; the caller takes over the snapshots' references."""
        found = self._tickets.pop(ticket, None)
        if found is None:
            raise RxError(RX_ERR_NOT_FOUND, "no such fork ticket (already claimed, cancelled, or its parent is gone)")
        if found.parent is not None:
            found.parent.fork_tickets.discard(ticket)
            if by_child:  # before the parent handed it off: that hand-off, when it comes, finds this
                found.parent.claimed_fork_tickets.add(ticket)
        if found.watch is not None:
            found.watch.cancel()  # (its task closes the pidfd)
        found.job.drop_ref()
        return found.entries

    def job_of(self, ticket: str) -> Job | None:
        """The job an unclaimed ticket's child is born in (nothing is spent)."""
        found = self._tickets.get(ticket)
        return found.job if found is not None else None

    def cancel(self, parent: Process, ticket: str) -> None:
        found = self._tickets.get(ticket)
        if found is None or found.parent is not parent:
            return  # claimed already, handed to the child, or never ours: not ours to free
        self._free(ticket)

    def _free(self, ticket: str) -> None:
        for vmo in {e.vmo for e in self.claim(ticket, by_child=False)}:
            vmo.drop_ref()

    def hand_off(self, parent: Process, ticket: str, pidfd: int) -> None:
        """The ticket is the child's (behind `pidfd`, which this takes) from now on. RxError
        (pidfd closed) if it is not the parent's to give."""
        found = self._tickets.get(ticket)
        if found is None and ticket in parent.claimed_fork_tickets:
            parent.claimed_fork_tickets.discard(ticket)
            os.close(pidfd)  # the child was quicker: it has claimed it already
            return
        if found is None or found.parent is not parent:
            os.close(pidfd)
            raise RxError(RX_ERR_NOT_FOUND, "no such fork ticket of yours (never issued, cancelled, or handed off already)")
        parent.fork_tickets.discard(ticket)
        found.parent = None
        found.pidfd = pidfd
        if self.nursery is None:
            os.close(pidfd)  # (no event loop to watch it in: it lives until claimed)
            found.pidfd = -1
            return
        found.watch = trio.CancelScope()
        self.nursery.start_soon(self._watch, ticket, found)

    async def _watch(self, ticket: str, found: _Ticket) -> None:
        assert found.watch is not None
        try:
            with found.watch:
                await trio.lowlevel.wait_readable(found.pidfd)  # the child exited
                if self._tickets.get(ticket) is found:
                    self._free(ticket)  # it never claimed: the snapshots go
        finally:
            trio.lowlevel.notify_closing(found.pidfd)
            os.close(found.pidfd)
