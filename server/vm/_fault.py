"""Where a fault is resolved: what a client's SIGSEGV handler gets back (ARCHITECTURE.md "The
fault path", proto/WIRE.md).

Semantics: a read of a page nobody wrote maps the host zero page and commits nothing; a read of a
page a clone shares with an ancestor maps the ancestor's page read-only (no copy, no memory); a
write makes the page the VMO's own (committing it, copying it first if it was shared: a
copy-on-write split), on sequential access with a growing window of pages ahead, and maps it
writable; a VMO's own pages are mapped with the mapping's permissions, so a later write to one in
a writable mapping does not fault again. A fault rxd refuses carries a status the
client turns into its one-line diagnostic and a kernel-style death.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rxkernel.proto import (
    CONTROL_INVALIDATE,
    FAULT_MAX_OPS,
    FAULT_OP_STORE,
    FAULT_OP_ZERO,
    PAGE_SHIFT,
    RX_ERR_ACCESS_DENIED,
    RX_ERR_BAD_STATE,
    RX_ERR_NO_MEMORY,
    RX_ERR_NO_RESOURCES,
    RX_ERR_NOT_FOUND,
    RX_ERR_OUT_OF_RANGE,
    RX_VM_PERM_READ,
    RX_VM_PERM_WRITE,
    FaultOp,
    FaultReply,
    RxError,
)

from ..base import requires_lock
from ._pmm import CommitRefused
from ._storefds import send_stores
from ._throttle import throttle_high

if TYPE_CHECKING:
    from ._context import VmContext
    from ._cowpages import Resolved
    from ._mapper import Mapper
    from ._mapping import Mapping
    from ._vmo import Vmo

MAX_OPS = FAULT_MAX_OPS  # ops per reply: what the client's C handler accepts (WIRE.md)
_PROT_READ, _PROT_WRITE = 1, 2


def _prot(perms: int) -> int:
    return (_PROT_READ if perms & RX_VM_PERM_READ else 0) | (_PROT_WRITE if perms & RX_VM_PERM_WRITE else 0)


async def resolve_fault(vm: VmContext, process: Mapper, seq: int, addr: int, write: bool) -> FaultReply:
    committed = [0]  # pages this fault committed (over every retry)
    reply = await _resolve(process, seq, addr, write, committed)
    await throttle_high(vm.stalls, process.charge, committed[0])  # no lock held: only this fault waits
    return reply


async def _resolve(process: Mapper, seq: int, addr: int, write: bool, committed: list[int]) -> FaultReply:
    while True:
        m = process.aspace.find(addr)
        if m is None or not process.alive:
            return FaultReply(seq, RX_ERR_NOT_FOUND, process.inval_seq)
        await m.vmo.lock.acquire()
        try:
            # While we waited, the mapping may have been split, trimmed or removed (protect and
            # unmap change mappings without the VMO lock): look again under the lock.
            if process.alive and process.aspace.find(addr) is m:
                reply = await _resolve_locked(process, m, seq, addr, write, committed)
                if reply is not None:
                    return reply
        finally:
            m.vmo.lock.release()
        # The mapping changed under us: start over with whatever maps addr now.


@requires_lock(lambda process, m, *_: m.vmo.lock)
async def _resolve_locked(process: Mapper, m: Mapping, seq: int, addr: int, write: bool, committed: list[int]) -> FaultReply | None:
    """The reply for a fault in `m`, or None when `m` stopped mapping `addr` while we awaited
    acks (the caller starts over)."""

    def refuse(status: int) -> FaultReply:
        return FaultReply(seq, status, process.inval_seq)

    if not m.perms & RX_VM_PERM_READ or (write and not m.perms & RX_VM_PERM_WRITE):
        return refuse(RX_ERR_ACCESS_DENIED)
    vmo = m.vmo
    vm = vmo.vm
    memory = vm.memory
    node, off = vmo.node, vmo.node_offset
    page = m.page_of(addr)
    if page >= vmo.size_pages:
        return refuse(RX_ERR_OUT_OF_RANGE)
    start, end = m.fault_window(page, write, vmo.size_pages)
    resolved: list[Resolved] = []
    if write and vmo.commit_explicit:
        # Faults commit nothing new here: a write is refused on a page that reads as zero
        # (never committed, or decommitted), and the window shrinks to the pages around `page`
        # that hold something (its own, or a snapshot's shared page: that one is still split).
        start, end = _held_around(node.resolve(start + off, end + off), page + off)
        if start == end:
            return refuse(RX_ERR_BAD_STATE)
        start, end = start - off, end - off
    if write:
        status = await _commit(process, vmo, m, start, end, committed)
        if status == RX_ERR_NO_MEMORY and end - start > 1:
            start, end = page, page + 1  # the window did not fit the budget: the page alone may
            status = await _commit(process, vmo, m, start, end, committed)
        if status:
            return refuse(status)
        needs = {node.store: True}
    else:
        resolved = node.resolve(start + off, end + off)
        needs = {}
        for _, _, owner, _ in resolved:
            if owner is not None:
                needs[owner.store] = needs.get(owner.store, False) or (owner is node and bool(m.perms & RX_VM_PERM_WRITE))
    if not await send_stores(vm.coherence, process, needs):
        return refuse(RX_ERR_NO_RESOURCES)
    if write:
        # The commit stopped tracking what this window showed in m (zero pages, an ancestor's
        # pages), trusting our reply to replace it. If it awaited acks and protect/unmap
        # reshaped m meanwhile, the reply covers less (or nothing): take whatever else of the
        # window m had mapped away.
        window = (m.addr_of(start), m.addr_of(end))
        if not process.alive or process.aspace.find(addr) is not m:
            await vm.coherence.shootdown({process: [(window[0], window[1] - window[0])]}, CONTROL_INVALIDATE)
            return None  # what we committed stays committed; the retry maps it
        start, end = max(start, m.first_page), min(end, m.end_page)
        left_out: list[tuple[int, ...]] = [(lo, hi - lo) for lo, hi in ((window[0], m.addr_of(start)), (m.addr_of(end), window[1])) if lo < hi]
        if left_out:
            await vm.coherence.shootdown({process: left_out}, CONTROL_INVALIDATE)
            if not process.alive or process.aspace.find(addr) is not m:
                return None
    elif not process.alive or process.aspace.find(addr) is not m:
        return None
    prot = _prot(m.perms)
    ops: list[FaultOp] = []
    if write:
        ops.append(FaultOp(m.addr_of(start), (end - start) << PAGE_SHIFT, FAULT_OP_STORE, prot, node.store.store_id, (start + off) << PAGE_SHIFT))
    else:
        for s, e, owner, os_ in resolved:
            if len(ops) == MAX_OPS:
                break
            length, at = (e - s) << PAGE_SHIFT, m.addr_of(s - off)
            if owner is node:
                ops.append(FaultOp(at, length, FAULT_OP_STORE, prot, node.store.store_id, os_ << PAGE_SHIFT))
                continue
            # Not this node's own page: read-only, and marked, so whoever changes what this page
            # resolves to finds this mapping (see _cowpages.py).
            node.shadowed.set_range(s, e, True)
            if owner is None:
                ops.append(FaultOp(at, length, FAULT_OP_ZERO, _PROT_READ))
            else:
                ops.append(FaultOp(at, length, FAULT_OP_STORE, _PROT_READ, owner.store.store_id, os_ << PAGE_SHIFT))
        if not node.store.committed.get(page + off) and node.resolve(page + off, page + off + 1)[0][2] is None:
            memory.counters.zero_page_faults += 1
    memory.counters.page_faults += 1
    process.page_faults += 1
    # inval_seq is read now, after the last await: any control request sent after this reply
    # was computed carries a larger number, and the client will drop this reply if it has
    # already applied one (WIRE.md "Ordering").
    return FaultReply(seq, 0, process.inval_seq, tuple(ops))


def _held_around(runs: list[Resolved], page: int) -> tuple[int, int]:
    """The stretch of `runs` around `page` whose pages all live somewhere (owner not None);
    empty if `page` itself reads as zero."""
    at = next(i for i, (s, e, _, _) in enumerate(runs) if s <= page < e)
    if runs[at][2] is None:
        return page, page
    first = last = at
    while first > 0 and runs[first - 1][2] is not None:
        first -= 1
    while last + 1 < len(runs) and runs[last + 1][2] is not None:
        last += 1
    return runs[first][0], runs[last][1]


async def _commit(process: Mapper, vmo: Vmo, m: Mapping, start: int, end: int, committed: list[int]) -> int:
    while True:
        try:
            new, copied = await vmo.commit_locked(start, end, process.charge, exclude=m)
            break
        except CommitRefused as e:
            # A fault goes to OOM handling (a syscall just fails): it frees memory for the limit
            # that was hit, or says there is nothing left to free. Only a single page is worth
            # it: a window that does not fit is retried as its one page first (_resolve_locked).
            if end - start > 1:
                return e.status
            with vmo.vm.stalls.stalled(process.charge):  # (PSI: waiting for memory)
                freed = await vmo.vm.out_of_memory(e.group, process)
            if not freed or not process.alive:
                return e.status
            if not vmo.alive or process.aspace.find(m.base) is not m:
                return e.status  # (the retry that follows maps whatever is there now)
        except RxError as e:
            return e.status
    committed[0] += new
    if copied:
        vmo.vm.memory.counters.cow_faults += 1
        process.cow_faults += 1
    return 0
