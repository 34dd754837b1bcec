"""The vDSO rxd serves: the image in a sealed memfd and the vvar page it writes (README "The vDSO").

Every client gets two fds in its hello: the image ("rx-vdso", sealed against any change, so what
a client maps is exactly what rxd loaded) and an O_RDONLY fd of the vvar ("rx-vvar"). The vvar is
mapped read-write in rxd alone: after that mapping exists it is sealed with F_SEAL_FUTURE_WRITE,
so not even a client that reopens its fd through /proc can write it or map it writable. rxd
loads the same image itself, so its own clock (futex deadlines) is the clients' clock.

The clock model (calibration, re-anchoring, bounded slew) is in native/server/rxvvar_writer.c.
"""

from __future__ import annotations

import fcntl
import mmap
import os
from typing import Any

import structlog
import trio

from rxkernel.native import VDSO_IMAGE, ffi, lib
from rxkernel.proto import PAGE_SIZE, RX_ERR_BAD_STATE, SYSCALLS, RxError

log = structlog.get_logger("rxd.vdso")

# Linux memfd flags and seals Python's os/fcntl may not name.
_MFD_EXEC = 0x0010  # Linux 6.3+: say explicitly that the image may be executed
_F_SEAL_FUTURE_WRITE = 0x0010

CLOCK_MODES = {"auto": lib.RX_VVAR_MODE_AUTO, "ticks": lib.RX_VVAR_MODE_TICKS, "syscall": lib.RX_VVAR_MODE_SYSCALL}
DISCIPLINE_PERIOD = 1.0  # seconds between re-anchorings of the clock


def _memfd(name: str, exec_ok: bool) -> int:
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
    if exec_ok:
        try:
            return os.memfd_create(name, flags | _MFD_EXEC)
        except OSError:
            pass  # a kernel before 6.3: memfds are executable anyway
    return os.memfd_create(name, flags)


class Vdso:
    """Owns the two memfds and rxd's RW mapping of the vvar. One per rxd (the C writer keeps its
    calibration state per process)."""

    def __init__(self, physmem_bytes: int, clock_mode: str = "auto") -> None:
        try:
            with open(VDSO_IMAGE, "rb") as f:
                image = f.read()
        except OSError as e:
            raise SystemExit(f"rxd: no vDSO image at {VDSO_IMAGE} ({e.strerror}); reinstall rxkernel") from None
        self.image_fd = _memfd("rx-vdso", exec_ok=True)
        os.write(self.image_fd, image)
        fcntl.fcntl(self.image_fd, fcntl.F_ADD_SEALS,
                    fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
        self.image_size = len(image)

        self.vvar_size = int(lib.rx_vvar_size())
        self.vvar_fd = _memfd("rx-vvar", exec_ok=False)
        os.ftruncate(self.vvar_fd, self.vvar_size)
        self._map = mmap.mmap(self.vvar_fd, self.vvar_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._vvar = ffi.from_buffer(self._map)
        rc = lib.rx_vvar_setup(self._vvar, PAGE_SIZE, physmem_bytes, CLOCK_MODES[clock_mode])
        if rc < 0:
            raise RxError(RX_ERR_BAD_STATE, f"setting up the vvar: {os.strerror(-rc)}")
        for call in SYSCALLS:  # the vDSO's syscall-number table is proto's, never a copy by hand
            rc = lib.rx_vvar_add_syscall(self._vvar, call.name.encode(), call.number)
            if rc < 0:
                raise RxError(RX_ERR_BAD_STATE, f"syscall table: {call.name}: {os.strerror(-rc)}")
        seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
        try:
            fcntl.fcntl(self.vvar_fd, fcntl.F_ADD_SEALS, seals | _F_SEAL_FUTURE_WRITE)
        except OSError:
            fcntl.fcntl(self.vvar_fd, fcntl.F_ADD_SEALS, seals)  # before Linux 5.1
        fcntl.fcntl(self.vvar_fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL)
        # What clients get: a read-only open file description of the same page.
        self.vvar_ro_fd = os.open(f"/proc/self/fd/{self.vvar_fd}", os.O_RDONLY | os.O_CLOEXEC)
        rc = lib.rxv_attach(self.image_fd, self.vvar_ro_fd, self.vvar_size)
        if rc < 0:
            raise RxError(RX_ERR_BAD_STATE, f"loading the vDSO in rxd: {rc} {ffi.string(lib.rxv_last_error()).decode()}")
        log.info("vdso ready", image_bytes=self.image_size, clock=clock_mode,
                 ticks_per_second=int(lib.rxv_ticks_per_second()), cpu_features=hex(lib.rxv_cpu_features()))

    @property
    def vvar(self) -> Any:
        """rxd's writable mapping of the vvar (the call front end publishes its load there)."""
        return self._vvar

    @property
    def fds(self) -> list[int]:
        """What the hello sends, in this order: the image, the read-only vvar."""
        return [self.image_fd, self.vvar_ro_fd]

    def monotonic_ns(self) -> int:
        """rx monotonic time: what every client's rx_clock_get_monotonic() says (futex deadlines)."""
        return int(lib.rxv_clock_get_monotonic())

    def set_realtime_offset(self, offset_ns: int) -> None:
        lib.rx_vvar_set_realtime_offset(self._vvar, offset_ns)

    def set_pressure(self, level: int) -> None:
        lib.rx_vvar_set_pressure(self._vvar, level)

    @property
    def realtime_offset(self) -> int:
        return int(lib.rx_vvar_realtime_offset(self._vvar))

    async def discipline(self) -> None:
        """Re-anchor the clock about once a second, slewing it toward CLOCK_MONOTONIC (the C
        call takes microseconds; see rxvvar_writer.c for the scheme)."""
        out = ffi.new("int64_t[3]")
        period_ns = int(DISCIPLINE_PERIOD * 1e9)
        while True:
            await trio.sleep(DISCIPLINE_PERIOD)
            lib.rx_vvar_discipline(self._vvar, period_ns, out)
            log.debug("clock disciplined", error_ns=out[0], rate_ppb=out[1], stepped=bool(out[2]))

    def close(self) -> None:
        for fd in (self.image_fd, self.vvar_ro_fd, self.vvar_fd):
            os.close(fd)
