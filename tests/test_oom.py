"""The OOM killer: a fault that cannot be given memory kills the right process, and nobody else."""

from __future__ import annotations

import signal
import subprocess
import sys

from rxkernel.proto import (
    PAGE_SIZE,
    RX_INFO_JOB,
    RX_PROP_JOB_COMMIT_MAX,
    RX_PROP_JOB_KILL_ON_OOM,
    RX_PROP_JOB_OOM_GROUP,
    RX_PROP_PROCESS_OOM_SCORE_ADJ,
    RX_RIGHT_SAME_RIGHTS,
)
from rxtest import Rxd, read_line, running_rxd

P = PAGE_SIZE
TOUCH = """
import sys, rxkernel.client as rx
n = int(sys.argv[1])
vmo = rx.rx_vmo_create(n * 4096)
view = rx.rx_view(rx.rx_vmar_map(vmo, 0, n * 4096, rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE, rx.RX_VM_MAP_RANDOM), n * 4096)
print("started", rx.rx_object_get_info(rx.rx_process_self(), rx.RX_INFO_HANDLE_BASIC)["koid"], flush=True)
for i in range(n):
    view[i * 4096] = 1
print("touched", flush=True)
sys.stdin.readline()
"""


def start(rxd: Rxd, job: int, pages: int) -> tuple[subprocess.Popen[str], int]:
    """A process in `job` that touches `pages` pages of its own, says so and waits; with its koid."""
    env = {**rxd.env, "RX_JOB": rxd.call("rx_handle_export", job, RX_RIGHT_SAME_RIGHTS)}
    proc = subprocess.Popen([sys.executable, "-c", TOUCH, str(pages)], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    koid = int(read_line(proc).split()[1])
    return proc, koid


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    _, err = proc.communicate("\n", timeout=60)
    return proc.returncode, err


def limited_job(rxd: Rxd, pages: int) -> int:
    job: int = rxd.call("rx_job_create", rxd.call("rx_job_default"), 0)
    rxd.call("rx_object_set_property", job, RX_PROP_JOB_COMMIT_MAX, pages * P)
    return job


def test_the_process_that_frees_most_is_killed_and_the_fault_goes_on(rxd: Rxd) -> None:
    job = limited_job(rxd, 64)
    bystander, _ = start(rxd, rxd.call("rx_job_create", rxd.call("rx_job_default"), 0), 100)  # bigger, elsewhere
    hog, hog_koid = start(rxd, job, 40)
    assert read_line(hog) == "touched" and read_line(bystander) == "touched"
    faulter, _ = start(rxd, job, 40)  # 40 + 40 > 64: at its 25th page the hog (40 > 24) goes
    assert read_line(faulter) == "touched"
    assert finish(faulter)[0] == 0
    assert hog.wait(30) == -signal.SIGKILL
    assert finish(bystander)[0] == 0  # another job's process is never the victim of this job's limit
    info = rxd.call("rx_object_get_info", job, RX_INFO_JOB)
    assert info["events_oom"] == 1 and info["events_oom_kill"] == 1, info
    assert rxd.kmem()["oom_kills"] == 1
    line = next(line for line in rxd.log_text().splitlines() if "out of memory: killing a process" in line)
    assert f"koid={hog_koid}" in line and "badness=" in line and "charge_bytes=" in line, line


def test_adj_minus_1000_is_never_chosen_so_the_faulter_goes(rxd: Rxd) -> None:
    job = limited_job(rxd, 64)
    hog, hog_koid = start(rxd, job, 40)
    assert read_line(hog) == "touched"
    rxd.call("rx_object_set_property", rxd.call("rx_object_get_child", rxd.system, hog_koid, RX_RIGHT_SAME_RIGHTS),
             RX_PROP_PROCESS_OOM_SCORE_ADJ, (-1000) & ((1 << 64) - 1))
    faulter, _ = start(rxd, job, 40)
    code, err = finish(faulter)
    assert code == -signal.SIGBUS and "rx: out of memory at" in err, err  # the only candidate: it goes, with words
    assert finish(hog)[0] == 0
    assert any("the faulting process is the one to go" in line for line in rxd.log_text().splitlines())


def test_oom_fail_kills_nobody_and_the_faulter_ends_with_words() -> None:
    with running_rxd(extra=["--oom", "fail"]) as rxd:
        job = limited_job(rxd, 64)
        hog, _ = start(rxd, job, 40)
        assert read_line(hog) == "touched"
        faulter, _ = start(rxd, job, 40)
        code, err = finish(faulter)
        assert code == -signal.SIGBUS and "rx: out of memory at" in err, err
        assert finish(hog)[0] == 0
        assert rxd.call("rx_object_get_info", job, RX_INFO_JOB)["events_oom_kill"] == 0 and rxd.kmem()["oom_kills"] == 0


def test_an_oom_group_job_goes_whole(rxd: Rxd) -> None:
    job = limited_job(rxd, 80)
    group = rxd.call("rx_job_create", job, 0)
    rxd.call("rx_object_set_property", group, RX_PROP_JOB_OOM_GROUP, 1)
    hogs = [start(rxd, group, 30)[0] for _ in range(2)]
    for h in hogs:
        assert read_line(h) == "touched"
    faulter, _ = start(rxd, job, 30)  # 60 + 30 > 80: at its 21st page a hog (30 > 20) is the victim, and its group goes
    assert read_line(faulter) == "touched" and finish(faulter)[0] == 0
    assert [h.wait(30) for h in hogs] == [-signal.SIGKILL, -signal.SIGKILL]
    assert rxd.call("rx_object_get_info", job, RX_INFO_JOB)["events_oom_kill"] == 2


def test_kill_on_oom_jobs_are_chosen_first(rxd: Rxd) -> None:
    job = limited_job(rxd, 96)
    marked = rxd.call("rx_job_create", job, 0)
    rxd.call("rx_object_set_property", marked, RX_PROP_JOB_KILL_ON_OOM, 1)
    assert rxd.call("rx_object_get_property", marked, RX_PROP_JOB_KILL_ON_OOM) == 1
    big, _ = start(rxd, job, 50)  # bigger, but not in a KILL_ON_OOM job
    small, _ = start(rxd, marked, 10)
    assert read_line(big) == "touched" and read_line(small) == "touched"
    faulter, _ = start(rxd, job, 40)  # 60 + 40 > 96
    assert read_line(faulter) == "touched" and finish(faulter)[0] == 0
    assert small.wait(30) == -signal.SIGKILL and finish(big)[0] == 0


STEADY = """
import sys, time, rxkernel.client as rx
vmo = rx.rx_vmo_create(4096)
print("started", 0, flush=True)
worst, end = 0.0, time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    t = time.monotonic()
    rx.rx_vmo_get_size(vmo)
    worst = max(worst, time.monotonic() - t)
print(worst, flush=True)
"""


def test_the_killer_never_stalls_other_clients(rxd: Rxd) -> None:
    steady = subprocess.Popen([sys.executable, "-c", STEADY, "4"], env=rxd.env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    read_line(steady)
    job = limited_job(rxd, 256)
    for _ in range(3):  # OOM kills, one after another
        hog, _ = start(rxd, job, 150)
        assert read_line(hog) == "touched"
        faulter, _ = start(rxd, job, 150)
        assert read_line(faulter) == "touched" and finish(faulter)[0] == 0
        assert hog.wait(30) == -signal.SIGKILL
    worst = float(read_line(steady, timeout=60))
    assert steady.wait(30) == 0
    assert worst < 1.0, f"a client elsewhere waited {worst:.3f} s for a syscall during OOM kills"
    assert rxd.kmem()["oom_kills"] == 3
