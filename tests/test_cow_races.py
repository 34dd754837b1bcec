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
from rxtest import Rxd, running_rxd

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
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "failed"
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
        assert proc.stdout is not None and proc.stdout.readline().strip() == "faulted"
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
        assert proc.stdout is not None and proc.stdout.readline().strip() == "go"
        start = time.monotonic()
        rxd.call("rx_vmo_create_child", v, RX_VMO_CHILD_SNAPSHOT, 0, n * P)
        took = time.monotonic() - start
        out, err = proc.communicate("\n", timeout=30)
        assert out.strip() == "alive", err
        assert rxd.kmem()["clients_killed"] == 0
        print(f"snapshot of a mapping with {n // 2} islands: {took * 1e3:.0f} ms")
