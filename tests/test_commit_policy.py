"""Commit policies: RX_VMO_COMMIT_EXPLICIT (faults never commit; syscalls do)."""

from __future__ import annotations

import signal

import pytest

from rxkernel.proto import (
    PAGE_SIZE,
    RX_ERR_INVALID_ARGS,
    RX_INFO_VMO,
    RX_INFO_VMO_COMMIT_EXPLICIT,
    RX_VMO_COMMIT_EAGER,
    RX_VMO_COMMIT_EXPLICIT,
    RxError,
)
from rxtest import Rxd

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
