"""Process-wide client state: the default connection and the local record of rx mappings.

The C side keeps what the fault handler needs (address ranges, and the store fds rxd sends to the
control thread, which owns them); this side keeps what Python needs: each range's permissions (for
prefaulting and views). Both are reset in a fork child, which is a new rx process with no mappings
(DESIGN.md §4) unless rx.fork() gives it copy-on-write clones of them.
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

    @property
    def end(self) -> int:
        return self.base + self.length


class ClientProcess:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.connection: RxConnection | None = None
        self.mappings: list[LocalMapping] = []

    def connect(self, path: str | None = None) -> RxConnection:
        with self.lock:
            if self.connection is None or self.connection.closed:
                if self.connection is not None:  # lost (rxd went away, or a call was interrupted)
                    self.forget_mappings()
                self.connection = RxConnection(path)
            return self.connection

    def find(self, addr: int, length: int) -> list[LocalMapping]:
        return [m for m in self.mappings if m.base < addr + length and addr < m.end]

    def cut(self, addr: int, length: int) -> list[LocalMapping]:
        """Split local records so none crosses addr or addr+length; the ones inside, in order."""
        out = []
        for m in sorted(self.find(addr, length), key=lambda m: m.base):
            for at in (addr, addr + length):
                if m.base < at < m.end:
                    upper = LocalMapping(at, m.end - at, m.perms)
                    m.length = at - m.base
                    self.mappings.append(upper)
                    if at == addr:
                        m = upper
            out.append(m)
        return out

    def forget_mappings(self) -> None:
        """Drop every rx mapping locally (the connection that owned them is gone, and with it
        rxd's side of them): a later touch is an ordinary SIGSEGV, not a fault rxd would refuse
        as unknown. The control thread closed its store fds when its channel ended."""
        for m in self.mappings:
            lib.rx_map_unregister(m.base, m.length)
            lib.rx_unreserve(m.base, m.length)
        self.mappings.clear()

    def reset_after_fork(self) -> None:
        if self.connection is not None:
            self.connection.forget_after_fork()
        self.connection = None
        self.mappings.clear()
        self.lock = threading.RLock()


PROCESS = ClientProcess()
os.register_at_fork(after_in_child=PROCESS.reset_after_fork)
