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
    RX_PROP_JOB_OVERCOMMIT,
    RX_RIGHT_GET_PROPERTY,
    RX_RIGHT_SET_PROPERTY,
    RX_RIGHT_WRITE,
    RxError,
)

from ..object import Job
from ._table import Call, syscall
from ._validate import invalid


@syscall
async def rx_job_default(call: Call) -> tuple[Any, ...]:
    """The caller's own job (Zircon's zx_job_default)."""
    return (call.process.handles.add(call.process.job, RX_DEFAULT_JOB_RIGHTS),)


@syscall
async def rx_job_create(call: Call, parent: int, options: int) -> tuple[Any, ...]:
    """Zircon's zx_job_create: a child of `parent` (a job handle with WRITE); options must be 0."""
    h = call.process.handles.get(parent, Job, RX_RIGHT_WRITE)
    assert isinstance(h.obj, Job)
    if options:
        raise invalid(f"rx_job_create takes no options (got {options:#x})")
    if not h.obj.alive:
        raise RxError(RX_ERR_ACCESS_DENIED, "the parent job is gone")
    return (call.process.handles.add(call.kernel.new_job(h.obj), RX_DEFAULT_JOB_RIGHTS),)


def _limit_pages(prop: int, value: int) -> int | None:
    if value % PAGE_SIZE:
        raise invalid(f"{PROP_NAMES[prop]} must be a multiple of the page size ({PAGE_SIZE}), not {value}")
    return value >> PAGE_SHIFT or None


@syscall
async def rx_object_set_property(call: Call, handle: int, property: int, value: int) -> tuple[Any, ...]:
    h = call.process.handles.get(handle, None, RX_RIGHT_SET_PROPERTY)
    if property not in PROP_NAMES:
        raise RxError(RX_ERR_NOT_SUPPORTED, f"unknown property {property} (the properties are {', '.join(PROP_NAMES.values())})")
    name = PROP_NAMES[property]
    if not isinstance(h.obj, Job):
        raise RxError(RX_ERR_NOT_SUPPORTED, f"{name} is a job property, and the handle is a {h.obj.type_name}")
    job, own = h.obj, call.process.job
    if not job.is_below(own):
        where = "its own job" if job is own else "a job above or beside its own"
        raise RxError(RX_ERR_ACCESS_DENIED, f"a process may set {name} only on jobs below its own, and this is {where}")
    group = job.charge
    if property == RX_PROP_JOB_OVERCOMMIT:
        if value not in OVERCOMMIT_NAMES:
            raise invalid(f"{name} is one of {', '.join(f'{n} ({v})' for v, n in OVERCOMMIT_NAMES.items())}, not {value}")
        job.overcommit = value  # for VMOs created from now on; its children inherit it
        return ()
    pages = _limit_pages(property, value)
    if property == RX_PROP_JOB_COMMIT_MAX:
        assert job.parent is not None  # a job below the caller's has a parent
        ceiling = job.parent.charge.effective_max_pages()
        if ceiling is not None and (pages is None or pages > ceiling):
            raise RxError(RX_ERR_OUT_OF_RANGE, f"{name} {value} would exceed the parent job's effective limit "
                          f"({ceiling * PAGE_SIZE} bytes): a child's limit never exceeds its parent's")
        group.max_pages = pages  # (children with a higher limit of their own are held to this one)
    else:
        assert property == RX_PROP_JOB_COMMIT_HIGH
        group.high_pages = pages
    return ()


@syscall
async def rx_object_get_property(call: Call, handle: int, property: int) -> tuple[Any, ...]:
    h = call.process.handles.get(handle, None, RX_RIGHT_GET_PROPERTY)
    if property not in PROP_NAMES:
        raise RxError(RX_ERR_NOT_SUPPORTED, f"unknown property {property} (the properties are {', '.join(PROP_NAMES.values())})")
    if not isinstance(h.obj, Job):
        raise RxError(RX_ERR_NOT_SUPPORTED, f"{PROP_NAMES[property]} is a job property, and the handle is a {h.obj.type_name}")
    if property == RX_PROP_JOB_OVERCOMMIT:
        return (h.obj.effective_overcommit(),)  # (inherited, when it set none)
    group = h.obj.charge
    pages = group.max_pages if property == RX_PROP_JOB_COMMIT_MAX else group.high_pages
    assert property in (RX_PROP_JOB_COMMIT_MAX, RX_PROP_JOB_COMMIT_HIGH)
    return ((pages or 0) << PAGE_SHIFT,)
