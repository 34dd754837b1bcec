"""Throttling above a job's commit_high (memcg's memory.high): the commit is done, and the
process that made it waits before it hears back, in proportion to the excess (_charge.high_delay),
so a job growing past its high mark slows down while whoever watches it acts, and nobody else
does. The wait runs with no lock held: only the throttled process's own fault or call waits.
"""

from __future__ import annotations

import time

import trio

from ._charge import ChargeGroup, high_delay
from ._psi import Stalls


async def throttle_high(stalls: Stalls, group: ChargeGroup, pages: int) -> None:
    """Wait the penalty for `pages` just charged to `group`, and count it in every group on the
    path (their throttled_ns, and their stall times)."""
    if not pages:
        return
    delay = high_delay(group, pages)
    if not delay:
        return
    start = time.monotonic_ns()
    try:
        with stalls.stalled(group):
            await trio.sleep(delay)
    finally:
        waited = time.monotonic_ns() - start
        for g in group.lineage():
            g.throttled_ns += waited
