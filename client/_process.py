"""Process-wide client state: the default connection and the local record of rx mappings.

Three records of what is mapped where, each with only what its owner needs: the C trap keeps
address ranges (the signal handler may touch nothing else) and the store fds rxd sends to the
control thread, which owns them; this side keeps each range's permissions (for prefaulting and
views); rxd keeps the VMO, offset and rights. This record and rxd's are cut by one routine,
proto's RangeList.cut, so an unmap or protect splits them at the same addresses. Both client
records are reset in a fork child, which is a new rx process with no mappings (ARCHITECTURE.md
"Fork") unless rx.fork() gives it copy-on-write clones of them.
"""

from __future__ import annotations

import dataclasses
import os
import threading

from rxkernel.native import lib
from rxkernel.proto import RangeList

from ._connection import RxConnection


@dataclasses.dataclass(slots=True)
class LocalMapping:
    base: int
    length: int
    perms: int
    lost: bool = False  # its connection to rxd went away: reserved PROT_NONE until unmapped

    @property
    def end(self) -> int:
        return self.base + self.length

    def split_at(self, at: int) -> LocalMapping:
        upper = LocalMapping(at, self.end - at, self.perms, self.lost)
        self.length = at - self.base
        return upper


class ClientProcess:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.connection: RxConnection | None = None
        self.mappings: RangeList[LocalMapping] = RangeList()

    def connect(self, path: str | None = None, job: str | None = None) -> RxConnection:
        """The connection, opened now if there is none. A new one is born in the job `job` (a
        token) names, else $RX_JOB's, which is then spent: the variable is removed so child
        processes do not present it again (start them with rx.popen(job=...))."""
        with self.lock:
            if self.connection is None or self.connection.closed:
                if self.connection is not None:  # lost (rxd went away, or a call was interrupted)
                    self.lose_mappings()
                from_env = job is None and bool(os.environ.get("RX_JOB"))
                self.connection = RxConnection(path, job if job is not None else os.environ.get("RX_JOB") or None)
                if from_env:
                    os.environ.pop("RX_JOB", None)
            return self.connection

    def call_in_progress_here(self) -> bool:
        """Whether the calling thread is in the middle of a stub: it holds the process lock (a
        mapping record may be half changed) or the main channel. A finalizer that gc runs there
        must leave its stub calls to another thread."""
        owned = getattr(self.lock, "_is_owned", None)  # _thread.RLock's (threading.Condition uses it)
        if owned is not None and owned():
            return True
        return self.connection is not None and self.connection.in_call_here()

    def find(self, addr: int, length: int) -> list[LocalMapping]:
        """Records overlapping [addr, addr+length), in address order."""
        return self.mappings.overlapping(addr, addr + length)

    def cut(self, addr: int, length: int) -> list[LocalMapping]:
        """Split local records so none crosses addr or addr+length; the ones inside, in order."""
        return self.mappings.cut(addr, addr + length)

    def forget_mappings(self) -> None:
        """Unmap every rx mapping and give its address space back (disconnect(): the caller is
        closing the connection, and rxd frees its side). A lost connection keeps the ranges
        reserved instead: lose_mappings."""
        for m in self.mappings:
            lib.rx_map_unregister(m.base, m.length)
            lib.rx_unreserve(m.base, m.length)
        self.mappings.clear()

    def lose_mappings(self) -> None:
        """The connection that owned our mappings is gone, and rxd's side of them with it (a new
        rxd, or the same one after a reconnect, knows nothing of them). Their addresses stay
        reserved, PROT_NONE, so nothing else (the next vvar page, a new mapping) lands where a
        view still points: a touch dies with "rx: access at 0x… to an rx mapping lost when rxd
        went away". rx_vmar_unmap (or Mapping.unmap) gives the range back."""
        lib.rx_map_lose_all()
        for m in self.mappings:
            m.lost = True

    def reset_after_fork(self) -> None:
        if self.connection is not None:
            self.connection.forget_after_fork()
        self.connection = None
        self.mappings.clear()
        self.lock = threading.RLock()


PROCESS = ClientProcess()
os.register_at_fork(after_in_child=PROCESS.reset_after_fork)
