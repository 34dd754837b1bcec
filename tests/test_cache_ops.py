"""rx_vmo_op_range cache ops (CACHE_SYNC/INVALIDATE/CLEAN/CLEAN_INVALIDATE), Zircon semantics:
rights per op, range errors, any byte alignment, only committed pages the VMO reads (its own, an
ancestor's, a slice parent's) are walked, nothing is committed, data is unchanged.
The C routine (native/server/rxcache.c) is also tested directly on a memfd."""

from __future__ import annotations

import os
import time

from rxkernel.native import lib
from rxkernel.proto import (
    RX_ERR_ACCESS_DENIED,
    RX_ERR_INVALID_ARGS,
    RX_ERR_OUT_OF_RANGE,
    RX_INFO_VMO,
    RX_RIGHT_DUPLICATE,
    RX_RIGHT_INSPECT,
    RX_RIGHT_READ,
    RX_RIGHT_WRITE,
    RX_VMO_CHILD_SLICE,
    RX_VMO_CHILD_SNAPSHOT,
    RX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE,
    RX_VMO_OP_CACHE_CLEAN,
    RX_VMO_OP_CACHE_CLEAN_INVALIDATE,
    RX_VMO_OP_CACHE_INVALIDATE,
    RX_VMO_OP_CACHE_SYNC,
    RX_VMO_OP_COMMIT,
    RxError,
)
from rxtest import CLIENT_TIMEOUT, QUICK_TIMEOUT, Rxd, read_line

P = 4096
CACHE_OPS = (RX_VMO_OP_CACHE_SYNC, RX_VMO_OP_CACHE_INVALIDATE, RX_VMO_OP_CACHE_CLEAN, RX_VMO_OP_CACHE_CLEAN_INVALIDATE)
# Ops that walk lines on this CPU (x86: SYNC is one CPUID and INVALIDATE nothing, as in Zircon).
WALKS = {op: lib.rx_cache_insn(op) not in (0, 4) for op in CACHE_OPS}


def _status(fn: object, *args: object) -> int:
    try:
        fn(*args)  # type: ignore[operator]
    except RxError as e:
        return e.status
    return 0


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_native_cache_op_on_memfd() -> None:
    import platform

    if platform.machine() == "x86_64":
        assert lib.rx_cache_insn(RX_VMO_OP_CACHE_SYNC) == 4  # CPUID, as Zircon's x86 sync
        assert lib.rx_cache_insn(RX_VMO_OP_CACHE_INVALIDATE) == 0  # nothing, as Zircon on x86
        assert lib.rx_cache_insn(RX_VMO_OP_CACHE_CLEAN) in (1, 2, 3)
        assert lib.rx_cache_insn(RX_VMO_OP_CACHE_CLEAN_INVALIDATE) in (1, 2)
    assert lib.rx_cache_insn(5) == -22 and lib.rx_cache_line_size() in (32, 64, 128)
    fd = os.memfd_create("cache-test")
    try:
        os.ftruncate(fd, 1 << 30)
        data = os.urandom(3 * P)
        os.pwrite(fd, data, 10 * P)
        os.pwrite(fd, b"z", 100 * P + 7)
        blocks = os.fstat(fd).st_blocks
        for op in CACHE_OPS:
            t = time.perf_counter()
            n = lib.rx_cache_op(fd, 0, 1 << 30, op)  # 1 GiB, all holes but 4 pages
            assert time.perf_counter() - t < 1.0
            assert n == (4 if WALKS[op] else 0), (op, n)
            # any alignment: the pages the byte range overlaps, and only resident ones
            assert lib.rx_cache_op(fd, 11 * P - 1, 2, op) == (2 if WALKS[op] else 0)
            assert lib.rx_cache_op(fd, 12 * P + 5, 10 * P, op) == (1 if WALKS[op] else 0)
            assert lib.rx_cache_op(fd, 0, 10 * P, op) == 0
            assert lib.rx_cache_op(fd, 10 * P, 0, op) == 0
        assert os.fstat(fd).st_blocks == blocks, "a cache op allocated memory"
        assert os.pread(fd, 3 * P, 10 * P) == data and os.pread(fd, 1, 100 * P + 7) == b"z"
        assert lib.rx_cache_op(fd, 0, P, 5) == -22 and lib.rx_cache_op(fd, 0, P, 10) == -22
        assert lib.rx_cache_op(fd, 2**63, 2**63, RX_VMO_OP_CACHE_CLEAN) == -22
        assert lib.rx_cache_op(-1, 0, P, RX_VMO_OP_CACHE_CLEAN) == -9  # EBADF
    finally:
        os.close(fd)


def test_rights_size_and_range_errors(rxd: Rxd) -> None:
    vmo = rxd.call("rx_vmo_create", 16 * P, 0)
    rxd.call("rx_vmo_write", vmo, 0, b"x" * (16 * P))
    ro = rxd.call("rx_handle_duplicate", vmo, RX_RIGHT_READ | RX_RIGHT_INSPECT)
    wo = rxd.call("rx_handle_duplicate", vmo, RX_RIGHT_WRITE | RX_RIGHT_INSPECT)
    none = rxd.call("rx_handle_duplicate", vmo, RX_RIGHT_DUPLICATE)

    def op(handle: int, which: int, offset: int = 0, size: int = P) -> None:
        rxd.call("rx_vmo_op_range", handle, which, offset, size)

    # zx_vmo_op_range RIGHTS: SYNC, CLEAN, CLEAN_INVALIDATE need READ; INVALIDATE needs WRITE.
    for o in (RX_VMO_OP_CACHE_SYNC, RX_VMO_OP_CACHE_CLEAN, RX_VMO_OP_CACHE_CLEAN_INVALIDATE):
        assert _status(op, ro, o) == 0
        assert _status(op, wo, o) == RX_ERR_ACCESS_DENIED
        assert _status(op, none, o) == RX_ERR_ACCESS_DENIED
    assert _status(op, ro, RX_VMO_OP_CACHE_INVALIDATE) == RX_ERR_ACCESS_DENIED
    assert _status(op, wo, RX_VMO_OP_CACHE_INVALIDATE) == 0
    assert _status(op, ro, RX_VMO_OP_COMMIT) == RX_ERR_ACCESS_DENIED  # unchanged: COMMIT needs WRITE
    for o in CACHE_OPS:
        assert _status(op, vmo, o, 0, 0) == RX_ERR_INVALID_ARGS  # size 0 is an error for cache ops
        assert _status(op, vmo, o, 16 * P, 1) == RX_ERR_OUT_OF_RANGE
        assert _status(op, vmo, o, 15 * P, P + 1) == RX_ERR_OUT_OF_RANGE
        assert _status(op, vmo, o, 2**64 - P, 2 * P) == RX_ERR_OUT_OF_RANGE  # wraps
        assert _status(op, vmo, o, 5, 3) == 0  # any byte alignment
        assert _status(op, vmo, o, 15 * P + 4095, 1) == 0  # the very last byte
    # rights are checked before the size (Zircon's dispatcher first, then CacheOp)
    assert _status(op, wo, RX_VMO_OP_CACHE_CLEAN, 0, 0) == RX_ERR_ACCESS_DENIED
    assert _status(op, vmo, 5, 0, P) == RX_ERR_INVALID_ARGS  # an unknown op
    assert rxd.call("rx_vmo_read", vmo, 0, 16 * P) == b"x" * (16 * P)


def test_data_written_in_another_process_survives_and_counter_is_exact(rxd: Rxd) -> None:
    # A client writes through its mapping (8 MiB, so ops run in a worker thread, plus scattered
    # pages); every op leaves the bytes alone and cache_op_pages grows by exactly the pages walked.
    out = rxd.run(
        """
import rxkernel.client as rx, hashlib, sys
size = 64 << 20
vmo = rx.rx_vmo_create(size)
addr = rx.rx_vmar_map(vmo, 0, size, rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE)
view = rx.rx_view(addr, size)
pattern = bytes(range(256)) * 16
for page in list(range(2048)) + [4096, 4097, 9000, 16383]:
    view[page * 4096:(page + 1) * 4096] = pattern
committed = rx.rx_object_get_info(vmo, rx.RX_INFO_VMO)["committed_bytes"]
digest = hashlib.sha256(view).hexdigest()
system = rx.rx_system_handle()
kmem = lambda: rx.rx_object_get_info(system, rx.RX_INFO_KMEM_STATS)
for op in (6, 7, 8, 9):
    before = kmem()["cache_op_pages"]
    rx.rx_vmo_op_range(vmo, op, 0, size)
    whole = kmem()["cache_op_pages"] - before
    rx.rx_vmo_op_range(vmo, op, 4096 * 4096 + 4000, 200)  # straddles pages 4096 and 4097
    straddle = kmem()["cache_op_pages"] - before - whole
    rx.rx_vmo_op_range(vmo, op, 20 << 20, 8 << 20)  # nothing committed there
    empty = kmem()["cache_op_pages"] - before - whole - straddle
    assert hashlib.sha256(view).hexdigest() == digest, op
    assert rx.rx_vmo_read(vmo, 9000 * 4096, 4096) == pattern
    assert rx.rx_object_get_info(vmo, rx.RX_INFO_VMO)["committed_bytes"] == committed
    print(op, whole, straddle, empty)
"""
    )
    counts = {int(op): (int(w), int(s), int(e)) for op, w, s, e in (line.split() for line in out.stdout.splitlines())}
    for op in CACHE_OPS:
        assert counts[op] == ((2052, 2, 0) if WALKS[op] else (0, 0, 0)), (op, counts[op])


def test_uncommitted_gigabyte_costs_nothing(rxd: Rxd) -> None:
    vmo = rxd.call("rx_vmo_create", 1 << 30, 0)
    rxd.call("rx_vmo_write", vmo, 512 << 20, b"one page")
    before, rss = rxd.kmem(), _rss_kib(rxd.proc.pid)
    t = time.perf_counter()
    for op in CACHE_OPS:
        rxd.call("rx_vmo_op_range", vmo, op, 0, 1 << 30)
    elapsed = time.perf_counter() - t
    after = rxd.kmem()
    assert elapsed < 0.5, elapsed  # resolution sees one committed run; holes are never mapped
    assert after["committed_bytes"] == before["committed_bytes"] == 4096
    assert rxd.call("rx_object_get_info", vmo, RX_INFO_VMO)["committed_bytes"] == 4096
    assert after["cache_op_pages"] - before["cache_op_pages"] == sum(WALKS.values())
    assert _rss_kib(rxd.proc.pid) - rss < 1024, "a cache op grew rxd's memory"


def test_clones_and_slices_walk_the_pages_they_read_and_commit_nothing(rxd: Rxd) -> None:
    walk = RX_VMO_OP_CACHE_CLEAN_INVALIDATE
    assert WALKS[walk]
    parent = rxd.call("rx_vmo_create", 32 * P, 0)
    rxd.call("rx_vmo_write", parent, 0, b"p" * (8 * P))  # parent pages 0..7
    committed = rxd.kmem()["committed_bytes"]

    def walked(handle: int, offset: int = 0, size: int = 32 * P) -> int:
        before = rxd.kmem()["cache_op_pages"]
        rxd.call("rx_vmo_op_range", handle, walk, offset, size)
        return int(rxd.kmem()["cache_op_pages"] - before)

    snap = rxd.call("rx_vmo_create_child", parent, RX_VMO_CHILD_SNAPSHOT, 0, 32 * P)
    alow = rxd.call("rx_vmo_create_child", parent, RX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE, 4 * P, 8 * P)
    assert walked(snap) == 8, "a snapshot walks the ancestor's pages it reads"
    assert walked(alow, 0, 8 * P) == 4  # reads parent pages 4..11, of which 4..7 exist
    assert walked(parent) == 8
    for op in CACHE_OPS:
        rxd.call("rx_vmo_op_range", snap, op, 0, 32 * P)
        rxd.call("rx_vmo_op_range", alow, op, 0, 8 * P)
    def info(handle: int) -> dict[str, int]:
        result: dict[str, int] = rxd.call("rx_object_get_info", handle, RX_INFO_VMO)
        return result

    assert info(snap)["committed_bytes"] == 0 and info(alow)["committed_bytes"] == 0
    assert rxd.kmem()["committed_bytes"] == committed, "cache ops on clones committed something"
    # The snapshot writes two pages of its own (one over a parent page, one past them): it then
    # walks 7 of the ancestor's pages and 2 of its own.
    rxd.call("rx_vmo_write", snap, 3 * P, b"s" * P)
    rxd.call("rx_vmo_write", snap, 20 * P, b"s" * P)
    assert walked(snap) == 9
    assert rxd.call("rx_vmo_read", snap, 2 * P, 2 * P) == b"p" * P + b"s" * P
    assert rxd.call("rx_vmo_read", parent, 3 * P, P) == b"p" * P
    # A slice walks its parent's pages within its window, at its own offsets.
    base = rxd.call("rx_vmo_create", 32 * P, 0)
    rxd.call("rx_vmo_write", base, 6 * P, b"b" * (4 * P))  # pages 6..9
    sl = rxd.call("rx_vmo_create_child", base, RX_VMO_CHILD_SLICE, 8 * P, 8 * P)
    assert walked(sl, 0, 8 * P) == 2  # base pages 8, 9
    assert walked(sl, P + 100, 10) == 1  # base page 9 only
    assert walked(sl, 2 * P, 6 * P) == 0
    assert info(sl)["committed_bytes"] == 0


def test_large_op_does_not_stall_other_clients(rxd: Rxd) -> None:
    op = RX_VMO_OP_CACHE_CLEAN
    # 256 MiB committed and resident: the op runs in a worker thread, other clients are served.
    vmo = rxd.call("rx_vmo_create", 256 << 20, 0)
    rxd.call("rx_vmo_op_range", vmo, RX_VMO_OP_COMMIT, 0, 256 << 20)  # allocates (fallocate)
    proc = rxd.spawn(
        f"""
import rxkernel.client as rx, sys
h = rx.rx_handle_import(sys.argv[1])
print("go", flush=True)
for _ in range(20):
    rx.rx_vmo_op_range(h, {op}, 0, 256 << 20)
print("done", flush=True)
""",
        rxd.call("rx_handle_export", vmo, RX_RIGHT_READ),
    )
    read_line(proc, expect="go")
    worst = 0.0
    deadline = time.monotonic() + CLIENT_TIMEOUT
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the cache ops did not end within {CLIENT_TIMEOUT} s: {proc.communicate(timeout=QUICK_TIMEOUT)}")
        t = time.perf_counter()
        rxd.call("rx_vmo_get_size", vmo)
        worst = max(worst, time.perf_counter() - t)
    out, err = proc.communicate(timeout=QUICK_TIMEOUT)
    assert proc.returncode == 0 and "done" in out, err
    assert worst < 0.05, f"a request waited {worst * 1e3:.0f} ms behind a cache op"
