"""rx_clock_adjust_realtime: the one clock syscall; reading the clocks needs no syscall at all
(the vDSO reads the vvar page, object/_vdso.py)."""

from __future__ import annotations

from typing import Any

import structlog

from rxkernel.proto import RX_ERR_WRONG_TYPE, RxError

from ._table import Call, syscall

log = structlog.get_logger("rxd.clock")


@syscall
def rx_clock_adjust_realtime(call: Call, system: int, offset: int) -> tuple[Any, ...]:
    """Zircon's legacy zx_clock_adjust(ZX_CLOCK_UTC, offset) semantics: SET (not add to) the
    offset, so that realtime = monotonic + offset from now on, in every process at its next
    rx_clock_get_realtime(), without a request (the vvar's seqlock publishes it). Only the
    system handle may: another handle is RX_ERR_WRONG_TYPE, a bad one RX_ERR_BAD_HANDLE."""
    h = call.process.handles.get(system)
    if h.obj is not call.kernel.system:
        raise RxError(RX_ERR_WRONG_TYPE, f"rx_clock_adjust_realtime needs the system handle, not a {h.obj.type_name}")
    old = call.kernel.vdso.realtime_offset
    call.kernel.vdso.set_realtime_offset(offset)
    log.info("realtime adjusted", pid=call.process.pid, offset_ns=offset, change_ns=offset - old)
    return ()
