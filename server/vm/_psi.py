"""Stall accounting like Linux's PSI for memory (Documentation/accounting/psi.rst), per charge
group: the system is the root group, a job its own.

A stall is time a process's fault or call waited for memory: throttled above a commit_high, in
OOM handling (reclaim, once it exists). `some` is the time at least one process of the group's
subtree was stalled; `full` the time all of them were (rxd sees processes, not threads: a
process counts as one task, and as many stalled waits as the subtree has processes make it
full). Each has a total (µs) and running averages over 10, 60 and 300 s of the share of time
stalled, in percent, updated every 2 s with PSI's exponential decay.

StallClock is the pure accounting (times are passed in); Stalls runs it in rxd.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Iterator

import trio

from ._charge import ChargeGroup

PERIOD_S = 2.0  # PSI's averaging period
WINDOWS_S = (10.0, 60.0, 300.0)
_DECAY = tuple(math.exp(-PERIOD_S / w) for w in WINDOWS_S)


class StallClock:
    """One group's stall times."""

    __slots__ = ("tasks", "stalled", "some_ns", "full_ns", "since", "avg_some", "avg_full", "_period_some", "_period_full")

    def __init__(self, now_ns: int) -> None:
        self.tasks = 0  # processes in the subtree
        self.stalled = 0  # waits for memory in progress in the subtree
        self.some_ns = self.full_ns = 0
        self.since = now_ns
        self.avg_some = [0.0, 0.0, 0.0]
        self.avg_full = [0.0, 0.0, 0.0]
        self._period_some = self._period_full = 0  # ns stalled since the last average update

    def account(self, now_ns: int) -> None:
        dt = max(0, now_ns - self.since)
        self.since = now_ns
        if self.stalled:
            self.some_ns += dt
            self._period_some += dt
            if self.tasks and self.stalled >= self.tasks:
                self.full_ns += dt
                self._period_full += dt

    def change(self, now_ns: int, stalled: int = 0, tasks: int = 0) -> None:
        self.account(now_ns)
        self.stalled += stalled
        self.tasks += tasks
        assert self.stalled >= 0 and self.tasks >= 0

    def average(self, now_ns: int, period_ns: int) -> None:
        """Fold the last period into the averages (PSI's calc_avgs)."""
        self.account(now_ns)
        for avgs, stalled in ((self.avg_some, self._period_some), (self.avg_full, self._period_full)):
            pct = 100.0 * min(stalled, period_ns) / period_ns if period_ns > 0 else 0.0
            for i, decay in enumerate(_DECAY):
                avgs[i] = avgs[i] * decay + pct * (1 - decay)
        self._period_some = self._period_full = 0

    def report(self, now_ns: int) -> dict[str, float | int]:
        self.account(now_ns)
        out: dict[str, float | int] = {}
        for kind, avgs, total in (("some", self.avg_some, self.some_ns), ("full", self.avg_full, self.full_ns)):
            for window, value in zip(WINDOWS_S, avgs):
                out[f"stall_{kind}_avg{int(window)}"] = round(value, 2)
            out[f"stall_{kind}_total_us"] = total // 1000
        return out


class Stalls:
    """Every group's StallClock, kept on the groups' lineage (a stall in a job counts in every
    ancestor, as PSI's per-cgroup files do)."""

    def __init__(self) -> None:
        self._clocks: dict[ChargeGroup, StallClock] = {}

    def clock(self, group: ChargeGroup) -> StallClock:
        found = self._clocks.get(group)
        if found is None:
            found = self._clocks[group] = StallClock(time.monotonic_ns())
        return found

    def _each(self, group: ChargeGroup) -> Iterable[StallClock]:
        return [self.clock(g) for g in group.lineage()]

    def joined(self, group: ChargeGroup, tasks: int) -> None:
        """`tasks` processes joined (negative: left) the group."""
        now = time.monotonic_ns()
        for c in self._each(group):
            c.change(now, tasks=tasks)

    @contextlib.contextmanager
    def stalled(self, group: ChargeGroup) -> Iterator[None]:
        """The block waits for memory on behalf of a process of `group`."""
        now = time.monotonic_ns()
        for c in self._each(group):
            c.change(now, stalled=1)
        try:
            yield
        finally:
            now = time.monotonic_ns()
            for c in self._each(group):
                c.change(now, stalled=-1)

    def report(self, group: ChargeGroup) -> dict[str, float | int]:
        return self.clock(group).report(time.monotonic_ns())

    def forget(self, group: ChargeGroup) -> None:
        self._clocks.pop(group, None)

    async def run(self) -> None:
        """Update every average each period."""
        last = time.monotonic_ns()
        while True:
            await trio.sleep(PERIOD_S)
            now = time.monotonic_ns()
            for c in list(self._clocks.values()):
                c.average(now, now - last)
            last = now
