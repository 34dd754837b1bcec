"""Address-space syscalls (Zircon's lib/syscalls/vmar.cc: zx_vmar_map, _unmap, _protect, _op_range).
The client reserves the range itself; rxd records the mapping and answers its faults."""

from __future__ import annotations

from typing import Any

from rxkernel.proto import (
    CONTROL_INVALIDATE,
    PAGE_SHIFT,
    RX_ERR_ACCESS_DENIED,
    RX_ERR_ALREADY_EXISTS,
    RX_ERR_BAD_STATE,
    RX_ERR_NOT_FOUND,
    RX_RIGHT_MAP,
    RX_RIGHT_READ,
    RX_RIGHT_WRITE,
    RX_VM_MAP_OPTIONS,
    RX_VM_MAP_RANGE,
    RX_VM_PERM_READ,
    RX_VM_PERM_WRITE,
    RX_VM_SPECIFIC,
    RX_VMAR_OP_COMMIT,
    RX_VMO_RESIZABLE,
    RxError,
)

from ..object import Process
from ..vm import Mapping
from ._table import Call, syscall
from ._validate import (
    USER_ADDR_LIMIT,
    check_aligned,
    check_perms,
    check_range,
    invalid,
    vmo_of,
)


@syscall
async def rx_vmar_map(
    call: Call, handle: int, vmo_offset: int, length: int, perms: int, options: int, addr: int
) -> tuple[Any, ...]:
    check_perms(perms)
    if options & ~RX_VM_MAP_OPTIONS:
        raise invalid(f"unknown map options {options & ~RX_VM_MAP_OPTIONS:#x}")
    if length == 0:
        raise invalid("length is 0")
    check_aligned(vmo_offset=vmo_offset, length=length, addr=addr)
    if addr == 0 or addr + length > USER_ADDR_LIMIT:
        raise invalid(f"address range {addr:#x}+{length:#x} is not in user space")
    needed = RX_RIGHT_MAP | (RX_RIGHT_READ if perms & RX_VM_PERM_READ else 0)
    needed |= RX_RIGHT_WRITE if perms & RX_VM_PERM_WRITE else 0
    vmo, rights = vmo_of(call, handle, needed)
    limit = vmo.store.capacity_pages << PAGE_SHIFT if vmo.options & RX_VMO_RESIZABLE else vmo.size
    check_range(vmo_offset, length, limit, "mapping")
    process = call.process
    if process.control is None:
        raise RxError(RX_ERR_BAD_STATE, "the process has no control channel; it cannot map")
    max_perms = (RX_VM_PERM_READ if rights & RX_RIGHT_READ else 0) | (RX_VM_PERM_WRITE if rights & RX_RIGHT_WRITE else 0)
    m = Mapping(process, addr, length, vmo, vmo_offset, perms, max_perms, options, rights)
    specific = bool(options & RX_VM_SPECIFIC)
    if not specific and process.aspace.overlapping(addr, addr + length):
        raise RxError(RX_ERR_ALREADY_EXISTS, f"{addr:#x}+{length:#x} overlaps an existing mapping")
    if options & RX_VM_MAP_RANGE and perms & RX_VM_PERM_WRITE:
        # Before the mapping exists, so a failure (out of memory) leaves everything as it was.
        async with vmo.lock:
            start = m.first_page
            await vmo.commit_locked(start, max(start, min(m.end_page, vmo.size_pages)), process.charge)
        if not process.alive:  # killed while the commit awaited acks: its teardown is done
            raise RxError(RX_ERR_BAD_STATE, "the process died while mapping")
    if specific:
        # Replace whatever this process maps there, with no await in between: a fault sees the
        # old mapping or the new one, never a hole. The client replaces its memory the same way.
        for old in _covering(process, addr, length, whole=False, must_exist=False):
            process.remove_mapping(old)
    if not process.aspace.add(m):
        raise RxError(RX_ERR_ALREADY_EXISTS, f"{addr:#x}+{length:#x} overlaps an existing mapping")
    if options & RX_VM_SPECIFIC:
        process.prune_stores()
    # Store fds reach the client on its control channel when a fault first needs them, with
    # no more access than the mapping allows (see send_stores).
    return ()


def _covering(process: Process, addr: int, length: int, whole: bool, must_exist: bool = True) -> list[Mapping]:
    """Mappings overlapping [addr, addr+length), split so none crosses either end. With `whole`,
    the range must be mapped without gaps (Zircon's protect/op_range rule)."""
    check_aligned(addr=addr, length=length)
    if length == 0:
        raise invalid("length is 0")
    check_range(addr, length, USER_ADDR_LIMIT, "address range")
    found = process.aspace.overlapping(addr, addr + length)
    if not found:
        if not must_exist:
            return []
        raise RxError(RX_ERR_NOT_FOUND, f"nothing mapped in {addr:#x}+{length:#x}")
    if whole:
        expect = addr
        for m in found:
            if m.base > expect:
                break
            expect = m.end
        if found[0].base > addr or expect < addr + length:
            raise RxError(RX_ERR_NOT_FOUND, f"{addr:#x}+{length:#x} is not mapped without gaps")
    return process.aspace.cut(addr, addr + length)


@syscall
def rx_vmar_unmap(call: Call, addr: int, length: int) -> tuple[Any, ...]:
    # The client munmaps the range itself once this returns; a fault there afterwards is refused.
    for m in _covering(call.process, addr, length, whole=False):
        call.process.remove_mapping(m)
    call.process.prune_stores()
    return ()


@syscall
async def rx_vmar_protect(call: Call, addr: int, length: int, perms: int) -> tuple[Any, ...]:
    check_perms(perms)
    process = call.process
    maps = _covering(process, addr, length, whole=True)
    for m in maps:
        if perms & ~m.max_perms:
            raise RxError(RX_ERR_ACCESS_DENIED, f"the handle {m.vmo.koid} was mapped with does not allow {perms:#x}")
    for m in maps:
        async with m.vmo.lock:
            if not m.alive:
                continue
            m.perms = perms
            # Always INVALIDATE, never mprotect: the range holds PROT_NONE reservations and
            # private zero-page runs too, and an mprotect would turn those into ordinary memory
            # that never faults again. Faults remap every page with the new rights.
            await call.kernel.vm.coherence.shootdown({process: [(m.base, m.length)]}, CONTROL_INVALIDATE)
    return ()


@syscall
async def rx_vmar_op_range(call: Call, addr: int, length: int, op: int) -> tuple[Any, ...]:
    if op != RX_VMAR_OP_COMMIT:
        raise invalid(f"unknown op {op}")
    for m in _covering(call.process, addr, length, whole=True):
        if m.perms & RX_VM_PERM_WRITE:
            async with m.vmo.lock:
                start = m.first_page
                await m.vmo.commit_locked(start, max(start, min(m.end_page, m.vmo.size_pages)), call.process.charge, exclude=m)
    return ()  # the stub then touches the range so every page is mapped before it returns
