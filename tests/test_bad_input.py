"""Every kind of bad input gets a clear RxError (or, for a broken stream, that one connection is
closed), and rxd goes on serving everyone else."""

from __future__ import annotations

import socket

import msgpack
import pytest

from rxkernel.proto import (
    CHANNEL_CONTROL,
    CHANNEL_FAULT,
    CHANNEL_THREAD,
    PAGE_SIZE,
    RX_ERR_INVALID_ARGS,
    RX_ERR_NOT_SUPPORTED,
    RX_INFO_KMEM_STATS,
    RX_INFO_VMO,
    SYSCALL_NUMBERS,
    RX_RIGHT_DUPLICATE,
    RX_RIGHT_INSPECT,
    RX_RIGHT_MAP,
    RX_RIGHT_READ,
    RX_RIGHT_SAME_RIGHTS,
    RX_RIGHT_WRITE,
    RX_VM_PERM_READ,
    RX_VM_PERM_WRITE,
    RX_VMO_CHILD_SNAPSHOT,
    RX_VMO_OP_COMMIT,
    RX_VM_SPECIFIC,
    RxError,
    status_name,
)
from rxtest import RawClient, Rxd

RW = RX_VM_PERM_READ | RX_VM_PERM_WRITE
U64_MAX = (1 << 64) - 1


def expect(status: str, fn: object, *args: object) -> None:
    with pytest.raises(RxError) as e:
        fn(*args)  # type: ignore[operator]
    assert e.value.name == status, e.value


def still_serving(rxd: Rxd) -> None:
    other = RawClient(rxd.socket)
    h = other.call("rx_vmo_create", 4096, 0)
    assert other.call("rx_vmo_get_size", h) == 4096
    other.close()


@pytest.mark.parametrize(
    ("number", "args", "status"),
    [
        (9999, [], "RX_ERR_BAD_SYSCALL"),
        (10, [], "RX_ERR_INVALID_ARGS"),
        (10, [4096, 0, 1], "RX_ERR_INVALID_ARGS"),
        (10, ["big", 0], "RX_ERR_INVALID_ARGS"),
        (10, [-4096, 0], "RX_ERR_INVALID_ARGS"),
        (10, [4096.0, 0], "RX_ERR_INVALID_ARGS"),  # a float
        (12, [3, 0, 17], "RX_ERR_INVALID_ARGS"),
        (50, [4096, 1 << 32, 0, 0], "RX_ERR_INVALID_ARGS"),  # expected is a u32
        (50, [4096, 0, 1 << 63, 0], "RX_ERR_INVALID_ARGS"),  # deadline is an i64
        (51, [4096, -1], "RX_ERR_INVALID_ARGS"),
    ],
)
def test_bad_syscall_shapes(rxd: Rxd, number: int, args: list[object], status: str) -> None:
    c = RawClient(rxd.socket)
    c.send_raw(msgpack.packb([1, number, *args]))
    reply = msgpack.unpackb(c.recv_raw())
    assert reply[0] == 1 and status_name(reply[1]) == status and reply[2], reply
    c.close()
    still_serving(rxd)


def test_frame_over_the_limit_closes_that_connection(rxd: Rxd) -> None:
    c = RawClient(rxd.socket)
    huge = msgpack.packb([1, 12, 3, 0, b"x" * (9 << 20)])  # over the 8 MiB frame limit
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        c.send_raw(huge)
        c.recv_raw()
        c.send_raw(b"\x90" * 1000)
    still_serving(rxd)


@pytest.mark.parametrize("payload", [b"\xc1\xc1\xc1", b"GET / HTTP/1.1\r\n\r\n", msgpack.packb("a string")])
def test_garbage_closes_that_connection(rxd: Rxd, payload: bytes) -> None:
    c = RawClient(rxd.socket)
    c.send_raw(payload)
    assert c.recv_raw() == b""
    still_serving(rxd)


# Maps whose keys are arrays or maps (msgpack allows them; Python cannot hash them), nested
# deep, and a map as a frame: each must be a broken stream, logged as the client's doing.
UNHASHABLE_KEYS = [b"\x81\x91\x01\x02", b"\x81\x81\x01\x02\x03", b"\x91\x81\x91\x01\x02", b"\x81\x01\x02"]


@pytest.mark.parametrize("payload", UNHASHABLE_KEYS)
@pytest.mark.parametrize("when", ["before the hello", "after the hello", "on a fault channel", "on a control channel"])
def test_unhashable_map_keys_are_a_broken_stream_not_an_rxd_bug(rxd: Rxd, payload: bytes, when: str) -> None:
    if when == "before the hello":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(20)
        sock.connect(rxd.socket)
    else:
        c = RawClient(rxd.socket)
        kind = {"on a fault channel": CHANNEL_FAULT, "on a control channel": CHANNEL_CONTROL}.get(when)
        sock = c.sock if kind is None else c.side_channel(kind)
    sock.sendall(payload)
    assert sock.recv(100) == b""
    sock.close()
    still_serving(rxd)
    log = rxd.log_text()
    assert "broken stream" in log and "inside rxd" not in log and "Traceback" not in log, log[-2000:]


def test_garbage_instead_of_hello_and_truncated_frames(rxd: Rxd) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(rxd.socket)
    s.sendall(b"\x00\x01garbage")
    s.settimeout(20)
    assert s.recv(100) == b""
    s.close()
    c = RawClient(rxd.socket)
    c.send_raw(msgpack.packb([1, 10, 4096, 0])[:-1])  # a truncated frame, then disconnect
    c.close()
    still_serving(rxd)
    rxd.wait_idle()


def test_bad_handles(rxd: Rxd) -> None:
    a, b = RawClient(rxd.socket), RawClient(rxd.socket)
    h = a.call("rx_vmo_create", 4096, 0)
    expect("RX_ERR_BAD_HANDLE", a.call, "rx_vmo_get_size", 0)
    expect("RX_ERR_BAD_HANDLE", b.call, "rx_vmo_get_size", h)  # another process's value
    expect("RX_ERR_BAD_HANDLE", b.call, "rx_handle_close", h)
    a.call("rx_handle_close", h)
    expect("RX_ERR_BAD_HANDLE", a.call, "rx_vmo_get_size", h)  # closed
    expect("RX_ERR_BAD_HANDLE", a.call, "rx_handle_close", h)
    expect("RX_ERR_WRONG_TYPE", a.call, "rx_vmo_get_size", a.call("rx_process_self"))
    a.close()
    b.close()


def test_ranges_and_overflow(rxd: Rxd) -> None:
    c = RawClient(rxd.socket)
    h = c.call("rx_vmo_create", 8192, 0)
    expect("RX_ERR_OUT_OF_RANGE", c.call, "rx_vmo_read", h, U64_MAX, 2)
    expect("RX_ERR_OUT_OF_RANGE", c.call, "rx_vmo_read", h, 8192, 1)
    expect("RX_ERR_OUT_OF_RANGE", c.call, "rx_vmo_write", h, 8190, b"xyz")
    expect("RX_ERR_OUT_OF_RANGE", c.call, "rx_vmo_op_range", h, RX_VMO_OP_COMMIT, U64_MAX - 10, 100)
    expect("RX_ERR_OUT_OF_RANGE", c.call, "rx_vmo_create", U64_MAX, 0)
    expect("RX_ERR_INVALID_ARGS", c.call, "rx_vmo_create", 4096, 1 << 5)  # unknown option
    expect("RX_ERR_INVALID_ARGS", c.call, "rx_vmo_op_range", h, 77, 0, 4096)  # unknown op
    expect("RX_ERR_ACCESS_DENIED", c.call, "rx_vmo_set_size", h, 4096)  # no RESIZE right: not resizable
    r = c.call("rx_vmo_create", 4096, 1 << 1)
    expect("RX_ERR_OUT_OF_RANGE", c.call, "rx_vmo_set_size", r, 1 << 50)
    assert c.call("rx_vmo_get_size", h) == 8192
    c.close()


def test_bad_map_arguments(rxd: Rxd) -> None:
    # The raw client has no control channel, so arguments are checked before that is; use a
    # real client for the rights checks.
    c = RawClient(rxd.socket)
    h = c.call("rx_vmo_create", 8192, 0)
    addr = 0x7F0000000000
    expect("RX_ERR_INVALID_ARGS", c.call, "rx_vmar_map", h, 100, 4096, RW, 0, addr)  # unaligned offset
    expect("RX_ERR_INVALID_ARGS", c.call, "rx_vmar_map", h, 0, 4000, RW, 0, addr)  # unaligned length
    expect("RX_ERR_INVALID_ARGS", c.call, "rx_vmar_map", h, 0, 4096, RW, 0, addr + 1)  # unaligned address
    expect("RX_ERR_INVALID_ARGS", c.call, "rx_vmar_map", h, 0, 0, RW, 0, addr)
    expect("RX_ERR_INVALID_ARGS", c.call, "rx_vmar_map", h, 0, 4096, RX_VM_PERM_WRITE, 0, addr)  # write w/o read
    expect("RX_ERR_INVALID_ARGS", c.call, "rx_vmar_map", h, 0, 4096, RW, 1 << 3, addr)  # unknown option
    expect("RX_ERR_OUT_OF_RANGE", c.call, "rx_vmar_map", h, U64_MAX + 1 - 4096, 8192, RW, 0, addr)  # overflows
    expect("RX_ERR_OUT_OF_RANGE", c.call, "rx_vmar_map", h, 0, 3 * PAGE_SIZE, RW, 0, addr)  # past the end
    ro = c.call("rx_handle_duplicate", h, RX_RIGHT_READ | RX_RIGHT_MAP | RX_RIGHT_DUPLICATE)
    nomap = c.call("rx_handle_duplicate", h, RX_RIGHT_READ | RX_RIGHT_WRITE)
    expect("RX_ERR_ACCESS_DENIED", c.call, "rx_vmar_map", ro, 0, 4096, RW, 0, addr)
    expect("RX_ERR_ACCESS_DENIED", c.call, "rx_vmar_map", nomap, 0, 4096, RX_VM_PERM_READ, 0, addr)
    expect("RX_ERR_ACCESS_DENIED", c.call, "rx_vmo_write", ro, 0, b"x")
    expect("RX_ERR_INVALID_ARGS", c.call, "rx_handle_duplicate", ro, RX_RIGHT_WRITE)  # rights only shrink
    expect("RX_ERR_NOT_FOUND", c.call, "rx_vmar_unmap", addr, 4096)
    expect("RX_ERR_INVALID_ARGS", c.call, "rx_vmar_unmap", addr + 5, 4096)
    c.close()


def test_tokens_are_one_time_and_unforgeable(rxd: Rxd) -> None:
    a, b = RawClient(rxd.socket), RawClient(rxd.socket)
    h = a.call("rx_vmo_create", 4096, 0)
    token = a.call("rx_handle_export", h, RX_RIGHT_READ | RX_RIGHT_MAP)
    assert len(token) == 32
    h2 = b.call("rx_handle_import", token)
    assert b.call("rx_vmo_get_size", h2) == 4096
    expect("RX_ERR_ACCESS_DENIED", b.call, "rx_vmo_write", h2, 0, b"x")
    expect("RX_ERR_NOT_FOUND", b.call, "rx_handle_import", token)  # spent
    expect("RX_ERR_NOT_FOUND", b.call, "rx_handle_import", "0" * 32)  # forged
    expect("RX_ERR_INVALID_ARGS", a.call, "rx_handle_export", h, 1 << 30)  # more rights than held
    noxfer = a.call("rx_handle_duplicate", h, RX_RIGHT_READ | RX_RIGHT_MAP)
    expect("RX_ERR_ACCESS_DENIED", a.call, "rx_handle_export", noxfer, RX_RIGHT_SAME_RIGHTS)
    # an exporter's unclaimed tokens die with it
    token2 = a.call("rx_handle_export", h, RX_RIGHT_SAME_RIGHTS)
    a.close()
    rxd.wait_for(lambda: rxd.kmem()["num_processes"] == 2, "the exporter to be gone")
    expect("RX_ERR_NOT_FOUND", b.call, "rx_handle_import", token2)
    assert rxd.kmem()["export_tokens"] == 0
    b.close()


def test_bad_children_and_fork_tickets(rxd: Rxd) -> None:
    a, b = RawClient(rxd.socket), RawClient(rxd.socket)
    h = a.call("rx_vmo_create", 4096, 0)
    me = a.call("rx_process_self")
    expect("RX_ERR_BAD_HANDLE", a.call, "rx_vmo_create_child", 0x1234567, RX_VMO_CHILD_SNAPSHOT, 0, 4096)
    expect("RX_ERR_WRONG_TYPE", a.call, "rx_vmo_create_child", me, RX_VMO_CHILD_SNAPSHOT, 0, 4096)
    expect("RX_ERR_OUT_OF_RANGE", a.call, "rx_vmo_create_child", h, RX_VMO_CHILD_SNAPSHOT, 4096, U64_MAX - 4096)
    expect("RX_ERR_OUT_OF_RANGE", a.call, "rx_vmo_create_child", h, RX_VMO_CHILD_SNAPSHOT, 0, 1 << 50)
    # A raw client has no control channel, so it maps nothing; its fork ticket is empty but real.
    ticket = a.call("rx_fork_prepare")
    expect("RX_ERR_NOT_FOUND", b.call, "rx_fork_claim", "0" * 32)  # forged
    assert b.call("rx_fork_claim", ticket) == []
    expect("RX_ERR_NOT_FOUND", b.call, "rx_fork_claim", ticket)  # spent
    b.call("rx_fork_cancel", ticket)  # claimed already: nothing to free, no error
    b.call("rx_fork_cancel", "nonsense")
    # RX_VM_SPECIFIC at an address rxd was told nothing about is just a map there.
    expect("RX_ERR_BAD_STATE", a.call, "rx_vmar_map", h, 0, 4096, RW, RX_VM_SPECIFIC, 0x7F0000000000)
    a.close()
    b.close()
    still_serving(rxd)


def test_thread_channel_serves_futex_calls_only_and_waits_watch_it(rxd: Rxd) -> None:
    c = RawClient(rxd.socket)
    thread = c.side_channel(CHANNEL_THREAD)
    # no mapping at this address: a clear error, on the thread channel
    thread.sendall(msgpack.packb([1, SYSCALL_NUMBERS["rx_futex_wake"], 0x10000, 1]))
    reply = msgpack.unpackb(thread.recv(1 << 16))
    assert reply[:2] == [1, RX_ERR_INVALID_ARGS], reply
    thread.sendall(msgpack.packb([2, SYSCALL_NUMBERS["rx_vmo_create"], 4096, 0]))
    reply = msgpack.unpackb(thread.recv(1 << 16))
    assert reply[:2] == [2, RX_ERR_NOT_SUPPORTED], reply
    # a waiter that speaks out of turn loses its channel (and its wait), nothing else
    control = c.side_channel(CHANNEL_CONTROL)  # mapping needs one (nothing will arrive on it)
    vmo = c.call("rx_vmo_create", 4096, 0)
    addr = 0x7E0000000000
    c.call("rx_vmar_map", vmo, 0, 4096, RW, RX_VM_SPECIFIC, addr)
    thread.sendall(msgpack.packb([3, SYSCALL_NUMBERS["rx_futex_wait"], addr, 0, (1 << 63) - 1, 0]))
    rxd.wait_for(lambda: rxd.kmem()["futex_waiters"] == 1, "the wait to start")
    thread.sendall(b"\x90")
    rxd.wait_for(lambda: rxd.kmem()["futex_waiters"] == 0, "the waiter to be dropped")
    try:  # rxd closed it with our byte unread: EOF or a reset
        assert thread.recv(1 << 16) == b"", "rxd closes a thread channel that breaks the protocol"
    except ConnectionResetError:
        pass
    assert c.call("rx_vmo_get_size", vmo) == 4096
    control.close()
    c.close()
    still_serving(rxd)


def test_errors_name_rights_options_and_topics(rxd: Rxd) -> None:
    c = RawClient(rxd.socket)
    vmo = c.call("rx_vmo_create", 4 * PAGE_SIZE, 0)
    ro = c.call("rx_handle_duplicate", vmo, RX_RIGHT_READ | RX_RIGHT_MAP | RX_RIGHT_INSPECT)
    with pytest.raises(RxError, match=r"lacks RX_RIGHT_WRITE$"):
        c.call("rx_vmo_write", ro, 0, b"x")
    with pytest.raises(RxError, match=r"lacks RX_RIGHT_DUPLICATE \| RX_RIGHT_TRANSFER$"):
        c.call("rx_handle_export", ro, RX_RIGHT_SAME_RIGHTS)
    with pytest.raises(RxError, match=r"VMO is not resizable \(created without RX_VMO_RESIZABLE\)"):
        c.call("rx_vmo_set_size", vmo, PAGE_SIZE)
    process = c.call("rx_process_self")
    with pytest.raises(RxError, match="RX_INFO_VMO needs a VMO handle, not a process"):
        c.call("rx_object_get_info", process, RX_INFO_VMO)
    with pytest.raises(RxError, match="RX_INFO_KMEM_STATS needs the system handle, not a VMO"):
        c.call("rx_object_get_info", vmo, RX_INFO_KMEM_STATS)
    with pytest.raises(RxError, match=r"unknown info topic 7 \(the topics are .*RX_INFO_VMO"):
        c.call("rx_object_get_info", vmo, 7)
    c.close()


def test_a_closed_vmo_and_a_refused_fork_say_so(rxd: Rxd) -> None:
    out = rxd.run("""
import rxkernel.client as rx
vmo = rx.Vmo(1 << 16)
vmo.close()
try:
    vmo.size
except rx.RxError as e:
    print("closed:", e.name, e)
parent = rx.Vmo(1 << 16)
child = parent.child(rx.RX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE)
m = child.map()
try:
    rx.fork()
except rx.RxError as e:
    print("fork:", e.name, e)
""").stdout
    assert "closed: RX_ERR_BAD_HANDLE" in out and "the Vmo is closed" in out and "0x0" not in out, out
    assert "fork: RX_ERR_NOT_SUPPORTED" in out and "rx.fork() cannot give the child a copy" in out, out
    assert "at-least-on-write child" in out, out
