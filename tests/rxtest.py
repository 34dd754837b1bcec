"""Test harness: a real rxd in a subprocess, real client processes, and a raw protocol client.

The raw client speaks proto/ over a plain socket with no native code, so tests can inspect rxd and
send it malformed input without installing a fault trap in pytest's own process.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

from rxkernel.proto import (
    CHANNEL_MAIN,
    CLOSED,
    NEED_DATA,
    RX_INFO_KMEM_STATS,
    RX_INFO_SYSTEM_PROCESSES,
    SYSCALL_NUMBERS,
    Connection,
    Hello,
    HelloReply,
    Reply,
    Request,
    Role,
    RxError,
)

# Every wait on a child process has a deadline, so that a hang (a lost wake, a deadlock) fails its
# test within seconds and says what it was waiting for, instead of stalling the suite until
# pytest's faulthandler_timeout. CLIENT_TIMEOUT: a long client script (or a compile) run to the
# end. QUICK_TIMEOUT: a quick step, such as a child printing its next line or exiting once told to.
CLIENT_TIMEOUT = 120
QUICK_TIMEOUT = 30

# What read_line read past the line it returned, for the next read_line of that child.
_unread: weakref.WeakKeyDictionary[subprocess.Popen[str], bytes] = weakref.WeakKeyDictionary()


def read_line(proc: subprocess.Popen[str], expect: str | None = None, timeout: float = QUICK_TIMEOUT) -> str:
    """The next line the child `proc` prints on stdout, stripped; with `expect`, it must be that line.

    Waits at most `timeout` seconds. A child that stays silent, closes stdout first or prints
    another line is killed, and the test fails saying what it awaited and what the child printed
    on stderr. Reads the pipe's fd, not proc.stdout (whose readline() can block past any deadline
    on half a line); what arrives after the line is kept for the next read_line. Like readline()
    before it, it may take output a later proc.communicate() would want: our children print a
    line, then wait for their stdin or for the test."""
    assert proc.stdout is not None, "the child was started without stdout=subprocess.PIPE"
    fd = proc.stdout.fileno()
    awaited = "a line" if expect is None else f"the line {expect!r}"
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    data = bytearray(_unread.pop(proc, b""))
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            _fail_child(proc, f"did not print {awaited} within {timeout} s", data)
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            _fail_child(proc, f"closed its stdout before printing {awaited}", data)
        data += chunk
    raw, _, rest = data.partition(b"\n")
    if rest:
        _unread[proc] = bytes(rest)
    line = raw.decode(errors="replace").strip()
    if expect is not None and line != expect:
        _fail_child(proc, f"printed {line!r} where {awaited} was awaited", b"")
    return line


def _fail_child(proc: subprocess.Popen[str], what: str, partial: bytes | bytearray) -> NoReturn:
    """Kill `proc` (if still running) and fail the test with `what` and the child's stderr."""
    running = proc.poll() is None
    proc.kill()
    try:
        _, err = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:  # a grandchild holds the pipes open
        err = "(stderr still open after the kill)"
    if err is None:
        err = "(stderr not captured)"
    printed = f"; before that it printed {bytes(partial)!r}" if partial else ""
    status = "killed" if running else f"had exited ({proc.returncode})"
    raise AssertionError(f"child {proc.pid} {what}{printed}; {status}; its stderr:\n{err[-3000:]}")


class RawClient:
    def __init__(self, path: str, job: str | None = None) -> None:
        """A new rx process (born in the job the token `job` names, if any)."""
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(path)
        self.path = path  # (not getpeername(): that names where rxd bound, before its rename)
        self.conn = Connection(Role.CLIENT, kind=CHANNEL_MAIN)
        self.sock.sendall(self.conn.send(Hello(CHANNEL_MAIN, None, job)))
        hello = self._event()
        if isinstance(hello, HelloReply) and hello.status:
            self.sock.close()
            raise RxError(hello.status, (hello.info or {}).get("message", ""))
        assert isinstance(hello, HelloReply) and hello.status == 0, hello
        self.info = hello.info
        self._id = 0

    def _event(self) -> Any:
        while True:
            event = self.conn.next_event()
            if event is not NEED_DATA:
                return event
            self.conn.receive_data(self.sock.recv(1 << 20))

    def side_channel(self, kind: int) -> socket.socket:
        """A fault or control channel of this process, hello done: a test plays the client's C
        side itself (decides what to fault, and when or whether to ack)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(self.path)
        conn = Connection(Role.CLIENT, kind=kind)
        assert self.info is not None
        sock.sendall(conn.send(Hello(kind, self.info["session"])))
        while (hello := conn.next_event()) is NEED_DATA:
            conn.receive_data(sock.recv(1 << 16))
        assert isinstance(hello, HelloReply) and hello.status == 0, hello
        return sock

    def call(self, name: str, *args: Any) -> Any:
        """One syscall; returns the first result value (or None), raises RxError on failure."""
        self._id += 1
        self.sock.sendall(self.conn.send(Request(self._id, SYSCALL_NUMBERS[name], args)))
        reply = self._event()
        if reply is CLOSED:
            raise ConnectionError("rxd closed the connection")
        assert isinstance(reply, Reply) and reply.id == self._id, reply
        if reply.status:
            raise RxError(reply.status, reply.result[0] if reply.result else "")
        return reply.result[0] if reply.result else None

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_raw(self) -> bytes:
        return self.sock.recv(1 << 20)

    def close(self) -> None:
        self.sock.close()


class Rxd:
    def __init__(self, directory: str, memory: str, ack_deadline: float, extra: list[str]) -> None:
        self.directory = directory
        self.socket = os.path.join(directory, "run", "rxd.sock")
        self.log_path = os.path.join(directory, "rxd.log")
        self.log = open(self.log_path, "wb")
        cmd = [sys.executable, "-c", "from rxkernel.server import main; main()", "--socket", self.socket,
               "--memory", memory, "--ack-deadline", str(ack_deadline), "--log-level", "debug", *extra]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                self._admin = RawClient(self.socket)
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"rxd did not start:\n{self.log_text()}") from None
                time.sleep(0.02)
        self.system = self._admin.call("rx_system_handle")

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "RX_SOCKET": self.socket, "PYTHONFAULTHANDLER": "1"}

    def log_text(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def call(self, name: str, *args: Any) -> Any:
        return self._admin.call(name, *args)

    def kmem(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.call("rx_object_get_info", self.system, RX_INFO_KMEM_STATS)
        return stats

    def processes(self) -> list[dict[str, Any]]:
        procs: list[dict[str, Any]] = self.call("rx_object_get_info", self.system, RX_INFO_SYSTEM_PROCESSES)
        return procs

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = 20) -> None:
        """Poll rxd's state until `predicate` holds (client teardown is asynchronous), or fail."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for: {what}; kmem={self.kmem()}")
            time.sleep(0.02)

    def wait_idle(self, committed_bytes: int = 0, processes: int = 1) -> None:
        """Wait until only the admin connection (and `processes`-1 others) remain and committed
        bytes are back to `committed_bytes`."""
        self.wait_for(
            lambda: (k := self.kmem())["num_processes"] == processes and k["committed_bytes"] == committed_bytes,
            f"{processes} processes and {committed_bytes} committed bytes",
        )

    def run(self, code: str, *args: str, timeout: float = CLIENT_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a client program (Python source) to completion in its own process."""
        try:
            result = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], env=self.env,
                                    capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:  # run() has killed it; its output so far is bytes
            out, err = (b.decode(errors="replace") if isinstance(b, bytes) else b or "" for b in (e.stdout, e.stderr))
            raise AssertionError(f"client did not finish within {timeout} s (killed):\n{out}\n{err}\n"
                                 f"--- rxd log tail ---\n{self.log_text()[-3000:]}") from None
        if check and result.returncode != 0:
            raise AssertionError(f"client failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n--- rxd log tail ---\n{self.log_text()[-3000:]}")
        return result

    def spawn(self, code: str, *args: str, **kw: Any) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.PIPE, **kw)

    def stop(self) -> int:
        self._admin.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(QUICK_TIMEOUT)
        self.log.close()
        return self.proc.returncode


@contextlib.contextmanager
def running_rxd(
    memory: str = "1GiB", ack_deadline: float = 5.0, extra: list[str] | None = None, expect_alive: bool = True
) -> Iterator[Rxd]:
    # A short path of our own: Unix socket paths are limited to 108 bytes.
    directory = tempfile.mkdtemp(prefix="rxt-", dir="/tmp")
    rxd = Rxd(directory, memory, ack_deadline, extra or [])
    try:
        yield rxd
        assert not expect_alive or rxd.proc.poll() is None, f"rxd died during the test:\n{rxd.log_text()[-5000:]}"
        assert "Traceback" not in rxd.log_text(), f"rxd logged an exception:\n{rxd.log_text()[-5000:]}"
    finally:
        rxd.stop()
        shutil.rmtree(directory, ignore_errors=True)
