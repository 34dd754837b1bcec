"""Memory pressure levels over free memory (Zircon's memory watchdog; its levels and rules).

Free memory is the budget minus what is committed. Exactly one level is in force:
NORMAL < WARNING < CRITICAL < IMMINENT_OOM < OUT_OF_MEMORY, by thresholds on free pages that
scale with the budget (Zircon's defaults are absolute, 300/150/50 MiB with imminent-OOM 10 MiB
above OOM; rx takes them as fractions: warning 15%, critical 7.5%, oom 2.5%, imminent = oom x
1.2, and Zircon's 1 MiB debounce as 1/50 of the OOM threshold). The rules, as Zircon's:
- a worse level is in force at once, when free memory falls to its threshold;
- to go back to a better level, free memory must pass that level's threshold plus the debounce
  (so a level does not flap around its threshold), and the better level waits out the
  hysteresis since the last change (10 s by default), which only applies when pressure eases.

PressureLevels is the pure state machine (a clock is passed in: tests drive it without an event
loop); Pressure (below) runs it in rxd: it is told of every change of free memory, publishes the
level (rxd writes it to the vvar) and wakes rx_system_wait_pressure callers.
"""

from __future__ import annotations

import dataclasses
import math
import socket
from collections.abc import Callable
from typing import Any

import trio

from rxkernel.proto import (
    PRESSURE_NAMES,
    RX_PRESSURE_CRITICAL,
    RX_PRESSURE_IMMINENT_OOM,
    RX_PRESSURE_NORMAL,
    RX_PRESSURE_OUT_OF_MEMORY,
    RX_PRESSURE_WARNING,
)

from ..base import Sleepers


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Free pages at or below which each level is in force, and the debounce to leave one."""

    warning: int
    critical: int
    imminent_oom: int
    oom: int
    debounce: int

    @classmethod
    def of_budget(cls, total_pages: int, warning: float = 0.15, critical: float = 0.075, oom: float = 0.025) -> Thresholds:
        """Thresholds as fractions of a budget of `total_pages` (see the module note)."""
        if not 0 <= oom <= critical <= warning < 1:
            raise ValueError(f"pressure thresholds must be 0 <= oom <= critical <= warning < 100% (got {warning=}, {critical=}, {oom=})")
        oom_pages = math.ceil(total_pages * oom)
        return cls(
            warning=math.ceil(total_pages * warning),
            critical=math.ceil(total_pages * critical),
            imminent_oom=min(math.ceil(total_pages * critical), math.ceil(oom_pages * 1.2)),
            oom=oom_pages,
            debounce=max(1, oom_pages // 50),
        )

    def level_of(self, free_pages: int) -> int:
        """The level free memory alone puts in force (no debounce, no hysteresis). On every
        commit: plain comparisons, nothing built."""
        if free_pages <= self.oom:
            return RX_PRESSURE_OUT_OF_MEMORY
        if free_pages <= self.imminent_oom:
            return RX_PRESSURE_IMMINENT_OOM
        if free_pages <= self.critical:
            return RX_PRESSURE_CRITICAL
        if free_pages <= self.warning:
            return RX_PRESSURE_WARNING
        return RX_PRESSURE_NORMAL


class PressureLevels:
    """The level in force, from the free pages observed over time (see the module note)."""

    def __init__(self, thresholds: Thresholds, hysteresis_s: float, now: float) -> None:
        self.thresholds = thresholds
        self.hysteresis_s = hysteresis_s
        self.level = RX_PRESSURE_NORMAL
        self.changed_at = now - hysteresis_s  # (so the first easing is not held back)
        self.pending: int | None = None  # a better level waiting out the hysteresis
        self.transitions = 0

    def target(self, free_pages: int) -> int:
        """The level free memory calls for, with the debounce applied when pressure eases."""
        raw = self.thresholds.level_of(free_pages)
        if raw >= self.level:
            return raw
        # Easing: every threshold between must be passed by the debounce.
        return max(raw, self.thresholds.level_of(free_pages - self.thresholds.debounce))

    def observe(self, free_pages: int, now: float) -> bool:
        """Free memory is now `free_pages`: True if the level in force changed."""
        target = self.target(free_pages)
        if target > self.level or (target < self.level and now - self.changed_at >= self.hysteresis_s):
            self.level, self.changed_at, self.pending = target, now, None
            self.transitions += 1
            return True
        self.pending = target if target < self.level else None
        return False

    def recheck_at(self) -> float | None:
        """When an easing held back by the hysteresis may happen, or None."""
        return self.changed_at + self.hysteresis_s if self.pending is not None else None


_NEVER = 1 << 62  # a floor no free-page count is above


class Pressure:
    """PressureLevels in rxd: PhysicalMemory reports every change of free memory (`update`,
    no await); the level goes to `publish` (the vvar) and wakes waiters; a background task
    (`run`, started by the kernel) applies easings once their hysteresis passes."""

    def __init__(self, thresholds: Thresholds, hysteresis_s: float, free_pages: Callable[[], int],
                 clock: Callable[[], float] = trio.current_time) -> None:
        self._clock = clock
        self._free_pages = free_pages
        self.levels = PressureLevels(thresholds, hysteresis_s, self._now())
        self.publish: Callable[[int], None] = lambda level: None
        self._sleepers = Sleepers()  # rx_system_wait_pressure callers: all wake at a change
        self._recheck = trio.Event()  # a new easing is pending: run() rechecks its deadline
        # The fault fast path's commit floor (struct rx_ff_pmm's `floor`), kept by update().
        self.fast_path: Any = None

    def _now(self) -> float:
        try:
            return self._clock()
        except RuntimeError:  # no event loop yet (rxd is starting)
            return 0.0

    @property
    def level(self) -> int:
        return self.levels.level

    @property
    def name(self) -> str:
        return PRESSURE_NAMES[self.levels.level]

    def update(self) -> None:
        pending = self.levels.pending
        if self.levels.observe(self._free_pages(), self._now()):
            self.publish(self.levels.level)
            self._sleepers.wake_all()
        if self.levels.pending is not None and self.levels.pending != pending:
            self._recheck.set()
        if self.fast_path is not None:
            self.fast_path.floor = self.fast_floor()

    def fast_floor(self) -> int:
        """Free pages a commit by the fault fast path must leave more than: one that left fewer
        could change the level in force or the pending easing, which only update() may do. So
        the fast path commits only at NORMAL with nothing pending, above the warning threshold
        (there, update() would observe the same level and change nothing)."""
        if self.levels.level == RX_PRESSURE_NORMAL and self.levels.pending is None:
            return self.levels.thresholds.warning
        return _NEVER

    async def wait_change(self, known: int, deadline: float, channel: socket.socket | None) -> int:
        """The level, once it differs from `known` (at once if it does), or at `deadline` (trio
        time) whatever it is. The caller's thread `channel` is where it sleeps (base.Sleepers)."""
        while self.levels.level == known and trio.current_time() < deadline:
            await self._sleepers.sleep(channel, deadline)
        return self.levels.level

    async def run(self) -> None:
        """Apply each easing when its hysteresis has passed."""
        while True:
            at = self.levels.recheck_at()
            with trio.move_on_at(at if at is not None else math.inf):
                await self._recheck.wait()
            self._recheck = trio.Event()
            self.update()
