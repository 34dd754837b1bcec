"""Which store fds each client holds (ARCHITECTURE.md "Memory").

A client receives a store's fd on its control channel only when a fault first needs it, and only
with the access its mapping allows: a read-only need gets an O_RDONLY reopening, so a writable
MAP_SHARED of it fails in the host kernel. When nothing the process maps can reach a store any
more, or the store dies, the client is told to close the fd (FORGET, not waited for).
Mapper.stores and PageStore.holders mirror each other, and the fault fast path's copy in
aspace.ff mirrors stores; all three change only here, without awaiting in between.
"""

from __future__ import annotations

import os

import trio

from rxkernel.native import lib

from rxkernel.proto import CONTROL_FORGET, CONTROL_STORE

from ._mapper import Mapper
from ._pagestore import PageStore
from ._shootdown import Coherence


async def send_stores(coherence: Coherence, process: Mapper, needs: dict[PageStore, bool]) -> bool:
    """Make sure the client holds an fd for each store (writable where needed) before a fault
    reply names it. False if the client could not take one (its table is full or the channel is
    gone, or rxd is out of fds): the caller refuses the fault."""
    for store, writable in needs.items():
        have = process.stores.get(store)
        if have is not None and (have or not writable):
            continue
        control = process.control
        if control is None or store.fd < 0:
            return False
        try:
            fd = store.fd if writable else store.reopen_readonly()
        except OSError:
            return False  # rxd is out of fds: the fault is refused (RX_ERR_NO_RESOURCES)
        control.cancel_forget(store.store_id)
        ok = False
        try:
            # Shielded like a shootdown: if the request went out, the client holds the fd. A
            # client that does not ack in time is killed, like one that does not ack a shootdown.
            with trio.CancelScope(shield=True), trio.move_on_after(coherence.ack_deadline) as deadline:
                ok = await control.request(CONTROL_STORE, [(store.store_id, int(writable))], [fd])
        finally:
            if not writable:
                os.close(fd)
        if deadline.cancelled_caught and process.alive:
            coherence.kill(process, "did not take a store fd")
        if not ok or not process.alive:
            return False
        process.stores[store] = writable
        lib.rx_ff_proc_hold_store(process.aspace.ff, store.store_id, int(writable))
        store.holders.add(process)
    return True


def forget_store(process: Mapper, store: PageStore) -> None:
    """Tell the client to close its fd of `store` (it died, or nothing we map reaches it)."""
    store.holders.discard(process)
    lib.rx_ff_proc_drop_store(process.aspace.ff, store.store_id)
    if process.stores.pop(store, None) is not None and process.control is not None:
        process.control.post(CONTROL_FORGET, [(store.store_id,)])


def prune_stores(process: Mapper) -> None:
    """After an unmap: forget the stores no remaining mapping can reach."""
    if not process.stores:
        return
    keep: set[PageStore] = set()
    for m in process.aspace:
        keep.update(m.vmo.reachable_stores())
    for store in [s for s in process.stores if s not in keep]:
        process.forget_store(store)


def drop_stores(process: Mapper) -> None:
    """The process is gone: it holds no fds any more (nobody to tell)."""
    for store in process.stores:
        store.holders.discard(process)
    process.stores.clear()
    lib.rx_ff_proc_drop_stores(process.aspace.ff)
