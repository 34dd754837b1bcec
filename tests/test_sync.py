"""Mutex, Condition, Semaphore, Event and Barrier in shared rx memory, across real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from rxkernel.proto import RX_RIGHT_SAME_RIGHTS
from rxtest import QUICK_TIMEOUT, Rxd, read_line

# Each client maps the VMO at an address of its own choosing (RX_VM_MAP_RANDOM), so objects meet
# at different virtual addresses in different processes.
HEADER = """
import os, struct, sys, time
import rxkernel.client as rx
vmo = rx.Vmo.import_token(sys.argv[1])
m = vmo.map(options=rx.RX_VM_MAP_RANDOM)
def u64(off):
    return m.view[off:off + 8].cast("Q")
def ready():
    print("ready", m.addr, flush=True)
def go():
    ready()
    sys.stdin.readline()
"""


def _vmo(rxd: Rxd, size: int = 1 << 16) -> int:
    return int(rxd.call("rx_vmo_create", size, 0))


def _token(rxd: Rxd, vmo: int) -> str:
    return str(rxd.call("rx_handle_export", vmo, RX_RIGHT_SAME_RIGHTS))


def _u32(rxd: Rxd, vmo: int, off: int) -> int:
    return int.from_bytes(rxd.call("rx_vmo_read", vmo, off, 4), "little")


def _u64(rxd: Rxd, vmo: int, off: int) -> int:
    return int.from_bytes(rxd.call("rx_vmo_read", vmo, off, 8), "little")


def _start(procs: list[subprocess.Popen[str]]) -> list[int]:
    """Wait for every client's "ready <addr>", then release them all at once; their addresses."""
    addrs = []
    for p in procs:
        line = read_line(p).split()
        assert line and line[0] == "ready", line
        addrs.append(int(line[1]))
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    return addrs


def _finish(procs: list[subprocess.Popen[str]], timeout: float = 60) -> list[str]:
    """Each client's stdout once it exits (0): a client still running after `timeout` fails the test."""
    outs = []
    for p in procs:
        out_err = _wait_exit(p, timeout)
        if out_err is None:
            for other in procs:
                other.kill()
            raise AssertionError(f"client {p.pid} did not finish within {timeout} s")
        out, err = out_err
        assert p.returncode == 0, f"client failed ({p.returncode}):\n{out}\n{err}"
        outs.append(out)
    return outs


def test_uncontended_paths_ask_rxd_nothing(rxd: Rxd) -> None:
    rxd.run("""
import rxkernel.client as rx
with rx.Vmo(4096) as vmo, vmo.map() as m:
    mutex = rx.Mutex.create(m, 0)
    cond = rx.Condition.create(m, 8, mutex)
    sem = rx.Semaphore.create(m, 20, 2)
    event = rx.Event.create(m, 28)
    barrier = rx.Barrier.create(m, 36, 1)
    me = rx.rx_process_self()
    before = rx.rx_object_get_info(me, rx.RX_INFO_TASK_STATS)["syscalls"]
    for _ in range(1000):
        assert mutex.acquire()
        assert mutex.locked() and not mutex.owner_died and mutex.owner_pid == __import__("os").getpid()
        cond.notify()
        cond.notify_all()
        mutex.release()
        with mutex:
            pass
        assert mutex.acquire(timeout=1)
        assert not mutex.acquire(blocking=False)
        mutex.release()
        assert sem.acquire() and sem.acquire() and not sem.acquire(blocking=False)
        sem.release(2)
        event.set()
        assert event.wait() and event.wait(0) and event.is_set()
        event.clear()
        assert barrier.wait() == 0
    after = rx.rx_object_get_info(me, rx.RX_INFO_TASK_STATS)["syscalls"]
    assert after - before == 1, after - before   # the second get_info itself
    assert not mutex.locked() and sem.value == 2 and barrier.generation == 1000
""")


def test_objects_check_alignment_bounds_and_ownership(rxd: Rxd) -> None:
    rxd.run("""
import os
import rxkernel.client as rx
from rxkernel.native import lib
with rx.Vmo(4096) as vmo, vmo.map() as m:
    for cls, off in ((rx.Mutex, 2), (rx.Mutex, 4092), (rx.Barrier, 4088), (rx.Event, -4)):
        try:
            cls(m, off)
        except rx.RxError as e:
            assert e.name == "RX_ERR_INVALID_ARGS"
        else:
            raise AssertionError((cls, off))
    assert rx.Mutex.SIZE == rx.Semaphore.SIZE == rx.Event.SIZE == 8 and rx.Condition.SIZE == 12
    assert rx.Barrier.SIZE == 12
    rx.Mutex(m, 4088)
    mutex = rx.Mutex.create(m, 0)
    try:
        mutex.release()
    except RuntimeError:
        pass
    else:
        raise AssertionError("release of an unheld Mutex")
    cond = rx.Condition.create(m, 8, mutex)
    try:
        cond.wait(0)
    except RuntimeError:
        pass
    else:
        raise AssertionError("Condition.wait without the mutex")
    for call in (cond.notify, cond.notify_all):
        try:
            call()
        except RuntimeError:
            pass
        else:
            raise AssertionError(f"{call.__name__} without the mutex")
    # threading.Lock's argument rules, checked even when the lock is free (the C fast path hands
    # any call with arguments to the Python one)
    for kwargs in ({"timeout": -2}, {"timeout": -0.5}, {"blocking": False, "timeout": 1}, {"blocking": False, "timeout": 0}):
        try:
            mutex.acquire(**kwargs)
        except ValueError:
            pass
        else:
            raise AssertionError(kwargs)
    assert not mutex.locked()
    assert mutex.acquire(False, -1) and not mutex.acquire(timeout=0) and not mutex.acquire(False)
    assert lib.rx_atomic_load(mutex.addr) == os.getpid(), "no WAITERS bit left"
    mutex.release()
    sem = rx.Semaphore.create(m, 64, 0)
    for n in (0, -1, (1 << 31) + 1):
        try:
            sem.release(n)
        except ValueError:
            pass
        else:
            raise AssertionError(n)
    sem.release(1 << 31)
    sem.release((1 << 31) - 1)
    try:
        sem.release(1)
    except ValueError:
        pass
    else:
        raise AssertionError("the value wrapped past 2**32-1")
    assert sem.value == 0xFFFFFFFF
    try:
        rx.Barrier.create(m, 128, 65536)
    except ValueError:
        pass
    else:
        raise AssertionError("parties beyond the 16-bit count")
""")


def test_futex_word_layout_matches_proto() -> None:
    import rxkernel.proto as p
    from rxkernel.client import _sync

    from rxkernel.native import lib

    assert (p.RX_FUTEX_OWNER_MASK, p.RX_FUTEX_OWNER_DIED, p.RX_FUTEX_WAITERS) == (0x3FFFFFFF, 1 << 30, 1 << 31)
    assert (_sync.OWNER_MASK, _sync.OWNER_DIED, _sync.WAITERS) == (0x3FFFFFFF, 1 << 30, 1 << 31)
    # rxsync.c's use of the bits (rxwire.h's RX_FUTEX_*): a trylock on OWNER_DIED|WAITERS keeps both, reports them
    from rxkernel.native import ffi

    word = ffi.new("uint32_t *", p.RX_FUTEX_OWNER_DIED | p.RX_FUTEX_WAITERS)
    addr = int(ffi.cast("uintptr_t", word))
    assert lib.rx_mutex_trylock(addr, 77, 0) == p.RX_FUTEX_OWNER_DIED | p.RX_FUTEX_WAITERS
    assert word[0] == 77 | p.RX_FUTEX_OWNER_DIED | p.RX_FUTEX_WAITERS
    assert lib.rx_mutex_trylock(addr, 78, 0) == word[0]
    assert lib.rx_mutex_unlock(addr, 78) == -1 and lib.rx_mutex_unlock(addr, 77) == 1 and word[0] == 0
    # a second release by 77 (another of its threads) after 78 took the lock leaves 78's lock alone
    assert lib.rx_mutex_trylock(addr, 78, 0) == 0
    assert lib.rx_mutex_unlock(addr, 77) == -1 and word[0] == 78
    word[0] = 78 | p.RX_FUTEX_WAITERS
    assert lib.rx_mutex_unlock(addr, 78) == 1 and word[0] == 0


HAMMER = HEADER + """
n = int(sys.argv[2])
lock = rx.Mutex(m, 0)
counter = u64(64)
acquire, release = lock.acquire, lock.release
go()
t0 = time.monotonic()
for _ in range(n):
    acquire()
    counter[0] += 1
    release()
print(time.monotonic() - t0)
"""


def test_mutex_hammered_by_8_processes(rxd: Rxd) -> None:
    vmo = _vmo(rxd)
    procs = [rxd.spawn(HAMMER, _token(rxd, vmo), "100000") for _ in range(8)]
    addrs = _start(procs)
    t0 = time.monotonic()
    outs = _finish(procs)
    elapsed = time.monotonic() - t0
    assert _u64(rxd, vmo, 64) == 800_000
    assert len(set(addrs)) == 8, "the processes should have mapped the VMO at different addresses"
    assert _u32(rxd, vmo, 0) == 0, "unlocked, no waiters bit, no owner-died flag"
    print(f"8 x 100000 increments in {elapsed:.1f} s; per process {[round(float(o), 1) for o in outs]}")


HOLDER = HEADER + """
lock = rx.Mutex(m, 0)
lock.acquire()
u64(64)[0] = 1        # half-way through an update
ready()
time.sleep(600)
"""

WAITER = HEADER + """
lock = rx.Mutex(m, 0)
ready()
assert lock.acquire(timeout=60)
print("died" if lock.owner_died else "clean", u64(64)[0], flush=True)
u64(64)[0] = 0        # repaired
lock.release()
assert not lock.owner_died
"""


def test_kill_9_of_the_holder_hands_the_mutex_over_with_owner_died(rxd: Rxd) -> None:
    vmo = _vmo(rxd)
    holder = rxd.spawn(HOLDER, _token(rxd, vmo))
    _start([holder])
    waiter = rxd.spawn(WAITER, _token(rxd, vmo))
    _start([waiter])
    # the waiter is asleep in rxd once it counts itself among the mutex's sleepers and the word
    # carries WAITERS
    rxd.wait_for(lambda: _u32(rxd, vmo, 4) == 1 and _u32(rxd, vmo, 0) & 0x80000000 != 0, "a blocked waiter")
    time.sleep(0.1)
    holder.send_signal(signal.SIGKILL)
    holder.wait(30)
    (out,) = _finish([waiter])
    assert out.split()[-2:] == ["died", "1"], out
    # a later locker gets a clean lock
    (out,) = _finish([rxd.spawn(WAITER, _token(rxd, vmo))])
    assert out.split()[-2:] == ["clean", "0"], out


def test_kill_9_of_the_holder_with_nobody_waiting(rxd: Rxd) -> None:
    vmo = _vmo(rxd)
    holder = rxd.spawn(HOLDER, _token(rxd, vmo))
    _start([holder])
    holder.send_signal(signal.SIGKILL)
    holder.wait(30)
    assert _u32(rxd, vmo, 0) & 0x3FFFFFFF == holder.pid, "nobody waited: the word still names the dead pid"
    (out,) = _finish([rxd.spawn(WAITER, _token(rxd, vmo))])
    assert out.split()[-2:] == ["died", "1"], out


PRODUCER = HEADER + """
me, n, slots = int(sys.argv[2]), int(sys.argv[3]), 8
lock = rx.Mutex(m, 0)
not_full, not_empty = rx.Condition(m, 8, lock), rx.Condition(m, 20, lock)
head, tail, ring = u64(64), u64(72), m.view[128:128 + 8 * slots].cast("Q")
go()
for i in range(n):
    with lock:
        not_full.wait_for(lambda: head[0] - tail[0] < slots)
        ring[head[0] % slots] = me << 32 | i
        head[0] += 1
        not_empty.notify()
"""

CONSUMER = HEADER + """
total, producers, slots = int(sys.argv[2]), int(sys.argv[3]), 8
lock = rx.Mutex(m, 0)
not_full, not_empty = rx.Condition(m, 8, lock), rx.Condition(m, 20, lock)
head, tail, ring, taken = u64(64), u64(72), m.view[128:128 + 8 * slots].cast("Q"), u64(80)
got = []
go()
while True:
    with lock:
        if not not_empty.wait_for(lambda: head[0] > tail[0] or taken[0] >= total, timeout=60):
            raise SystemExit("consumer starved")
        if head[0] == tail[0]:
            not_empty.notify_all()   # wake the other consumers: everything is taken
            break
        got.append(ring[tail[0] % slots])
        tail[0] += 1
        taken[0] += 1
        not_full.notify()
print(" ".join(map(str, got)))
"""


def test_condition_producers_and_consumers(rxd: Rxd) -> None:
    vmo = _vmo(rxd)
    rxd.run("""
import sys, rxkernel.client as rx
m = rx.Vmo.import_token(sys.argv[1]).map()
lock = rx.Mutex.create(m, 0)
rx.Condition.create(m, 8, lock), rx.Condition.create(m, 20, lock)
""", _token(rxd, vmo))
    n, producers, consumers = 2000, 3, 3
    procs = [rxd.spawn(PRODUCER, _token(rxd, vmo), str(p), str(n)) for p in range(producers)]
    procs += [rxd.spawn(CONSUMER, _token(rxd, vmo), str(n * producers), str(producers)) for _ in range(consumers)]
    _start(procs)
    outs = _finish(procs)
    got = [int(x) for out in outs[producers:] for x in out.split()]
    assert sorted(got) == sorted(p << 32 | i for p in range(producers) for i in range(n))
    # per consumer, each producer's messages come in order
    for out in outs[producers:]:
        mine = [int(x) for x in out.split()]
        for p in range(producers):
            seq = [x & 0xFFFFFFFF for x in mine if x >> 32 == p]
            assert seq == sorted(seq)


NOTIFY_ALL_WAITER = HEADER + """
lock = rx.Mutex(m, 0)
cond = rx.Condition(m, 8, lock)
flag, woke = u64(64), u64(72)
ready()
with lock:
    while not flag[0]:
        cond.wait()
    woke[0] += 1
print("woke")
"""


def test_condition_notify_all_requeues_every_waiter(rxd: Rxd) -> None:
    vmo = _vmo(rxd)
    procs = [rxd.spawn(NOTIFY_ALL_WAITER, _token(rxd, vmo)) for _ in range(5)]
    _start(procs)
    rxd.wait_for(lambda: _u32(rxd, vmo, 12) & 0xFFFF == 5 and _u32(rxd, vmo, 16) == 5, "five condition waiters asleep")
    rxd.run(HEADER + """
lock = rx.Mutex(m, 0)
cond = rx.Condition(m, 8, lock)
with lock:
    u64(64)[0] = 1
    cond.notify_all()
    # all five moved onto the mutex word: counted as its sleepers, and our release must wake
    assert struct.unpack_from("<II", m.view, 0) == (os.getpid() | 1 << 31, 5)
""", _token(rxd, vmo))
    _finish(procs, timeout=60)
    assert _u64(rxd, vmo, 72) == 5
    assert _u32(rxd, vmo, 0) == 0 and _u32(rxd, vmo, 4) == 0, "mutex free, no sleepers counted"
    assert _u32(rxd, vmo, 12) & 0xFFFF == 0 and _u32(rxd, vmo, 12) >> 16 == 1, "no waiters, one requeue generation"


SEM_WORKER = HEADER + """
lock, sem = rx.Mutex(m, 0), rx.Semaphore(m, 24)
inside, peak = u64(64), u64(72)
go()
for _ in range(30):
    with sem:
        with lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        time.sleep(0.002)
        with lock:
            inside[0] -= 1
"""


def test_semaphore_counts_across_processes(rxd: Rxd) -> None:
    vmo = _vmo(rxd)
    rxd.run("""
import sys, rxkernel.client as rx
m = rx.Vmo.import_token(sys.argv[1]).map()
rx.Mutex.create(m, 0)
rx.Semaphore.create(m, 24, 3)
""", _token(rxd, vmo))
    procs = [rxd.spawn(SEM_WORKER, _token(rxd, vmo)) for _ in range(6)]
    _start(procs)
    _finish(procs)
    assert _u64(rxd, vmo, 72) == 3, "three at most, and three at some point"
    assert _u32(rxd, vmo, 24) == 3 and _u32(rxd, vmo, 28) == 0


EVENT_WAITER = HEADER + """
ev = rx.Event(m, 0)
t0 = time.monotonic()
assert not ev.wait(0.3)
waited = time.monotonic() - t0
assert 0.25 < waited < 5, waited
ready()
assert ev.wait(60)
print("set", round(waited, 2))
"""


def test_event_across_processes_with_timeout(rxd: Rxd) -> None:
    vmo = _vmo(rxd)
    procs = [rxd.spawn(EVENT_WAITER, _token(rxd, vmo)) for _ in range(3)]
    _start(procs)
    rxd.wait_for(lambda: _u32(rxd, vmo, 4) == 3, "three sleepers on the event")
    rxd.run(HEADER + "rx.Event(m, 0).set()", _token(rxd, vmo))
    assert all(out.startswith("set") for out in _finish(procs))
    assert _u32(rxd, vmo, 0) == 0b11 and _u32(rxd, vmo, 4) == 0, "set (bit 0), once (generation 1)"


BARRIER_WORKER = HEADER + """
rounds, parties = int(sys.argv[2]), int(sys.argv[3])
barrier = rx.Barrier(m, 0)
me = int(sys.argv[4])
phase = m.view[64:64 + 8 * parties].cast("Q")
go()
indices = []
for r in range(rounds):
    phase[me] = r + 1
    indices.append(barrier.wait())
    assert all(phase[i] >= r + 1 for i in range(parties)), (r, list(phase))
    if me == r % parties:
        time.sleep(0.01)   # one late arrival per round, so others really sleep
print(" ".join(map(str, indices)))
"""


def test_barrier_several_processes_and_generations(rxd: Rxd) -> None:
    vmo = _vmo(rxd)
    parties, rounds = 4, 20
    rxd.run("import sys, rxkernel.client as rx\nrx.Barrier.create(rx.Vmo.import_token(sys.argv[1]).map(), 0, 4)", _token(rxd, vmo))
    procs = [rxd.spawn(BARRIER_WORKER, _token(rxd, vmo), str(rounds), str(parties), str(i)) for i in range(parties)]
    _start(procs)
    outs = [[int(x) for x in out.split()] for out in _finish(procs)]
    for r in range(rounds):
        assert sorted(o[r] for o in outs) == list(range(parties)), r
    assert _u32(rxd, vmo, 0) == rounds << 16, "generation in bits 16-31, no arrivals counted"
    assert _u32(rxd, vmo, 8) == 0, "no sleepers"


def test_objects_meet_through_different_windows_of_one_vmo(rxd: Rxd) -> None:
    """One process maps the whole VMO, another only its second page: the mutex at VMO offset
    4096 is at mapping offset 4096 in one and 0 in the other, and still one lock."""
    vmo = _vmo(rxd, 2 * 4096)
    code = """
import sys, time, rxkernel.client as rx
vmo = rx.Vmo.import_token(sys.argv[1])
whole = sys.argv[2] == "whole"
m = vmo.map(offset=0 if whole else 4096, length=8192 if whole else 4096)
lock = rx.Mutex(m, 4096 if whole else 0)
counter = m.view[(4096 if whole else 0) + 64:(4096 if whole else 0) + 72].cast("Q")
print("ready", m.addr, flush=True)
sys.stdin.readline()
for _ in range(20000):
    with lock:
        counter[0] += 1
"""
    procs = [rxd.spawn(code, _token(rxd, vmo), w) for w in ("whole", "page", "whole", "page")]
    _start(procs)
    _finish(procs)
    assert _u64(rxd, vmo, 4096 + 64) == 80000


def test_mutex_waiter_times_out(rxd: Rxd) -> None:
    vmo = _vmo(rxd)
    holder = rxd.spawn(HOLDER, _token(rxd, vmo))
    _start([holder])
    rxd.run(HEADER + """
lock = rx.Mutex(m, 0)
t0 = time.monotonic()
assert not lock.acquire(timeout=0.3)
assert 0.25 < time.monotonic() - t0 < 5
assert not lock.acquire(blocking=False)
""", _token(rxd, vmo))
    holder.kill()
    holder.wait(30)
    assert os.path.exists(rxd.socket)


# -- regressions (from review repros) ---------------------------------------------------------------


def _wait_exit(p: subprocess.Popen[str], timeout: float) -> tuple[str, str] | None:
    """The (stdout, stderr) of p if it ends within `timeout`, else kill it and return None."""
    try:
        return p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate(timeout=QUICK_TIMEOUT)
        return None


def _init(rxd: Rxd, vmo: int, code: str) -> None:
    rxd.run(HEADER + code, _token(rxd, vmo))


COND_WAITER = HEADER + """
lock = rx.Mutex(m, 0)
cond = rx.Condition(m, 8, lock)
ready()
with lock:
    cond.wait()
    print("woke", lock.owner_died, flush=True)
"""


def test_requeued_condition_waiter_survives_notifier_death(rxd: Rxd) -> None:
    """notify_all names itself as the mutex owner in the requeue, so the moved waiter waits robustly:
    when the notifier dies holding the mutex, rxd hands the mutex to the waiter with OWNER_DIED."""
    vmo = _vmo(rxd)
    _init(rxd, vmo, "l = rx.Mutex.create(m, 0); rx.Condition.create(m, 8, l)")
    waiter = rxd.spawn(COND_WAITER, _token(rxd, vmo))
    _start([waiter])
    rxd.wait_for(lambda: _u32(rxd, vmo, 16) == 1, "the waiter asleep on the condition")
    time.sleep(0.1)
    notifier = rxd.spawn(HEADER + """
lock = rx.Mutex(m, 0)
cond = rx.Condition(m, 8, lock)
lock.acquire()
cond.notify_all()          # requeues the sleeper onto the mutex word
os.kill(os.getpid(), 9)    # dies holding the mutex
""", _token(rxd, vmo))
    notifier.wait(30)
    out = _wait_exit(waiter, 15)
    assert out is not None, f"requeued waiter stranded; word={_u32(rxd, vmo, 0):#x} sleepers={_u32(rxd, vmo, 4)}"
    assert out[0].split()[-2:] == ["woke", "True"], out
    assert _u32(rxd, vmo, 0) == 0 and _u32(rxd, vmo, 4) == 0


def test_barrier_late_arrival_waits_for_its_own_generation(rxd: Rxd) -> None:
    """An arrival delayed between reading the barrier word and counting itself (preemption; held
    here inside its CAS until generation 0 completes without it) is counted in generation 1 and
    waits for a second party there, instead of passing alone."""
    vmo = _vmo(rxd)
    _init(rxd, vmo, "rx.Barrier.create(m, 0, 2)")
    slow = rxd.spawn(HEADER + """
from rxkernel.client import _sync
real = _sync.lib
b = rx.Barrier(m, 0)
class Slow:
    held = False
    def __getattr__(self, name):
        return getattr(real, name)
    def rx_atomic_cas(self, addr, expected, desired):
        if addr == b.addr and not self.held:   # preempted between the load and the CAS
            self.held = True
            u64(64)[0] = 1
            while real.rx_atomic_load(b.addr) >> 16 == 0:
                time.sleep(0.01)
        return real.rx_atomic_cas(addr, expected, desired)
_sync.lib = Slow()
ready()
idx = b.wait()
print("passed", idx, b.generation, flush=True)
""", _token(rxd, vmo))
    _start([slow])
    rxd.wait_for(lambda: _u64(rxd, vmo, 64) == 1, "the slow arrival held between its load and its CAS")
    pair = [rxd.spawn(HEADER + "ready(); rx.Barrier(m, 0).wait()", _token(rxd, vmo)) for _ in range(2)]
    _start(pair)
    for p in pair:
        assert _wait_exit(p, 30) is not None
    try:
        early = slow.communicate(timeout=1.5)
    except subprocess.TimeoutExpired:
        pass
    else:
        raise AssertionError(f"the late arrival passed generation 1 alone: {early}")
    assert _u32(rxd, vmo, 0) == 1 << 16 | 1, f"generation 1 with one arrival: {_u32(rxd, vmo, 0):#x}"
    _init(rxd, vmo, "assert rx.Barrier(m, 0).wait() == 1")
    out = _wait_exit(slow, 30)
    assert out is not None and out[0].split() == ["passed", "0", "2"], out


def test_keyboard_interrupt_in_condition_wait(rxd: Rxd) -> None:
    """Ctrl-C in Condition.wait: the waiter leaves the count and re-acquires the mutex before the
    KeyboardInterrupt propagates (so `with lock:` releases it, no RuntimeError)."""
    vmo = _vmo(rxd)
    _init(rxd, vmo, "l = rx.Mutex.create(m, 0); rx.Condition.create(m, 8, l)")
    p = rxd.spawn(HEADER + """
lock = rx.Mutex(m, 0)
cond = rx.Condition(m, 8, lock)
ready()
try:
    with lock:
        try:
            cond.wait()
        finally:
            print("held" if lock.owner_pid == os.getpid() else "not-held", flush=True)
except BaseException as e:
    print(type(e).__name__, struct.unpack_from("<III", m.view, 8)[1] & 0xFFFF, lock.locked(), flush=True)
""", _token(rxd, vmo))
    _start([p])
    rxd.wait_for(lambda: _u32(rxd, vmo, 16) == 1, "asleep on the condition")
    p.send_signal(signal.SIGINT)
    out = _wait_exit(p, 20)
    assert out is not None and out[0].split() == ["held", "KeyboardInterrupt", "0", "False"], out
    _init(rxd, vmo, "l = rx.Mutex(m, 0); c = rx.Condition(m, 8, l)\nwith l: c.notify_all()")
    assert (_u32(rxd, vmo, 12) & 0xFFFF, _u32(rxd, vmo, 16), _u32(rxd, vmo, 4)) == (0, 0, 0), "no count leaked"


def test_event_pulse_wakes_sleeper(rxd: Rxd) -> None:
    """set(); clear() while a waiter sleeps: its wait() returns True (threading.Event)."""
    vmo = _vmo(rxd)
    _init(rxd, vmo, "rx.Event.create(m, 0)")
    # The waiter says only what wait() returned: whether it then sees the event set depends on
    # whether the setter's clear() ran yet (a race the test must not bet on); the word after
    # both are done says it is clear.
    w = rxd.spawn(HEADER + "ready(); e = rx.Event(m, 0); print(e.wait(10), flush=True)", _token(rxd, vmo))
    _start([w])
    rxd.wait_for(lambda: _u32(rxd, vmo, 4) == 1, "asleep on the event")
    _init(rxd, vmo, "e = rx.Event(m, 0); e.set(); e.clear()")
    out = _wait_exit(w, 20)
    assert out is not None and out[0].split() == ["True"], out
    assert _u32(rxd, vmo, 0) == 0b10, "clear, generation 1"


QUITTER = HEADER + """
from rxkernel.client import _sync
real = _sync._wait
def interrupted(*a, **k):
    real(*a, **k)
    raise KeyboardInterrupt   # a Ctrl-C arriving right after the wake
_sync._wait = interrupted
obj = rx.Mutex(m, 0) if sys.argv[2] == "mutex" else rx.Semaphore(m, 0)
go()
try:
    obj.acquire()
except KeyboardInterrupt:
    print("interrupted", flush=True)
sys.stdin.readline()       # stays alive: rxd's clean-up of a dead waiter must not be what saves the other
"""


def _abandoned_wake(rxd: Rxd, kind: str, init: str, release: str) -> None:
    """Two sleepers on a Mutex/Semaphore; the release wakes one, which leaves without the lock or
    unit (KeyboardInterrupt just after the wake). Every process stays alive until the end: rxd's
    clean-up after a death wakes a sleeper on a free robust word and would hide the bug."""
    vmo = _vmo(rxd)
    _init(rxd, vmo, init)
    releaser = rxd.spawn(HEADER + release + "\nsys.stdin.readline()", _token(rxd, vmo))
    _start([releaser])  # set up (holds the mutex): waits for its go
    quitter = rxd.spawn(QUITTER, _token(rxd, vmo), kind)
    _start([quitter])
    rxd.wait_for(lambda: _u32(rxd, vmo, 4) == 1, "first sleeper")
    sleeper = rxd.spawn(HEADER + f"""
obj = rx.Mutex(m, 0) if {kind!r} == "mutex" else rx.Semaphore(m, 0)
ready()
obj.acquire()
print("got it", flush=True)
""", _token(rxd, vmo))
    _start([sleeper])
    rxd.wait_for(lambda: _u32(rxd, vmo, 4) == 2, "second sleeper")
    time.sleep(0.1)
    assert releaser.stdin is not None
    releaser.stdin.write("go\n")
    releaser.stdin.flush()
    read_line(quitter, expect="interrupted")
    out = _wait_exit(sleeper, 10)
    for p in (releaser, quitter):
        assert p.stdin is not None
        p.stdin.write("\n")
        p.stdin.flush()
        assert _wait_exit(p, 20) is not None
    assert out is not None, f"second sleeper stranded; word={_u32(rxd, vmo, 0):#x} sleepers={_u32(rxd, vmo, 4)}"
    assert out[0].split() == ["got", "it"], out


def test_mutex_sleeper_leaving_after_a_wake_passes_it_on(rxd: Rxd) -> None:
    # The holder's release wakes one sleeper and clears WAITERS; the holder then takes and drops
    # the lock by the fast path (no wake): only the quitter passing its wake on reaches the other.
    _abandoned_wake(rxd, "mutex", "rx.Mutex.create(m, 0)", """
lock = rx.Mutex(m, 0)
lock.acquire()
go()
sys.stdin.readline()
lock.release()
for _ in range(100):
    with lock:
        pass
""")


def test_semaphore_sleeper_leaving_after_a_wake_passes_it_on(rxd: Rxd) -> None:
    _abandoned_wake(rxd, "semaphore", "rx.Semaphore.create(m, 0, 0)", "go()\nsys.stdin.readline()\nrx.Semaphore(m, 0).release(1)")


def test_acquire_timeout_minus_one_blocks_and_timeout_0_leaves_no_waiters_bit(rxd: Rxd) -> None:
    rxd.run("""
import threading, time
import rxkernel.client as rx
from rxkernel.native import lib
with rx.Vmo(4096) as vmo, vmo.map() as m:
    lock = rx.Mutex.create(m, 0)
    lock.acquire()
    res = {}
    def other():   # a second thread of the owning process: it must block, not think it owns the lock
        t0 = time.monotonic()
        res["t0"] = lock.acquire(timeout=0)
        res["word_after_t0"] = lib.rx_atomic_load(lock.addr)
        res["m1"] = lock.acquire(timeout=-1)
        res["dt"] = time.monotonic() - t0
        lock.release()
    t = threading.Thread(target=other)
    t.start()
    time.sleep(0.5)
    lock.release()
    t.join(30)
    assert res["t0"] is False and res["word_after_t0"] == __import__("os").getpid(), res
    assert res["m1"] is True and res["dt"] > 0.4, res
    assert lib.rx_atomic_load(lock.addr) == 0 and not lock.locked()
""", timeout=QUICK_TIMEOUT)  # half a second's work, unless the release never wakes the thread
