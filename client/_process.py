"""Process-wide client state: the default connection and the local record of rx mappings.

The C side keeps what the fault handler needs (address ranges, store fds); this side keeps what
Python needs: which store fd each mapping uses (to close fds when their last mapping goes) and each
range's permissions (for prefaulting and views). Both are reset in a fork child, which is a new rx
process with no mappings (DESIGN.md §4).
"""

from __future__ import annotations

import dataclasses
import os
import threading

from rxkernel.native import lib

from ._connection import RxConnection


@dataclasses.dataclass(slots=True)
class LocalMapping:
    base: int
    length: int
    perms: int
    store_id: int

    @property
    def end(self) -> int:
        return self.base + self.length


@dataclasses.dataclass(slots=True)
class StoreFd:
    fd: int
    writable: bool
    mappings: int = 0  # local mappings using it
    # fds this one replaced (read-only, then writable): another thread's fault handler may have
    # looked one up a moment ago, so they are closed with this store, not at once.
    retired: list[int] = dataclasses.field(default_factory=list)

    def close(self) -> None:
        for fd in (self.fd, *self.retired):
            os.close(fd)


class ClientProcess:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.connection: RxConnection | None = None
        self.mappings: list[LocalMapping] = []
        self.stores: dict[int, StoreFd] = {}

    def connect(self, path: str | None = None) -> RxConnection:
        with self.lock:
            if self.connection is None or self.connection.closed:
                if self.connection is not None:  # lost (rxd went away, or a call was interrupted)
                    self.forget_mappings()
                self.connection = RxConnection(path)
            return self.connection

    def add_store_fd(self, store_id: int, fd: int, writable: bool) -> bool:
        """Hold `fd` for store_id (or keep the one we have, if at least as capable) and count one
        more mapping using it. False when the C store table is full (nothing changed)."""
        current = self.stores.get(store_id)
        if current is not None and (current.writable or not writable):
            os.close(fd)  # we already hold an fd at least this capable
        else:
            if lib.rx_store_register(store_id, fd) < 0:
                os.close(fd)
                return False
            new = StoreFd(fd, writable)
            if current is not None:
                new.mappings, new.retired = current.mappings, [*current.retired, current.fd]
            self.stores[store_id] = new
        self.stores[store_id].mappings += 1
        return True

    def release_store(self, store_id: int) -> None:
        store = self.stores[store_id]
        store.mappings -= 1
        if store.mappings == 0:
            lib.rx_store_unregister(store_id)
            store.close()
            del self.stores[store_id]

    def find(self, addr: int, length: int) -> list[LocalMapping]:
        return [m for m in self.mappings if m.base < addr + length and addr < m.end]

    def cut(self, addr: int, length: int) -> list[LocalMapping]:
        """Split local records so none crosses addr or addr+length; the ones inside, in order."""
        out = []
        for m in sorted(self.find(addr, length), key=lambda m: m.base):
            for at in (addr, addr + length):
                if m.base < at < m.end:
                    upper = LocalMapping(at, m.end - at, m.perms, m.store_id)
                    m.length = at - m.base
                    self.mappings.append(upper)
                    self.stores[m.store_id].mappings += 1
                    if at == addr:
                        m = upper
            out.append(m)
        return out

    def close_fds(self) -> None:
        for store in self.stores.values():
            store.close()
        self.stores.clear()

    def forget_mappings(self) -> None:
        """Drop every rx mapping locally (the connection that owned them is gone, and with it
        rxd's side of them): a later touch is an ordinary SIGSEGV, not a fault rxd would refuse
        as unknown."""
        for m in self.mappings:
            lib.rx_map_unregister(m.base, m.length)
            lib.rx_unreserve(m.base, m.length)
        self.mappings.clear()
        for store_id in self.stores:
            lib.rx_store_unregister(store_id)
        self.close_fds()

    def reset_after_fork(self) -> None:
        if self.connection is not None:
            self.connection.forget_after_fork()
        self.connection = None
        self.close_fds()
        self.mappings.clear()
        self.lock = threading.RLock()


PROCESS = ClientProcess()
os.register_at_fork(after_in_child=PROCESS.reset_after_fork)
