"""Handle syscalls (Zircon's lib/syscalls/handle_ops.cc and object.cc: zx_process_self,
zx_handle_close, zx_handle_duplicate, zx_object_get_child; rx: rx_system_handle,
rx_handle_export / import)."""

from __future__ import annotations

from typing import Any

from rxkernel.proto import (
    RX_DEFAULT_PROCESS_RIGHTS,
    RX_DEFAULT_SYSTEM_RIGHTS,
    RX_ERR_NOT_FOUND,
    RX_ERR_WRONG_TYPE,
    RX_RIGHT_DUPLICATE,
    RX_RIGHT_ENUMERATE,
    RX_RIGHT_TRANSFER,
    RxError,
    reduce_rights,
)

from ._table import Call, syscall
from ._validate import (
    invalid,
)


@syscall
def rx_process_self(call: Call) -> tuple[Any, ...]:
    return (call.process.handles.add(call.process, RX_DEFAULT_PROCESS_RIGHTS),)


@syscall
def rx_system_handle(call: Call) -> tuple[Any, ...]:
    # The socket is 0600 inside a 0700 directory: whoever got here is rxd's own user (or root).
    return (call.process.handles.add(call.kernel.system, RX_DEFAULT_SYSTEM_RIGHTS),)


@syscall
def rx_object_get_child(call: Call, handle: int, koid: int, rights: int) -> tuple[Any, ...]:
    """Zircon's zx_object_get_child: a handle to the process `koid`, found through the system
    handle (ENUMERATE), with at most a process handle's default rights. How rxctl looks at
    another process's mappings and VMOs."""
    h = call.process.handles.get(handle, None, RX_RIGHT_ENUMERATE)
    if h.obj is not call.kernel.system:
        raise RxError(RX_ERR_WRONG_TYPE, f"rx_object_get_child needs the system handle, not a {h.obj.type_name}")
    child_rights = reduce_rights(RX_DEFAULT_PROCESS_RIGHTS, rights)
    if child_rights is None:
        raise invalid(f"rights {rights:#x} are not a subset of a process handle's {RX_DEFAULT_PROCESS_RIGHTS:#x}")
    process = call.kernel.processes.get(koid)
    if process is None:
        raise RxError(RX_ERR_NOT_FOUND, f"no live process has koid {koid} (RX_INFO_SYSTEM_PROCESSES lists them)")
    return (call.process.handles.add(process, child_rights),)


@syscall
def rx_handle_close(call: Call, handle: int) -> tuple[Any, ...]:
    call.process.handles.remove(handle)
    return ()


@syscall
def rx_handle_duplicate(call: Call, handle: int, rights: int) -> tuple[Any, ...]:
    h = call.process.handles.get(handle, None, RX_RIGHT_DUPLICATE)
    new_rights = reduce_rights(h.rights, rights)
    if new_rights is None:
        raise invalid(f"rights {rights:#x} are not a subset of the handle's {h.rights:#x}")
    return (call.process.handles.add(h.obj, new_rights),)


@syscall
def rx_handle_export(call: Call, handle: int, rights: int) -> tuple[Any, ...]:
    h = call.process.handles.get(handle, None, RX_RIGHT_DUPLICATE | RX_RIGHT_TRANSFER)
    if reduce_rights(h.rights, rights) is None:
        raise invalid(f"rights {rights:#x} are not a subset of the handle's {h.rights:#x}")
    return (call.kernel.tokens.export(call.process, h.obj, h.rights, rights),)


@syscall
def rx_handle_import(call: Call, token: str) -> tuple[Any, ...]:
    obj, rights = call.kernel.tokens.claim(token)
    try:
        return (call.process.handles.add(obj, rights),)
    finally:
        obj.drop_ref()  # the token's reference: the handle holds its own now (or none exists)
