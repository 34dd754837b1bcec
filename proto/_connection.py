"""The sans-IO protocol state machine (after h11): bytes in, events out; events in, bytes out.

No sockets, no trio: rxd (async) and the stub library (sync) both drive one of these, and the tests
drive it with plain bytes. One object per channel end. The state machine is small:

    role CLIENT:  send Hello ─► receive HelloReply ─► (main)    send Request, receive Reply
                                                     (fault)   send FaultRequest, receive FaultReply
                                                     (control) receive ControlRequest, send ControlAck
    role SERVER:  the mirror image.

Whose fault an error is: LocalProtocolError means this side tried to send something it must not
(a bug here); RemoteProtocolError means the peer sent a frame that breaks the stream, and the only
safe answer is to close the connection.
"""

from __future__ import annotations

import enum
from typing import Any, Final

import msgpack

from ._constants import CHANNEL_CONTROL, CHANNEL_FAULT, CHANNEL_MAIN, CHANNEL_THREAD, MAX_FRAME_BYTES, PROTOCOL_MAGIC, PROTOCOL_VERSION

# Channels that carry syscalls as Request/Reply: the main one and each client thread's own.
_CALL_CHANNELS = (CHANNEL_MAIN, CHANNEL_THREAD)
from ._events import (
    CONTROL_RANGE_WIDTHS,
    ControlAck,
    ControlRequest,
    Event,
    FaultOp,
    FaultReply,
    FaultRequest,
    Hello,
    HelloReply,
    Reply,
    Request,
)
from ._status import RX_ERR_BAD_STATE, RX_ERR_INVALID_ARGS, RX_ERR_NOT_SUPPORTED, RxError


class LocalProtocolError(RxError):
    def __init__(self, message: str) -> None:
        super().__init__(RX_ERR_BAD_STATE, message, local=True)


class RemoteProtocolError(RxError):
    def __init__(self, message: str, status: int = RX_ERR_INVALID_ARGS) -> None:
        super().__init__(status, message, local=False)


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class _Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"
    CLOSED = "CLOSED"


NEED_DATA: Final = _Sentinel.NEED_DATA
CLOSED: Final = _Sentinel.CLOSED

_FAULT_OP_WIDTH = 6


def _ints(frame: list[Any], what: str) -> list[int]:
    for x in frame:
        if type(x) is not int:
            raise RemoteProtocolError(f"{what} must be an array of integers")
    return frame


class Connection:
    """One end of one channel. `kind` is known after the hello (the client knows it up front)."""

    def __init__(self, role: Role, *, kind: int | None = None, max_buffer_size: int = MAX_FRAME_BYTES) -> None:
        if role is Role.CLIENT and kind is None:
            raise LocalProtocolError("a client connection must say which kind of channel it opens")
        self.role = role
        self.kind = kind
        self.hello_done = False
        self.max_buffer_size = max_buffer_size
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max_buffer_size, strict_map_key=False)
        self._fed = 0  # bytes fed so far
        self._consumed = 0  # bytes that made up complete frames so far
        self._eof = False
        self._hello_sent = False

    # -- bytes in, events out -------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the peer; b"" means the peer closed its end."""
        if not data:
            self._eof = True
            return
        if self._eof:
            raise LocalProtocolError("data received after end of stream")
        try:
            self._unpacker.feed(data)
        except msgpack.BufferFull:
            raise RemoteProtocolError(f"frame larger than the {self.max_buffer_size}-byte limit") from None
        self._fed += len(data)

    @property
    def unparsed(self) -> int:
        """Bytes fed that no event has taken yet: the start of a frame still arriving."""
        return self._fed - self._consumed

    def next_event(self) -> Event | _Sentinel:
        """The next complete event, NEED_DATA, or CLOSED once the peer closed cleanly."""
        if self._consumed == self._fed and not self._eof:
            return NEED_DATA  # nothing buffered: no need to let the unpacker raise OutOfData
        try:
            frame = self._unpacker.unpack()
        except msgpack.OutOfData:
            if not self._eof:
                return NEED_DATA
            if self._consumed != self._fed:
                raise RemoteProtocolError("stream ended inside a frame") from None
            return CLOSED
        except Exception as e:
            # Whatever the unpacker makes of the peer's bytes is the peer's doing: bad bytes
            # (ValueError, FormatError, StackError, ExtraData) and also well-formed msgpack that
            # Python cannot hold, like a map keyed by an array or a map (TypeError: unhashable).
            raise RemoteProtocolError(f"undecodable frame: {type(e).__name__}: {e}") from None
        self._consumed = self._unpacker.tell()
        if type(frame) is not list:
            raise RemoteProtocolError(f"a frame must be an array, got {type(frame).__name__}")
        try:
            return self._parse(frame)
        except RemoteProtocolError:
            raise
        except RxError as e:  # an event refused to validate itself
            raise RemoteProtocolError(str(e)) from None
        except (TypeError, ValueError, KeyError, IndexError) as e:
            # A decodable frame of the wrong shape (a map where an int belongs, say): the peer's.
            raise RemoteProtocolError(f"malformed frame: {type(e).__name__}: {e}") from None

    def _parse(self, frame: list[Any]) -> Event:
        if not self.hello_done:
            return self._parse_hello(frame)
        if self.role is Role.SERVER:
            if self.kind in _CALL_CHANNELS:
                return _request_of(frame)
            if self.kind == CHANNEL_FAULT:
                seq, addr, flags = self._fixed(frame, 3, "fault request")
                return FaultRequest(seq, addr, bool(flags & 1))
            seq, status = self._fixed(frame, 2, "control ack")
            return ControlAck(seq, status)
        if self.kind in _CALL_CHANNELS:
            return _reply_of(frame)
        if self.kind == CHANNEL_FAULT:
            _ints(frame, "fault reply")
            if len(frame) < 3 or (len(frame) - 3) % _FAULT_OP_WIDTH:
                raise RemoteProtocolError("a fault reply is [seq, status, inval_seq, (6 ints)*]")
            ops = tuple(FaultOp(*frame[i : i + _FAULT_OP_WIDTH]) for i in range(3, len(frame), _FAULT_OP_WIDTH))
            return FaultReply(frame[0], frame[1], frame[2], ops)
        _ints(frame, "control request")
        if len(frame) < 3:
            raise RemoteProtocolError("a control request is [seq, op, inval_seq, args...]")
        width = CONTROL_RANGE_WIDTHS.get(frame[1])
        args = frame[3:]
        if width is None or (width == 0 and args) or (width and len(args) % width):
            raise RemoteProtocolError("control request arguments do not fit its op")
        ranges = tuple(tuple(args[i : i + width]) for i in range(0, len(args), width)) if width else ()
        return ControlRequest(frame[0], frame[1], frame[2], ranges)

    @staticmethod
    def _fixed(frame: list[Any], width: int, what: str) -> list[int]:
        if len(frame) != width:
            raise RemoteProtocolError(f"a {what} has {width} integers")
        return _ints(frame, what)

    def _parse_hello(self, frame: list[Any]) -> Event:
        if len(frame) < 3 or frame[0] != PROTOCOL_MAGIC:
            raise RemoteProtocolError("not an rx hello")
        if self.role is Role.SERVER:
            if frame[1] != PROTOCOL_VERSION:
                raise RemoteProtocolError(f"protocol version {frame[1]!r} not supported", RX_ERR_NOT_SUPPORTED)
            if len(frame) not in (4, 5):
                raise RemoteProtocolError("a hello is [magic, version, kind, token] (a main one may add a job token)")
            hello = Hello(frame[2], frame[3], frame[4] if len(frame) == 5 else None)
            self.kind = hello.kind
            self.hello_done = True
            return hello
        if frame[1] != PROTOCOL_VERSION:
            raise RemoteProtocolError(f"rxd speaks protocol version {frame[1]!r}", RX_ERR_NOT_SUPPORTED)
        info = frame[3] if len(frame) > 3 else None
        reply = HelloReply(frame[2], info)
        self.hello_done = reply.status == 0
        return reply

    # -- events in, bytes out -------------------------------------------------------------------

    def send(self, event: Event) -> bytes:
        data: bytes = msgpack.packb(self._frame(event), use_bin_type=True)
        return data

    def _frame(self, event: Event) -> list[Any]:
        if isinstance(event, Hello):
            self._expect(self.role is Role.CLIENT and not self._hello_sent and event.kind == self.kind, event)
            self._hello_sent = True
            frame = [PROTOCOL_MAGIC, PROTOCOL_VERSION, event.kind, event.token]
            return frame if event.job is None else [*frame, event.job]
        if isinstance(event, HelloReply):
            self._expect(self.role is Role.SERVER and self.kind is not None, event)
            if self.kind == CHANNEL_MAIN:
                return [PROTOCOL_MAGIC, PROTOCOL_VERSION, event.status, event.info]
            return [PROTOCOL_MAGIC, PROTOCOL_VERSION, event.status]
        self._expect(self.hello_done, event)
        if isinstance(event, Request):
            self._expect(self.role is Role.CLIENT and self.kind in _CALL_CHANNELS, event)
            return _request_frame(event.id, event.number, event.args)
        if isinstance(event, Reply):
            self._expect(self.role is Role.SERVER and self.kind in _CALL_CHANNELS, event)
            return _reply_frame(event.id, event.status, event.result)
        if isinstance(event, FaultRequest):
            self._expect(self.role is Role.CLIENT and self.kind == CHANNEL_FAULT, event)
            return [event.seq, event.addr, int(event.write)]
        if isinstance(event, FaultReply):
            self._expect(self.role is Role.SERVER and self.kind == CHANNEL_FAULT, event)
            flat: list[int] = [event.seq, event.status, event.inval_seq]
            for op in event.ops:
                flat += (op.addr, op.length, op.kind, op.prot, op.store_id, op.file_offset)
            return flat
        if isinstance(event, ControlRequest):
            self._expect(self.role is Role.SERVER and self.kind == CHANNEL_CONTROL, event)
            return [event.seq, event.op, event.inval_seq, *(x for r in event.ranges for x in r)]
        if isinstance(event, ControlAck):
            self._expect(self.role is Role.CLIENT and self.kind == CHANNEL_CONTROL, event)
            return [event.seq, event.status]
        raise LocalProtocolError(f"not an event: {event!r}")

    def _expect(self, ok: bool, event: Event) -> None:
        if not ok:
            raise LocalProtocolError(f"cannot send {type(event).__name__} as {self.role.value} in this state")


# -- a call channel's frames one by one, for a side that frames the stream itself ---------------
# (rxd's call front end and the client's round trip cut whole frames out of the socket in C;
# these are the same rules as a Connection's after the hello, so the wire stays defined here once.)


def _decode(frame_bytes: bytes | memoryview | Any) -> list[Any]:
    try:
        frame = msgpack.unpackb(frame_bytes, raw=False, strict_map_key=False)
    except Exception as e:  # (as Connection.next_event: whatever the bytes are, they are the peer's)
        raise RemoteProtocolError(f"undecodable frame: {type(e).__name__}: {e}") from None
    if type(frame) is not list:
        raise RemoteProtocolError(f"a frame must be an array, got {type(frame).__name__}")
    return frame


def encode_request(req_id: int, number: int, args: tuple[Any, ...]) -> bytes:
    """A request frame (the client's side; the id and number are the caller's to get right)."""
    data: bytes = msgpack.packb(_request_frame(req_id, number, args), use_bin_type=True)
    return data


def decode_reply(frame_bytes: bytes | memoryview | Any) -> Reply:
    """One whole reply frame as a Reply; RemoteProtocolError for anything else."""
    try:
        return _reply_of(_decode(frame_bytes))
    except RemoteProtocolError:
        raise
    except RxError as e:  # (Reply refused to validate itself)
        raise RemoteProtocolError(str(e)) from None


def decode_request(frame_bytes: bytes | memoryview | Any) -> Request:
    """One whole request frame (exactly one msgpack value) as a Request; RemoteProtocolError,
    with the words a Connection would use, for anything else."""
    return _request_of(_decode(frame_bytes))


def decode_request_frame(frame_bytes: bytes | memoryview | Any) -> tuple[int, int, list[Any]]:
    """decode_request without the event: (id, syscall number, args). For rxd's hot path."""
    return _request_fields(_decode(frame_bytes))


def encode_reply(reply: Reply) -> bytes:
    return encode_reply_frame(reply.id, reply.status, reply.result)


def encode_reply_frame(req_id: int, status: int, result: tuple[Any, ...]) -> bytes:
    """encode_reply without the event (rxd makes the id and status itself)."""
    data: bytes = msgpack.packb(_reply_frame(req_id, status, result), use_bin_type=True)
    return data


def _request_fields(frame: list[Any]) -> tuple[int, int, list[Any]]:
    if len(frame) < 2:
        raise RemoteProtocolError("a request is [id, syscall, args...]")
    req_id, number = frame[0], frame[1]
    if type(req_id) is not int or not 0 <= req_id < 1 << 64:
        raise RemoteProtocolError("request id must be a u64")
    # A request whose syscall number is not an int is still a well-framed request: the dispatcher
    # answers it with RX_ERR_BAD_SYSCALL rather than closing the connection.
    return req_id, number if type(number) is int else -1, frame[2:]


def _request_of(frame: list[Any]) -> Request:
    req_id, number, args = _request_fields(frame)
    return Request(req_id, number, tuple(args))


def _reply_frame(req_id: int, status: int, result: tuple[Any, ...]) -> list[Any]:
    return [req_id, status, *result]


def _request_frame(req_id: int, number: int, args: tuple[Any, ...]) -> list[Any]:
    return [req_id, number, *args]


def _reply_of(frame: list[Any]) -> Reply:
    if len(frame) < 2 or type(frame[0]) is not int or type(frame[1]) is not int:
        raise RemoteProtocolError("a reply is [id, status, result...]")
    return Reply(frame[0], frame[1], tuple(frame[2:]))
