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
        # While we waited, the mapping may have been split, trimmed or removed (protect, unmap):
        # look again under the lock and start over if the address now belongs to another one.
        if process.alive and process.aspace.find(addr) is m:
            break
        m.vmo.lock.release()
    try:
        return await _resolve_locked(process, m, seq, addr, write)
    finally:
        m.vmo.lock.release()


async def _resolve_locked(process: Process, m: Mapping, seq: int, addr: int, write: bool) -> FaultReply:
    def refuse(status: int) -> FaultReply:
        return FaultReply(seq, status, process.inval_seq)

    if not m.perms & RX_VM_PERM_READ or (write and not m.perms & RX_VM_PERM_WRITE):
        return refuse(RX_ERR_ACCESS_DENIED)
    vmo, store, memory = m.vmo, m.vmo.store, process.kernel.memory
    page = m.page_of(addr)
    if page >= vmo.size_pages:
        return refuse(RX_ERR_OUT_OF_RANGE)
    start, end = m.fault_window(page, write, vmo.size_pages)
    prot = _prot(m.perms)
    ops: list[FaultOp] = []
    if write:
        status = await _commit(vmo, m, start, end)
        if status == RX_ERR_NO_MEMORY and end - start > 1:
            start, end = page, page + 1  # the window did not fit the budget: the page alone may
            status = await _commit(vmo, m, start, end)
        if status:
            return refuse(status)
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
    if not m.alive or not process.alive:
        return refuse(RX_ERR_NOT_FOUND)  # torn down while we waited for acks
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
