"""The trio side of the fault fast path (ARCHITECTURE.md "The fault fast path"; rxfastfault.h).

A C thread in rxd owns the fault channels and answers the faults it can decide from the state
Python keeps in C memory (the mirror: vm/'s `ff` structs). Everything else it hands over here, one
event at a time per channel, and the channel's task answers it the usual way (vm.resolve_fault)
on the same channel, then lets the thread watch the channel again.

The one rule that makes this safe: rxd's trio thread holds the fault server's mutex whenever it
runs and lets go only while trio waits for I/O (`_MutexInstrument`). So the fault thread decides
only between trio steps, when every step that does not await is complete; what is half-done
across an await is under a tree lock, whose word the fault thread respects.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from rxkernel.native import ffi, lib

from ..object import Process
from ..vm import VmContext
from ._stream import Stream

_DRAIN = 64
_FAULT, _CLOSED, _HANDOFF, _SEND = lib.RX_FF_EV_FAULT, lib.RX_FF_EV_CLOSED, lib.RX_FF_EV_HANDOFF, lib.RX_FF_EV_SEND
_Event = tuple[int, int, int, bool]  # kind, seq, addr, write
Answer = Callable[[int, int, bool], Awaitable[bytes]]  # seq, addr, write -> the encoded reply


class _MutexInstrument(trio.abc.Instrument):
    """Lets the fault thread in only while trio waits for I/O (see the module note)."""

    def __init__(self, server: Any) -> None:
        self._server = server

    def before_io_wait(self, timeout: float) -> None:
        lib.rx_ff_unlock(self._server)

    def after_io_wait(self, timeout: float) -> None:
        lib.rx_ff_lock(self._server)


class FaultServer:
    def __init__(self, vm: VmContext) -> None:
        handle = lib.rx_ff_server_new(vm.memory.ff, vm.fast_counters)
        if handle == ffi.NULL:
            raise OSError("rxd could not set up its fault thread (out of memory or file descriptors)")
        self._handle = ffi.gc(handle, lib.rx_ff_server_free)
        self._channels: dict[int, trio.MemorySendChannel[_Event]] = {}
        self._events = ffi.new("struct rx_ff_event[]", _DRAIN)
        self._bytes = ffi.new("uint8_t[]", 1 << 14)
        self._running = False

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run the fault thread until cancelled; hand its events to the channels' tasks."""
        handle = self._handle
        lib.rx_ff_lock(handle)  # from now on held whenever this thread runs Python
        rc = lib.rx_ff_server_start(handle)
        if rc < 0:
            lib.rx_ff_unlock(handle)
            raise OSError(-rc, "rxd could not start its fault thread")
        instrument = _MutexInstrument(handle)
        trio.lowlevel.add_instrument(instrument)
        self._running = True
        try:
            task_status.started()
            wake = lib.rx_ff_wake_fd(handle)
            while True:
                await trio.lowlevel.wait_readable(wake)
                self._dispatch()
        finally:
            self._running = False
            trio.lowlevel.remove_instrument(instrument)
            lib.rx_ff_server_stop(handle)  # (lets go of the mutex for good, then joins)

    def _dispatch(self) -> None:
        while True:
            n = lib.rx_ff_drain(self._handle, self._events, _DRAIN)
            for i in range(n):
                ev = self._events[i]
                send = self._channels.get(ev.channel)
                if send is not None:  # (None: the channel's task has already gone)
                    send.send_nowait((ev.kind, ev.seq, ev.addr, bool(ev.write)))
            if n < _DRAIN:
                return

    def _take(self, channel: int) -> bytes:
        n = lib.rx_ff_channel_bytes(self._handle, channel, self._bytes, len(self._bytes))
        return bytes(ffi.buffer(self._bytes, n)) if n > 0 else b""

    async def serve(self, sock: Stream, process: Process, answer: Answer) -> bytes | None:
        """Serve the fault channel `sock` (its hello answered, nothing buffered) through the
        fault thread: None once the channel closed, or the bytes the thread read but left to
        Python (a frame it does not decode, a pipelining client), after which the caller reads
        the channel itself. Returns b"" at once if there is no fault thread."""
        if not self._running:
            return b""
        channel = int(lib.rx_ff_channel_add(self._handle, sock.fileno(), process.aspace.ff))
        if channel < 0:
            return b""  # (epoll refused it: Python serves this channel)
        send, events = trio.open_memory_channel[_Event](math.inf)
        self._channels[channel] = send
        try:
            async for kind, seq, addr, write in events:
                if kind == _FAULT:
                    await sock.send_all(await answer(seq, addr, write))
                elif kind == _SEND:
                    await sock.send_all(self._take(channel))
                elif kind == _HANDOFF:
                    return self._take(channel)
                else:
                    assert kind == _CLOSED, kind
                    return None
                # Watch it again (with bytes already buffered, that hands the channel over: a
                # HANDOFF event follows).
                lib.rx_ff_channel_rearm(self._handle, channel)
            return None  # (not reached: the send side lives as long as this task)
        finally:
            del self._channels[channel]
            lib.rx_ff_channel_remove(self._handle, channel)
