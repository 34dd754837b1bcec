"""Chaos against one rxd: a kill storm of real client processes, and a protocol fuzzer.

tests/test_chaos.py runs this with small bounds; `scripts/chaos --minutes N --seed S` runs it at
scale and prints the figures. Everything random comes from `random.Random` seeded from the one
seed a run prints, so a failure names the seed that reproduces its sequence of actions (timing
still varies from run to run: the kill moments are real time).

The cast, all real OS processes except the driver (the process that imports this module and
holds rxd's admin connection, a RawClient):

- two **survivors** (fresh `python` processes using rxkernel.client) share one VMO, S. Each
  writes generation after generation of a known pattern into its own region of S and checks it
  at once, takes S's Mutex now and then, and at the end both check both regions. Their pages of
  S are all committed before the baseline, so nothing the storm does to S may change the count.
- **victims**, forked from a zygote that imported rxkernel.client once (a fork is ~2 ms where a
  fresh interpreter is ~200 ms; the zygote reaps them, so no pid it kills can have been reused;
  they run at nice 10, since their own speed is not what is measured), each a new rx process:
  they map, touch, write, snapshot, share VMOs with each other through export tokens, map S,
  take its Mutex and hold it, wait on futex words in S (from their main thread and from
  others), and check what they read. The driver
  SIGKILLs them at random moments (some before they have even connected, most at a random delay
  after they said ready); a few are left to finish and must exit 0.
- the **fuzzer** (a process of its own: rxd kills a client that fails its control channel, and
  that must not be the driver; FuzzRunner starts another if it does) opens connection after
  connection and sends random bytes, broken hellos, truncated and oversized frames, frames of the
  wrong shape, and well-framed requests with random syscall numbers and random argument types
  (often ones that mean something: a VMO handle it was given, valid option bits, an address it
  mapped), on main, fault, control and thread channels; a faithful acker plays the control
  thread, so maps go through and faults on them are resolved for real. Every well-framed request
  must get its own reply, never RX_ERR_INTERNAL; every broken stream must be closed by rxd.
- the **well-behaved client** makes real syscalls and faults in a steady loop throughout and
  times each one: it must never see an error nor wait over STALL_SECONDS for anything.

Afterwards rxd must answer, the survivors' data must be intact, a Mutex a killed victim held
must be acquirable with `owner_died` (once with a survivor asleep on it when the holder dies,
once with nobody waiting), rxd's counters (committed bytes, processes, VMOs, hidden nodes,
futex waiters, export tokens) and its fd count must be back exactly at their baselines, and
rxd's log must hold no error-level line (an internal error: a handler's exception, a connection
task that failed inside rxd, a failed collapse) and nothing that is not a log line.

Run as a script (scripts/chaos does, after setting up .venv): `chaos.py --minutes N --seed S`.
"""

from __future__ import annotations

import argparse
import array
import collections
import dataclasses
import json
import math
import os
import queue
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import IO, Any, NoReturn

import msgpack

from rxkernel.proto import (
    CHANNEL_CONTROL,
    CHANNEL_FAULT,
    CHANNEL_MAIN,
    CHANNEL_THREAD,
    CLOSED,
    INFO_TOPIC_NAMES,
    NEED_DATA,
    PROTOCOL_MAGIC,
    PROTOCOL_VERSION,
    RX_DEFAULT_VMO_RIGHTS,
    RX_ERR_INTERNAL,
    RX_FUTEX_OWNER_DIED,
    RX_FUTEX_OWNER_MASK,
    RX_FUTEX_WAKE_ALL,
    RX_RIGHT_DUPLICATE,
    RX_RIGHT_MAP,
    RX_RIGHT_READ,
    RX_RIGHT_SAME_RIGHTS,
    RX_RIGHT_TRANSFER,
    RX_VM_MAP_RANDOM,
    RX_VM_MAP_RANGE,
    RX_VM_PERM_READ,
    RX_VM_PERM_WRITE,
    RX_VM_SPECIFIC,
    RX_VMO_CHILD_NO_WRITE,
    RX_VMO_CHILD_RESIZABLE,
    RX_VMO_CHILD_SLICE,
    RX_VMO_CHILD_SNAPSHOT,
    RX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE,
    RX_VMO_COMMIT_EAGER,
    RX_VMO_OP_CACHE_CLEAN,
    RX_VMO_OP_CACHE_CLEAN_INVALIDATE,
    RX_VMO_OP_CACHE_INVALIDATE,
    RX_VMO_OP_CACHE_SYNC,
    RX_VMO_OP_COMMIT,
    RX_VMO_OP_DECOMMIT,
    RX_VMO_OP_ZERO,
    RX_VMO_RESIZABLE,
    BY_NUMBER,
    SYSCALL_NUMBERS,
    SYSCALLS,
    Connection,
    ControlAck,
    ControlRequest,
    FaultReply,
    Hello,
    HelloReply,
    RemoteProtocolError,
    Reply,
    Role,
    RxError,
    status_name,
)

HERE = os.path.dirname(os.path.abspath(__file__))
PAGE = 4096

# A wait the well-behaved client may never exceed, for any one call or fault.
STALL_SECONDS = 1.0

# -- the shared VMO S: layout --------------------------------------------------------------------
S_PAGES = 64
S_SIZE = S_PAGES * PAGE
M_OFF = 0  # the storm's Mutex: victims and survivors take it
M2_OFF = 16  # held by a victim killed with nobody waiting: the next locker gets owner_died
M3_OFF = 32  # held by a victim killed while a survivor sleeps on it: rxd hands it over
W_OFF = 64  # a plain futex word victims wait on and wake
LOCKED_PAGE = 1  # written only by whoever holds M: a holder that reads back another's bytes caught two holders
SCRATCH_PAGES = range(2, 16)  # victims write here freely
REGION_FIRST = {0: 16, 1: 32}  # each survivor's pattern region: its first page
REGION_PAGES = 16
CHURN_PAGES = range(48, 64)  # victims write here after snapshotting S: copy-on-write splits

# Fields of RX_INFO_KMEM_STATS that must be back exactly where they were once every victim,
# fuzzer connection and the well-behaved client are gone (and the fd count of rxd itself).
OWNER_DIED, OWNER_MASK = RX_FUTEX_OWNER_DIED, RX_FUTEX_OWNER_MASK

BASELINE_FIELDS = ("committed_bytes", "num_processes", "num_vmos", "num_hidden_nodes", "futex_waiters", "export_tokens")


class ChaosFailure(AssertionError):
    pass


def _emit(obj: dict[str, Any]) -> None:
    """One JSON line on stdout, in one write (lines under PIPE_BUF do not interleave: every
    victim shares the zygote's stdout)."""
    data = (json.dumps(obj) + "\n").encode()
    if len(data) > 3800:
        obj = {**obj, "tb": str(obj.get("tb", ""))[-3000:], "truncated": True}
        data = (json.dumps(obj) + "\n").encode()
    os.write(1, data)


def region_bytes(who: int, gen: int) -> bytes:
    """A survivor's region at generation `gen`: every 24 bytes of page p say (who+1, gen, p)."""
    return b"".join(struct.pack("<QQQ", who + 1, gen, p) * 170 + b"\xaa" * 16 for p in range(REGION_PAGES))


def region_page_consistent(data: bytes, who: int, page: int) -> bool:
    """A page read while its survivor may be rewriting it: the generation may be torn, but the
    owner and page fields never change, so they must be whole (not zeros, not another page)."""
    q = array.array("Q", data[: 170 * 24])
    return set(q[0::3]) == {who + 1} and set(q[2::3]) == {page}


def describe_page(data: bytes) -> str:
    """What a survivor page that failed region_page_consistent holds instead, in a few words."""
    if not any(data):
        return "all zeros"
    q = array.array("Q", data[: 170 * 24])
    return (f"owner fields {sorted(set(q[0::3]))[:4]}, generations {sorted(set(q[1::3]))[:4]}, "
            f"page fields {sorted(set(q[2::3]))[:4]}, first bytes {data[:16].hex()}")


def gift_bytes(pseed: int, size: int) -> bytes:
    return random.Random(pseed).randbytes(size)


class LineReader:
    """Lines from a file descriptor with a timeout (no threads; select + os.read)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        self.eof = False

    def poll(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf and not self.eof:
            left = max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                self.eof = True
                break
            self.buf += chunk
        if b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            return line.decode()
        return None


# ================================================================================================
# Victims (run in children of the zygote)
# ================================================================================================


@dataclasses.dataclass
class _Own:
    vmo: Any  # rx.Vmo
    size: int
    mapping: Any | None  # rx.Mapping
    expected: dict[int, int]  # offset -> byte value (offsets not listed read as zero)


class Victim:
    """One victim's life: a seeded random mix of operations, each checking what it can."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import rxkernel.client as rx

        self.rx = rx
        self.spec = spec
        self.id: int = spec["id"]
        self.rng = random.Random(spec["seed"])
        self.finish: bool = spec["mode"] == "finish"
        self.own: list[_Own] = []
        self.kids: list[tuple[Any, Any]] = []  # S's children and their mappings (kept alive)
        self.gifts: list[Any] = []  # exported VMOs, kept so their tokens stay claimable
        self.imported: list[tuple[Any, Any]] = []
        self.threads: list[threading.Thread] = []
        self.s: Any = None
        self.sm: Any = None
        self.lock: Any = None
        self.history: collections.deque[str] = collections.deque(maxlen=12)

    def fail(self, what: str) -> NoReturn:
        raise ChaosFailure(f"victim {self.id} (seed {self.spec['seed']}): {what}\n  its last operations: {' '.join(self.history)}")

    # -- the life ---------------------------------------------------------------------------------

    def run(self) -> None:
        rx = self.rx
        rx.rx_process_self()  # connect
        _emit({"id": self.id, "ev": "ready"})
        if self.spec["role"] == "hold":
            self.hold(self.spec["hold_off"])
            return
        if self.spec.get("s_token"):
            self.s = rx.Vmo.import_token(self.spec["s_token"])
            self.sm = self.s.map(options=self.rng.choice([0, rx.RX_VM_MAP_RANDOM]))
            self.lock = rx.Mutex(self.sm, M_OFF)
        ops: list[tuple[Callable[[], None], float]] = [
            (self.op_new_vmo, 3), (self.op_touch, 6), (self.op_vmo_write, 3), (self.op_verify, 3),
            (self.op_snapshot, 2), (self.op_zero, 1), (self.op_drop, 1), (self.op_gift, 1.5),
            (self.op_import, 1.5), (self.op_sleep, 1),
        ]
        if self.s is not None:
            ops += [(self.op_mutex, 3), (self.op_futex_wait, 2), (self.op_futex_wake, 1.5), (self.op_s_child, 2),
                    (self.op_s_churn, 2), (self.op_s_read, 2), (self.op_thread_wait, 1)]
        fns, weights = [f for f, _ in ops], [w for _, w in ops]
        n_ops = self.rng.randint(5, 40) if self.finish else 1 << 30
        end = time.monotonic() + 300
        for _ in range(n_ops):
            op = self.rng.choices(fns, weights)[0]
            self.history.append(op.__name__[3:])
            op()
            if time.monotonic() > end:
                self.fail("still alive after 300 s: the driver should have killed it")
        for own in self.own:
            self.check(own)
        for t in self.threads:
            t.join(10)
            if t.is_alive():
                self.fail("a waiting thread did not return within 10 s of its deadline")
        if self.rng.random() < 0.5:
            rx.disconnect()

    def hold(self, offset: int) -> None:
        rx = self.rx
        s = rx.Vmo.import_token(self.spec["s_token"])
        m = s.map()
        lock = rx.Mutex(m, offset)
        if not lock.acquire(timeout=30):
            self.fail(f"could not take the Mutex at {offset} to hold it")
        _emit({"id": self.id, "ev": "held"})
        time.sleep(600)

    # -- helpers ------------------------------------------------------------------------------------

    def pick_own(self) -> _Own | None:
        return self.rng.choice(self.own) if self.own else None

    def check(self, own: _Own) -> None:
        """Bytes it wrote read back, mapped and through rx_vmo_read; a few it did not read zero."""
        offs = list(own.expected)
        sample = self.rng.sample(offs, min(len(offs), 16)) + [self.rng.randrange(own.size) for _ in range(4)]
        for off in sample:
            want = own.expected.get(off, 0)
            got = own.vmo.read(off, 1)[0]
            if got != want:
                self.fail(f"rx_vmo_read at {off} of a {own.size}-byte VMO: {got}, wrote {want}")
            if own.mapping is not None and own.mapping.view[off] != want:
                self.fail(f"mapped byte at {off}: {own.mapping.view[off]}, wrote {want}")

    def wait_deadline(self) -> int | None:
        rx = self.rx
        if not self.finish and self.rng.random() < 0.3:
            return None  # waits until woken or killed
        return int(rx.rx_clock_get_monotonic() + self.rng.uniform(0, 0.3) * 1e9)

    # -- operations ---------------------------------------------------------------------------------

    def op_new_vmo(self) -> None:
        rx = self.rx
        size = self.rng.choice([1, 1, 4, 16, 64, 256, 1024, 4096]) * PAGE
        vmo = rx.Vmo(size)
        mapping = None
        if self.rng.random() < 0.8:
            options = self.rng.choice([0, 0, rx.RX_VM_MAP_RANDOM, rx.RX_VM_MAP_RANGE if size <= 1 << 20 else 0])
            mapping = vmo.map(options=options)
        self.own.append(_Own(vmo, size, mapping, {}))

    def op_touch(self) -> None:
        own = self.pick_own()
        if own is None or own.mapping is None:
            return self.op_new_vmo()
        for _ in range(self.rng.randint(1, 32)):
            off = self.rng.randrange(own.size)
            value = self.rng.randrange(1, 256)
            own.mapping.view[off] = value
            own.expected[off] = value
            if own.mapping.view[off] != value:
                self.fail(f"a store at {off} did not stick")

    def op_vmo_write(self) -> None:
        own = self.pick_own()
        if own is None:
            return self.op_new_vmo()
        off = self.rng.randrange(own.size)
        data = self.rng.randbytes(min(self.rng.randint(1, 64), own.size - off))
        own.vmo.write(off, data)
        for i, b in enumerate(data):
            own.expected[off + i] = b
        if own.vmo.read(off, len(data)) != data:
            self.fail("rx_vmo_read after rx_vmo_write differs")

    def op_verify(self) -> None:
        own = self.pick_own()
        if own is not None:
            self.check(own)

    def op_snapshot(self) -> None:
        rx = self.rx
        own = self.pick_own()
        if own is None:
            return self.op_new_vmo()
        child = own.vmo.child(rx.RX_VMO_CHILD_SNAPSHOT)
        frozen = dict(own.expected)
        cm = child.map() if self.rng.random() < 0.7 else None
        kid = _Own(child, own.size, cm, dict(frozen))
        # Diverge both ways; each must keep seeing only its own writes.
        for target, other in ((own, kid), (kid, own)):
            off = self.rng.randrange(own.size)
            value = self.rng.randrange(1, 256)
            if target.mapping is not None and self.rng.random() < 0.7:
                target.mapping.view[off] = value
            else:
                target.vmo.write(off, bytes([value]))
            target.expected[off] = value
            want = other.expected.get(off, 0)
            if other.vmo.read(off, 1)[0] != want:
                self.fail(f"a write at {off} to one side of a snapshot showed through to the other")
        self.check(kid)
        self.check(own)
        if self.rng.random() < 0.5:
            self.own.append(kid)
        else:
            if cm is not None:
                cm.unmap()
            child.close()

    def op_zero(self) -> None:
        rx = self.rx
        own = self.pick_own()
        if own is None:
            return
        first = self.rng.randrange(own.size // PAGE)
        pages = self.rng.randint(1, own.size // PAGE - first)
        op = self.rng.choice([rx.RX_VMO_OP_ZERO, rx.RX_VMO_OP_DECOMMIT])
        own.vmo.op_range(op, first * PAGE, pages * PAGE)
        lo, hi = first * PAGE, (first + pages) * PAGE
        own.expected = {k: v for k, v in own.expected.items() if not lo <= k < hi}
        self.check(own)

    def op_drop(self) -> None:
        if not self.own:
            return
        own = self.own.pop(self.rng.randrange(len(self.own)))
        if own.mapping is not None:
            own.mapping.unmap()
        own.vmo.close()

    def op_gift(self) -> None:
        rx = self.rx
        size = self.rng.choice([1, 4, 16]) * PAGE
        pseed = self.rng.getrandbits(32)
        vmo = rx.Vmo(size)
        data = gift_bytes(pseed, size)
        if self.rng.random() < 0.5:
            with vmo.map() as m:
                m.view[:] = data
        else:
            vmo.write(0, data)
        token = vmo.export(rx.RX_RIGHT_READ | rx.RX_RIGHT_MAP)
        self.gifts.append(vmo)
        _emit({"id": self.id, "ev": "gift", "token": token, "pseed": pseed, "size": size})

    def op_import(self) -> None:
        rx = self.rx
        gifts: list[list[Any]] = self.spec.get("gifts", [])
        if not gifts:
            return
        token, pseed, size = gifts.pop()
        try:
            handle = rx.rx_handle_import(token)
        except rx.RxError as e:
            if e.name != "RX_ERR_NOT_FOUND":  # its exporter died (or exited) before we came
                raise
            return
        vmo = rx.Vmo(handle=handle)
        want = gift_bytes(pseed, size)
        m = rx.Mapping(rx.rx_vmar_map(handle, 0, size, rx.RX_VM_PERM_READ), size)
        if bytes(m.view) != want or vmo.read(0, size) != want:
            self.fail(f"a gift of {size} bytes reads differently from what its exporter wrote")
        self.imported.append((vmo, m))

    def op_sleep(self) -> None:
        time.sleep(self.rng.uniform(0, 0.03))

    def op_mutex(self) -> None:
        lock = self.lock
        if not lock.acquire(timeout=30):
            self.fail("S's Mutex not acquired within 30 s")
        try:
            if lock.owner_died:
                _emit({"id": self.id, "ev": "owner_died"})
            mark = bytes([self.id % 251 + 1]) * PAGE
            lo = LOCKED_PAGE * PAGE
            self.sm.view[lo : lo + PAGE] = mark
            time.sleep(self.rng.choice([0, 0, 0.001, self.rng.uniform(0, 0.3)]))  # held: maybe killed here
            if self.sm.view[lo : lo + PAGE] != mark:
                self.fail("another process wrote the Mutex's page while this one held the Mutex")
        finally:
            lock.release()

    def op_futex_wait(self) -> None:
        rx = self.rx
        try:
            rx.rx_futex_wait(self.sm.addr + W_OFF, 0, self.wait_deadline())
        except rx.RxError as e:
            if e.name not in ("RX_ERR_TIMED_OUT", "RX_ERR_BAD_STATE"):
                raise

    def op_futex_wake(self) -> None:
        rx = self.rx
        rx.rx_futex_wake(self.sm.addr + W_OFF, self.rng.choice([1, 2, rx.RX_FUTEX_WAKE_ALL]))

    def op_thread_wait(self) -> None:
        deadline = self.wait_deadline()
        if deadline is None and self.finish:
            return

        def wait() -> None:
            try:
                self.op_futex_wait_at(deadline)
            except BaseException:
                _emit({"id": self.id, "ev": "error", "tb": traceback.format_exc()})
                os._exit(1)

        t = threading.Thread(target=wait, daemon=True)
        t.start()
        self.threads.append(t)

    def op_futex_wait_at(self, deadline: int | None) -> None:
        rx = self.rx
        try:
            rx.rx_futex_wait(self.sm.addr + W_OFF, 0, deadline)
        except rx.RxError as e:
            if e.name not in ("RX_ERR_TIMED_OUT", "RX_ERR_BAD_STATE"):
                raise

    def op_s_child(self) -> None:
        rx = self.rx
        kind = self.rng.choice(["snapshot", "snapshot", "alow", "slice"])
        who = self.rng.randrange(2)
        first = REGION_FIRST[who]
        if kind == "slice":
            child = self.s.child(rx.RX_VMO_CHILD_SLICE, first * PAGE, REGION_PAGES * PAGE)
            base = 0
        else:
            option = rx.RX_VMO_CHILD_SNAPSHOT if kind == "snapshot" else rx.RX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE
            child = self.s.child(option)  # S is a root: neither kind may be refused
            base = first * PAGE
        m = child.map(rx.RX_VM_PERM_READ if self.rng.random() < 0.5 else rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE)
        for _ in range(self.rng.randint(1, 4)):
            p = self.rng.randrange(REGION_PAGES)
            page = bytes(m.view[base + p * PAGE : base + (p + 1) * PAGE])
            if not region_page_consistent(page, who, p):
                self.fail(f"page {p} of survivor {who}'s region through a {kind} of S is not its pattern")
        if kind != "slice" and self.rng.random() < 0.5:
            # a copy-on-write child's own write (its handle has WRITE): a split of S's page
            off = self.rng.choice(list(CHURN_PAGES)) * PAGE + self.rng.randrange(PAGE - 3)
            if m.view.readonly or self.rng.random() < 0.5:
                child.write(off, b"kid")
            else:
                m.view[off : off + 3] = b"kid"
            if child.read(off, 3) != b"kid" or m.view[off : off + 3] != b"kid":
                self.fail(f"a {kind} child of S does not read its own write")
        self.kids.append((child, m))
        if len(self.kids) > 4 or self.rng.random() < 0.3:
            old, om = self.kids.pop(0)
            om.unmap()
            old.close()

    def op_s_churn(self) -> None:
        for _ in range(self.rng.randint(1, 8)):
            page = self.rng.choice([*CHURN_PAGES, *SCRATCH_PAGES])
            off = page * PAGE + self.rng.randrange(PAGE - 8)
            self.sm.view[off : off + 8] = self.rng.randbytes(8)

    def op_s_read(self) -> None:
        who = self.rng.randrange(2)
        p = self.rng.randrange(REGION_PAGES)
        lo = (REGION_FIRST[who] + p) * PAGE
        mapped = bytes(self.sm.view[lo : lo + PAGE])
        if not region_page_consistent(mapped, who, p):
            read = self.s.read(lo, PAGE)
            again = bytes(self.sm.view[lo : lo + PAGE])
            self.fail(f"page {p} of survivor {who}'s region (S page {lo // PAGE}), mapped at {self.sm.addr + lo:#x}, is "
                      f"not its pattern: {describe_page(mapped)}; rx_vmo_read then: {describe_page(read)}; mapped again: "
                      f"{describe_page(again)}")
        read = self.s.read(lo, PAGE)
        if not region_page_consistent(read, who, p):
            self.fail(f"page {p} of survivor {who}'s region, rx_vmo_read, is not its pattern: {describe_page(read)}")


# ================================================================================================
# The zygote: forks victims on request, kills and reaps them (their parent: no pid is ever reused
# under the driver's hands)
# ================================================================================================


def zygote_main() -> None:
    import rxkernel.client  # noqa: F401  (imported once, here: every fork inherits it)

    # Victims' own Python is not what is measured: at nice 10 they leave the CPUs to rxd, the
    # fuzzer and the well-behaved client first (rxd serves them at its own priority).
    os.nice(10)

    reader = LineReader(0)
    pids: dict[int, int] = {}  # victim id -> pid, until reaped
    ids: dict[int, int] = {}  # pid -> victim id
    devnull = os.open(os.devnull, os.O_RDONLY)

    def reap() -> bool:
        """Reap one child that has ended and report it; False if none has."""
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        vid = ids.pop(pid, None) if pid else None
        if vid is not None:
            del pids[vid]
            _emit({"id": vid, "ev": "exit", "code": os.waitstatus_to_exitcode(status)})
        return pid != 0

    quitting = False
    while not (reader.eof or quitting):
        line = reader.poll(0.005)
        while line is not None:
            cmd = json.loads(line)
            if cmd["op"] == "spawn":
                spec = cmd["spec"]
                pid = os.fork()
                if pid == 0:
                    os.dup2(devnull, 0)
                    code = 0
                    try:
                        Victim(spec).run()
                    except BaseException:
                        _emit({"id": spec["id"], "ev": "error", "tb": traceback.format_exc()})
                        code = 1
                    os._exit(code)
                pids[spec["id"]] = pid
                ids[pid] = spec["id"]
                _emit({"id": spec["id"], "ev": "spawned", "pid": pid})
            elif cmd["op"] == "kill":
                pid = pids.get(cmd["id"], 0)
                if pid:
                    os.kill(pid, signal.SIGKILL)
            elif cmd["op"] == "quit":
                quitting = True
            line = reader.poll(0)
        while pids and reap():
            pass
    for pid in pids.values():
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while pids and time.monotonic() < deadline:
        if not reap():
            time.sleep(0.01)


# ================================================================================================
# Survivors
# ================================================================================================


def survivor_main(who: int, token: str | None) -> None:
    import rxkernel.client as rx

    try:
        if who == 0:
            s = rx.Vmo(S_SIZE)
            s.commit(0, S_SIZE)
        else:
            assert token is not None
            s = rx.Vmo.import_token(token)
        m = s.map()
        if who == 0:
            m.view[:] = bytes(S_SIZE)  # every page mapped writable now, not during the storm
            for off in (M_OFF, M2_OFF, M3_OFF):
                rx.Mutex.create(m, off)
        first = REGION_FIRST[who] * PAGE
        region = slice(first, first + REGION_PAGES * PAGE)
        gen = 1
        m.view[region] = region_bytes(who, gen)
        lock = rx.Mutex(m, M_OFF)
        rx.rx_futex_wake(m.addr + W_OFF, 1)  # opens this thread's channel before the baseline
        reply: dict[str, Any] = {"ev": "ready"}
        if who == 0:
            reply["token_driver"] = s.export()
            reply["token_peer"] = s.export()
        _emit(reply)
        reader = LineReader(0)
        line = reader.poll(120)
        if line != "go":
            raise ChaosFailure(f"survivor {who}: expected 'go', got {line!r}")
        iterations = owner_died = 0
        while True:
            line = reader.poll(0)
            if line is not None or reader.eof:
                break
            iterations += 1
            gen += 1
            want = region_bytes(who, gen)
            m.view[region] = want
            if m.view[region] != want:
                raise ChaosFailure(f"survivor {who}: generation {gen} of its region does not read back")
            if iterations % 8 == 0 and s.read(first, REGION_PAGES * PAGE) != want:
                raise ChaosFailure(f"survivor {who}: rx_vmo_read of generation {gen} differs from what it wrote")
            if iterations % 4 == 0:
                if not lock.acquire(timeout=30):
                    raise ChaosFailure(f"survivor {who}: S's Mutex not acquired within 30 s")
                try:
                    owner_died += lock.owner_died
                    mark = bytes([0xF0 + who]) * PAGE
                    lo = LOCKED_PAGE * PAGE
                    m.view[lo : lo + PAGE] = mark
                    time.sleep(0.001)
                    if m.view[lo : lo + PAGE] != mark:
                        raise ChaosFailure(f"survivor {who}: another process wrote the Mutex's page while it held it")
                finally:
                    lock.release()
            time.sleep(0.01)
        if line != "stop":
            raise ChaosFailure(f"survivor {who}: expected 'stop', got {line!r}")
        want = region_bytes(who, gen)
        if m.view[region] != want or s.read(first, REGION_PAGES * PAGE) != want:
            raise ChaosFailure(f"survivor {who}: its region lost generation {gen} by the end")
        _emit({"ev": "stopped", "gen": gen, "iterations": iterations, "owner_died": owner_died})
        while True:
            line = reader.poll(300)
            if line is None or line == "exit":
                break
            cmd = line.split()
            if cmd[0] == "verify":
                other, other_gen = int(cmd[1]), int(cmd[2])
                lo = REGION_FIRST[other] * PAGE
                want = region_bytes(other, other_gen)
                ok = m.view[lo : lo + REGION_PAGES * PAGE] == want and s.read(lo, REGION_PAGES * PAGE) == want
                _emit({"ev": "verified", "ok": ok})
            elif cmd[0] == "acquire":
                off = int(cmd[1])
                mutex = rx.Mutex(m, off)
                acquired = mutex.acquire(timeout=30)
                died = acquired and mutex.owner_died
                if acquired:
                    mutex.release()
                word = int.from_bytes(m.view[off : off + 4], "little")  # release clears owner and flag
                clean = not word & (OWNER_DIED | OWNER_MASK)
                _emit({"ev": "acquired", "ok": acquired, "owner_died": died, "clean": clean})
        rx.disconnect()
    except BaseException:
        _emit({"ev": "error", "tb": traceback.format_exc()})
        os._exit(1)


# ================================================================================================
# The well-behaved client
# ================================================================================================


def wellbehaved_main(seed: int) -> None:
    import rxkernel.client as rx

    rng = random.Random(seed)
    stats: dict[str, Any] = {"calls": 0, "faults": 0, "worst": 0.0, "worst_op": "", "errors": [], "stalls": []}
    current: list[Any] = [None, 0.0]  # what is running now, since when
    done = threading.Event()

    def watchdog() -> None:
        reported = None
        while not done.wait(0.05):
            what, since = current
            if what is not None and time.monotonic() - since > STALL_SECONDS and reported != (what, since):
                reported = (what, since)
                stats["stalls"].append(f"{what} still running after {time.monotonic() - since:.2f} s")

    def timed(what: str, fn: Callable[[], Any]) -> Any:
        current[1] = t0 = time.monotonic()
        current[0] = what
        try:
            return fn()
        except Exception as e:
            stats["errors"].append(f"{what}: {type(e).__name__}: {e}")
            return None
        finally:
            elapsed = time.monotonic() - t0
            current[0] = None
            stats["calls"] += 1
            if elapsed > stats["worst"]:
                stats["worst"], stats["worst_op"] = elapsed, what

    try:
        rx.rx_process_self()
        vmo = rx.rx_vmo_create(256 * PAGE)
        addr = rx.rx_vmar_map(vmo, 0, 256 * PAGE, rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE, rx.RX_VM_MAP_RANDOM)
        view = rx.rx_view(addr, 256 * PAGE)
        word = addr + 256 * PAGE - 4
        rx.rx_futex_wake(word, 1)
        threading.Thread(target=watchdog, daemon=True).start()
        reader = LineReader(0)
        _emit({"ev": "ready"})
        while reader.poll(0) is None and not reader.eof:
            op = rng.randrange(7)
            if op == 0:
                def create_write_read() -> None:
                    h = rx.rx_vmo_create(rng.choice([1, 16]) * PAGE)
                    data = rng.randbytes(64)
                    rx.rx_vmo_write(h, 100, data)
                    if rx.rx_vmo_read(h, 100, 64) != data or rx.rx_vmo_get_size(h) not in (PAGE, 16 * PAGE):
                        raise ChaosFailure("a fresh VMO does not read what was written")
                    rx.rx_handle_close(h)
                timed("create/write/read/close", create_write_read)
            elif op in (1, 2):
                for _ in range(rng.randint(1, 8)):
                    off = rng.randrange(255) * PAGE + rng.randrange(PAGE)
                    value = rng.randrange(1, 256)

                    def touch() -> None:
                        view[off] = value
                        if view[off] != value:
                            raise ChaosFailure("a store did not stick")
                    timed("fault (touch)", touch)
                    stats["faults"] += 1
                if rng.random() < 0.2:
                    timed("decommit", lambda: rx.rx_vmo_op_range(vmo, rx.RX_VMO_OP_DECOMMIT, 0, 255 * PAGE))
            elif op == 3:
                def snapshot() -> None:
                    child = rx.rx_vmo_create_child(vmo, rx.RX_VMO_CHILD_SNAPSHOT, 0, 256 * PAGE)
                    rx.rx_handle_close(child)
                timed("snapshot", snapshot)
            elif op == 4:
                timed("futex wake", lambda: rx.rx_futex_wake(word, 1))
            elif op == 5:
                def short_wait() -> None:
                    try:
                        rx.rx_futex_wait(word, 0, rx.rx_clock_get_monotonic() + 2_000_000)
                    except rx.RxError as e:
                        if e.name != "RX_ERR_TIMED_OUT":
                            raise
                    else:
                        raise ChaosFailure("a futex wait nobody woke returned before its deadline")
                timed("futex wait 2 ms", short_wait)
            else:
                timed("get_info", lambda: rx.rx_object_get_info(rx.rx_process_self(), rx.RX_INFO_TASK_STATS))
            time.sleep(0.004)
        done.set()
        _emit({"ev": "result", **stats})
    except BaseException:
        _emit({"ev": "error", "tb": traceback.format_exc()})
        os._exit(1)


# ================================================================================================
# The fuzzer (a process of its own)
# ================================================================================================

_VMO_RESULTS = {4, 6, 10, 16}  # syscalls whose result is a handle, maybe a VMO's
_MAP_BASE = 0x7E0000000000  # where the fuzzer tells rxd it maps (it never touches these)
_TOKEN_RESULTS = {5, 40}  # ... a token or a ticket
_NOT_TO_MUTATE = {SYSCALL_NUMBERS["rx_futex_wait"], SYSCALL_NUMBERS["rx_fork_cancel"], SYSCALL_NUMBERS["rx_fork_claim"]}
_FUTEX_WAIT = SYSCALL_NUMBERS["rx_futex_wait"]
# The waits that block their thread channel, and where their deadline argument is.
_BLOCKING = {_FUTEX_WAIT: 2, SYSCALL_NUMBERS["rx_system_wait_pressure"]: 1, SYSCALL_NUMBERS["rx_job_wait_events"]: 2}
_SMALL = [0, 1, 2, 3, 4, 7, 8, 16, 31, 32, 63, 64, 100, 255, 256, 4095, 4096, 4097, 8192, 12288, 1 << 16, 1 << 20, 1 << 24]
_HUGE = [(1 << 40) - 4096, 1 << 40, (1 << 40) + 4096, 1 << 47, (1 << 63) - 1, 1 << 63, (1 << 64) - 4096, (1 << 64) - 1]
_U32 = [0, 1, 2, 3, 4, 5, 7, 8, 15, 16, 31, 32, 0x7F, 0xFF, 1 << 16, (1 << 30) - 1, 1 << 30, 1 << 31, (1 << 32) - 1]
_NEG = [-1, -2, -4096, -(1 << 31), -(1 << 32), -(1 << 63)]
_ACK_OF_NOTHING = msgpack.packb([-1, 1])
# Frames every rxd channel must close as broken streams (after the hello).
_BREAKERS = [
    msgpack.packb(7), msgpack.packb("a string"), msgpack.packb({"a": 1}), msgpack.packb(None), msgpack.packb(1.5),
    msgpack.packb(b"bytes"), msgpack.packb([]), msgpack.packb([1]), msgpack.packb(["id", 1]), msgpack.packb([None, 1]),
    _ACK_OF_NOTHING, msgpack.packb([1.5, 1]), msgpack.packb([[1], 1]),
    b"\x93\x01\x0a\x81\x91\x01\x02",  # [1, 10, {[1]: 2}]: an unhashable key
    b"\x81\x91\x01\x02", b"\x91\x81\x91\x01\x02", b"\xc1", b"\xc1\xc1\xc1", b"\x91" * 5000 + b"\x01",
]


@dataclasses.dataclass
class FuzzStats:
    frames: int = 0
    connections: int = 0
    closed_by_rxd: int = 0  # connections rxd closed after a broken frame, without our EOF first
    replies: int = 0
    failures: list[str] = dataclasses.field(default_factory=list)


class _Peer:
    """One fuzz connection's socket and the sans-IO client end parsing what rxd sends."""

    def __init__(self, path: str, kind: int) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(20)
        self.sock.connect(path)
        self.conn = Connection(Role.CLIENT, kind=kind)
        self.kind = kind

    def hello(self, token: bytes | None = None) -> HelloReply:
        self.sock.sendall(self.conn.send(Hello(self.kind, token)))
        event = self.next_event()
        if not isinstance(event, HelloReply):
            raise ChaosFailure(f"hello on channel kind {self.kind}: {event!r}")
        return event

    def next_event(self, timeout: float = 20) -> Any:
        self.sock.settimeout(timeout)
        while True:
            event = self.conn.next_event()
            if event is not NEED_DATA:
                return event
            self.conn.receive_data(self.sock.recv(1 << 20))

    def until_eof(self, timeout: float = 20) -> bool:
        """Read (and drop) until rxd closes; False if it did not within `timeout`."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not self.sock.recv(1 << 20):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
        return False

    def close(self) -> None:
        self.sock.close()


class _Acker:
    """A faithful control thread for a fuzz process: acks every request rxd sends (closing the
    store fds that come with them), sometimes after an ack of nothing first."""

    def __init__(self, peer: _Peer, seed: int) -> None:
        self.peer = peer
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.failure = ""
        self._wake_r, self._wake_w = os.pipe()  # stop() writes a byte: the thread ends at once
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def send(self, data: bytes) -> None:
        with self.lock:
            self.peer.sock.sendall(data)

    def _run(self) -> None:
        sock, conn = self.peer.sock, self.peer.conn
        try:
            while True:
                ready, _, _ = select.select([sock.fileno(), self._wake_r], [], [], 30)
                if self._wake_r in ready or not ready:
                    return
                data, ancdata, _, _ = sock.recvmsg(1 << 16, socket.CMSG_SPACE(16 * 4))
                for level, kind, payload in ancdata:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                        for fd in array.array("i", payload[: len(payload) - len(payload) % 4]):
                            os.close(fd)
                conn.receive_data(data)
                while isinstance(event := conn.next_event(), ControlRequest):
                    if self.rng.random() < 0.1:
                        self.send(msgpack.packb([(1 << 63) + self.rng.getrandbits(32), 0]))
                    self.send(conn.send(ControlAck(event.seq, 0)))
                if event is CLOSED:
                    return
        except (OSError, RemoteProtocolError):
            return  # the fuzzer broke or closed the channel
        except Exception:
            self.failure = f"the control acker failed: {traceback.format_exc()}"

    def stop(self) -> None:
        if self._wake_w >= 0:
            os.write(self._wake_w, b"x")
            self.thread.join(10)
            if self.thread.is_alive():
                self.failure = self.failure or "the control acker did not stop within 10 s"
            os.close(self._wake_w)
            os.close(self._wake_r)
            self._wake_w = self._wake_r = -1


class Fuzzer:
    def __init__(self, path: str, seed: int, frames: int, seconds: float) -> None:
        self.path = path
        self.seed = seed
        self.target = frames
        self.seconds = seconds
        self.stats = FuzzStats()

    def run(self, progress: Callable[[FuzzStats], None] | None = None) -> FuzzStats:
        end = time.monotonic() + self.seconds
        last = time.monotonic()
        i = 0
        while self.stats.frames < self.target and time.monotonic() < end and len(self.stats.failures) < 20:
            rng = random.Random(f"{self.seed}:{i}")
            try:
                self.connection(rng)
            except ChaosFailure as e:
                self.stats.failures.append(f"fuzz connection {i} (seed {self.seed}): {e}")
            except (OSError, RxError) as e:
                self.stats.failures.append(f"fuzz connection {i} (seed {self.seed}): {type(e).__name__}: {e}")
            i += 1
            if progress is not None and time.monotonic() - last > 1:
                last = time.monotonic()
                progress(self.stats)
        return self.stats

    # -- values -----------------------------------------------------------------------------------

    def value(self, rng: random.Random, depth: int = 0) -> Any:
        r = rng.randrange(12 if depth < 2 else 9)
        if r == 0:
            return None
        if r == 1:
            return rng.choice([True, False])
        if r == 2:
            return rng.choice([0.0, -1.5, 4096.0, math.inf, -math.inf, math.nan, 1e300])
        if r == 3:
            return rng.choice(["", "x", "0" * 32, "rx_vmo_create", "\u00e9\u4e2d\U0001f600", rng.randbytes(16).hex()])
        if r == 4:
            return rng.randbytes(rng.choice([0, 1, 16, 100]))
        if r == 5:
            return msgpack.ExtType(rng.randrange(128), rng.randbytes(rng.randrange(9)))
        if r in (6, 7, 8):
            return rng.choice([*_SMALL, *_HUGE, *_NEG, *_U32])
        if r == 9:
            return [self.value(rng, depth + 1) for _ in range(rng.randrange(4))]
        if r == 10:
            return {rng.choice(["a", "size", 1, 2, -3]): self.value(rng, depth + 1) for _ in range(rng.randrange(3))}
        return rng.getrandbits(rng.choice([8, 32, 63]))

    def arg(self, rng: random.Random, name: str, kind: str, ctx: dict[str, list[Any]]) -> Any:
        """An argument for `name` of kind `kind`: often one that means something to rxd (a VMO
        handle of this connection, valid option bits, an address it maps) so requests get past
        validation into the handlers; sometimes any value of the kind; sometimes any value."""
        r = rng.random()
        if r < 0.1:
            return self.value(rng)
        if r < 0.8:
            meaningful = self.meaningful(rng, name, ctx)
            if meaningful is not None:
                return meaningful
        if kind == "handle":
            if ctx["handles"] and rng.random() < 0.7:
                return rng.choice(ctx["handles"])
            return rng.choice([0, 1, rng.getrandbits(32), (1 << 32) - 1])
        if kind == "u32":
            return rng.choice(_U32) if rng.random() < 0.8 else rng.getrandbits(32)
        if kind == "u64":
            r = rng.random()
            if r < 0.6:
                return rng.choice(_SMALL)
            if r < 0.8:
                return rng.choice(_HUGE)
            return rng.choice([0x7E0000000000, 0x7F0000000000, 0x10000]) + rng.randrange(64) * PAGE
        if kind == "i64":
            return rng.choice([0, 1, -1, (1 << 63) - 1, -(1 << 63), time.monotonic_ns(), time.monotonic_ns() + 10**8])
        if kind == "bytes":
            return rng.randbytes(rng.choice([0, 1, 3, 64, 4096, 5000]))
        if kind == "str":
            if ctx["tokens"] and rng.random() < 0.6:
                return rng.choice(ctx["tokens"])
            return rng.choice(["", "0" * 32, "f" * 32, rng.randbytes(16).hex(), "zz" * 16, "x" * 1000])
        raise AssertionError(kind)

    def meaningful(self, rng: random.Random, name: str, ctx: dict[str, list[Any]]) -> Any:
        pages = rng.choice([0, 1, 1, 2, 3, 4, 8, 16, 64])
        if name in ("handle", "vmo"):
            return rng.choice(ctx["vmos"]) if ctx["vmos"] else None
        if name == "system":
            return rng.choice(ctx["system"]) if ctx["system"] else None
        if name == "options":
            return rng.choice([
                0, RX_VMO_RESIZABLE, RX_VMO_COMMIT_EAGER, RX_VMO_RESIZABLE | RX_VMO_COMMIT_EAGER,  # create
                RX_VMO_CHILD_SNAPSHOT, RX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE, RX_VMO_CHILD_SLICE,  # children
                RX_VMO_CHILD_SNAPSHOT | RX_VMO_CHILD_NO_WRITE, RX_VMO_CHILD_SNAPSHOT | RX_VMO_CHILD_RESIZABLE,
                RX_VM_MAP_RANGE, RX_VM_MAP_RANDOM, RX_VM_SPECIFIC, RX_VM_SPECIFIC | RX_VM_MAP_RANGE,  # maps
            ])
        if name == "rights":
            return rng.choice([RX_RIGHT_SAME_RIGHTS, RX_RIGHT_READ | RX_RIGHT_MAP, RX_DEFAULT_VMO_RIGHTS, 0,
                               RX_RIGHT_READ | RX_RIGHT_MAP | RX_RIGHT_DUPLICATE | RX_RIGHT_TRANSFER])
        if name == "op":
            return rng.choice([RX_VMO_OP_COMMIT, RX_VMO_OP_DECOMMIT, RX_VMO_OP_ZERO, RX_VMO_OP_CACHE_SYNC,
                               RX_VMO_OP_CACHE_CLEAN, RX_VMO_OP_CACHE_CLEAN_INVALIDATE, RX_VMO_OP_CACHE_INVALIDATE])
        if name == "perms":
            return rng.choice([RX_VM_PERM_READ, RX_VM_PERM_READ | RX_VM_PERM_WRITE, RX_VM_PERM_WRITE, 0])
        if name == "topic":
            return rng.choice(list(INFO_TOPIC_NAMES))
        if name in ("offset", "vmo_offset"):
            return rng.choice([0, 0, 0, pages]) * PAGE + (rng.choice([0, 0, 0, 1, 100]) if name == "offset" else 0)
        if name in ("size", "length"):
            return pages * PAGE + (rng.choice([0, 0, 0, 1, 100]) if name == "length" else 0)
        if name in ("addr", "requeue_addr"):
            if ctx["maps"] and rng.random() < 0.8:
                base, length = rng.choice(ctx["maps"])
                return base + rng.randrange(0, length, 4)
            return _MAP_BASE + rng.randrange(256) * PAGE
        if name in ("count", "wake_count", "requeue_count"):
            return rng.choice([0, 1, 2, RX_FUTEX_WAKE_ALL])
        if name == "expected":
            return 0
        if name in ("owner", "requeue_owner"):
            return rng.choice([0, os.getpid(), 1])
        if name == "deadline":
            return time.monotonic_ns() + rng.choice([-10**9, 0, 10**6, 5 * 10**7])
        return None

    def request(self, rng: random.Random, rid: int, ctx: dict[str, list[Any]], thread: bool) -> tuple[list[Any], int]:
        if ctx["ok"] and rng.random() < 0.35:
            # A request that succeeded on this connection, one argument changed: deep in a
            # handler, one step off the path that works.
            known, *changed = rng.choice(ctx["ok"])
            if changed:
                i = rng.randrange(len(changed))
                spec = BY_NUMBER.get(known)
                kind = spec.args[i][1] if spec is not None and i < len(spec.args) else "u64"
                old = changed[i]
                r = rng.random()
                if type(old) is int and r < 0.4:
                    changed[i] = min(max(old + rng.choice([-4096, -1, 1, 4096, PAGE * 255]), -(1 << 63)), (1 << 64) - 1)
                elif r < 0.8:
                    changed[i] = self.arg(rng, spec.args[i][0] if spec is not None and i < len(spec.args) else "", kind, ctx)
                else:
                    changed[i] = self.value(rng)
            return [rid, known, *self.bounded(known, changed)], known
        r = rng.random()
        if thread and r < 0.7:
            number: Any = rng.choice([50, 51, 52])
        elif r < 0.7:
            number = rng.choice(SYSCALLS).number
        elif r < 0.85:
            number = rng.choice([0, -1, 7, 19, 99, 9999, 1 << 31, (1 << 63) - 1, -(1 << 63), (1 << 64) - 1])
        else:
            number = self.value(rng)
        spec = next((s for s in SYSCALLS if type(number) is int and s.number == number), None)
        if spec is not None and rng.random() < 0.85:
            args = [self.arg(rng, name, kind, ctx) for name, kind in spec.args]
        else:
            args = [self.value(rng) for _ in range(rng.randrange(7))]
        at = _BLOCKING.get(spec.number) if spec is not None else None
        if spec is not None and at is not None and len(args) == len(spec.args) and type(args[at]) is int:
            # a wait that could block: a deadline at most 100 ms off (the reply then comes)
            args[at] = min(args[at], time.monotonic_ns() + 10**8) if rng.random() < 0.9 else args[at]
        return [rid, number, *(self.bounded(number, args) if spec is not None else args)], number if type(number) is int else -1

    @staticmethod
    def bounded(number: int, args: list[Any]) -> list[Any]:
        """No u64 between 64 MiB and 16 GiB: one such size could commit gigabytes of rxd's budget
        (an eager create, a commit, a prefaulted map), which is rxd doing its job but would make
        the well-behaved client's next fault fail for want of memory. Smaller and far bigger
        sizes, and every other kind of value, stay."""
        spec = BY_NUMBER.get(number)
        if spec is None:
            return args
        kinds = [kind for _, kind in spec.args]
        return [1 << 26 if i < len(kinds) and kinds[i] == "u64" and type(a) is int and 1 << 26 < a < 1 << 34 else a
                for i, a in enumerate(args)]

    # -- a connection -------------------------------------------------------------------------------

    def send(self, peer: _Peer, data: bytes) -> None:
        self.stats.frames += 1
        peer.sock.sendall(data)

    def connection(self, rng: random.Random) -> None:
        self.stats.connections += 1
        scenario = rng.choices(["garbage", "hello", "main", "side", "oversize"], [10, 10, 50, 29.5, 0.5])[0]
        getattr(self, "scene_" + scenario)(rng)

    def scene_garbage(self, rng: random.Random) -> None:
        """Random bytes (or a random msgpack object) instead of a hello."""
        peer = _Peer(self.path, CHANNEL_MAIN)
        try:
            data = rng.randbytes(rng.randrange(1, 300)) if rng.random() < 0.6 else msgpack.packb(self.value(rng))
            self.send(peer, data)
            if rng.random() < 0.5:
                peer.sock.shutdown(socket.SHUT_WR)
            elif not peer.until_eof(0.05):
                peer.sock.shutdown(socket.SHUT_WR)
            if not peer.until_eof():
                raise ChaosFailure(f"rxd kept a connection open after garbage instead of a hello: {data[:40]!r}")
        finally:
            peer.close()

    def scene_hello(self, rng: random.Random) -> None:
        """Hellos that are wrong in one way each: rxd refuses or closes, never more."""
        peer = _Peer(self.path, CHANNEL_MAIN)
        try:
            kind = rng.choice([CHANNEL_MAIN, CHANNEL_FAULT, CHANNEL_CONTROL, CHANNEL_THREAD, 4, 7, -1, "main", None, 1.0])
            token = rng.choice([None, rng.randbytes(16), rng.randbytes(15), b"", "x" * 16, 5])
            magic = rng.choice([PROTOCOL_MAGIC, PROTOCOL_MAGIC, PROTOCOL_MAGIC + 1, 0, "RX"])
            version = rng.choice([PROTOCOL_VERSION, PROTOCOL_VERSION, 0, 2, -1, None])
            frame = [magic, version, kind, token][: rng.choice([4, 4, 4, 3, 2, 5])]
            if len(frame) == 5:
                frame.append(self.value(rng))
            self.send(peer, msgpack.packb(frame, use_bin_type=True))
            if frame == [PROTOCOL_MAGIC, PROTOCOL_VERSION, CHANNEL_MAIN, None]:
                return  # a good hello after all
            # Anything else is refused with a status (a side channel of no session) or closed.
            if not peer.until_eof():
                raise ChaosFailure(f"rxd kept a connection open after the bad hello {frame!r:.200}")
        finally:
            peer.close()

    def requests(self, rng: random.Random, peer: _Peer, ctx: dict[str, list[Any]], n: int, thread: bool = False) -> bool:
        """Up to n well-framed requests in pipelined batches, each reply checked; False when the
        connection is done with (a wait that may legitimately block is pending)."""
        sent = 0
        while sent < n:
            batch: list[tuple[int, int, list[Any]]] = []
            data = b""
            for _ in range(min(rng.randint(1, 16), n - sent)):
                rid = ctx["next_id"][0]
                ctx["next_id"][0] += 1
                frame, number = self.request(rng, rid, ctx, thread)
                try:
                    data += msgpack.packb(frame, use_bin_type=True)
                except (OverflowError, ValueError, TypeError):
                    continue
                self.stats.frames += 1
                batch.append((rid, number, frame))
                sent += 1
                if number in _BLOCKING:
                    break  # nothing may follow a wait on its channel
            sent += 1 if not batch else 0
            if not batch:
                continue
            peer.sock.sendall(data)
            for rid, number, frame in batch:
                try:
                    event = peer.next_event(2 if number in _BLOCKING else 20)
                except TimeoutError:
                    if number in _BLOCKING:
                        return False  # a wait that blocks (a word that holds `expected`, a level that stays): as it should
                    raise ChaosFailure(f"no reply within 20 s to {frame!r:.300}") from None
                if event is CLOSED:
                    raise ChaosFailure(f"rxd closed the connection instead of answering {frame!r:.300}")
                if not isinstance(event, Reply) or event.id != rid:
                    raise ChaosFailure(f"reply {event!r:.200} to request {rid}")
                self.stats.replies += 1
                if event.status == RX_ERR_INTERNAL:
                    raise ChaosFailure(f"RX_ERR_INTERNAL for {frame!r:.300}: {event.result!r:.200}")
                if event.status == 0:
                    self.learn(number, frame, event.result, ctx)
        return True

    @staticmethod
    def learn(number: int, frame: list[Any], result: tuple[Any, ...], ctx: dict[str, list[Any]]) -> None:
        """What a successful reply gives later requests to use (and the request itself, to mutate)."""
        if len(ctx["ok"]) < 64 and number not in _NOT_TO_MUTATE and len(frame) > 2:
            ctx["ok"].append(frame[1:])
        value = result[0] if result else None
        if type(value) is int and number in (1, 2, *_VMO_RESULTS):
            ctx["handles"].append(value)
            ctx["system" if number == 2 else "vmos" if number in _VMO_RESULTS else "handles"].append(value)
        elif number in _TOKEN_RESULTS and type(value) is str:
            ctx["tokens"].append(value)
        elif number == SYSCALL_NUMBERS["rx_vmar_map"] and len(frame) == 8:
            ctx["maps"].append((frame[7], frame[4]))
        elif number == SYSCALL_NUMBERS["rx_vmar_unmap"] and len(frame) == 4:
            ctx["maps"] = [m for m in ctx["maps"] if not (frame[2] <= m[0] < frame[2] + frame[3])]

    def breaker(self, rng: random.Random, peer: _Peer, tell: str) -> None:
        """End a connection with a frame that breaks the stream: rxd must close it."""
        r = rng.random()
        if r < 0.5:
            # [-1, 1] has a request id that is no u64, but on a control channel it is an ack of no
            # request (ignored): every other breaker breaks every channel
            frame = rng.choice([f for f in _BREAKERS if peer.kind != CHANNEL_CONTROL or f != _ACK_OF_NOTHING])
            self.send(peer, frame)
            if not peer.until_eof():
                raise ChaosFailure(f"rxd kept {tell} open after a broken frame")
            self.stats.closed_by_rxd += 1
            return
        if r < 0.75:  # a truncated frame, then our EOF
            frame = msgpack.packb([1, 12, 3, 0, rng.randbytes(rng.randrange(1, 200))], use_bin_type=True)
            self.send(peer, frame[: rng.randrange(1, len(frame))])
        elif r < 0.9:  # a header that announces a huge object, a few bytes of it, our EOF
            self.send(peer, rng.choice([b"\xc6\xff\xff\xff\xff", b"\xdb\x7f\xff\xff\xff", b"\xdd\xff\xff\xff\xff", b"\xdf\x00\xff\xff\xff", b"\xc6\x00\x90\x00\x01"]) + rng.randbytes(rng.randrange(64)))
        else:  # random bytes
            self.send(peer, rng.randbytes(rng.randrange(1, 100)))
        try:
            peer.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        if not peer.until_eof():
            raise ChaosFailure(f"rxd kept {tell} open after our EOF")

    @staticmethod
    def new_ctx(first_id: int) -> dict[str, list[Any]]:
        return {"handles": [], "vmos": [], "system": [], "tokens": [], "maps": [], "ok": [], "next_id": [first_id]}

    def scene_main(self, rng: random.Random) -> None:
        peer = _Peer(self.path, CHANNEL_MAIN)
        try:
            self.stats.frames += 1
            hello = peer.hello()
            if hello.status != 0:
                raise ChaosFailure(f"main hello refused: {status_name(hello.status)}")
            ctx = self.new_ctx(rng.choice([1, 0, 1 << 63]))
            for _ in range(rng.choice([0, 1, 1, 2])):  # something for handle arguments to name
                self.call(peer, ctx, [SYSCALL_NUMBERS["rx_vmo_create"], rng.choice([1, 4, 64]) * PAGE, rng.choice([0, 0, RX_VMO_RESIZABLE])])
            if self.requests(rng, peer, ctx, rng.randint(0, 128)) and rng.random() < 0.6:
                self.breaker(rng, peer, "a main channel")
        finally:
            peer.close()

    def scene_side(self, rng: random.Random) -> None:
        """A process with a control channel that a faithful acker serves (as the C control thread
        would: mapping needs one, and rxd kills a client that does not ack), a fault and a thread
        channel; maps go through, faults on them are resolved for real. One channel is fuzzed."""
        main = _Peer(self.path, CHANNEL_MAIN)
        peers = [main]
        acker: _Acker | None = None
        try:
            self.stats.frames += 1
            hello = main.hello()
            assert hello.info is not None
            session = hello.info["session"]
            ctx = self.new_ctx(1)
            control = _Peer(self.path, CHANNEL_CONTROL)
            peers.append(control)
            self.stats.frames += 1
            if control.hello(session).status != 0:
                raise ChaosFailure("a control channel refused with a valid session")
            acker = _Acker(control, rng.getrandbits(32))
            target = rng.choice([CHANNEL_FAULT, CHANNEL_CONTROL, CHANNEL_THREAD])
            side = control
            if target != CHANNEL_CONTROL:
                side = _Peer(self.path, target)
                peers.append(side)
                self.stats.frames += 1
                if side.hello(session).status != 0:
                    raise ChaosFailure(f"a channel of kind {target} refused with a valid session")
            # Maps (and whatever else) first, so faults and futexes have somewhere to land.
            for _ in range(rng.randint(0, 3)):
                vmo = rng.choice([rng.choice(_SMALL[:6]) * PAGE, 16 * PAGE])
                if not self.requests(rng, main, ctx, rng.randint(0, 8)):
                    return  # a wait blocks the main channel: nothing may follow it there
                self.call(main, ctx, [10, vmo, 0])
                if ctx["vmos"]:
                    addr = _MAP_BASE + rng.randrange(1 << 16) * PAGE
                    self.call(main, ctx, [20, ctx["vmos"][-1], 0, vmo, rng.choice([1, 3, 3]), rng.choice([0, 0, RX_VM_MAP_RANDOM]), addr])
            for _ in range(rng.randint(0, 24)):
                if target == CHANNEL_FAULT:
                    if ctx["maps"] and rng.random() < 0.7:
                        base, length = rng.choice(ctx["maps"])
                        addr = base + rng.randrange(length)
                    else:
                        addr = self.arg(rng, "addr", "u64", ctx)
                    frame = [rng.choice([0, 1, rng.getrandbits(32), (1 << 64) - 1, -1]), addr, rng.choice([0, 1, 1, 2, 3, -1, 1 << 40])]
                    self.send(side, msgpack.packb(frame))
                    if not all(type(x) is int for x in frame):  # WIRE.md: integers only
                        if not side.until_eof():
                            raise ChaosFailure(f"rxd kept a fault channel open after {frame!r:.200}")
                        self.stats.closed_by_rxd += 1
                        return
                    event = side.next_event()
                    if not isinstance(event, FaultReply) or event.seq != frame[0]:
                        raise ChaosFailure(f"fault reply {event!r:.200} to {frame!r}")
                    if event.status == RX_ERR_INTERNAL:
                        raise ChaosFailure(f"RX_ERR_INTERNAL for the fault {frame!r}")
                    self.stats.replies += 1
                elif target == CHANNEL_CONTROL:
                    acker.send(msgpack.packb([rng.choice([0, 1, 2, (1 << 64) - 1, rng.getrandbits(32)]), rng.choice([-1, -14, 1 << 40])]))
                    self.stats.frames += 1
                elif not self.requests(rng, side, ctx, 1, thread=True):
                    return
            # the process is still served on its main channel
            if self.requests(rng, main, ctx, rng.randint(1, 4)) and rng.random() < 0.7:
                if target == CHANNEL_CONTROL:
                    acker.stop()
                self.breaker(rng, side, f"a channel of kind {target}")
        finally:
            if acker is not None:
                acker.stop()
            for p in peers:
                p.close()
            if acker is not None and acker.failure:
                raise ChaosFailure(acker.failure)

    def call(self, peer: _Peer, ctx: dict[str, list[Any]], frame: list[Any]) -> None:
        """One well-formed request of our choosing; its result is learnt, any status is fine but
        RX_ERR_INTERNAL."""
        rid = ctx["next_id"][0]
        ctx["next_id"][0] += 1
        self.send(peer, msgpack.packb([rid, *frame]))
        event = peer.next_event()
        if not isinstance(event, Reply) or event.id != rid:
            raise ChaosFailure(f"reply {event!r:.200} to {frame!r:.200}")
        self.stats.replies += 1
        if event.status == RX_ERR_INTERNAL:
            raise ChaosFailure(f"RX_ERR_INTERNAL for {frame!r:.300}: {event.result!r:.200}")
        if event.status == 0:
            self.learn(frame[0], [rid, *frame], event.result, ctx)

    def scene_oversize(self, rng: random.Random) -> None:
        """A frame over rxd's 8 MiB limit, really sent (rarely: it is 9 MiB)."""
        peer = _Peer(self.path, CHANNEL_MAIN)
        try:
            self.stats.frames += 1
            peer.hello()
            huge = msgpack.packb([1, 12, 3, 0, b"x" * (9 << 20)])
            try:
                self.send(peer, huge)
            except (BrokenPipeError, ConnectionResetError):
                self.stats.closed_by_rxd += 1
                return
            if not peer.until_eof():
                raise ChaosFailure("rxd kept a connection open after a 9 MiB frame")
            self.stats.closed_by_rxd += 1
        finally:
            peer.close()


def fuzz_main(path: str, seed: int, frames: int, seconds: float) -> None:
    fuzzer = Fuzzer(path, seed, frames, seconds)

    def progress(stats: FuzzStats) -> None:
        _emit({"ev": "progress", **dataclasses.asdict(stats)})

    stats = fuzzer.run(progress)
    _emit({"ev": "result", **dataclasses.asdict(stats)})


def child_main() -> None:
    """Entry point of every process the driver starts: `python -c 'import chaos; chaos.child_main()' ROLE ARGS`."""
    role, args = sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    if role == "zygote":
        zygote_main()
    elif role == "survivor":
        survivor_main(args["who"], args.get("token"))
    elif role == "wellbehaved":
        wellbehaved_main(args["seed"])
    elif role == "fuzzer":
        fuzz_main(args["path"], args["seed"], args["frames"], args["seconds"])
    else:
        raise SystemExit(f"unknown role {role}")


# ================================================================================================
# The driver
# ================================================================================================


class Child:
    """A process the driver started: JSON lines from its stdout on a queue, commands to its stdin."""

    def __init__(self, name: str, role: str, args: dict[str, Any], env: dict[str, str], stderr: IO[bytes]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import chaos; chaos.child_main()", role, json.dumps(args)],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
        )
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                self.events.put(json.loads(raw))
            except ValueError:
                self.events.put({"ev": "junk", "line": raw.decode(errors="replace")})
        self.events.put(None)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((line + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            self.expect("(its end)", 10)  # raises with the error it reported, if any

    def expect(self, ev: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise ChaosFailure(f"{self.name}: no {ev!r} within {timeout} s") from None
            if event is None:
                raise ChaosFailure(f"{self.name}: ended ({self.proc.poll()}) before {ev!r}")
            if event.get("ev") == "error":
                raise ChaosFailure(f"{self.name} failed:\n{event.get('tb')}")
            if event.get("ev") == ev:
                return event

    def finish(self, timeout: float) -> int:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise ChaosFailure(f"{self.name} did not exit within {timeout} s") from None


@dataclasses.dataclass
class Bounds:
    storm_seconds: float = 20.0  # 0: no kill storm
    concurrency: int = 10  # live victims at most
    wave: int = 5  # victims spawned together, at most
    max_kill_delay: float = 1.0  # seconds after ready
    fuzz_frames: int = 0  # 0: no fuzzer
    fuzz_seconds: float = 0.0
    progress_seconds: float = 0.0  # 0: no progress lines


@dataclasses.dataclass
class Figures:
    seed: int
    seconds: float = 0.0
    clients_spawned: int = 0
    clients_killed: int = 0
    killed_before_ready: int = 0
    clients_finished: int = 0
    gifts_shared: int = 0
    owner_died_seen: int = 0
    frames_sent: int = 0
    fuzz_connections: int = 0
    connections_closed: int = 0
    fuzz_replies: int = 0
    fuzzers_killed_by_rxd: int = 0
    wb_calls: int = 0
    wb_faults: int = 0
    wb_worst_ms: float = 0.0
    wb_worst_op: str = ""
    survivor_generations: int = 0
    baseline: dict[str, int] = dataclasses.field(default_factory=dict)
    deltas: dict[str, int] = dataclasses.field(default_factory=dict)
    log_warnings: int = 0
    failures: list[str] = dataclasses.field(default_factory=list)

    def table(self) -> str:
        rows = [
            ("seed", str(self.seed)),
            ("wall time", f"{self.seconds:.1f} s"),
            ("clients spawned", str(self.clients_spawned)),
            ("clients killed (SIGKILL)", f"{self.clients_killed} ({self.killed_before_ready} before they were ready)"),
            ("clients that finished (exit 0)", str(self.clients_finished)),
            ("VMOs shared victim to victim", str(self.gifts_shared)),
            ("Mutex owner_died hand-overs seen", str(self.owner_died_seen)),
            ("frames sent (fuzzer)", str(self.frames_sent)),
            ("fuzz connections", str(self.fuzz_connections)),
            ("connections closed by rxd on a broken frame", str(self.connections_closed)),
            ("fuzz replies checked", str(self.fuzz_replies)),
            ("fuzzers killed by rxd", str(self.fuzzers_killed_by_rxd)),
            ("well-behaved calls / faults", f"{self.wb_calls} / {self.wb_faults}"),
            ("well-behaved worst latency", f"{self.wb_worst_ms:.1f} ms ({self.wb_worst_op})"),
            ("survivor pattern generations", str(self.survivor_generations)),
            *((f"delta {k} (baseline {self.baseline.get(k)})", str(v)) for k, v in self.deltas.items()),
            ("rxd log warnings", str(self.log_warnings)),
            ("failures", str(len(self.failures))),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def rxd_log_problems(text: str) -> tuple[list[str], int]:
    """Error-level lines of rxd's JSON log (an internal error: a handler's exception, a
    connection task failed inside rxd, a failed collapse), lines that are not log records at all
    (a crash's traceback), and how many warnings (a killed client, a broken stream) there were."""
    problems: list[str] = []
    warnings = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            problems.append(f"not a log record: {line[:300]}")
            continue
        level = record.get("level", "")
        if level in ("error", "critical") or "exception" in record or "inside rxd" in str(record.get("event", "")):
            problems.append(line[:2000])
        elif level == "warning":
            warnings += 1
    return problems, warnings


class Chaos:
    def __init__(self, rxd: Any, seed: int, bounds: Bounds, out: Callable[[str], None] | None = None) -> None:
        self.rxd = rxd  # rxtest.Rxd
        self.seed = seed
        self.bounds = bounds
        self.out = out or (lambda _line: None)
        self.rng = random.Random(seed)
        self.fig = Figures(seed)
        self.env = {**rxd.env, "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.stderr = open(os.path.join(rxd.directory, "clients.stderr"), "wb")
        self.children: list[Child] = []
        self.s_tokens: list[str] = []
        self.fuzz: FuzzRunner | None = None
        self._last_progress = time.monotonic()

    def fail(self, what: str) -> None:
        self.fig.failures.append(what)

    def child(self, name: str, role: str, args: dict[str, Any]) -> Child:
        c = Child(name, role, args, self.env, self.stderr)
        self.children.append(c)
        return c

    def kmem(self) -> dict[str, int]:
        k: dict[str, int] = self.rxd.kmem()
        return k

    # -- the run ------------------------------------------------------------------------------------

    def run(self) -> Figures:
        t0 = time.monotonic()
        try:
            self._run()
        except AssertionError as e:  # ChaosFailure, and rxtest's wait_for
            self.fail(str(e))
        except Exception:
            self.fail(f"the driver failed:\n{traceback.format_exc()}")
        finally:
            for c in self.children:
                if c.proc.poll() is None:
                    c.proc.kill()
                    c.proc.wait(10)
            self.stderr.close()
            self.fig.seconds = time.monotonic() - t0
        problems, self.fig.log_warnings = rxd_log_problems(self.rxd.log_text())
        for p in problems[:10]:
            self.fail(f"rxd logged an internal error: {p}")
        if self.rxd.proc.poll() is not None:
            self.fail(f"rxd died (exit {self.rxd.proc.returncode})")
        return self.fig

    def _run(self) -> None:
        rxd, b = self.rxd, self.bounds
        a = self.child("survivor 0", "survivor", {"who": 0})
        ready = a.expect("ready", 60)
        s_handle = rxd.call("rx_handle_import", ready["token_driver"])
        peer = self.child("survivor 1", "survivor", {"who": 1, "token": ready["token_peer"]})
        peer.expect("ready", 60)
        survivors = [a, peer]
        zygote = self.child("zygote", "zygote", {})
        # Baseline: survivors connected and idle, nothing else.
        rxd.wait_for(lambda: self.kmem()["num_processes"] == 3, "the two survivors to be connected")
        base = {k: self.kmem()[k] for k in BASELINE_FIELDS}
        base["rxd_fds"] = rxd.fd_count()
        self.fig.baseline = base
        for s in survivors:
            s.send("go")
        wb = self.child("well-behaved client", "wellbehaved", {"seed": self.rng.getrandbits(32)})
        wb.expect("ready", 60)
        self.fuzz = FuzzRunner(self, self.rng.getrandbits(32), b.fuzz_frames, b.fuzz_seconds)
        storm = Storm(self, zygote, s_handle)
        if b.storm_seconds:
            storm.run(b.storm_seconds)
        deadline = time.monotonic() + b.fuzz_seconds + 120
        while self.fuzz.poll():
            if time.monotonic() > deadline:
                raise ChaosFailure("the fuzzer ran past its bound")
            time.sleep(0.2)
            self.progress()
        # Survivors stop (each checks its own region's last generation) before the Mutex checks,
        # which they take part in.
        gens = []
        for s in survivors:
            s.send("stop")
        for s in survivors:
            gens.append(s.expect("stopped", 60))
        self.fig.survivor_generations = sum(g["gen"] for g in gens)
        self.fig.owner_died_seen += sum(g["owner_died"] for g in gens)
        if b.storm_seconds:
            storm.mutex_checks(a, peer)
        storm.finish()
        # The well-behaved client saw everything: now its figures.
        wb.send("stop")
        result = wb.expect("result", 60)
        wb.finish(30)
        self.fig.wb_calls, self.fig.wb_faults = result["calls"], result["faults"]
        self.fig.wb_worst_ms, self.fig.wb_worst_op = result["worst"] * 1000, result["worst_op"]
        for e in result["errors"][:10]:
            self.fail(f"the well-behaved client saw an error: {e}")
        for s in result["stalls"][:10]:
            self.fail(f"the well-behaved client stalled: {s}")
        if result["worst"] > STALL_SECONDS:
            self.fail(f"the well-behaved client waited {result['worst']:.2f} s for {result['worst_op']}")
        # Each survivor checks the other's region, and so does the driver.
        for who, s in enumerate(survivors):
            other = 1 - who
            s.send(f"verify {other} {gens[other]['gen']}")
            if not s.expect("verified", 60)["ok"]:
                self.fail(f"survivor {who} reads survivor {other}'s region differently from what it wrote last")
            first = REGION_FIRST[who] * PAGE
            if rxd.call("rx_vmo_read", s_handle, first, REGION_PAGES * PAGE) != region_bytes(who, gens[who]["gen"]):
                self.fail(f"the driver reads survivor {who}'s region differently from what it wrote last")
        # Tokens the driver exported for victims that died before importing them are still its own.
        for token in self.s_tokens:
            try:
                rxd.call("rx_handle_close", rxd.call("rx_handle_import", token))
            except RxError as e:
                if e.name != "RX_ERR_NOT_FOUND":
                    raise
        # rxd answers, and everything is back where it was.
        probe = self.rxd_client()
        probe.call("rx_vmo_get_size", probe.call("rx_vmo_create", PAGE, 0))
        probe.close()
        self.wait_baseline(base)
        for s in survivors:
            s.send("exit")
            if s.finish(30) != 0:
                self.fail(f"{s.name} exited with {s.proc.returncode}")

    def rxd_client(self) -> Any:
        from rxtest import RawClient

        return RawClient(self.rxd.socket)

    def now_state(self) -> dict[str, int]:
        k = self.kmem()
        state = {f: k[f] for f in BASELINE_FIELDS}
        state["rxd_fds"] = self.rxd.fd_count()
        return state

    def wait_baseline(self, base: dict[str, int], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            state = self.now_state()
            if state == base or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.fig.deltas = {k: state[k] - base[k] for k in base}
        off = {k: v for k, v in self.fig.deltas.items() if v}
        if off:
            self.fail(f"not back at the baseline {timeout} s after the storm: deltas {off} (baseline {base})")

    def progress(self) -> None:
        """A progress line every Bounds.progress_seconds (scripts/chaos), else nothing."""
        if not self.bounds.progress_seconds or time.monotonic() - self._last_progress < self.bounds.progress_seconds:
            return
        self._last_progress = time.monotonic()
        f, k = self.fig, self.kmem()
        frames = self.fuzz.frames_sent() if self.fuzz is not None else 0
        self.out(f"[{time.strftime('%H:%M:%S')}] clients spawned {f.clients_spawned}, killed {f.clients_killed}, "
                 f"finished {f.clients_finished}; frames {frames}; rxd: {k['num_processes']} processes, "
                 f"{k['committed_bytes'] >> 20} MiB committed, {k['num_hidden_nodes']} hidden nodes, "
                 f"{k['futex_waiters']} futex waiters; failures {len(f.failures)}")


class FuzzRunner:
    """The fuzzer process, started with the frames and the time left, and started again if rxd
    kills it (a fuzz process plays its own control channel, and rxd kills a client that fails
    one); its figures are added up as each one ends."""

    def __init__(self, chaos: Chaos, seed: int, frames: int, seconds: float) -> None:
        self.chaos = chaos
        self.seed = seed
        self.frames = frames
        self.end = time.monotonic() + seconds
        self.runs = 0
        self.done_frames = 0  # frames of fuzzers that have ended
        self.last: dict[str, Any] = {}  # the running one's latest figures
        self.child = self._start() if frames else None

    def _start(self) -> Child:
        self.runs += 1
        return self.chaos.child(f"fuzzer #{self.runs}", "fuzzer", {
            "path": self.chaos.rxd.socket, "seed": self.seed + self.runs - 1, "frames": self.frames - self.done_frames,
            "seconds": max(1.0, self.end - time.monotonic())})

    def frames_sent(self) -> int:
        return self.done_frames + int(self.last.get("frames", 0))

    def _take(self, child: Child, timeout: float) -> None:
        while True:
            try:
                event = child.events.get(timeout=timeout) if timeout else child.events.get_nowait()
            except queue.Empty:
                return
            if event is None:
                return
            if event.get("ev") in ("progress", "result"):
                self.last = event

    def poll(self) -> bool:
        """Collect the fuzzer's news; True while one runs."""
        child = self.child
        if child is None:
            return False
        self._take(child, 0)
        if child.proc.poll() is None:
            return True
        code = child.proc.wait(10)
        self._take(child, 5)  # the rest of its lines
        fig = self.chaos.fig
        fig.frames_sent += int(self.last.get("frames", 0))
        fig.fuzz_connections += int(self.last.get("connections", 0))
        fig.connections_closed += int(self.last.get("closed_by_rxd", 0))
        fig.fuzz_replies += int(self.last.get("replies", 0))
        for f in self.last.get("failures", [])[:10]:
            self.chaos.fail(f)
        self.done_frames += int(self.last.get("frames", 0))
        self.last = {}
        self.child = None
        if code == -signal.SIGKILL:
            fig.fuzzers_killed_by_rxd += 1
            if self.done_frames < self.frames and time.monotonic() < self.end:
                self.child = self._start()
                return True
        elif code != 0:
            self.chaos.fail(f"the fuzzer exited with {code}")
        return False


class Storm:
    """Waves of victims from the zygote, each SIGKILLed at a random moment (or left to finish)."""

    def __init__(self, chaos: Chaos, zygote: Child, s_handle: int) -> None:
        self.chaos = chaos
        self.zygote = zygote
        self.s_handle = s_handle
        self.rng = random.Random(chaos.rng.getrandbits(64))
        self.next_id = 1
        self.live: dict[int, dict[str, Any]] = {}  # id -> plan and state
        self.gifts: list[list[Any]] = []
        self.held: set[int] = set()

    def s_token(self) -> str:
        token = str(self.chaos.rxd.call("rx_handle_export", self.s_handle, RX_RIGHT_SAME_RIGHTS))
        self.chaos.s_tokens.append(token)
        return token

    def spawn(self, role: str = "storm", hold_off: int = 0) -> int:
        vid = self.next_id
        self.next_id += 1
        r = self.rng.random()
        mode = "early" if r < 0.12 else "finish" if r < 0.25 else "kill"
        if role == "hold":
            mode = "hold"
        gifts = [self.gifts.pop(self.rng.randrange(len(self.gifts))) for _ in range(min(len(self.gifts), self.rng.randint(0, 3)))]
        spec = {"id": vid, "seed": self.rng.getrandbits(64), "mode": mode, "role": role, "hold_off": hold_off,
                "s_token": self.s_token() if role == "hold" or self.rng.random() < 0.8 else None, "gifts": gifts}
        plan: dict[str, Any] = {"spec": spec, "spawned": time.monotonic(), "kill_at": None, "killed": False}
        if mode == "early":
            plan["kill_at"] = time.monotonic() + self.rng.uniform(0, 0.05)
        self.live[vid] = plan
        self.zygote.send(json.dumps({"op": "spawn", "spec": spec}))
        self.chaos.fig.clients_spawned += 1
        return vid

    def kill(self, vid: int) -> None:
        plan = self.live.get(vid)
        if plan is not None and not plan["killed"]:
            plan["killed"] = True
            self.zygote.send(json.dumps({"op": "kill", "id": vid}))

    def pump(self, timeout: float) -> None:
        """Handle the zygote's news for up to `timeout`, and do the kills that are due."""
        end = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            for vid, plan in list(self.live.items()):
                if plan["kill_at"] is not None and now >= plan["kill_at"]:
                    self.kill(vid)
                elif plan["spec"]["mode"] != "finish" and not plan["killed"] and now - plan["spawned"] > 120:
                    self.chaos.fail(f"victim {vid} never said ready in 120 s")
                    self.kill(vid)
                elif plan["spec"]["mode"] == "finish" and now - plan["spawned"] > 120 and not plan["killed"]:
                    self.chaos.fail(f"victim {vid} (seed {plan['spec']['seed']}) did not finish in 120 s")
                    self.kill(vid)
            due = [p["kill_at"] for p in self.live.values() if p["kill_at"] is not None and not p["killed"]]
            wait = min([end - now, *(d - now for d in due)])
            try:
                event = self.zygote.events.get(timeout=max(0.0, wait))
            except queue.Empty:
                if time.monotonic() >= end:
                    return
                continue
            if event is None:
                raise ChaosFailure(f"the zygote ended ({self.zygote.proc.poll()})")
            self.event(event)

    def event(self, event: dict[str, Any]) -> None:
        fig = self.chaos.fig
        vid = event.get("id", 0)
        plan = self.live.get(vid)
        ev = event.get("ev")
        if ev == "junk":
            self.chaos.fail(f"the zygote wrote {event['line']!r}")
        if plan is None:
            return
        if ev == "ready":
            plan["ready"] = True
            if plan["spec"]["mode"] == "kill":
                delay = self.rng.choice([0, self.rng.uniform(0, 0.05), self.rng.uniform(0, self.chaos.bounds.max_kill_delay)])
                plan["kill_at"] = time.monotonic() + delay
        elif ev == "spawned":
            plan["pid"] = event["pid"]
        elif ev == "held":
            plan["held"] = True
        elif ev == "gift":
            self.gifts.append([event["token"], event["pseed"], event["size"]])
            fig.gifts_shared += 1
        elif ev == "owner_died":
            fig.owner_died_seen += 1
        elif ev == "error":
            self.chaos.fail(f"victim {vid} (seed {plan['spec']['seed']}) failed:\n{event.get('tb')}")
        elif ev == "exit":
            del self.live[vid]
            code = event["code"]
            if plan["killed"] and code == -signal.SIGKILL:
                fig.clients_killed += 1
                fig.killed_before_ready += not plan.get("ready")
            elif plan["spec"]["mode"] == "finish" and code == 0:
                fig.clients_finished += 1
            elif code != 1:  # 1: it reported its error already
                self.chaos.fail(f"victim {vid} (pid {plan.get('pid')}, seed {plan['spec']['seed']}, {plan['spec']['mode']}) "
                                f"exited with {code}")

    def run(self, seconds: float) -> None:
        b = self.chaos.bounds
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if len(self.live) <= b.concurrency - b.wave or not self.live:
                for _ in range(self.rng.randint(1, b.wave)):
                    self.spawn()
            self.pump(0.05)
            if self.chaos.fuzz is not None:
                self.chaos.fuzz.poll()
            self.chaos.progress()
        for vid in list(self.live):
            self.kill(vid)
        self.drain(60)

    def drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.live:
            if time.monotonic() > deadline:
                raise ChaosFailure(f"victims still alive {timeout} s after their SIGKILL: {sorted(self.live)}")
            self.pump(0.1)

    def wait_for(self, vid: int, key: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.live.get(vid, {}).get(key):
            if vid not in self.live or time.monotonic() > deadline:
                raise ChaosFailure(f"victim {vid} did not get to {key!r}")
            self.pump(0.05)

    def mutex_checks(self, a: Child, peer: Child) -> None:
        """A Mutex whose holder was SIGKILLed is acquirable with owner_died: once with a survivor
        asleep on it when the holder dies (rxd hands it over), once with nobody waiting (the next
        locker's wait names a pid that is no longer an rx process)."""
        rxd = self.chaos.rxd
        holder = self.spawn("hold", M3_OFF)
        self.wait_for(holder, "held", 60)
        peer.send(f"acquire {M3_OFF}")

        def asleep() -> bool:
            sleepers = int.from_bytes(rxd.call("rx_vmo_read", self.s_handle, M3_OFF + 4, 4), "little")
            return sleepers == 1 and rxd.kmem()["futex_waiters"] >= 1

        rxd.wait_for(asleep, "survivor 1 asleep on the held Mutex", timeout=30)
        self.kill(holder)
        got = peer.expect("acquired", 60)
        if not (got["ok"] and got["owner_died"] and got["clean"]):
            self.chaos.fail(f"a sleeper on a Mutex whose holder was SIGKILLed got {got} (want acquired with owner_died)")
        holder = self.spawn("hold", M2_OFF)
        self.wait_for(holder, "held", 60)
        self.kill(holder)
        self.drain(30)
        a.send(f"acquire {M2_OFF}")
        got = a.expect("acquired", 60)
        if not (got["ok"] and got["owner_died"] and got["clean"]):
            self.chaos.fail(f"the next locker of a Mutex whose holder was SIGKILLed got {got} (want acquired with owner_died)")

    def finish(self) -> None:
        for vid in list(self.live):
            self.kill(vid)
        self.drain(60)
        self.zygote.send(json.dumps({"op": "quit"}))
        try:
            code = self.zygote.finish(60)
        except ChaosFailure as e:
            self.chaos.fail(str(e))
            return
        if code != 0:
            self.chaos.fail(f"the zygote exited with {code}")


def default_seed() -> int:
    env = os.environ.get("RX_CHAOS_SEED")
    return int(env) if env else int.from_bytes(os.urandom(4), "little")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/chaos", description="A kill storm and a protocol fuzzer against one rxd, at scale; prints the figures.")
    p.add_argument("--minutes", type=float, default=10.0, help="how long the storm and the fuzzer run (default: 10)")
    p.add_argument("--seed", type=int, default=None, help="the seed of every random choice (default: a fresh one, printed)")
    p.add_argument("--memory", default="4GiB", help="rxd's memory budget (default: 4GiB)")
    p.add_argument("--concurrency", type=int, default=8, help="victims alive at once, at most (default: 8)")
    p.add_argument("--frames", type=int, default=1_000_000, help="frames the fuzzer sends, at most (default: 1000000)")
    ns = p.parse_args(argv)
    seed = ns.seed if ns.seed is not None else default_seed()
    os.environ.setdefault("RXD_CHECK_LOCKS", "1")
    sys.path.insert(0, HERE)
    from rxtest import running_rxd

    seconds = ns.minutes * 60
    bounds = Bounds(storm_seconds=seconds, concurrency=ns.concurrency, wave=max(1, ns.concurrency // 3),
                    fuzz_frames=ns.frames, fuzz_seconds=seconds, progress_seconds=30)
    print(f"chaos: seed {seed}, {ns.minutes:g} minutes, rxd --memory {ns.memory}", flush=True)
    with running_rxd(memory=ns.memory, extra=["--log-format", "json", "--log-level", "info"]) as rxd:
        figures = Chaos(rxd, seed, bounds, out=lambda line: print(line, flush=True)).run()
        log_copy = os.path.join("/tmp", f"rxd-chaos-{seed}.log")
        with open(log_copy, "w") as f:
            f.write(rxd.log_text())
    print(figures.table())
    print(f"rxd's log: {log_copy}")
    for failure in figures.failures:
        print("FAILURE:", failure)
    return 1 if figures.failures else 0


if __name__ == "__main__":
    sys.exit(main())
