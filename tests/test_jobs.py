"""Jobs: the tree, who is born where, charges that add up, and commit limits that hold."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from rxkernel.proto import (
    PAGE_SIZE,
    RX_ERR_ACCESS_DENIED,
    RX_ERR_BAD_HANDLE,
    RX_ERR_INVALID_ARGS,
    RX_ERR_NO_MEMORY,
    RX_ERR_NOT_FOUND,
    RX_ERR_NOT_SUPPORTED,
    RX_ERR_OUT_OF_RANGE,
    RX_ERR_WRONG_TYPE,
    RX_INFO_JOB,
    RX_INFO_TASK_STATS,
    RX_PROP_JOB_COMMIT_HIGH,
    RX_PROP_JOB_COMMIT_MAX,
    RX_RIGHT_SAME_RIGHTS,
    RX_VMO_CHILD_SNAPSHOT,
    RX_VMO_COMMIT_EAGER,
    RX_VMO_OP_DECOMMIT,
    RxError,
)
from rxtest import RawClient, Rxd, read_line, running_rxd

P = PAGE_SIZE
HEADER = "import rxkernel.client as rx, os, sys, json\nRW = rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE\n"


def info(client: RawClient | Rxd, handle: int) -> dict[str, Any]:
    result: dict[str, Any] = client.call("rx_object_get_info", handle, RX_INFO_JOB)
    return result


def test_the_tree_and_who_is_born_where(rxd: Rxd) -> None:
    default = rxd.call("rx_job_default")
    top = info(rxd, default)
    assert top["parent_koid"] != 0 and top["num_processes"] == 1  # the harness's own connection
    child = rxd.call("rx_job_create", default, 0)
    grandchild = rxd.call("rx_job_create", child, 0)
    assert info(rxd, grandchild)["parent_koid"] == info(rxd, child)["koid"]
    assert info(rxd, default)["num_children"] == 1 and info(rxd, child)["num_children"] == 1
    # A process whose hello names a job is born there; the token is spent.
    token = rxd.call("rx_handle_export", grandchild, RX_RIGHT_SAME_RIGHTS)
    member = RawClient(rxd.socket, job=token)
    assert info(member, member.call("rx_job_default"))["koid"] == info(rxd, grandchild)["koid"]
    assert info(rxd, grandchild)["num_processes"] == 1
    with pytest.raises(RxError) as e:
        RawClient(rxd.socket, job=token)
    assert e.value.status == RX_ERR_NOT_FOUND and "job token" in str(e.value)
    vmo_token = rxd.call("rx_handle_export", rxd.call("rx_vmo_create", P, 0), RX_RIGHT_SAME_RIGHTS)
    with pytest.raises(RxError) as e:
        RawClient(rxd.socket, job=vmo_token)
    assert e.value.status == RX_ERR_WRONG_TYPE and "names a VMO, not a job" in str(e.value)
    assert rxd.call("rx_handle_import", vmo_token)  # refused hellos spend nothing
    member.close()
    rxd.wait_for(lambda: info(rxd, grandchild)["num_processes"] == 0, "the member's teardown")
    with pytest.raises(RxError) as e:
        rxd.call("rx_job_create", default, 1)
    assert e.value.status == RX_ERR_INVALID_ARGS and "options" in str(e.value)
    with pytest.raises(RxError) as e:
        rxd.call("rx_object_get_info", rxd.system, RX_INFO_JOB)
    assert e.value.status == RX_ERR_WRONG_TYPE and "RX_INFO_JOB needs a job handle" in str(e.value)


def test_a_job_lives_while_anything_refers_to_it(rxd: Rxd) -> None:
    default = rxd.call("rx_job_default")
    child = rxd.call("rx_job_create", default, 0)
    token = rxd.call("rx_handle_export", child, RX_RIGHT_SAME_RIGHTS)
    rxd.call("rx_handle_close", child)  # the token holds it now
    member = RawClient(rxd.socket, job=token)  # ... and then the process
    assert info(rxd, default)["num_children"] == 1
    vmo = member.call("rx_vmo_create", 4 * P, 0)
    member.call("rx_vmo_write", vmo, 0, b"m" * (4 * P))
    shared = rxd.call("rx_handle_import", member.call("rx_handle_export", vmo, RX_RIGHT_SAME_RIGHTS))
    member.close()
    # The job is gone with its last process, but its pages live on in a VMO another job holds:
    # they stay charged in the default job's subtree until freed.
    rxd.wait_for(lambda: info(rxd, default)["num_children"] == 0, "the job's end")
    assert info(rxd, default)["charged_bytes"] == 4 * P == rxd.kmem()["committed_bytes"]
    rxd.call("rx_handle_close", shared)
    assert info(rxd, default)["charged_bytes"] == 0 == rxd.kmem()["committed_bytes"]


def test_properties_are_checked_and_only_set_below_ones_own_job(rxd: Rxd) -> None:
    default = rxd.call("rx_job_default")
    with pytest.raises(RxError) as e:
        rxd.call("rx_object_set_property", default, RX_PROP_JOB_COMMIT_MAX, 1 << 20)
    assert e.value.status == RX_ERR_ACCESS_DENIED and "its own job" in str(e.value)
    child = rxd.call("rx_job_create", default, 0)
    rxd.call("rx_object_set_property", child, RX_PROP_JOB_COMMIT_MAX, 64 * P)
    assert rxd.call("rx_object_get_property", child, RX_PROP_JOB_COMMIT_MAX) == 64 * P
    grandchild = rxd.call("rx_job_create", child, 0)
    with pytest.raises(RxError) as e:
        rxd.call("rx_object_set_property", grandchild, RX_PROP_JOB_COMMIT_MAX, 65 * P)
    assert e.value.status == RX_ERR_OUT_OF_RANGE and "parent job's effective limit" in str(e.value)
    with pytest.raises(RxError) as e:  # "no limit of its own" would be above the parent's too
        rxd.call("rx_object_set_property", grandchild, RX_PROP_JOB_COMMIT_MAX, 0)
    assert e.value.status == RX_ERR_OUT_OF_RANGE
    rxd.call("rx_object_set_property", grandchild, RX_PROP_JOB_COMMIT_MAX, 16 * P)
    with pytest.raises(RxError) as e:
        rxd.call("rx_object_set_property", grandchild, RX_PROP_JOB_COMMIT_HIGH, P + 1)
    assert e.value.status == RX_ERR_INVALID_ARGS and "multiple of the page size" in str(e.value)
    with pytest.raises(RxError) as e:
        rxd.call("rx_object_set_property", grandchild, 12345, 0)
    assert e.value.status == RX_ERR_NOT_SUPPORTED and "RX_PROP_JOB_COMMIT_MAX" in str(e.value)
    vmo = rxd.call("rx_vmo_create", P, 0)
    with pytest.raises(RxError) as e:
        rxd.call("rx_object_set_property", vmo, RX_PROP_JOB_COMMIT_MAX, P)
    assert e.value.status == RX_ERR_NOT_SUPPORTED and "a job property" in str(e.value)
    # A member of the grandchild cannot raise its own limit, nor set its parent's.
    member = RawClient(rxd.socket, job=rxd.call("rx_handle_export", grandchild, RX_RIGHT_SAME_RIGHTS))
    own = member.call("rx_job_default")
    for target in (own, member.call("rx_handle_import", rxd.call("rx_handle_export", child, RX_RIGHT_SAME_RIGHTS))):
        with pytest.raises(RxError) as e:
            member.call("rx_object_set_property", target, RX_PROP_JOB_COMMIT_MAX, 32 * P)
        assert e.value.status == RX_ERR_ACCESS_DENIED
    limits = info(rxd, grandchild)
    assert limits["commit_max_bytes"] == 16 * P and limits["effective_commit_max_bytes"] == 16 * P
    rxd.call("rx_object_set_property", child, RX_PROP_JOB_COMMIT_MAX, 8 * P)  # lowering holds the child to it
    assert info(rxd, grandchild)["effective_commit_max_bytes"] == 8 * P
    assert info(rxd, grandchild)["commit_max_bytes"] == 16 * P
    member.close()
    with pytest.raises(RxError) as e:
        rxd.call("rx_object_get_property", 0x1234, RX_PROP_JOB_COMMIT_MAX)
    assert e.value.status == RX_ERR_BAD_HANDLE


def test_a_commit_past_the_limit_fails_and_names_the_job(rxd: Rxd) -> None:
    default = rxd.call("rx_job_default")
    limited = rxd.call("rx_job_create", default, 0)
    rxd.call("rx_object_set_property", limited, RX_PROP_JOB_COMMIT_MAX, 8 * P)
    member = RawClient(rxd.socket, job=rxd.call("rx_handle_export", limited, RX_RIGHT_SAME_RIGHTS))
    vmo = member.call("rx_vmo_create", 16 * P, 0)
    member.call("rx_vmo_write", vmo, 0, b"a" * (6 * P))
    with pytest.raises(RxError) as e:
        member.call("rx_vmo_write", vmo, 6 * P, b"b" * (3 * P))
    assert e.value.status == RX_ERR_NO_MEMORY and "RX_PROP_JOB_COMMIT_MAX" in str(e.value) and "job" in str(e.value)
    assert member.call("rx_vmo_read", vmo, 6 * P, 1) == b"\0"  # all or nothing
    assert info(rxd, limited)["events_max"] == 1 and info(rxd, limited)["charged_bytes"] == 6 * P
    # Another job's process writing the same VMO is charged to its own job: not limited here.
    other = rxd.call("rx_handle_import", member.call("rx_handle_export", vmo, RX_RIGHT_SAME_RIGHTS))
    rxd.call("rx_vmo_write", other, 6 * P, b"c" * (10 * P))
    assert info(rxd, limited)["charged_bytes"] == 6 * P
    assert info(rxd, default)["charged_bytes"] == 16 * P == rxd.kmem()["committed_bytes"]
    with pytest.raises(RxError) as e:  # the eager commit of a new VMO counts too
        member.call("rx_vmo_create", 4 * P, RX_VMO_COMMIT_EAGER)
    assert e.value.status == RX_ERR_NO_MEMORY
    member.close()
    rxd.call("rx_handle_close", other)
    rxd.wait_idle()


FAULTER = HEADER + """
vmo = rx.rx_vmo_create(64 * 4096)
addr = rx.rx_vmar_map(vmo, 0, 64 * 4096, RW, rx.RX_VM_MAP_RANDOM)
view = rx.rx_view(addr, 64 * 4096)
job = rx.rx_job_default()
for i in range(64):
    view[i * 4096] = 1
    print(i, rx.rx_object_get_info(job, rx.RX_INFO_JOB)["charged_bytes"], flush=True)
"""


def test_a_fault_past_the_limit_ends_the_client_with_words(rxd: Rxd) -> None:
    default = rxd.call("rx_job_default")
    limited = rxd.call("rx_job_create", default, 0)
    rxd.call("rx_object_set_property", limited, RX_PROP_JOB_COMMIT_MAX, 10 * P)
    import rxkernel.client as rx

    rx.connect(rxd.socket)  # popen exports the job handle through this process's own connection
    try:
        job = rx.rx_handle_import(rxd.call("rx_handle_export", limited, RX_RIGHT_SAME_RIGHTS))
        proc = rx.popen([sys.executable, "-c", FAULTER], job=job, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate(timeout=60)
    finally:
        rx.disconnect()
    lines = out.split()
    assert proc.returncode == -signal.SIGBUS, (out, err)
    assert lines[-1] == str(10 * P), out  # charged page by page to its own job, up to the limit
    assert "rx: out of memory at" in err and "commit limit of this process's job" in err, err
    rxd.wait_for(lambda: info(rxd, limited)["charged_bytes"] == 0, "the faulter's pages to go")
    assert info(rxd, limited)["events_max"] >= 1


FORKER = HEADER + """
vmo = rx.rx_vmo_create(4096)
addr = rx.rx_vmar_map(vmo, 0, 4096, RW)
rx.rx_view(addr, 4096)[0] = 1
mine = rx.rx_object_get_info(rx.rx_job_default(), rx.RX_INFO_JOB)["koid"]
pid = rx.fork()
if pid == 0:
    print(json.dumps(["child", rx.rx_object_get_info(rx.rx_job_default(), rx.RX_INFO_JOB)["koid"]]), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
print(json.dumps(["parent", mine]), flush=True)
"""


def test_popen_and_fork_children_are_born_in_the_right_job(rxd: Rxd) -> None:
    default = rxd.call("rx_job_default")
    job = rxd.call("rx_job_create", default, 0)
    import rxkernel.client as rx

    rx.connect(rxd.socket)
    try:
        handle = rx.rx_handle_import(rxd.call("rx_handle_export", job, RX_RIGHT_SAME_RIGHTS))
        proc = rx.popen([sys.executable, "-c", FORKER], job=handle, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate(timeout=60)
    finally:
        rx.disconnect()
    assert proc.returncode == 0, err
    seen = dict(json.loads(line) for line in out.splitlines())
    assert seen["child"] == seen["parent"] == info(rxd, job)["koid"], (seen, err)


# -- the charge model ----------------------------------------------------------------------------
#
# Four processes in a job tree  default ─┬─ a (limit) ─── b
#                                        └─ c
# write, snapshot, decommit and close VMOs they all hold. The model says which job each page
# is charged to (the writer's, for a fresh page or a copy-on-write copy), when it is freed, and
# when a commit must fail at a's limit; rxd's charges must match it after every step.

JOBS = ("default", "a", "b", "c")
A_LIMIT = 24  # pages


class Page:
    """One page some VMO may read: charged to `job` until no VMO reads it."""

    def __init__(self, job: str) -> None:
        self.job = job


class MVmo:
    def __init__(self, name: str, pages: int, handles: dict[str, int], parent: MVmo | None = None) -> None:
        self.name = name
        self.pages = pages
        self.handles = handles  # per process
        self.own: dict[int, Page | None] = {}  # page -> its own page, or None for a zero marker
        self.frozen: dict[int, Page] = dict(parent.visible()) if parent is not None else {}
        self.alive = True

    def visible(self) -> dict[int, Page]:
        out = {i: p for i, p in self.frozen.items() if i not in self.own}
        out.update({i: p for i, p in self.own.items() if p is not None})
        return out


class ChargeModel(RuleBasedStateMachine):
    world: tuple[Rxd, dict[str, RawClient], dict[str, int]]

    def __init__(self) -> None:
        super().__init__()
        self.rxd, self.procs, self.jobs = self.world
        self.vmos: list[MVmo] = []

    def ancestors(self, job: str) -> list[str]:
        return {"default": ["default"], "a": ["a", "default"], "b": ["b", "a", "default"], "c": ["c", "default"]}[job]

    def charged(self, job: str) -> int:
        pages: set[int] = set()
        live = [v for v in self.vmos if v.alive]
        for v in live:
            for p in v.visible().values():
                if job in self.ancestors(p.job):
                    pages.add(id(p))
        return len(pages)

    def charge_after(self, job: str, new: int) -> bool:
        """Would `new` more pages charged to `job` fit a's limit?"""
        return "a" not in self.ancestors(job) or self.charged("a") + new <= A_LIMIT

    @rule(proc=st.sampled_from(JOBS), pages=st.integers(1, 8))
    def create(self, proc: str, pages: int) -> None:
        h = self.procs[proc].call("rx_vmo_create", pages * P, 0)
        handles = {proc: h}
        for other, client in self.procs.items():
            if other != proc:
                handles[other] = client.call("rx_handle_import", self.procs[proc].call("rx_handle_export", h, RX_RIGHT_SAME_RIGHTS))
        self.vmos.append(MVmo(f"v{len(self.vmos)}", pages, handles))

    def live(self) -> list[MVmo]:
        return [v for v in self.vmos if v.alive]

    @precondition(lambda self: any(v.alive for v in self.vmos))
    @rule(proc=st.sampled_from(JOBS), which=st.integers(0, 50), first=st.integers(0, 7), count=st.integers(1, 8))
    def write(self, proc: str, which: int, first: int, count: int) -> None:
        v = self.live()[which % len(self.live())]
        first %= v.pages
        count = min(count, v.pages - first)
        new = [i for i in range(first, first + count) if v.own.get(i) is None]
        # A page v reads from a hidden node that no other live VMO reads moves to v with its
        # charge (rxd may even have moved it already, collapsing the chain in the background):
        # the rest are fresh pages or copies, charged to the writer.
        others = [w for w in self.live() if w is not v]
        reads = v.visible()
        moved = {i for i in new if i in reads and not any(reads[i] in w.visible().values() for w in others)}
        fresh = len(new) - len(moved)
        try:
            self.procs[proc].call("rx_vmo_write", v.handles[proc], first * P, b"w" * (count * P))
        except RxError as e:
            # Refused at a's limit: certain if even the fresh pages do not fit; possible if only
            # the moved ones do not (a move not collapsed yet is a copy first, then a move).
            assert e.status == RX_ERR_NO_MEMORY and not self.charge_after(proc, len(new)), (e, proc, new)
            return
        assert self.charge_after(proc, fresh), f"{proc} committed {fresh} pages past a's limit"
        for i in new:
            v.own[i] = reads[i] if i in moved else Page(proc)

    @precondition(lambda self: any(v.alive for v in self.vmos))
    @rule(proc=st.sampled_from(JOBS), which=st.integers(0, 50))
    def snapshot(self, proc: str, which: int) -> None:
        v = self.live()[which % len(self.live())]
        h = self.procs[proc].call("rx_vmo_create_child", v.handles[proc], RX_VMO_CHILD_SNAPSHOT, 0, v.pages * P)
        child = MVmo(f"{v.name}'", v.pages, {proc: h}, parent=v)
        # The original reads the same pages through the hidden node now: its own are frozen too.
        v.frozen, v.own = v.visible(), {}
        child.frozen = dict(v.frozen)
        self.vmos.append(child)
        for other, client in self.procs.items():
            if other != proc:
                child.handles[other] = client.call("rx_handle_import", self.procs[proc].call("rx_handle_export", h, RX_RIGHT_SAME_RIGHTS))

    @precondition(lambda self: any(v.alive for v in self.vmos))
    @rule(proc=st.sampled_from(JOBS), which=st.integers(0, 50), first=st.integers(0, 7), count=st.integers(1, 8))
    def decommit(self, proc: str, which: int, first: int, count: int) -> None:
        v = self.live()[which % len(self.live())]
        first %= v.pages
        count = min(count, v.pages - first)
        self.procs[proc].call("rx_vmo_op_range", v.handles[proc], RX_VMO_OP_DECOMMIT, first * P, count * P)
        for i in range(first, first + count):
            v.own[i] = None

    @precondition(lambda self: any(v.alive for v in self.vmos))
    @rule(which=st.integers(0, 50))
    def close(self, which: int) -> None:
        v = self.live()[which % len(self.live())]
        for proc, h in v.handles.items():
            self.procs[proc].call("rx_handle_close", h)
        v.alive = False

    @invariant()
    def charges_match(self) -> None:
        for job in JOBS:
            got = info(self.rxd, self.jobs[job])["charged_bytes"] // P
            assert got == self.charged(job), f"job {job}: rxd charges {got} pages, the model {self.charged(job)}"
        committed = self.rxd.kmem()["committed_bytes"] // P
        assert committed == self.charged("default"), "the default job's charge is everything here"

    def teardown(self) -> None:
        for v in self.live():
            for proc, h in v.handles.items():
                self.procs[proc].call("rx_handle_close", h)
        assert self.rxd.kmem()["committed_bytes"] == 0


@pytest.fixture(scope="module")
def charge_world() -> Iterator[tuple[Rxd, dict[str, RawClient], dict[str, int]]]:
    with running_rxd() as rxd:
        default = rxd.call("rx_job_default")
        a = rxd.call("rx_job_create", default, 0)
        rxd.call("rx_object_set_property", a, RX_PROP_JOB_COMMIT_MAX, A_LIMIT * P)
        jobs = {"default": default, "a": a, "b": rxd.call("rx_job_create", a, 0), "c": rxd.call("rx_job_create", default, 0)}
        procs = {"default": rxd._admin}
        for name in ("a", "b", "c"):
            procs[name] = RawClient(rxd.socket, job=rxd.call("rx_handle_export", jobs[name], RX_RIGHT_SAME_RIGHTS))
        yield rxd, procs, jobs
        for name in ("a", "b", "c"):
            procs[name].close()


def test_charges_follow_the_model(charge_world: tuple[Rxd, dict[str, RawClient], dict[str, int]]) -> None:
    ChargeModel.world = charge_world
    run = ChargeModel.TestCase
    run.settings = settings(max_examples=60, stateful_step_count=25, deadline=None, suppress_health_check=list(HealthCheck))
    run().runTest()


def test_a_job_handle_is_not_a_process_handle(rxd: Rxd) -> None:
    with pytest.raises(RxError) as e:
        rxd.call("rx_object_get_info", rxd.call("rx_job_default"), RX_INFO_TASK_STATS)
    assert e.value.status == RX_ERR_WRONG_TYPE and "job" in str(e.value)


TOUCHER = HEADER + """
import time
n = int(sys.argv[1])
vmo = rx.rx_vmo_create(n * 4096)
addr = rx.rx_vmar_map(vmo, 0, n * 4096, RW, rx.RX_VM_MAP_RANDOM)  # one page per fault
view = rx.rx_view(addr, n * 4096)
start = time.monotonic()
for i in range(n):
    view[i * 4096] = 1
print(time.monotonic() - start, flush=True)
"""


def test_faults_above_commit_high_are_throttled_in_proportion(rxd: Rxd) -> None:
    """memory.high's penalty: (overage ratio)^2 x pages, so 8 one-page faults past a 16-page high
    wait sum(k^2 / 256, k = 1..8) = 0.80 s in all; a job beside it is not slowed at all."""
    import rxkernel.client as rx

    default = rxd.call("rx_job_default")
    slow, free = rxd.call("rx_job_create", default, 0), rxd.call("rx_job_create", default, 0)
    rxd.call("rx_object_set_property", slow, RX_PROP_JOB_COMMIT_HIGH, 16 * P)
    assert rxd.call("rx_object_get_property", slow, RX_PROP_JOB_COMMIT_HIGH) == 16 * P
    rx.connect(rxd.socket)
    try:
        procs = [rx.popen([sys.executable, "-c", TOUCHER, "24"], job=rx.rx_handle_import(rxd.call("rx_handle_export", j, RX_RIGHT_SAME_RIGHTS)),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for j in (slow, free)]
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        rx.disconnect()
    assert all(p.returncode == 0 for p in procs), outs
    slow_info, free_info = info(rxd, slow), info(rxd, free)
    assert slow_info["events_high"] == 8 and free_info["events_high"] == 0
    assert 0.79e9 <= slow_info["throttled_ns"] < 3e9, slow_info
    assert free_info["throttled_ns"] == 0
    assert float(outs[0][0]) >= 0.79, outs[0]  # the client itself waited that long
    assert info(rxd, default)["throttled_ns"] == slow_info["throttled_ns"]  # counted up the tree
    # PSI: the slow job's only process was stalled all that time (some and full); the free job never.
    assert slow_info["stall_some_total_us"] >= 0.79e6 and slow_info["stall_full_total_us"] >= 0.79e6, slow_info
    assert free_info["stall_some_total_us"] == 0
    assert rxd.kmem()["stall_some_total_us"] >= slow_info["stall_some_total_us"]


def test_rxctl_jobs_prints_the_tree(rxd: Rxd) -> None:
    default = rxd.call("rx_job_default")
    child = rxd.call("rx_job_create", default, 0)
    rxd.call("rx_object_set_property", child, RX_PROP_JOB_COMMIT_MAX, 1 << 20)
    grandchild = rxd.call("rx_job_create", child, 0)

    def rxctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", "from rxkernel.client._rxctl import entry; entry()", *args],
                              env=rxd.env, capture_output=True, text=True, timeout=60)

    jobs = json.loads(rxctl("jobs", "--json").stdout)
    koids = [j["koid"] for j in jobs]
    mine = [info(rxd, h)["koid"] for h in (default, child, grandchild)]
    assert jobs[0]["parent_koid"] == 0 and [k for k in koids if k in mine] == mine  # root first, parents before children
    assert {j["koid"]: j for j in jobs}[mine[2]]["effective_commit_max_bytes"] == 1 << 20
    human = rxctl("jobs").stdout.splitlines()
    assert human[0].split()[:2] == ["JOB", "CHARGED"]
    assert any(line.startswith(f"      {mine[2]} ") and "1.0 MiB" in line for line in human), human


RACER = HEADER + """
import random
seed, rounds = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(seed)
vmo = rx.rx_vmo_create(256 * 4096)
committed = refused = 0
done = set()
for _ in range(rounds):
    first = rng.randrange(256)
    n = min(rng.randrange(1, 9), 256 - first)
    new = len(set(range(first, first + n)) - done)
    try:
        rx.rx_vmo_write(vmo, first * 4096, b"r" * (n * 4096))
    except rx.RxError as e:
        assert e.status == rx.RX_ERR_NO_MEMORY, e
        refused += 1
        continue
    done.update(range(first, first + n))
    committed += new
print(json.dumps({"committed": committed, "refused": refused}), flush=True)
sys.stdin.readline()
"""


def test_sixteen_processes_in_four_jobs_racing_to_commit_are_charged_exactly(rxd: Rxd) -> None:
    """A tree three deep (default - a - b, default - c - d), limits on a and c; four processes in
    each of a, b, c, d commit at once. Every job's charge is then exactly what its subtree's
    processes say they committed, no limit was passed, and each refusal was counted."""
    default = rxd.call("rx_job_default")
    a = rxd.call("rx_job_create", default, 0)
    b = rxd.call("rx_job_create", a, 0)
    c = rxd.call("rx_job_create", default, 0)
    d = rxd.call("rx_job_create", c, 0)
    rxd.call("rx_object_set_property", a, RX_PROP_JOB_COMMIT_MAX, 600 * P)
    rxd.call("rx_object_set_property", c, RX_PROP_JOB_COMMIT_MAX, 900 * P)
    jobs = {"a": a, "b": b, "c": c, "d": d}
    procs: dict[str, list[subprocess.Popen[str]]] = {name: [] for name in jobs}
    for i in range(16):
        name = "abcd"[i % 4]
        env = {**rxd.env, "RX_JOB": rxd.call("rx_handle_export", jobs[name], RX_RIGHT_SAME_RIGHTS)}
        procs[name].append(subprocess.Popen([sys.executable, "-c", RACER, str(i), "80"], env=env, text=True,
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    reports = {name: [json.loads(read_line(p, timeout=120)) for p in ps] for name, ps in procs.items()}
    own = {name: sum(r["committed"] for r in rs) for name, rs in reports.items()}
    refused = {name: sum(r["refused"] for r in rs) for name, rs in reports.items()}
    got = {name: info(rxd, h) for name, h in jobs.items()}
    assert got["b"]["charged_bytes"] == own["b"] * P and got["d"]["charged_bytes"] == own["d"] * P
    assert got["a"]["charged_bytes"] == (own["a"] + own["b"]) * P <= 600 * P
    assert got["c"]["charged_bytes"] == (own["c"] + own["d"]) * P <= 900 * P
    assert got["a"]["events_max"] == refused["a"] + refused["b"] and got["c"]["events_max"] == refused["c"] + refused["d"]
    assert refused["a"] + refused["b"] > 0, "the race should have met a's limit"
    assert rxd.kmem()["committed_bytes"] == info(rxd, default)["charged_bytes"]
    for ps in procs.values():
        for p in ps:
            p.communicate("\n", timeout=60)
    rxd.wait_idle()
    assert all(info(rxd, h)["charged_bytes"] == 0 for h in jobs.values())


CHURNER = HEADER + """
import threading, time
vmo = rx.rx_vmo_create(64 * 4096)
view = rx.rx_view(rx.rx_vmar_map(vmo, 0, 64 * 4096, RW), 64 * 4096)
view[0:64 * 4096] = b"c" * (64 * 4096)
word_vmo = rx.rx_vmo_create(4096)
addr_of_word = rx.rx_vmar_map(word_vmo, 0, 4096, RW)
threading.Thread(target=lambda: rx.rx_futex_wait(addr_of_word, 0), daemon=True).start()  # never woken
print("churning", flush=True)
i = 0
while True:  # snapshots, writes into them and into the original, until killed
    child = rx.rx_vmo_create_child(vmo, rx.RX_VMO_CHILD_SNAPSHOT, 0, 64 * 4096)
    rx.rx_vmo_write(child, (i % 64) * 4096, b"k" * 4096)
    view[(i * 7 % 64) * 4096] = i & 0xFF
    rx.rx_handle_close(child)
    i += 1
"""


@pytest.mark.parametrize("mode", ["heuristic", "never"])
def test_kills_during_snapshots_and_futex_waits_leave_charges_exact(rxd: Rxd, mode: str) -> None:
    import random
    import time

    default = rxd.call("rx_job_default")
    job = rxd.call("rx_job_create", default, 0)
    rxd.call("rx_object_set_property", job, RX_PROP_JOB_COMMIT_MAX, 1024 * P)
    if mode == "never":
        from rxkernel.proto import RX_OVERCOMMIT_NEVER, RX_PROP_JOB_OVERCOMMIT
        rxd.call("rx_object_set_property", job, RX_PROP_JOB_OVERCOMMIT, RX_OVERCOMMIT_NEVER)
    rng = random.Random(11)
    for _ in range(6):
        env = {**rxd.env, "RX_JOB": rxd.call("rx_handle_export", job, RX_RIGHT_SAME_RIGHTS)}
        p = subprocess.Popen([sys.executable, "-c", CHURNER], env=env, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert read_line(p) == "churning"
        time.sleep(rng.uniform(0.05, 0.3))
        p.kill()
        p.wait(30)
    rxd.wait_for(lambda: rxd.kmem()["num_processes"] == 1, "the victims' teardown")
    rxd.wait_idle()
    k = rxd.kmem()
    assert k["reserved_bytes"] == 0 and k["futex_waiters"] == 0 and k["num_hidden_nodes"] == 0, k
    got = info(rxd, job)
    assert got["charged_bytes"] == 0 and got["reserved_bytes"] == 0 and got["num_processes"] == 0, got
    assert info(rxd, default)["charged_bytes"] == 0


WATCH_JOB = HEADER + """
job = rx.rx_handle_import(sys.argv[1])
known = rx.rx_object_get_info(job, rx.RX_INFO_JOB)["events_total"]
print("watching", known, flush=True)
print(rx.rx_job_wait_events(job, known), flush=True)
"""


def test_a_watcher_hears_the_job_pass_its_high_mark(rxd: Rxd) -> None:
    job = rxd.call("rx_job_create", rxd.call("rx_job_default"), 0)
    rxd.call("rx_object_set_property", job, RX_PROP_JOB_COMMIT_HIGH, 4 * P)
    watcher = rxd.spawn(WATCH_JOB, rxd.call("rx_handle_export", job, RX_RIGHT_SAME_RIGHTS))
    assert read_line(watcher) == "watching 0"
    member = RawClient(rxd.socket, job=rxd.call("rx_handle_export", job, RX_RIGHT_SAME_RIGHTS))
    vmo = member.call("rx_vmo_create", 8 * P, 0)
    member.call("rx_vmo_write", vmo, 0, b"x" * (4 * P))  # at the mark, not past it: nothing
    member.call("rx_vmo_write", vmo, 4 * P, b"x" * P)  # past it: a high event
    assert int(read_line(watcher)) >= 1 and watcher.wait(30) == 0
    assert info(rxd, job)["events_high"] >= 1
    member.close()


@pytest.mark.parametrize("call", ["rx_job_wait_events", "rx_system_wait_pressure"])
def test_a_thread_that_leaves_mid_wait_frees_its_wait(rxd: Rxd, call: str) -> None:
    """Blocking waits watch their thread channel: a thread that goes away does not leave a task
    and an fd in rxd until an infinite deadline."""
    import time

    import msgpack

    from rxkernel.proto import CHANNEL_THREAD, RX_TIME_INFINITE, SYSCALL_NUMBERS

    member = RawClient(rxd.socket)
    job = member.call("rx_job_default")
    fds = rxd.fd_count()
    for _ in range(5):
        sock = member.side_channel(CHANNEL_THREAD)
        args = (job, 0, RX_TIME_INFINITE) if call == "rx_job_wait_events" else (0, RX_TIME_INFINITE)
        sock.sendall(msgpack.packb([1, SYSCALL_NUMBERS[call], *args]))  # a request frame (proto/WIRE.md)
        time.sleep(0.05)  # (rxd is waiting now)
        sock.close()
    rxd.wait_for(lambda: rxd.fd_count() == fds, "the waits' channels to close in rxd", timeout=10)
    assert "Traceback" not in rxd.log_text()
    member.close()


def test_job_syscalls_refuse_handles_of_the_wrong_kind(rxd: Rxd) -> None:
    vmo = rxd.call("rx_vmo_create", P, 0)
    for name, args in (("rx_job_create", (vmo, 0)), ("rx_job_wait_events", (vmo, 0, 0))):
        with pytest.raises(RxError) as e:
            rxd.call(name, *args)
        assert e.value.status == RX_ERR_WRONG_TYPE and "not a job" in str(e.value), (name, e.value)
    with pytest.raises(RxError) as e:
        rxd.call("rx_job_wait_events", 0x777, 0, 0)
    assert e.value.status == RX_ERR_BAD_HANDLE
    job = rxd.call("rx_job_default")
    assert rxd.call("rx_job_wait_events", job, 12345, 0) == 0  # differs already: at once, with the total


def test_a_reservation_filled_after_its_job_went_is_charged_up_to_the_root() -> None:
    """A review found it: filling the last of a retired group's reservation emptied the group
    before the charge was added, so it left the tree and only it was charged."""
    from rxkernel.server.vm import PhysicalMemory
    from rxkernel.server.vm._charge import ChargeGroup

    memory = PhysicalMemory(1 << 30)
    job = ChargeGroup("job", ChargeGroup("parent", memory.root))
    memory.reserve(10, job)
    job.retire()  # the job went; an RX_OVERCOMMIT_NEVER VMO still holds its promise
    memory.commit(10, job, covered=10)
    assert memory.root.charged_pages == memory.committed_pages == 10
    assert memory.root.reserved_pages == memory.reserved_pages == 0


# Found by test_charges_follow_the_model (a CI run, 2026-12-02): a write to a page of a hidden
# node that no other VMO sees any more, while the node itself must stay (another VMO still reads
# other pages through it). The model moves the page with its charge, as a collapse does; rxd
# copies it, charging the writer, and frees the original, so the charge lands on a different job
# depending on whether a collapse got there first. Pinned here until the write moves the page.
_UNSEEN_PAGE_STEPS: list[tuple[str, dict[str, Any]]] = [
    ("create", {"pages": 3, "proc": "default"}), ("snapshot", {"proc": "default", "which": 0}),
    ("create", {"pages": 1, "proc": "default"}), ("decommit", {"count": 1, "first": 0, "proc": "default", "which": 0}),
    ("write", {"count": 1, "first": 1, "proc": "default", "which": 1}), ("write", {"count": 1, "first": 2, "proc": "a", "which": 1}),
    ("close", {"which": 0}), ("snapshot", {"proc": "default", "which": 0}),
    ("decommit", {"count": 2, "first": 1, "proc": "default", "which": 2}), ("write", {"count": 2, "first": 1, "proc": "default", "which": 0}),
]


@pytest.mark.xfail(strict=True, reason="a write over a hidden page nobody else sees copies it (charging the writer) instead of moving it with its charge")
def test_a_write_over_an_unseen_hidden_page_keeps_its_charge(charge_world: tuple[Rxd, dict[str, RawClient], dict[str, int]]) -> None:
    ChargeModel.world = charge_world
    model = ChargeModel()
    try:
        for rule, args in _UNSEEN_PAGE_STEPS:
            getattr(model, rule)(**args)
            model.charges_match()
    finally:
        for v in model.live():  # (whatever happened, the next test starts from nothing)
            for proc, h in v.handles.items():
                model.procs[proc].call("rx_handle_close", h)
