"""The one syscall table: numbers, names and wire argument shapes.

rxd's dispatch, the client stubs and (later) the vDSO's syscall-number table are all checked against
this table (tests/test_proto.py), so a syscall exists in exactly one place.
"""

from __future__ import annotations

import dataclasses
from typing import Final, Literal

from ._status import RX_ERR_BAD_SYSCALL, RX_ERR_INVALID_ARGS, RxError

ArgKind = Literal["u32", "u64", "i64", "handle", "bytes", "str"]

# Inclusive (low, high) of each integer kind.
_LIMITS: Final[dict[str, tuple[int, int]]] = {
    "u32": (0, (1 << 32) - 1),
    "u64": (0, (1 << 64) - 1),
    "i64": (-(1 << 63), (1 << 63) - 1),
    "handle": (0, (1 << 32) - 1),
}


@dataclasses.dataclass(frozen=True, slots=True)
class Syscall:
    number: int
    name: str
    args: tuple[tuple[str, ArgKind], ...]
    result: str  # what the reply carries, for documentation and the stub generator's tests


def _s(number: int, name: str, args: str, result: str) -> Syscall:
    parsed = tuple(tuple(a.split(":")) for a in args.split()) if args else ()
    return Syscall(number, name, parsed, result)  # type: ignore[arg-type]


SYSCALLS: Final[tuple[Syscall, ...]] = (
    _s(1, "rx_process_self", "", "handle"),
    _s(2, "rx_system_handle", "", "handle"),
    _s(3, "rx_handle_close", "handle:handle", "none"),
    _s(4, "rx_handle_duplicate", "handle:handle rights:u32", "handle"),
    _s(5, "rx_handle_export", "handle:handle rights:u32", "str"),
    _s(6, "rx_handle_import", "token:str", "handle"),
    _s(10, "rx_vmo_create", "size:u64 options:u32", "handle"),
    _s(11, "rx_vmo_read", "handle:handle offset:u64 length:u64", "bytes"),
    _s(12, "rx_vmo_write", "handle:handle offset:u64 data:bytes", "none"),
    _s(13, "rx_vmo_get_size", "handle:handle", "u64"),
    _s(14, "rx_vmo_set_size", "handle:handle size:u64", "none"),
    _s(15, "rx_vmo_op_range", "handle:handle op:u32 offset:u64 size:u64", "none"),
    _s(16, "rx_vmo_create_child", "handle:handle options:u32 offset:u64 size:u64", "handle"),
    # The client reserves the address range itself (it is its own address space) and tells rxd
    # where. Store fds reach the client later, on its control channel, when a fault needs them.
    _s(20, "rx_vmar_map", "vmo:handle vmo_offset:u64 length:u64 perms:u32 options:u32 addr:u64", "none"),
    _s(21, "rx_vmar_unmap", "addr:u64 length:u64", "none"),
    _s(22, "rx_vmar_protect", "addr:u64 length:u64 perms:u32", "none"),
    _s(23, "rx_vmar_op_range", "addr:u64 length:u64 op:u32", "none"),
    _s(30, "rx_object_get_info", "handle:handle topic:u32", "dict|list"),
    _s(31, "rx_object_get_child", "handle:handle koid:u64 rights:u32", "handle"),
    _s(32, "rx_object_set_property", "handle:handle property:u32 value:u64", "none"),
    _s(33, "rx_object_get_property", "handle:handle property:u32", "u64"),
    # rx.fork(): the parent snapshots everything it maps into a one-time ticket; the child (a new
    # rx process) claims it and gets the snapshots as handles with where to map them.
    _s(40, "rx_fork_prepare", "", "str"),
    _s(41, "rx_fork_claim", "ticket:str", "list"),
    _s(42, "rx_fork_cancel", "ticket:str", "none"),
    # The parent names the child (its pid, a child of the caller): the ticket then lives until
    # that child claims it or exits, and the parent need not wait.
    _s(43, "rx_fork_handoff", "ticket:str pid:u32", "none"),
    # Futexes on rx-mapped memory, keyed by the page behind the address (not the address), so
    # processes mapping one VMO at different addresses meet. Waits block only the calling thread's
    # own channel. owner: the pid the waiter believes holds the word (robust mutexes), or 0.
    _s(50, "rx_futex_wait", "addr:u64 expected:u32 deadline:i64 owner:u32", "none"),
    _s(51, "rx_futex_wake", "addr:u64 count:u32", "u32"),
    # requeue_owner: as Zircon's new_requeue_owner, the pid that holds the requeue word (robust), or 0.
    _s(52, "rx_futex_requeue", "addr:u64 wake_count:u32 expected:u32 requeue_addr:u64 requeue_count:u32 requeue_owner:u32", "u32"),
    # Jobs: the caller's own, and a child of a job (WRITE on the parent handle).
    _s(70, "rx_job_default", "", "handle"),
    _s(71, "rx_job_create", "parent:handle options:u32", "handle"),
    # Block (on the thread channel) until the job's events total (high+max+oom+oom_kill) differs.
    _s(72, "rx_job_wait_events", "job:handle known_total:u64 deadline:i64", "u64"),
    # Memory pressure: block (on the thread channel) until the level differs from known_level.
    _s(61, "rx_system_wait_pressure", "known_level:u32 deadline:i64", "u32"),
    # The vDSO's clock: realtime = monotonic + offset, set here and seen by every process through
    # the vvar page without a request. Needs the system handle.
    _s(60, "rx_clock_adjust_realtime", "system:handle offset:i64", "none"),
)

BY_NUMBER: Final[dict[int, Syscall]] = {s.number: s for s in SYSCALLS}
BY_NAME: Final[dict[str, Syscall]] = {s.name: s for s in SYSCALLS}
SYSCALL_NUMBERS: Final[dict[str, int]] = {s.name: s.number for s in SYSCALLS}


def check_args(number: object, args: list[object]) -> Syscall:
    """Validate a request's syscall number and argument shapes; raise RxError if they are wrong.

    Only shapes are checked here (types, counts, 64-bit ranges); meaning (alignment, sizes, rights)
    is the handler's business.
    """
    if type(number) is not int or number not in BY_NUMBER:
        raise RxError(RX_ERR_BAD_SYSCALL, f"unknown syscall number {number!r}")
    call = BY_NUMBER[number]
    if len(args) != len(call.args):
        raise RxError(RX_ERR_INVALID_ARGS, f"{call.name} takes {len(call.args)} arguments, got {len(args)}")
    for value, (name, kind) in zip(args, call.args):
        if kind == "bytes":
            ok = type(value) is bytes
        elif kind == "str":
            ok = type(value) is str
        else:
            low, high = _LIMITS[kind]
            ok = type(value) is int and low <= value <= high
        if not ok:
            raise RxError(RX_ERR_INVALID_ARGS, f"{call.name}: argument {name!r} must be {kind}, got {value!r:.40}")
    return call
