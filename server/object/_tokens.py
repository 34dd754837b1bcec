"""One-time capabilities rxd hands out: export tokens (rx_handle_export / import) and rx.fork()
tickets. Each is 128 random bits, spent on first use, and dies with the process that made it.
Event-loop only."""

from __future__ import annotations

import dataclasses
import secrets
from typing import TYPE_CHECKING

from rxkernel.proto import RX_ERR_INVALID_ARGS, RX_ERR_NOT_FOUND, RxError, reduce_rights

from ..base import KernelObject
from ..vm import Vmo

if TYPE_CHECKING:
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


class ForkTickets:
    """rx.fork() tickets: a parent's snapshots waiting for its child to claim them."""

    def __init__(self) -> None:
        self._tickets: dict[str, tuple[Process, list[ForkEntry]]] = {}

    def new(self, parent: Process, entries: list[ForkEntry]) -> str:
        ticket = secrets.token_hex(16)
        self._tickets[ticket] = (parent, entries)
        parent.fork_tickets.add(ticket)
        return ticket

    def claim(self, ticket: str) -> list[ForkEntry]:
        """One-time, like export tokens; the caller takes over the snapshots' references."""
        found = self._tickets.pop(ticket, None)
        if found is None:
            raise RxError(RX_ERR_NOT_FOUND, "no such fork ticket (already claimed, cancelled, or its parent is gone)")
        found[0].fork_tickets.discard(ticket)
        return found[1]

    def parent_of(self, ticket: str) -> Process | None:
        """The forking process behind an unclaimed ticket (nothing is spent)."""
        found = self._tickets.get(ticket)
        return found[0] if found is not None else None

    def cancel(self, parent: Process, ticket: str) -> None:
        found = self._tickets.get(ticket)
        if found is None or found[0] is not parent:
            return  # claimed already (or never ours): nothing to free
        for vmo in {e.vmo for e in self.claim(ticket)}:
            vmo.drop_ref()
