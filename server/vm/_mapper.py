"""What the VM layer needs of a process that maps VMOs, and of its control channel.

The VM layer sits below processes and the transport (ARCHITECTURE.md "Layers"): it never imports
them. A mapping points at its Mapper; a shootdown talks to the Mapper's ControlPort. rxd's Process
(object/) and ControlChannel (ipc/) are what fill these roles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._aspace import AddressSpace
    from ._charge import ChargeGroup
    from ._pagestore import PageStore

ControlRanges = list[tuple[int, ...]]


class ControlPort(Protocol):
    """rxd's end of a client's control channel (WIRE.md "Control channel")."""

    closed: bool  # the channel ended (EOF, an error, the process's teardown): no ack will come

    async def request(self, op: int, ranges: ControlRanges, fds: list[int] | None = None) -> bool:
        """Send one request and wait for its ack; False if the channel died or the client refused."""
        ...

    def post(self, op: int, ranges: ControlRanges) -> None:
        """Send a request nobody waits for (FORGET), in order."""
        ...

    def cancel_forget(self, store_id: int) -> None:
        """Drop a FORGET of store_id still queued (a STORE of it is about to go out)."""
        ...

    def fail_all(self) -> None:
        """The process is gone: every request still waiting for an ack fails now."""
        ...


class Mapper(Protocol):
    """A process as the VM layer sees it: an address space, a control channel, store fds it
    holds, fault counters, and a way to end it when it breaks the coherence protocol."""

    pid: int
    koid: int
    alive: bool
    aspace: AddressSpace
    control: ControlPort | None
    inval_seq: int  # control requests sent so far (WIRE.md "Ordering")
    stores: dict[PageStore, bool]  # stores whose fd the client holds, and whether writable
    page_faults: int
    cow_faults: int

    @property
    def charge(self) -> ChargeGroup:
        """The charge group pages this process commits are charged to (its job's)."""
        ...

    def kill(self) -> None:
        """SIGKILL the client and tear it down now (its mappings go, so operations complete)."""
        ...

    def hung_up(self) -> bool:
        """The client has exited or closed its main channel, whether or not rxd has read that far."""
        ...

    def teardown(self, why: str) -> None:
        """The client is gone: drop everything it held (idempotent)."""
        ...

    def forget_store(self, store: PageStore) -> None:
        """`store` died or is out of reach: the client is told to close its fd."""
        ...
