"""The syscall stubs: plain functions named after the syscalls (checked against proto's table).

Each stub opens the process's default connection on first use ($RX_SOCKET, else
$XDG_RUNTIME_DIR/rxkernel/rxd.sock, else /tmp/rxkernel-$UID/rxd.sock) and raises RxError with
rxd's status on failure.

Memory that rx maps is demand paged by a SIGSEGV trap: plain loads and stores just work. Syscalls
into such memory (os.readv, socket.recv_into, …) do not trap; the host kernel returns EFAULT for a
page not yet present. Prefault such buffers first: map with RX_VM_MAP_RANGE, or call
rx_vmar_op_range(addr, length, RX_VMAR_OP_COMMIT).
"""

from __future__ import annotations

import os
from typing import Any, NoReturn

from rxkernel.native import ffi, lib
from rxkernel.proto import (
    PAGE_SIZE,
    RX_ERR_INVALID_ARGS,
    RX_ERR_NO_MEMORY,
    RX_ERR_NO_RESOURCES,
    RX_ERR_NOT_FOUND,
    RX_FUTEX_WAKE_ALL,
    RX_MAX_IO,
    RX_RIGHT_SAME_RIGHTS,
    RX_TIME_INFINITE,
    RX_VM_MAP_RANGE,
    RX_VM_PERM_WRITE,
    RX_VM_SPECIFIC,
    RxError,
)

from ._connection import RxConnection
from ._process import PROCESS, LocalMapping


def connect(path: str | None = None, job: str | None = None) -> RxConnection:
    """Open the process's connection to rxd now (otherwise the first stub call does). The process
    is born in the job that `job` names (an rx_handle_export token of a job handle), else in
    $RX_JOB's, else in rxd's default job; it never changes job afterwards."""
    return PROCESS.connect(path, job)


def disconnect() -> None:
    """Unmap every rx mapping and close the connection; rxd frees what only we could reach."""
    with PROCESS.lock:
        PROCESS.forget_mappings()
        if PROCESS.connection is not None:
            PROCESS.connection.close()
            PROCESS.connection = None


def _thread_call(name: str, *args: Any) -> tuple[Any, ...]:
    return PROCESS.connect().thread_call(name, *args)


def _call(name: str, *args: Any) -> tuple[Any, ...]:
    result, fds = PROCESS.connect().call(name, *args)
    assert not fds, f"{name} returned fds unexpectedly"
    return result


# -- handles ----------------------------------------------------------------------------------------


def rx_process_self() -> int:
    """A handle to this rx process (Zircon's zx_process_self): INSPECT it for RX_INFO_TASK_STATS,
    RX_INFO_PROCESS_VMOS and RX_INFO_PROCESS_MAPS."""
    return int(_call("rx_process_self")[0])


def rx_system_handle() -> int:
    """A handle to the whole system, for RX_INFO_KMEM_STATS, RX_INFO_SYSTEM_PROCESSES,
    RX_INFO_SYSTEM_VMOS and rx_clock_adjust_realtime (anyone who can reach rxd's socket may)."""
    return int(_call("rx_system_handle")[0])


def rx_handle_close(handle: int) -> None:
    """Close `handle`; the object lives on while other handles, mappings or tokens hold it."""
    _call("rx_handle_close", handle)


def rx_handle_duplicate(handle: int, rights: int = RX_RIGHT_SAME_RIGHTS) -> int:
    """A second handle to the same object with `rights` (a subset of the handle's; the handle
    needs RX_RIGHT_DUPLICATE). RX_RIGHT_SAME_RIGHTS keeps them all."""
    return int(_call("rx_handle_duplicate", handle, rights)[0])


def rx_handle_export(handle: int, rights: int = RX_RIGHT_SAME_RIGHTS) -> str:
    """A one-time 128-bit token another process can rx_handle_import (rights can only shrink).
    Unclaimed tokens die with the exporting process."""
    return str(_call("rx_handle_export", handle, rights)[0])


def rx_handle_import(token: str) -> int:
    """Claim a token another process made with rx_handle_export: a handle with the rights it
    carries. Tokens are one-time (RX_ERR_NOT_FOUND the second time, or once their exporter died)."""
    return int(_call("rx_handle_import", token)[0])


# -- VMOs -------------------------------------------------------------------------------------------


def rx_vmo_create(size: int, options: int = 0) -> int:
    """A new VMO of `size` bytes (rounded up to pages), read as zero and committing nothing until
    written. Options: RX_VMO_RESIZABLE (rx_vmo_set_size works; the handle gets RX_RIGHT_RESIZE),
    RX_VMO_COMMIT_EAGER (every page committed now; RX_ERR_NO_MEMORY if that does not fit)."""
    return int(_call("rx_vmo_create", size, options)[0])


def rx_vmo_read(handle: int, offset: int, length: int) -> bytes:
    """Read bytes; calls larger than rxd's per-request limit are split transparently."""
    if length <= RX_MAX_IO:
        return bytes(_call("rx_vmo_read", handle, offset, length)[0])
    parts = []
    for off in range(0, length, RX_MAX_IO):
        parts.append(_call("rx_vmo_read", handle, offset + off, min(RX_MAX_IO, length - off))[0])
    return b"".join(parts)


def rx_vmo_write(handle: int, offset: int, data: bytes | bytearray | memoryview) -> None:
    """Write bytes at `offset` (needs RX_RIGHT_WRITE), committing the pages it touches; calls larger
    than rxd's per-request limit are split transparently."""
    view = memoryview(data).cast("B")
    if len(view) <= RX_MAX_IO:
        _call("rx_vmo_write", handle, offset, bytes(view))
        return
    for off in range(0, len(view), RX_MAX_IO):
        _call("rx_vmo_write", handle, offset + off, bytes(view[off : off + RX_MAX_IO]))


def rx_vmo_get_size(handle: int) -> int:
    """The VMO's size in bytes (a multiple of the page size)."""
    return int(_call("rx_vmo_get_size", handle)[0])


def rx_vmo_set_size(handle: int, size: int) -> None:
    """Resize a VMO made with RX_VMO_RESIZABLE (needs RX_RIGHT_WRITE and RX_RIGHT_RESIZE). Pages
    past a smaller size are freed and taken away from every mapping; touching them is SIGBUS."""
    _call("rx_vmo_set_size", handle, size)


def rx_vmo_op_range(handle: int, op: int, offset: int, size: int) -> None:
    """Zircon's zx_vmo_op_range: COMMIT, DECOMMIT, ZERO (WRITE right) and the cache ops
    CACHE_SYNC, CACHE_CLEAN, CACHE_CLEAN_INVALIDATE (READ right), CACHE_INVALIDATE (WRITE right),
    which act on the committed pages in range and commit nothing."""
    _call("rx_vmo_op_range", handle, op, offset, size)


def rx_vmo_create_child(handle: int, options: int, offset: int, size: int) -> int:
    """A child VMO (Zircon's zx_vmo_create_child): RX_VMO_CHILD_SNAPSHOT (copy-on-write both
    ways), RX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE (sees the parent's later writes until it
    writes a page) or RX_VMO_CHILD_SLICE (a window, no copying), with RX_VMO_CHILD_NO_WRITE and
    RX_VMO_CHILD_RESIZABLE modifiers. The handle needs DUPLICATE and READ rights."""
    return int(_call("rx_vmo_create_child", handle, options, offset, size)[0])


# -- address space ----------------------------------------------------------------------------------


def rx_vmar_map(vmo: int, vmo_offset: int, length: int, perms: int, options: int = 0, addr: int = 0) -> int:
    """Map `length` bytes of `vmo` from `vmo_offset`; returns the address. Nothing is committed or
    even mapped until first touch, unless options has RX_VM_MAP_RANGE (prefault it all now).
    With RX_VM_SPECIFIC the mapping goes exactly at `addr`, replacing any rx mappings there at
    once (what rx.fork()'s child does); otherwise `addr` must be 0."""
    if type(length) is not int or length <= 0 or length % PAGE_SIZE or length >= 1 << 47:
        raise RxError(RX_ERR_INVALID_ARGS, f"length {length!r} must be a positive multiple of {PAGE_SIZE}")
    specific = bool(options & RX_VM_SPECIFIC)
    if specific != bool(addr) or addr % PAGE_SIZE:
        raise RxError(RX_ERR_INVALID_ARGS, "addr (page aligned) goes with RX_VM_SPECIFIC, and only with it")
    conn = PROCESS.connect()
    with PROCESS.lock:
        if specific:
            # Our memory goes first (the range becomes PROT_NONE; the table still knows it), so
            # no store of this thread or another lands in pages rxd no longer tracks. Then rxd
            # replaces its record in one step: until then a touch refaults the old mapping, and
            # if rxd refuses, the old mapping simply stays.
            if lib.rx_reserve_at(addr, length) < 0:
                raise RxError(RX_ERR_NO_MEMORY, f"cannot reserve {addr:#x}+{length:#x}")
            conn.call("rx_vmar_map", vmo, vmo_offset, length, perms, options, addr)
            for m in PROCESS.cut(addr, length):
                PROCESS.mappings.remove(m)
            if lib.rx_map_register(addr, length) < 0:
                _undo_map(conn, addr, length, "too many separate rx mappings")
        else:
            addr = lib.rx_reserve(length)
            if addr < 0:
                raise RxError(RX_ERR_NO_MEMORY, f"cannot reserve {length} bytes of address space")
            try:
                conn.call("rx_vmar_map", vmo, vmo_offset, length, perms, options, addr)
            except BaseException:
                lib.rx_unreserve(addr, length)
                raise
            if lib.rx_map_register(addr, length) < 0:
                _undo_map(conn, addr, length, "too many separate rx mappings")
        added = PROCESS.mappings.insert(LocalMapping(addr, length, perms))
        assert added, f"{addr:#x}+{length:#x} overlaps a local record"  # the reservation is new, or was cut free above
        lib.rx_trap_install()
    if options & RX_VM_MAP_RANGE:
        lib.rx_touch(addr, length, 1 if perms & RX_VM_PERM_WRITE else 0)
    return int(addr)


def _undo_map(conn: RxConnection, addr: int, length: int, why: str) -> NoReturn:
    """The C tables could not take the mapping: unmap it in rxd again and give the range back."""
    conn.call("rx_vmar_unmap", addr, length)
    lib.rx_unreserve(addr, length)
    raise RxError(RX_ERR_NO_RESOURCES, why)


def _forget_local(addr: int, length: int) -> None:
    for m in PROCESS.cut(addr, length):
        lib.rx_map_unregister(m.base, m.length)
        lib.rx_unreserve(m.base, m.length)
        PROCESS.mappings.remove(m)


def rx_vmar_unmap(addr: int, length: int) -> None:
    """Unmap [addr, addr+length). Mappings lost when rxd went away are only given back locally
    (rxd never knew them); if the range holds nothing else, rxd is not asked."""
    with PROCESS.lock:
        found = PROCESS.find(addr, length)
        live = [m for m in found if not m.lost]
        # Take our access away before rxd forgets the range: a store another thread makes after
        # rxd forgot it would land in pages nothing tracks (a snapshot taken then would get it).
        for m in live:
            lo, hi = max(m.base, addr), min(m.end, addr + length)
            lib.rx_reserve_at(lo, hi - lo)
        if live or not found:
            _call("rx_vmar_unmap", addr, length)
        _forget_local(addr, length)


def rx_vmar_protect(addr: int, length: int, perms: int) -> None:
    """Change the permissions of the mapped range [addr, addr+length) (it must be mapped without
    gaps); no more than the handle each mapping was made with allows."""
    with PROCESS.lock:
        _call("rx_vmar_protect", addr, length, perms)
        for m in PROCESS.cut(addr, length):
            m.perms = perms


def rx_vmar_op_range(addr: int, length: int, op: int) -> None:
    """RX_VMAR_OP_COMMIT: commit and map every page now, so syscalls can use the memory."""
    _call("rx_vmar_op_range", addr, length, op)
    with PROCESS.lock:
        pieces = [(max(m.base, addr), min(m.end, addr + length), m.perms) for m in PROCESS.find(addr, length)]
    for lo, hi, perms in pieces:
        lib.rx_touch(lo, hi - lo, 1 if perms & RX_VM_PERM_WRITE else 0)


# -- information ------------------------------------------------------------------------------------


def rx_object_get_info(handle: int, topic: int) -> Any:
    """Zircon's zx_object_get_info (the handle needs RX_RIGHT_INSPECT): RX_INFO_HANDLE_BASIC,
    RX_INFO_VMO (a VMO handle), RX_INFO_TASK_STATS / _PROCESS_VMOS / _PROCESS_MAPS (a process
    handle), RX_INFO_KMEM_STATS / _SYSTEM_PROCESSES / _SYSTEM_VMOS (the system handle)."""
    return _call("rx_object_get_info", handle, topic)[0]


def rx_object_get_child(handle: int, koid: int, rights: int = RX_RIGHT_SAME_RIGHTS) -> int:
    """Zircon's zx_object_get_child: a handle to the live process `koid` (see
    RX_INFO_SYSTEM_PROCESSES), through the system handle (RX_RIGHT_ENUMERATE), for looking at
    its mappings and VMOs. RX_RIGHT_SAME_RIGHTS gives a process handle's default rights."""
    return int(_call("rx_object_get_child", handle, koid, rights)[0])


# -- jobs and properties -----------------------------------------------------------------------


def rx_job_default() -> int:
    """A handle to this process's own job (Zircon's zx_job_default): the job it was born in."""
    return int(_call("rx_job_default")[0])


def rx_job_create(parent: int, options: int = 0) -> int:
    """A new job below `parent` (a job handle with RX_RIGHT_WRITE), Zircon's zx_job_create. Start
    processes in it with rx.popen(args, job=h), and limit it with rx_object_set_property."""
    return int(_call("rx_job_create", parent, options)[0])


def rx_job_wait_events(job: int, known_total: int, deadline_ns: int | None = None) -> int:
    """Block this thread until the job's memory events total (events_high + events_max +
    events_oom + events_oom_kill of RX_INFO_JOB) differs from `known_total`, or until
    `deadline_ns`; returns the total then. A job watcher's way to hear it passed COMMIT_HIGH."""
    deadline = RX_TIME_INFINITE if deadline_ns is None else deadline_ns
    return int(_thread_call("rx_job_wait_events", job, known_total, deadline)[0])


def rx_object_set_property(handle: int, prop: int, value: int) -> None:
    """Set a property (RX_RIGHT_SET_PROPERTY): RX_PROP_JOB_COMMIT_MAX (a hard limit on the job's
    committed bytes: past it, commits fail with RX_ERR_NO_MEMORY), RX_PROP_JOB_COMMIT_HIGH (past
    it, the job's faults are throttled). Only on jobs below the caller's own; 0 clears a limit."""
    _call("rx_object_set_property", handle, prop, value)


def rx_object_get_property(handle: int, prop: int) -> int:
    """A property's value (RX_RIGHT_GET_PROPERTY); 0 for a limit that is not set."""
    return int(_call("rx_object_get_property", handle, prop)[0])


# -- memory pressure ---------------------------------------------------------------------------


def rx_system_wait_pressure(known_level: int, deadline_ns: int | None = None) -> int:
    """Block this thread until rxd's memory pressure level differs from `known_level` (or until
    `deadline_ns` on rx_clock_get_monotonic()), and return the level then. The level itself is
    rx_system_get_pressure_level(), read with no request; rx.watch_pressure() iterates changes."""
    deadline = RX_TIME_INFINITE if deadline_ns is None else deadline_ns
    return int(_thread_call("rx_system_wait_pressure", known_level, deadline)[0])


# -- rx.fork() (rx extension; see _fork.py) -------------------------------------------------------


def rx_fork_prepare() -> str:
    """Snapshot every VMO this process maps behind a one-time ticket for a fork child."""
    return str(_call("rx_fork_prepare")[0])


def rx_fork_claim(ticket: str) -> list[list[int]]:
    """[addr, length, vmo_offset, perms, options, handle] for each mapping of the parent."""
    return [[int(v) for v in e] for e in _call("rx_fork_claim", ticket)[0]]


def rx_fork_cancel(ticket: str) -> None:
    """Free the snapshots behind an unclaimed rx.fork() ticket (the child died before claiming)."""
    _call("rx_fork_cancel", ticket)


def rx_fork_handoff(ticket: str, pid: int) -> None:
    """rx.fork()'s parent side once the child exists: the ticket is the child's (`pid`, a child
    of this process) from now on, and goes when that child claims it or exits."""
    _call("rx_fork_handoff", ticket, pid)


# -- futexes: on the calling thread's own channel, so a wait blocks only this thread -------------


def rx_futex_wait(addr: int, expected: int, deadline_ns: int | None = None, *, owner_pid: int = 0) -> None:
    """Wait on the u32 at `addr` (in an rx mapping, 4-byte aligned) while it holds `expected`,
    until woken or until `deadline_ns` on the rx_clock_get_monotonic() clock (None: no deadline).

    Raises RxError: RX_ERR_BAD_STATE when the word does not hold `expected` (or rxd took it from
    the dead `owner_pid`: see the robust words in proto), RX_ERR_TIMED_OUT at the deadline,
    RX_ERR_INVALID_ARGS for a misaligned address or one outside rx mappings. Processes that map one
    VMO at different addresses meet on the same futex."""
    deadline = RX_TIME_INFINITE if deadline_ns is None else deadline_ns
    try:
        _thread_call("rx_futex_wait", addr, expected, deadline, owner_pid)
    except RxError:
        raise
    except BaseException:
        # Interrupted (Ctrl-C): rxd may already have counted a wake for us that we will never
        # act on. Pass one on, so no other waiter sleeps through it; a spurious wake is harmless.
        try:
            rx_futex_wake(addr, 1)
        except Exception:
            pass
        raise


def rx_futex_wake(addr: int, count: int = RX_FUTEX_WAKE_ALL) -> int:
    """Wake up to `count` waiters on the futex at `addr` (oldest first); how many were woken."""
    return int(_thread_call("rx_futex_wake", addr, count)[0])


def rx_futex_requeue(
    addr: int, wake_count: int, expected: int, requeue_addr: int, requeue_count: int, *, requeue_owner: int = 0
) -> int:
    """If the u32 at `addr` holds `expected` (else RX_ERR_BAD_STATE): wake `wake_count` of its
    waiters and move up to `requeue_count` of the rest to wait on `requeue_addr`. How many woke.

    `requeue_owner` (like Zircon's new_requeue_owner): the pid holding the robust word at
    `requeue_addr` (needs a writable mapping); the moved waiters then wait robustly, as if they
    had named an owner: if the word's owner dies, rxd hands it to one of them."""
    return int(_thread_call("rx_futex_requeue", addr, wake_count, expected, requeue_addr, requeue_count, requeue_owner)[0])


# -- clock (reading it is the vDSO's: _vdso.py) ------------------------------------------------


def rx_clock_adjust_realtime(system_handle: int, offset_ns: int) -> None:
    """Set realtime = monotonic + offset_ns in every process (needs the system handle)."""
    _call("rx_clock_adjust_realtime", system_handle, offset_ns)


# -- not syscalls -----------------------------------------------------------------------------------


def rx_view(addr: int, length: int) -> memoryview:
    """A memoryview of rx-mapped memory (writable if the mapping is). NumPy can wrap it:
    numpy.frombuffer(rx_view(addr, n), dtype=...)."""
    with PROCESS.lock:
        pieces = sorted(PROCESS.find(addr, length), key=lambda m: m.base)
    covered = addr
    for m in pieces:
        if m.base > covered:
            break
        covered = max(covered, m.end)
    if length <= 0 or covered < addr + length:
        raise RxError(RX_ERR_NOT_FOUND, f"{addr:#x}+{length:#x} is not inside rx mappings")
    view = memoryview(ffi.buffer(ffi.cast("char *", addr), length))
    if not all(m.perms & RX_VM_PERM_WRITE for m in pieces):
        view = view.toreadonly()
    return view


def rx_trap_counters() -> dict[str, int]:
    """This process's fault-trap counters (from the C handler)."""
    out = ffi.new("uint64_t[8]")
    lib.rx_trap_counters(out)
    names = ("faults", "pages_mapped", "stale_replies", "control_requests", "fault_channels")
    return {name: int(out[i]) for i, name in enumerate(names)}
