"""Shared memory between real processes: tokens, rights, coherence, and exact accounting."""

from __future__ import annotations

import os
import signal

from rxkernel.proto import (
    RX_RIGHT_INSPECT,
    RX_RIGHT_MAP,
    RX_RIGHT_READ,
    RX_RIGHT_SAME_RIGHTS,
    RX_VMO_OP_DECOMMIT,
)
from rxtest import Rxd, read_line

HEADER = "import rxkernel.client as rx, os, sys, time\nRW = rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE\n"

SLOT_WORKER = HEADER + """
token, me, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
vmo = rx.rx_handle_import(token)
size = n * 4096
addr = rx.rx_vmar_map(vmo, 0, size, RW)
view = rx.rx_view(addr, size)
# read everyone's slot first (zero pages), so other writers must take those mappings away
assert all(view[i * 4096] in (0, i + 1) for i in range(n))
view[me * 4096 + 1:me * 4096 + 9] = me.to_bytes(8, "little")
view[me * 4096] = me + 1
deadline = time.monotonic() + 60
while not all(view[i * 4096] == i + 1 for i in range(n)):
    assert time.monotonic() < deadline, [view[i * 4096] for i in range(n)]
    time.sleep(0.001)
for i in range(n):
    assert int.from_bytes(view[i * 4096 + 1:i * 4096 + 9], "little") == i
print("ok")
"""


def test_32_processes_share_one_vmo(rxd: Rxd) -> None:
    n = 32
    fds_before = rxd.fd_count()
    vmo = rxd.call("rx_vmo_create", n * 4096, 0)
    tokens = [rxd.call("rx_handle_export", vmo, RX_RIGHT_SAME_RIGHTS) for _ in range(n)]
    procs = [rxd.spawn(SLOT_WORKER, tokens[i], str(i), str(n)) for i in range(n)]
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0 and out.strip() == "ok", err
    data = rxd.call("rx_vmo_read", vmo, 0, n * 4096)
    assert [data[i * 4096] for i in range(n)] == [i + 1 for i in range(n)]
    assert rxd.kmem()["committed_bytes"] == n * 4096
    assert rxd.kmem()["shootdowns"] > 0, "zero-page readers must have been invalidated"
    rxd.call("rx_handle_close", vmo)
    rxd.wait_idle()
    rxd.wait_for(lambda: rxd.fd_count() == fds_before, f"rxd fd count back to {fds_before}")


def test_read_only_handle_gives_a_read_only_fd(rxd: Rxd) -> None:
    vmo = rxd.call("rx_vmo_create", 1 << 20, 0)
    rxd.call("rx_vmo_write", vmo, 0, b"secret")
    token = rxd.call("rx_handle_export", vmo, RX_RIGHT_READ | RX_RIGHT_MAP | RX_RIGHT_INSPECT)
    rxd.run(HEADER + """
import mmap
from rxkernel.native import lib
vmo = rx.rx_handle_import(sys.argv[1])
try:
    rx.rx_vmar_map(vmo, 0, 1 << 20, RW)
except rx.RxError as e:
    assert e.name == "RX_ERR_ACCESS_DENIED", e
else:
    raise AssertionError("a writable mapping needs WRITE")
try:
    rx.rx_vmo_write(vmo, 0, b"x")
except rx.RxError as e:
    assert e.name == "RX_ERR_ACCESS_DENIED"
else:
    raise AssertionError("vmo_write needs WRITE")
addr = rx.rx_vmar_map(vmo, 0, 1 << 20, rx.RX_VM_PERM_READ)
assert bytes(rx.rx_view(addr, 6)) == b"secret"
fd = lib.rx_store_fd(rx.rx_object_get_info(vmo, rx.RX_INFO_VMO)["store_id"])
assert fd >= 0
try:
    mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
except PermissionError:
    pass
else:
    raise AssertionError("the store fd must not allow writable shared mappings")
flags = int(open(f"/proc/self/fdinfo/{fd}").read().split("flags:")[1].split()[0], 8)
assert flags & os.O_ACCMODE == os.O_RDONLY
""", token)
    assert rxd.call("rx_vmo_read", vmo, 0, 6) == b"secret"


def test_decommit_in_one_process_reaches_the_other(rxd: Rxd) -> None:
    vmo = rxd.call("rx_vmo_create", 1 << 20, 0)
    token = rxd.call("rx_handle_export", vmo, RX_RIGHT_SAME_RIGHTS)
    reader = rxd.spawn(HEADER + """
vmo = rx.rx_handle_import(sys.argv[1])
view = rx.rx_view(rx.rx_vmar_map(vmo, 0, 1 << 20, RW), 1 << 20)
view[0:4] = b"data"
print("written", flush=True)
sys.stdin.readline()                  # the test decommits meanwhile
print(bytes(view[0:4]).hex(), flush=True)
faults = rx.rx_trap_counters()["faults"]
view[0:4] = b"more"                   # the page was taken away: this write asks rxd again
print(rx.rx_trap_counters()["faults"] - faults, flush=True)
""", token)
    assert reader.stdin is not None
    read_line(reader, expect="written")
    assert rxd.call("rx_vmo_read", vmo, 0, 4) == b"data"
    rxd.call("rx_vmo_op_range", vmo, RX_VMO_OP_DECOMMIT, 0, 1 << 20)
    assert rxd.kmem()["committed_bytes"] == 0
    reader.stdin.write("go\n")
    reader.stdin.flush()
    read_line(reader, expect="00000000")
    # Not just zeros (a punched hole reads as zero through a stale mapping too): the write after
    # the decommit must fault to rxd and be counted again.
    assert int(read_line(reader)) >= 1
    assert reader.wait(30) == 0
    assert rxd.call("rx_vmo_read", vmo, 0, 4) == b"more" and rxd.kmem()["committed_bytes"] == 4096
    rxd.call("rx_handle_close", vmo)
    rxd.wait_idle()


def test_task_and_vmo_stats(rxd: Rxd) -> None:
    out = rxd.run(HEADER + """
import json
vmo = rx.rx_vmo_create(1 << 20)
addr = rx.rx_vmar_map(vmo, 0, 1 << 20, RW)
rx.rx_view(addr, 1 << 20)[0:8192] = bytes(range(256)) * 32
me = rx.rx_process_self()
print(json.dumps([rx.rx_object_get_info(me, rx.RX_INFO_TASK_STATS), rx.rx_object_get_info(vmo, rx.RX_INFO_VMO),
                  rx.rx_object_get_info(me, rx.RX_INFO_PROCESS_MAPS), rx.rx_object_get_info(me, rx.RX_INFO_PROCESS_VMOS)]))
""")
    import json

    task, vmo, maps, vmos = json.loads(out.stdout)
    assert task["mem_mapped_bytes"] == 1 << 20
    assert task["mem_private_bytes"] == 8192 and task["mem_shared_bytes"] == 0
    assert task["page_faults"] >= 1
    assert vmo["committed_bytes"] == 8192 and vmo["num_mappings"] == 1 and vmo["share_count"] == 1
    assert maps[0]["size"] == 1 << 20 and maps[0]["committed_bytes"] == 8192 and maps[0]["vmo_koid"] == vmo["koid"]
    assert vmos[0]["koid"] == vmo["koid"] and vmos[0]["num_handles"] == 1


def test_shared_pages_are_scaled_between_sharers(rxd: Rxd) -> None:
    vmo = rxd.call("rx_vmo_create", 64 << 10, 0)
    rxd.call("rx_vmo_write", vmo, 0, b"x" * (64 << 10))
    tokens = [rxd.call("rx_handle_export", vmo, RX_RIGHT_SAME_RIGHTS) for _ in range(2)]
    code = HEADER + """
vmo = rx.rx_handle_import(sys.argv[1])
rx.rx_vmar_map(vmo, 0, 64 << 10, RW)
print("mapped", flush=True)
sys.stdin.readline()
"""
    procs = [rxd.spawn(code, t) for t in tokens]
    for p in procs:
        read_line(p, expect="mapped")
    stats = [s for s in rxd.processes() if s["num_mappings"]]
    assert len(stats) == 2
    for s in stats:
        assert s["mem_shared_bytes"] == 64 << 10 and s["mem_scaled_shared_bytes"] == 32 << 10 and s["mem_private_bytes"] == 0
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("\n")
        p.stdin.flush()
        assert p.wait(30) == 0
    assert os.path.exists(rxd.socket)


def test_zero_and_shrink_reach_another_process(rxd: Rxd) -> None:
    vmo = rxd.call("rx_vmo_create", 64 << 10, 1 << 1)  # resizable
    rxd.call("rx_vmo_write", vmo, 0, b"\xee" * (64 << 10))
    token = rxd.call("rx_handle_export", vmo, RX_RIGHT_SAME_RIGHTS)
    mapper = rxd.spawn(HEADER + """
vmo = rx.rx_handle_import(sys.argv[1])
view = rx.rx_view(rx.rx_vmar_map(vmo, 0, 64 << 10, RW), 64 << 10)
assert bytes(view[:64 << 10]) == b"\\xee" * (64 << 10)   # every page mapped from the store
print("mapped", flush=True)
sys.stdin.readline()                                     # the test ZEROes pages 2-3
assert bytes(view[2 * 4096:4 * 4096]) == bytes(8192) and view[4 * 4096] == 0xEE
print("zeroed", flush=True)
sys.stdin.readline()                                     # the test shrinks the VMO to 8 pages
assert view[7 * 4096] == 0xEE
view[8 * 4096]                                           # past the new end: SIGBUS
""", token)
    assert mapper.stdin is not None
    read_line(mapper, expect="mapped")
    rxd.call("rx_vmo_op_range", vmo, 10, 2 * 4096, 2 * 4096)  # RX_VMO_OP_ZERO
    assert rxd.kmem()["committed_bytes"] == 14 * 4096
    mapper.stdin.write("\n")
    mapper.stdin.flush()
    read_line(mapper, expect="zeroed")
    rxd.call("rx_vmo_set_size", vmo, 8 * 4096)
    assert rxd.kmem()["committed_bytes"] == 6 * 4096  # pages 0,1,4..7 are left
    mapper.stdin.write("\n")
    mapper.stdin.flush()
    _, err = mapper.communicate(timeout=30)
    assert mapper.returncode == -signal.SIGBUS and "beyond the end of the VMO" in err, (mapper.returncode, err)
    rxd.call("rx_handle_close", vmo)
    rxd.wait_idle()
