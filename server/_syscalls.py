"""Syscall handlers, one per entry of proto's table (checked in tests/test_proto.py).

Each handler says which semantics it implements, validates every argument before it touches state,
and raises RxError for the caller's mistakes. Shapes (types, counts, 64-bit ranges) were already
checked against the table by the dispatcher.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from rxkernel.proto import (
    CONTROL_INVALIDATE,
    PAGE_SHIFT,
    PAGE_SIZE,
    RX_DEFAULT_PROCESS_RIGHTS,
    RX_DEFAULT_SYSTEM_RIGHTS,
    RX_DEFAULT_VMO_RIGHTS,
    RX_ERR_ACCESS_DENIED,
    RX_ERR_ALREADY_EXISTS,
    RX_ERR_BAD_STATE,
    RX_ERR_INVALID_ARGS,
    RX_ERR_NOT_FOUND,
    RX_ERR_NOT_SUPPORTED,
    RX_ERR_OUT_OF_RANGE,
    RX_ERR_UNAVAILABLE,
    RX_MAX_IO,
    RX_RIGHT_DUPLICATE,
    RX_RIGHT_INSPECT,
    RX_RIGHT_MAP,
    RX_RIGHT_READ,
    RX_RIGHT_RESIZE,
    RX_RIGHT_TRANSFER,
    RX_RIGHT_WRITE,
    RX_VM_MAP_OPTIONS,
    RX_VM_MAP_RANGE,
    RX_VM_SPECIFIC,
    RX_VM_PERM_READ,
    RX_VM_PERM_WRITE,
    RX_VM_PERMS,
    RX_VMAR_OP_COMMIT,
    RX_VMO_CHILD_NO_WRITE,
    RX_VMO_CHILD_OPTIONS,
    RX_VMO_CHILD_RESIZABLE,
    RX_VMO_CHILD_SLICE,
    RX_VMO_CHILD_SNAPSHOT,
    RX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE,
    RX_VMO_COMMIT_EAGER,
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
    reduce_rights,
)

from . import _info
from ._coherence import shootdown
from ._kernel import ForkEntry, Kernel
from ._mapping import Mapping
from ._process import Process
from ._stream import Stream
from ._vmo import Vmo, new_slice, snapshot_locked

# The highest user address a mapping may reach (47-bit x86_64 / 48-bit aarch64 user space).
USER_ADDR_LIMIT = 1 << 48


@dataclasses.dataclass(slots=True)
class Call:
    """One request being served: who asks, and fds to attach to the reply."""

    kernel: Kernel
    process: Process
    stream: Stream | None = None  # the channel it came on (a futex wait watches it for EOF)
    fds: list[int] = dataclasses.field(default_factory=list)  # sent with the reply
    close_after: list[int] = dataclasses.field(default_factory=list)  # ours to close once sent


Handler = Callable[..., Awaitable[tuple[Any, ...]]]
HANDLERS: dict[str, Handler] = {}


def syscall(fn: Handler) -> Handler:
    HANDLERS[fn.__name__] = fn
    return fn


def _invalid(what: str) -> RxError:
    return RxError(RX_ERR_INVALID_ARGS, what)


def _round_up(n: int) -> int:
    return (n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def _check_range(offset: int, length: int, limit: int, what: str = "range") -> None:
    """[offset, offset+length) must not overflow 64 bits and must end by `limit`."""
    if offset + length >= 1 << 64 or offset + length > limit:
        raise RxError(RX_ERR_OUT_OF_RANGE, f"{what} {offset:#x}+{length:#x} passes the end ({limit:#x})")


def _check_aligned(**values: int) -> None:
    for name, value in values.items():
        if value & (PAGE_SIZE - 1):
            raise _invalid(f"{name} {value:#x} is not page aligned")


def _check_perms(perms: int) -> None:
    if perms & ~RX_VM_PERMS:
        raise _invalid(f"unknown permission bits {perms & ~RX_VM_PERMS:#x}")
    if perms & RX_VM_PERM_WRITE and not perms & RX_VM_PERM_READ:
        raise _invalid("write permission needs read permission")


def _vmo(call: Call, handle: int, rights: int = 0) -> tuple[Vmo, int]:
    h = call.process.handles.get(handle, Vmo, rights)
    assert isinstance(h.obj, Vmo)
    return h.obj, h.rights


# -- handles (Zircon: zx_process_self, zx_handle_close, zx_handle_duplicate; rx: export/import) ---


@syscall
async def rx_process_self(call: Call) -> tuple[Any, ...]:
    return (call.process.handles.add(call.process, RX_DEFAULT_PROCESS_RIGHTS),)


@syscall
async def rx_system_handle(call: Call) -> tuple[Any, ...]:
    # The socket is 0600 inside a 0700 directory: whoever got here is rxd's own user (or root).
    return (call.process.handles.add(call.kernel.system, RX_DEFAULT_SYSTEM_RIGHTS),)


@syscall
async def rx_handle_close(call: Call, handle: int) -> tuple[Any, ...]:
    call.process.handles.remove(handle)
    return ()


@syscall
async def rx_handle_duplicate(call: Call, handle: int, rights: int) -> tuple[Any, ...]:
    h = call.process.handles.get(handle, None, RX_RIGHT_DUPLICATE)
    new_rights = reduce_rights(h.rights, rights)
    if new_rights is None:
        raise _invalid(f"rights {rights:#x} are not a subset of the handle's {h.rights:#x}")
    return (call.process.handles.add(h.obj, new_rights),)


@syscall
async def rx_handle_export(call: Call, handle: int, rights: int) -> tuple[Any, ...]:
    h = call.process.handles.get(handle, None, RX_RIGHT_DUPLICATE | RX_RIGHT_TRANSFER)
    if reduce_rights(h.rights, rights) is None:
        raise _invalid(f"rights {rights:#x} are not a subset of the handle's {h.rights:#x}")
    return (call.kernel.export(call.process, h.obj, h.rights, rights),)


@syscall
async def rx_handle_import(call: Call, token: str) -> tuple[Any, ...]:
    obj, rights = call.kernel.claim(token)
    try:
        return (call.process.handles.add(obj, rights),)
    finally:
        obj.drop_ref()  # the token's reference: the handle holds its own now (or none exists)


# -- VMOs (Zircon: zx_vmo_create, _read, _write, _get_size, _set_size, _op_range) ----------------


@syscall
async def rx_vmo_create(call: Call, size: int, options: int) -> tuple[Any, ...]:
    if options & ~RX_VMO_CREATE_OPTIONS:
        raise _invalid(f"unknown options {options & ~RX_VMO_CREATE_OPTIONS:#x}")
    if size > RX_VMO_MAX_SIZE:
        raise RxError(RX_ERR_OUT_OF_RANGE, f"size {size:#x} is larger than the {RX_VMO_MAX_SIZE:#x} maximum")
    size = _round_up(size)
    capacity = max(size, RX_VMO_RESIZABLE_CAPACITY) if options & RX_VMO_RESIZABLE else size
    vmo = call.kernel.new_vmo(size, options, capacity)
    vmo.add_ref()  # held until the handle exists, so a failed eager commit frees the store
    try:
        if options & RX_VMO_COMMIT_EAGER:
            async with vmo.lock:
                await vmo.commit_locked(0, vmo.size_pages, allocate=True)
        rights = RX_DEFAULT_VMO_RIGHTS | (RX_RIGHT_RESIZE if options & RX_VMO_RESIZABLE else 0)
        return (call.process.handles.add(vmo, rights),)
    finally:
        vmo.drop_ref()


@syscall
async def rx_vmo_read(call: Call, handle: int, offset: int, length: int) -> tuple[Any, ...]:
    vmo, _ = _vmo(call, handle, RX_RIGHT_READ)
    if length > RX_MAX_IO:
        raise _invalid(f"at most {RX_MAX_IO} bytes per call (the stub library splits larger reads)")
    _check_range(offset, length, vmo.size)
    async with vmo.lock:  # a split in flight must not show half-done
        _check_range(offset, length, vmo.size)
        return (vmo.read_locked(offset, length),)


@syscall
async def rx_vmo_write(call: Call, handle: int, offset: int, data: bytes) -> tuple[Any, ...]:
    vmo, _ = _vmo(call, handle, RX_RIGHT_WRITE)
    _check_range(offset, len(data), vmo.size)
    async with vmo.lock:
        _check_range(offset, len(data), vmo.size)  # the size may have changed while we waited
        await vmo.write_locked(offset, data)
    return ()


@syscall
async def rx_vmo_get_size(call: Call, handle: int) -> tuple[Any, ...]:
    vmo, _ = _vmo(call, handle)
    return (vmo.size,)


@syscall
async def rx_vmo_set_size(call: Call, handle: int, size: int) -> tuple[Any, ...]:
    vmo, _ = _vmo(call, handle, RX_RIGHT_WRITE | RX_RIGHT_RESIZE)
    if not vmo.options & RX_VMO_RESIZABLE:
        raise RxError(RX_ERR_UNAVAILABLE, "the VMO was not created resizable")
    size = _round_up(size) if size < 1 << 63 else size
    if size > vmo.store.capacity_pages << PAGE_SHIFT:
        raise RxError(RX_ERR_OUT_OF_RANGE, f"size {size:#x} passes the VMO's capacity")
    async with vmo.lock:
        await vmo.set_size_locked(size)
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
        vmo, _ = _vmo(call, handle, _CACHE_OP_RIGHTS[op])
        if size == 0:
            raise _invalid("size is 0")
        async with vmo.lock:
            _check_range(offset, size, vmo.size)
            await vmo.cache_op_locked(offset, size, op)
        return ()
    if op not in (RX_VMO_OP_COMMIT, RX_VMO_OP_DECOMMIT, RX_VMO_OP_ZERO):
        raise _invalid(f"unknown op {op}")
    vmo, _ = _vmo(call, handle, RX_RIGHT_WRITE)
    async with vmo.lock:
        _check_range(offset, size, vmo.size)
        start, end = offset >> PAGE_SHIFT, (offset + size + PAGE_SIZE - 1) >> PAGE_SHIFT
        if op == RX_VMO_OP_COMMIT:
            await vmo.commit_locked(start, end, allocate=True)
        elif op == RX_VMO_OP_DECOMMIT:
            # Zircon: whole pages only. On a clone the pages then read as zero (its own copies go
            # and it no longer reads its parent's there), as Zircon's decommit of a child does.
            await vmo.release_locked(start, end)
        else:
            await vmo.zero_locked(offset, size)
    return ()


@syscall
async def rx_vmo_create_child(call: Call, handle: int, options: int, offset: int, size: int) -> tuple[Any, ...]:
    """Zircon's zx_vmo_create_child: SNAPSHOT, SNAPSHOT_AT_LEAST_ON_WRITE or SLICE, with the
    NO_WRITE and RESIZABLE modifiers. The parent handle needs DUPLICATE and READ; the child's
    handle has the parent handle's rights, plus WRITE for copy-on-write children (minus it with
    NO_WRITE), and RESIZE only if the child is resizable."""
    if options & ~RX_VMO_CHILD_OPTIONS:
        raise _invalid(f"unknown options {options & ~RX_VMO_CHILD_OPTIONS:#x}")
    kinds = options & (RX_VMO_CHILD_SNAPSHOT | RX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE | RX_VMO_CHILD_SLICE)
    if kinds not in (RX_VMO_CHILD_SNAPSHOT, RX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE, RX_VMO_CHILD_SLICE):
        raise _invalid("exactly one of SNAPSHOT, SNAPSHOT_AT_LEAST_ON_WRITE and SLICE is needed")
    resizable = bool(options & RX_VMO_CHILD_RESIZABLE)
    if kinds == RX_VMO_CHILD_SLICE and resizable:
        raise _invalid("a slice cannot be resizable")
    parent, rights = _vmo(call, handle, RX_RIGHT_DUPLICATE | RX_RIGHT_READ)
    _check_aligned(offset=offset)
    if size > RX_VMO_MAX_SIZE or offset + size >= 1 << 64:
        raise RxError(RX_ERR_OUT_OF_RANGE, f"child {offset:#x}+{size:#x} is too large")
    size = _round_up(size)
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
            _check_range(offset, size, parent.size, "slice")
            child = new_slice(parent, kernel.new_koid(), offset, size, 0)
        else:
            capacity = max(size, RX_VMO_RESIZABLE_CAPACITY) if resizable else size
            child = await snapshot_locked(
                parent, kernel.new_koid(), offset, size, RX_VMO_RESIZABLE if resizable else 0, capacity,
                at_least_on_write=kinds == RX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE,
            )
        kernel.register_vmo(child)
        child.add_ref()
    try:
        return (call.process.handles.add(child, rights),)
    finally:
        child.drop_ref()


# -- address space (Zircon: zx_vmar_map, _unmap, _protect, _op_range) ------------------------------


@syscall
async def rx_vmar_map(
    call: Call, handle: int, vmo_offset: int, length: int, perms: int, options: int, addr: int
) -> tuple[Any, ...]:
    _check_perms(perms)
    if options & ~RX_VM_MAP_OPTIONS:
        raise _invalid(f"unknown map options {options & ~RX_VM_MAP_OPTIONS:#x}")
    if length == 0:
        raise _invalid("length is 0")
    _check_aligned(vmo_offset=vmo_offset, length=length, addr=addr)
    if addr == 0 or addr + length > USER_ADDR_LIMIT:
        raise _invalid(f"address range {addr:#x}+{length:#x} is not in user space")
    needed = RX_RIGHT_MAP | (RX_RIGHT_READ if perms & RX_VM_PERM_READ else 0)
    needed |= RX_RIGHT_WRITE if perms & RX_VM_PERM_WRITE else 0
    vmo, rights = _vmo(call, handle, needed)
    limit = vmo.store.capacity_pages << PAGE_SHIFT if vmo.options & RX_VMO_RESIZABLE else vmo.size
    _check_range(vmo_offset, length, limit, "mapping")
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
            await vmo.commit_locked(start, max(start, min(m.end_page, vmo.size_pages)))
        if not process.alive:  # killed while the commit awaited acks: its teardown is done
            raise RxError(RX_ERR_BAD_STATE, "the process died while mapping")
    if specific:
        # Replace whatever this process maps there, with no await in between: a fault sees the
        # old mapping or the new one, never a hole. The client replaces its memory the same way.
        for old in _covering(process, addr, length, whole=False, must_exist=False):
            process.remove_mapping(old)
    if not process.aspace.insert(m):
        raise RxError(RX_ERR_ALREADY_EXISTS, f"{addr:#x}+{length:#x} overlaps an existing mapping")
    vmo.mappings.append(m)
    vmo.add_ref()
    if options & RX_VM_SPECIFIC:
        process.prune_stores()
    # Store fds reach the client on its control channel when a fault first needs them, with
    # no more access than the mapping allows (see send_stores).
    return ()


def _covering(process: Process, addr: int, length: int, whole: bool, must_exist: bool = True) -> list[Mapping]:
    """Mappings overlapping [addr, addr+length), split so none crosses either end. With `whole`,
    the range must be mapped without gaps (Zircon's protect/op_range rule)."""
    _check_aligned(addr=addr, length=length)
    if length == 0:
        raise _invalid("length is 0")
    _check_range(addr, length, USER_ADDR_LIMIT, "address range")
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
    out = []
    for m in found:
        if m.base < addr:
            m = process.aspace.split(m, addr)
        if m.end > addr + length:
            process.aspace.split(m, addr + length)
        out.append(m)
    return out


@syscall
async def rx_vmar_unmap(call: Call, addr: int, length: int) -> tuple[Any, ...]:
    # The client munmaps the range itself once this returns; a fault there afterwards is refused.
    for m in _covering(call.process, addr, length, whole=False):
        call.process.remove_mapping(m)
    call.process.prune_stores()
    return ()


@syscall
async def rx_vmar_protect(call: Call, addr: int, length: int, perms: int) -> tuple[Any, ...]:
    _check_perms(perms)
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
            await shootdown({process: [(m.base, m.length)]}, CONTROL_INVALIDATE)
    return ()


@syscall
async def rx_vmar_op_range(call: Call, addr: int, length: int, op: int) -> tuple[Any, ...]:
    if op != RX_VMAR_OP_COMMIT:
        raise _invalid(f"unknown op {op}")
    for m in _covering(call.process, addr, length, whole=True):
        if m.perms & RX_VM_PERM_WRITE:
            async with m.vmo.lock:
                start = m.first_page
                await m.vmo.commit_locked(start, max(start, min(m.end_page, m.vmo.size_pages)), exclude=m)
    return ()  # the stub then touches the range so every page is mapped before it returns


# -- information (Zircon: zx_object_get_info) -------------------------------------------------------


@syscall
async def rx_object_get_info(call: Call, handle: int, topic: int) -> tuple[Any, ...]:
    h = call.process.handles.get(handle, None, RX_RIGHT_INSPECT)
    return (_info.get_info(call.kernel, h.obj, h.rights, topic),)



# -- rx.fork() (rx extension) ------------------------------------------------------------------------


@syscall
async def rx_fork_prepare(call: Call) -> tuple[Any, ...]:
    """Snapshot every VMO this process maps (once each, however many mappings it has) and keep
    the snapshots behind a one-time ticket for the child: see rxkernel.client.fork()."""
    process, kernel = call.process, call.kernel
    entries: list[ForkEntry] = []
    snapshots: dict[Vmo, Vmo] = {}
    try:
        for m in sorted(process.aspace, key=lambda m: m.base):
            vmo = m.vmo
            if vmo not in snapshots:
                async with vmo.lock:
                    if not m.alive:
                        continue
                    resizable = bool(vmo.options & RX_VMO_RESIZABLE)
                    child = await snapshot_locked(
                        vmo, kernel.new_koid(), 0, vmo.size, vmo.options & RX_VMO_RESIZABLE,
                        vmo.store.capacity_pages << PAGE_SHIFT if resizable else vmo.size, at_least_on_write=False,
                    )
                    kernel.register_vmo(child)
                    child.add_ref()  # the ticket's reference
                    snapshots[vmo] = child
            # The child gets no more than the handle the parent mapped with allowed.
            entries.append(ForkEntry(m.base, m.length, m.vmo_offset, m.perms, m.options & ~RX_VM_MAP_RANGE, snapshots[vmo], m.rights))
        if not process.alive:
            raise RxError(RX_ERR_BAD_STATE, "the process died while forking")
    except BaseException:
        for child in snapshots.values():
            child.drop_ref()
        raise
    return (kernel.new_fork_ticket(process, entries),)


@syscall
async def rx_fork_claim(call: Call, ticket: str) -> tuple[Any, ...]:
    """The fork child's side: handles to the snapshots, and where the parent mapped them."""
    entries = call.kernel.claim_fork_ticket(ticket)
    out = []
    handles = call.process.handles
    try:
        for e in entries:
            out.append([e.addr, e.length, e.vmo_offset, e.perms, e.options, handles.add(e.vmo, e.rights)])
    finally:
        for vmo in {e.vmo for e in entries}:
            vmo.drop_ref()  # the ticket's reference: the handles hold their own now
    return (out,)


@syscall
async def rx_fork_cancel(call: Call, ticket: str) -> tuple[Any, ...]:
    """The parent's side when the child died before claiming: free the snapshots."""
    call.kernel.cancel_fork_ticket(call.process, ticket)
    return ()


# -- futexes (Zircon: zx_futex_wait, zx_futex_wake, zx_futex_requeue; keyed across processes) ---


@syscall
async def rx_futex_wait(call: Call, addr: int, expected: int, deadline: int, owner: int) -> tuple[Any, ...]:
    await call.kernel.futexes.wait(call.process, call.stream, addr, expected, deadline, owner)
    return ()


@syscall
async def rx_futex_wake(call: Call, addr: int, count: int) -> tuple[Any, ...]:
    return (call.kernel.futexes.wake(call.process, addr, count),)


@syscall
async def rx_futex_requeue(
    call: Call, addr: int, wake_count: int, expected: int, requeue_addr: int, requeue_count: int, requeue_owner: int
) -> tuple[Any, ...]:
    futexes = call.kernel.futexes
    return (await futexes.requeue(call.process, addr, wake_count, expected, requeue_addr, requeue_count, requeue_owner),)


# Handlers kept in their own files register themselves on import (they import Call and syscall
# from here, so they come last).
from . import _clock  # noqa: E402,F401
