"""Chaos, bounded for CI: a kill storm of real client processes and a protocol fuzzer, each
against its own rxd, with the exact-baseline and no-internal-error checks of tests/chaos.py.
`scripts/chaos --minutes N --seed S` runs the same machinery at scale.

Each run draws a fresh seed (printed in a failure); RX_CHAOS_SEED=S reruns that sequence."""

from __future__ import annotations

from chaos import Bounds, Chaos, Figures, default_seed
from rxtest import running_rxd


def _run(bounds: Bounds) -> Figures:
    seed = default_seed()
    with running_rxd(memory="2GiB", extra=["--log-format", "json"]) as rxd:
        figures = Chaos(rxd, seed, bounds).run()
        print(figures.table())
        if figures.failures:  # (inside the `with`: this message, not the harness's log check)
            log = f"/tmp/rxd-chaos-{seed}.log"
            with open(log, "w") as f:
                f.write(rxd.log_text())
            failures = "\n".join(figures.failures)
            raise AssertionError(f"chaos failed (RX_CHAOS_SEED={seed} reruns it; rxd's log: {log}):\n{failures}\n{figures.table()}")
    return figures


def test_kill_storm() -> None:
    f = _run(Bounds(storm_seconds=20, concurrency=8, wave=4))
    # not a storm that missed its point: many deaths at every stage, sharing, the Mutex
    assert f.clients_killed >= 40 and f.killed_before_ready >= 1 and f.clients_finished >= 3, f.table()
    assert f.gifts_shared >= 5 and f.survivor_generations >= 200 and f.wb_calls >= 200, f.table()


def test_fuzzer() -> None:
    f = _run(Bounds(storm_seconds=0, fuzz_frames=30_000, fuzz_seconds=20))
    assert f.frames_sent >= 10_000 and f.connections_closed >= 50 and f.fuzz_replies >= 5_000, f.table()
    assert f.wb_calls >= 200, f.table()
