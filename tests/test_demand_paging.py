"""Demand paging seen from real client processes: lazy commit, the zero page, eager commit,
fault-around, every kind of code touching the memory, and faults rxd refuses."""

from __future__ import annotations

import signal

import pytest

from rxtest import Rxd, running_rxd

HEADER = "import rxkernel.client as rx, os, sys\nRW = rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE\n"


def test_lazy_commit_zero_page_and_read_write_coherence(rxd: Rxd) -> None:
    out = rxd.run(HEADER + """
vmo = rx.rx_vmo_create(64 << 20)
info = lambda: rx.rx_object_get_info(vmo, rx.RX_INFO_VMO)
assert info()["committed_bytes"] == 0
addr = rx.rx_vmar_map(vmo, 0, 64 << 20, RW)
buf = rx.rx_view(addr, 64 << 20)
assert info()["committed_bytes"] == 0, "mapping commits nothing"
assert bytes(buf[1 << 20:(1 << 20) + 4096]) == bytes(4096), "reads see zeros"
assert info()["committed_bytes"] == 0, "a read maps the zero page and commits nothing"
buf[4096:4101] = b"hello"
assert info()["committed_bytes"] == 4096, info()
assert rx.rx_vmo_read(vmo, 4096, 5) == b"hello"
rx.rx_vmo_write(vmo, 8 << 20, b"from vmo_write")
assert bytes(buf[8 << 20:(8 << 20) + 14]) == b"from vmo_write"
# a page zero-mapped first, then written by vmo_write, must show the new bytes in the mapping
assert bytes(buf[1 << 20:(1 << 20) + 4]) == bytes(4)
rx.rx_vmo_write(vmo, 1 << 20, b"late")
assert bytes(buf[1 << 20:(1 << 20) + 4]) == b"late"
print(info()["committed_bytes"])
""")
    assert int(out.stdout) == 3 * 4096
    stats = rxd.kmem()
    assert stats["zero_page_faults"] >= 1 and stats["page_faults"] >= 3
    rxd.wait_idle()


def test_eager_commit_and_budget() -> None:
    with running_rxd(memory="64MiB") as rxd:
        rxd.run(HEADER + """
vmo = rx.rx_vmo_create(16 << 20, rx.RX_VMO_COMMIT_EAGER)
assert rx.rx_object_get_info(vmo, rx.RX_INFO_VMO)["committed_bytes"] == 16 << 20
try:
    rx.rx_vmo_create(64 << 20, rx.RX_VMO_COMMIT_EAGER)
except rx.RxError as e:
    assert e.name == "RX_ERR_NO_MEMORY", e
else:
    raise AssertionError("an eager commit past the budget must fail")
k = rx.rx_object_get_info(rx.rx_system_handle(), rx.RX_INFO_KMEM_STATS)
assert k["committed_bytes"] == 16 << 20 and k["free_bytes"] == 48 << 20, k
""")
        rxd.wait_idle()


def test_any_code_can_touch_the_memory(rxd: Rxd) -> None:
    rxd.run(HEADER + """
import ctypes, struct, numpy as np
vmo = rx.rx_vmo_create(1 << 20)
addr = rx.rx_vmar_map(vmo, 0, 1 << 20, RW)
view = rx.rx_view(addr, 1 << 20)
struct.pack_into("<Q", view, 0x10000, 0xDEADBEEF)
arr = np.frombuffer(view, dtype=np.uint64)
arr[0x20000 // 8: 0x20000 // 8 + 512] = np.arange(512)
ctypes.memmove(addr + 0x30000, b"ctypes!", 7)
data = rx.rx_vmo_read(vmo, 0, 1 << 20)
assert struct.unpack_from("<Q", data, 0x10000)[0] == 0xDEADBEEF
assert np.array_equal(np.frombuffer(data, dtype=np.uint64)[0x20000 // 8: 0x20000 // 8 + 512], np.arange(512))
assert data[0x30000:0x30007] == b"ctypes!"
""")


def test_sequential_fault_around_keeps_one_vma(rxd: Rxd) -> None:
    out = rxd.run(HEADER + """
size = 64 << 20
vmo = rx.rx_vmo_create(size)
addr = rx.rx_vmar_map(vmo, 0, size, RW)
view = rx.rx_view(addr, size)
for off in range(0, size, 4096):
    view[off] = 1
faults = rx.rx_trap_counters()["faults"]
vmas = 0
for line in open("/proc/self/maps"):
    lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
    if lo < addr + size and hi > addr:
        vmas += 1
print(faults, vmas)
assert rx.rx_object_get_info(vmo, rx.RX_INFO_VMO)["committed_bytes"] == size
""")
    faults, vmas = map(int, out.stdout.split())
    assert faults < 16384 // 64, f"{faults} faults for 16384 pages: fault-around is not working"
    assert vmas == 1, f"a sequentially touched mapping should be one VMA, got {vmas}"


def test_threads_fault_together(rxd: Rxd) -> None:
    rxd.run(HEADER + """
import threading
size = 32 << 20
vmo = rx.rx_vmo_create(size)
addr = rx.rx_vmar_map(vmo, 0, size, RW)
view = rx.rx_view(addr, size)
def worker(i):
    part = size // 8
    for off in range(i * part, (i + 1) * part, 4096 * 3):
        view[off:off + 2] = bytes([i, 0xAA])
threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
for t in threads: t.start()
for t in threads: t.join()
data = rx.rx_vmo_read(vmo, 0, size)
for i in range(8):
    part = size // 8
    for off in range(i * part, (i + 1) * part, 4096 * 3):
        assert data[off:off + 2] == bytes([i, 0xAA]), (i, off)
assert rx.rx_trap_counters()["fault_channels"] >= 1
""")


def _expect_death(rxd: Rxd, code: str, sig: int, message: str) -> str:
    result = rxd.run(HEADER + code, check=False)
    assert result.returncode == -sig, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.startswith("rx: ")]
    assert lines and message in lines[0], result.stderr
    return lines[0]


def test_write_to_read_only_mapping_dies_with_diagnostic(rxd: Rxd) -> None:
    _expect_death(rxd, """
vmo = rx.rx_vmo_create(1 << 20)
addr = rx.rx_vmar_map(vmo, 0, 1 << 20, rx.RX_VM_PERM_READ)
view = rx.rx_view(addr, 1 << 20)
assert view[100] == 0
import ctypes
ctypes.memset(addr + 100, 1, 1)
""", signal.SIGSEGV, "in read-only mapping")


def test_read_through_a_mapping_without_read_permission_says_so(rxd: Rxd) -> None:
    line = _expect_death(rxd, """
vmo = rx.rx_vmo_create(1 << 20)
addr = rx.rx_vmar_map(vmo, 0, 1 << 20, 0)
import ctypes
ctypes.string_at(addr + 100, 1)
""", signal.SIGSEGV, "rx: read fault at ")
    assert line.endswith("in a mapping without read permission"), line  # not "write fault … read-only"


def test_fault_around_stops_at_the_end_of_its_mapping(rxd: Rxd) -> None:
    """A read's fault-around window must stay inside the faulting mapping: here the page after it
    is another VMO's (mapped over with RX_VM_SPECIFIC), and must keep reading that VMO's byte."""
    rxd.run(HEADER + """
a, b = rx.rx_vmo_create(2 * 4096), rx.rx_vmo_create(4096)
rx.rx_vmo_write(b, 0, b"B")
addr = rx.rx_vmar_map(a, 0, 2 * 4096, RW)
rx.rx_vmar_map(b, 0, 4096, RW, rx.RX_VM_SPECIFIC, addr + 4096)
view = rx.rx_view(addr, 2 * 4096)
assert view[4096:4097] == b"B"
assert view[0] == 0                   # a read fault in a's one-page mapping
assert view[4096:4097] == b"B", view[4096:4097]
""")


def test_touch_after_unmap_says_the_mapping_was_unmapped(rxd: Rxd) -> None:
    line = _expect_death(rxd, """
vmo = rx.rx_vmo_create(1 << 20)
addr = rx.rx_vmar_map(vmo, 0, 1 << 20, RW)
rx.rx_view(addr, 1 << 20)[4096] = 1
rx.rx_vmar_unmap(addr, 1 << 20)
import ctypes
print(hex(addr + 4096), flush=True)
ctypes.string_at(addr + 4096, 1)
""", signal.SIGSEGV, "rx: access at ")
    assert line.endswith("to an rx mapping that was unmapped (rx_vmar_unmap)"), line


@pytest.mark.parametrize("access", ["write", "read"])
def test_fault_past_the_end_after_shrink_dies_with_sigbus(rxd: Rxd, access: str) -> None:
    """Writes and reads alike: the read path's fault-around window stops at the VMO's end too."""
    touch = "view[0] = 2\nview[4096] = 3" if access == "write" else "assert view[0] == 0\nview[4096]"
    _expect_death(rxd, f"""
vmo = rx.rx_vmo_create(8192, rx.RX_VMO_RESIZABLE)
addr = rx.rx_vmar_map(vmo, 0, 8192, RW)
view = rx.rx_view(addr, 8192)
view[4096] = 1
rx.rx_vmo_set_size(vmo, 4096)
assert rx.rx_vmo_get_size(vmo) == 4096
{touch}
""", signal.SIGBUS, "beyond the end of the VMO")


def test_lazy_commit_past_budget_dies_with_diagnostic() -> None:
    with running_rxd(memory="4MiB") as rxd:
        # Two VMOs that each fit (one larger than the budget is refused at creation: the default
        # overcommit mode, RX_OVERCOMMIT_HEURISTIC), and together do not.
        _expect_death(rxd, """
views = []
for _ in range(2):
    vmo = rx.rx_vmo_create(3 << 20)
    views.append(rx.rx_view(rx.rx_vmar_map(vmo, 0, 3 << 20, RW), 3 << 20))
for view in views:
    for off in range(0, 3 << 20, 4096):
        view[off] = 1
""", signal.SIGBUS, "out of memory")
        rxd.wait_idle()


def test_prefault_lets_syscalls_use_the_memory(rxd: Rxd) -> None:
    rxd.run(HEADER + """
import errno
vmo = rx.rx_vmo_create(1 << 20)
r, w = os.pipe()
os.write(w, b"x" * 8192)
addr = rx.rx_vmar_map(vmo, 0, 1 << 20, RW)
try:
    os.readv(r, [rx.rx_view(addr, 8192)])
except OSError as e:
    assert e.errno == errno.EFAULT  # documented: syscalls do not trap
else:
    raise AssertionError("a read into unfaulted rx memory should give EFAULT")
rx.rx_vmar_op_range(addr, 1 << 20, rx.RX_VMAR_OP_COMMIT)
assert os.readv(r, [rx.rx_view(addr, 8192)]) == 8192
addr2 = rx.rx_vmar_map(vmo, 0, 1 << 20, RW, rx.RX_VM_MAP_RANGE)
os.write(w, b"y" * 4096)
assert os.readv(r, [rx.rx_view(addr2 + 4096, 4096)]) == 4096
assert rx.rx_vmo_read(vmo, 0, 8192) == b"x" * 4096 + b"y" * 4096
assert rx.rx_object_get_info(vmo, rx.RX_INFO_VMO)["committed_bytes"] == 1 << 20
""")


def test_op_range_decommit_and_zero_reach_the_mapping(rxd: Rxd) -> None:
    rxd.run(HEADER + """
vmo = rx.rx_vmo_create(1 << 20)
addr = rx.rx_vmar_map(vmo, 0, 1 << 20, RW)
view = rx.rx_view(addr, 1 << 20)
view[:] = b"\\xff" * (1 << 20)
info = lambda: rx.rx_object_get_info(vmo, rx.RX_INFO_VMO)["committed_bytes"]
assert info() == 1 << 20
rx.rx_vmo_op_range(vmo, rx.RX_VMO_OP_DECOMMIT, 0, 64 << 10)
assert info() == (1 << 20) - (64 << 10)
assert bytes(view[:64 << 10]) == bytes(64 << 10)
# Zeros are not enough (a punched hole reads as zero through a stale mapping too): a write now
# must fault to rxd and be counted again.
faults = rx.rx_trap_counters()["faults"]
view[0] = 1
assert rx.rx_trap_counters()["faults"] > faults and info() == (1 << 20) - (64 << 10) + 4096, info()
rx.rx_vmo_op_range(vmo, rx.RX_VMO_OP_ZERO, (64 << 10) + 100, 8192)
assert info() == (1 << 20) - (64 << 10), info()  # one whole page released
assert bytes(view[(64 << 10) + 99:(64 << 10) + 8293]) == b"\\xff" + bytes(8192) + b"\\xff"
faults = rx.rx_trap_counters()["faults"]
view[(64 << 10) + 4096] = 2           # the released page: faults and counts again
assert rx.rx_trap_counters()["faults"] > faults and info() == (1 << 20) - (64 << 10) + 4096, info()
rx.rx_vmo_op_range(vmo, rx.RX_VMO_OP_COMMIT, 0, 1 << 20)
assert info() == 1 << 20
""")


def test_protect_and_unmap(rxd: Rxd) -> None:
    _expect_death(rxd, """
vmo = rx.rx_vmo_create(1 << 20)
m = rx.Vmo(1 << 20).map()
m.view[0] = 7
m.protect(rx.RX_VM_PERM_READ)
assert m.view[0] == 7 and m.view.readonly
m.protect(RW)
m.view[1] = 8
m.unmap()
addr = rx.rx_vmar_map(vmo, 0, 1 << 20, RW)
rx.rx_vmar_protect(addr, 1 << 20, rx.RX_VM_PERM_READ)
import ctypes
ctypes.memset(addr, 1, 1)
""", signal.SIGSEGV, "in read-only mapping")


def test_wrappers_share_the_stubs(rxd: Rxd) -> None:
    rxd.run(HEADER + """
import numpy as np
with rx.Vmo(1 << 20) as vmo:
    assert vmo.size == 1 << 20
    with vmo.map() as m:
        arr = np.frombuffer(m.view, dtype=np.uint32)
        arr[:4] = [1, 2, 3, 4]
        assert vmo.read(0, 16) == np.array([1, 2, 3, 4], dtype=np.uint32).tobytes()
        assert vmo.info()["committed_bytes"] == 4096
        with vmo.child() as snap:
            vmo.zero(0, 4096)
            assert int(arr[0]) == 0 and snap.read(0, 4) == bytes([1, 0, 0, 0])
        del arr
    ro = vmo.duplicate(rx.RX_RIGHT_READ | rx.RX_RIGHT_MAP)
    with ro.map(rx.RX_VM_PERM_READ) as m:
        assert m.view.readonly and len(m) == 1 << 20
    try:
        ro.write(0, b"x")
    except rx.RxError as e:
        assert e.name == "RX_ERR_ACCESS_DENIED"
    ro.close()
me = rx.rx_process_self()
assert rx.rx_object_get_info(me, rx.RX_INFO_PROCESS_VMOS) == []
assert rx.rx_object_get_info(me, rx.RX_INFO_PROCESS_MAPS) == []
""")
    rxd.wait_idle()
