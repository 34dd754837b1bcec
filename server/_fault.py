"""Fault resolution: what a client's SIGSEGV handler gets back (DESIGN.md §4, WIRE.md).

Semantics: a read of a page nobody wrote maps the host zero page and commits nothing; a write
commits the page (and, on sequential access, a growing window of pages ahead) and maps the store
writable; committed pages are mapped with the mapping's permissions, so a later write to an already
committed page in a writable mapping does not fault again. A fault rxd refuses carries a status the
client turns into its one-line diagnostic and a kernel-style death.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rxkernel.proto import (
    CONTROL_INVALIDATE,
    FAULT_OP_STORE,
    FAULT_OP_ZERO,
    PAGE_SHIFT,
    RX_ERR_ACCESS_DENIED,
    RX_ERR_NO_MEMORY,
    RX_ERR_NOT_FOUND,
    RX_ERR_OUT_OF_RANGE,
    RX_VM_PERM_READ,
    RX_VM_PERM_WRITE,
    FaultOp,
    FaultReply,
    RxError,
)

from ._coherence import shootdown

if TYPE_CHECKING:
    from ._mapping import Mapping
    from ._process import Process
    from ._vmo import Vmo

MAX_OPS = 64
_PROT_READ, _PROT_WRITE = 1, 2


def _prot(perms: int) -> int:
    return (_PROT_READ if perms & RX_VM_PERM_READ else 0) | (_PROT_WRITE if perms & RX_VM_PERM_WRITE else 0)


async def resolve_fault(process: Process, seq: int, addr: int, write: bool) -> FaultReply:
    while True:
        m = process.aspace.find(addr)
        if m is None or not process.alive:
            return FaultReply(seq, RX_ERR_NOT_FOUND, process.inval_seq)
        await m.vmo.lock.acquire()
        try:
            # While we waited, the mapping may have been split, trimmed or removed (protect and
            # unmap change mappings without the VMO lock): look again under the lock.
            if process.alive and process.aspace.find(addr) is m:
                reply = await _resolve_locked(process, m, seq, addr, write)
                if reply is not None:
                    return reply
        finally:
            m.vmo.lock.release()
        # The mapping changed under us: start over with whatever maps addr now.


async def _resolve_locked(process: Process, m: Mapping, seq: int, addr: int, write: bool) -> FaultReply | None:
    """The reply for a fault in `m`, or None when `m` stopped mapping `addr` while we awaited
    acks (the caller starts over)."""

    def refuse(status: int) -> FaultReply:
        return FaultReply(seq, status, process.inval_seq)

    if not m.perms & RX_VM_PERM_READ or (write and not m.perms & RX_VM_PERM_WRITE):
        return refuse(RX_ERR_ACCESS_DENIED)
    vmo, store, memory = m.vmo, m.vmo.store, process.kernel.memory
    page = m.page_of(addr)
    if page >= vmo.size_pages:
        return refuse(RX_ERR_OUT_OF_RANGE)
    start, end = m.fault_window(page, write, vmo.size_pages)
    if write:
        status = await _commit(vmo, m, start, end)
        if status == RX_ERR_NO_MEMORY and end - start > 1:
            start, end = page, page + 1  # the window did not fit the budget: the page alone may
            status = await _commit(vmo, m, start, end)
        if status:
            return refuse(status)
        # The commit stopped tracking the zero pages this window replaces in m, trusting our
        # reply to replace them. If it awaited acks and protect/unmap reshaped m meanwhile, the
        # reply covers less (or nothing): take whatever else of the window m had mapped away.
        window = (m.addr_of(start), m.addr_of(end))
        if not process.alive or process.aspace.find(addr) is not m:
            await shootdown({process: [(window[0], window[1] - window[0])]}, CONTROL_INVALIDATE)
            return None  # what we committed stays committed; the retry maps it
        start, end = max(start, m.first_page), min(end, m.end_page)
        left_out: list[tuple[int, ...]] = [(lo, hi - lo) for lo, hi in ((window[0], m.addr_of(start)), (m.addr_of(end), window[1])) if lo < hi]
        if left_out:
            await shootdown({process: left_out}, CONTROL_INVALIDATE)
            if not process.alive or process.aspace.find(addr) is not m:
                return None
    prot = _prot(m.perms)
    ops: list[FaultOp] = []
    if write:
        ops.append(FaultOp(m.addr_of(start), (end - start) << PAGE_SHIFT, FAULT_OP_STORE, prot, store.store_id, start << PAGE_SHIFT))
    else:
        for s, e, committed in store.committed.runs(start, end):
            if len(ops) == MAX_OPS:
                break
            if committed:
                ops.append(FaultOp(m.addr_of(s), (e - s) << PAGE_SHIFT, FAULT_OP_STORE, prot, store.store_id, s << PAGE_SHIFT))
            else:
                store.zero_mapped.set_range(s, e, True)
                ops.append(FaultOp(m.addr_of(s), (e - s) << PAGE_SHIFT, FAULT_OP_ZERO, _PROT_READ))
        if not store.committed.get(page):
            memory.counters.zero_page_faults += 1
    memory.counters.page_faults += 1
    process.page_faults += 1
    # inval_seq is read now, after the last await: any control request sent after this reply
    # was computed carries a larger number, and the client will drop this reply if it has
    # already applied one (WIRE.md "Ordering").
    return FaultReply(seq, 0, process.inval_seq, tuple(ops))


async def _commit(vmo: Vmo, m: Mapping, start: int, end: int) -> int:
    try:
        await vmo.commit_locked(start, end, exclude=m)
    except RxError as e:
        return e.status
    return 0
