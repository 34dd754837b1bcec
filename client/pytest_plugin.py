"""A pytest plugin (entry point `rxkernel`, in `pytest11`): a private rxd for a test session.

    def test_shared(rx_client):                        # this process's stubs talk to a private rxd
        with rx.Vmo(1 << 20) as vmo, vmo.map() as m:   # so do child processes ($RX_SOCKET is set)
            m.view[:5] = b"hello"

Fixtures:
- `rx_server` (session): an rxd of its own, a real subprocess listening on a socket in a
  temporary directory, with `--memory` from `--rx-memory` (default 256MiB). Started the first
  time a test asks for it, stopped at the end of the session. An `RxServer`.
- `rx_client` (function): connects this process's stubs to that rxd, and sets $RX_SOCKET for the
  test so child processes reach it too; yields the `RxServer` it connected to.

Markers:
- `@pytest.mark.rx_memory("64MiB")`: this test gets an rxd of its own of that size, started
  before and stopped after it (the test needs `rx_client`).
- `@pytest.mark.rx_no_leaks`, or `--rx-check-leaks` for every test that uses `rx_client`: after
  the test and its fixtures' teardown, rxd's committed bytes must be back to where they were
  before; otherwise the test errors at teardown with the bytes it left.

The plugin does nothing (starts nothing, connects nothing) in a session that uses none of its
fixtures; disable it with `-p no:rxkernel`. A failing test that used rxd gets the tail of rxd's
log as a report section.
"""

from __future__ import annotations

import array
import gc
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from rxkernel.proto import (
    CHANNEL_MAIN,
    CLOSED,
    NEED_DATA,
    PAGE_SIZE,
    RX_INFO_KMEM_STATS,
    RX_INFO_SYSTEM_VMOS,
    SYSCALL_NUMBERS,
    Connection,
    Hello,
    HelloReply,
    Reply,
    Request,
    Role,
    RxError,
)

from ._process import PROCESS
from ._stubs import connect, disconnect

DEFAULT_MEMORY = "256MiB"
START_TIMEOUT = 30.0
LEAK_GRACE = 5.0  # seconds rxd may take to notice that processes the test started have exited
_LOG_TAIL = 4000
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MIB": 1 << 20, "G": 1 << 30, "GIB": 1 << 30,
          "T": 1 << 40, "TIB": 1 << 40}
_SERVER_KEY = pytest.StashKey["RxServer"]()


def parse_size(text: str | int) -> int:
    """'256MiB', '1G', '4096' (or an int) → bytes, as rxd's --memory reads them."""
    if isinstance(text, int) and not isinstance(text, bool) and text > 0:
        return text
    match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text) if isinstance(text, str) else None
    if not match or match.group(2).upper() not in _UNITS or int(match.group(1)) <= 0:
        raise ValueError(f"not a memory size: {text!r} (try 256MiB, 1GiB, 4096)")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


class _Inspector:
    """A plain socket that speaks proto/ for one syscall at a time: no native code, no trap, no
    connection of the stubs. It is a short-lived rx process of its own in rxd's counts."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
            self.conn = Connection(Role.CLIENT, kind=CHANNEL_MAIN)
            self.sock.sendall(self.conn.send(Hello(CHANNEL_MAIN)))
            hello = self._event()
            if not isinstance(hello, HelloReply) or hello.status != 0:
                raise ConnectionError(f"rxd at {path} refused the hello: {hello!r}")
        except BaseException:
            self.sock.close()
            raise
        self._ids = 0

    def _event(self) -> Any:
        while True:
            event = self.conn.next_event()
            if event is not NEED_DATA:
                return event
            data, ancdata, _, _ = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(16 * 4))
            for level, kind, payload in ancdata:  # the hello's vDSO fds: not ours to keep
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    for fd in array.array("i", payload[: len(payload) - len(payload) % 4]):
                        os.close(fd)
            if not data:
                raise ConnectionError("rxd closed the connection")
            self.conn.receive_data(data)

    def call(self, name: str, *args: Any) -> Any:
        self._ids += 1
        self.sock.sendall(self.conn.send(Request(self._ids, SYSCALL_NUMBERS[name], args)))
        reply = self._event()
        if reply is CLOSED or not isinstance(reply, Reply):
            raise ConnectionError(f"rxd answered {name} with {reply!r}")
        if reply.status:
            raise RxError(reply.status, reply.result[0] if reply.result else "")
        return reply.result[0] if reply.result else None

    def close(self) -> None:
        self.sock.close()


class RxServer:
    """A private rxd: a subprocess listening on `socket`, with a `memory` budget, logging to
    `log_path`. `kmem()` and `vmos()` ask it over a connection of their own (not the stubs')."""

    def __init__(self, memory: str | int = DEFAULT_MEMORY, ack_deadline: float = 5.0) -> None:
        self.memory_bytes = parse_size(memory)
        self.memory = str(memory)
        # Unix socket paths are limited to 108 bytes: a short directory, not pytest's tmp_path.
        base = tempfile.gettempdir()
        if len(base) > 60:
            base = "/tmp"
        self.directory = tempfile.mkdtemp(prefix="rxd-pytest-", dir=base)
        self.socket = os.path.join(self.directory, "rxd.sock")
        self.log_path = os.path.join(self.directory, "rxd.log")
        self._final_log: str | None = None
        self._inspector: _Inspector | None = None
        self._system = 0
        cmd = [sys.executable, "-c", "from rxkernel.server import main; main()", "--socket", self.socket,
               "--memory", str(self.memory_bytes), "--ack-deadline", str(ack_deadline)]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            self._wait_until_it_answers()
        except BaseException:
            self.stop()
            raise

    def _wait_until_it_answers(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                _Inspector(self.socket, timeout=2.0).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"rxd exited with {self.proc.returncode} before it answered:\n{self.log_text()}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"rxd did not answer on {self.socket} within {START_TIMEOUT:.0f} s:\n"
                                       f"{self.log_text()}") from None
                time.sleep(0.02)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def env(self) -> dict[str, str]:
        """os.environ with RX_SOCKET pointing here, for subprocess.run(..., env=...)."""
        return {**os.environ, "RX_SOCKET": self.socket}

    def log_text(self) -> str:
        if self._final_log is not None:
            return self._final_log
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _info(self, topic: int) -> Any:
        for attempt in (1, 2):
            if self._inspector is None:
                self._inspector = _Inspector(self.socket)
                self._system = self._inspector.call("rx_system_handle")
            try:
                return self._inspector.call("rx_object_get_info", self._system, topic)
            except OSError:  # rxd restarted under us, or the socket broke: once more, afresh
                self._inspector.close()
                self._inspector = None
                if attempt == 2 or not self.alive:
                    raise
        raise AssertionError("unreachable")

    def kmem(self) -> dict[str, Any]:
        """RX_INFO_KMEM_STATS (committed_bytes, total_bytes, num_processes, …). The connection
        that asks (opened on first use, kept) is an rx process too: num_processes counts it."""
        stats: dict[str, Any] = self._info(RX_INFO_KMEM_STATS)
        return stats

    def vmos(self) -> list[dict[str, Any]]:
        """RX_INFO_SYSTEM_VMOS: every live VMO (koid, size_bytes, committed_bytes, …)."""
        vmos: list[dict[str, Any]] = self._info(RX_INFO_SYSTEM_VMOS)
        return vmos

    def stop(self) -> None:
        """SIGTERM (rxd shuts down cleanly), SIGKILL after 10 s; the directory goes too."""
        if self._inspector is not None:
            self._inspector.close()
            self._inspector = None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._final_log is None:
            self._final_log = self.log_text()  # kept for a report made after the directory is gone
        shutil.rmtree(self.directory, ignore_errors=True)

    def __repr__(self) -> str:
        return f"<RxServer pid={self.proc.pid} socket={self.socket!r} memory={self.memory}>"


# -- hooks ------------------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rxkernel", "rxkernel: a private rxd for the tests (fixtures rx_server, rx_client)")
    group.addoption("--rx-memory", default=DEFAULT_MEMORY, metavar="SIZE",
                    help=f"--memory of the session's private rxd (default: {DEFAULT_MEMORY})")
    group.addoption("--rx-check-leaks", action="store_true", default=False,
                    help="fail every test using rx_client that leaves rxd's committed bytes above where they started")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "rx_memory(size): this test gets an rxd of its own with --memory SIZE "
                            "(e.g. '64MiB'); needs the rx_client fixture")
    config.addinivalue_line("markers", "rx_no_leaks: fail the test if rxd's committed bytes are higher after it "
                            "(and its fixtures' teardown) than before; needs the rx_client fixture")
    try:
        parse_size(config.getoption("--rx-memory"))
    except ValueError as e:
        raise pytest.UsageError(f"--rx-memory: {e}") from None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if "rx_client" in getattr(item, "fixturenames", ()):
        return
    for name in ("rx_memory", "rx_no_leaks"):
        if item.get_closest_marker(name) is not None:
            pytest.fail(f"@pytest.mark.{name} works through the rx_client fixture: {item.name} does not use it",
                        pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    server = item.stash.get(_SERVER_KEY, None)
    if server is not None and report.failed:
        tail = server.log_text()[-_LOG_TAIL:]
        state = "running" if server.alive else f"exited with {server.proc.returncode}"
        report.sections.append((f"rxd log ({server.log_path}, {state}; last {_LOG_TAIL} characters)", tail))


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rx_server(request: pytest.FixtureRequest) -> Iterator[RxServer]:
    """The session's private rxd (`--rx-memory`, default 256MiB), started on first use."""
    server = RxServer(request.config.getoption("--rx-memory"))
    try:
        yield server
    finally:
        _disconnect_from(server)
        server.stop()


@pytest.fixture
def rx_client(request: pytest.FixtureRequest) -> Iterator[RxServer]:
    """Connect this process's stubs (`import rxkernel.client as rx`) to a private rxd for the
    test, and point $RX_SOCKET at it so child processes reach the same rxd. The session's
    rxd, or with @pytest.mark.rx_memory(size) one of the test's own. Yields that RxServer."""
    marker = request.node.get_closest_marker("rx_memory")
    own: RxServer | None = None
    if marker is not None:
        if len(marker.args) != 1 or marker.kwargs:
            pytest.fail(f"@pytest.mark.rx_memory takes one size, like rx_memory('64MiB'), not {marker.args!r} "
                        f"{marker.kwargs!r}", pytrace=False)
        try:
            parse_size(marker.args[0])
        except ValueError as e:
            pytest.fail(f"@pytest.mark.rx_memory: {e}", pytrace=False)
        server = own = RxServer(marker.args[0])
    else:
        server = request.getfixturevalue("rx_server")
    request.node.stash[_SERVER_KEY] = server
    try:
        if not server.alive:
            pytest.fail(f"the private rxd exited with {server.proc.returncode} before {request.node.name}", pytrace=False)
        _connect_to(server)
        check = request.config.getoption("--rx-check-leaks") or request.node.get_closest_marker("rx_no_leaks") is not None
        baseline = server.kmem() if check else {}
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("RX_SOCKET", server.socket)
            yield server
        if check:
            leak = _leak_report(server, baseline)
            if leak:
                pytest.fail(leak, pytrace=False)
    finally:
        if own is not None:
            _disconnect_from(own)
            own.stop()


def _connect_to(server: RxServer) -> None:
    connection = PROCESS.connection
    if connection is not None and not connection.closed and connection.path != server.socket:
        disconnect()  # connected elsewhere (another test's own rxd): its mappings go with it
    connect(server.socket)


def _disconnect_from(server: RxServer) -> None:
    connection = PROCESS.connection
    if connection is not None and connection.path == server.socket:
        disconnect()


def _leak_report(server: RxServer, baseline: dict[str, Any]) -> str:
    """'' when rxd's committed bytes are back at the baseline's, else what is still committed.
    While rxd still counts more processes than at the baseline (a child the test started has
    exited, and rxd frees what it held once it notices), wait up to LEAK_GRACE seconds."""
    gc.collect()  # what only a reference cycle keeps is garbage, not a leak
    deadline = time.monotonic() + LEAK_GRACE
    while True:
        kmem = server.kmem()
        if kmem["committed_bytes"] <= baseline["committed_bytes"]:
            return ""
        if kmem["num_processes"] <= baseline["num_processes"] or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    before, after = baseline["committed_bytes"], kmem["committed_bytes"]
    grew = after - before
    holders = sorted((v for v in server.vmos() if v["committed_bytes"]), key=lambda v: -v["committed_bytes"])[:5]
    listed = ", ".join(f"koid {v['koid']}: {v['committed_bytes']} of {v['size_bytes']} bytes" for v in holders)
    return (f"rx leak check: rxd's committed bytes grew by {grew} bytes ({grew // PAGE_SIZE} pages) during the test: "
            f"{before} before, {after} after its teardown; VMOs committing memory: {listed or 'none'}")
