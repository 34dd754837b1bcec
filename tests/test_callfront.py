"""The call front end (rxcallfront.h, server/ipc/_callfront.py) and the client's C round trip
(rxcall.h): the C parts driven directly over socketpairs, then through a real rxd with real
client processes.

The C front end is deterministic without an event loop: bytes go into one end of a socketpair,
rx_cf_poll says what it made of them. The framing is checked against msgpack's own encoder on
random values, cut at random points (the scan resumes where it stopped).
"""

from __future__ import annotations

import array
import errno
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rxtest import RawClient, running_rxd

from rxkernel.native import ffi, lib
from rxkernel.proto import NEED_DATA, SYSCALL_NUMBERS, Reply, encode_request

REQUEST, CLOSED, HANDOFF = lib.RX_CF_REQUEST, lib.RX_CF_CLOSED, lib.RX_CF_HANDOFF


class Front:
    """One front end and the client ends of the channels it serves."""

    def __init__(self, max_frame: int = 1 << 20) -> None:
        self.counters = ffi.new("struct rx_cf_counters *")
        self.cf = ffi.gc(lib.rx_cf_new(max_frame, self.counters, ffi.NULL), lib.rx_cf_free)
        self.events = ffi.new("struct rx_cf_event[]", 64)
        self.socks: list[socket.socket] = []

    def channel(self) -> tuple[int, socket.socket]:
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        self.socks += [ours, theirs]
        cid = lib.rx_cf_add(self.cf, ours.fileno())
        assert cid > 0
        return cid, theirs

    def poll(self) -> list[tuple[int, int, int, bytes]]:
        """Every event until a poll finds nothing: (channel, kind, error, data)."""
        out: list[tuple[int, int, int, bytes]] = []
        for _ in range(100):
            n = lib.rx_cf_poll(self.cf, self.events, 64)
            if n == 0:
                return out
            for i in range(n):
                ev = self.events[i]
                data = bytes(ffi.buffer(ev.data, ev.len)) if ev.len else b""
                out.append((ev.channel, ev.kind, ev.error, data))
        raise AssertionError("the front end never ran out of events")

    def reply(self, cid: int, data: bytes, fds: list[int] | None = None) -> int:
        fds = fds or []
        return int(lib.rx_cf_reply(self.cf, cid, data, len(data), ffi.new("int[]", fds) if fds else ffi.NULL, len(fds)))

    def close(self) -> None:
        for s in self.socks:
            s.close()


@pytest.fixture
def front() -> Iterator[Front]:
    f = Front()
    yield f
    f.close()


def test_a_frame_that_comes_a_byte_at_a_time_is_handed_out_once_whole(front: Front) -> None:
    cid, client = front.channel()
    frame = msgpack.packb([1, 10, b"x" * 300, "text", {"k": [1, 2.5, None]}], use_bin_type=True)
    for b in frame[:-1]:
        client.send(bytes([b]))
        assert front.poll() == []
    client.send(frame[-1:])
    assert front.poll() == [(cid, REQUEST, 0, frame)]
    assert front.reply(cid, b"\x93\x01\x00\x01") == 0
    assert client.recv(16) == b"\x93\x01\x00\x01"


def test_pipelined_requests_are_handed_out_one_at_a_time_in_order(front: Front) -> None:
    cid, client = front.channel()
    frames = [msgpack.packb([i, 10, i * 7]) for i in range(1, 4)]
    client.send(b"".join(frames))
    for i, frame in enumerate(frames, 1):
        assert front.poll() == [(cid, REQUEST, 0, frame)]
        assert front.poll() == []  # nothing more until this one is answered
        assert front.reply(cid, msgpack.packb([i, 0])) == 0
    assert front.poll() == []
    assert front.counters.requests == 3 and front.counters.replies == 3


def test_channels_are_served_side_by_side_in_one_poll(front: Front) -> None:
    chans = [front.channel() for _ in range(5)]
    for i, (_, client) in enumerate(chans):
        client.send(msgpack.packb([i, 10]))
    got = front.poll()
    assert sorted(c for c, kind, _, _ in got if kind == REQUEST) == sorted(c for c, _ in chans)
    assert front.counters.max_batch == 5


def test_a_byte_msgpack_never_uses_hands_the_channel_back_with_what_was_read(front: Front) -> None:
    cid, client = front.channel()
    client.send(b"\x93\x01\xc1\x00")
    assert front.poll() == [(cid, HANDOFF, 0, b"\x93\x01\xc1\x00")]
    client.send(b"more")
    assert front.poll() == []  # no longer ours to read


def test_a_frame_over_the_limit_is_handed_back() -> None:
    f = Front(max_frame=1000)
    try:
        cid, client = f.channel()
        big = msgpack.packb([1, 11, b"y" * 5000], use_bin_type=True)
        client.send(big[:3000])
        events = f.poll()
        assert [(c, k) for c, k, _, _ in events] == [(cid, HANDOFF)] and big.startswith(events[0][3])
    finally:
        f.close()


def test_end_of_stream_closes_cleanly_or_hands_back_a_half_frame(front: Front) -> None:
    cid, client = front.channel()
    client.close()
    assert front.poll() == [(cid, CLOSED, 0, b"")]
    cid2, client2 = front.channel()
    client2.send(b"\x93\x01")
    client2.close()
    assert front.poll() == [(cid2, HANDOFF, 0, b"\x93\x01")]  # (proto words it: "stream ended inside a frame")


def test_an_end_behind_an_outstanding_request_is_seen_after_its_reply(front: Front) -> None:
    cid, client = front.channel()
    client.send(msgpack.packb([1, 10]))
    assert [k for _, k, _, _ in front.poll()] == [REQUEST]
    client.shutdown(socket.SHUT_WR)
    assert front.poll() == []
    assert front.reply(cid, msgpack.packb([1, 0])) == 0
    assert front.poll() == [(cid, CLOSED, 0, b"")]


def test_an_end_that_came_with_the_request_is_seen_after_its_reply(front: Front) -> None:
    # The request and the half-close land before the first poll: one edge announces both.
    cid, client = front.channel()
    client.send(msgpack.packb([1, 10]))
    client.shutdown(socket.SHUT_WR)
    assert [k for _, k, _, _ in front.poll()] == [REQUEST]
    assert front.reply(cid, msgpack.packb([1, 0])) == 0
    assert front.poll() == [(cid, CLOSED, 0, b"")]
    assert client.recv(16) == msgpack.packb([1, 0])


def test_a_request_that_comes_while_two_are_queued_is_not_lost(front: Front) -> None:
    cid, client = front.channel()
    r1, r2, r3 = (msgpack.packb([i, 10]) for i in (1, 2, 3))
    client.send(r1 + r2)
    assert front.poll() == [(cid, REQUEST, 0, r1)]
    client.send(r3)  # its edge comes while r1 is out
    assert front.poll() == []
    assert front.reply(cid, b"\x90") == 0
    assert front.poll() == [(cid, REQUEST, 0, r2)]  # (cut from what was buffered, no read)
    assert front.reply(cid, b"\x90") == 0
    assert front.poll() == [(cid, REQUEST, 0, r3)]


def test_a_frame_that_fills_the_read_exactly_leaves_nothing_behind(front: Front) -> None:
    cid, client = front.channel()
    exact = msgpack.packb([1, 11, b"q" * (4096 - 6)], use_bin_type=True)  # (array, two ints, a bin16 head: 6)
    assert len(exact) == 4096  # the front end's first read of a fresh channel asks for 4096 bytes
    nxt = msgpack.packb([2, 10])
    client.sendall(exact + nxt)
    assert front.poll() == [(cid, REQUEST, 0, exact)]
    assert front.reply(cid, b"\x90") == 0
    assert front.poll() == [(cid, REQUEST, 0, nxt)]


def test_fds_a_client_sends_are_dropped_and_do_not_cut_its_stream_short(front: Front) -> None:
    cid, client = front.channel()
    r1, r2 = msgpack.packb([1, 10]), msgpack.packb([2, 10])
    r, w = os.pipe()
    try:
        client.sendmsg([r1], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [w]))])
        client.send(r2)  # (a read stops at the fds: r2 waits behind them with no edge of its own)
        fds_before = len(os.listdir("/proc/self/fd"))
        assert front.poll() == [(cid, REQUEST, 0, r1)]
        assert front.reply(cid, b"\x90") == 0
        assert front.poll() == [(cid, REQUEST, 0, r2)]
        assert len(os.listdir("/proc/self/fd")) == fds_before  # the front end took no fd in
    finally:
        os.close(r)
        os.close(w)


def test_a_reply_the_client_does_not_read_yet_is_finished_later(front: Front) -> None:
    cid, client = front.channel()
    client.send(msgpack.packb([1, 12]))
    assert [k for _, k, _, _ in front.poll()] == [REQUEST]
    reply = msgpack.packb([1, 0, os.urandom(4 << 20)], use_bin_type=True)
    assert front.reply(cid, reply) == 0
    assert front.counters.deferred_sends == 1
    got = bytearray()
    client.settimeout(10)
    while len(got) < len(reply):
        got += client.recv(1 << 20)
        front.poll()  # EPOLLOUT: the rest goes out as the client makes room
    assert bytes(got) == reply
    client.send(msgpack.packb([2, 10]))
    assert [k for _, k, _, _ in front.poll()] == [REQUEST]  # and the channel reads again


def test_fds_ride_on_the_reply(front: Front) -> None:
    cid, client = front.channel()
    client.send(msgpack.packb([1, 10]))
    front.poll()
    r, w = os.pipe()
    try:
        assert front.reply(cid, msgpack.packb([1, 0]), [w]) == 0
        data, anc, _, _ = client.recvmsg(64, socket.CMSG_SPACE(4))
        (fd,) = array.array("i", anc[0][2])
        os.write(fd, b"!")
        os.close(fd)
        assert data == msgpack.packb([1, 0]) and os.read(r, 1) == b"!"
    finally:
        os.close(r)
        os.close(w)


def test_replies_need_an_outstanding_request_of_a_live_channel(front: Front) -> None:
    cid, client = front.channel()
    assert front.reply(cid, b"\x90") == -errno.ENOENT
    lib.rx_cf_remove(front.cf, cid)
    client.send(msgpack.packb([1, 10]))
    assert front.poll() == [] and front.reply(cid, b"\x90") == -errno.ENOENT
    lib.rx_cf_remove(front.cf, cid)  # (twice is fine)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(inner, max_size=20), st.dictionaries(st.text(max_size=8), inner, max_size=8))


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 63), (1 << 64) - 1), st.floats(allow_nan=False),
                     st.binary(max_size=300), st.text(max_size=300))
_values = st.recursive(_scalars, _containers, max_leaves=60)


@settings(max_examples=150, deadline=None)
@given(value=st.lists(_values, min_size=1, max_size=6), cut=st.floats(0, 1), more=_values)
def test_framing_agrees_with_msgpack_wherever_the_bytes_are_cut(value: list[Any], cut: float, more: Any) -> None:
    f = Front()
    try:
        cid, client = f.channel()
        frame = msgpack.packb(value, use_bin_type=True)
        behind = msgpack.packb(more, use_bin_type=True)  # the start of the next frame, already here
        at = int(len(frame) * cut)
        client.sendall(frame[:at])
        if at < len(frame):
            assert f.poll() == []
        client.sendall(frame[at:] + behind)
        assert f.poll() == [(cid, REQUEST, 0, frame)]
        assert f.reply(cid, b"\x90") == 0
        assert f.poll() == [(cid, REQUEST, 0, behind)]
    finally:
        f.close()


# -- the client's round trip --------------------------------------------------------------------


def test_round_trip_reads_a_reply_in_pieces_with_its_fds() -> None:
    ours, rxd = socket.socketpair()
    buf = ffi.gc(ffi.new("struct rx_call_buf *"), lib.rx_call_buf_release)
    reply = msgpack.packb([5, 0, b"z" * 100000], use_bin_type=True)
    r, w = os.pipe()
    try:
        rxd.sendmsg([reply[:10]], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [w]))])
        rxd.sendall(reply[10:] + msgpack.packb([6, 0]))  # (and the next one behind it)
        req = encode_request(5, 10, ())
        assert lib.rx_call_roundtrip(ours.fileno(), req, len(req), buf, 1 << 20) == 0
        assert bytes(ffi.buffer(buf.data, buf.frame)) == reply and buf.nfds == 1
        os.close(buf.fds[0])
        assert rxd.recv(64) == req
        assert lib.rx_call_roundtrip(ours.fileno(), req, len(req), buf, 1 << 20) == 0
        assert bytes(ffi.buffer(buf.data, buf.frame)) == msgpack.packb([6, 0]) and buf.nfds == 0
        rxd.close()
        assert lib.rx_call_roundtrip(ours.fileno(), req, len(req), buf, 1 << 20) == -errno.EPIPE
    finally:
        ours.close()
        os.close(r)
        os.close(w)


def test_round_trip_refuses_what_is_not_a_frame() -> None:
    ours, rxd = socket.socketpair()
    buf = ffi.gc(ffi.new("struct rx_call_buf *"), lib.rx_call_buf_release)
    try:
        rxd.sendall(b"\x92\xc1")
        assert lib.rx_call_roundtrip(ours.fileno(), b"\x90", 1, buf, 1 << 20) == -errno.EPROTO
    finally:
        ours.close()
        rxd.close()


# -- through rxd ----------------------------------------------------------------------------------

MIXED = """
import os, sys
import rxkernel.client as rx
seed = int(sys.argv[1])
vmo = rx.rx_vmo_create(1 << 20)
for i in range(300):
    data = os.urandom(1 + (seed * 7919 + i * 104729) % 70000)
    off = (seed * 31 + i * 4099) % ((1 << 20) - len(data))
    rx.rx_vmo_write(vmo, off, data)            # async handler (the VMO lock): its channel's task
    assert rx.rx_vmo_read(vmo, off, len(data)) == data
    assert rx.rx_vmo_get_size(vmo) == 1 << 20  # sync handler: served in the pump's batch
    dup = rx.rx_handle_duplicate(vmo)
    rx.rx_handle_close(dup)
print("ok")
"""


@pytest.mark.parametrize("path", ["front", "trio"])
def test_many_clients_mixing_waiting_and_plain_calls(path: str) -> None:
    with running_rxd(extra=["--call-path", path]) as rxd:
        procs = [rxd.spawn(MIXED, str(seed)) for seed in range(12)]
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0 and out.strip() == "ok", err
        kmem = rxd.kmem()
        rxd.wait_idle()
        if path == "front":
            assert kmem["call_requests"] >= 12 * 300 * 5 and kmem["call_max_batch"] > 1
        else:
            assert kmem["call_requests"] < 100  # (the admin client's own, before any front end)
        assert rxd.kmem()["committed_bytes"] == 0


def test_pipelined_requests_on_the_main_channel_are_answered_in_order() -> None:
    with running_rxd() as rxd:
        c = RawClient(rxd.socket)
        vmo = c.call("rx_vmo_create", 8192, 0)
        frames = b"".join(encode_request(100 + i, SYSCALL_NUMBERS["rx_vmo_get_size"], (vmo,)) for i in range(5))
        c.send_raw(frames)
        replies: list[Reply] = []
        while len(replies) < 5:
            event = c.conn.next_event()
            if event is NEED_DATA:
                c.conn.receive_data(c.recv_raw())
            else:
                assert isinstance(event, Reply), event
                replies.append(event)
        assert [(r.id, r.status, r.result) for r in replies] == [(100 + i, 0, (8192,)) for i in range(5)]
        c.close()


def test_a_request_sent_with_the_hello_is_served(tmp_path: Any) -> None:
    # The client's first request starts in the same segment as its hello: rxd's reader has part
    # of it buffered, so the channel stays with Python instead of C starting mid-frame.
    with running_rxd() as rxd:
        from rxkernel.proto import CHANNEL_MAIN, Connection, Hello, Role
        conn = Connection(Role.CLIENT, kind=CHANNEL_MAIN)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(rxd.socket)
        req = encode_request(1, SYSCALL_NUMBERS["rx_process_self"], ())
        sock.sendall(conn.send(Hello(CHANNEL_MAIN, None)) + req[:1])
        while (event := conn.next_event()) is NEED_DATA:
            conn.receive_data(sock.recv(1 << 16))
        sock.sendall(req[1:])
        while (event := conn.next_event()) is NEED_DATA:
            conn.receive_data(sock.recv(1 << 16))
        assert isinstance(event, Reply) and event.id == 1 and event.status == 0, event
        sock.close()


def test_a_broken_frame_drops_only_its_own_connection() -> None:
    with running_rxd() as rxd:
        good = RawClient(rxd.socket)
        bad = RawClient(rxd.socket)
        vmo = good.call("rx_vmo_create", 4096, 0)
        bad.send_raw(b"\x93\x01\xc1\x00")
        bad.sock.settimeout(10)
        assert bad.recv_raw() == b""  # rxd closed it
        assert good.call("rx_vmo_get_size", vmo) == 4096
        deadline = time.monotonic() + 10
        while "broken stream" not in rxd.log_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "broken stream" in rxd.log_text()
        good.close()


KILLED_MID_WRITE = """
import os, sys
import rxkernel.client as rx
vmo = rx.rx_vmo_create(64 << 20)
print("ready", flush=True)
while True:
    rx.rx_vmo_write(vmo, 0, os.urandom(4 << 20))
"""


def test_clients_killed_mid_call_leave_no_charge_behind() -> None:
    with running_rxd() as rxd:
        procs = [rxd.spawn(KILLED_MID_WRITE) for _ in range(6)]
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        rxd.wait_for(lambda: rxd.kmem()["committed_bytes"] >= 6 * (4 << 20), "every writer to be mid-stream")
        for p in procs:
            p.kill()
            p.wait()
        rxd.wait_idle()
        kmem = rxd.kmem()
        assert kmem["committed_bytes"] == 0 and kmem["num_processes"] <= 1, kmem


FORK_KEEPS_THREAD_CHANNELS = """
import os
import rxkernel.client as rx
vmo = rx.rx_vmo_create(4096)
addr = rx.rx_vmar_map(vmo, 0, 4096, rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE)
assert rx.rx_futex_wake(addr, 1) == 0   # opens this thread's own channel
pid = os.fork()
if pid == 0:
    os._exit(0)                          # the child forgets the parent's channels as it starts
os.waitpid(pid, 0)
assert rx.rx_futex_wake(addr, 1) == 0   # the parent's thread channel still works
print("ok")
"""


def test_a_fork_child_leaves_its_parents_thread_channels_alone() -> None:
    with running_rxd() as rxd:
        assert rxd.run(FORK_KEEPS_THREAD_CHANNELS).stdout.strip().splitlines()[-1] == "ok"
