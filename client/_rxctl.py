"""`rxctl`: look at a running rxd. `rxctl stats | ps | vmos [--json]`."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Any

from rxkernel.proto import RX_INFO_KMEM_STATS, RX_INFO_SYSTEM_PROCESSES, RX_INFO_SYSTEM_VMOS, RxError, package_version

from . import _stubs


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str, bool]]) -> str:
    head = [title for _, title, _ in columns]
    body = [[_size(r[key]) if is_size else str(r[key]) for key, _, is_size in columns] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in body]
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
    sub.add_parser("vmos", parents=[common], help="every VMO: size, committed bytes, mappings, sharers")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _stubs.connect(args.socket)
        system = _stubs.rx_system_handle()
        topic = {"stats": RX_INFO_KMEM_STATS, "ps": RX_INFO_SYSTEM_PROCESSES, "vmos": RX_INFO_SYSTEM_VMOS}[args.command]
        info = _stubs.rx_object_get_info(system, topic)
        if args.command == "ps":  # rxctl's own connection is not what anyone asks about
            me = _stubs.connect().process_koid
            info = [row for row in info if row["koid"] != me]
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
    else:
        print(_table(info, [("koid", "KOID", False), ("size_bytes", "SIZE", True), ("committed_bytes", "COMMITTED", True),
                            ("num_mappings", "MAPS", False), ("share_count", "SHARERS", False)]))
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
