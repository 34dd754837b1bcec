"""Zircon-style status codes: negative integers with names."""

from __future__ import annotations

RX_OK = 0
RX_ERR_INTERNAL = -1
RX_ERR_NOT_SUPPORTED = -2
RX_ERR_NO_RESOURCES = -3
RX_ERR_NO_MEMORY = -4
RX_ERR_INVALID_ARGS = -10
RX_ERR_BAD_HANDLE = -11
RX_ERR_WRONG_TYPE = -12
RX_ERR_BAD_SYSCALL = -13
RX_ERR_OUT_OF_RANGE = -14
RX_ERR_BUFFER_TOO_SMALL = -15
RX_ERR_BAD_STATE = -20
RX_ERR_TIMED_OUT = -21
RX_ERR_SHOULD_WAIT = -22
RX_ERR_CANCELED = -23
RX_ERR_PEER_CLOSED = -24
RX_ERR_NOT_FOUND = -25
RX_ERR_ALREADY_EXISTS = -26
RX_ERR_ALREADY_BOUND = -27
RX_ERR_UNAVAILABLE = -28
RX_ERR_ACCESS_DENIED = -30

STATUS_NAMES: dict[int, str] = {
    value: name for name, value in sorted(globals().items()) if name.startswith("RX_") and isinstance(value, int)
}


def status_name(status: int) -> str:
    """The name of a status code, or a made-up one for codes this version does not know."""
    return STATUS_NAMES.get(status, f"RX_ERR_UNKNOWN({status})")


class RxError(OSError):
    """A failed rx_* call: `.status` is the negative code, `.name` its name, `.message` the detail.

    `local` tells whose fault it is: True when the caller misused the API (rxd rejected the call's
    arguments, or the stub did before sending), False when the peer misbehaved or went away.
    """

    def __init__(self, status: int, message: str = "", *, local: bool = True) -> None:
        super().__init__(status, message or status_name(status))
        self.status = status
        self.name = status_name(status)
        self.message = message
        self.local = local

    def __str__(self) -> str:
        return f"{self.name}: {self.message}" if self.message else self.name

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_error, (self.status, self.message, self.local))


def _rebuild_error(status: int, message: str, local: bool) -> RxError:
    return RxError(status, message, local=local)
