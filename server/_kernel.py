"""The kernel's global state: memory, processes, VMOs, export tokens, koids.

rxd is single-threaded (one trio loop); this object is only touched from it. Worker threads
(eager fallocate) get plain fds and offsets, never kernel objects.
"""

from __future__ import annotations

import dataclasses
import itertools
import secrets

from rxkernel.proto import RX_ERR_INVALID_ARGS, RX_ERR_NOT_FOUND, RX_OBJ_TYPE_SYSTEM, RxError, reduce_rights

from ._handles import KernelObject
from ._memory import PhysicalMemory
from ._process import Process
from ._vmo import Vmo


class SystemResource(KernelObject):
    """What rx_system_handle() names: the whole system, for system-wide information."""

    obj_type = RX_OBJ_TYPE_SYSTEM
    type_name = "system"


@dataclasses.dataclass(slots=True)
class _Token:
    exporter: Process
    obj: KernelObject
    rights: int


class Kernel:
    def __init__(self, memory_bytes: int, ack_deadline: float = 5.0) -> None:
        self.memory = PhysicalMemory(memory_bytes)
        self.ack_deadline = ack_deadline
        self.processes: dict[int, Process] = {}
        self.sessions: dict[bytes, Process] = {}
        self.vmos: dict[int, Vmo] = {}
        self._tokens: dict[str, _Token] = {}
        self._koids = itertools.count(1024)
        self.system = SystemResource(self.new_koid())
        self.system.add_ref()  # lives as long as the kernel

    def new_koid(self) -> int:
        return next(self._koids)

    def new_process(self, pid: int, uid: int) -> Process:
        process = Process(self, self.new_koid(), pid, uid)
        process.add_ref()  # the kernel's own reference; dropped at teardown
        self.processes[process.koid] = process
        self.sessions[process.session] = process
        return process

    def new_vmo(self, size: int, options: int, capacity: int) -> Vmo:
        vmo = Vmo(self, self.new_koid(), size, options, capacity)
        self.vmos[vmo.koid] = vmo
        return vmo

    def export(self, exporter: Process, obj: KernelObject, rights: int, requested: int) -> str:
        new_rights = reduce_rights(rights, requested)
        if new_rights is None:
            raise RxError(RX_ERR_INVALID_ARGS, f"rights {requested:#x} exceed the handle's {rights:#x}")
        token = secrets.token_hex(16)  # 128 random bits
        self._tokens[token] = _Token(exporter, obj, new_rights)
        exporter.tokens.add(token)
        obj.add_ref()
        return token

    def claim(self, token: str) -> tuple[KernelObject, int]:
        """One-time: the token is spent whether or not the caller keeps the handle."""
        entry = self._tokens.pop(token, None)
        if entry is None:
            raise RxError(RX_ERR_NOT_FOUND, "no such token (never issued, already spent, or its exporter is gone)")
        entry.exporter.tokens.discard(token)
        return entry.obj, entry.rights

    def revoke_token(self, token: str) -> None:
        entry = self._tokens.pop(token, None)
        if entry is not None:
            entry.exporter.tokens.discard(token)
            entry.obj.drop_ref()

    @property
    def outstanding_tokens(self) -> int:
        return len(self._tokens)
