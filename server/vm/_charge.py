"""Who pays for committed pages: the charge tree (Linux memcg v2's role; Zircon has none).

Every committed page is charged to one ChargeGroup (a job's, object/_job.py), the one whose
process's fault or syscall committed it, and counts in every ancestor up to the root; the charge
goes when the page is freed. So at every moment a group's charge is the sum of its own pages and
its children's charges, and the root's is the system's committed pages (PhysicalMemory keeps both
in step: see PhysicalMemory.commit).

Limits, as memory.max and memory.high: `max_pages` is a hard limit (a commit that would pass it in
this group or any ancestor fails), `high_pages` a throttle point (passing it counts a `high`
event; the caller decides how long to delay). A limit is None when the group sets none.

Which group a committed page is charged to lives in a ChargeMap per page store: one byte per page
(a slot in the store's own table of groups), so a page costs one more byte, not an object. A store
holds pages of at most 255 groups at once; a 256th group's pages are charged to its nearest
ancestor that has a slot in that store (the limits of the group itself are still checked).

Event-loop only: nothing here awaits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

from rxkernel.native import ffi
from rxkernel.proto import PAGE_SIZE

from ..base import MirroredBool, MirroredInt, MirroredLimit

from ._pagemap import PageMap


@dataclasses.dataclass(slots=True)
class ChargeEvents:
    """memory.events: how often each limit was met (counted in the group whose limit it was).
    Each one is raised with `count`, which tells the listener (the job's waiters)."""

    high: int = 0  # commits that left the charge above high_pages
    max: int = 0  # commits refused (or sent to OOM handling) at max_pages
    oom: int = 0  # times OOM handling ran for this group's limit
    oom_kill: int = 0  # processes killed by it
    listener: Callable[[], None] | None = None

    def count(self, kind: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if self.listener is not None:
            self.listener()

    @property
    def total(self) -> int:
        return self.high + self.max + self.oom + self.oom_kill


class ChargeGroup:
    __slots__ = ("name", "koid", "_parent", "children", "events", "throttled_ns", "_path", "ff")
    # Kept in C (struct rx_ff_group), where the fault thread checks and charges them too.
    charged_pages = MirroredInt("charged")  # own pages plus every child's charge
    # Pages promised to RX_OVERCOMMIT_NEVER VMOs of its subtree and not committed yet
    # (Committed_AS's role): limits count them as taken.
    reserved_pages = MirroredInt("reserved")
    max_pages = MirroredLimit("max")  # memory.max's role
    high_pages = MirroredLimit("high")  # memory.high's role
    retired = MirroredBool("retired")  # its job is gone; it leaves the tree with its last charged page

    def __init__(self, name: str, parent: ChargeGroup | None = None, koid: int = 0) -> None:
        self.name = name  # for messages: "job 1034"
        self.koid = koid  # its job's (0: not known yet, the root's until the kernel names it)
        self.ff = ffi.new("struct rx_ff_group *")
        self.ff.max = self.ff.high = -1
        self.parent = parent
        self.children: list[ChargeGroup] = []
        self.events = ChargeEvents()
        self.throttled_ns = 0  # time its processes' commits were delayed above a high_pages (its own or an ancestor's)
        # This group, then each ancestor up to the root: walked on every commit, and a group's
        # parent never changes while it is in the tree (it leaves childless, _leave).
        self._path: tuple[ChargeGroup, ...] = (self, *parent._path) if parent is not None else (self,)
        if parent is not None:
            parent.children.append(self)

    def __repr__(self) -> str:
        return f"<ChargeGroup {self.name} charged={self.charged_pages} max={self.max_pages}>"

    @property
    def parent(self) -> ChargeGroup | None:
        return self._parent

    @parent.setter
    def parent(self, parent: ChargeGroup | None) -> None:
        self._parent = parent
        self.ff.parent = parent.ff if parent is not None else ffi.NULL


    def lineage(self) -> tuple[ChargeGroup, ...]:
        """This group, then each ancestor up to the root."""
        return self._path

    def living(self) -> ChargeGroup:
        """This group, or (its job gone) its nearest ancestor whose job lives: where new pages go.
        The root never retires."""
        group = self
        while group.retired and group.parent is not None:
            group = group.parent
        return group

    def effective_max_pages(self) -> int | None:
        """The tightest hard limit on this group: its own or an ancestor's."""
        limits = [g.max_pages for g in self.lineage() if g.max_pages is not None]
        return min(limits) if limits else None

    def over_max(self, pages: int) -> ChargeGroup | None:
        """The group (this one or an ancestor) whose hard limit `pages` more would pass (counting
        what is charged and what is reserved), or None."""
        for group in self._path:
            if group.max_pages is not None and group.charged_pages + group.reserved_pages + pages > group.max_pages:
                return group
        return None

    def add_reserved(self, pages: int) -> None:
        """`pages` more (or, negative, fewer) reserved here and in every ancestor."""
        for group in self._path:
            group.reserved_pages += pages
            assert group.reserved_pages >= 0, group
            if group.retired and not group.charged_pages and not group.reserved_pages:
                group._leave()

    def add(self, pages: int, count_events: bool = True) -> None:
        """Charge `pages` here and in every ancestor (the caller checked the limits)."""
        for group in self._path:
            group.charged_pages += pages
            if count_events and group.high_pages is not None and group.charged_pages > group.high_pages:
                group.events.count("high")

    def remove(self, pages: int) -> None:
        for group in self._path:
            assert group.charged_pages >= pages, (group, pages)
            group.charged_pages -= pages
            if group.retired and not group.charged_pages and not group.reserved_pages:
                group._leave()

    def hand_up(self, pages: int, ancestor: ChargeGroup) -> None:
        """Move a charge of `pages` from this group to `ancestor` (a store with no slot left for
        this group): the groups in between stop counting it; the ancestor and above are unchanged."""
        for group in self.lineage():
            if group is ancestor:
                return
            group.charged_pages -= pages
        raise AssertionError(f"{ancestor} is not an ancestor of {self}")

    def retire(self) -> None:
        """Its job is gone: leave the tree now, or with the last page charged or reserved here
        (an offline memcg's role). Its children retired first (a job outlives its children)."""
        self.retired = True
        if not self.charged_pages and not self.reserved_pages:
            self._leave()

    def _leave(self) -> None:
        assert not self.charged_pages and not self.reserved_pages and not self.children, self
        if self.parent is not None:
            self.parent.children.remove(self)
            self.parent = None
            self._path = (self,)


MAX_HIGH_DELAY = 2.0  # seconds: memcg's MEMCG_MAX_HIGH_DELAY_JIFFIES
MIN_HIGH_DELAY = 0.01  # shorter penalties are skipped, as memcg skips those under HZ/100


def high_delay(group: ChargeGroup, pages: int) -> float:
    """How long a commit of `pages` charged to `group` waits (memory.high's penalty, as
    mm/memcontrol.c calculate_high_delay computes it): the worst overage ratio (charge - high) /
    high on the path to the root, squared, times the pages this commit charged, capped at 2 s;
    0 below 10 ms. Four one-page commits wait about as long as one four-page commit."""
    worst = 0.0
    for g in group.lineage():
        if g.high_pages is not None and g.charged_pages > g.high_pages:
            worst = max(worst, (g.charged_pages - g.high_pages) / g.high_pages)
    delay = min(MAX_HIGH_DELAY, worst * worst * pages)
    return delay if delay >= MIN_HIGH_DELAY else 0.0


def limit_words(group: ChargeGroup, pages: int, what: str = "committing") -> str:
    """What a refused commit or reservation says: which group, its limit, its charge."""
    assert group.max_pages is not None
    reserved = f", {group.reserved_pages * PAGE_SIZE} reserved" if group.reserved_pages else ""
    return (f"{what} {pages} pages would pass {group.name}'s commit limit (RX_PROP_JOB_COMMIT_MAX "
            f"{group.max_pages * PAGE_SIZE} bytes, {group.charged_pages * PAGE_SIZE} charged{reserved})")


_MAX_SLOTS = 255


class ChargeMap:
    """Per page of one store, the group its committed page is charged to (0: not committed).
    The slot bytes are a PageMap (C memory, chunked: a store pays only for the stretches it ever
    committed), and the slot table's C half (struct rx_ff_charges: slot -> group, pages per
    slot) is where the fault fast path charges its commits too."""

    __slots__ = ("_map", "_groups", "_slot_of", "ff")

    def __init__(self) -> None:
        self._map = PageMap()
        self._groups: list[ChargeGroup | None] = [None]  # slot -> group; slot 0 is "none"
        self._slot_of: dict[ChargeGroup, int] = {}
        self.ff = ffi.new("struct rx_ff_charges *")
        self.ff.map, self.ff.nslots = self._map.handle, 1

    @property
    def memory_bytes(self) -> int:
        return self._map.memory_bytes

    def _take_slot(self, slot: int, group: ChargeGroup) -> None:
        if slot == len(self._groups):
            self._groups.append(group)
            self.ff.nslots = len(self._groups)
        else:
            self._groups[slot] = group
        self._slot_of[group] = slot
        self.ff.groups[slot] = group.ff

    def _slot(self, group: ChargeGroup) -> tuple[int, ChargeGroup]:
        """A slot for `group`: its own, a new one, a recycled one (its pages all went), or, with
        the table full, its nearest ancestor's (the last slot is kept for the root, so there is
        always one)."""
        slot = self._slot_of.get(group)
        if slot is not None:
            return slot, group
        if len(self._groups) < _MAX_SLOTS or (group.parent is None and len(self._groups) == _MAX_SLOTS):
            slot = len(self._groups)
            self._take_slot(slot, group)
            return slot, group
        pages = self.ff.pages
        for free in range(1, len(self._groups) if group.parent is None else min(len(self._groups), _MAX_SLOTS)):
            old = self._groups[free]
            if not pages[free] and old is not None:
                del self._slot_of[old]
                self._take_slot(free, group)
                return free, group
        for ancestor in group.lineage():
            slot = self._slot_of.get(ancestor)
            if slot is not None:
                return slot, ancestor
            if ancestor.parent is None:  # the root: the kept slot
                return self._slot(ancestor)
        raise AssertionError("unreachable: a lineage ends at the root")

    def assign(self, start: int, end: int, group: ChargeGroup) -> ChargeGroup:
        """Pages [start, end), all newly committed, are charged to `group`. Returns the group that
        holds the charge (see the module note on full tables)."""
        slot, holder = self._slot(group)
        self._map.fill(start, end, slot)
        self.ff.pages[slot] += end - start
        return holder

    def clear(self, start: int, end: int) -> dict[ChargeGroup, int]:
        """Pages [start, end) are no longer committed: how many were charged to each group."""
        out: dict[ChargeGroup, int] = {}
        if not self._map.count(start, end):
            return out
        counts = self._map.histogram(start, end)
        pages = self.ff.pages
        for slot in range(1, len(self._groups)):
            n = counts[slot]
            if n:
                group = self._groups[slot]
                assert group is not None
                out[group] = out.get(group, 0) + n
                pages[slot] -= n
        self._map.set_range(start, end, False)
        return out

    def totals(self) -> dict[ChargeGroup, int]:
        """Every group this store's pages are charged to, with how many."""
        pages = self.ff.pages
        return {g: int(pages[s]) for s, g in enumerate(self._groups) if g is not None and pages[s]}

    def runs_by_group(self, start: int, end: int) -> Iterator[tuple[int, int, ChargeGroup]]:
        """Maximal runs of [start, end) charged to one group (uncommitted pages skipped)."""
        for s, e, slot in self._map.value_runs(start, end):
            if slot:
                group = self._groups[slot]
                assert group is not None
                yield s, e, group
