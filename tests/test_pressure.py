"""Memory pressure levels: the state machine on a controlled clock (no event loop), and rxd
publishing them to every client through the vvar and to waiters."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import pytest

from rxkernel.proto import (
    PAGE_SIZE,
    RX_ERR_INVALID_ARGS,
    RX_PRESSURE_CRITICAL,
    RX_PRESSURE_IMMINENT_OOM,
    RX_PRESSURE_NORMAL,
    RX_PRESSURE_OUT_OF_MEMORY,
    RX_PRESSURE_WARNING,
    RX_TIME_INFINITE,
    RX_VMO_OP_DECOMMIT,
    RxError,
)
from rxkernel.server.vm import PressureLevels, Thresholds
from rxtest import read_line, running_rxd

P = PAGE_SIZE


def test_thresholds_scale_with_the_budget() -> None:
    t = Thresholds.of_budget(10_000)
    assert (t.warning, t.critical, t.imminent_oom, t.oom, t.debounce) == (1500, 750, 300, 250, 5)
    assert [t.level_of(f) for f in (1501, 1500, 751, 750, 301, 300, 251, 250, 0)] == [
        RX_PRESSURE_NORMAL, RX_PRESSURE_WARNING, RX_PRESSURE_WARNING, RX_PRESSURE_CRITICAL, RX_PRESSURE_CRITICAL,
        RX_PRESSURE_IMMINENT_OOM, RX_PRESSURE_IMMINENT_OOM, RX_PRESSURE_OUT_OF_MEMORY, RX_PRESSURE_OUT_OF_MEMORY]
    with pytest.raises(ValueError, match="thresholds"):
        Thresholds.of_budget(1000, warning=0.05, critical=0.1)


def test_worse_levels_at_once_better_ones_after_the_debounce_and_the_hysteresis() -> None:
    t = Thresholds.of_budget(10_000)  # warning at 1500 free, critical 750, debounce 5
    levels = PressureLevels(t, hysteresis_s=10.0, now=0.0)
    assert not levels.observe(2000, now=1.0) and levels.level == RX_PRESSURE_NORMAL
    assert levels.observe(1500, now=2.0) and levels.level == RX_PRESSURE_WARNING  # at once
    assert levels.observe(700, now=2.5) and levels.level == RX_PRESSURE_CRITICAL  # at once again
    # Easing: 751 free is above critical's threshold but not by the debounce: no change pending.
    assert not levels.observe(751, now=20.0) and levels.level == RX_PRESSURE_CRITICAL and levels.recheck_at() is None
    # 756 passes it; 20 s since the last change: in force at once.
    assert levels.observe(756, now=20.0) and levels.level == RX_PRESSURE_WARNING
    # Plenty free 1 s later: NORMAL waits out the hysteresis from the last change (t = 20).
    assert not levels.observe(5000, now=21.0) and levels.level == RX_PRESSURE_WARNING
    assert levels.recheck_at() == 30.0
    assert not levels.observe(5000, now=29.9)
    assert levels.observe(5000, now=30.0) and levels.level == RX_PRESSURE_NORMAL and levels.recheck_at() is None
    # A worsening while an easing waits cancels the easing.
    levels.observe(700, now=31.0)
    levels.observe(5000, now=32.0)
    assert levels.recheck_at() == 41.0
    levels.observe(100, now=33.0)
    assert levels.level == RX_PRESSURE_OUT_OF_MEMORY and levels.recheck_at() is None
    assert levels.transitions == 6


WATCHER = """
import json, sys, time
import rxkernel.client as rx
seen = []
print("ready", rx.rx_system_get_pressure_level(), flush=True)
level = rx.rx_system_get_pressure_level()
for n in range(int(sys.argv[1])):
    level = rx.rx_system_wait_pressure(level)
    print(json.dumps([level, rx.rx_clock_get_monotonic()]), flush=True)
"""


def test_levels_reach_every_client_through_the_vvar_and_wake_waiters() -> None:
    """1024 pages of budget: warning at 154 free, critical at 77, imminent at 31, oom at 26."""
    with running_rxd(memory="4MiB", extra=["--pressure-hysteresis", "0.3"]) as rxd:
        watchers = [subprocess.Popen([sys.executable, "-c", WATCHER, "3"], env=rxd.env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(8)]
        for w in watchers:
            assert read_line(w).split() == ["ready", str(RX_PRESSURE_NORMAL)]
        vmo = rxd.call("rx_vmo_create", 1024 * P, 0)
        rxd.call("rx_vmo_write", vmo, 0, b"x" * (880 * P))  # 144 free: WARNING
        time.sleep(0.1)
        rxd.call("rx_vmo_write", vmo, 880 * P, b"x" * (80 * P))  # 64 free: CRITICAL
        t_ease = rxd.kmem()  # (the level is in KMEM too)
        assert t_ease["pressure_level"] == RX_PRESSURE_CRITICAL
        rxd.call("rx_vmo_op_range", vmo, RX_VMO_OP_DECOMMIT, 0, 960 * P)  # all free: NORMAL after 0.3 s
        decommitted = time.monotonic()
        for w in watchers:
            got = [json.loads(read_line(w)) for _ in range(3)]
            assert [g[0] for g in got] == [RX_PRESSURE_WARNING, RX_PRESSURE_CRITICAL, RX_PRESSURE_NORMAL], got
            assert w.wait(30) == 0
        assert time.monotonic() - decommitted >= 0.25  # the hysteresis held NORMAL back
        assert rxd.kmem()["pressure_level"] == RX_PRESSURE_NORMAL
        with pytest.raises(RxError) as e:
            rxd.call("rx_system_wait_pressure", 9, RX_TIME_INFINITE)
        assert e.value.status == RX_ERR_INVALID_ARGS and "RX_PRESSURE_NORMAL" in str(e.value)
        # Deadlines: the level is returned as it is when the deadline passes.
        assert rxd.call("rx_system_wait_pressure", RX_PRESSURE_NORMAL, 0) == RX_PRESSURE_NORMAL


def test_rxd_refuses_bad_pressure_options() -> None:
    for bad in ("warning=lots", "panic=3%", "warning=5%,critical=10%"):
        out = subprocess.run([sys.executable, "-c", "from rxkernel.server import main; main()", "--pressure", bad,
                              "--socket", "/tmp/rx-never-used.sock"], capture_output=True, text=True, timeout=30)
        assert out.returncode != 0 and "pressure" in out.stderr, (bad, out.stderr)


def test_stall_clock_counts_some_and_full_and_decays_like_psi() -> None:
    from rxkernel.server.vm import StallClock

    s = 1_000_000_000
    c = StallClock(now_ns=0)
    c.change(0, tasks=2)
    c.change(1 * s, stalled=1)  # one of two stalled for 1 s: some
    c.change(2 * s, stalled=1)  # both for 0.5 s: some and full
    c.change(int(2.5 * s), stalled=-2)
    c.average(int(2.5 * s), int(2.5 * s))  # one period of 2.5 s with 1.5 s some, 0.5 s full
    report = c.report(3 * s)
    assert report["stall_some_total_us"] == 1_500_000 and report["stall_full_total_us"] == 500_000
    some10 = 60.0 * (1 - math.exp(-0.2))
    assert report["stall_some_avg10"] == round(some10, 2) and report["stall_full_avg10"] == round(20.0 * (1 - math.exp(-0.2)), 2)
    assert report["stall_some_avg300"] < report["stall_some_avg60"] < report["stall_some_avg10"]
    c.average(int(4.5 * s), 2 * s)  # a quiet period: the averages decay
    assert c.report(int(4.5 * s))["stall_some_avg10"] < report["stall_some_avg10"]


def test_rxctl_pressure_shows_level_thresholds_and_stalls() -> None:
    with running_rxd(memory="4MiB") as rxd:
        out = subprocess.run([sys.executable, "-c", "from rxkernel.client._rxctl import entry; entry()", "pressure"],
                             env=rxd.env, capture_output=True, text=True, timeout=60)
        lines = out.stdout.splitlines()
        assert out.returncode == 0 and lines[0].startswith("level RX_PRESSURE_NORMAL"), out
        assert "WARNING 616.0 KiB" in lines[2] and "OUT_OF_MEMORY 104.0 KiB" in lines[2], lines
        assert lines[3].startswith("some avg10=0.00 avg60=0.00 avg300=0.00 total=") and lines[4].startswith("full avg10=")


async def test_sleepers_wake_together_time_out_and_leave_when_their_channel_speaks() -> None:
    """base.Sleepers, in one event loop: what each blocking wait is built on."""
    import socket

    import trio

    from rxkernel.server.base import Sleepers

    sleepers = Sleepers()
    woken: list[str] = []

    async def sleep(name: str, channel: socket.socket | None, deadline: float = math.inf) -> None:
        try:
            await sleepers.sleep(channel, deadline)
            woken.append(name)
        except trio.BrokenResourceError:
            woken.append(name + " broken")

    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setblocking(False)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sleep, "a", None)
            nursery.start_soon(sleep, "b", ours)
            nursery.start_soon(sleep, "late", None, trio.current_time() + 0.05)
            await trio.sleep(0.1)
            assert woken == ["late"] and len(sleepers) == 2  # the deadline, alone
            sleepers.wake_all()
            await trio.sleep(0.01)
            assert sorted(woken) == ["a", "b", "late"] and len(sleepers) == 0
            nursery.start_soon(sleep, "c", ours)
            await trio.sleep(0.01)
            theirs.close()  # the thread went away
            await trio.sleep(0.05)
        assert woken[-1] == "c broken" and len(sleepers) == 0
