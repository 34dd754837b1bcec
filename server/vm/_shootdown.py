"""Where mappings are taken away: the shootdown policy (ARCHITECTURE.md "The shootdown path").

rxd sends INVALIDATE or PROTECT for address ranges to every process that maps them, at once, and
waits for the acks; only then may it reuse, free or commit over those pages. A client that does
not ack within the deadline is killed (through its pidfd, so a recycled pid can never be hit)
and torn down as dead: its mappings are dropped, so the operation completes. The transport (the
channel, seq numbers, acks) is ipc/'s ControlChannel; this file decides who, when, and what
happens to a client that fails.

Lock order: tree lock → (awaiting acks). No code waits for an ack while holding anything but the
lock of the tree whose pages are changing; the control thread never waits on rxd, so a shootdown
can target the very process whose fault is being resolved without deadlock.
"""

from __future__ import annotations

import structlog
import trio

from rxkernel.proto import CONTROL_INVALIDATE

from ._mapper import ControlRanges, Mapper
from ._pmm import Counters

log = structlog.get_logger("rxd.coherence")

# Ranges per control request: well under what a client's control frame holds (RX_CONTROL_MAX_RANGES,
# checked in tests/test_wire.py).
MAX_RANGES_PER_REQUEST = 256

Targets = dict[Mapper, ControlRanges]


class Coherence:
    """One per rxd: the ack deadline and what happens to clients that miss it."""

    def __init__(self, ack_deadline: float, counters: Counters) -> None:
        self.ack_deadline = ack_deadline
        self.counters = counters

    async def shootdown(self, targets: Targets, op: int = CONTROL_INVALIDATE) -> None:
        """Apply `op` to the ranges in every target process at once; return when each has acked
        or been killed. Empty range lists and dead processes are skipped."""
        targets = {p: r for p, r in targets.items() if r and p.alive}
        if not targets:
            return
        # Shielded: a half-done shootdown would break the tree invariants, and it is bounded
        # anyway (each target acks or is killed by the deadline).
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:
                for process, ranges in targets.items():
                    nursery.start_soon(self._shootdown_one, process, ranges, op)

    async def _shootdown_one(self, process: Mapper, ranges: ControlRanges, op: int) -> None:
        refused = lost = False
        with trio.move_on_after(self.ack_deadline) as scope:
            for i in range(0, len(ranges), MAX_RANGES_PER_REQUEST):
                self.counters.shootdowns += 1
                control = process.control
                if control is None or not await control.request(op, ranges[i : i + MAX_RANGES_PER_REQUEST]):
                    if control is None or control.closed:
                        # Lost, not refused: a client that exits, is killed or disconnects closes
                        # its control channel a moment before its main one, and rxd may see them
                        # in either order. Ask the client itself, not its main channel's task
                        # (that task may be this very call): once it has hung up, it is torn
                        # down here; one still there at the deadline keeps mappings nobody can
                        # take away, and is killed.
                        lost = True
                        await self._until_hung_up(process)
                    else:
                        refused = True
                    break
        if not process.alive:
            return  # it died meanwhile; its teardown already dropped its mappings
        if scope.cancelled_caught or refused:
            reason = "did not ack in time"
            if refused or lost:
                reason = "refused a shootdown" if refused else "lost its control channel and stayed"
            self.kill(process, reason)

    @staticmethod
    async def _until_hung_up(process: Mapper) -> None:
        pause = 0.001
        while process.alive and not process.hung_up():
            await trio.sleep(pause)
            pause = min(pause * 2, 0.05)
        process.teardown("hung up")

    def kill(self, process: Mapper, reason: str) -> None:
        log.warning("killing client", pid=process.pid, koid=process.koid, reason=reason, deadline=self.ack_deadline)
        self.counters.clients_killed += 1
        process.kill()
