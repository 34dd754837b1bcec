"""`rxctl`: look at a running rxd. `rxctl stats | ps | vmos [--pid PID] | maps PID | jobs | pressure [--json]`."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Any

from rxkernel.proto import (
    PRESSURE_NAMES,
    RX_ERR_NOT_FOUND,
    RX_INFO_KMEM_STATS,
    RX_INFO_PROCESS_MAPS,
    RX_INFO_PROCESS_VMOS,
    RX_INFO_SYSTEM_JOBS,
    RX_INFO_SYSTEM_PROCESSES,
    RX_INFO_SYSTEM_VMOS,
    RX_VM_PERM_READ,
    RX_VM_PERM_WRITE,
    RxError,
    package_version,
)

from . import _stubs


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str, bool]], left: tuple[str, ...] = ()) -> str:
    """Columns (key, title, is a size) right-aligned, except those whose key is in `left`."""
    head = [title for _, title, _ in columns]
    body = [[_size(r[key]) if is_size else str(r[key]) for key, _, is_size in columns] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    align = [str.ljust if key in left else str.rjust for key, _, _ in columns]
    lines = ["  ".join(a(h, w) for h, w, a in zip(head, widths, align))]
    lines += ["  ".join(a(c, w) for c, w, a in zip(row, widths, align)) for row in body]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output (JSON) instead of a table")
    common.add_argument("--socket", default=None,
                        help="rxd's socket (default: $RX_SOCKET, $XDG_RUNTIME_DIR/rxkernel/rxd.sock or /tmp/rxkernel-$UID/rxd.sock)")
    p = argparse.ArgumentParser(prog="rxctl", description="Look at a running rxd: its memory, processes and VMOs.")
    p.add_argument("--version", action="version", version=f"rxctl (rxkernel) {package_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("stats", parents=[common], help="system memory statistics (RX_INFO_KMEM_STATS)")
    sub.add_parser("ps", parents=[common], help="every process: pid, mappings, mapped/private/shared bytes, faults")
    vmos = sub.add_parser("vmos", parents=[common],
                          help="every VMO (or one process's): size, committed bytes it reads (private, shared, scaled), mappings")
    vmos.add_argument("--pid", type=int, default=None, help="only the VMOs this process holds handles to or maps")
    sub.add_parser("jobs", parents=[common], help="the job tree: charges, commit limits, limit events, throttling")
    sub.add_parser("pressure", parents=[common], help="the memory pressure level, its thresholds, and stall times (PSI)")
    maps = sub.add_parser("maps", parents=[common], help="one process's mappings, as pmap shows them")
    maps.add_argument("pid", type=int, help="the process (its OS pid, as rxctl ps lists it)")
    return p


def _process_handle(system: int, pid: int) -> int:
    for row in _stubs.rx_object_get_info(system, RX_INFO_SYSTEM_PROCESSES):
        if row["pid"] == pid:
            return _stubs.rx_object_get_child(system, row["koid"])
    raise RxError(RX_ERR_NOT_FOUND, f"no rx process has pid {pid} (rxctl ps lists them)")


def _perms(bits: int) -> str:
    return ("r" if bits & RX_VM_PERM_READ else "-") + ("w" if bits & RX_VM_PERM_WRITE else "-")


def _query(args: argparse.Namespace) -> tuple[Any, int]:
    """What the command asks rxd for, and (for vmos) the system's committed bytes to add up to."""
    system = _stubs.rx_system_handle()
    pid: int | None = getattr(args, "pid", None)
    if pid is not None:  # maps PID, vmos --pid PID
        topic = RX_INFO_PROCESS_MAPS if args.command == "maps" else RX_INFO_PROCESS_VMOS
        return _stubs.rx_object_get_info(_process_handle(system, pid), topic), 0
    topic = {"stats": RX_INFO_KMEM_STATS, "ps": RX_INFO_SYSTEM_PROCESSES, "vmos": RX_INFO_SYSTEM_VMOS,
             "jobs": RX_INFO_SYSTEM_JOBS, "pressure": RX_INFO_KMEM_STATS}[args.command]
    info = _stubs.rx_object_get_info(system, topic)
    if args.command == "ps":  # rxctl's own connection is not what anyone asks about
        me = _stubs.connect().process_koid
        info = [row for row in info if row["koid"] != me]
    committed = _stubs.rx_object_get_info(system, RX_INFO_KMEM_STATS)["committed_bytes"] if args.command == "vmos" else 0
    return info, committed


def _print_vmos(info: list[dict[str, Any]], system_committed: int, whole_system: bool) -> None:
    columns = [("koid", "KOID", False), ("size_bytes", "SIZE", True), ("committed_private_bytes", "PRIVATE", True),
               ("committed_shared_bytes", "SHARED", True), ("committed_scaled_bytes", "SCALED", True),
               ("num_mappings", "MAPS", False), ("share_count", "SHARERS", False)]
    if not whole_system:
        columns += [("num_handles", "HANDLES", False), ("process_mappings", "HERE", False)]
    print(_table(info, columns))
    scaled = sum(r["committed_scaled_bytes"] for r in info) + sum(r["committed_fractional_scaled_bytes"] for r in info) // (1 << 63)
    line = f"{len(info)} VMOs, scaled total {_size(scaled)}"
    if whole_system:  # each committed page counts 1/n to each of the n VMOs reading it
        line += f"; rxd has {_size(system_committed)} committed"
    print(line)


def _print_jobs(info: list[dict[str, Any]]) -> None:
    def limit(value: int) -> str:
        return _size(value) if value else "-"

    depth: dict[int, int] = {}
    rows = []
    for job in info:  # parents come first
        depth[job["koid"]] = depth.get(job["parent_koid"], -1) + 1
        rows.append({**job, "job": "  " * depth[job["koid"]] + str(job["koid"]), "max": limit(job["commit_max_bytes"]),
                     "effective": limit(job["effective_commit_max_bytes"]), "high": limit(job["commit_high_bytes"]),
                     "throttled": f"{job['throttled_ns'] / 1e9:.2f} s"})
    print(_table(rows, [("job", "JOB", False), ("charged_bytes", "CHARGED", True), ("max", "MAX", False),
                        ("effective", "EFFECTIVE MAX", False), ("high", "HIGH", False), ("num_processes", "PROCS", False),
                        ("events_high", "HIGH EVENTS", False), ("events_max", "MAX EVENTS", False),
                        ("throttled", "THROTTLED", False)], left=("job",)))


def _print_pressure(kmem: dict[str, Any]) -> None:
    """As /proc/pressure/memory reads, after the level and what puts each one in force."""
    level = kmem["pressure_level"]
    print(f"level {PRESSURE_NAMES.get(level, level)} ({kmem['pressure_transitions']} changes so far)")
    print(f"free  {_size(kmem['free_bytes'])} of {_size(kmem['total_bytes'])} "
          f"({_size(kmem['committed_bytes'])} committed, {_size(kmem['reserved_bytes'])} more reserved)")
    names = (("warning", "WARNING"), ("critical", "CRITICAL"), ("imminent_oom", "IMMINENT_OOM"), ("oom", "OUT_OF_MEMORY"))
    print("begins at free <= " + ", ".join(f"{title} {_size(kmem[f'pressure_{key}_bytes'])}" for key, title in names)
          + f"; eases past the threshold + {_size(kmem['pressure_debounce_bytes'])}")
    for kind in ("some", "full"):
        print(f"{kind} avg10={kmem[f'stall_{kind}_avg10']:.2f} avg60={kmem[f'stall_{kind}_avg60']:.2f} "
              f"avg300={kmem[f'stall_{kind}_avg300']:.2f} total={kmem[f'stall_{kind}_total_us']}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _stubs.connect(args.socket)
        info, system_committed = _query(args)
    except RxError as e:
        print(f"rxctl: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
    elif args.command == "stats":
        width = max(map(len, info))
        for key, value in info.items():
            shown = _size(value) if key.endswith("_bytes") else str(value)
            print(f"{key.ljust(width)}  {shown}")
    elif args.command == "ps":
        print(_table(info, [("pid", "PID", False), ("koid", "KOID", False), ("num_mappings", "MAPS", False),
                            ("mem_mapped_bytes", "MAPPED", True), ("mem_private_bytes", "PRIVATE", True),
                            ("mem_shared_bytes", "SHARED", True), ("page_faults", "FAULTS", False)]))
    elif args.command == "maps":
        rows = [{**m, "address": f"{m['base']:#014x}", "mode": _perms(m["perms"]), "offset": f"{m['vmo_offset']:#x}"}
                for m in sorted(info, key=lambda m: m["base"])]
        print(_table(rows, [("address", "ADDRESS", False), ("size", "SIZE", True), ("mode", "MODE", False),
                            ("vmo_koid", "VMO", False), ("offset", "OFFSET", False), ("mem_private_bytes", "PRIVATE", True),
                            ("mem_shared_bytes", "SHARED", True), ("mem_scaled_shared_bytes", "SCALED SHARED", True)]))
        total = {key: _size(sum(m[key] for m in rows)) for key in ("size", "mem_private_bytes", "mem_shared_bytes")}
        print(f"{len(rows)} mappings, {total['size']} mapped, {total['mem_private_bytes']} private, {total['mem_shared_bytes']} shared")
    elif args.command == "jobs":
        _print_jobs(info)
    elif args.command == "pressure":
        _print_pressure(info)
    else:
        _print_vmos(info, system_committed, args.pid is None)
    return 0


def entry() -> None:
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`rxctl stats | head`): quiet, like any Unix tool. Point stdout
        # at /dev/null so the interpreter's own flush at exit does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 128 + signal.SIGPIPE
    sys.exit(code)
