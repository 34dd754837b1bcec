"""Job syscalls (Zircon's zx_job_default, zx_job_create, zx_object_set_property /
get_property), with memcg's commit limits as the job properties.

Who may set what: a process may set a job's properties only on jobs below its own (so nobody
raises their own limit, nor a sibling's), and a job's hard limit may not exceed its parent's
effective one (the tightest limit on the path to the root) when it is set; lowering a parent's
limit later holds its children to it (their effective limit), as memcg does.
"""

from __future__ import annotations

from typing import Any

from rxkernel.proto import (
    PAGE_SHIFT,
    PAGE_SIZE,
    OVERCOMMIT_NAMES,
    PROP_NAMES,
    RX_DEFAULT_JOB_RIGHTS,
    RX_ERR_ACCESS_DENIED,
    RX_ERR_NOT_SUPPORTED,
    RX_ERR_OUT_OF_RANGE,
    RX_PROP_JOB_COMMIT_HIGH,
    RX_PROP_JOB_COMMIT_MAX,
    RX_PROP_JOB_KILL_ON_OOM,
    RX_PROP_JOB_OOM_GROUP,
    RX_PROP_JOB_OVERCOMMIT,
    RX_PROP_PROCESS_OOM_SCORE_ADJ,
    RX_RIGHT_GET_PROPERTY,
    RX_RIGHT_INSPECT,
    RX_RIGHT_SET_PROPERTY,
    RX_RIGHT_WRITE,
    RxError,
)

from ..object import Job, Process
from ._blocking import trio_deadline
from ._table import Call, syscall
from ._validate import invalid


@syscall
def rx_job_default(call: Call) -> tuple[Any, ...]:
    """The caller's own job (Zircon's zx_job_default)."""
    return (call.process.handles.add(call.process.job, RX_DEFAULT_JOB_RIGHTS),)


@syscall
def rx_job_create(call: Call, parent: int, options: int) -> tuple[Any, ...]:
    """Zircon's zx_job_create: a child of `parent` (a job handle with WRITE); options must be 0."""
    h = call.process.handles.get(parent, Job, RX_RIGHT_WRITE)
    assert isinstance(h.obj, Job)
    if options:
        raise invalid(f"rx_job_create takes no options (got {options:#x})")
    if not h.obj.alive:
        raise RxError(RX_ERR_ACCESS_DENIED, "the parent job is gone")
    return (call.process.handles.add(call.kernel.new_job(h.obj), RX_DEFAULT_JOB_RIGHTS),)


@syscall
async def rx_job_wait_events(call: Call, job: int, known_total: int, deadline: int) -> tuple[Any, ...]:
    """Wait until the job's memory.events total (events_high + events_max + events_oom +
    events_oom_kill in RX_INFO_JOB) differs from `known_total`, or `deadline` (rx monotonic ns);
    the handle needs INSPECT. A `high` event is how a watcher hears the job passed COMMIT_HIGH."""
    h = call.process.handles.get(job, Job, RX_RIGHT_INSPECT)
    target = h.obj
    assert isinstance(target, Job)
    at = trio_deadline(call, deadline)
    return (await target.wait_events(known_total, at, call.channel),)


def _limit_pages(prop: int, value: int) -> int | None:
    if value % PAGE_SIZE:
        raise invalid(f"{PROP_NAMES[prop]} must be a multiple of the page size ({PAGE_SIZE}), not {value}")
    return value >> PAGE_SHIFT or None


def _property_name(obj: object, property: int) -> str:
    if property not in PROP_NAMES:
        raise RxError(RX_ERR_NOT_SUPPORTED, f"unknown property {property} (the properties are {', '.join(PROP_NAMES.values())})")
    name = PROP_NAMES[property]
    kind, cls = ("process", Process) if property == RX_PROP_PROCESS_OOM_SCORE_ADJ else ("job", Job)
    if not isinstance(obj, cls):
        raise RxError(RX_ERR_NOT_SUPPORTED, f"{name} is a {kind} property, and the handle is a {getattr(obj, 'type_name', '?')}")
    return name


def _flag(name: str, value: int) -> bool:
    if value not in (0, 1):
        raise invalid(f"{name} is 0 or 1, not {value}")
    return bool(value)


@syscall
def rx_object_set_property(call: Call, handle: int, property: int, value: int) -> tuple[Any, ...]:
    h = call.process.handles.get(handle, None, RX_RIGHT_SET_PROPERTY)
    name = _property_name(h.obj, property)
    own = call.process.job
    if isinstance(h.obj, Process):
        _set_oom_score_adj(call.process, h.obj, value)
        return ()
    assert isinstance(h.obj, Job)
    job = h.obj
    if not job.is_below(own):
        where = "its own job" if job is own else "a job above or beside its own"
        raise RxError(RX_ERR_ACCESS_DENIED, f"a process may set {name} only on jobs below its own, and this is {where}")
    group = job.charge
    if property == RX_PROP_JOB_OVERCOMMIT:
        if value not in OVERCOMMIT_NAMES:
            raise invalid(f"{name} is one of {', '.join(f'{n} ({v})' for v, n in OVERCOMMIT_NAMES.items())}, not {value}")
        job.overcommit = value  # for VMOs created from now on; its children inherit it
    elif property == RX_PROP_JOB_KILL_ON_OOM:
        job.kill_on_oom = _flag(name, value)
    elif property == RX_PROP_JOB_OOM_GROUP:
        job.oom_group = _flag(name, value)
    elif property == RX_PROP_JOB_COMMIT_MAX:
        pages = _limit_pages(property, value)
        assert job.parent is not None  # a job below the caller's has a parent
        ceiling = job.parent.charge.effective_max_pages()
        if ceiling is not None and (pages is None or pages > ceiling):
            raise RxError(RX_ERR_OUT_OF_RANGE, f"{name} {value} would exceed the parent job's effective limit "
                          f"({ceiling * PAGE_SIZE} bytes): a child's limit never exceeds its parent's")
        group.max_pages = pages  # (children with a higher limit of their own are held to this one)
    else:
        assert property == RX_PROP_JOB_COMMIT_HIGH
        group.high_pages = _limit_pages(property, value)
    return ()


def _set_oom_score_adj(caller: Process, target: Process, value: int) -> None:
    """As Linux's oom_score_adj: -1000..1000 (the u64 on the wire carries it two's complement);
    a process may raise its own (be chosen sooner), and set any value on processes in jobs below
    its own."""
    adj = value - (1 << 64) if value >= 1 << 63 else value
    if not -1000 <= adj <= 1000:
        raise RxError(RX_ERR_OUT_OF_RANGE, f"RX_PROP_PROCESS_OOM_SCORE_ADJ is -1000..1000, not {adj}")
    if target is caller:
        if adj < target.oom_score_adj:
            raise RxError(RX_ERR_ACCESS_DENIED, "a process may only raise its own RX_PROP_PROCESS_OOM_SCORE_ADJ "
                          "(its job's parent may lower it)")
    elif not target.job.is_below(caller.job):
        raise RxError(RX_ERR_ACCESS_DENIED, "a process may set RX_PROP_PROCESS_OOM_SCORE_ADJ of processes in jobs below its own only")
    target.oom_score_adj = adj


@syscall
def rx_object_get_property(call: Call, handle: int, property: int) -> tuple[Any, ...]:
    h = call.process.handles.get(handle, None, RX_RIGHT_GET_PROPERTY)
    _property_name(h.obj, property)
    if isinstance(h.obj, Process):
        return (h.obj.oom_score_adj & ((1 << 64) - 1),)  # (two's complement in the u64)
    assert isinstance(h.obj, Job)
    job = h.obj
    if property == RX_PROP_JOB_OVERCOMMIT:
        return (job.effective_overcommit(),)  # (inherited, when it set none)
    if property == RX_PROP_JOB_KILL_ON_OOM:
        return (int(job.kill_on_oom),)
    if property == RX_PROP_JOB_OOM_GROUP:
        return (int(job.oom_group),)
    pages = job.charge.max_pages if property == RX_PROP_JOB_COMMIT_MAX else job.charge.high_pages
    assert property in (RX_PROP_JOB_COMMIT_MAX, RX_PROP_JOB_COMMIT_HIGH)
    return ((pages or 0) << PAGE_SHIFT,)
