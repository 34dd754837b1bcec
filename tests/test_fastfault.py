"""The fault fast path (ARCHITECTURE.md "The fault fast path"): rxd's C fault thread answers what
it can decide alone, exactly as the trio side would, and hands every other fault to trio.

- the same fault script, played by raw clients against an rxd on each path, gets the same replies
  byte for byte (the C decision is Python's decision);
- each slow case goes through the path that handles it (KMEM's slow_faults_* say which), and
  comes out right: a copy-on-write split, a shootdown, an exhausted budget, a locked tree, a
  fault racing an unmap, a frame the thread leaves to proto, processes killed mid-fault.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import msgpack
import pytest

from rxkernel.proto import (
    CHANNEL_CONTROL,
    CHANNEL_FAULT,
    RX_INFO_JOB,
    RX_PROP_JOB_COMMIT_HIGH,
    RX_PROP_JOB_COMMIT_MAX,
    RX_RIGHT_SAME_RIGHTS,
    RX_VMO_CHILD_SNAPSHOT,
    SYSCALL_NUMBERS,
)
from rxtest import RawClient, Rxd, running_rxd

RW, RO = 3, 1
BASE = 0x7E0000000000
RANDOM = 1 << 20  # RX_VM_MAP_RANDOM


class Acker:
    """A raw client's control channel that acks every request at once (it maps nothing: the
    test reads replies, not memory) and keeps count of what it was sent."""

    def __init__(self, c: RawClient) -> None:
        self.sock = c.side_channel(CHANNEL_CONTROL)
        self.sock.settimeout(None)
        self.ops: list[int] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        unpacker = msgpack.Unpacker()
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.sock, 1 << 16, 16)
            except OSError:
                return
            for fd in fds:
                os.close(fd)
            if not data:
                return
            unpacker.feed(data)
            for frame in unpacker:
                self.ops.append(frame[1])
                self.sock.sendall(msgpack.packb([frame[0], 0]))


def fault(chan: socket.socket, seq: int, addr: int, write: bool) -> list[int]:
    chan.sendall(msgpack.packb([seq, addr, int(write)]))
    unpacker = msgpack.Unpacker()
    while True:
        unpacker.feed(chan.recv(1 << 16))
        for frame in unpacker:
            return list(frame)


def script(rxd: Rxd, seed: int) -> tuple[list[Any], dict[str, Any]]:
    """Faults of every kind the fast path decides or defers, on one raw client: the replies."""
    rng = random.Random(seed)
    c = RawClient(rxd.socket)
    acker = Acker(c)
    chan = c.side_channel(CHANNEL_FAULT)
    pages = 256
    vmo = c.call("rx_vmo_create", pages * 4096, 0)
    c.call("rx_vmar_map", vmo, 0, pages * 4096, RW, 0, BASE)
    c.call("rx_vmar_map", vmo, 0, pages * 4096, RO, 0, BASE + (1 << 30))  # the same pages read-only
    c.call("rx_vmar_map", vmo, 0, pages * 4096, RW, RANDOM, BASE + (2 << 30))  # no fault-around
    for page in rng.sample(range(pages), 40):
        c.call("rx_vmo_write", vmo, page * 4096, b"x")
    bases = [BASE, BASE + (1 << 30), BASE + (2 << 30), BASE + (5 << 30)]
    solo = c.call("rx_vmo_create", pages * 4096, 0)  # mapped once: a write may replace its own zero pages
    c.call("rx_vmar_map", solo, 0, pages * 4096, RW, 0, BASE + (5 << 30))
    if seed % 2:  # a snapshot: both VMOs now read through a hidden parent (ancestors' pages)
        child = c.call("rx_vmo_create_child", vmo, RX_VMO_CHILD_SNAPSHOT, 0, pages * 4096)
        c.call("rx_vmar_map", child, 0, pages * 4096, RW, 0, BASE + (4 << 30))
        for page in rng.sample(range(pages), 20):
            c.call("rx_vmo_write", child, page * 4096, b"y")
        bases.append(BASE + (4 << 30))
    replies: list[Any] = []
    seq = 0
    for _ in range(300):
        seq += 1
        kind = rng.random()
        base = rng.choice(bases)
        if kind < 0.3:  # sequential reads: the window grows
            page = rng.randrange(pages - 8)
            for p in range(page, page + 4):
                replies.append(fault(chan, seq, base + p * 4096, False))
                seq += 1
            continue
        page = rng.randrange(pages)
        write = kind > 0.6 and base != BASE + (1 << 30)
        replies.append(fault(chan, seq, base + page * 4096 + rng.randrange(4096), write))
        if rng.random() < 0.05:  # a protect: every mapping of the range is taken away
            c.call("rx_vmar_protect", BASE, pages * 4096, RW)
    replies.append(fault(chan, seq + 1, BASE + (3 << 30), False))  # no mapping there
    stats = rxd.kmem()
    chan.close()
    c.close()
    acker.sock.close()
    return replies, stats


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_c_and_python_decide_every_fault_alike(seed: int) -> None:
    results = {}
    for path in ("fast", "trio"):
        with running_rxd(extra=["--fault-path", path]) as rxd:
            results[path] = script(rxd, seed)
    (fast, fast_stats), (trio, trio_stats) = results["fast"], results["trio"]
    assert fast == trio
    assert fast_stats["fast_faults"] > 50 and trio_stats["fast_faults"] == 0
    assert fast_stats["slow_faults_store"] > 0
    assert fast_stats["slow_faults_ancestor" if seed % 2 else "slow_faults_commit"] > 0
    for key in ("page_faults", "zero_page_faults", "committed_bytes", "shootdowns"):
        assert fast_stats[key] == trio_stats[key], key


SPLIT = """
import rxkernel.client as rx
v = rx.rx_vmo_create(1 << 20)
rx.rx_vmo_write(v, 0, b"parent" * 1000)
child = rx.rx_vmo_create_child(v, rx.RX_VMO_CHILD_SNAPSHOT, 0, 1 << 20)
m = rx.rx_view(rx.rx_vmar_map(child, 0, 1 << 20, rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE), 1 << 20)
assert bytes(m[:6]) == b"parent"
m[:5] = b"child"
assert bytes(m[:6]) == b"childt" and rx.rx_vmo_read(v, 0, 6) == b"parent"
"""


def test_a_copy_on_write_split_goes_to_trio(rxd: Rxd) -> None:
    """The read of the parent's page is the fault thread's (once the store fd is there); the
    write that splits it is trio's."""
    before = rxd.kmem()
    rxd.run(SPLIT)
    after = rxd.kmem()
    assert after["slow_faults_ancestor"] == before["slow_faults_ancestor"] + 1  # the write: a split
    assert after["cow_faults"] == before["cow_faults"] + 1
    rxd.wait_idle()


SHOOTDOWN = """
import sys, time
import rxkernel.client as rx
v = rx.rx_vmo_create(1 << 20)
a = rx.rx_vmar_map(v, 0, 1 << 20, rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE)
m = rx.rx_view(a, 1 << 20)
assert m[8192] == 0                     # a zero page, mapped by the fault thread
rx.rx_vmo_write(v, 8192, b"z")           # the write takes it away (a shootdown of our own mapping)
assert m[8192] == ord("z")
print("ok")
"""


def test_a_write_that_takes_zero_pages_away_goes_to_trio(rxd: Rxd) -> None:
    before = rxd.kmem()
    assert rxd.run(SHOOTDOWN).stdout.strip() == "ok"
    after = rxd.kmem()
    assert after["fast_faults"] >= before["fast_faults"] + 1
    assert after["shootdowns"] > before["shootdowns"]
    rxd.wait_idle()


READ_THEN_WRITE = """
import rxkernel.client as rx
v = rx.rx_vmo_create(1 << 20)
m = rx.rx_view(rx.rx_vmar_map(v, 0, 1 << 20, rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE), 1 << 20)
assert sum(m[o] for o in range(0, 1 << 20, 4096)) == 0  # zero pages, fault-around windows
for o in range(0, 1 << 20, 4096):
    m[o] = 7                                             # each replaces its own zero pages
assert all(m[o] == 7 for o in range(0, 1 << 20, 4096))
print(rx.rx_object_get_info(v, rx.RX_INFO_VMO)["committed_bytes"])
"""


def test_a_write_over_its_own_zero_pages_is_committed_in_c(rxd: Rxd) -> None:
    """The mapping is its VMO's only one, so nothing else shows those zero pages: no shootdown,
    and the fault thread commits them (Vmo.commit_locked's `exclude` case)."""
    before = rxd.kmem()
    assert rxd.run(READ_THEN_WRITE).stdout.strip() == str(1 << 20)
    after = rxd.kmem()
    assert after["slow_faults_commit"] == before["slow_faults_commit"]
    assert after["fast_faults"] - before["fast_faults"] >= 10 and after["shootdowns"] == before["shootdowns"]
    rxd.wait_idle()


OVER_BUDGET = """
import rxkernel.client as rx
from rxkernel.native import lib
for _ in range(2):  # each fits the budget, both do not
    v = rx.rx_vmo_create(12 << 20)
    a = rx.rx_vmar_map(v, 0, 12 << 20, rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE)
    lib.rx_touch(a, 12 << 20, 1)
print("not reached")
"""


def test_a_fault_past_the_budget_goes_to_trio_and_fails() -> None:
    with running_rxd(memory="16MiB", extra=["--oom", "fail"]) as rxd:
        result = rxd.run(OVER_BUDGET, check=False)
        assert result.returncode != 0 and "not reached" not in result.stdout
        assert "RX_ERR_NO_MEMORY" in result.stderr or "memory" in result.stderr, result.stderr
        k = rxd.kmem()
        assert k["slow_faults_commit"] > 0
        rxd.wait_idle()


# A raw client in a process of its own (rxd kills it): it maps a VMO, faults zero pages in, and
# then writes the VMO, whose shootdown of its own zero pages it never acks: the write holds the
# tree lock until the ack deadline.
STUCK = """
import sys, msgpack
sys.path.insert(0, sys.argv[2])
from rxtest import RawClient
from rxkernel.proto import CHANNEL_CONTROL, CHANNEL_FAULT, RX_RIGHT_SAME_RIGHTS, SYSCALL_NUMBERS
c = RawClient(sys.argv[1])
control, fault = c.side_channel(CHANNEL_CONTROL), c.side_channel(CHANNEL_FAULT)
vmo = c.call("rx_vmo_create", 1 << 20, 0)
print(c.call("rx_handle_export", vmo, RX_RIGHT_SAME_RIGHTS), flush=True)
c.call("rx_vmar_map", vmo, 0, 1 << 20, 3, 0, 0x7E0000000000)
fault.sendall(msgpack.packb([1, 0x7E0000000000, 0]))
assert msgpack.unpackb(fault.recv(1 << 16))[1] == 0
sys.stdin.readline()
c.send_raw(msgpack.packb([9, SYSCALL_NUMBERS["rx_vmo_write"], vmo, 0, b"w"]))
control.recv(1 << 16)  # the INVALIDATE, never acked
print("locked", flush=True)
sys.stdin.readline()
"""


def test_a_fault_on_a_locked_tree_waits_for_trio() -> None:
    """A write holds the tree's lock while a client that never acks is waited for; a read fault
    on that VMO meanwhile goes to trio (slow_faults_locked) and is answered once the lock goes."""
    with running_rxd(ack_deadline=1.0) as rxd:
        stuck = rxd.spawn(STUCK, rxd.socket, os.path.dirname(os.path.abspath(__file__)))
        assert stuck.stdout is not None and stuck.stdin is not None
        token = stuck.stdout.readline().strip()
        other = RawClient(rxd.socket)
        Acker(other)
        other_fault = other.side_channel(CHANNEL_FAULT)
        other.call("rx_vmar_map", other.call("rx_handle_import", token), 0, 1 << 20, RW, 0, BASE)
        before = rxd.kmem()["slow_faults_locked"]
        stuck.stdin.write("\n")
        stuck.stdin.flush()
        assert stuck.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        reply = fault(other_fault, 1, BASE + (128 << 12), False)  # the tree is locked: it waits
        assert reply[1] == 0
        assert time.monotonic() - t0 > 0.3, "the read did not wait for the tree lock"
        assert rxd.kmem()["slow_faults_locked"] == before + 1
        stuck.wait(10)
        assert rxd.kmem()["clients_killed"] == 1  # the one that never acked
        other.close()
        rxd.wait_idle(committed_bytes=0)


def test_a_fault_racing_an_unmap_is_answered_or_refused(rxd: Rxd) -> None:
    c = RawClient(rxd.socket)
    Acker(c)
    chan = c.side_channel(CHANNEL_FAULT)
    vmo = c.call("rx_vmo_create", 1 << 20, 0)
    outcomes = set()
    for i in range(200):
        c.call("rx_vmar_map", vmo, 0, 1 << 20, RW, 0, BASE)
        chan.sendall(msgpack.packb([i, BASE + (i % 256) * 4096, 0]))
        c.call("rx_vmar_unmap", BASE, 1 << 20)  # races the fault
        reply = msgpack.unpackb(chan.recv(1 << 16))
        assert reply[0] == i and reply[1] in (0, -25), reply  # RX_OK or RX_ERR_NOT_FOUND
        outcomes.add(reply[1])
    assert 0 in outcomes
    c.call("rx_handle_close", vmo)
    c.close()
    rxd.wait_idle()


def test_frames_the_fault_thread_does_not_decode_are_left_to_proto(rxd: Rxd) -> None:
    c = RawClient(rxd.socket)
    chan = c.side_channel(CHANNEL_FAULT)
    before = rxd.kmem()["slow_faults_frame"]
    chan.sendall(msgpack.packb([1, BASE, True]))  # a boolean where proto wants an integer
    assert chan.recv(100) == b""  # proto's verdict: a broken stream, the channel closed
    assert rxd.kmem()["slow_faults_frame"] == before + 1
    log = rxd.log_text()
    assert "broken stream" in log and "Traceback" not in log
    c.close()
    rxd.wait_idle()


TOUCHER = """
import random, sys
import rxkernel.client as rx
from rxkernel.native import lib
v = rx.rx_vmo_create(64 << 20)
a = rx.rx_vmar_map(v, 0, 64 << 20, rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE, rx.RX_VM_MAP_RANDOM)
print("ready", flush=True)
rng = random.Random()
while True:
    lib.rx_touch(a + rng.randrange(16384) * 4096, 4096, rng.random() < 0.3)
"""


def test_processes_killed_mid_fault_leave_exact_accounting(rxd: Rxd) -> None:
    rng = random.Random(7)
    for _ in range(3):
        procs = [rxd.spawn(TOUCHER) for _ in range(8)]
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        for p in procs:
            time.sleep(rng.random() * 0.05)
            p.send_signal(signal.SIGKILL)
        for p in procs:
            p.wait(10)
        rxd.wait_idle()  # every page they committed is free again, every process gone
    k = rxd.kmem()
    assert k["fast_faults"] > 100  # they were killed while the fault thread served (and committed)
    assert rxd.run(SHOOTDOWN).stdout.strip() == "ok"  # and rxd serves on


TOUCH_N = """
import sys
import rxkernel.client as rx
from rxkernel.native import lib
n = int(sys.argv[1])
v = rx.rx_vmo_create(n * 4096)
a = rx.rx_vmar_map(v, 0, n * 4096, rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE, rx.RX_VM_MAP_RANDOM)
for i in range(n):
    lib.rx_touch(a + i * 4096, 4096, 1)
print("done", flush=True)
sys.stdin.readline()
"""


def _job_info(rxd: Rxd, job: int) -> dict[str, Any]:
    got: dict[str, Any] = rxd.call("rx_object_get_info", job, RX_INFO_JOB)
    return got


def test_commits_in_c_keep_limits_high_marks_and_charges_exact() -> None:
    """Processes in a job with a commit limit race write faults the fault thread commits: the
    limit holds (the fault that would pass it goes to trio, which refuses it), and every charge
    is exact. Past a job's high mark, faults go to trio, which counts and throttles them."""
    with running_rxd(memory="256MiB", extra=["--oom", "fail"]) as rxd:
        default = rxd.call("rx_job_default")
        limited, high = rxd.call("rx_job_create", default, 0), rxd.call("rx_job_create", default, 0)
        rxd.call("rx_object_set_property", limited, RX_PROP_JOB_COMMIT_MAX, 300 * 4096)
        rxd.call("rx_object_set_property", high, RX_PROP_JOB_COMMIT_HIGH, 90 * 4096)
        before = rxd.kmem()

        def spawn(job: int, pages: int) -> subprocess.Popen[str]:
            env = {**rxd.env, "RX_JOB": rxd.call("rx_handle_export", job, RX_RIGHT_SAME_RIGHTS)}
            return subprocess.Popen([sys.executable, "-c", TOUCH_N, str(pages)], env=env, text=True,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        racers = [spawn(limited, 100) for _ in range(4)]
        throttled = spawn(high, 100)
        said = {}
        for p in [*racers, throttled]:
            assert p.stdout is not None
            said[p] = p.stdout.readline().strip()  # "done", or EOF from one that hit the limit
        died = [p for p in racers if said[p] != "done"]
        for p in died:
            p.wait(30)
        assert died and all(p.returncode == -signal.SIGBUS for p in died), [p.returncode for p in racers]
        k = rxd.kmem()
        got, got_high = _job_info(rxd, limited), _job_info(rxd, high)
        assert got["charged_bytes"] == (4 - len(died)) * 100 * 4096 <= 300 * 4096, (got, len(died))
        assert got["events_max"] >= len(died)
        assert got_high["charged_bytes"] == 100 * 4096 and got_high["events_high"] >= 1
        assert k["committed_bytes"] == _job_info(rxd, default)["charged_bytes"] == (got["charged_bytes"] + got_high["charged_bytes"])
        assert k["fast_faults"] - before["fast_faults"] > 200  # most commits were the fault thread's
        # The ten faults above the high mark were trio's (a refusal may be too, or may be the
        # first fault of a racer that started late: a STORE to send first).
        assert k["slow_faults_commit"] - before["slow_faults_commit"] >= 10
        for p in [*racers, throttled]:
            p.communicate("\n", timeout=30)
        rxd.wait_idle()
        assert _job_info(rxd, limited)["charged_bytes"] == _job_info(rxd, high)["charged_bytes"] == 0
