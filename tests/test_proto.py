"""proto/ without an event loop: framing, events, the syscall table, and what both sides export."""

from __future__ import annotations

import inspect
import types

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

import rxkernel.client as rx
import rxkernel.proto as p
from rxkernel.proto import (
    CHANNEL_CONTROL,
    CHANNEL_FAULT,
    CHANNEL_MAIN,
    CLOSED,
    NEED_DATA,
    Connection,
    ControlAck,
    ControlRequest,
    FaultOp,
    FaultReply,
    FaultRequest,
    Hello,
    HelloReply,
    LocalProtocolError,
    RemoteProtocolError,
    Reply,
    Request,
    Role,
    RxError,
)

TOKEN = bytes(range(16))


def pair(kind: int) -> tuple[Connection, Connection]:
    client, server = Connection(Role.CLIENT, kind=kind), Connection(Role.SERVER)
    server.receive_data(client.send(Hello(kind, None if kind == CHANNEL_MAIN else TOKEN)))
    assert isinstance(server.next_event(), Hello)
    client.receive_data(server.send(HelloReply(0, {"k": 1} if kind == CHANNEL_MAIN else None)))
    assert isinstance(client.next_event(), HelloReply)
    return client, server


def test_main_round_trip_byte_by_byte() -> None:
    client, server = pair(CHANNEL_MAIN)
    data = client.send(Request(7, 10, (4096, 0)))
    for i in range(len(data) - 1):
        server.receive_data(data[i : i + 1])
        assert server.next_event() is NEED_DATA
    server.receive_data(data[-1:])
    assert server.next_event() == Request(7, 10, (4096, 0))
    client.receive_data(server.send(Reply(7, 0, (0x1234,))))
    assert client.next_event() == Reply(7, 0, (0x1234,))


def test_several_frames_in_one_read() -> None:
    client, server = pair(CHANNEL_MAIN)
    server.receive_data(client.send(Request(1, 13, (3,))) + client.send(Request(2, 13, (3,))))
    assert [server.next_event(), server.next_event(), server.next_event()] == [
        Request(1, 13, (3,)),
        Request(2, 13, (3,)),
        NEED_DATA,
    ]


def test_fault_and_control_frames_are_flat_integer_arrays() -> None:
    client, server = pair(CHANNEL_FAULT)
    raw = client.send(FaultRequest(5, 0x7F0000001000, True))
    assert msgpack.unpackb(raw) == [5, 0x7F0000001000, 1]
    server.receive_data(raw)
    assert server.next_event() == FaultRequest(5, 0x7F0000001000, True)
    reply = FaultReply(5, 0, 3, (FaultOp(0x1000, 0x2000, 1, 3, 9, 0), FaultOp(0x3000, 0x1000, 0, 1)))
    raw = server.send(reply)
    assert msgpack.unpackb(raw) == [5, 0, 3, 0x1000, 0x2000, 1, 3, 9, 0, 0x3000, 0x1000, 0, 1, 0, 0]
    client.receive_data(raw)
    assert client.next_event() == reply

    client, server = pair(CHANNEL_CONTROL)
    req = ControlRequest(1, 1, 4, ((0x1000, 0x1000), (0x5000, 0x2000)))
    raw = server.send(req)
    assert msgpack.unpackb(raw) == [1, 1, 4, 0x1000, 0x1000, 0x5000, 0x2000]
    client.receive_data(raw)
    assert client.next_event() == req
    server.receive_data(client.send(ControlAck(1, 0)))
    assert server.next_event() == ControlAck(1, 0)


def test_clean_close_and_truncated_close() -> None:
    client, server = pair(CHANNEL_MAIN)
    server.receive_data(b"")
    assert server.next_event() is CLOSED
    client, server = pair(CHANNEL_MAIN)
    server.receive_data(client.send(Request(1, 13, (3,)))[:-1])
    assert server.next_event() is NEED_DATA
    server.receive_data(b"")
    with pytest.raises(RemoteProtocolError) as e:
        server.next_event()
    assert not e.value.local


def test_frame_over_the_limit_is_refused() -> None:
    server = Connection(Role.SERVER, max_buffer_size=1024)
    with pytest.raises(RemoteProtocolError, match="limit"):
        server.receive_data(msgpack.packb([1, 12, 3, 0, b"x" * 4096]))


@pytest.mark.parametrize(
    "frame",
    [
        b"\xc1",  # a reserved msgpack byte
        msgpack.packb(42),  # not an array
        msgpack.packb([0x5258, 99, 0, None]),  # unknown version
        msgpack.packb([1, 2, 3]),  # not a hello
        msgpack.packb([0x5258, 1, 7, None]),  # unknown channel kind
        msgpack.packb([0x5258, 1, 1, b"short"]),  # fault channel with a bad token
    ],
)
def test_garbage_before_hello_is_a_remote_error(frame: bytes) -> None:
    server = Connection(Role.SERVER)
    server.receive_data(frame)
    with pytest.raises(RemoteProtocolError):
        server.next_event()


def test_garbage_after_hello() -> None:
    client, server = pair(CHANNEL_FAULT)
    server.receive_data(msgpack.packb([1, "x", 0]))
    with pytest.raises(RemoteProtocolError):
        server.next_event()
    _, server = pair(CHANNEL_MAIN)
    server.receive_data(msgpack.packb({"a": 1}))
    with pytest.raises(RemoteProtocolError):
        server.next_event()


@pytest.mark.parametrize("frame", [b"\x81\x91\x01\x02", b"\x81\x81\x01\x02\x03", b"\x91\x81\x91\x01\x02"])
@pytest.mark.parametrize("kind", [None, CHANNEL_MAIN, CHANNEL_FAULT, CHANNEL_CONTROL])
@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT])
def test_maps_keyed_by_arrays_or_maps_are_a_remote_error(frame: bytes, kind: int | None, role: Role) -> None:
    """msgpack allows any key; Python cannot hash an array or a map. Whatever the bytes decode to
    (or fail to), the peer broke the stream: never a TypeError out of next_event."""
    if kind is None:  # before the hello
        conn = Connection(role, kind=CHANNEL_MAIN) if role is Role.CLIENT else Connection(role)
    else:
        client, server = pair(kind)
        conn = server if role is Role.SERVER else client
    conn.receive_data(frame)
    with pytest.raises(RemoteProtocolError) as e:
        conn.next_event()
    assert not e.value.local


@given(st.binary(max_size=64))
def test_any_bytes_give_an_event_need_data_or_a_remote_error(data: bytes) -> None:
    for kind in (CHANNEL_MAIN, CHANNEL_FAULT, CHANNEL_CONTROL):
        for role in (Role.SERVER, Role.CLIENT):
            client, server = pair(kind)
            conn = server if role is Role.SERVER else client
            conn.receive_data(data)
            try:
                for _ in range(len(data) + 1):
                    if conn.next_event() is NEED_DATA:
                        break
            except RemoteProtocolError:
                pass


def test_local_misuse_is_a_local_error() -> None:
    client, server = pair(CHANNEL_MAIN)
    with pytest.raises(LocalProtocolError):
        client.send(Reply(1, 0))  # a client does not send replies
    with pytest.raises(LocalProtocolError):
        server.send(FaultReply(1, 0, 0))  # not on a main channel
    with pytest.raises(LocalProtocolError):
        Connection(Role.CLIENT)
    fresh = Connection(Role.CLIENT, kind=CHANNEL_MAIN)
    with pytest.raises(LocalProtocolError):
        fresh.send(Request(1, 13, (3,)))  # before the hello


def test_events_validate_themselves() -> None:
    with pytest.raises(RxError):
        Hello(CHANNEL_FAULT, None)
    with pytest.raises(RxError):
        Reply(-1, 0)
    with pytest.raises(RxError):
        ControlRequest(1, 2, 0, ((1, 2),))  # PROTECT needs (addr, length, prot)


@pytest.mark.parametrize(
    ("number", "args", "status"),
    [
        (9999, [], p.RX_ERR_BAD_SYSCALL),
        ("x", [], p.RX_ERR_BAD_SYSCALL),
        (10, [4096], p.RX_ERR_INVALID_ARGS),  # too few
        (10, [4096, 0, 0], p.RX_ERR_INVALID_ARGS),  # too many
        (10, [-1, 0], p.RX_ERR_INVALID_ARGS),  # negative u64
        (10, [1 << 64, 0], p.RX_ERR_INVALID_ARGS),  # past u64
        (10, [4096, 1 << 32], p.RX_ERR_INVALID_ARGS),  # past u32
        (10, [True, 0], p.RX_ERR_INVALID_ARGS),  # a bool is not an int here
        (12, [3, 0, "text"], p.RX_ERR_INVALID_ARGS),  # bytes wanted
        (6, [b"bytes"], p.RX_ERR_INVALID_ARGS),  # str wanted
    ],
)
def test_check_args_rejects(number: object, args: list[object], status: int) -> None:
    with pytest.raises(RxError) as e:
        p.check_args(number, args)
    assert e.value.status == status
    assert e.value.name == p.status_name(status)


@given(st.integers(0, (1 << 64) - 1), st.integers(0, (1 << 32) - 1))
def test_check_args_accepts_the_whole_ranges(size: int, options: int) -> None:
    assert p.check_args(10, [size, options]).name == "rx_vmo_create"


@given(st.lists(st.integers(0, (1 << 64) - 1), max_size=20), st.integers(0, 1 << 40))
def test_fault_reply_round_trip_property(values: list[int], seq: int) -> None:
    ops = tuple(FaultOp(v, v, v % 2, 3, v, v) for v in values)
    client, server = pair(CHANNEL_FAULT)
    client.receive_data(server.send(FaultReply(seq, -4, seq, ops)))
    assert client.next_event() == FaultReply(seq, -4, seq, ops)


def test_status_names_are_zircons() -> None:
    assert p.RX_ERR_BAD_HANDLE == -11 and p.status_name(-11) == "RX_ERR_BAD_HANDLE"
    assert p.status_name(-999) == "RX_ERR_UNKNOWN(-999)"
    e = RxError(p.RX_ERR_ACCESS_DENIED, "no")
    assert isinstance(e, OSError) and e.name == "RX_ERR_ACCESS_DENIED" and e.status == -30


def test_rights_only_shrink() -> None:
    assert p.reduce_rights(p.RX_RIGHT_READ | p.RX_RIGHT_MAP, p.RX_RIGHT_SAME_RIGHTS) == p.RX_RIGHT_READ | p.RX_RIGHT_MAP
    assert p.reduce_rights(p.RX_RIGHT_READ | p.RX_RIGHT_MAP, p.RX_RIGHT_READ) == p.RX_RIGHT_READ
    assert p.reduce_rights(p.RX_RIGHT_READ, p.RX_RIGHT_WRITE) is None


def test_every_syscall_has_a_server_handler_and_a_client_stub() -> None:
    from rxkernel.server.syscalls import HANDLERS

    assert set(HANDLERS) == set(p.BY_NAME)
    for call in p.SYSCALLS:
        handler_params = list(inspect.signature(HANDLERS[call.name]).parameters)[1:]
        assert len(handler_params) == len(call.args), call.name
        assert hasattr(rx, call.name), f"no stub for {call.name}"
    assert len({s.number for s in p.SYSCALLS}) == len(p.SYSCALLS)


def test_public_surfaces_are_reexported_explicitly() -> None:
    for module in (p, rx):
        public = [n for n in dir(module) if not n.startswith("_")]
        for name in public:
            obj = getattr(module, name)
            origin = getattr(obj, "__module__", None)
            if isinstance(obj, (type, types.FunctionType)) and origin:
                assert origin.startswith("rxkernel."), (name, origin)
    for name in ("RX_VM_PERM_READ", "RX_INFO_KMEM_STATS", "RxError", "RX_RIGHT_MAP"):
        assert getattr(rx, name) is getattr(p, name)
