"""The vDSO from Python: functions that read rxd's vvar page through the image rxd sent, with no
request to rxd (README "The vDSO").

The first call connects (like every stub) and the connection loads the image; after that each
call is one cffi call into a C trampoline and one indirect call into the image: the first call
also rebinds the public names (here and in rxkernel.client) to the cffi functions themselves, so
`rx.rx_clock_get_monotonic()` runs no Python code at all. A name imported before that
(`from rxkernel.client import rx_clock_get_monotonic`) stays the wrapper: one Python frame more,
still correct. A fork child is a new rx process: the wrappers come back and its first call
connects again.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from rxkernel.native import lib
from rxkernel.proto import RX_ERR_BAD_STATE, RX_ERR_INVALID_ARGS, RxError

from ._process import PROCESS

_DETACHED: int = lib.RXV_DETACHED

_bound = False  # the public names are the trampolines themselves (see _slow)

# The trampolines, bound once (a module global lookup instead of a getattr on lib per call).
_monotonic = lib.rxv_clock_get_monotonic
_realtime = lib.rxv_clock_get_realtime
_ticks = lib.rxv_ticks_get
_ticks_per_second = lib.rxv_ticks_per_second
_tls_base = lib.rxv_thread_tls_base
_cpu_features = lib.rxv_cpu_features
_syscall_number = lib.rxv_get_syscall_number
_page_size = lib.rxv_system_get_page_size
_physmem = lib.rxv_system_get_physmem
_pressure = lib.rxv_system_get_pressure_level


def _attach() -> None:
    """Connect (a new connection attaches the vDSO rxd sends); the slow path of every call."""
    PROCESS.connect()
    if _monotonic() == _DETACHED:
        raise RxError(RX_ERR_BAD_STATE, "connected to rxd but the vDSO is not attached")


def _slow(fn: Callable[[], int]) -> int:
    """First call in this process (or since a fork): attach if needed, then bind the trampolines
    themselves as the public names of this module and of rxkernel.client, so that
    `rx.rx_clock_get_monotonic()` is from then on a single cffi call with no Python frame."""
    global _bound
    if fn() == _DETACHED:
        _attach()
    package = sys.modules.get("rxkernel.client")
    for name, trampoline in _FAST.items():
        globals()[name] = trampoline
        if package is not None:
            setattr(package, name, trampoline)
    _bound = True
    return fn()


def _unbind_in_child() -> None:
    """A fork child is a new rx process: the trampolines say DETACHED until it connects, so the
    public names go back to the checking wrappers."""
    global _bound
    package = sys.modules.get("rxkernel.client")
    for name, wrapper in _WRAPPERS.items():
        globals()[name] = wrapper
        if package is not None:
            setattr(package, name, wrapper)
    _bound = False


def _wrapper(trampoline: Callable[[], int], name: str, doc: str) -> Callable[[], int]:
    """The checking wrapper a public name starts as: connect and bind on first use (_slow)."""

    def wrapper() -> int:
        t: int = trampoline()
        if t == _DETACHED or not _bound:
            t = _slow(trampoline)
        return t

    wrapper.__name__ = wrapper.__qualname__ = name
    wrapper.__doc__ = doc
    return wrapper


rx_clock_get_monotonic = _wrapper(
    _monotonic, "rx_clock_get_monotonic", "Nanoseconds on rx's monotonic clock (never backwards; ≈ the host's CLOCK_MONOTONIC)."
)
rx_clock_get_realtime = _wrapper(
    _realtime, "rx_clock_get_realtime", "Nanoseconds since the Unix epoch: monotonic + the offset rx_clock_adjust_realtime sets."
)
rx_ticks_get = _wrapper(_ticks, "rx_ticks_get", "The raw CPU counter (x86_64 TSC, aarch64 CNTVCT).")
rx_ticks_per_second = _wrapper(
    _ticks_per_second, "rx_ticks_per_second", "The counter's rate (calibrated by rxd at start on x86_64)."
)
rx_thread_tls_base = _wrapper(
    _tls_base, "rx_thread_tls_base", "The calling thread's thread pointer (x86_64: fs base, = threading.get_ident() on glibc)."
)
rx_cpu_features = _wrapper(_cpu_features, "rx_cpu_features", "RX_CPU_X86_* / RX_CPU_ARM64_* bits (rxkernel.proto).")
rx_system_get_page_size = _wrapper(_page_size, "rx_system_get_page_size", "rx's page size.")
rx_system_get_physmem = _wrapper(_physmem, "rx_system_get_physmem", "rxd's physical memory budget in bytes (rxd --memory).")
rx_system_get_pressure_level = _wrapper(
    _pressure, "rx_system_get_pressure_level",
    "The memory pressure level rxd has in force (RX_PRESSURE_NORMAL .. RX_PRESSURE_OUT_OF_MEMORY), read from the vvar: no request.",
)


def rx_get_syscall_number(name: str) -> int:
    """The number of syscall `name` from the vDSO's table (proto's); RX_ERR_NOT_FOUND otherwise."""
    if not isinstance(name, str) or "\0" in name:
        raise RxError(RX_ERR_INVALID_ARGS, f"a syscall name is a str without NULs, not {name!r:.40}")
    raw = name.encode()
    n: int = _syscall_number(raw)
    if n == _DETACHED:
        _attach()
        n = _syscall_number(raw)
    if n < 0:
        raise RxError(n, f"no syscall named {name!r:.60}")
    return n


_FAST: dict[str, Callable[[], int]] = {
    "rx_clock_get_monotonic": _monotonic, "rx_clock_get_realtime": _realtime, "rx_ticks_get": _ticks,
    "rx_ticks_per_second": _ticks_per_second, "rx_thread_tls_base": _tls_base, "rx_cpu_features": _cpu_features,
    "rx_system_get_page_size": _page_size, "rx_system_get_physmem": _physmem,
    "rx_system_get_pressure_level": _pressure,
}
_WRAPPERS: dict[str, Callable[[], int]] = {name: globals()[name] for name in _FAST}
os.register_at_fork(after_in_child=_unbind_in_child)


def rx_vdso_addresses() -> tuple[int, int]:
    """(image base, vvar base) in this process, connecting first if needed; for diagnostics."""
    if _monotonic() == _DETACHED:
        _attach()
    return int(lib.rxv_image_base()), int(lib.rxv_vvar_base())


def rx_vdso_fds() -> tuple[int, int, int]:
    """(image fd, vvar fd, vvar size) for a C program: new inheritable copies of what rxd sent
    this process, the caller's to close (pass them to a child with subprocess's pass_fds). The
    child maps the vvar read-only, dlopens /proc/self/fd/<image> and calls rx_vdso_init
    (native/vdso/rxvdso.h; README "The vDSO")."""
    connection = PROCESS.connect()
    image, vvar = (os.dup(fd) for fd in connection.vdso_fds)
    return image, vvar, int(connection.info["vvar_size"])
