"""rx.watch_pressure(): memory pressure level changes as a Python iterator."""

from __future__ import annotations

from collections.abc import Iterator

from ._stubs import rx_system_wait_pressure
from ._vdso import rx_system_get_pressure_level


def watch_pressure() -> Iterator[int]:
    """The RX_PRESSURE_* level now, then each new level as rxd changes it (blocking this thread
    between changes, on its own channel):

        for level in rx.watch_pressure():
            if level >= rx.RX_PRESSURE_CRITICAL:
                drop_caches()
    """
    level = rx_system_get_pressure_level()
    yield level
    while True:
        level = rx_system_wait_pressure(level)
        yield level
