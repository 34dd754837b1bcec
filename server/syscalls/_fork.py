"""rx.fork() (an rx extension): the parent snapshots everything it maps behind a one-time
ticket; the child, a new rx process, claims it (client/_fork.py has the whole protocol)."""

from __future__ import annotations

import os
from typing import Any

from rxkernel.proto import (
    PAGE_SHIFT,
    RX_ERR_ACCESS_DENIED,
    RX_ERR_BAD_STATE,
    RX_ERR_NOT_SUPPORTED,
    RX_VM_MAP_RANGE,
    RX_VMO_RESIZABLE,
    RxError,
)

from ..object import ForkEntry
from ..vm import Vmo
from ._overcommit import snapshot_promised
from ._table import Call, syscall


@syscall
async def rx_fork_prepare(call: Call) -> tuple[Any, ...]:
    """Snapshot every VMO this process maps (once each, however many mappings it has) and keep
    the snapshots behind a one-time ticket for the child: see rxkernel.client.fork()."""
    process, kernel = call.process, call.kernel
    entries: list[ForkEntry] = []
    snapshots: dict[Vmo, Vmo] = {}
    try:
        for m in sorted(process.aspace, key=lambda m: m.base):
            vmo = m.vmo
            if vmo not in snapshots:
                async with vmo.lock:
                    if not m.alive:
                        continue
                    resizable = bool(vmo.options & RX_VMO_RESIZABLE)
                    if vmo.reads_through_a_writer():
                        raise RxError(
                            RX_ERR_NOT_SUPPORTED,
                            f"rx.fork() cannot give the child a copy of the mapping at {m.base:#x}: its VMO "
                            f"{vmo.koid} is an at-least-on-write child (or a child of one), whose pages can "
                            "still change under a snapshot; unmap it before forking, or map a SNAPSHOT child instead",
                        )
                    child = await snapshot_promised(
                        process.job, vmo, kernel.new_koid(), 0, vmo.size, vmo.options & RX_VMO_RESIZABLE,
                        vmo.store.capacity_pages << PAGE_SHIFT if resizable else vmo.size, at_least_on_write=False,
                    )
                    child.add_ref()  # the ticket's reference
                    snapshots[vmo] = child
            # The child gets no more than the handle the parent mapped with allowed.
            entries.append(ForkEntry(m.base, m.length, m.vmo_offset, m.perms, m.options & ~RX_VM_MAP_RANGE, snapshots[vmo], m.rights))
        if not process.alive:
            raise RxError(RX_ERR_BAD_STATE, "the process died while forking")
    except BaseException:
        for child in snapshots.values():
            child.drop_ref()
        raise
    return (kernel.fork_tickets.new(process, entries),)


@syscall
def rx_fork_claim(call: Call, ticket: str) -> tuple[Any, ...]:
    """The fork child's side: handles to the snapshots, and where the parent mapped them."""
    entries = call.kernel.fork_tickets.claim(ticket)
    out = []
    handles = call.process.handles
    try:
        for e in entries:
            out.append([e.addr, e.length, e.vmo_offset, e.perms, e.options, handles.add(e.vmo, e.rights)])
    finally:
        for vmo in {e.vmo for e in entries}:
            vmo.drop_ref()  # the ticket's reference: the handles hold their own now
    return (out,)


@syscall
def rx_fork_cancel(call: Call, ticket: str) -> tuple[Any, ...]:
    """The parent's side when the child died before claiming: free the snapshots."""
    call.kernel.fork_tickets.cancel(call.process, ticket)
    return ()


@syscall
def rx_fork_handoff(call: Call, ticket: str, pid: int) -> tuple[Any, ...]:
    """The parent's side once os.fork() returned: the ticket becomes the child's (`pid`, which
    must be a child of the caller), kept until that child claims it or exits, so the parent
    need not wait for it. A child that already exited frees the snapshots at once."""
    if _parent_pid(pid) != call.process.pid:
        raise RxError(RX_ERR_ACCESS_DENIED, f"pid {pid} is not a child of the calling process: a fork ticket goes only to the child it was made for")
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        call.kernel.fork_tickets.cancel(call.process, ticket)  # the child is gone already
        return ()
    call.kernel.fork_tickets.hand_off(call.process, ticket, pidfd)
    return ()


def _parent_pid(pid: int) -> int | None:
    """The parent of `pid` (from /proc), None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat.rsplit(b")", 1)[1].split()[1])  # (after the command name, which may hold spaces: state, ppid)
