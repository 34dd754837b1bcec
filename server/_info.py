"""rx_object_get_info topics: statistics counted from what rxd did (Zircon's object_get_info,
with the system counters of Mach's vm_statistics). Nothing here is estimated.

Definitions (documented in README too):
- committed: pages rxd counts against the budget for a store;
- active: committed pages inside at least one live mapping's range; inactive: the other committed
  pages (reachable only through handles);
- wired: memory rxd itself spends on page metadata (it cannot be paged or freed while the stores live);
- private/shared (TASK_STATS): committed pages in a mapping of a VMO that one process maps (private)
  or several map (shared, and scaled = shared / number of processes), as Zircon counts them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rxkernel.proto import (
    PAGE_SHIFT,
    RX_ERR_INVALID_ARGS,
    RX_ERR_WRONG_TYPE,
    RX_INFO_HANDLE_BASIC,
    RX_INFO_KMEM_STATS,
    RX_INFO_PROCESS_MAPS,
    RX_INFO_PROCESS_VMOS,
    RX_INFO_SYSTEM_PROCESSES,
    RX_INFO_SYSTEM_VMOS,
    RX_INFO_TASK_STATS,
    RX_INFO_VMO,
    RxError,
)

from ._handles import KernelObject
from ._process import Process
from ._vmo import Vmo

if TYPE_CHECKING:
    from ._kernel import Kernel
    from ._mapping import Mapping


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for s, e in sorted(ranges):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def _mapped_committed(m: Mapping) -> int:
    return m.vmo.store.committed.count(m.first_page, min(m.end_page, m.vmo.size_pages))


def vmo_info(vmo: Vmo, rights: int) -> dict[str, Any]:
    return {
        "koid": vmo.koid,
        "size_bytes": vmo.size,
        "committed_bytes": vmo.committed_bytes,
        "num_mappings": len(vmo.mappings),
        "share_count": vmo.share_count(),
        "flags": vmo.info_flags,
        "handle_rights": rights,
        "store_id": vmo.store.store_id,
    }


def task_stats(process: Process) -> dict[str, Any]:
    mapped = private = shared = scaled = 0
    for m in process.aspace:
        mapped += m.length
        committed = _mapped_committed(m) << PAGE_SHIFT
        sharers = m.vmo.share_count()
        if sharers <= 1:
            private += committed
        else:
            shared += committed
            scaled += committed // sharers
    return {
        "mem_mapped_bytes": mapped,
        "mem_private_bytes": private,
        "mem_shared_bytes": shared,
        "mem_scaled_shared_bytes": scaled,
        "page_faults": process.page_faults,
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
    return [
        {
            "base": m.base,
            "size": m.length,
            "perms": m.perms,
            "options": m.options,
            "vmo_koid": m.vmo.koid,
            "vmo_offset": m.vmo_offset,
            "committed_bytes": _mapped_committed(m) << PAGE_SHIFT,
        }
        for m in process.aspace
    ]


def kmem_stats(kernel: Kernel) -> dict[str, Any]:
    memory = kernel.memory
    active = 0
    wired = 0
    for vmo in kernel.vmos.values():
        wired += vmo.store.metadata_bytes
        limit = vmo.size_pages
        for s, e in _merged([(m.first_page, min(m.end_page, limit)) for m in vmo.mappings]):
            if s < e:
                active += vmo.store.committed.count(s, e)
    c = memory.counters
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
        "page_faults": c.page_faults,
        "zero_page_faults": c.zero_page_faults,
        "shootdowns": c.shootdowns,
        "clients_killed": c.clients_killed,
        "num_processes": len(kernel.processes),
        "num_vmos": len(kernel.vmos),
        "export_tokens": kernel.outstanding_tokens,  # exported, not yet claimed
    }


def system_processes(kernel: Kernel) -> list[dict[str, Any]]:
    return [
        {"koid": p.koid, "pid": p.pid, "num_handles": len(p.handles), "num_mappings": len(p.aspace), **task_stats(p)}
        for p in kernel.processes.values()
    ]


def system_vmos(kernel: Kernel) -> list[dict[str, Any]]:
    return [vmo_info(v, 0) for v in kernel.vmos.values()]


def get_info(kernel: Kernel, obj: KernelObject, rights: int, topic: int) -> Any:
    def need(cls: type[KernelObject]) -> None:
        if not isinstance(obj, cls):
            raise RxError(RX_ERR_WRONG_TYPE, f"topic {topic} needs a {cls.type_name} handle, not a {obj.type_name}")

    if topic == RX_INFO_HANDLE_BASIC:
        return {"koid": obj.koid, "type": obj.obj_type, "rights": rights}
    if topic == RX_INFO_VMO:
        need(Vmo)
        assert isinstance(obj, Vmo)
        return vmo_info(obj, rights)
    if topic in (RX_INFO_TASK_STATS, RX_INFO_PROCESS_VMOS, RX_INFO_PROCESS_MAPS):
        need(Process)
        assert isinstance(obj, Process)
        return {RX_INFO_TASK_STATS: task_stats, RX_INFO_PROCESS_VMOS: process_vmos, RX_INFO_PROCESS_MAPS: process_maps}[
            topic
        ](obj)
    if topic in (RX_INFO_KMEM_STATS, RX_INFO_SYSTEM_PROCESSES, RX_INFO_SYSTEM_VMOS):
        if obj is not kernel.system:
            raise RxError(RX_ERR_WRONG_TYPE, f"topic {topic} needs the system handle")
        return {RX_INFO_KMEM_STATS: kmem_stats, RX_INFO_SYSTEM_PROCESSES: system_processes, RX_INFO_SYSTEM_VMOS: system_vmos}[
            topic
        ](kernel)
    raise RxError(RX_ERR_INVALID_ARGS, f"unknown info topic {topic}")
