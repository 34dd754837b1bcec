"""Regressions from reviewing copy-on-write: each test failed before its fix."""

from __future__ import annotations

import os
import signal
import time

import pytest

from rxkernel.proto import (
    RX_ERR_NOT_SUPPORTED,
    RX_RIGHT_DUPLICATE,
    RX_RIGHT_MAP,
    RX_RIGHT_SAME_RIGHTS,
    RX_RIGHT_TRANSFER,
    RX_VMO_CHILD_SNAPSHOT,
    RX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE,
    RxError,
)
from rxtest import Rxd, read_line, running_rxd

P = 4096
HEADER = "import rxkernel.client as rx, os, sys, time, threading\nRW = rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE\n"


def test_other_threads_never_read_zeros_while_a_page_splits(rxd: Rxd) -> None:
    # The last reader's split frees the shared original; the faulting mapping still showed it
    # until its reply arrived, so another thread could read a punched (zero) page.
    n = 1024
    v = rxd.call("rx_vmo_create", n * P, 0)
    rxd.call("rx_vmo_write", v, 0, b"\x07" * (n * P))
    c = rxd.call("rx_vmo_create_child", v, RX_VMO_CHILD_SNAPSHOT, 0, n * P)
    rxd.call("rx_vmo_write", v, 0, b"\x09" * (n * P))  # v owns every page: c is the last reader
    out = rxd.run(HEADER + """
from rxkernel.native import lib
n = int(sys.argv[2])
c = rx.rx_handle_import(sys.argv[1])
a = rx.rx_vmar_map(c, 0, n * 4096, RW, rx.RX_VM_MAP_RANDOM)
view = rx.rx_view(a, n * 4096)
lib.rx_touch(a, n * 4096, 0)                       # every page mapped read-only from the original
cur, done, bad = [0], [False], set()
def reader():
    while not done[0]:
        i = cur[0]
        if view[i * 4096] != 7:
            bad.add(i)
t = threading.Thread(target=reader); t.start()
for i in range(n):
    cur[0] = i
    lib.rx_touch(a + i * 4096, 1, 1)               # split page i (releases the GIL)
done[0] = True; t.join()
print(len(bad))
""", rxd.call("rx_handle_export", c, RX_RIGHT_SAME_RIGHTS), str(n))
    assert out.stdout.strip() == "0"


def test_closing_a_vmo_frees_what_only_it_read_in_its_ancestors(rxd: Rxd) -> None:
    w = rxd.call("rx_vmo_create", 2 * P, 0)
    rxd.call("rx_vmo_write", w, 0, b"a" * P + b"b" * P)
    c1 = rxd.call("rx_vmo_create_child", w, RX_VMO_CHILD_SNAPSHOT, 0, 2 * P)
    rxd.call("rx_vmo_write", w, 0, b"A" * 2 * P)  # the originals are c1's alone now
    a = rxd.call("rx_vmo_create_child", c1, RX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE, 0, P)  # sees page 0
    assert rxd.kmem()["committed_bytes"] == 4 * P
    rxd.call("rx_handle_close", c1)  # original page 1: nobody can read it any more
    assert rxd.kmem()["committed_bytes"] == 3 * P
    assert rxd.call("rx_vmo_read", a, 0, 1) == b"a"


def test_a_snapshot_of_an_at_least_on_write_child_is_refused(rxd: Rxd) -> None:
    # Its parent keeps being written: no point-in-time copy is possible (Zircon refuses too).
    v = rxd.call("rx_vmo_create", P, 0)
    aow = rxd.call("rx_vmo_create_child", v, RX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE, 0, P)
    with pytest.raises(RxError) as e:
        rxd.call("rx_vmo_create_child", aow, RX_VMO_CHILD_SNAPSHOT, 0, P)
    assert e.value.status == RX_ERR_NOT_SUPPORTED
    rxd.call("rx_vmo_create_child", aow, RX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE, 0, P)


def test_rx_fork_gives_no_more_rights_than_the_mapping_had(rxd: Rxd) -> None:
    v = rxd.call("rx_vmo_create", P, 0)
    rxd.call("rx_vmo_write", v, 0, b"SECRET")
    h = rxd.call("rx_handle_duplicate", v, RX_RIGHT_MAP | RX_RIGHT_TRANSFER | RX_RIGHT_DUPLICATE)
    rxd.run(HEADER + """
h = rx.rx_handle_import(sys.argv[1])
rx.rx_vmar_map(h, 0, 4096, 0)                    # perms 0 needs only MAP
entries = rx.rx_fork_claim(rx.rx_fork_prepare())  # anyone holding a ticket may claim it
try:
    rx.rx_vmo_read(entries[0][5], 0, 6)
except rx.RxError as e:
    assert e.name == "RX_ERR_ACCESS_DENIED", e
else:
    raise AssertionError("the snapshot handle can read what the mapping's handle could not")
""", rxd.call("rx_handle_export", h, RX_RIGHT_MAP))


def test_a_failed_specific_map_leaves_no_untracked_writable_memory() -> None:
    with running_rxd(memory="64KiB") as rxd:
        v1 = rxd.call("rx_vmo_create", P, 0)
        proc = rxd.spawn(HEADER + """
v1 = rx.rx_handle_import(sys.argv[1])
a = rx.rx_vmar_map(v1, 0, 4096, RW)
view = rx.rx_view(a, 4096)
view[0:8] = b"before.."
filler = rx.rx_vmo_create(15 * 4096, rx.RX_VMO_COMMIT_EAGER)       # the rest of the budget
v2 = rx.rx_vmo_create(4096)
try:
    rx.rx_vmar_map(v2, 0, 4096, RW, rx.RX_VM_SPECIFIC | rx.RX_VM_MAP_RANGE, a)
except rx.RxError as e:
    assert e.name == "RX_ERR_NO_MEMORY", e
print("failed", flush=True)
sys.stdin.readline()                       # the admin snapshots v1
view[0:8] = b"AFTER!!!"                    # the old mapping is still rxd's: this write splits
assert bytes(view[0:8]) == b"AFTER!!!"
print("wrote", flush=True)
sys.stdin.readline()
""", rxd.call("rx_handle_export", v1, RX_RIGHT_SAME_RIGHTS))
        read_line(proc, expect="failed")
        snap = rxd.call("rx_vmo_create_child", v1, RX_VMO_CHILD_SNAPSHOT, 0, P)
        out, _ = proc.communicate("\n\n", timeout=10)
        assert rxd.call("rx_vmo_read", snap, 0, 8) == b"before..", "a snapshot changed"
        # The budget is full, so the split itself is refused (SIGBUS): either way nothing
        # reached the snapshot.
        assert out.strip() == "wrote" or proc.returncode != 0


def test_a_client_that_never_takes_a_store_fd_is_killed_and_blocks_no_one() -> None:
    with running_rxd(ack_deadline=1.0) as rxd:
        v = rxd.call("rx_vmo_create", P, 0)
        rxd.call("rx_vmo_write", v, 0, b"x")
        # A raw client: it faults, and its "control thread" never acks the STORE that needs.
        proc = rxd.spawn("""
import sys, time, msgpack
sys.path.insert(0, sys.argv[2])
from rxtest import RawClient
from rxkernel.proto import CHANNEL_CONTROL, CHANNEL_FAULT
c = RawClient(sys.argv[1])
v = c.call("rx_handle_import", sys.argv[3])
ctl = c.side_channel(CHANNEL_CONTROL)
c.call("rx_vmar_map", v, 0, 4096, 1, 0, 0x7f0000000000)
c.side_channel(CHANNEL_FAULT).sendall(msgpack.packb([1, 0x7f0000000000, 0]))
print("faulted", flush=True)
time.sleep(60)
""", rxd.socket, os.path.dirname(__file__), rxd.call("rx_handle_export", v, RX_RIGHT_SAME_RIGHTS))
        read_line(proc, expect="faulted")
        start = time.monotonic()
        rxd.call("rx_vmo_write", v, 0, b"y")  # waits for the tree lock the fault holds
        assert time.monotonic() - start < 10
        assert proc.wait(10) == -signal.SIGKILL
        assert rxd.kmem()["clients_killed"] == 1


def test_snapshot_of_a_fragmented_mapping_is_quick() -> None:
    # PROTECT used to re-read /proc/self/maps for every range, under the apply lock: with 4096
    # store-backed islands the client missed the ack deadline and was killed.
    n = 8192
    with running_rxd(ack_deadline=5.0) as rxd:
        v = rxd.call("rx_vmo_create", n * P, 0)
        proc = rxd.spawn(HEADER + """
v = rx.rx_handle_import(sys.argv[1]); n = int(sys.argv[2])
view = rx.rx_view(rx.rx_vmar_map(v, 0, n * 4096, RW, rx.RX_VM_MAP_RANDOM), n * 4096)
for i in range(0, n, 2):
    view[i * 4096] = 1                     # every other page: thousands of separate areas
print("go", flush=True)
sys.stdin.readline()
assert all(view[i * 4096] == 1 - i % 2 for i in range(n))
print("alive", flush=True)
""", rxd.call("rx_handle_export", v, RX_RIGHT_SAME_RIGHTS), str(n))
        read_line(proc, expect="go")
        start = time.monotonic()
        rxd.call("rx_vmo_create_child", v, RX_VMO_CHILD_SNAPSHOT, 0, n * P)
        took = time.monotonic() - start
        out, err = proc.communicate("\n", timeout=30)
        assert out.strip() == "alive", err
        assert rxd.kmem()["clients_killed"] == 0
        print(f"snapshot of a mapping with {n // 2} islands: {took * 1e3:.0f} ms")


def test_closing_deep_in_a_long_chain_does_not_stall_rxd(rxd: Rxd) -> None:
    # Each close used to walk every ancestor's whole subtree: 27 s at depth 1000, rxd serving
    # no one meanwhile. Only the pages the closed node really read through are looked at now.
    v = rxd.call("rx_vmo_create", 4 * P, 0)
    rxd.call("rx_vmo_write", v, 0, b"x" * 4 * P)
    chain = [v]
    for _ in range(1000):
        chain.append(rxd.call("rx_vmo_create_child", chain[-1], RX_VMO_CHILD_SNAPSHOT, 0, 4 * P))
    start = time.monotonic()
    for i in (1000, 500, 1):
        rxd.call("rx_handle_close", chain[i])
    assert time.monotonic() - start < 5
    assert rxd.call("rx_vmo_read", chain[999], 0, 1) == b"x"
    assert rxd.kmem()["committed_bytes"] == 4 * P


def test_a_process_killed_while_its_map_range_commits_leaks_nothing() -> None:
    with running_rxd(ack_deadline=1.0) as rxd:
        v = rxd.call("rx_vmo_create", P, 0)
        proc = rxd.spawn("""
import sys, msgpack
sys.path.insert(0, sys.argv[2])
from rxtest import RawClient
from rxkernel.proto import CHANNEL_CONTROL, CHANNEL_FAULT, RX_VM_MAP_RANGE
c = RawClient(sys.argv[1])
v = c.call("rx_handle_import", sys.argv[3])
ctl = c.side_channel(CHANNEL_CONTROL)             # never acks
c.call("rx_vmar_map", v, 0, 4096, 3, 0, 0x7f0000000000)
f = c.side_channel(CHANNEL_FAULT)
f.sendall(msgpack.packb([1, 0x7f0000000000, 0]))  # a read: the zero page, shadow-marked
f.recv(65536)
print("mapping", flush=True)
c.call("rx_vmar_map", v, 0, 4096, 3, RX_VM_MAP_RANGE, 0x7f0000100000)  # its commit shoots us down
""", rxd.socket, os.path.dirname(__file__), rxd.call("rx_handle_export", v, RX_RIGHT_SAME_RIGHTS))
        read_line(proc, expect="mapping")
        assert proc.wait(20) == -signal.SIGKILL
        rxd.call("rx_handle_close", v)
        rxd.wait_idle()
        assert rxd.kmem()["num_vmos"] == 0


def test_protect_never_lands_on_memory_the_client_just_took_back(rxd: Rxd) -> None:
    # A PROTECT reads /proc/self/maps, then mprotects: a reservation made in between turned into
    # readable anonymous zeros that never fault, so the new mapping read 0 instead of its VMO.
    n, rounds = 8192, 6
    v1 = rxd.call("rx_vmo_create", n * P, 0)
    v2 = rxd.call("rx_vmo_create", n * P, 0)
    for off in range(0, n * P, 1 << 20):
        rxd.call("rx_vmo_write", v2, off, b"\x5a" * (1 << 20))
    proc = rxd.spawn(HEADER + """
import random
v1 = rx.rx_handle_import(sys.argv[1]); v2 = rx.rx_handle_import(sys.argv[2]); n = int(sys.argv[3])
a = rx.rx_vmar_map(v1, 0, n * 4096, RW, rx.RX_VM_MAP_RANDOM)
bad = 0
for _ in range(int(sys.argv[4])):
    rx.rx_vmar_map(v1, 0, n * 4096, RW, rx.RX_VM_SPECIFIC | rx.RX_VM_MAP_RANDOM, a)
    view = rx.rx_view(a, n * 4096)
    for i in range(0, n, 2):
        view[i * 4096] = 1                 # thousands of store-backed islands for PROTECT
    del view
    print("go", flush=True)
    sys.stdin.readline()                   # the admin's snapshot is on its way
    time.sleep(random.random() * 0.02)
    rx.rx_vmar_map(v2, 0, n * 4096, RW, rx.RX_VM_SPECIFIC | rx.RX_VM_MAP_RANDOM, a)
    view = rx.rx_view(a, n * 4096)
    bad += sum(1 for i in range(n) if view[i * 4096] != 0x5a)
    del view
print(bad, flush=True)
""", *(rxd.call("rx_handle_export", h, RX_RIGHT_SAME_RIGHTS) for h in (v1, v2)), str(n), str(rounds))
    assert proc.stdin is not None
    for _ in range(rounds):
        read_line(proc, expect="go")
        proc.stdin.write("\n")
        proc.stdin.flush()
        rxd.call("rx_handle_close", rxd.call("rx_vmo_create_child", v1, RX_VMO_CHILD_SNAPSHOT, 0, n * P))
    out, err = proc.communicate(timeout=120)
    assert out.strip() == "0", err
