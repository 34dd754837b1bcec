"""Tests of the compiled C core (rxkernel.native) against a fake rxd, without the real one.

The fake rxd runs in a thread of the pytest process and speaks proto/WIRE.md over a Unix socket:
main channel (a test-only RPC, plus the store memfd passed with SCM_RIGHTS in the hello reply),
fault channels (answered from a real memfd) and the control channel (INVALIDATE/PROTECT/PING).
Client code runs in a subprocess so that a crash (which several tests provoke on purpose) cannot
take pytest down.
"""

from __future__ import annotations

import dataclasses
import errno
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

import rxkernel.native
from rxkernel.native import ffi, lib
from rxkernel.proto import (
    CHANNEL_CONTROL,
    CHANNEL_FAULT,
    CHANNEL_MAIN,
    CONTROL_FORGET,
    CONTROL_INVALIDATE,
    CONTROL_PING,
    CONTROL_PROTECT,
    CONTROL_RANGE_WIDTHS,
    CONTROL_STORE,
    FAULT_OP_STORE,
    FAULT_OP_ZERO,
    PAGE_SIZE,
    PROTOCOL_MAGIC,
    PROTOCOL_VERSION,
    RX_ERR_ACCESS_DENIED,
    RX_ERR_BAD_STATE,
    RX_ERR_INVALID_ARGS,
    RX_ERR_NO_MEMORY,
    RX_ERR_NOT_FOUND,
    RX_ERR_OUT_OF_RANGE,
    RX_ERR_UNAVAILABLE,
    RX_OK,
    RX_VM_PERM_READ,
    RX_VM_PERM_WRITE,
    STATUS_NAMES,
    FaultOp,
)
from rxtest import CLIENT_TIMEOUT, QUICK_TIMEOUT

PAGE = PAGE_SIZE
RW = RX_VM_PERM_READ | RX_VM_PERM_WRITE
UNKNOWN_STATUS = -99  # no proto status: the diagnostics spell it out
UNKNOWN_CONTROL_OP = 9  # no proto control op
TOKEN = bytes(range(16))
STORE_ID = 7
NPAGES = 16


def _recv_obj(sock: socket.socket, unpacker: msgpack.Unpacker) -> Any:
    while True:
        for obj in unpacker:
            return obj
        data = sock.recv(65536)
        if not data:
            raise EOFError
        unpacker.feed(data)


class FakeRxd:
    """Just enough rxd: one client process, one store (a memfd of NPAGES pages)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(16)
        self.memfd = os.memfd_create("fake-rxd-store")
        os.ftruncate(self.memfd, NPAGES * PAGE)
        self.committed: set[int] = set()  # page offsets written through a STORE mapping
        self.lock = threading.Lock()  # guards inval_seq and the control channel
        self.inval_seq = 0
        self.ctl: socket.socket | None = None
        self.ctl_unpacker = msgpack.Unpacker()
        self.base = 0
        self.length = 0
        # Behaviour knobs, set by the client through the main channel.
        self.refuse = 0  # a negative status: refuse every fault with it
        self.stale_next = False  # invalidate behind the next fault reply's back
        self.stale_names_unknown_store = False  # ... and have that reply name a store the client lacks
        self.delay = 0.0  # seconds to sit on each fault
        self.bad_op = False  # reply with an op outside the mapping
        self.faults: list[tuple[int, int]] = []
        self.active = 0
        self.max_active = 0
        self.conns: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.closed = True
        for s in [self.listener, *self.conns]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        os.close(self.memfd)

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        unpacker = msgpack.Unpacker()
        try:
            magic, version, kind, token = _recv_obj(conn, unpacker)
            assert (magic, version) == (PROTOCOL_MAGIC, PROTOCOL_VERSION)
            if kind == CHANNEL_MAIN:
                reply = msgpack.packb([PROTOCOL_MAGIC, PROTOCOL_VERSION, RX_OK, {"page_size": PAGE}])
                socket.send_fds(conn, [reply], [self.memfd])
                self._serve_main(conn, unpacker)
            elif token != TOKEN:
                conn.sendall(msgpack.packb([PROTOCOL_MAGIC, PROTOCOL_VERSION, RX_ERR_ACCESS_DENIED]))
            elif kind == CHANNEL_FAULT:
                conn.sendall(msgpack.packb([PROTOCOL_MAGIC, PROTOCOL_VERSION, RX_OK]))
                self._serve_faults(conn, unpacker)
            elif kind == CHANNEL_CONTROL:
                conn.sendall(msgpack.packb([PROTOCOL_MAGIC, PROTOCOL_VERSION, RX_OK]))
                self.ctl = conn
        except (EOFError, OSError):
            pass

    # -- control channel --

    def control(self, op: int, *args: int, inval_seq: int | None = None) -> int:
        """Send one control request, wait for its ack, return the ack's status."""
        with self.lock:
            self.inval_seq += 1
            seq = self.inval_seq
            assert self.ctl is not None
            self.ctl.sendall(msgpack.packb([seq, op, self.inval_seq if inval_seq is None else inval_seq, *args]))
            ack_seq, status = _recv_obj(self.ctl, self.ctl_unpacker)
            assert ack_seq == seq
            return int(status)

    # -- main channel: a test-only RPC --

    def _serve_main(self, conn: socket.socket, unpacker: msgpack.Unpacker) -> None:
        while True:
            cmd, *args = _recv_obj(conn, unpacker)
            if cmd == "map":
                self.base, self.length = args
                reply: Any = "ok"
            elif cmd == "set":
                setattr(self, args[0], args[1])
                reply = "ok"
            elif cmd == "invalidate":
                reply = self.control(CONTROL_INVALIDATE, *args)
            elif cmd == "protect":
                reply = self.control(CONTROL_PROTECT, *args)
            elif cmd == "control":
                reply = self.control(*args)
            else:
                reply = "?"
            conn.sendall(msgpack.packb(reply))

    # -- fault channel --

    def _serve_faults(self, conn: socket.socket, unpacker: msgpack.Unpacker) -> None:
        while True:
            seq, addr, flags = _recv_obj(conn, unpacker)
            with self.lock:
                self.active += 1
                self.max_active = max(self.max_active, self.active)
                self.faults.append((addr, flags))
                inval_seq = self.inval_seq  # the reply is computed "now"
            time.sleep(self.delay)
            status, ops = self._resolve(addr, flags & 1)
            if self.stale_next:
                # An invalidation overtakes the reply: the client must discard the reply.
                self.stale_next = False
                if self.stale_names_unknown_store and ops:
                    ops[0] = dataclasses.replace(ops[0], store_id=999)  # e.g. a store rxd FORGOT just now
                assert self.control(CONTROL_INVALIDATE, addr & ~(PAGE - 1), PAGE) == RX_OK
            with self.lock:
                self.active -= 1
            # [seq, status, inval_seq, op...], each op its fields in order (WIRE.md, proto's encoder).
            conn.sendall(msgpack.packb([seq, status, inval_seq, *(x for op in ops for x in dataclasses.astuple(op))]))

    def _resolve(self, addr: int, write: int) -> tuple[int, list[FaultOp]]:
        page = addr & ~(PAGE - 1)
        if self.refuse:
            return self.refuse, []
        if not self.base <= page < self.base + self.length:
            return RX_ERR_NOT_FOUND, []
        if self.bad_op:
            return RX_OK, [FaultOp(self.base + self.length, PAGE, FAULT_OP_ZERO, RX_VM_PERM_READ)]
        off = page - self.base
        if write:
            self.committed.add(off)
            return RX_OK, [FaultOp(page, PAGE, FAULT_OP_STORE, RW, STORE_ID, off)]
        if off in self.committed:
            return RX_OK, [FaultOp(page, PAGE, FAULT_OP_STORE, RX_VM_PERM_READ, STORE_ID, off)]
        return RX_OK, [FaultOp(page, PAGE, FAULT_OP_ZERO, RX_VM_PERM_READ)]


PREAMBLE = """
import os, socket, sys, threading, resource, faulthandler
import msgpack
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
from rxkernel.native import ffi, lib
import rxkernel.proto as p
PAGE, NPAGES, STORE_ID = p.PAGE_SIZE, {npages}, {store_id}
PATH, TOKEN = sys.argv[1], bytes.fromhex(sys.argv[2])

def recv(sock, unpacker):
    while True:
        for obj in unpacker:
            return obj
        unpacker.feed(sock.recv(65536))

main = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
main.connect(PATH)
main.sendall(msgpack.packb([p.PROTOCOL_MAGIC, p.PROTOCOL_VERSION, p.CHANNEL_MAIN, None]))
data, fds, _, _ = socket.recv_fds(main, 65536, 1)
mu = msgpack.Unpacker()
mu.feed(data)
assert recv(main, mu)[2] == p.RX_OK
STORE_FD = fds[0]

ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
ctl.connect(PATH)
ctl.sendall(msgpack.packb([p.PROTOCOL_MAGIC, p.PROTOCOL_VERSION, p.CHANNEL_CONTROL, TOKEN]))
assert msgpack.unpackb(ctl.recv(64)) == [p.PROTOCOL_MAGIC, p.PROTOCOL_VERSION, p.RX_OK]
assert lib.rx_control_start(ctl.detach()) == 0

{before}
assert lib.rx_trap_setup(PATH.encode(), TOKEN) == 0
assert lib.rx_store_register(STORE_ID, STORE_FD) == 0
BASE = lib.rx_reserve(NPAGES * PAGE)
assert BASE > 0
assert lib.rx_map_register(BASE, NPAGES * PAGE) == 0

def rpc(*args):
    main.sendall(msgpack.packb(list(args)))
    return recv(main, mu)

assert rpc("map", BASE, NPAGES * PAGE) == "ok"

def counters():
    c = ffi.new("uint64_t[8]")
    lib.rx_trap_counters(c)
    return list(c)

mem = ffi.buffer(ffi.cast("char *", BASE), NPAGES * PAGE)
print("BASE", BASE, flush=True)
"""


@pytest.fixture
def rxd() -> Iterator[FakeRxd]:
    d = tempfile.mkdtemp(prefix="rxn")  # short: sun_path holds 108 bytes
    server = FakeRxd(os.path.join(d, "rxd.sock"))
    try:
        yield server
    finally:
        server.close()
        shutil.rmtree(d, ignore_errors=True)


def run_client(rxd: FakeRxd, body: str, before: str = "") -> tuple[subprocess.CompletedProcess[str], int]:
    code = PREAMBLE.format(npages=NPAGES, store_id=STORE_ID, before=before) + textwrap.dedent(body)
    proc = subprocess.run(
        [sys.executable, "-c", code, rxd.path, TOKEN.hex()], capture_output=True, text=True, timeout=30
    )
    base = 0
    for line in proc.stdout.splitlines():
        if line.startswith("BASE "):
            base = int(line.split()[1])
    return proc, base


def ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- the trap ------------------------------------------------------------------------------------


def test_read_fault_maps_the_zero_page(rxd: FakeRxd) -> None:
    proc, base = run_client(
        rxd,
        """
        assert mem[0:PAGE] == bytes(PAGE)
        assert mem[PAGE - 1] == b"\\0"
        c = counters()
        assert c[0] == 1 and c[1] == 1 and c[4] == 1, c
        """,
    )
    ok(proc)
    assert rxd.faults == [(base, 0)]
    assert os.fstat(rxd.memfd).st_blocks == 0  # the read committed nothing


def test_write_fault_maps_the_store(rxd: FakeRxd) -> None:
    proc, base = run_client(
        rxd,
        """
        mem[5:10] = b"hello"                    # write fault: STORE rw
        assert mem[2 * PAGE] == b"\\0"          # read fault: zero page
        mem[2 * PAGE + 1] = b"w"                # write to the zero page: faults again, as a write
        assert mem[5:10] == b"hello" and mem[2 * PAGE + 1] == b"w"
        c = counters()
        assert c[0] == 3 and c[1] == 3, c
        """,
    )
    ok(proc)
    assert rxd.faults == [(base + 5, 1), (base + 2 * PAGE, 0), (base + 2 * PAGE + 1, 1)]
    assert os.pread(rxd.memfd, 5, 5) == b"hello"
    assert os.pread(rxd.memfd, 1, 2 * PAGE + 1) == b"w"


@pytest.mark.parametrize(
    ("status", "write", "line", "sig"),
    [
        (RX_ERR_ACCESS_DENIED, 1, "rx: write fault at {:#x} in read-only mapping", signal.SIGSEGV),
        (RX_ERR_ACCESS_DENIED, 0, "rx: read fault at {:#x} in a mapping without read permission", signal.SIGSEGV),
        (RX_ERR_OUT_OF_RANGE, 0, "rx: fault at {:#x} beyond the end of the VMO", signal.SIGBUS),
        (RX_ERR_NO_MEMORY, 1, "rx: out of memory at {:#x} (rxd's memory budget, or the commit limit of this process's job, is reached)", signal.SIGBUS),
        (RX_ERR_NOT_FOUND, 0, "rx: fault at {:#x} in no rx mapping", signal.SIGSEGV),
        (RX_ERR_BAD_STATE, 1, "rx: write fault at {:#x} in an uncommitted page of an RX_VMO_COMMIT_EXPLICIT VMO (commit it first)",
         signal.SIGBUS),
        (RX_ERR_UNAVAILABLE, 0, "rx: fault at {:#x} refused by rxd (RX_ERR_UNAVAILABLE)", signal.SIGSEGV),
        (UNKNOWN_STATUS, 0, "rx: fault at {:#x} refused by rxd (RX_ERR_UNKNOWN(-99))", signal.SIGSEGV),
    ],
)
def test_refused_fault_dies_with_the_diagnostic(rxd: FakeRxd, status: int, write: int, line: str, sig: int) -> None:
    assert (status in STATUS_NAMES) == (status != UNKNOWN_STATUS)
    proc, base = run_client(
        rxd,
        f"""
        rpc("set", "refuse", {status})
        lib.rx_touch(BASE + 0x123, 1, {write})
        print("survived")
        """,
    )
    assert proc.returncode == -sig, proc.stderr
    assert proc.stderr.splitlines() == [line.format(base + 0x123)]
    assert "survived" not in proc.stdout


def test_bad_op_is_refused_as_internal(rxd: FakeRxd) -> None:
    proc, base = run_client(rxd, 'rpc("set", "bad_op", True)\nlib.rx_touch(BASE, 1, 0)\n')
    assert proc.returncode == -signal.SIGSEGV
    assert proc.stderr.splitlines() == [f"rx: fault at {base:#x} refused by rxd (RX_ERR_INTERNAL)"]


def test_unreachable_rxd(rxd: FakeRxd) -> None:
    proc, base = run_client(
        rxd,
        """
        assert lib.rx_trap_setup(b"/nonexistent/rxd.sock", TOKEN) == 0
        lib.rx_touch(BASE + PAGE, 1, 1)
        """,
    )
    assert proc.returncode == -signal.SIGSEGV
    assert proc.stderr.splitlines() == [f"rx: fault at {base + PAGE:#x}: cannot reach rxd"]


def test_stale_reply_is_discarded_and_refaults(rxd: FakeRxd) -> None:
    proc, base = run_client(
        rxd,
        """
        rpc("set", "stale_next", True)
        mem[0:4] = b"abcd"
        c = counters()
        assert c[2] == 1, c        # one reply discarded
        assert c[0] == 2, c        # ... and the re-fault resolved it
        assert c[3] == 1, c        # the INVALIDATE that overtook it
        assert mem[0:4] == b"abcd"
        """,
    )
    ok(proc)
    assert rxd.faults == [(base, 1), (base, 1)]
    assert os.pread(rxd.memfd, 4, 0) == b"abcd"


def test_stale_reply_naming_a_forgotten_store_is_discarded_too(rxd: FakeRxd) -> None:
    proc, base = run_client(
        rxd,
        """
        rpc("set", "stale_names_unknown_store", True)
        rpc("set", "stale_next", True)
        mem[0:4] = b"abcd"          # not refused: a stale reply is dropped before any lookup
        c = counters()
        assert c[2] == 1 and c[0] == 2, c
        """,
    )
    ok(proc)


def test_control_invalidate_and_protect(rxd: FakeRxd) -> None:
    assert UNKNOWN_CONTROL_OP not in CONTROL_RANGE_WIDTHS
    proc, _ = run_client(
        rxd,
        f"""
        mem[0:4] = b"abcd"
        assert counters()[0] == 1
        assert rpc("invalidate", BASE, PAGE) == p.RX_OK
        assert mem[0:4] == b"abcd"                  # faults again, gets the store page back
        assert counters()[0] == 2
        mem[PAGE] = b"z"                            # fault 3: rw
        assert rpc("protect", BASE + PAGE, PAGE, p.RX_VM_PERM_READ) == p.RX_OK
        assert mem[PAGE] == b"z"                    # read-only still reads: no fault
        assert counters()[0] == 3
        mem[PAGE] = b"y"                            # the write faults (4)
        assert counters()[0] == 4
        assert rpc("protect", BASE, 2 * PAGE, 0) == p.RX_OK
        assert mem[0] == b"a"                       # PROT_NONE: faults (5)
        assert counters()[0] == 5
        # Ranges no longer (or never) in the mapping table are skipped, not refused: the client
        # may have unmapped them while the request was in flight. Nothing unaligned, no unknown op.
        assert rpc("invalidate", BASE + NPAGES * PAGE, PAGE) == p.RX_OK
        assert rpc("invalidate", BASE - PAGE, 2 * PAGE) == p.RX_OK     # clipped to BASE's page
        assert rpc("invalidate", BASE + 1, PAGE) == p.RX_ERR_INVALID_ARGS
        assert rpc("protect", BASE, PAGE, 8) == p.RX_ERR_INVALID_ARGS   # no such permission
        assert rpc("control", {UNKNOWN_CONTROL_OP}) == p.RX_ERR_INVALID_ARGS
        assert rpc("control", p.CONTROL_INVALIDATE, BASE) == p.RX_ERR_INVALID_ARGS   # half a range
        assert rpc("control", p.CONTROL_PING) == p.RX_OK
        c = counters()
        assert c[3] == 6, c
        # Several ranges in one INVALIDATE.
        assert rpc("invalidate", BASE, PAGE, BASE + PAGE, PAGE) == p.RX_OK
        assert mem[PAGE] == b"y"
        assert counters()[0] == 6
        """,
    )
    ok(proc)


def test_two_threads_fault_at_once(rxd: FakeRxd) -> None:
    proc, base = run_client(
        rxd,
        """
        rpc("set", "delay", 0.3)
        barrier = threading.Barrier(2)
        def touch(i):
            barrier.wait()
            lib.rx_touch(BASE + i * PAGE, PAGE, 1)   # releases the GIL while it faults
        threads = [threading.Thread(target=touch, args=(i,)) for i in (3, 4)]
        for t in threads: t.start()
        for t in threads: t.join()
        c = counters()
        assert c[0] == 2 and c[4] == 2, c            # two faults, two fault channels
        """,
    )
    ok(proc)
    assert rxd.max_active == 2
    assert sorted(rxd.faults) == [(base + 3 * PAGE, 1), (base + 4 * PAGE, 1)]


def test_fork_child_touching_an_inherited_mapping(rxd: FakeRxd) -> None:
    proc, base = run_client(
        rxd,
        """
        mem[0:1] = b"x"
        pid = os.fork()
        if pid == 0:
            assert lib.rx_map_lookup(BASE) == 2
            c = counters()
            lib.rx_touch(BASE, 1, 0)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print("child", os.WTERMSIG(status) if os.WIFSIGNALED(status) else -1, flush=True)
        assert mem[0:1] == b"x"          # the parent's mapping is untouched
        mem[PAGE:PAGE + 1] = b"y"        # and its fault channel still works
        assert counters()[0] == 2
        """,
    )
    ok(proc)
    assert f"child {int(signal.SIGSEGV)}" in proc.stdout
    assert proc.stderr.splitlines() == [f"rx: access at {base:#x} to an rx mapping not inherited across fork()"]


# -- chaining to the previous handler ---------------------------------------------------------------

UNKNOWN_TOUCH = """
assert mem[0:4] == bytes(4)          # our faults still work
print("rx ok", flush=True)
other = lib.rx_reserve(PAGE)         # not an rx mapping
lib.rx_touch(other, 1, 0)
print("survived", flush=True)
"""


def test_unknown_address_without_faulthandler_crashes(rxd: FakeRxd) -> None:
    proc, _ = run_client(rxd, UNKNOWN_TOUCH)
    assert proc.returncode == -signal.SIGSEGV
    assert "rx ok" in proc.stdout and "survived" not in proc.stdout
    assert "rx:" not in proc.stderr and "Fatal Python error" not in proc.stderr


def test_faulthandler_enabled_before_setup_gets_the_crash(rxd: FakeRxd) -> None:
    proc, _ = run_client(rxd, UNKNOWN_TOUCH, before="faulthandler.enable()")
    assert proc.returncode == -signal.SIGSEGV
    assert "rx ok" in proc.stdout and "survived" not in proc.stdout
    assert proc.stderr.count("Fatal Python error: Segmentation fault") == 1, proc.stderr


def test_faulthandler_enabled_after_setup_then_reinstall(rxd: FakeRxd) -> None:
    body = "faulthandler.enable()\nassert lib.rx_trap_install() == 0\nassert lib.rx_trap_install() == 0\n"
    proc, _ = run_client(rxd, body + UNKNOWN_TOUCH)
    assert proc.returncode == -signal.SIGSEGV
    assert "rx ok" in proc.stdout and "survived" not in proc.stdout
    assert proc.stderr.count("Fatal Python error: Segmentation fault") == 1, proc.stderr


# -- in-process pieces that never fault --------------------------------------------------------------

FAR = 1 << 45  # address space nobody uses here: the table does not care whether it is mapped


def test_mapping_table_register_unregister_split() -> None:
    a = FAR
    assert lib.rx_map_register(a, 10 * PAGE) == 0
    assert lib.rx_map_lookup(a) == 1 and lib.rx_map_lookup(a + 10 * PAGE - 1) == 1
    assert lib.rx_map_lookup(a + 10 * PAGE) == 0 and lib.rx_map_lookup(a - 1) == 0
    # 4: no rx mapping any more, but recently unmapped (a touch gets a diagnostic, not a bare SIGSEGV)
    assert lib.rx_map_unregister(a + 3 * PAGE, 2 * PAGE) == 0  # split
    assert [lib.rx_map_lookup(a + i * PAGE) for i in range(10)] == [1, 1, 1, 4, 4, 1, 1, 1, 1, 1]
    assert lib.rx_map_unregister(a + 8 * PAGE, 4 * PAGE) == 0  # trim the right end
    assert lib.rx_map_unregister(a - PAGE, 2 * PAGE) == 0  # trim the left end
    assert [lib.rx_map_lookup(a + i * PAGE) for i in range(10)] == [4, 1, 1, 4, 4, 1, 1, 1, 4, 4]
    assert lib.rx_map_lookup(a - PAGE) == 0 and lib.rx_map_lookup(a + 10 * PAGE) == 0  # never mapped
    assert lib.rx_map_register(a + 2 * PAGE, 4 * PAGE) == 0  # overlapping: replaces
    assert [lib.rx_map_lookup(a + i * PAGE) for i in range(10)] == [4, 1, 1, 1, 1, 1, 1, 1, 4, 4]
    assert lib.rx_map_register(a + 1, PAGE) == -errno.EINVAL  # unaligned
    assert lib.rx_map_register(a, 0) == -errno.EINVAL
    assert lib.rx_map_register(2**64 - PAGE, 2 * PAGE) == -errno.EINVAL  # wraps
    assert lib.rx_map_unregister(a - PAGE, 20 * PAGE) == 0
    assert all(lib.rx_map_lookup(a + i * PAGE) == 4 for i in range(10))
    assert lib.rx_map_register(a, 10 * PAGE) == 0 and lib.rx_map_unregister(a, 10 * PAGE) == 0


def test_mapping_table_full() -> None:
    n = 0
    while True:
        rc = lib.rx_map_register(FAR + n * 2 * PAGE, PAGE)
        if rc:
            break
        n += 1
    assert rc == -errno.ENOMEM and n == 8192
    assert lib.rx_map_unregister(FAR, n * 2 * PAGE) == 0
    assert lib.rx_map_lookup(FAR + 2 * PAGE) != 1
    assert lib.rx_map_register(FAR, 2 * PAGE) == 0
    assert lib.rx_map_unregister(FAR, 2 * PAGE) == 0


def test_store_table() -> None:
    assert lib.rx_store_register(1, -1) == -errno.EBADF
    assert lib.rx_store_register(1, 0) == 0
    assert lib.rx_store_register(1, 1) == 0  # replaces
    assert lib.rx_store_unregister(1) == 0
    assert lib.rx_store_unregister(1) == -errno.ENOENT


def test_reserve_and_unreserve() -> None:
    addr = lib.rx_reserve(4 * PAGE)
    assert addr > 0 and addr % PAGE == 0
    assert lib.rx_unreserve(addr, 4 * PAGE) == 0
    assert lib.rx_reserve(0) == -errno.EINVAL
    assert lib.rx_reserve(PAGE + 1) == -errno.EINVAL


def test_control_thread_lifecycle() -> None:
    assert lib.rx_map_lookup(FAR + PAGE) != 1  # no live rx mapping: the INVALIDATE below has nothing to do
    ping = (msgpack.packb([1, CONTROL_PING, 0]) + msgpack.packb([2, CONTROL_PING, 0])
            + msgpack.packb([3, CONTROL_INVALIDATE, 0, FAR + PAGE, PAGE]))
    for _ in range(2):  # start again after stop: a new connection
        ours, theirs = socket.socketpair()
        ours.settimeout(QUICK_TIMEOUT)  # the control thread's replies
        assert lib.rx_control_start(theirs.fileno()) == 0
        assert lib.rx_control_start(theirs.fileno()) == 0  # idempotent
        theirs.detach()
        ours.sendall(ping)  # several requests in one read
        u = msgpack.Unpacker()
        assert [_recv_obj(ours, u) for _ in range(3)] == [[1, RX_OK], [2, RX_OK], [3, RX_OK]]
        lib.rx_control_stop()
        lib.rx_control_stop()
        ours.settimeout(5)
        assert ours.recv(16) == b""  # the thread shut the channel down
        ours.close()
    # Garbage in the stream ends the channel.
    ours, theirs = socket.socketpair()
    assert lib.rx_control_start(theirs.detach()) == 0
    ours.sendall(b"\xc1\xc1")
    ours.settimeout(5)
    assert ours.recv(16) == b""
    lib.rx_control_stop()


def test_control_store_and_forget() -> None:
    """rxd hands store fds to the control thread (STORE, fd by SCM_RIGHTS); it owns them."""
    ours, theirs = socket.socketpair()
    ours.settimeout(QUICK_TIMEOUT)  # the control thread's acks
    assert lib.rx_control_start(theirs.detach()) == 0
    u = msgpack.Unpacker()
    a, b = os.memfd_create("store-a"), os.memfd_create("store-b")
    try:
        def store(seq: int, store_id: int, fd: int | None) -> int:
            data = msgpack.packb([seq, CONTROL_STORE, 0, store_id, 1])  # (store_id, writable)
            socket.send_fds(ours, [data], [fd]) if fd is not None else ours.sendall(data)
            ack_seq, status = _recv_obj(ours, u)
            assert ack_seq == seq
            return int(status)

        def ino(fd: int) -> int:
            return os.fstat(fd).st_ino

        assert store(1, 77, a) == RX_OK
        held = lib.rx_store_fd(77)
        assert held >= 0 and held != a and ino(held) == ino(a)  # its own copy of the fd
        assert store(2, 77, b) == RX_OK  # replaced (read-only → writable): the old copy is closed
        assert ino(lib.rx_store_fd(77)) == ino(b)
        assert not os.path.exists(f"/proc/self/fd/{held}") or os.readlink(f"/proc/self/fd/{held}").find("store-a") < 0
        assert store(3, 78, None) == RX_ERR_INVALID_ARGS  # a STORE must carry its fd
        assert store(4, 78, a) == RX_OK
        ours.sendall(msgpack.packb([5, CONTROL_FORGET, 0, 77, 78]))  # FORGET both
        assert _recv_obj(ours, u) == [5, RX_OK]
        assert lib.rx_store_fd(77) < 0 and lib.rx_store_fd(78) < 0
        assert store(6, 79, a) == RX_OK
        lib.rx_control_stop()  # the channel ends: its stores' fds go with it
        ours.settimeout(5)
        assert ours.recv(16) == b""
        deadline = time.monotonic() + 5
        while lib.rx_store_fd(79) >= 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert lib.rx_store_fd(79) < 0
    finally:
        ours.close()
        os.close(a)
        os.close(b)


# -- server helpers and benchmarks --------------------------------------------------------------------


def test_server_helpers_on_memfds() -> None:
    a = os.memfd_create("a")
    b = os.memfd_create("b")
    try:
        os.ftruncate(a, 16 * PAGE)
        os.ftruncate(b, 16 * PAGE)
        assert os.fstat(a).st_blocks == 0
        assert lib.rx_allocate(a, 0, 4 * PAGE) == 0
        assert os.fstat(a).st_blocks * 512 >= 4 * PAGE
        os.pwrite(a, b"x" * (3 * PAGE), 0)
        assert lib.rx_punch_hole(a, PAGE, PAGE) == 0
        assert os.pread(a, PAGE, PAGE) == bytes(PAGE)
        assert os.pread(a, 1, 0) == b"x" and os.pread(a, 1, 2 * PAGE) == b"x"
        assert lib.rx_zero_range(a, 10, 100) == 0
        assert os.pread(a, 120, 0) == b"x" * 10 + bytes(100) + b"x" * 10
        payload = os.urandom(200_000)  # several 64 KiB chunks, not page aligned
        os.pwrite(a, payload, 7)
        assert lib.rx_copy_range(b, 3, a, 7, len(payload)) == 0
        assert os.pread(b, len(payload), 3) == payload
        assert lib.rx_copy_range(b, 0, a, os.fstat(a).st_size - 10, 20) == -errno.EIO  # source ends early
        assert lib.rx_zero_range(b, 0, 16 * PAGE) == 0
        assert os.pread(b, 16 * PAGE, 0) == bytes(16 * PAGE)
        assert lib.rx_punch_hole(-1, 0, PAGE) == -errno.EBADF
        assert lib.rx_allocate(a, 2**63, PAGE) == -errno.EINVAL
    finally:
        os.close(a)
        os.close(b)


def test_bench_helpers() -> None:
    """scripts/bench.py's C baselines: built on demand, outside the library."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
    try:
        import _bench_native
    finally:
        del sys.path[0]
    bench = _bench_native.load()
    for name in ("rx_bench_anon_first_touch", "rx_bench_socket_roundtrip", "rx_mutex_bench_c"):
        assert not hasattr(lib, name), f"{name} is benchmark code: it must not ship in the library"
    assert bench.lib.rx_bench_anon_first_touch(64 * PAGE) > 0
    assert bench.lib.rx_bench_socket_roundtrip(50, 0, bench.ffi.NULL) > 0
    out = bench.ffi.new("int64_t[]", 50)
    total = bench.lib.rx_bench_socket_roundtrip(50, 1, out)
    assert total > 0 and all(x > 0 for x in out) and sum(out) <= total
    assert bench.lib.rx_bench_socket_roundtrip(0, 0, bench.ffi.NULL) == -errno.EINVAL
    word = bench.ffi.new("uint32_t *")
    assert bench.lib.rx_mutex_bench_c(int(bench.ffi.cast("uintptr_t", word)), 1, 1000) > 0
    assert word[0] == 0  # every pair released what it took
    addr = lib.rx_reserve(4 * PAGE)
    assert lib.rx_unreserve(addr, 4 * PAGE) == 0


# -- the sources ---------------------------------------------------------------------------------------


def _compile_every_unit(cc: str) -> None:
    """Each .c of the extension, with the build's flags (native/_build.py) and -Werror."""
    native = os.path.dirname(os.path.abspath(rxkernel.native.__file__))
    units = sorted(glob.glob(os.path.join(native, "client", "*.c")) + glob.glob(os.path.join(native, "server", "*.c")))
    assert units
    for unit in units:
        result = subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11", "-fPIC", f"-I{native}/include",
                                 f"-I{native}", "-c", "-o", os.devnull, unit], capture_output=True, text=True,
                                timeout=CLIENT_TIMEOUT)
        assert result.returncode == 0, f"{unit}:\n{result.stderr}"


def test_the_c_core_compiles_without_warnings() -> None:
    _compile_every_unit("gcc")


def test_the_aarch64_branches_compile_too() -> None:
    cc = shutil.which("aarch64-linux-gnu-gcc")
    if cc is None:
        pytest.skip("no aarch64 cross compiler")
    _compile_every_unit(cc)
