"""Cache maintenance on store ranges (rx_vmo_op_range CACHE_* ops), run in C on the pages the host
really holds (native rx_cache_op never allocates). Large ranges go to a worker thread: the walk
runs at roughly memory speed."""

from __future__ import annotations

import errno
import os

import trio

from rxkernel.native import lib
from rxkernel.proto import RX_ERR_NOT_SUPPORTED, RxError

from ._pagestore import PageStore, check_rc

_INLINE_CACHE_OP_BYTES = 4 << 20


async def cache_op(runs: list[tuple[PageStore, int, int]], op: int) -> int:
    """Apply cache op `op` (RX_VMO_OP_CACHE_*) to store byte ranges (store, offset, length), on the
    pages the host holds only. Returns the pages walked."""

    def run(items: list[tuple[int, int, int]]) -> int:
        pages = 0
        for fd, offset, length in items:
            rc = lib.rx_cache_op(fd, offset, length, op)
            if rc == -errno.ENOSYS:
                raise RxError(RX_ERR_NOT_SUPPORTED, "cache operations are not implemented for this CPU architecture")
            check_rc(rc, "cache op")
            pages += rc
        return pages

    runs = [(store, offset, length) for store, offset, length in runs if length and store.fd >= 0]
    if sum(length for _, _, length in runs) <= _INLINE_CACHE_OP_BYTES:
        return run([(store.fd, offset, length) for store, offset, length in runs])
    # Our own fds: a store whose last reader goes away meanwhile is closed by the reaper.
    dups: dict[PageStore, int] = {}
    try:
        for store, _, _ in runs:
            if store not in dups:
                dups[store] = os.dup(store.fd)
        return await trio.to_thread.run_sync(run, [(dups[store], offset, length) for store, offset, length in runs])
    finally:
        for fd in dups.values():
            os.close(fd)
