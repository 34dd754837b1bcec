"""Copy-on-write children (zx_vmo_create_child semantics) with real client processes."""

from __future__ import annotations

import json
import signal

import pytest

from rxkernel.proto import (
    RX_ERR_ACCESS_DENIED,
    RX_ERR_INVALID_ARGS,
    RX_ERR_NOT_SUPPORTED,
    RX_ERR_OUT_OF_RANGE,
    RX_INFO_VMO,
    RX_INFO_VMO_IS_COW_CLONE,
    RX_RIGHT_DUPLICATE,
    RX_RIGHT_INSPECT,
    RX_RIGHT_MAP,
    RX_RIGHT_READ,
    RX_RIGHT_RESIZE,
    RX_RIGHT_SAME_RIGHTS,
    RX_RIGHT_WRITE,
    RX_VMO_CHILD_NO_WRITE,
    RX_VMO_CHILD_RESIZABLE,
    RX_VMO_CHILD_SLICE,
    RX_VMO_CHILD_SNAPSHOT,
    RX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE,
    RX_VMO_OP_DECOMMIT,
    RX_VMO_OP_ZERO,
    RX_VMO_RESIZABLE,
    RX_VM_MAP_RANDOM,
    RxError,
)
from rxtest import Rxd, read_line, running_rxd

HEADER = "import rxkernel.client as rx, os, sys, time, threading\nRW = rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE\n"
P = 4096


def pages(rxd: Rxd) -> int:
    return int(rxd.kmem()["committed_bytes"]) // P


def filled(rxd: Rxd, n: int, size: int | None = None) -> int:
    """A VMO of `size` bytes whose first n pages hold byte i+1 each."""
    vmo = rxd.call("rx_vmo_create", size or n * P, 0)
    for i in range(n):
        rxd.call("rx_vmo_write", vmo, i * P, bytes([i + 1]) * P)
    return int(vmo)


def first_bytes(rxd: Rxd, vmo: int, n: int) -> list[int]:
    return [rxd.call("rx_vmo_read", vmo, i * P, 1)[0] for i in range(n)]


def test_snapshot_diverges_both_ways_and_copies_only_what_is_written(rxd: Rxd) -> None:
    base = filled(rxd, 8)
    snap = rxd.call("rx_vmo_create_child", base, RX_VMO_CHILD_SNAPSHOT, 0, 8 * P)
    assert pages(rxd) == 8, "a snapshot copies nothing"
    assert first_bytes(rxd, snap, 8) == list(range(1, 9))
    rxd.call("rx_vmo_write", base, 0, b"\xaa")
    assert pages(rxd) == 9
    assert first_bytes(rxd, snap, 1) == [1], "the parent's later writes are invisible to the snapshot"
    rxd.call("rx_vmo_write", snap, P, b"\xbb")
    assert pages(rxd) == 10
    assert first_bytes(rxd, base, 2) == [0xAA, 2], "the snapshot's writes are invisible to the parent"
    rxd.call("rx_vmo_write", snap, 0, b"\xcc")
    # Both sides now have their own page 0: the shared original is garbage and goes at once.
    assert pages(rxd) == 10
    info = rxd.call("rx_object_get_info", snap, RX_INFO_VMO)
    assert info["parent_koid"] == rxd.call("rx_object_get_info", base, RX_INFO_VMO)["koid"]
    assert info["flags"] & RX_INFO_VMO_IS_COW_CLONE
    assert info["committed_bytes"] == 2 * P
    assert rxd.call("rx_object_get_info", base, RX_INFO_VMO)["num_children"] == 1
    rxd.call("rx_handle_close", snap)
    assert pages(rxd) == 8, "the snapshot's pages and the ones only it could see are freed"
    assert rxd.call("rx_object_get_info", base, RX_INFO_VMO)["num_children"] == 0
    rxd.wait_for(lambda: rxd.kmem()["num_hidden_nodes"] == 0, "the hidden node to collapse")
    assert first_bytes(rxd, base, 8) == [0xAA, *range(2, 9)]
    assert pages(rxd) == 8
    rxd.call("rx_handle_close", base)
    rxd.wait_idle()


def test_closing_the_parent_keeps_what_the_snapshot_sees(rxd: Rxd) -> None:
    base = filled(rxd, 4)
    snap = rxd.call("rx_vmo_create_child", base, RX_VMO_CHILD_SNAPSHOT, P, 2 * P)  # pages 1, 2
    rxd.call("rx_vmo_write", base, P, b"\xee")
    assert pages(rxd) == 5
    rxd.call("rx_handle_close", base)
    assert pages(rxd) == 2, "only the snapshot's window of the original stays"
    assert first_bytes(rxd, snap, 2) == [2, 3]
    rxd.wait_for(lambda: rxd.kmem()["num_hidden_nodes"] == 0, "the hidden node to collapse")
    assert first_bytes(rxd, snap, 2) == [2, 3] and pages(rxd) == 2
    rxd.call("rx_handle_close", snap)
    rxd.wait_idle()


def test_snapshots_of_snapshots_to_any_depth(rxd: Rxd) -> None:
    chain = [filled(rxd, 4)]
    for depth in range(12):
        child = rxd.call("rx_vmo_create_child", chain[-1], RX_VMO_CHILD_SNAPSHOT, 0, 4 * P)
        rxd.call("rx_vmo_write", child, (depth % 4) * P, bytes([100 + depth]))
        chain.append(child)
    expect = [1, 2, 3, 4]
    for depth in range(12):
        expect[depth % 4] = 100 + depth
    assert first_bytes(rxd, chain[-1], 4) == expect
    assert first_bytes(rxd, chain[0], 4) == [1, 2, 3, 4]
    # Close from the middle outwards, checking contents as the tree collapses.
    for i in (6, 3, 9, 1, 11, 0):
        rxd.call("rx_handle_close", chain[i])
    assert first_bytes(rxd, chain[-1], 4) == expect
    for i in (2, 4, 5, 7, 8, 10):
        rxd.call("rx_handle_close", chain[i])
    rxd.wait_for(lambda: rxd.kmem()["num_hidden_nodes"] == 0, "every hidden node to collapse")
    assert first_bytes(rxd, chain[-1], 4) == expect and pages(rxd) == 4
    rxd.call("rx_handle_close", chain[-1])
    rxd.wait_idle()


def test_at_least_on_write_sees_parent_writes_until_it_writes(rxd: Rxd) -> None:
    base = filled(rxd, 2)
    child = rxd.call("rx_vmo_create_child", base, RX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE, 0, 2 * P)
    rxd.call("rx_vmo_write", base, 0, b"\x10")
    assert first_bytes(rxd, child, 1) == [0x10], "reads through to the parent's current page"
    rxd.call("rx_vmo_write", child, 0, b"\x20")
    rxd.call("rx_vmo_write", base, 0, b"\x30")
    assert first_bytes(rxd, child, 2) == [0x20, 2] and first_bytes(rxd, base, 1) == [0x30]
    assert pages(rxd) == 3
    rxd.call("rx_vmo_op_range", base, RX_VMO_OP_DECOMMIT, P, P)
    assert first_bytes(rxd, child, 2) == [0x20, 0], "the parent's decommit shows through"
    rxd.call("rx_handle_close", base)
    assert first_bytes(rxd, child, 2) == [0x20, 0] and pages(rxd) == 1
    rxd.call("rx_handle_close", child)
    rxd.wait_idle()


def test_slice_is_a_window_with_no_copies(rxd: Rxd) -> None:
    base = filled(rxd, 4)
    sl = rxd.call("rx_vmo_create_child", base, RX_VMO_CHILD_SLICE, 2 * P, 2 * P)
    assert first_bytes(rxd, sl, 2) == [3, 4]
    rxd.call("rx_vmo_write", sl, 0, b"\x77")
    rxd.call("rx_vmo_write", base, 3 * P, b"\x88")
    assert first_bytes(rxd, base, 4) == [1, 2, 0x77, 0x88] and first_bytes(rxd, sl, 2) == [0x77, 0x88]
    assert pages(rxd) == 4
    # A snapshot of the slice sees the slice's window and diverges from it (and from base).
    snap = rxd.call("rx_vmo_create_child", sl, RX_VMO_CHILD_SNAPSHOT, 0, 2 * P)
    rxd.call("rx_vmo_write", base, 2 * P, b"\x99")
    assert first_bytes(rxd, snap, 2) == [0x77, 0x88] and first_bytes(rxd, sl, 1) == [0x99]
    with pytest.raises(RxError) as e:
        rxd.call("rx_vmo_create_child", base, RX_VMO_CHILD_SLICE, 2 * P, 3 * P)
    assert e.value.status == RX_ERR_OUT_OF_RANGE
    resizable = rxd.call("rx_vmo_create", P, RX_VMO_RESIZABLE)
    with pytest.raises(RxError) as e:
        rxd.call("rx_vmo_create_child", resizable, RX_VMO_CHILD_SLICE, 0, P)
    assert e.value.status == RX_ERR_NOT_SUPPORTED
    for h in (base, sl, snap, resizable):
        rxd.call("rx_handle_close", h)
    rxd.wait_idle()


def test_child_options_and_rights_follow_zircon(rxd: Rxd) -> None:
    base = rxd.call("rx_vmo_create", 4 * P, 0)
    bad = [
        (RX_VMO_CHILD_SNAPSHOT | RX_VMO_CHILD_SLICE, 0, RX_ERR_INVALID_ARGS),
        (0, 0, RX_ERR_INVALID_ARGS),
        (RX_VMO_CHILD_SNAPSHOT | (1 << 12), 0, RX_ERR_INVALID_ARGS),
        (RX_VMO_CHILD_SLICE | RX_VMO_CHILD_RESIZABLE, 0, RX_ERR_INVALID_ARGS),
        (RX_VMO_CHILD_SNAPSHOT, 100, RX_ERR_INVALID_ARGS),  # unaligned offset
    ]
    for options, offset, status in bad:
        with pytest.raises(RxError) as e:
            rxd.call("rx_vmo_create_child", base, options, offset, P)
        assert e.value.status == status, (options, offset, e.value)
    no_dup = rxd.call("rx_handle_duplicate", base, RX_RIGHT_READ | RX_RIGHT_MAP)
    no_read = rxd.call("rx_handle_duplicate", base, RX_RIGHT_DUPLICATE | RX_RIGHT_MAP)
    for h in (no_dup, no_read):
        with pytest.raises(RxError) as e:
            rxd.call("rx_vmo_create_child", h, RX_VMO_CHILD_SNAPSHOT, 0, P)
        assert e.value.status == RX_ERR_ACCESS_DENIED
    read_only = rxd.call("rx_handle_duplicate", base, RX_RIGHT_READ | RX_RIGHT_DUPLICATE | RX_RIGHT_MAP | RX_RIGHT_INSPECT)

    def rights(h: int) -> int:
        return int(rxd.call("rx_object_get_info", h, RX_INFO_VMO)["handle_rights"])

    snap = rxd.call("rx_vmo_create_child", read_only, RX_VMO_CHILD_SNAPSHOT, 0, P)
    assert rights(snap) & RX_RIGHT_WRITE, "a copy-on-write child of a read-only handle is writable"
    nowrite = rxd.call("rx_vmo_create_child", base, RX_VMO_CHILD_SNAPSHOT | RX_VMO_CHILD_NO_WRITE, 0, P)
    assert not rights(nowrite) & RX_RIGHT_WRITE
    sl = rxd.call("rx_vmo_create_child", read_only, RX_VMO_CHILD_SLICE, 0, P)
    assert not rights(sl) & RX_RIGHT_WRITE, "a slice keeps the parent handle's rights"
    grow = rxd.call("rx_vmo_create_child", base, RX_VMO_CHILD_SNAPSHOT | RX_VMO_CHILD_RESIZABLE, 0, P)
    assert rights(grow) & RX_RIGHT_RESIZE
    rxd.call("rx_vmo_set_size", grow, 64 * P)
    assert rxd.call("rx_vmo_read", grow, 63 * P, 4) == bytes(4)
    # A snapshot larger than its parent reads zeros past the parent's end.
    rxd.call("rx_vmo_write", base, 3 * P, b"\x05")
    big = rxd.call("rx_vmo_create_child", base, RX_VMO_CHILD_SNAPSHOT, 2 * P, 8 * P)
    assert first_bytes(rxd, big, 8) == [0, 5, 0, 0, 0, 0, 0, 0]


def test_zero_on_a_clone_releases_its_copy_and_reads_zero(rxd: Rxd) -> None:
    base = filled(rxd, 4)
    snap = rxd.call("rx_vmo_create_child", base, RX_VMO_CHILD_SNAPSHOT, 0, 4 * P)
    rxd.call("rx_vmo_write", snap, 0, b"\x01\x02")
    assert pages(rxd) == 5
    rxd.call("rx_vmo_op_range", snap, RX_VMO_OP_ZERO, 0, 2 * P)
    assert first_bytes(rxd, snap, 4) == [0, 0, 3, 4] and first_bytes(rxd, base, 4) == [1, 2, 3, 4]
    assert pages(rxd) == 4, "the clone's copy is released and zeros cost nothing"
    rxd.call("rx_vmo_op_range", base, RX_VMO_OP_ZERO, P, 3 * P)
    assert first_bytes(rxd, snap, 4) == [0, 0, 3, 4]
    assert pages(rxd) == 3, "base's page 1 is garbage now: the snapshot zeroed it too"
    # Partial-page zero on a clone copies the page first, then zeroes the bytes.
    rxd.call("rx_vmo_op_range", snap, RX_VMO_OP_ZERO, 2 * P + 1, 10)
    assert rxd.call("rx_vmo_read", snap, 2 * P, 12) == b"\x03" + bytes(10) + b"\x03"


MAPPER = HEADER + """
v = rx.rx_handle_import(sys.argv[1])
n = int(sys.argv[2])
addr = rx.rx_vmar_map(v, 0, n * 4096, RW, int(sys.argv[3]))
view = rx.rx_view(addr, n * 4096)
for line in sys.stdin:
    cmd, *args = line.split()
    if cmd == "read":
        print(" ".join(str(view[i * 4096]) for i in range(n)), flush=True)
    elif cmd == "write":
        view[int(args[0]) * 4096] = int(args[1]); print("ok", flush=True)
    elif cmd == "faults":
        print(rx.rx_trap_counters()["faults"], flush=True)
    elif cmd == "maps":
        lo, hi = addr, addr + n * 4096
        count = 0
        for row in open("/proc/self/maps"):
            a, b = (int(x, 16) for x in row.split()[0].split("-"))
            count += a < hi and lo < b
        print(count, flush=True)
"""


class Mapper:
    def __init__(self, rxd: Rxd, vmo: int, n: int, options: int = 0) -> None:
        self.proc = rxd.spawn(MAPPER, rxd.call("rx_handle_export", vmo, RX_RIGHT_SAME_RIGHTS), str(n), str(options))

    def ask(self, line: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return read_line(self.proc)

    def read(self) -> list[int]:
        return [int(x) for x in self.ask("read").split()]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(30) == 0


def test_snapshot_of_a_vmo_other_processes_are_writing(rxd: Rxd) -> None:
    base = filled(rxd, 4)
    writer, reader = Mapper(rxd, base, 4), Mapper(rxd, base, 4)
    writer.ask("write 0 50")
    assert reader.read() == [50, 2, 3, 4]  # both map base's own pages, the writer writably
    faults = int(reader.ask("faults"))
    snap = rxd.call("rx_vmo_create_child", base, RX_VMO_CHILD_SNAPSHOT, 0, 4 * P)
    assert reader.read() == [50, 2, 3, 4] and int(reader.ask("faults")) == faults, "write-protected, still mapped"
    snapper = Mapper(rxd, snap, 4)
    writer.ask("write 0 60")  # must fault and split: no write may land in the shared page
    writer.ask("write 3 61")
    assert snapper.read() == [50, 2, 3, 4]
    assert reader.read() == [60, 2, 3, 61] == writer.read()
    snapper.ask("write 1 70")
    assert snapper.read() == [50, 70, 3, 4] and reader.read() == [60, 2, 3, 61]
    assert first_bytes(rxd, snap, 4) == [50, 70, 3, 4] and first_bytes(rxd, base, 4) == [60, 2, 3, 61]
    assert pages(rxd) == 4 + 2 + 1 - 0  # shared 4 (page 0 and 3 still seen by snap) + base's 2 + snap's 1
    stats = rxd.kmem()
    assert stats["cow_faults"] >= 3
    for m in (writer, reader, snapper):
        m.close()
    for h in (base, snap):
        rxd.call("rx_handle_close", h)
    rxd.wait_idle()


def test_a_half_split_mapping_keeps_few_vmas(rxd: Rxd) -> None:
    n = 64
    base = filled(rxd, n)
    snap = rxd.call("rx_vmo_create_child", base, RX_VMO_CHILD_SNAPSHOT, 0, n * P)
    m = Mapper(rxd, snap, n, RX_VM_MAP_RANDOM)  # one page per fault: the split is exactly as written
    assert m.read() == [i + 1 for i in range(n)]
    whole_read = int(m.ask("maps"))
    for i in range(n // 2):  # the first half becomes the clone's own
        m.ask(f"write {i} 0")
    half_split = int(m.ask("maps"))
    for i in range(0, n // 2, 2):  # now every other page of the second half too
        m.ask(f"write {n // 2 + i} 0")
    alternating = int(m.ask("maps"))
    print(f"VMAs over {n} pages: all shared {whole_read}, half split {half_split}, then alternating {alternating}")
    # Adjacent pages of one store at adjacent offsets merge into one VMA, whatever order they
    # were faulted in: only the boundaries between the clone's pages and shared ones cost VMAs.
    assert whole_read == 1 and half_split == 2
    assert alternating == 1 + n // 2 - 1
    m.close()


COW_WRITER = HEADER + """
v = rx.rx_handle_import(sys.argv[1])
k = int(sys.argv[2])
rounds = int(sys.argv[3])
view = rx.rx_view(rx.rx_vmar_map(v, 0, 4096, RW), 4096)
for r in range(rounds):
    sys.stdin.readline()
    view[8 + k] = r + 1   # every process writes its own byte of the same shared page
    print("ok", flush=True)
"""


def test_sixteen_processes_split_the_same_page_at_once(rxd: Rxd) -> None:
    n, rounds = 16, 8
    base = filled(rxd, 1)
    for r in range(rounds):
        snap = rxd.call("rx_vmo_create_child", base, RX_VMO_CHILD_SNAPSHOT, 0, P)
        procs = [rxd.spawn(COW_WRITER, rxd.call("rx_handle_export", snap, RX_RIGHT_SAME_RIGHTS), str(k), "1") for k in range(n)]
        for p in procs:  # release them all at once
            assert p.stdin is not None
            p.stdin.write("\n")
            p.stdin.flush()
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0 and out.strip() == "ok", err
        data = rxd.call("rx_vmo_read", snap, 0, 8 + n)
        assert data[:8] == b"\x01" * 8 and list(data[8:]) == [1] * n, f"round {r}: a write was lost: {list(data)}"
        assert rxd.call("rx_vmo_read", base, 8, n) == b"\x01" * n, "a write leaked into the parent"
        assert pages(rxd) == 2, "exactly one private copy"
        rxd.call("rx_handle_close", snap)
        assert pages(rxd) == 1
    rxd.call("rx_handle_close", base)
    rxd.wait_idle()


def test_a_process_killed_mid_split_leaves_exact_accounting() -> None:
    with running_rxd() as rxd:
        size = 64 << 20
        base = rxd.call("rx_vmo_create", size, 0)
        rxd.call("rx_vmo_op_range", base, 1, 0, size)  # COMMIT: 16384 pages
        for _ in range(3):
            snap = rxd.call("rx_vmo_create_child", base, RX_VMO_CHILD_SNAPSHOT, 0, size)
            proc = rxd.spawn(HEADER + """
from rxkernel.native import lib
v = rx.rx_handle_import(sys.argv[1])
a = rx.rx_vmar_map(v, 0, 64 << 20, RW)
print("go", flush=True)
while True:
    lib.rx_touch(a, 64 << 20, 1)
""", rxd.call("rx_handle_export", snap, RX_RIGHT_SAME_RIGHTS))
            read_line(proc, expect="go")
            rxd.wait_for(lambda: rxd.kmem()["cow_pages_copied"] > 0, "the client to be splitting")
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            rxd.wait_for(lambda: rxd.kmem()["num_processes"] == 1, "the client to be gone")
            copied = rxd.call("rx_object_get_info", snap, RX_INFO_VMO)["committed_bytes"]
            assert rxd.kmem()["committed_bytes"] == size + copied
            rxd.call("rx_handle_close", snap)
            rxd.wait_idle(committed_bytes=size)
            rxd.wait_for(lambda: rxd.kmem()["num_hidden_nodes"] == 0, "the hidden node to collapse")
        rxd.call("rx_handle_close", base)
        rxd.wait_idle()


def test_rx_fork_gives_the_child_copy_on_write_clones() -> None:
    with running_rxd(memory="2GiB") as rxd:
        out = rxd.run(HEADER + """
from rxkernel.native import lib
size = 256 << 20
vmo = rx.rx_vmo_create(size)
a = rx.rx_vmar_map(vmo, 0, size, RW)
small = rx.rx_vmar_map(rx.rx_vmo_create(8192), 0, 8192, rx.RX_VM_PERM_READ)  # never touched
view = rx.rx_view(a, size)
lib.rx_touch(a, size, 1)                      # every page committed
view[0:5] = b"hello"
view[size - 1] = 7
self_koid = rx.rx_object_get_info(rx.rx_process_self(), rx.RX_INFO_HANDLE_BASIC)["koid"]
sys_h = rx.rx_system_handle()
def committed():
    return rx.rx_object_get_info(sys_h, rx.RX_INFO_KMEM_STATS)["committed_bytes"] // 4096
before = committed()
r, w = os.pipe()
go_r, go_w = os.pipe()
pid = rx.fork()
if pid == 0:
    try:
        assert bytes(view[0:5]) == b"hello" and view[size - 1] == 7      # the parent's data
        assert rx.rx_object_get_info(rx.rx_process_self(), rx.RX_INFO_HANDLE_BASIC)["koid"] != self_koid
        assert bytes(rx.rx_view(small, 4)) == bytes(4)
        view[4096] = 1                                                   # one page
        os.write(w, b"w")
        os.read(go_r, 1)                                                 # the parent wrote
        assert bytes(view[0:5]) == b"hello", "the parent's later write is private to it"
        maps = rx.rx_object_get_info(rx.rx_process_self(), rx.RX_INFO_PROCESS_MAPS)
        assert sorted((m["base"], m["size"]) for m in maps) == sorted([(a, size), (small, 8192)])
        os.write(w, b"k")
        os._exit(0)
    except BaseException as e:
        import traceback; traceback.print_exc()
        os._exit(1)
assert os.read(r, 1) == b"w"
grown = committed() - before
assert view[4096] == 0, "the child's write is private to it"
view[0:5] = b"HELLO"
os.write(go_w, b"g")
assert os.read(r, 1) == b"k"
_, status = os.waitpid(pid, 0)
assert status == 0, status
print(grown, committed() - before)
""", timeout=240)
        grown, after_parent_write = (int(x) for x in out.stdout.split())
        assert grown == 1, f"the child wrote 1 page of 256 MiB and {grown} pages were committed"
        assert after_parent_write <= 2
        rxd.wait_idle()
        assert rxd.kmem()["export_tokens"] == 0


def test_rx_fork_child_that_dies_at_once_frees_its_snapshots(rxd: Rxd) -> None:
    rxd.run(HEADER + """
import time
from rxkernel.client import _fork
vmo = rx.rx_vmo_create(1 << 20)
a = rx.rx_vmar_map(vmo, 0, 1 << 20, RW)
rx.rx_view(a, 1 << 20)[0] = 1
sys_h = rx.rx_system_handle()
real_adopt = _fork._adopt
_fork._adopt = lambda ticket: os._exit(3)     # the child dies before claiming anything
pid = rx.fork()
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 3
deadline = time.monotonic() + 20                 # rxd sees the child's exit on its pidfd
while rx.rx_object_get_info(sys_h, rx.RX_INFO_KMEM_STATS)["num_vmos"] != 1 and time.monotonic() < deadline:
    time.sleep(0.01)
stats = rx.rx_object_get_info(sys_h, rx.RX_INFO_KMEM_STATS)
assert stats["num_vmos"] == 1, stats             # the snapshot went with the unclaimed ticket
_fork._adopt = real_adopt
pid = rx.fork()                                   # and a real fork still works afterwards
if pid == 0:
    assert rx.rx_view(a, 1)[0] == 1
    os._exit(0)
_, status = os.waitpid(pid, 0)
assert status == 0
""")


def test_snapshots_taken_while_another_process_writes_are_consistent(rxd: Rxd) -> None:
    """No write slips into a snapshot after it is taken, and each one is a moment of the writer."""
    n = 4
    base = rxd.call("rx_vmo_create", n * P, 0)
    writer = rxd.spawn(HEADER + """
v = rx.rx_handle_import(sys.argv[1])
view = rx.rx_view(rx.rx_vmar_map(v, 0, 4 * 4096, RW), 4 * 4096)
print("go", flush=True)
i = 0
while True:
    i += 1
    for p in range(4):                      # page 0 first: a snapshot sees v0 >= v1 >= v2 >= v3
        view[p * 4096:p * 4096 + 8] = i.to_bytes(8, "little")
""", rxd.call("rx_handle_export", base, RX_RIGHT_SAME_RIGHTS))
    try:
        read_line(writer, expect="go")
        snaps = []
        for _ in range(40):
            snap = rxd.call("rx_vmo_create_child", base, RX_VMO_CHILD_SNAPSHOT, 0, n * P)
            values = [int.from_bytes(rxd.call("rx_vmo_read", snap, p * P, 8), "little") for p in range(n)]
            assert values == sorted(values, reverse=True) and values[0] - values[-1] <= 1, values
            snaps.append((snap, values))
        for snap, values in snaps:  # the writer kept writing: none of it reached a snapshot
            assert [int.from_bytes(rxd.call("rx_vmo_read", snap, p * P, 8), "little") for p in range(n)] == values
        assert snaps[-1][1][0] > snaps[0][1][0], "the writer made progress between snapshots"
    finally:
        writer.kill()
        writer.wait(10)


def test_shared_pages_are_counted_as_shared_and_zero_pages_cost_nothing(rxd: Rxd) -> None:
    n = 8
    base = filled(rxd, n)
    empty = rxd.call("rx_vmo_create", n * P, 0)
    one = rxd.call("rx_vmo_create_child", base, RX_VMO_CHILD_SNAPSHOT, 0, n * P)
    two = rxd.call("rx_vmo_create_child", base, RX_VMO_CHILD_SNAPSHOT, 0, n * P)
    empty_snap = rxd.call("rx_vmo_create_child", empty, RX_VMO_CHILD_SNAPSHOT, 0, n * P)
    code = HEADER + """
import json
v = rx.rx_handle_import(sys.argv[1])
e = rx.rx_handle_import(sys.argv[2])
view = rx.rx_view(rx.rx_vmar_map(v, 0, 8 * 4096, rx.RX_VM_PERM_READ), 8 * 4096)
zeros = rx.rx_view(rx.rx_vmar_map(e, 0, 8 * 4096, rx.RX_VM_PERM_READ), 8 * 4096)
assert [view[i * 4096] for i in range(8)] == list(range(1, 9))
assert bytes(zeros) == bytes(8 * 4096)
print(json.dumps(rx.rx_object_get_info(rx.rx_process_self(), rx.RX_INFO_TASK_STATS)))
"""
    for vmo in (one, two):
        tok = rxd.call("rx_handle_export", vmo, RX_RIGHT_SAME_RIGHTS)
        etok = rxd.call("rx_handle_export", empty_snap, RX_RIGHT_SAME_RIGHTS)
        stats = json.loads(rxd.run(code, tok, etok).stdout)
        # The original pages are read by three VMOs (base, one, two): each gets a third.
        assert stats["mem_private_bytes"] == 0 and stats["mem_shared_bytes"] == n * P, stats
        assert stats["mem_scaled_shared_bytes"] == n * P // 3, stats
    assert pages(rxd) == n, "reading clones, and zero pages anywhere in a tree, commits nothing"


SPLIT_AFTER_PARENT_CLOSED = """
import json
import rxkernel.client as rx
RW = rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE
v = rx.rx_vmo_create(2 * 4096)
parent_at = rx.rx_vmar_map(v, 0, 2 * 4096, RW)
rx.rx_view(parent_at, 2 * 4096)[0] = 1                               # the parent's page 0
child = rx.rx_vmo_create_child(v, rx.RX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE, 0, 4096)
m = rx.rx_view(rx.rx_vmar_map(child, 0, 4096, RW), 4096)
assert m[0] == 1                                                     # reads the parent's page
piece = rx.rx_vmo_create_child(v, rx.RX_VMO_CHILD_SLICE, 4096, 4096)  # keeps page 1 of the parent
rx.rx_vmar_unmap(parent_at, 2 * 4096)
rx.rx_handle_close(v)                                                # the parent is gone
rx.rx_vmar_unmap(rx.rx_vmar_map(piece, 0, 4096, RW), 4096)
m[0] = 2                                                             # the child's own page now
k = rx.rx_object_get_info(rx.rx_system_handle(), rx.RX_INFO_KMEM_STATS)
print(json.dumps(k["committed_bytes"]))
"""


def test_a_split_frees_the_page_of_a_closed_parent_that_no_window_shows(rxd: Rxd) -> None:
    """The parent's page 0 had one reader left, the child; once the child has its own copy, a
    page only the closed parent held and no slice shows is garbage (found by the COW model)."""
    before = rxd.kmem()["committed_bytes"]
    got = json.loads(rxd.run(SPLIT_AFTER_PARENT_CLOSED).stdout.strip().splitlines()[-1])
    assert got - before == 4096  # the child's own page; the slice's page was never written
    rxd.wait_idle()


PARENT_EXITS_AT_ONCE = HEADER + """
import sys
vmo = rx.rx_vmo_create(1 << 20)
a = rx.rx_vmar_map(vmo, 0, 1 << 20, RW)
rx.rx_view(a, 1 << 20)[0:6] = b"parent"
r, w = os.pipe()
pid = rx.fork()
if pid == 0:
    os.close(w)
    os.read(r, 1)                                   # until the parent has exited
    ok = bytes(rx.rx_view(a, 6)) == b"parent"
    rx.rx_view(a, 1)[0] = ord("P")                   # and it can write its copy
    print("child", ok, flush=True)
    os._exit(0 if ok else 1)
print("parent", pid, flush=True)
os._exit(0)                                         # (w closes: the child goes on)
"""


def test_rx_fork_parent_may_exit_at_once(rxd: Rxd) -> None:
    """rx.fork() returns in the parent without waiting for the child (like os.fork): a parent
    that exits right away leaves its child its memory."""
    proc = rxd.spawn(PARENT_EXITS_AT_ONCE)
    out, err = proc.communicate(timeout=60)  # (until the child, which shares stdout, is done too)
    assert proc.returncode == 0, err
    lines = dict(line.split(" ", 1) for line in out.strip().splitlines())
    assert lines.get("child") == "True", (out, err)
    rxd.wait_idle()
    assert rxd.kmem()["num_vmos"] == 0


def test_rx_fork_handoff_goes_only_to_a_child_of_the_caller(rxd: Rxd) -> None:
    out = rxd.run(HEADER + """
ticket = rx.rx_fork_prepare()
for bad in (1, 4_000_000):                          # init (not our child); no such process
    try:
        rx.rx_fork_handoff(ticket, bad)
    except rx.RxError as e:
        print(e.name, e)
pid = os.fork()
if pid == 0:
    os._exit(0)
try:
    rx.rx_fork_handoff("0" * 32, pid)                # a real child, a ticket never issued
except rx.RxError as e:
    print(e.name, e)
os.waitpid(pid, 0)
rx.rx_fork_cancel(ticket)
print("snapshots left", rx.rx_object_get_info(rx.rx_system_handle(), rx.RX_INFO_KMEM_STATS)["num_vmos"])
""").stdout
    assert out.count("RX_ERR_ACCESS_DENIED: pid") == 2 and out.count("not a child of the calling process") == 2, out
    assert "RX_ERR_NOT_FOUND" in out and "no such fork ticket of yours" in out, out
    assert "snapshots left 0" in out, out  # (nothing was mapped: the ticket held no snapshot; nothing leaked)
