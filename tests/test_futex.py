"""Futexes across real processes: keys by VMO page, Zircon's errors, deadlines, requeue, threads,
dead waiters, and the robust-word takeover from a dead owner."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from rxkernel.proto import (
    RX_FUTEX_OWNER_DIED,
    RX_FUTEX_WAITERS,
    RX_RIGHT_SAME_RIGHTS,
)
from rxtest import QUICK_TIMEOUT, Rxd, read_line

HEADER = """
import os, sys, threading, time
import rxkernel.client as rx
RW = rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE
vmo = rx.rx_handle_import(sys.argv[1])
pad = int(sys.argv[2]) if len(sys.argv) > 2 else 0
if pad:  # map something first so this process's mapping lands at another address
    rx.rx_vmar_map(rx.rx_vmo_create(pad * 4096, 0), 0, pad * 4096, RW)
base = rx.rx_vmar_map(vmo, 0, 2 * 4096, RW)
view = rx.rx_view(base, 2 * 4096)
def word(off): return int.from_bytes(view[off:off + 4], sys.byteorder)
def put(off, v): view[off:off + 4] = v.to_bytes(4, sys.byteorder)
def status(fn, *a, **k):
    try:
        return fn(*a, **k)
    except rx.RxError as e:
        return e.name
print("base", hex(base), flush=True)
"""

WAITER = HEADER + """
off = int(sys.argv[3])
print("result", status(rx.rx_futex_wait, base + off, word(off)), flush=True)
print("value", word(off), flush=True)
"""


def _vmo(rxd: Rxd) -> tuple[int, list[str]]:
    vmo = rxd.call("rx_vmo_create", 2 * 4096, 0)
    return vmo, [rxd.call("rx_handle_export", vmo, RX_RIGHT_SAME_RIGHTS) for _ in range(8)]


def _base(p: subprocess.Popen[str]) -> int:
    line = read_line(p).split()
    assert line and line[0] == "base", line
    return int(line[1], 16)


def _waiters(rxd: Rxd, n: int) -> None:
    rxd.wait_for(lambda: rxd.kmem()["futex_waiters"] == n, f"{n} futex waiters")


def _holder(rxd: Rxd, token: str, word: str) -> subprocess.Popen[str]:
    """A process that puts `word` (an expression: its own pid, say) at offset 0 and stays alive."""
    owner = rxd.spawn(HEADER + f"put(0, {word})\nprint('holding', flush=True)\ntime.sleep(600)", token)
    _base(owner)
    read_line(owner, expect="holding")
    return owner


def _finish(p: subprocess.Popen[str]) -> list[str]:
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    return out.split("\n")


def test_wake_across_processes_at_different_addresses(rxd: Rxd) -> None:
    _, tokens = _vmo(rxd)
    waiter = rxd.spawn(WAITER, tokens[0], "0", "4100")
    waker = rxd.spawn(
        HEADER + """
sys.stdin.readline()
put(4100, 7)
print("woken", rx.rx_futex_wake(base + 4100, 5), flush=True)
""",
        tokens[1],
        "37",
    )
    a, b = _base(waiter), _base(waker)
    assert a != b, "the two processes must map the VMO at different addresses"
    _waiters(rxd, 1)
    assert waker.stdin is not None
    waker.stdin.write("go\n")
    waker.stdin.flush()
    assert "woken 1" in _finish(waker)
    assert _finish(waiter)[0:2] == ["result None", "value 7"]
    assert rxd.kmem()["futex_waiters"] == 0


def test_errors_as_zircon(rxd: Rxd) -> None:
    _, tokens = _vmo(rxd)
    out = rxd.run(
        HEADER + """
put(0, 5)
print(status(rx.rx_futex_wait, base, 4))  # mismatch
print(status(rx.rx_futex_wait, base + 2, 5))  # misaligned
print(status(rx.rx_futex_wake, base + 1, 1))
print(status(rx.rx_futex_wait, 0x1000, 0))  # not an rx mapping
t0 = time.monotonic_ns()
print(status(rx.rx_futex_wait, base, 5, time.monotonic_ns() + 200_000_000))
print(200e6 <= time.monotonic_ns() - t0 < 3e9)
print(status(rx.rx_futex_wait, base, 5, time.monotonic_ns() - 10**9))  # already past
print(status(rx.rx_futex_wait, base, 5, -1))
print(status(rx.rx_futex_wake, base, 1))  # nobody waits
print(status(rx.rx_futex_requeue, base, 1, 5, base, 1))  # same futex
print(status(rx.rx_futex_requeue, base, 1, 4, base + 4, 1))  # mismatch
""",
        tokens[0],
    ).stdout.split("\n")
    assert out[1:12] == [
        "RX_ERR_BAD_STATE", "RX_ERR_INVALID_ARGS", "RX_ERR_INVALID_ARGS", "RX_ERR_INVALID_ARGS",
        "RX_ERR_TIMED_OUT", "True", "RX_ERR_TIMED_OUT", "RX_ERR_TIMED_OUT", "0",
        "RX_ERR_INVALID_ARGS", "RX_ERR_BAD_STATE",
    ]
    assert rxd.kmem()["futex_waiters"] == 0


def test_requeue_moves_waiters(rxd: Rxd) -> None:
    _, tokens = _vmo(rxd)
    waiters = [rxd.spawn(WAITER, tokens[i], str(i), "0") for i in range(3)]
    for p in waiters:
        _base(p)
    _waiters(rxd, 3)
    out = rxd.run(
        HEADER + """
print(rx.rx_futex_requeue(base, 1, 0, base + 4096, 1))
print(rx.rx_futex_wake(base + 4096, 10))
put(0, 9)
print(rx.rx_futex_wake(base, 10))
""",
        tokens[4],
    ).stdout.split("\n")
    assert out[1:4] == ["1", "1", "1"]
    results = [_finish(p)[0] for p in waiters]
    assert results == ["result None"] * 3
    assert rxd.kmem()["futex_waiters"] == 0


def test_threads_wait_without_blocking_the_process(rxd: Rxd) -> None:
    _, tokens = _vmo(rxd)
    out = rxd.run(
        HEADER + """
results = []
def wait():
    results.append(status(rx.rx_futex_wait, base + 8, 0))
threads = [threading.Thread(target=wait) for _ in range(4)]
for t in threads:
    t.start()
t0 = time.monotonic()
while rx.rx_object_get_info(rx.rx_system_handle(), rx.RX_INFO_KMEM_STATS)["futex_waiters"] < 4:
    assert time.monotonic() - t0 < 30
    time.sleep(0.01)
# the main channel still serves while four threads wait
print(rx.rx_vmo_get_size(vmo))
print(rx.rx_futex_wake(base + 8, 2))
put(8, 1)
print(rx.rx_futex_wake(base + 8, rx.RX_FUTEX_WAKE_ALL))
for t in threads:
    t.join(30)
print(results)
""",
        tokens[0],
    ).stdout.split("\n")
    assert out[1:5] == ["8192", "2", "2", "[None, None, None, None]"]


def test_dead_waiter_is_removed(rxd: Rxd) -> None:
    _, tokens = _vmo(rxd)
    waiter = rxd.spawn(WAITER, tokens[0], "0", "0")
    _base(waiter)
    _waiters(rxd, 1)
    waiter.send_signal(signal.SIGKILL)
    waiter.wait(10)
    _waiters(rxd, 0)
    out = rxd.run(HEADER + "print(rx.rx_futex_wake(base, 1))", tokens[1]).stdout.split("\n")
    assert out[1] == "0"


def test_wait_survives_a_snapshot_of_its_vmo(rxd: Rxd) -> None:
    vmo, tokens = _vmo(rxd)
    waiter = rxd.spawn(WAITER, tokens[0], "0", "12")
    _base(waiter)
    _waiters(rxd, 1)
    child = rxd.call("rx_vmo_create_child", vmo, 1, 0, 2 * 4096)  # RX_VMO_CHILD_SNAPSHOT
    out = rxd.run(HEADER + "put(12, 3)\nprint(rx.rx_futex_wake(base + 12, 1))", tokens[1]).stdout.split("\n")
    assert out[1] == "1"
    assert _finish(waiter)[0:2] == ["result None", "value 3"]
    assert rxd.call("rx_vmo_read", child, 12, 4) == bytes(4), "the snapshot kept the old value"


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait(QUICK_TIMEOUT)
    return p.pid


def test_robust_word_of_a_dead_owner_is_taken_at_wait(rxd: Rxd) -> None:
    vmo, tokens = _vmo(rxd)
    dead = _dead_pid()
    word = dead | RX_FUTEX_WAITERS
    rxd.call("rx_vmo_write", vmo, 0, word.to_bytes(4, "little"))
    out = rxd.run(
        HEADER + f"""
print(status(rx.rx_futex_wait, base, {word}, None, owner_pid={dead}))
print(word(0) == {RX_FUTEX_WAITERS | RX_FUTEX_OWNER_DIED})
put(0, os.getpid() | {RX_FUTEX_WAITERS})  # a live owner (this process): a robust wait waits
print(status(rx.rx_futex_wait, base, word(0), time.monotonic_ns() + 10**8, owner_pid=os.getpid()))
""",
        tokens[0],
    ).stdout.split("\n")
    assert out[1:4] == ["RX_ERR_BAD_STATE", "True", "RX_ERR_TIMED_OUT"]
    assert rxd.kmem()["futex_owner_died"] == 1


def test_owner_death_wakes_a_waiter_and_marks_the_word(rxd: Rxd) -> None:
    _, tokens = _vmo(rxd)
    owner = _holder(rxd, tokens[0], "os.getpid()")
    waiter = rxd.spawn(
        HEADER + f"""
v = word(0) | {RX_FUTEX_WAITERS}
put(0, v)
print("result", status(rx.rx_futex_wait, base, v, None, owner_pid=v & {(1 << 30) - 1}), flush=True)
print("value", word(0), flush=True)
""",
        tokens[1],
    )
    _base(waiter)
    _waiters(rxd, 1)
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait(10)
    assert _finish(waiter)[0:2] == ["result None", f"value {RX_FUTEX_WAITERS | RX_FUTEX_OWNER_DIED}"]


def test_waits_do_not_stall_other_clients(rxd: Rxd) -> None:
    _, tokens = _vmo(rxd)
    waiters = [rxd.spawn(WAITER, tokens[i], "0", "16") for i in range(6)]
    for p in waiters:
        _base(p)
    _waiters(rxd, 6)
    t0 = time.monotonic()
    for _ in range(50):
        rxd.call("rx_vmo_get_size", rxd.call("rx_vmo_create", 4096, 0))
    assert time.monotonic() - t0 < 10
    rxd.run(HEADER + "put(16, 1)\nassert rx.rx_futex_wake(base + 16) == 6", tokens[6])
    assert all(_finish(p)[0] == "result None" for p in waiters)


# -- regressions from review: rxd writes only words a robust waiter asked about, where it may ----

R_ONLY = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 5)  # DUPLICATE TRANSFER READ MAP


def test_robust_wait_needs_a_writable_mapping_and_the_owner_of_expected(rxd: Rxd) -> None:
    vmo = rxd.call("rx_vmo_create", 4096, 0)
    dead = _dead_pid()
    rxd.call("rx_vmo_write", vmo, 0, dead.to_bytes(4, "little"))
    token = rxd.call("rx_handle_export", vmo, R_ONLY)
    out = rxd.run(
        f"""
import sys
import rxkernel.client as rx
vmo = rx.rx_handle_import(sys.argv[1])
base = rx.rx_vmar_map(vmo, 0, 4096, rx.RX_VM_PERM_READ)
for owner in ({dead}, {dead} + 1):
    try:
        rx.rx_futex_wait(base, {dead}, None, owner_pid=owner)
    except rx.RxError as e:
        print(e.name)
""",
        token,
    ).stdout.split()
    assert out == ["RX_ERR_ACCESS_DENIED", "RX_ERR_INVALID_ARGS"]
    assert int.from_bytes(rxd.call("rx_vmo_read", vmo, 0, 4), "little") == dead, "rxd wrote a read-only word"


def test_a_plain_word_equal_to_a_dying_pid_is_left_alone(rxd: Rxd) -> None:
    vmo, tokens = _vmo(rxd)
    bystander = rxd.spawn(HEADER + "print('up', flush=True)\ntime.sleep(600)", tokens[0])
    _base(bystander)
    read_line(bystander, expect="up")
    rxd.call("rx_vmo_write", vmo, 0, bystander.pid.to_bytes(4, "little"))  # a counter, say
    waiter = rxd.spawn(WAITER, tokens[1], "0", "0")  # a plain wait: no owner named
    _base(waiter)
    _waiters(rxd, 1)
    bystander.kill()
    bystander.wait(10)
    rxd.wait_for(lambda: rxd.kmem()["num_processes"] == 2, "the bystander to be torn down")
    time.sleep(0.2)
    assert int.from_bytes(rxd.call("rx_vmo_read", vmo, 0, 4), "little") == bystander.pid
    assert rxd.kmem()["futex_waiters"] == 1, "the plain waiter must still wait"
    waiter.kill()
    waiter.wait(10)


def test_owner_death_after_a_snapshot_still_hands_the_word_over(rxd: Rxd) -> None:
    vmo, tokens = _vmo(rxd)
    owner = _holder(rxd, tokens[0], "os.getpid() | (1 << 31)")
    waiter = rxd.spawn(
        HEADER + f"""
v = word(0)
print("result", status(rx.rx_futex_wait, base, v, time.monotonic_ns() + 20 * 10**9, owner_pid=v & {(1 << 30) - 1}), flush=True)
print("value", word(0), flush=True)
""",
        tokens[1],
    )
    _base(waiter)
    _waiters(rxd, 1)
    child = rxd.call("rx_vmo_create_child", vmo, 1, 0, 2 * 4096)  # the word now lives in a hidden node
    owner.kill()
    owner.wait(10)
    assert _finish(waiter)[0:2] == ["result None", f"value {RX_FUTEX_WAITERS | RX_FUTEX_OWNER_DIED}"]
    snapshot_word = int.from_bytes(rxd.call("rx_vmo_read", child, 0, 4), "little")
    assert snapshot_word == owner.pid | RX_FUTEX_WAITERS, "the snapshot keeps its own copy untouched"


def test_interrupted_wait_leaves_and_extreme_deadlines(rxd: Rxd) -> None:
    _, tokens = _vmo(rxd)
    out = rxd.run(
        HEADER + """
import signal
def interrupt(*_):
    raise KeyboardInterrupt
signal.signal(signal.SIGALRM, interrupt)
signal.setitimer(signal.ITIMER_REAL, 0.3)
try:
    rx.rx_futex_wait(base, 0)
except KeyboardInterrupt:
    print("interrupted")
t0 = time.monotonic()
while rx.rx_object_get_info(rx.rx_system_handle(), rx.RX_INFO_KMEM_STATS)["futex_waiters"]:
    assert time.monotonic() - t0 < 10
    time.sleep(0.01)
print("dequeued")
print(status(rx.rx_futex_wait, base, 0, -(1 << 63)))
def later():
    time.sleep(0.3); put(0, 1); rx.rx_futex_wake(base, 1)
threading.Thread(target=later).start()
print(status(rx.rx_futex_wait, base, 0, (1 << 63) - 2))
""",
        tokens[0],
    ).stdout.split("\n")
    assert out[1:5] == ["interrupted", "dequeued", "RX_ERR_TIMED_OUT", "None"], out
