"""Per-process handle tables (ARCHITECTURE.md "Objects and handles").

Handle values are random 32-bit numbers (low two bits set, as Zircon's), so a value seen in one
process says nothing about another's table: a value from elsewhere is simply RX_ERR_BAD_HANDLE.
An object lives while anything refers to it: handles, mappings, unclaimed export tokens.
"""

from __future__ import annotations

import secrets

from rxkernel.proto import (
    RX_ERR_ACCESS_DENIED,
    RX_ERR_BAD_HANDLE,
    RX_ERR_BAD_STATE,
    RX_ERR_NO_RESOURCES,
    RX_ERR_WRONG_TYPE,
    RxError,
    rights_names,
)

from ..base import KernelObject

MAX_HANDLES_PER_PROCESS = 1 << 16


class Handle:
    __slots__ = ("obj", "rights")

    def __init__(self, obj: KernelObject, rights: int) -> None:
        self.obj = obj
        self.rights = rights


class HandleTable:
    """One process's handles. Event-loop only: changed by its syscalls and its teardown, which
    never await in the middle of a change."""

    def __init__(self) -> None:
        self._handles: dict[int, Handle] = {}
        self.closed = False  # set when the process is torn down: no handle may be added after

    def __len__(self) -> int:
        return len(self._handles)

    def values(self) -> list[Handle]:
        return list(self._handles.values())

    def add(self, obj: KernelObject, rights: int) -> int:
        if self.closed:
            raise RxError(RX_ERR_BAD_STATE, "the process is gone")
        if len(self._handles) >= MAX_HANDLES_PER_PROCESS:
            raise RxError(RX_ERR_NO_RESOURCES, "handle table full")
        while True:
            value = secrets.randbits(32) | 3
            if value not in self._handles and value != 0xFFFFFFFF:
                break
        self._handles[value] = Handle(obj, rights)
        obj.add_ref()
        return value

    def get(self, value: int, cls: type[KernelObject] | None = None, rights: int = 0) -> Handle:
        """The handle for `value`, checked for type and for holding every right in `rights`."""
        handle = self._handles.get(value)
        if handle is None:
            raise RxError(RX_ERR_BAD_HANDLE, f"no handle {value:#x} in this process")
        if cls is not None and not isinstance(handle.obj, cls):
            raise RxError(RX_ERR_WRONG_TYPE, f"handle {value:#x} is a {handle.obj.type_name}, not a {cls.type_name}")
        if rights & ~handle.rights:
            raise RxError(RX_ERR_ACCESS_DENIED, f"handle {value:#x} lacks {rights_names(rights & ~handle.rights)}")
        return handle

    def remove(self, value: int) -> None:
        handle = self._handles.pop(value, None)
        if handle is None:
            raise RxError(RX_ERR_BAD_HANDLE, f"no handle {value:#x} in this process")
        handle.obj.drop_ref()

    def clear(self) -> None:
        self.closed = True
        handles, self._handles = self._handles, {}
        for handle in handles.values():
            handle.obj.drop_ref()
