"""Argument checks the handlers share. Shapes (types, counts, 64-bit ranges) were already checked
against proto's table by the dispatcher; these check meaning: alignment, ranges, permissions,
handle types and rights. Every failure is the caller's: an RxError naming what was wrong."""

from __future__ import annotations

from rxkernel.proto import (
    PAGE_SIZE,
    RX_ERR_INVALID_ARGS,
    RX_ERR_OUT_OF_RANGE,
    RX_VM_PERM_READ,
    RX_VM_PERM_WRITE,
    RX_VM_PERMS,
    RxError,
)

from ..vm import Vmo
from ._table import Call

# The highest user address a mapping may reach (47-bit x86_64 / 48-bit aarch64 user space).
USER_ADDR_LIMIT = 1 << 48


def invalid(what: str) -> RxError:
    return RxError(RX_ERR_INVALID_ARGS, what)


def round_up(n: int) -> int:
    return (n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def check_range(offset: int, length: int, limit: int, what: str = "range") -> None:
    """[offset, offset+length) must not overflow 64 bits and must end by `limit`."""
    if offset + length >= 1 << 64 or offset + length > limit:
        raise RxError(RX_ERR_OUT_OF_RANGE, f"{what} {offset:#x}+{length:#x} passes the end ({limit:#x})")


def check_aligned(**values: int) -> None:
    for name, value in values.items():
        if value & (PAGE_SIZE - 1):
            raise invalid(f"{name} {value:#x} is not page aligned")


def check_perms(perms: int) -> None:
    if perms & ~RX_VM_PERMS:
        raise invalid(f"unknown permission bits {perms & ~RX_VM_PERMS:#x}")
    if perms & RX_VM_PERM_WRITE and not perms & RX_VM_PERM_READ:
        raise invalid("write permission needs read permission")


def vmo_of(call: Call, handle: int, rights: int = 0) -> tuple[Vmo, int]:
    """The VMO `handle` names in the calling process, with the handle's rights; it must hold
    every right in `rights`."""
    h = call.process.handles.get(handle, Vmo, rights)
    assert isinstance(h.obj, Vmo)
    return h.obj, h.rights
