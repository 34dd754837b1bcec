"""rx_object_get_info topics: statistics counted from what rxd did (Zircon's object_get_info,
with the system counters of Mach's vm_statistics). Nothing here is estimated.

Definitions (documented in README too):
- committed: pages rxd counts against the budget for a store;
- active: committed pages inside at least one live mapping's range; inactive: the other committed
  pages (reachable only through handles);
- wired: memory rxd itself spends on page metadata (it cannot be paged or freed while the stores live);
- committed_bytes (VMO): pages the VMO's own store holds (a slice's are its parent's; a clone's
  shared pages are its hidden parent's). committed_private/shared/scaled_bytes (VMO, Zircon's
  names): every committed page the VMO can read, wherever it lives, private when it is the only
  VMO reading it, else shared; scaled gives each of the n readers 1/n of it, so scaled summed over
  all VMOs is exactly KMEM's committed_bytes (the fraction of a byte is in
  committed_fractional_scaled_bytes, in units of 2^-63 bytes, as Zircon reports it).
- private/shared (TASK_STATS): committed pages a process's mappings show. A page is private when
  only one VMO can read it and only this process maps that VMO; otherwise it is shared, and
  scaled_shared gives each sharer 1/n of it (n = VMOs that read it × processes mapping the VMO).
  Pages a copy-on-write clone still shares with its parent count as shared, not as the clone's.
- charged (JOB): committed pages charged to the job and its subtree: each page is charged to the
  job of the process whose fault or syscall committed it (a copy-on-write copy to the writer's
  job), until it is freed; the root job's charge is KMEM's committed_bytes. events_high counts
  commits that left it above commit_high, events_max commits refused at its commit_max;
  throttled_ns the time its processes' commits waited above a commit_high (memory.high's
  penalty: the overage ratio squared times the pages committed, up to 2 s each).
- cow_faults: write faults that split a shared page; cow_pages_copied: pages those copied.
- syscalls (TASK_STATS): requests the process sent on its call channels (this one included); what
  the vDSO and the sync objects' fast paths do without asking rxd does not count.
- cache_op_pages: pages rx_vmo_op_range CACHE_* ops walked line by line: committed pages the host
  holds (resident); ops with no per-line work on this CPU (x86 SYNC and INVALIDATE) add nothing.
"""

from __future__ import annotations

from typing import Any

from rxkernel.proto import (
    PAGE_SHIFT,
    PAGE_SIZE,
    RX_ERR_INVALID_ARGS,
    RX_ERR_WRONG_TYPE,
    RX_INFO_HANDLE_BASIC,
    RX_INFO_JOB,
    RX_INFO_KMEM_STATS,
    RX_INFO_PROCESS_MAPS,
    RX_INFO_PROCESS_VMOS,
    RX_INFO_SYSTEM_JOBS,
    RX_INFO_SYSTEM_PROCESSES,
    RX_INFO_SYSTEM_VMOS,
    RX_INFO_TASK_STATS,
    RX_INFO_VMO,
    INFO_TOPIC_NAMES,
    RX_RIGHT_INSPECT,
    RxError,
)

from ..base import KernelObject
from ..object import Job, Kernel, Process
from ..vm import (
    SLOW_FAULT_REASONS,
    Stalls,
    Vmo,
    active_pages,
    live_nodes,
    mapped_committed_pages,
    mapped_pages,
    vmo_pages,
    wired_bytes,
)
from ._table import Call, syscall


@syscall
def rx_object_get_info(call: Call, handle: int, topic: int) -> tuple[Any, ...]:
    """Zircon's zx_object_get_info: the handle needs INSPECT; each topic names the object kind it
    needs (get_info)."""
    h = call.process.handles.get(handle, None, RX_RIGHT_INSPECT)
    return (get_info(call.kernel, h.obj, h.rights, topic),)


def vmo_info(vmo: Vmo, rights: int) -> dict[str, Any]:
    private, shared, scaled = vmo_pages(vmo)
    scaled_bytes = scaled * PAGE_SIZE
    whole = int(scaled_bytes)
    return {
        "koid": vmo.koid,
        "size_bytes": vmo.size,
        "committed_bytes": vmo.committed_bytes,
        "committed_private_bytes": private << PAGE_SHIFT,
        "committed_shared_bytes": shared << PAGE_SHIFT,
        "committed_scaled_bytes": whole,
        "committed_fractional_scaled_bytes": int((scaled_bytes - whole) * (1 << 63)),
        # RX_OVERCOMMIT_NEVER: its size promised at creation, minus what it holds already
        "reserved_bytes": (vmo.reservation.outstanding << PAGE_SHIFT) if vmo.reservation is not None else 0,
        "num_mappings": len(vmo.mappings),
        "share_count": vmo.share_count(),
        "flags": vmo.info_flags,
        "handle_rights": rights,
        "store_id": vmo.store.store_id,
        "parent_koid": vmo.parent_koid,
        "num_children": vmo.num_children,
    }


def task_stats(process: Process) -> dict[str, Any]:
    mapped = private = shared = 0
    scaled = 0.0
    for m in process.aspace:
        mapped += m.length
        p, s, sc = mapped_pages(m)
        private, shared, scaled = private + p, shared + s, scaled + sc
    return {
        "mem_mapped_bytes": mapped,
        "mem_private_bytes": private << PAGE_SHIFT,
        "mem_shared_bytes": shared << PAGE_SHIFT,
        "mem_scaled_shared_bytes": int(scaled * PAGE_SIZE),
        "page_faults": process.page_faults,
        "cow_faults": process.cow_faults,
        "syscalls": process.syscalls,
    }


def process_vmos(process: Process) -> list[dict[str, Any]]:
    seen: dict[int, dict[str, Any]] = {}
    for h in process.handles.values():
        if isinstance(h.obj, Vmo):
            entry = seen.setdefault(h.obj.koid, {**vmo_info(h.obj, h.rights), "num_handles": 0, "process_mappings": 0})
            entry["num_handles"] += 1
    for m in process.aspace:
        entry = seen.setdefault(m.vmo.koid, {**vmo_info(m.vmo, 0), "num_handles": 0, "process_mappings": 0})
        entry["process_mappings"] += 1
    return list(seen.values())


def process_maps(process: Process) -> list[dict[str, Any]]:
    out = []
    for m in process.aspace:
        private, shared, scaled = mapped_pages(m)
        out.append({
            "base": m.base,
            "size": m.length,
            "perms": m.perms,
            "options": m.options,
            "vmo_koid": m.vmo.koid,
            "vmo_offset": m.vmo_offset,
            "committed_bytes": mapped_committed_pages(m) << PAGE_SHIFT,
            # what TASK_STATS sums: pages m shows, wherever they live (pmap's Rss and Pss)
            "mem_private_bytes": private << PAGE_SHIFT,
            "mem_shared_bytes": shared << PAGE_SHIFT,
            "mem_scaled_shared_bytes": int(scaled * PAGE_SIZE),
        })
    return out


def job_info(job: Job, stalls: Stalls) -> dict[str, Any]:
    group = job.charge
    effective = group.effective_max_pages()
    return {
        "koid": job.koid,
        "parent_koid": job.parent.koid if job.parent is not None else 0,
        "charged_bytes": group.charged_pages << PAGE_SHIFT,  # its own pages and its subtree's
        "commit_max_bytes": (group.max_pages or 0) << PAGE_SHIFT,  # its own limit (0: none)
        "effective_commit_max_bytes": (effective or 0) << PAGE_SHIFT,  # the tightest on its path (0: none)
        "commit_high_bytes": (group.high_pages or 0) << PAGE_SHIFT,
        "reserved_bytes": group.reserved_pages << PAGE_SHIFT,  # promised to NEVER VMOs, not committed yet
        "overcommit": job.effective_overcommit(),
        "num_processes": job.num_processes,
        "num_children": len(job.children),
        # memory.events
        "events_high": group.events.high,
        "events_max": group.events.max,
        "events_oom": group.events.oom,  # faults that went to OOM handling at its limit
        "events_oom_kill": group.events.oom_kill,  # processes killed for it
        "events_total": group.events.total,  # what rx_job_wait_events waits to change
        "kill_on_oom": int(job.kill_on_oom),
        "oom_group": int(job.oom_group),
        "throttled_ns": group.throttled_ns,  # its processes' commits delayed above a commit_high
        **stalls.report(group),  # PSI's some/full: avg10, avg60, avg300 (%), total (µs)
    }


def kmem_stats(kernel: Kernel) -> dict[str, Any]:
    memory = kernel.memory
    nodes = live_nodes(kernel.vmos.values())
    wired = wired_bytes(nodes)
    active = active_pages(kernel.vmos.values())
    c = memory.counters
    fast = kernel.vm.fast_counters
    committed = memory.committed_pages
    return {
        "total_bytes": memory.total_pages << PAGE_SHIFT,
        "free_bytes": memory.free_pages << PAGE_SHIFT,
        "wired_bytes": wired,
        "active_bytes": active << PAGE_SHIFT,
        "inactive_bytes": (committed - active) << PAGE_SHIFT,
        "compressed_bytes": 0,  # rxd has no compressed store: nothing is ever compressed
        "page_ins": c.page_ins,
        "page_outs": c.page_outs,
        "committed_bytes": committed << PAGE_SHIFT,
        "reserved_bytes": memory.reserved_pages << PAGE_SHIFT,  # promised to RX_OVERCOMMIT_NEVER VMOs, not committed yet
        "page_faults": c.page_faults + fast.page_faults,
        "zero_page_faults": c.zero_page_faults + fast.zero_page_faults,
        # The fault fast path (rxd's C fault thread): faults it served, and those it handed to
        # the trio side, by why (ARCHITECTURE.md "The fault fast path").
        "fast_faults": fast.page_faults,
        **{f"slow_faults_{why}": fast.deferred[n] for n, why in enumerate(SLOW_FAULT_REASONS) if n},
        # How often, and how long, the fault thread waited for the trio thread to let it in.
        "fast_lock_waits": fast.lock_waits,
        "fast_lock_wait_ns": fast.lock_wait_ns,
        "fast_lock_wait_max_ns": fast.lock_wait_max_ns,
        # The call front end (C framing, a batch of requests per wake-up): polls that found
        # work, requests they handed out (so requests / polls is the mean batch), the largest
        # batch, and replies the socket did not take at once.
        "call_batches": kernel.call_counters.polls,
        "call_requests": kernel.call_counters.requests,
        "call_max_batch": kernel.call_counters.max_batch,
        "call_deferred_sends": kernel.call_counters.deferred_sends,
        "cow_faults": c.cow_faults,
        "cow_pages_copied": c.cow_pages_copied,
        "cache_op_pages": c.cache_op_pages,
        "shootdowns": c.shootdowns,
        "clients_killed": c.clients_killed,
        "oom_kills": c.oom_kills,
        "pressure_level": kernel.vm.pressure.level,  # RX_PRESSURE_*, as the vvar has it
        "pressure_transitions": kernel.vm.pressure.levels.transitions,
        **{f"pressure_{name}_bytes": getattr(kernel.vm.pressure.levels.thresholds, name) << PAGE_SHIFT
           for name in ("warning", "critical", "imminent_oom", "oom", "debounce")},
        "num_processes": len(kernel.processes),
        "num_vmos": len(kernel.vmos),
        "num_hidden_nodes": sum(1 for n in nodes if n.hidden),
        "export_tokens": len(kernel.tokens),  # exported, not yet claimed
        "futex_waiters": kernel.futexes.waiting,  # threads blocked in rx_futex_wait now
        "futex_owner_died": kernel.futexes.owner_died,  # robust words taken from dead owners
        **kernel.vm.stalls.report(memory.root),  # PSI's some/full for the whole system
    }


def system_processes(kernel: Kernel) -> list[dict[str, Any]]:
    return [
        {"koid": p.koid, "pid": p.pid, "job_koid": p.job.koid, "num_handles": len(p.handles), "num_mappings": len(p.aspace),
         **task_stats(p)}
        for p in kernel.processes.values()
    ]


def system_jobs(kernel: Kernel) -> list[dict[str, Any]]:
    return [job_info(j, kernel.vm.stalls) for j in kernel.root_job.subtree()]


def system_vmos(kernel: Kernel) -> list[dict[str, Any]]:
    return [vmo_info(v, 0) for v in kernel.vmos.values()]


def get_info(kernel: Kernel, obj: KernelObject, rights: int, topic: int) -> Any:
    def need(cls: type[KernelObject]) -> None:
        if not isinstance(obj, cls):
            raise RxError(RX_ERR_WRONG_TYPE, f"{INFO_TOPIC_NAMES[topic]} needs a {cls.type_name} handle, not a {obj.type_name}")

    if topic == RX_INFO_HANDLE_BASIC:
        return {"koid": obj.koid, "type": obj.obj_type, "rights": rights}
    if topic == RX_INFO_VMO:
        need(Vmo)
        assert isinstance(obj, Vmo)
        return vmo_info(obj, rights)
    if topic == RX_INFO_JOB:
        need(Job)
        assert isinstance(obj, Job)
        return job_info(obj, kernel.vm.stalls)
    if topic in (RX_INFO_TASK_STATS, RX_INFO_PROCESS_VMOS, RX_INFO_PROCESS_MAPS):
        need(Process)
        assert isinstance(obj, Process)
        return {RX_INFO_TASK_STATS: task_stats, RX_INFO_PROCESS_VMOS: process_vmos, RX_INFO_PROCESS_MAPS: process_maps}[
            topic
        ](obj)
    if topic in (RX_INFO_KMEM_STATS, RX_INFO_SYSTEM_PROCESSES, RX_INFO_SYSTEM_VMOS, RX_INFO_SYSTEM_JOBS):
        if obj is not kernel.system:
            raise RxError(RX_ERR_WRONG_TYPE, f"{INFO_TOPIC_NAMES[topic]} needs the system handle, not a {obj.type_name}")
        return {RX_INFO_KMEM_STATS: kmem_stats, RX_INFO_SYSTEM_PROCESSES: system_processes, RX_INFO_SYSTEM_VMOS: system_vmos,
                RX_INFO_SYSTEM_JOBS: system_jobs}[topic](kernel)
    raise RxError(RX_ERR_INVALID_ARGS, f"unknown info topic {topic} (the topics are {', '.join(INFO_TOPIC_NAMES.values())})")
