"""Commit policies: RX_VMO_COMMIT_EXPLICIT (faults never commit; syscalls do), and the jobs'
overcommit modes (HEURISTIC, ALWAYS, NEVER: reservations that make faults never fail)."""

from __future__ import annotations

import signal

import pytest

from rxkernel.proto import (
    PAGE_SIZE,
    RX_ERR_INVALID_ARGS,
    RX_ERR_NO_MEMORY,
    RX_INFO_JOB,
    RX_INFO_VMO,
    RX_INFO_VMO_COMMIT_EXPLICIT,
    RX_OVERCOMMIT_ALWAYS,
    RX_OVERCOMMIT_NEVER,
    RX_PROP_JOB_COMMIT_MAX,
    RX_PROP_JOB_OVERCOMMIT,
    RX_RIGHT_SAME_RIGHTS,
    RX_VMO_CHILD_SNAPSHOT,
    RX_VMO_COMMIT_EAGER,
    RX_VMO_COMMIT_EXPLICIT,
    RX_VMO_OP_DECOMMIT,
    RX_VMO_RESIZABLE,
    RxError,
)
from rxtest import RawClient, Rxd, running_rxd

P = PAGE_SIZE
HEADER = "import rxkernel.client as rx, os, sys\nRW = rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE\nP = 4096\n"


def test_explicit_vmos_are_committed_by_syscalls_only(rxd: Rxd) -> None:
    out = rxd.run(HEADER + """
vmo = rx.rx_vmo_create(16 * P, rx.RX_VMO_COMMIT_EXPLICIT)
info = lambda: rx.rx_object_get_info(vmo, rx.RX_INFO_VMO)
assert info()["flags"] & rx.RX_INFO_VMO_COMMIT_EXPLICIT
addr = rx.rx_vmar_map(vmo, 0, 16 * P, RW)
view = rx.rx_view(addr, 16 * P)
assert bytes(view[:16 * P]) == bytes(16 * P) and info()["committed_bytes"] == 0   # reads see zeros, commit nothing
rx.rx_vmo_op_range(vmo, rx.RX_VMO_OP_COMMIT, 0, 4 * P)
view[0:4 * P] = b"c" * (4 * P)                       # committed pages: written through the mapping
rx.rx_vmo_write(vmo, 8 * P, b"w")                    # rx_vmo_write commits its page
view[8 * P + 1] = ord("x")
assert info()["committed_bytes"] == 5 * P, info()
print("ok", flush=True)
view[5 * P] = 1                                      # a write fault on an uncommitted page: refused
print("not reached", flush=True)
""", check=False)
    assert out.stdout.split() == ["ok"], (out.stdout, out.stderr)
    assert out.returncode == -signal.SIGBUS
    assert "rx: write fault at 0x" in out.stderr and "uncommitted page of an RX_VMO_COMMIT_EXPLICIT VMO" in out.stderr
    rxd.wait_idle()


def test_a_decommitted_or_sliced_explicit_page_is_refused_too(rxd: Rxd) -> None:
    out = rxd.run(HEADER + """
vmo = rx.rx_vmo_create(8 * P, rx.RX_VMO_COMMIT_EXPLICIT)
rx.rx_vmo_op_range(vmo, rx.RX_VMO_OP_COMMIT, 0, 8 * P)
window = rx.rx_vmo_create_child(vmo, rx.RX_VMO_CHILD_SLICE, 4 * P, 4 * P)
assert rx.rx_object_get_info(window, rx.RX_INFO_VMO)["flags"] & rx.RX_INFO_VMO_COMMIT_EXPLICIT
addr = rx.rx_vmar_map(window, 0, 4 * P, RW)
view = rx.rx_view(addr, 4 * P)
view[0] = 1                                           # committed through the parent: fine
rx.rx_vmo_op_range(vmo, rx.RX_VMO_OP_DECOMMIT, 5 * P, P)
print("ok", flush=True)
view[P] = 1                                           # slice page 1 = parent page 5, decommitted
""", check=False)
    assert out.stdout.split() == ["ok"] and out.returncode == -signal.SIGBUS, (out.stdout, out.stderr)
    assert "RX_VMO_COMMIT_EXPLICIT" in out.stderr


def test_a_snapshot_of_an_explicit_vmo_still_splits_on_write(rxd: Rxd) -> None:
    """Its pages were committed explicitly; after a snapshot they live in the shared node, and a
    write fault copies them as for any clone (rx.fork() snapshots every mapping this way)."""
    rxd.run(HEADER + """
vmo = rx.rx_vmo_create(4 * P, rx.RX_VMO_COMMIT_EXPLICIT)
addr = rx.rx_vmar_map(vmo, 0, 4 * P, RW)
view = rx.rx_view(addr, 4 * P)
rx.rx_vmo_op_range(vmo, rx.RX_VMO_OP_COMMIT, 0, 2 * P)
view[0:2 * P] = b"a" * (2 * P)
pid = rx.fork()
if pid == 0:
    view[0] = ord("k")                                   # the child's copy-on-write split
    os._exit(0 if bytes(view[0:2]) == b"ka" else 1)
_, status = os.waitpid(pid, 0)
assert status == 0, status
view[1] = ord("p")                                       # and the parent's
assert bytes(view[0:3]) == b"apa", bytes(view[0:3])
""")


def test_eager_and_explicit_exclude_each_other(rxd: Rxd) -> None:
    with pytest.raises(RxError) as e:
        rxd.call("rx_vmo_create", P, RX_VMO_COMMIT_EAGER | RX_VMO_COMMIT_EXPLICIT)
    assert e.value.status == RX_ERR_INVALID_ARGS and "choose one" in str(e.value)
    vmo = rxd.call("rx_vmo_create", P, RX_VMO_COMMIT_EXPLICIT)
    assert rxd.call("rx_object_get_info", vmo, RX_INFO_VMO)["flags"] & RX_INFO_VMO_COMMIT_EXPLICIT


# -- overcommit modes ------------------------------------------------------------------------------


def never_job(rxd: Rxd, limit_pages: int = 0) -> tuple[int, RawClient]:
    default = rxd.call("rx_job_default")
    job = rxd.call("rx_job_create", default, 0)
    rxd.call("rx_object_set_property", job, RX_PROP_JOB_OVERCOMMIT, RX_OVERCOMMIT_NEVER)
    if limit_pages:
        rxd.call("rx_object_set_property", job, RX_PROP_JOB_COMMIT_MAX, limit_pages * P)
    return job, RawClient(rxd.socket, job=rxd.call("rx_handle_export", job, RX_RIGHT_SAME_RIGHTS))


def reserved(client: RawClient | Rxd, handle: int, topic: int = RX_INFO_VMO) -> int:
    return int(client.call("rx_object_get_info", handle, topic)["reserved_bytes"]) // P


def test_never_reserves_at_creation_and_fills_the_reservation(rxd: Rxd) -> None:
    job, member = never_job(rxd, limit_pages=64)
    a = member.call("rx_vmo_create", 40 * P, 0)
    assert reserved(member, a) == 40 and reserved(rxd, job, RX_INFO_JOB) == 40 and rxd.kmem()["reserved_bytes"] == 40 * P
    with pytest.raises(RxError) as e:  # 40 promised + 30 > 64
        member.call("rx_vmo_create", 30 * P, 0)
    assert e.value.status == RX_ERR_NO_MEMORY and "reserving 30 pages" in str(e.value) and "reserved" in str(e.value)
    member.call("rx_vmo_write", a, 0, b"x" * (10 * P))  # fills the promise: charged moves up, reserved down
    assert reserved(member, a) == 30
    assert rxd.call("rx_object_get_info", job, RX_INFO_JOB)["charged_bytes"] == 10 * P
    member.call("rx_vmo_op_range", a, RX_VMO_OP_DECOMMIT, 0, 4 * P)  # freed pages go back to the promise
    assert reserved(member, a) == 34 and rxd.kmem()["committed_bytes"] == 6 * P
    small = member.call("rx_vmo_create", 20 * P, 0)  # 40 + 20 <= 64
    member.call("rx_handle_close", a)
    assert reserved(rxd, job, RX_INFO_JOB) == 20 and rxd.kmem()["reserved_bytes"] == 20 * P
    member.call("rx_handle_close", small)
    assert rxd.kmem()["reserved_bytes"] == 0 and rxd.kmem()["committed_bytes"] == 0
    member.close()


def test_a_never_vmo_is_never_refused_a_fault_whatever_the_others_do() -> None:
    """The promise: with 256 pages of budget, a 200-page NEVER VMO is reserved; a greedy client
    elsewhere then gets at most the other 56, and the NEVER client writes all 200 by faults."""
    with running_rxd(memory="1MiB") as rxd:
        job, member = never_job(rxd)
        token = member.call("rx_handle_export", member.call("rx_vmo_create", 200 * P, 0), RX_RIGHT_SAME_RIGHTS)
        greedy = rxd.call("rx_vmo_create", 256 * P, 0)
        for page in range(256):  # until the budget (less the promise) is spent
            try:
                rxd.call("rx_vmo_write", greedy, page * P, b"g")
            except RxError as e:
                assert e.status == RX_ERR_NO_MEMORY and "reserved" in str(e)
                break
        assert page == 56, page
        out = rxd.run(HEADER + """
vmo = rx.rx_handle_import(sys.argv[1])
addr = rx.rx_vmar_map(vmo, 0, 200 * P, RW)
view = rx.rx_view(addr, 200 * P)
for i in range(200):
    view[i * P] = 7
print(rx.rx_object_get_info(vmo, rx.RX_INFO_VMO)["reserved_bytes"], flush=True)
""", token)
        assert out.stdout.split() == ["0"], out
        assert rxd.kmem()["committed_bytes"] == 256 * P and rxd.kmem()["reserved_bytes"] == 0
        member.close()


def test_snapshots_in_a_never_job_promise_their_size_and_the_parents_growth(rxd: Rxd) -> None:
    job, member = never_job(rxd, limit_pages=48)
    parent = member.call("rx_vmo_create", 16 * P, 0)
    member.call("rx_vmo_write", parent, 0, b"p" * (10 * P))
    assert reserved(member, parent) == 6
    child = member.call("rx_vmo_create_child", parent, RX_VMO_CHILD_SNAPSHOT, 0, 16 * P)
    # the parent's 10 pages now belong to the shared node: writing them means copies, promised again
    assert reserved(member, parent) == 16 and reserved(member, child) == 16
    assert reserved(rxd, job, RX_INFO_JOB) == 32 and rxd.call("rx_object_get_info", job, RX_INFO_JOB)["charged_bytes"] == 10 * P
    with pytest.raises(RxError) as e:  # 10 charged + 32 reserved + 16 more (and the parent's growth) > 48
        member.call("rx_vmo_create_child", parent, RX_VMO_CHILD_SNAPSHOT, 0, 16 * P)
    assert e.value.status == RX_ERR_NO_MEMORY
    assert reserved(rxd, job, RX_INFO_JOB) == 32  # a refused snapshot promised nothing
    member.call("rx_vmo_write", child, 0, b"c" * (16 * P))  # copies and fresh pages: all promised
    assert reserved(member, child) == 0
    member.close()
    rxd.wait_idle()
    assert rxd.kmem()["reserved_bytes"] == 0


def test_heuristic_refuses_what_could_never_fit_and_always_does_not(rxd: Rxd) -> None:
    with pytest.raises(RxError) as e:
        rxd.call("rx_vmo_create", 2 << 30, 0)  # larger than the 1 GiB budget
    assert e.value.status == RX_ERR_NO_MEMORY and "could never fit" in str(e.value) and "RX_OVERCOMMIT_ALWAYS" in str(e.value)
    default = rxd.call("rx_job_default")
    relaxed = rxd.call("rx_job_create", default, 0)
    rxd.call("rx_object_set_property", relaxed, RX_PROP_JOB_OVERCOMMIT, RX_OVERCOMMIT_ALWAYS)
    below = rxd.call("rx_job_create", relaxed, 0)
    assert rxd.call("rx_object_get_property", below, RX_PROP_JOB_OVERCOMMIT) == RX_OVERCOMMIT_ALWAYS  # inherited
    member = RawClient(rxd.socket, job=rxd.call("rx_handle_export", below, RX_RIGHT_SAME_RIGHTS))
    huge = member.call("rx_vmo_create", 2 << 30, 0)
    assert member.call("rx_vmo_get_size", huge) == 2 << 30
    with pytest.raises(RxError) as e:
        rxd.call("rx_object_set_property", relaxed, RX_PROP_JOB_OVERCOMMIT, 3)
    assert e.value.status == RX_ERR_INVALID_ARGS and "RX_OVERCOMMIT_NEVER" in str(e.value)
    limited = rxd.call("rx_job_create", default, 0)
    rxd.call("rx_object_set_property", limited, RX_PROP_JOB_COMMIT_MAX, 16 * P)
    other = RawClient(rxd.socket, job=rxd.call("rx_handle_export", limited, RX_RIGHT_SAME_RIGHTS))
    other.call("rx_vmo_create", 17 * P, 0)  # a job's limit is not the heuristic's business (nor memcg's)
    member.close()
    other.close()


def test_a_never_vmo_that_grows_promises_the_new_pages(rxd: Rxd) -> None:
    job, member = never_job(rxd, limit_pages=32)
    vmo = member.call("rx_vmo_create", 8 * P, RX_VMO_RESIZABLE)
    member.call("rx_vmo_set_size", vmo, 24 * P)
    assert reserved(member, vmo) == 24
    with pytest.raises(RxError) as e:
        member.call("rx_vmo_set_size", vmo, 40 * P)
    assert e.value.status == RX_ERR_NO_MEMORY and member.call("rx_vmo_get_size", vmo) == 24 * P
    member.call("rx_vmo_set_size", vmo, 4 * P)
    assert reserved(member, vmo) == 4 and reserved(rxd, job, RX_INFO_JOB) == 4
    member.close()
