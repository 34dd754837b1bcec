"""`rxd`: the memory server daemon."""

from __future__ import annotations

import argparse
import os
import re
import resource
import signal
import sys

import structlog
import trio

from rxkernel.proto import PAGE_SIZE, default_socket_path, package_version

from ._logging import configure_logging
from .ipc import Server, prepare_socket_path
from .object import Kernel
from .vm import Thresholds

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MIB": 1 << 20, "G": 1 << 30, "GIB": 1 << 30, "T": 1 << 40, "TIB": 1 << 40}


def parse_size(text: str) -> int:
    """'2GiB', '512M', '4096' → bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 2GiB, 512MiB, 4096)")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def parse_pressure(text: str) -> dict[str, str]:
    """'warning=15%,critical=7%,oom=2%' (shares of the budget) or sizes ('oom=64MiB')."""
    out: dict[str, str] = {}
    for part in text.split(","):
        name, _, value = part.strip().partition("=")
        if name not in ("warning", "critical", "oom") or not value:
            raise argparse.ArgumentTypeError(f"not a pressure level: {part!r} (the levels are warning=, critical=, oom=)")
        if value.endswith("%"):
            try:
                float(value[:-1])
            except ValueError:
                raise argparse.ArgumentTypeError(f"not a share: {value!r} (try 15%)") from None
        else:
            parse_size(value)
        out[name] = value
    return out


def pressure_thresholds(levels: dict[str, str], memory_bytes: int) -> Thresholds:
    """The thresholds for a budget of `memory_bytes` (defaults for levels not given)."""
    shares = {"warning": 0.15, "critical": 0.075, "oom": 0.025}
    for name, value in levels.items():
        shares[name] = float(value[:-1]) / 100 if value.endswith("%") else parse_size(value) / memory_bytes
    try:
        return Thresholds.of_budget(memory_bytes // PAGE_SIZE, **shares)
    except ValueError as e:
        raise SystemExit(f"rxd: --pressure: {e}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rxd", description="rxkernel's memory server: owns every VMO, page and mapping, and "
                                "serves rx_* syscalls to client processes on a Unix socket.")
    p.add_argument("--version", action="version", version=f"rxd (rxkernel) {package_version()}")
    p.add_argument("--socket", default=None,
                   help="listening socket (default: $RX_SOCKET, else $XDG_RUNTIME_DIR/rxkernel/rxd.sock, else "
                   "/tmp/rxkernel-$UID/rxd.sock); rxd refuses to start where another rxd listens")
    p.add_argument("--memory", type=parse_size, default=parse_size("2GiB"), metavar="SIZE",
                   help="physical memory budget: committed pages never exceed it (default: 2GiB; 512MiB, 4096 … work too)")
    p.add_argument("--ack-deadline", type=float, default=5.0, metavar="SECONDS",
                   help="seconds a client has to ack a shootdown before it is killed (default: 5.0)")
    p.add_argument("--pressure", type=parse_pressure, default=parse_pressure("warning=15%,critical=7.5%,oom=2.5%"),
                   metavar="LEVELS",
                   help="free memory at which each pressure level begins, as a share of --memory or a size "
                   "(default: warning=15%%,critical=7.5%%,oom=2.5%%; imminent-oom is oom x 1.2)")
    p.add_argument("--pressure-hysteresis", type=float, default=10.0, metavar="SECONDS",
                   help="seconds a lower pressure level waits after the last change before it is in force; worse "
                   "levels apply at once (default: 10.0)")
    p.add_argument("--oom", default="kill", choices=["kill", "fail"],
                   help="when a fault cannot be given memory: kill the process that frees most (never one with "
                   "oom_score_adj -1000), or fail the fault (default: kill)")
    p.add_argument("--clock", default="auto", choices=["auto", "ticks", "syscall"],
                   help="the vDSO clock: CPU ticks, or a raw clock_gettime syscall (default: auto, ticks when they "
                   "are invariant)")
    p.add_argument("--fault-path", default=os.environ.get("RXD_FAULT_PATH", "fast"), choices=["fast", "trio"],
                   help="fast: a C thread answers the faults it can decide alone and hands the rest to trio; "
                   "trio: every fault is decided in Python (default: fast, or $RXD_FAULT_PATH)")
    p.add_argument("--call-path", default=os.environ.get("RXD_CALL_PATH", "front"), choices=["front", "trio"],
                   help="front: C receives and frames the call channels' requests, a batch at a time, and "
                   "requests that never wait are served in line; trio: a task per channel reads it "
                   "(default: front, or $RXD_CALL_PATH)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="least severe log events written to stderr (default: info)")
    p.add_argument("--log-format", default="console", choices=["console", "json"],
                   help="log lines for people, or one JSON object per line (default: console)")
    return p


async def run(args: argparse.Namespace) -> None:
    # Copy-on-write trees are walked recursively (a chain of children is as deep as the clones
    # made of clones); Python's default limit of 1000 would make a deep chain an internal error.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 100_000))
    # Every page store is a memfd: allow as many as the hard limit lets us.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    kernel = Kernel(args.memory, ack_deadline=args.ack_deadline, clock_mode=args.clock,
                    pressure=args.thresholds, pressure_hysteresis=args.pressure_hysteresis, oom_kill=args.oom == "kill")
    server = Server(kernel, args.socket or default_socket_path(), fast_faults=args.fault_path == "fast",
                    call_front=args.call_path == "front")
    log = structlog.get_logger("rxd")
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)

            async def on_signal() -> None:
                async for signum in signals:
                    log.info("shutting down", signal=signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(on_signal)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.socket = args.socket or default_socket_path()
    args.thresholds = pressure_thresholds(args.pressure, args.memory)  # a bad one: one line, exit 1
    configure_logging(args.log_level, args.log_format)
    prepare_socket_path(args.socket)  # before the event loop: a refusal is one line and exit 1
    try:
        trio.run(run, args)
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
