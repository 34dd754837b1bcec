"""Copy-on-write trees (snapshot, at-least-on-write and slice children) against a pure-Python model.

Hypothesis generates sequences of: VMO creation, children of every kind (children of children too,
at random page offsets and sizes, some past the parent's end), rx_vmo_write, stores and loads
through mappings in several real client processes (drivers), rx_vmo_read, ZERO and DECOMMIT, and
handle closes. pytest's process holds the VMO handles (through the harness's raw connection); the
drivers import them with export tokens and map them read/write, so every store crosses the real
fault trap and every split has real mappers to shoot down (mapped with RX_VM_MAP_RANDOM, so a
store commits exactly the pages it touches). A closed VMO that a driver still maps lives on until
its last mapping goes. After every step every live VMO must read as the model says (through
rx_vmo_read, or a driver's mapping once pytest's handle is closed), and rxd's committed bytes must
equal the pages the model can reach. About 20 s (300 sequences of up to 40 steps).

The model: a *storage* is a list of page slots; every non-slice VMO creates one, a slice stands on
its parent's storage at an offset. A slot holds a page object (shared by identity between the
snapshots that copied it), None (never written, or zeroed: reads as zero and costs nothing), or a
Follow link (an at-least-on-write child's unwritten page: read the parent's slot, whatever it holds
now). A write always installs a fresh page object in the written slot, so whoever shared the old
one keeps it. A live VMO reaches the slots of its own window and, through Follow links, what its
at-least-on-write ancestors' slots hold; nothing else is reachable. So a slice does not keep the
rest of its closed parent's pages (Zircon's slices hold their whole parent; rx frees what no VMO
can read, as everywhere else). Committed pages = distinct page objects reachable from live VMOs.

A SNAPSHOT of a VMO that reads through to a live VMO (an at-least-on-write child, or anything
below one, while that parent lives) has no point in time to copy: rxd refuses it with
RX_ERR_NOT_SUPPORTED, and so does the model.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from rxkernel.proto import (
    RX_ERR_ACCESS_DENIED,
    RX_ERR_INVALID_ARGS,
    RX_ERR_NOT_SUPPORTED,
    RX_RIGHT_SAME_RIGHTS,
    RX_VMO_CHILD_NO_WRITE,
    RX_VMO_CHILD_RESIZABLE,
    RX_VMO_CHILD_SLICE,
    RX_VMO_CHILD_SNAPSHOT,
    RX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE,
    RX_VMO_OP_DECOMMIT,
    RX_VMO_OP_ZERO,
    RxError,
)
from rxtest import QUICK_TIMEOUT, Rxd, read_line, running_rxd

PAGE = 4096
MAX_PAGES = 8
MAX_LIVE = 8  # live VMOs at once
MAX_ROOTS = 2
DRIVERS = 3
ZEROS = bytes(PAGE)
DRIVER_TIMEOUT = 60

DRIVER = """
import json, sys, traceback
import rxkernel.client as rx
R, W = rx.RX_VM_PERM_READ, rx.RX_VM_PERM_WRITE
maps = {}  # key -> (handle, addr, size, view)
rx.rx_process_self()  # connect now, so rxd counts this process from the start
print(json.dumps({"out": "ready"}), flush=True)

def unmap(key):
    h, addr, size, view = maps.pop(key)
    view.release()
    rx.rx_vmar_unmap(addr, size)
    rx.rx_handle_close(h)

for line in sys.stdin:
    cmd = json.loads(line)
    kind = cmd["kind"]
    out = None
    try:
        if kind == "map":
            h = rx.rx_handle_import(cmd["token"])
            # RX_VM_MAP_RANDOM: one page per fault, so a store commits exactly the pages it touches
            addr = rx.rx_vmar_map(h, 0, cmd["size"], R | (W if cmd["write"] else 0), rx.RX_VM_MAP_RANDOM)
            maps[cmd["key"]] = (h, addr, cmd["size"], rx.rx_view(addr, cmd["size"]))
        elif kind == "unmap":
            unmap(cmd["key"])
        elif kind == "reset":
            for key in list(maps):
                unmap(key)
        elif kind == "write":
            data = bytes.fromhex(cmd["data"])
            maps[cmd["key"]][3][cmd["off"]:cmd["off"] + len(data)] = data
        elif kind == "read":
            out = bytes(maps[cmd["key"]][3][cmd["off"]:cmd["off"] + cmd["len"]]).hex()
    except Exception:
        print(json.dumps({"error": traceback.format_exc()}), flush=True)
        continue
    print(json.dumps({"out": out}), flush=True)
"""


class Driver:
    """A client process that maps VMOs it is given tokens for, and loads and stores on request."""

    def __init__(self, rxd: Rxd) -> None:
        self.stderr = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen([sys.executable, "-c", DRIVER], env=rxd.env, text=True, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr)
        assert self.reply("start") == "ready"

    def died(self) -> str:
        self.proc.kill()
        self.proc.wait(QUICK_TIMEOUT)
        self.stderr.seek(0)
        return f"driver {self.proc.pid} died ({self.proc.returncode}): {self.stderr.read()[-3000:]}"

    def do(self, **cmd: object) -> str | None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if self.proc.poll() is not None:
            raise AssertionError(self.died())
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self.reply(cmd)

    def reply(self, what: object) -> str | None:
        try:
            line = read_line(self.proc, timeout=DRIVER_TIMEOUT)
        except AssertionError as e:  # its stderr is in a file, not a pipe: died() reads it
            raise AssertionError(f"driver did not answer {what}: {e}\n{self.died()}") from None
        reply = json.loads(line)
        if "error" in reply:
            raise AssertionError(f"driver {self.proc.pid} failed {what}:\n{reply['error']}")
        out: str | None = reply["out"]
        return out

    def close(self) -> None:
        assert self.proc.stdin is not None
        if self.proc.poll() is not None:
            raise AssertionError(self.died())
        self.proc.stdin.close()
        assert self.proc.wait(30) == 0, self.died()
        self.stderr.close()


# -- the model ------------------------------------------------------------------------------------

keys = itertools.count(1)


class Page:
    """One page of memory; slots share it by identity."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class Follow:
    """An at-least-on-write child's unwritten page: whatever `storage`'s slot `index` holds now."""

    __slots__ = ("storage", "index")

    def __init__(self, storage: Storage, index: int) -> None:
        self.storage, self.index = storage, index


Slot = Page | Follow | None


class Storage:
    def __init__(self, slots: list[Slot], follows: Storage | None = None) -> None:
        self.slots = slots
        self.follows = follows  # an at-least-on-write child's: the storage its Follow links read


def resolve(slot: Slot) -> Page | None:
    while isinstance(slot, Follow):
        slot = slot.storage.slots[slot.index]
    return slot


class MVmo:
    """A VMO of the model: a window of `pages` pages onto `storage` from page `offset` (non-zero
    only for slices). `how` says where it came from, for failure reports."""

    def __init__(self, name: str, how: str, kind: str, storage: Storage, offset: int, pages: int, handle: int,
                 writable: bool, resizable: bool = False) -> None:
        self.key = next(keys)  # unique across examples: names the VMO in the drivers
        self.name, self.how, self.kind = name, how, kind
        self.storage, self.offset, self.pages = storage, offset, pages
        self.handle: int | None = handle  # pytest's handle; None once closed
        self.writable, self.resizable = writable, resizable
        self.mappers: set[int] = set()  # drivers that map it

    @property
    def alive(self) -> bool:
        return self.handle is not None or bool(self.mappers)

    @property
    def size(self) -> int:
        return self.pages * PAGE

    def __repr__(self) -> str:
        state = "open" if self.handle is not None else "closed"
        return f"<{self.name}: {self.how}, {self.pages} pages, {state}, mapped in {sorted(self.mappers)}>"

    def slot(self, page: int) -> Slot:
        return self.storage.slots[self.offset + page]

    def content(self) -> bytes:
        return b"".join(p.data if (p := resolve(self.slot(i))) is not None else ZEROS for i in range(self.pages))

    def write(self, off: int, data: bytes) -> None:
        """Every page written gets a fresh page object (the old one stays with whoever shares it)."""
        end = off + len(data)
        for page in range(off // PAGE, (end - 1) // PAGE + 1):
            base = page * PAGE
            cur = resolve(self.slot(page))
            buf = bytearray(cur.data if cur is not None else ZEROS)
            lo, hi = max(off, base), min(end, base + PAGE)
            buf[lo - base : hi - base] = data[lo - off : hi - off]
            self.storage.slots[self.offset + page] = Page(bytes(buf))

    def zero(self, off: int, n: int) -> None:
        """RX_VMO_OP_ZERO: whole pages are released; a partly covered page that holds something is
        written with zeros (and so committed), one that reads as nothing stays free."""
        end = off + n
        for page in range(off // PAGE, (end - 1) // PAGE + 1):
            base = page * PAGE
            if off <= base and base + PAGE <= end:
                self.storage.slots[self.offset + page] = None
            elif resolve(self.slot(page)) is not None:
                lo, hi = max(off, base), min(end, base + PAGE)
                self.write(lo, bytes(hi - lo))


def committed_pages(vmos: list[MVmo]) -> int:
    reached: set[int] = set()
    for v in vmos:
        if v.alive:
            for slot in v.storage.slots[v.offset : v.offset + v.pages]:  # its window, nothing more
                page = resolve(slot)
                if page is not None:
                    reached.add(id(page))
    return len(reached)


# -- the state machine ----------------------------------------------------------------------------


def sized(pages: int, trim: int) -> int:
    """A byte size that rounds up to `pages` pages."""
    return pages * PAGE - trim


page_counts = st.integers(1, MAX_PAGES)
trims = st.integers(0, PAGE - 1) | st.just(0)
kinds = st.sampled_from(["snapshot", "at_least_on_write", "slice"])
rarely = st.integers(0, 3).map(lambda n: n == 3)
mappers = st.lists(st.integers(0, DRIVERS - 1), unique=True, max_size=DRIVERS)
datas = st.binary(min_size=1, max_size=3 * PAGE) | st.integers(1, 2 * PAGE).map(bytes)


class CowModel(RuleBasedStateMachine):
    rxd: Rxd
    drivers: list[Driver]

    def __init__(self) -> None:
        super().__init__()
        self.vmos: list[MVmo] = []
        for i, d in enumerate(self.drivers):
            if d.proc.poll() is not None:  # a failed example killed it: the next one starts afresh
                self.drivers[i] = Driver(self.rxd)
        # Zero unless an earlier (failed) example leaked: later examples still check their own pages.
        self.baseline = int(self.rxd.kmem()["committed_bytes"])

    # -- helpers --

    def live(self) -> list[MVmo]:
        return [v for v in self.vmos if v.alive]

    def held(self) -> list[MVmo]:
        return [v for v in self.vmos if v.handle is not None]

    def mapped(self) -> list[tuple[MVmo, int]]:
        return [(v, d) for v in self.vmos for d in sorted(v.mappers)]

    def visible(self, storage: Storage) -> bool:
        return any(v.alive and v.storage is storage for v in self.vmos)

    def reads_through_live(self, storage: Storage) -> bool:
        """Does `storage` read (at-least-on-write, at any depth) what a live VMO still writes?"""
        above = storage.follows
        while above is not None:
            if self.visible(above):
                return True
            above = above.follows
        return False

    def call(self, name: str, *args: object) -> Any:
        return self.rxd.call(name, *args)

    def check_error(self, status: int, name: str, *args: object) -> None:
        with pytest.raises(RxError) as info:
            self.call(name, *args)
        assert info.value.status == status, info.value

    def next_name(self) -> str:
        return f"v{len(self.vmos)}"

    def add(self, v: MVmo, map_in: list[int]) -> None:
        self.vmos.append(v)
        for d in map_in:
            self.map_in(v, d)

    def map_in(self, v: MVmo, d: int) -> None:
        token = self.call("rx_handle_export", v.handle, RX_RIGHT_SAME_RIGHTS)
        self.drivers[d].do(kind="map", key=v.key, token=token, size=v.size, write=v.writable)
        v.mappers.add(d)

    # -- rules --

    # Few roots, so most VMOs are children (of children).
    @precondition(lambda self: len(self.live()) < MAX_LIVE and sum(v.kind == "root" for v in self.live()) < MAX_ROOTS)
    @rule(pages=page_counts, trim=trims, map_in=mappers)
    def create(self, pages: int, trim: int, map_in: list[int]) -> None:
        handle = self.call("rx_vmo_create", sized(pages, trim), 0)
        assert isinstance(handle, int)
        self.add(MVmo(self.next_name(), "created", "root", Storage([None] * pages), 0, pages, handle, True), map_in)

    @precondition(lambda self: self.held() and len(self.live()) < MAX_LIVE)
    @rule(data=st.data(), kind=kinds, pages=page_counts, trim=trims, no_write=rarely, resizable=rarely, map_in=mappers)
    def child(self, data: st.DataObject, kind: str, pages: int, trim: int, no_write: bool, resizable: bool,
              map_in: list[int]) -> None:
        parent = data.draw(st.sampled_from(self.held()), label="parent")
        self.make_child(data, parent, kind, pages, trim, no_write, resizable, map_in)

    # The same again with a child for parent: deeper trees (and twice the chance of a child).
    @precondition(lambda self: any(v.kind != "root" for v in self.held()) and len(self.live()) < MAX_LIVE)
    @rule(data=st.data(), kind=kinds, pages=page_counts, trim=trims, no_write=rarely, resizable=rarely, map_in=mappers)
    def grandchild(self, data: st.DataObject, kind: str, pages: int, trim: int, no_write: bool, resizable: bool,
                   map_in: list[int]) -> None:
        parent = data.draw(st.sampled_from([v for v in self.held() if v.kind != "root"]), label="parent")
        self.make_child(data, parent, kind, pages, trim, no_write, resizable, map_in)

    def make_child(self, data: st.DataObject, parent: MVmo, kind: str, pages: int, trim: int, no_write: bool,
                   resizable: bool, map_in: list[int]) -> None:
        assert parent.handle is not None
        options = RX_VMO_CHILD_NO_WRITE if no_write else 0
        if kind == "slice":
            if parent.resizable:
                self.check_error(RX_ERR_NOT_SUPPORTED, "rx_vmo_create_child", parent.handle, RX_VMO_CHILD_SLICE, 0, PAGE)
                return
            if resizable:
                self.check_error(RX_ERR_INVALID_ARGS, "rx_vmo_create_child", parent.handle,
                                 RX_VMO_CHILD_SLICE | RX_VMO_CHILD_RESIZABLE, 0, PAGE)
                resizable = False
            first = data.draw(st.integers(0, parent.pages - 1), label="offset")
            pages = min(pages, parent.pages - first)
            handle = self.call("rx_vmo_create_child", parent.handle, RX_VMO_CHILD_SLICE | options, first * PAGE,
                               sized(pages, trim))
            assert isinstance(handle, int)
            how = f"slice of {parent.name} from page {first}"
            self.add(MVmo(self.next_name(), how, "slice", parent.storage, parent.offset + first, pages, handle,
                          parent.writable and not no_write), map_in)
            return
        # Copy-on-write children may reach past the parent's end (those pages read as zero), now and
        # then they even start there.
        first = data.draw(st.integers(0, parent.pages - 1), label="offset")
        if data.draw(rarely, label="start past the end"):
            first = parent.pages + data.draw(st.integers(0, 1), label="pages past the end")
        window = range(parent.offset + first, parent.offset + min(first + pages, parent.pages))
        options |= RX_VMO_CHILD_RESIZABLE if resizable else 0
        if kind == "snapshot" and self.reads_through_live(parent.storage):
            # What the parent reads there keeps changing: no point in time to copy.
            self.check_error(RX_ERR_NOT_SUPPORTED, "rx_vmo_create_child", parent.handle,
                             options | RX_VMO_CHILD_SNAPSHOT, first * PAGE, sized(pages, trim))
            return
        options |= RX_VMO_CHILD_SNAPSHOT if kind == "snapshot" else RX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE
        handle = self.call("rx_vmo_create_child", parent.handle, options, first * PAGE, sized(pages, trim))
        assert isinstance(handle, int)
        slots: list[Slot] = [None] * pages
        for i, at in enumerate(window):
            slots[i] = resolve(parent.storage.slots[at]) if kind == "snapshot" else Follow(parent.storage, at)
        storage = Storage(slots, parent.storage if kind == "at_least_on_write" else None)
        how = f"{kind} of {parent.name} from page {first}"
        self.add(MVmo(self.next_name(), how, kind, storage, 0, pages, handle, not no_write, resizable), map_in)

    @precondition(lambda self: self.held())
    @rule(data=st.data(), payload=datas)
    def vmo_write(self, data: st.DataObject, payload: bytes) -> None:
        v = data.draw(st.sampled_from(self.held()), label="vmo")
        assert v.handle is not None
        off = data.draw(st.integers(0, v.size - 1), label="off")
        payload = payload[: v.size - off]
        if not v.writable:
            self.check_error(RX_ERR_ACCESS_DENIED, "rx_vmo_write", v.handle, off, payload)
            return
        self.call("rx_vmo_write", v.handle, off, payload)
        v.write(off, payload)

    @precondition(lambda self: any(v.writable for v, _ in self.mapped()))
    @rule(data=st.data(), payload=datas)
    def map_write(self, data: st.DataObject, payload: bytes) -> None:
        v, d = data.draw(st.sampled_from([(v, d) for v, d in self.mapped() if v.writable]), label="mapping")
        off = data.draw(st.integers(0, v.size - 1), label="off")
        payload = payload[: v.size - off]
        self.drivers[d].do(kind="write", key=v.key, off=off, data=payload.hex())
        v.write(off, payload)

    @precondition(lambda self: self.held() or self.mapped())
    @rule(data=st.data(), n=st.integers(1, 3 * PAGE))
    def read(self, data: st.DataObject, n: int) -> None:
        ways: list[tuple[MVmo, int | None]] = [(v, None) for v in self.held()] + list(self.mapped())
        v, d = data.draw(st.sampled_from(ways), label="reader")
        off = data.draw(st.integers(0, v.size - 1), label="off")
        n = min(n, v.size - off)
        if d is None:
            assert v.handle is not None
            got = self.call("rx_vmo_read", v.handle, off, n)
        else:
            got = bytes.fromhex(self.drivers[d].do(kind="read", key=v.key, off=off, len=n) or "")
        assert got == v.content()[off : off + n], (v, off, n)

    @precondition(lambda self: any(v.writable for v in self.held()))
    @rule(data=st.data(), whole=st.booleans(), decommit=st.booleans())
    def zero(self, data: st.DataObject, whole: bool, decommit: bool) -> None:
        v = data.draw(st.sampled_from([v for v in self.held() if v.writable]), label="vmo")
        assert v.handle is not None
        if whole or decommit:
            first = data.draw(st.integers(0, v.pages - 1), label="page")
            pages = data.draw(st.integers(1, v.pages - first), label="pages")
            off, n = first * PAGE, pages * PAGE
        else:
            off = data.draw(st.integers(0, v.size - 1), label="off")
            n = data.draw(st.integers(1, v.size - off), label="len")
        self.call("rx_vmo_op_range", v.handle, RX_VMO_OP_DECOMMIT if decommit else RX_VMO_OP_ZERO, off, n)
        v.zero(off, n)

    @precondition(lambda self: any(len(v.mappers) < DRIVERS for v in self.held()))
    @rule(data=st.data())
    def map(self, data: st.DataObject) -> None:
        v = data.draw(st.sampled_from([v for v in self.held() if len(v.mappers) < DRIVERS]), label="vmo")
        d = data.draw(st.sampled_from([d for d in range(DRIVERS) if d not in v.mappers]), label="driver")
        self.map_in(v, d)

    @precondition(lambda self: self.mapped())
    @rule(data=st.data())
    def unmap(self, data: st.DataObject) -> None:
        v, d = data.draw(st.sampled_from(self.mapped()), label="mapping")
        self.drivers[d].do(kind="unmap", key=v.key)
        v.mappers.discard(d)  # the last mapping of a closed VMO: it dies

    @precondition(lambda self: self.held())
    @rule(data=st.data(), unmap_first=st.booleans())
    def close(self, data: st.DataObject, unmap_first: bool) -> None:
        v = data.draw(st.sampled_from(self.held()), label="vmo")
        if unmap_first:  # so that it dies here
            for d in sorted(v.mappers):
                self.drivers[d].do(kind="unmap", key=v.key)
            v.mappers.clear()
        self.call("rx_handle_close", v.handle)
        v.handle = None  # still alive while a driver maps it

    # -- checks --

    @invariant()
    def contents_match(self) -> None:
        for v in self.live():
            if v.handle is not None:
                got = self.call("rx_vmo_read", v.handle, 0, v.size)
            else:
                got = bytes.fromhex(self.drivers[min(v.mappers)].do(kind="read", key=v.key, off=0, len=v.size) or "")
            want = v.content()
            if got != want:
                bad = [i for i in range(v.pages) if got[i * PAGE : (i + 1) * PAGE] != want[i * PAGE : (i + 1) * PAGE]]
                i = bad[0] * PAGE
                raise AssertionError(f"{v}: pages {bad} differ from the model; page {bad[0]} starts "
                                     f"{got[i : i + 16]!r} in rxd, {want[i : i + 16]!r} in the model")

    @invariant()
    def committed_matches(self) -> None:
        model = committed_pages(self.vmos)
        got = (int(self.rxd.kmem()["committed_bytes"]) - self.baseline) / PAGE
        assert got == model, f"rxd commits {got:g} pages, the model reaches {model}"

    def teardown(self) -> None:
        live = [d for d in self.drivers if d.proc.poll() is None]
        for d in live:
            d.do(kind="reset")
        if len(live) < DRIVERS:  # (a failed example) rxd drops a dead driver's mappings asynchronously
            self.rxd.wait_for(lambda: self.rxd.kmem()["num_processes"] == 1 + len(live), "a dead driver's teardown")
        for v in self.vmos:
            v.mappers.clear()
            if v.handle is not None:
                self.call("rx_handle_close", v.handle)
                v.handle = None
        # Every VMO is gone: nothing may stay committed.
        assert self.rxd.kmem()["committed_bytes"] == self.baseline


# Both fault paths: the C fault thread (rxd's default) and every fault decided in Python.
@pytest.fixture(scope="module", params=["fast", "trio"])
def cow_world(request: pytest.FixtureRequest) -> Iterator[tuple[Rxd, list[Driver]]]:
    with running_rxd(extra=["--fault-path", request.param]) as rxd:
        drivers = [Driver(rxd) for _ in range(DRIVERS)]
        yield rxd, drivers
        # The run above went through the path it names (the fast one does serve faults).
        assert (rxd.kmem()["fast_faults"] > 0) == (request.param == "fast")
        for d in drivers:
            d.close()


def test_cow_trees_against_model(cow_world: tuple[Rxd, list[Driver]]) -> None:
    CowModel.rxd, CowModel.drivers = cow_world
    run = CowModel.TestCase
    run.settings = settings(max_examples=300, stateful_step_count=40, deadline=None,
                            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    run().runTest()
