"""Protocol events: frozen, slotted, self-validating (after h11)."""

from __future__ import annotations

import dataclasses
from typing import Any

from ._constants import CHANNEL_CONTROL, CHANNEL_FAULT, CHANNEL_MAIN, CHANNEL_THREAD, SESSION_TOKEN_BYTES
from ._status import RX_ERR_INVALID_ARGS, RxError

MAX_JOB_TOKEN = 64


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise RxError(RX_ERR_INVALID_ARGS, what)


def _is_int(value: object) -> bool:
    return type(value) is int


@dataclasses.dataclass(frozen=True, slots=True)
class Hello:
    """Client → rxd, first frame on every channel."""

    kind: int
    token: bytes | None = None
    # Main channel only: the job the new process is born in, as a token that names one (an
    # rx_handle_export of a job handle, or an rx.fork() ticket: the forking parent's job).
    job: str | None = None

    def __post_init__(self) -> None:
        _require(self.kind in (CHANNEL_MAIN, CHANNEL_FAULT, CHANNEL_CONTROL, CHANNEL_THREAD), f"bad channel kind {self.kind!r}")
        _require(self.job is None or (self.kind == CHANNEL_MAIN and type(self.job) is str and 0 < len(self.job) <= MAX_JOB_TOKEN),
                 f"a job token is a str of at most {MAX_JOB_TOKEN} characters, on a main channel")
        if self.kind == CHANNEL_MAIN:
            _require(self.token is None, "a main channel carries no token")
        else:
            _require(
                type(self.token) is bytes and len(self.token) == SESSION_TOKEN_BYTES,
                "fault, control and thread channels carry a 16-byte session token",
            )


@dataclasses.dataclass(frozen=True, slots=True)
class HelloReply:
    """rxd → client, answer to Hello. `info` only on a main channel (on a refusal there, it
    may carry {"message": why})."""

    status: int
    info: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        _require(_is_int(self.status) and self.status <= 0, "status must be an int <= 0")
        _require(self.info is None or isinstance(self.info, dict), "info must be a dict")


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """Main channel, client → rxd. Argument shapes are checked against the table by rxd."""

    id: int
    number: int
    args: tuple[Any, ...]

    def __post_init__(self) -> None:
        # (Inline, not _require: two of these are made for every syscall.)
        if type(self.id) is not int or not 0 <= self.id < 1 << 64:
            raise RxError(RX_ERR_INVALID_ARGS, "request id must be a u64")
        if type(self.number) is not int:
            raise RxError(RX_ERR_INVALID_ARGS, "syscall number must be an int")


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    """Main channel, rxd → client. `result` is empty unless status is RX_OK."""

    id: int
    status: int
    result: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if type(self.id) is not int or not 0 <= self.id < 1 << 64:
            raise RxError(RX_ERR_INVALID_ARGS, "reply id must be a u64")
        if type(self.status) is not int or self.status > 0:
            raise RxError(RX_ERR_INVALID_ARGS, "status must be an int <= 0")


@dataclasses.dataclass(frozen=True, slots=True)
class FaultRequest:
    """Fault channel, client's C handler → rxd."""

    seq: int
    addr: int
    write: bool


@dataclasses.dataclass(frozen=True, slots=True)
class FaultOp:
    """One run a fault reply maps: the zero page (store_id 0) or a run of a store's pages."""

    addr: int
    length: int
    kind: int  # 0 zero page, 1 store
    prot: int
    store_id: int = 0
    file_offset: int = 0


FAULT_OP_ZERO = 0
FAULT_OP_STORE = 1


@dataclasses.dataclass(frozen=True, slots=True)
class FaultReply:
    seq: int
    status: int
    inval_seq: int
    ops: tuple[FaultOp, ...] = ()


CONTROL_INVALIDATE = 1
CONTROL_PROTECT = 2
CONTROL_PING = 3
CONTROL_STORE = 4  # (store_id, writable) with the store's fd attached: fault replies may name it
CONTROL_FORGET = 5  # (store_id,)...: close those store fds, rxd will not name them again
# Integers per range of each control op: (addr, length), (addr, length, prot), none, ...
CONTROL_RANGE_WIDTHS = {CONTROL_INVALIDATE: 2, CONTROL_PROTECT: 3, CONTROL_PING: 0, CONTROL_STORE: 2, CONTROL_FORGET: 1}


@dataclasses.dataclass(frozen=True, slots=True)
class ControlRequest:
    """Control channel, rxd → client's control thread. `ranges` are (addr, length[, prot])."""

    seq: int
    op: int
    inval_seq: int
    ranges: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        width = CONTROL_RANGE_WIDTHS.get(self.op)
        _require(width is not None, f"unknown control op {self.op!r}")
        _require(all(len(r) == width for r in self.ranges), "control ranges have the wrong width")


@dataclasses.dataclass(frozen=True, slots=True)
class ControlAck:
    seq: int
    status: int


Event = Hello | HelloReply | Request | Reply | FaultRequest | FaultReply | ControlRequest | ControlAck
