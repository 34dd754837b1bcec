"""Physical memory: the budget (`rxd --memory`), the committed-page count, the system counters.

Zircon's PmmNode role: it only counts and allows, and knows nothing of stores, mappings or
processes. Only this object changes the committed-page count, and it charges the charge tree
(_charge.py) in the same step, so the budget check, the limits, the count and the charges cannot
drift apart: the root group's charge is committed_pages at every moment. Page stores ask it before they commit (PageStore.commit) and tell it when
they free. This is where the allocator's watermarks, pressure levels and the "a commit that cannot
be met now asks reclaim" hook go (ARCHITECTURE.md "Where the next features plug in").
Event-loop only: every method runs to completion without awaiting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from rxkernel.native import ffi
from rxkernel.proto import PAGE_SIZE, RX_ERR_NO_MEMORY, RxError

from ..base import MirroredInt
from ._charge import ChargeGroup, limit_words


class CommitRefused(RxError):
    """RX_ERR_NO_MEMORY from a commit: `group` is the charge group whose hard limit it would pass,
    None for the budget (what OOM handling frees memory for)."""

    def __init__(self, message: str, group: ChargeGroup | None) -> None:
        super().__init__(RX_ERR_NO_MEMORY, message)
        self.group = group


@dataclasses.dataclass(slots=True)
class Counters:
    page_faults: int = 0  # fault requests served (any outcome that mapped something)
    zero_page_faults: int = 0  # faults answered with the shared zero page
    page_ins: int = 0  # pages brought in from a backing store (eviction comes later: stays 0 until then)
    page_outs: int = 0
    shootdowns: int = 0  # control requests sent to clients
    clients_killed: int = 0  # clients that did not ack in time
    oom_kills: int = 0  # processes the OOM killer ended
    cow_faults: int = 0  # write faults that split a shared page (copy-on-write)
    cow_pages_copied: int = 0  # pages copied by those splits (and by writes and commits to clones)
    cache_op_pages: int = 0  # resident pages walked by rx_vmo_op_range CACHE_* ops (line by line)


class PhysicalMemory:
    total_pages = MirroredInt("total")  # the budget
    committed_pages = MirroredInt("committed")  # invariant: every store's committed pages, and root's charge
    # Promised to RX_OVERCOMMIT_NEVER VMOs, not committed yet (Linux's Committed_AS minus what is
    # resident): a commit that is not one of those promises must fit beside them.
    reserved_pages = MirroredInt("reserved")

    def __init__(self, budget_bytes: int) -> None:
        # The counters live in C (struct rx_ff_pmm), where the fault fast path commits too.
        self.ff = ffi.new("struct rx_ff_pmm *")
        self.ff.total = budget_bytes // PAGE_SIZE
        self.ff.floor = 1 << 62  # the fault thread commits nothing until the pressure levels say
        self.root = ChargeGroup("the root job")
        self.counters = Counters()
        # Told after every change of committed pages (the pressure levels: VmContext sets it).
        self.on_free_changed: Callable[[], None] = lambda: None

    @property
    def free_pages(self) -> int:
        return self.total_pages - self.committed_pages

    def commit(self, pages: int, group: ChargeGroup, covered: int = 0) -> None:
        """The one step every commit takes: `pages` more committed, charged to `group` and its
        ancestors, or RX_ERR_NO_MEMORY (a hard limit of the group or an ancestor, then the
        budget, each counting reservations as taken) and nothing changed. `covered` of them
        fill a reservation `group` holds: those were counted when reserved and are not checked
        again, which is why an RX_OVERCOMMIT_NEVER VMO's commits never fail. Reclaim will plug
        in here: a commit that would fail frees first."""
        assert 0 <= covered <= pages and covered <= group.reserved_pages, (pages, covered, group)
        self._check(pages - covered, group, "committing")
        self.committed_pages += pages
        group.add(pages)  # first: a retired group emptied of its reservation must not leave the tree
        if covered:
            self.reserved_pages -= covered
            group.add_reserved(-covered)
        if pages:
            self.on_free_changed()

    def reserve(self, pages: int, group: ChargeGroup) -> None:
        """Promise `pages` to `group` (an RX_OVERCOMMIT_NEVER VMO), or RX_ERR_NO_MEMORY."""
        self._check(pages, group, "reserving")
        self.reserved_pages += pages
        group.add_reserved(pages)

    def unreserve(self, pages: int, group: ChargeGroup) -> None:
        assert 0 <= pages <= self.reserved_pages, (pages, self.reserved_pages)
        self.reserved_pages -= pages
        group.add_reserved(-pages)

    def _check(self, pages: int, group: ChargeGroup, what: str) -> None:
        assert pages >= 0, pages
        over = group.over_max(pages)
        if over is not None:
            over.events.count("max")
            raise CommitRefused(limit_words(over, pages, what), over)
        available = self.free_pages - self.reserved_pages
        if pages > available:
            held = f", {self.reserved_pages} more reserved" if self.reserved_pages else ""
            raise CommitRefused(
                f"{what} {pages} pages would pass the {self.total_pages * PAGE_SIZE} byte budget "
                f"({self.free_pages} pages free{held})",
                None,
            )

    def uncommit(self, pages: int, group: ChargeGroup) -> None:
        """`pages` charged to `group` were freed."""
        assert 0 <= pages <= self.committed_pages, (pages, self.committed_pages)
        self.committed_pages -= pages
        group.remove(pages)
        if pages:
            self.on_free_changed()
