"""VMO syscalls (Zircon's lib/syscalls/vmo.cc: zx_vmo_create, _read, _write, _get_size, _set_size,
_op_range, _create_child). Each validates its arguments, then calls into vm/."""

from __future__ import annotations

from typing import Any

from rxkernel.proto import (
    RX_ERR_ACCESS_DENIED,
    PAGE_SHIFT,
    PAGE_SIZE,
    RX_DEFAULT_VMO_RIGHTS,
    RX_ERR_BAD_STATE,
    RX_ERR_NOT_SUPPORTED,
    RX_ERR_OUT_OF_RANGE,
    RX_ERR_UNAVAILABLE,
    RX_MAX_IO,
    RX_RIGHT_DUPLICATE,
    RX_RIGHT_READ,
    RX_RIGHT_RESIZE,
    RX_RIGHT_WRITE,
    RX_VMO_CHILD_NO_WRITE,
    RX_VMO_CHILD_OPTIONS,
    RX_VMO_CHILD_RESIZABLE,
    RX_VMO_CHILD_SLICE,
    RX_VMO_CHILD_SNAPSHOT,
    RX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE,
    RX_VMO_COMMIT_EAGER,
    RX_VMO_COMMIT_EXPLICIT,
    RX_VMO_CREATE_OPTIONS,
    RX_VMO_MAX_SIZE,
    RX_VMO_OP_CACHE_CLEAN,
    RX_VMO_OP_CACHE_CLEAN_INVALIDATE,
    RX_VMO_OP_CACHE_INVALIDATE,
    RX_VMO_OP_CACHE_SYNC,
    RX_VMO_OP_COMMIT,
    RX_VMO_OP_DECOMMIT,
    RX_VMO_OP_ZERO,
    RX_VMO_RESIZABLE,
    RX_VMO_RESIZABLE_CAPACITY,
    RxError,
)

from ..vm import new_slice, throttle_high
from ._overcommit import check_new_vmo, reserves, snapshot_promised
from ._table import Call, syscall
from ._validate import (
    check_aligned,
    check_range,
    invalid,
    round_up,
    vmo_of,
)


@syscall
async def rx_vmo_create(call: Call, size: int, options: int) -> tuple[Any, ...]:
    if options & ~RX_VMO_CREATE_OPTIONS:
        raise invalid(f"unknown options {options & ~RX_VMO_CREATE_OPTIONS:#x}")
    if options & RX_VMO_COMMIT_EAGER and options & RX_VMO_COMMIT_EXPLICIT:
        raise invalid("RX_VMO_COMMIT_EAGER and RX_VMO_COMMIT_EXPLICIT exclude each other: choose one commit policy")
    if size > RX_VMO_MAX_SIZE:
        raise RxError(RX_ERR_OUT_OF_RANGE, f"size {size:#x} is larger than the {RX_VMO_MAX_SIZE:#x} maximum")
    size = round_up(size)
    job = call.process.job
    if not options & RX_VMO_COMMIT_EAGER:
        check_new_vmo(job, call.kernel.memory, size >> PAGE_SHIFT)
    capacity = max(size, RX_VMO_RESIZABLE_CAPACITY) if options & RX_VMO_RESIZABLE else size
    vmo = call.kernel.new_vmo(size, options, capacity)
    vmo.commit_explicit = bool(options & RX_VMO_COMMIT_EXPLICIT)
    vmo.add_ref()  # held until the handle exists, so a failed eager commit frees the store
    try:
        if options & RX_VMO_COMMIT_EAGER:
            async with vmo.lock:
                await vmo.commit_locked(0, vmo.size_pages, call.process.charge, allocate=True)
        elif reserves(job):
            vmo.reserve(job.charge)  # RX_OVERCOMMIT_NEVER: its whole size now, or RX_ERR_NO_MEMORY
        rights = RX_DEFAULT_VMO_RIGHTS | (RX_RIGHT_RESIZE if options & RX_VMO_RESIZABLE else 0)
        return (call.process.handles.add(vmo, rights),)
    finally:
        vmo.drop_ref()


@syscall
async def rx_vmo_read(call: Call, handle: int, offset: int, length: int) -> tuple[Any, ...]:
    vmo, _ = vmo_of(call, handle, RX_RIGHT_READ)
    if length > RX_MAX_IO:
        raise invalid(f"at most {RX_MAX_IO} bytes per call (the stub library splits larger reads)")
    check_range(offset, length, vmo.size)
    async with vmo.lock:  # a split in flight must not show half-done
        check_range(offset, length, vmo.size)
        return (vmo.read_locked(offset, length),)


@syscall
async def rx_vmo_write(call: Call, handle: int, offset: int, data: bytes) -> tuple[Any, ...]:
    vmo, _ = vmo_of(call, handle, RX_RIGHT_WRITE)
    check_range(offset, len(data), vmo.size)
    async with vmo.lock:
        check_range(offset, len(data), vmo.size)  # the size may have changed while we waited
        new = await vmo.write_locked(offset, data, call.process.charge)
    await throttle_high(call.kernel.vm.stalls, call.process.charge, new)
    return ()


@syscall
def rx_vmo_get_size(call: Call, handle: int) -> tuple[Any, ...]:
    vmo, _ = vmo_of(call, handle)
    return (vmo.size,)


@syscall
async def rx_vmo_set_size(call: Call, handle: int, size: int) -> tuple[Any, ...]:
    """Zircon's zx_vmo_set_size: the handle needs WRITE and RESIZE, which only handles of a VMO
    created (or made a child) resizable carry."""
    vmo, rights = vmo_of(call, handle, RX_RIGHT_WRITE)
    if not vmo.options & RX_VMO_RESIZABLE:
        raise RxError(RX_ERR_ACCESS_DENIED if not rights & RX_RIGHT_RESIZE else RX_ERR_UNAVAILABLE,
                      "VMO is not resizable (created without RX_VMO_RESIZABLE), so no handle of it has RX_RIGHT_RESIZE")
    vmo_of(call, handle, RX_RIGHT_RESIZE)
    size = round_up(size) if size < 1 << 63 else size
    if size > vmo.store.capacity_pages << PAGE_SHIFT:
        raise RxError(RX_ERR_OUT_OF_RANGE, f"size {size:#x} passes the VMO's capacity")
    async with vmo.lock:
        res = vmo.reservation
        grow = max(0, (size >> PAGE_SHIFT) - vmo.size_pages) if res is not None else 0
        if res is not None and grow:
            vmo.vm.memory.reserve(grow, res.group)  # RX_OVERCOMMIT_NEVER: the new pages are promised too, or it fails
        try:
            await vmo.set_size_locked(size)
        finally:
            if res is not None and grow:
                vmo.vm.memory.unreserve(grow, res.group)
            vmo.refresh_reservation()  # (no await since the hold went: the hold becomes the promise)
    return ()


# Zircon's rights per cache op (zx_vmo_op_range, RIGHTS): a straight invalidate may drop dirty
# lines, so it changes the VMO's contents and needs WRITE; the others only need READ.
_CACHE_OP_RIGHTS = {
    RX_VMO_OP_CACHE_SYNC: RX_RIGHT_READ,
    RX_VMO_OP_CACHE_INVALIDATE: RX_RIGHT_WRITE,
    RX_VMO_OP_CACHE_CLEAN: RX_RIGHT_READ,
    RX_VMO_OP_CACHE_CLEAN_INVALIDATE: RX_RIGHT_READ,
}


@syscall
async def rx_vmo_op_range(call: Call, handle: int, op: int, offset: int, size: int) -> tuple[Any, ...]:
    if op in _CACHE_OP_RIGHTS:
        # Zircon's VmObjectPaged::CacheOp: size 0 is INVALID_ARGS, a range past the end
        # OUT_OF_RANGE; any byte alignment; only pages the VMO can read (its own, an ancestor's,
        # a slice's parent's) that are committed are touched, and nothing gets committed.
        vmo, _ = vmo_of(call, handle, _CACHE_OP_RIGHTS[op])
        if size == 0:
            raise invalid("size is 0")
        async with vmo.lock:
            check_range(offset, size, vmo.size)
            await vmo.cache_op_locked(offset, size, op)
        return ()
    if op not in (RX_VMO_OP_COMMIT, RX_VMO_OP_DECOMMIT, RX_VMO_OP_ZERO):
        raise invalid(f"unknown op {op}")
    vmo, _ = vmo_of(call, handle, RX_RIGHT_WRITE)
    new = 0
    async with vmo.lock:
        check_range(offset, size, vmo.size)
        start, end = offset >> PAGE_SHIFT, (offset + size + PAGE_SIZE - 1) >> PAGE_SHIFT
        if op == RX_VMO_OP_COMMIT:
            new, _ = await vmo.commit_locked(start, end, call.process.charge, allocate=True)
        elif op == RX_VMO_OP_DECOMMIT:
            # Zircon: whole pages only. On a clone the pages then read as zero (its own copies go
            # and it no longer reads its parent's there), as Zircon's decommit of a child does.
            await vmo.release_locked(start, end)
        else:
            await vmo.zero_locked(offset, size, call.process.charge)
    await throttle_high(call.kernel.vm.stalls, call.process.charge, new)  # (memory.high: after the lock, only this call waits)
    return ()


@syscall
async def rx_vmo_create_child(call: Call, handle: int, options: int, offset: int, size: int) -> tuple[Any, ...]:
    """Zircon's zx_vmo_create_child: SNAPSHOT, SNAPSHOT_AT_LEAST_ON_WRITE or SLICE, with the
    NO_WRITE and RESIZABLE modifiers. The parent handle needs DUPLICATE and READ; the child's
    handle has the parent handle's rights, plus WRITE for copy-on-write children (minus it with
    NO_WRITE), and RESIZE only if the child is resizable."""
    if options & ~RX_VMO_CHILD_OPTIONS:
        raise invalid(f"unknown options {options & ~RX_VMO_CHILD_OPTIONS:#x}")
    kinds = options & (RX_VMO_CHILD_SNAPSHOT | RX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE | RX_VMO_CHILD_SLICE)
    if kinds not in (RX_VMO_CHILD_SNAPSHOT, RX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE, RX_VMO_CHILD_SLICE):
        raise invalid("exactly one of SNAPSHOT, SNAPSHOT_AT_LEAST_ON_WRITE and SLICE is needed")
    resizable = bool(options & RX_VMO_CHILD_RESIZABLE)
    if kinds == RX_VMO_CHILD_SLICE and resizable:
        raise invalid("a slice cannot be resizable")
    parent, rights = vmo_of(call, handle, RX_RIGHT_DUPLICATE | RX_RIGHT_READ)
    check_aligned(offset=offset)
    if size > RX_VMO_MAX_SIZE or offset + size >= 1 << 64:
        raise RxError(RX_ERR_OUT_OF_RANGE, f"child {offset:#x}+{size:#x} is too large")
    size = round_up(size)
    rights &= ~RX_RIGHT_RESIZE
    rights |= RX_RIGHT_RESIZE if resizable else 0
    if kinds != RX_VMO_CHILD_SLICE:
        rights |= RX_RIGHT_WRITE
    if options & RX_VMO_CHILD_NO_WRITE:
        rights &= ~RX_RIGHT_WRITE
    kernel = call.kernel
    async with parent.lock:
        if not parent.alive:
            raise RxError(RX_ERR_BAD_STATE, "the parent VMO is gone")
        if kinds == RX_VMO_CHILD_SLICE:
            if parent.options & RX_VMO_RESIZABLE:
                raise RxError(RX_ERR_NOT_SUPPORTED, "a resizable VMO cannot have slices")
            check_range(offset, size, parent.size, "slice")
            child = new_slice(parent, kernel.new_koid(), offset, size, 0)
            child.commit_explicit = parent.commit_explicit  # the same pages, the same policy
        else:
            capacity = max(size, RX_VMO_RESIZABLE_CAPACITY) if resizable else size
            child = await snapshot_promised(
                call.process.job, parent, kernel.new_koid(), offset, size, RX_VMO_RESIZABLE if resizable else 0, capacity,
                at_least_on_write=kinds == RX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE,
            )
        child.add_ref()
    try:
        return (call.process.handles.add(child, rights),)
    finally:
        child.drop_ref()
