"""rx.fork(): os.fork() whose child gets copy-on-write clones of every rx mapping.

Before forking, the parent asks rxd to snapshot every VMO it maps (rx_fork_prepare: O(1) per VMO,
nothing is copied) behind a one-time ticket. The child, a new rx process, claims the ticket and
maps each snapshot at the parent's address with RX_VM_SPECIFIC, replacing the placeholders its C
at-fork handler kept there. Both sides then share every page until one of them writes it.

What the child inherits: the contents of every rx mapping, at the same addresses, with the same
permissions and map options. What it does not: the parent's handles (handle values are
per-process; the child holds only what it creates or imports), shared memory (every mapping
becomes private copy-on-write, even ones the parent shares with other processes: pass a handle
to share), and mappings made by other threads while the fork runs.

The child is born in the parent's job: its hello presents the ticket, which names the parent.

The parent hands the ticket to the child's pid (rx_fork_handoff) and returns: rxd keeps the
snapshots until that child claims them or exits, whatever the parent does meanwhile (it may exit
at once, as after os.fork()). The child's rx.fork() returns once its mappings are in place; if
it cannot adopt them it raises there, and rxd frees the snapshots when it exits.
"""

from __future__ import annotations

import os
import sys

from rxkernel.proto import RX_VM_SPECIFIC

from ._process import PROCESS
from ._stubs import rx_fork_cancel, rx_fork_claim, rx_fork_handoff, rx_fork_prepare, rx_handle_close, rx_vmar_map


def fork() -> int:
    """Like os.fork(): the child's pid in the parent, 0 in the child."""
    with PROCESS.lock:
        ticket = rx_fork_prepare()
        path = PROCESS.connect().path
        try:
            pid = os.fork()
        except BaseException:
            rx_fork_cancel(ticket)
            raise
    if pid == 0:
        PROCESS.connect(path, job=ticket)  # the ticket names the parent's job: the child is born there
        _adopt(ticket)
        return 0
    try:
        rx_fork_handoff(ticket, pid)  # the child's from now on: no need to wait for it
    except BaseException:
        rx_fork_cancel(ticket)  # (a no-op once the child claimed it)
        raise
    return pid


def _adopt(ticket: str) -> None:
    entries = rx_fork_claim(ticket)
    handles = {e[5] for e in entries}
    try:
        for addr, length, vmo_offset, perms, options, handle in entries:
            rx_vmar_map(handle, vmo_offset, length, perms, options | RX_VM_SPECIFIC, addr)
    finally:
        for handle in handles:
            try:
                rx_handle_close(handle)
            except Exception as e:  # noqa: BLE001 - best effort; the mapping holds the VMO anyway
                print(f"rx.fork: closing a handle failed: {e}", file=sys.stderr)
