"""Overcommit policy (Linux's vm.overcommit_memory, per job): what a new VMO promises.

- RX_OVERCOMMIT_HEURISTIC (the default): a lazy VMO that could never fit (larger than the whole
  budget, as Linux's heuristic refuses more than RAM + swap; a job's limit is not considered, as
  memcg's is not) is refused at creation; anything else may fail later, at a fault.
- RX_OVERCOMMIT_ALWAYS: nothing is refused at creation.
- RX_OVERCOMMIT_NEVER: a lazy VMO (or snapshot child) reserves its whole size at creation, against
  the budget and every limit on its creator's job's path, and fails with RX_ERR_NO_MEMORY if that
  does not fit; from then on its commits never fail (vm/_vmo.py Reservation). A snapshot also
  reserves the pages its parent gives to the shared node, if the parent holds a reservation.
"""

from __future__ import annotations

from rxkernel.proto import (
    OVERCOMMIT_NAMES,
    PAGE_SHIFT,
    PAGE_SIZE,
    RX_ERR_NO_MEMORY,
    RX_OVERCOMMIT_HEURISTIC,
    RX_OVERCOMMIT_NEVER,
    RxError,
)

from ..object import Job
from ..vm import ChargeGroup, PhysicalMemory, Vmo, snapshot_locked


def check_new_vmo(job: Job, memory: PhysicalMemory, pages: int) -> None:
    """HEURISTIC's refusal of a VMO that could never fit."""
    if job.effective_overcommit() == RX_OVERCOMMIT_HEURISTIC and pages > memory.total_pages:
        raise RxError(RX_ERR_NO_MEMORY, f"a VMO of {pages * PAGE_SIZE} bytes could never fit the memory budget "
                      f"({memory.total_pages * PAGE_SIZE} bytes; {OVERCOMMIT_NAMES[RX_OVERCOMMIT_HEURISTIC]} refuses it, "
                      "RX_OVERCOMMIT_ALWAYS would not)")


def reserves(job: Job) -> bool:
    return job.effective_overcommit() == RX_OVERCOMMIT_NEVER


async def snapshot_promised(
    job: Job, parent: Vmo, koid: int, offset: int, size: int, options: int, capacity: int, at_least_on_write: bool
) -> Vmo:
    """snapshot_locked (the caller holds the parent's lock), keeping the promises: the child
    reserves its size if `job` is NEVER, and a parent holding a reservation has it grow by the
    pages it gives to the shared node; RX_ERR_NO_MEMORY, and no snapshot, if that does not fit."""
    holds = _hold(job, parent, size >> PAGE_SHIFT, moves_pages=not at_least_on_write)
    try:
        child = await snapshot_locked(parent, koid, offset, size, options, capacity, at_least_on_write)
    finally:
        _release(parent.vm.memory, holds)
    # No await since the holds went: they become the real promises, which therefore fit.
    parent.refresh_reservation()
    if reserves(job):
        child.reserve(job.charge)
    return child


def _hold(job: Job, parent: Vmo, child_pages: int, moves_pages: bool) -> list[tuple[int, ChargeGroup]]:
    """Before a snapshot: reserve what it will promise (the child's size if the creator's job is
    NEVER, and the parent's pages that move to the shared node if the parent holds a
    reservation), so the awaits inside cannot let others take it. Returns the holds, to give back
    (_release) once the real reservations are in place."""
    memory = parent.vm.memory
    holds: list[tuple[int, ChargeGroup]] = []
    try:
        if reserves(job) and child_pages:
            memory.reserve(child_pages, job.charge)
            holds.append((child_pages, job.charge))
        growth = parent.growth_if_snapshotted() if moves_pages else 0  # (an at-least-on-write child moves nothing)
        if growth and parent.reservation is not None:
            memory.reserve(growth, parent.reservation.group)
            holds.append((growth, parent.reservation.group))
    except BaseException:
        _release(memory, holds)
        raise
    return holds


def _release(memory: PhysicalMemory, holds: list[tuple[int, ChargeGroup]]) -> None:
    for pages, group in holds:
        memory.unreserve(pages, group)
