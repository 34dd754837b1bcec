"""vmo_read / vmo_write / mapping loads and stores / op_range against a bytearray model.

Hypothesis generates operation sequences in pytest's process; a real client process (the driver)
carries them out through rxd and answers with what it read, so every step crosses the real trap,
the real protocol and rxd's page stores.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from rxtest import Rxd, read_line, running_rxd

PAGES = 24
SIZE = PAGES * 4096

DRIVER = """
import json, sys
import rxkernel.client as rx
RW = rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE
vmo = rx.rx_vmo_create(int(sys.argv[1]))
# RX_VM_MAP_RANDOM: one page per fault, so committed bytes are exactly the pages written
maps = [rx.rx_view(rx.rx_vmar_map(vmo, 0, int(sys.argv[1]), RW, rx.RX_VM_MAP_RANDOM), int(sys.argv[1])) for _ in range(2)]
ops = {rx.RX_VMO_OP_COMMIT: "commit", rx.RX_VMO_OP_DECOMMIT: "decommit", rx.RX_VMO_OP_ZERO: "zero"}
by_name = {v: k for k, v in ops.items()}
for line in sys.stdin:
    cmd = json.loads(line)
    kind, off = cmd["kind"], cmd["off"]
    out = None
    if kind == "vmo_write":
        rx.rx_vmo_write(vmo, off, bytes.fromhex(cmd["data"]))
    elif kind == "map_write":
        data = bytes.fromhex(cmd["data"])
        maps[cmd["map"]][off:off + len(data)] = data
    elif kind == "vmo_read":
        out = rx.rx_vmo_read(vmo, off, cmd["len"]).hex()
    elif kind == "map_read":
        out = bytes(maps[cmd["map"]][off:off + cmd["len"]]).hex()
    elif kind == "op":
        rx.rx_vmo_op_range(vmo, by_name[cmd["op"]], off, cmd["len"])
    committed = rx.rx_object_get_info(vmo, rx.RX_INFO_VMO)["committed_bytes"]
    print(json.dumps({"out": out, "committed": committed}), flush=True)
"""


class Driver:
    def __init__(self, rxd: Rxd) -> None:
        self.proc = rxd.spawn(DRIVER, str(SIZE))

    def do(self, **cmd: object) -> dict[str, object]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        result: dict[str, object] = json.loads(read_line(self.proc))
        return result


offsets = st.integers(0, SIZE - 1)
datas = st.binary(min_size=1, max_size=9000)


class VmoModel(RuleBasedStateMachine):
    driver: Driver

    def __init__(self) -> None:
        super().__init__()
        self.model = bytearray(SIZE)
        self.committed = [False] * PAGES
        self.driver.do(kind="op", op="decommit", off=0, len=SIZE)  # a fresh VMO for each example
        self.last: dict[str, object] = {}

    def _touch(self, off: int, n: int) -> None:
        for page in range(off // 4096, (off + n - 1) // 4096 + 1):
            self.committed[page] = True

    @rule(off=offsets, data=datas, via=st.sampled_from(["vmo_write", "map0", "map1"]))
    def write(self, off: int, data: bytes, via: str) -> None:
        data = data[: SIZE - off]
        if via == "vmo_write":
            self.last = self.driver.do(kind="vmo_write", off=off, data=data.hex())
            self._touch(off, len(data))
        else:
            self.last = self.driver.do(kind="map_write", map=int(via[-1]), off=off, data=data.hex())
            self._touch(off, len(data))
        self.model[off : off + len(data)] = data

    @rule(off=offsets, n=st.integers(1, 9000), via=st.sampled_from(["vmo_read", "map0", "map1"]))
    def read(self, off: int, n: int, via: str) -> None:
        n = min(n, SIZE - off)
        if via == "vmo_read":
            self.last = self.driver.do(kind="vmo_read", off=off, len=n)
        else:
            self.last = self.driver.do(kind="map_read", map=int(via[-1]), off=off, len=n)
        assert bytes.fromhex(str(self.last["out"])) == bytes(self.model[off : off + n])

    @rule(page=st.integers(0, PAGES - 1), pages=st.integers(1, 6), op=st.sampled_from(["commit", "decommit"]))
    def op_pages(self, page: int, pages: int, op: str) -> None:
        pages = min(pages, PAGES - page)
        self.last = self.driver.do(kind="op", op=op, off=page * 4096, len=pages * 4096)
        for p in range(page, page + pages):
            if op == "decommit":
                self.committed[p] = False
                self.model[p * 4096 : (p + 1) * 4096] = bytes(4096)
            else:
                self.committed[p] = True

    @rule(off=offsets, n=st.integers(1, 20000))
    def zero(self, off: int, n: int) -> None:
        n = min(n, SIZE - off)
        self.last = self.driver.do(kind="op", op="zero", off=off, len=n)
        self.model[off : off + n] = bytes(n)
        first_whole, last_whole = -(-off // 4096), (off + n) // 4096
        for p in range(first_whole, last_whole):
            self.committed[p] = False

    @precondition(lambda self: bool(self.last))
    @invariant()
    def committed_matches(self) -> None:
        assert self.last["committed"] == sum(self.committed) * 4096


# Both fault paths: the C fault thread (rxd's default) and every fault decided in Python.
@pytest.fixture(scope="module", params=["fast", "trio"])
def driver(request: pytest.FixtureRequest) -> Iterator[Driver]:
    with running_rxd(extra=["--fault-path", request.param]) as rxd:
        d = Driver(rxd)
        yield d
        # The run above went through the path it names (the fast one does serve faults).
        assert (rxd.kmem()["fast_faults"] > 0) == (request.param == "fast")
        assert d.proc.stdin is not None
        d.proc.stdin.close()
        assert d.proc.wait(30) == 0


def test_vmo_against_bytearray_model(driver: Driver) -> None:
    VmoModel.driver = driver
    run = VmoModel.TestCase
    run.settings = settings(max_examples=40, stateful_step_count=25, deadline=None,
                            suppress_health_check=[HealthCheck.too_slow])
    run().runTest()
