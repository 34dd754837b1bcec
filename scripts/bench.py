"""rxkernel benchmarks. Each figure is a ratio against a baseline measured in the same run, because
this is a noisy 2-vCPU VM and absolute numbers drift between runs.

1. first touch: sequential first touch of a 256 MiB mapping vs the same on Linux anonymous memory
2. fault latency: single-page faults (random pages, fault-around off) p50/p99/p99.9 vs a bare C
   process pair doing a Unix-socket round trip plus one mmap
3. syscalls: one client's rx_vmo_get_size round trip p50/p99/p99.9 vs a bare Python Unix-socket
   echo; throughput with 1, 16 and 64 client processes vs a bare C epoll echo server with as many
   C clients (the ceiling), and rxd's CPU per syscall
4. rxd memory per committed page with 1 GiB committed
5. snapshot (RX_VMO_CHILD_SNAPSHOT) of a fully committed 1 GiB VMO, unmapped and mapped + touched, vs
   the same snapshot of a 1 MiB VMO (it must not grow with size) and vs os.fork() of a process with
   1 GiB of touched anonymous memory
6. copy-on-write write faults: one byte written per page of a mapped snapshot child, sequentially, vs
   Linux's copy-on-write in a fork child writing one byte per page of the same size
7. rx.fork() of a process mapping 1 GiB (touched) vs os.fork() with 1 GiB of touched anonymous
   memory, and what the child costs after writing one page

8. clock: rx_clock_get_monotonic() from Python (the vDSO) vs time.monotonic_ns() and vs an rx syscall
   round trip (rx_vmo_get_size); also the vDSO read itself from C
9. uncontended Mutex acquire/release from Python vs multiprocessing.Lock (and the same pair in C)
10. the ring buffer demo (scripts/ring_buffer_demo.py, 4 producers, 4 consumers) on rx Mutex +
   Condition vs the same ring on multiprocessing.shared_memory + multiprocessing.Condition, and vs
   the same messages through one os.pipe

Benchmarks 5-7 use 1 GiB, or 512 MiB when the machine has too little RAM for 1 GiB twice over (the
output says which). `scripts/bench cow` runs only 5-7, `scripts/bench core` only 1-4, `scripts/bench
clock` only 8, `scripts/bench sync` only 9-10; benchmarks can also be named one by one
(`scripts/bench snapshot rx-fork`).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from rxtest import read_line, running_rxd  # noqa: E402

from rxkernel.proto import (  # noqa: E402
    CHANNEL_MAIN,
    RX_PROP_JOB_COMMIT_HIGH,
    RX_PROP_JOB_COMMIT_MAX,
    RX_RIGHT_SAME_RIGHTS,
    SYSCALL_NUMBERS,
    Connection,
    Hello,
    Role,
    encode_request,
)

from rxkernel.native import lib as rxkernel_lib  # noqa: E402
import _bench_native  # noqa: E402  (beside this file: the C baselines, built on demand)

# Client code that needs the C baselines starts with this: `bench` is their cffi lib.
BENCH_NATIVE = (
    f"import sys as _sys; _sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
    "import _bench_native; _bench = _bench_native.load(); bench, bench_ffi = _bench.lib, _bench.ffi\n"
)

TICKS = os.sysconf("SC_CLK_TCK")


def rxd_cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rxd_rss(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def client(rxd: Any, code: str, *args: str) -> Any:
    out = rxd.run(code, *args, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


FIRST_TOUCH = BENCH_NATIVE + """
import json, sys
import rxkernel.client as rx
from rxkernel.native import lib
size, rounds = int(sys.argv[1]), int(sys.argv[2])
rxs, linux = [], []
for _ in range(rounds):
    linux.append(bench.rx_bench_anon_first_touch(size))
    vmo = rx.rx_vmo_create(size)
    addr = rx.rx_vmar_map(vmo, 0, size, rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE)
    before = rx.rx_trap_counters()["faults"]
    rxs.append(lib.rx_touch(addr, size, 1))
    faults = rx.rx_trap_counters()["faults"] - before
    rx.rx_vmar_unmap(addr, size)
    rx.rx_handle_close(vmo)
print(json.dumps({"rx_ns": min(rxs), "linux_ns": min(linux), "faults_last_round": faults}))
"""

FAULT_LATENCY = BENCH_NATIVE + """
import json, random, sys
import rxkernel.client as rx
from rxkernel.native import lib
n = int(sys.argv[1])
size = 1 << 30
vmo = rx.rx_vmo_create(size)
addr = rx.rx_vmar_map(vmo, 0, size, rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE, rx.RX_VM_MAP_RANDOM)
pages = random.sample(range(size // 4096), n)
for p in pages[:50]:
    lib.rx_touch(addr + p * 4096, 4096, 1)   # warm up channels
lat = sorted(lib.rx_touch(addr + p * 4096, 4096, 1) for p in pages[50:])
base = bench_ffi.new("int64_t[]", n)
bench.rx_bench_socket_roundtrip(n, 1, base)
b = sorted(base[i] for i in range(n))
q = lambda xs, f: xs[min(len(xs) - 1, int(len(xs) * f))]
print(json.dumps({"rx_p50": q(lat, .5), "rx_p99": q(lat, .99), "rx_p999": q(lat, .999),
                  "base_p50": q(b, .5), "base_p99": q(b, .99), "base_p999": q(b, .999), "rx_ns": lat, "base_ns": b}))
"""

SYSCALL_LOOP = """
import json, sys, time
import rxkernel.client as rx
seconds = float(sys.argv[1])
vmo = rx.rx_vmo_create(4096)
sys.stdout.write("ready\\n"); sys.stdout.flush()
sys.stdin.readline()
n, t_end = 0, time.monotonic() + seconds
while time.monotonic() < t_end:
    rx.rx_vmo_get_size(vmo)
    n += 1
print(json.dumps({"calls": n}))
"""

SYSCALL_LATENCY = """
import json, sys, time
import rxkernel.client as rx
n = int(sys.argv[1])
vmo = rx.rx_vmo_create(4096)
for _ in range(200):
    rx.rx_vmo_get_size(vmo)
lat = []
clock = time.perf_counter_ns
for _ in range(n):
    t0 = clock()
    rx.rx_vmo_get_size(vmo)
    lat.append(clock() - t0)
print(json.dumps(lat))
"""

# The bare Python Unix-socket echo: a server process answering 24-byte frames, and a client timing
# round trips the way a stub does one (a send, then a recv of the reply).
PY_ECHO = """
import json, os, socket, sys, time
n = int(sys.argv[1])
ours, theirs = socket.socketpair()
if os.fork() == 0:
    ours.close()
    while True:
        m = theirs.recv(64)
        if not m:
            os._exit(0)
        theirs.sendall(m)
theirs.close()
msg, lat, clock = b"x" * 24, [], time.perf_counter_ns
for i in range(n + 200):
    t0 = clock()
    ours.sendall(msg)
    ours.recv(64)
    if i >= 200:
        lat.append(clock() - t0)
ours.close()
os.wait()
print(json.dumps(lat))
"""

COMMIT_1G = """
import json, sys
import rxkernel.client as rx
vmo = rx.rx_vmo_create(1 << 30)
addr = rx.rx_vmar_map(vmo, 0, 1 << 30, rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE)
from rxkernel.native import lib
lib.rx_touch(addr, 1 << 30, 1)
print("committed", flush=True)
sys.stdin.readline()
"""


CLOCK_CALLS = """
import json, sys, time, timeit
import rxkernel.client as rx
from rxkernel.native import ffi, lib
n, rounds = int(sys.argv[1]), int(sys.argv[2])
vmo = rx.rx_vmo_create(4096)
rx.rx_clock_get_monotonic()   # connect and attach first
def best(fn, number):
    return min(timeit.repeat(fn, number=number, repeat=rounds)) / number * 1e9
out = ffi.new("int64_t[3]")
t0 = time.perf_counter_ns()
lib.rxv_check_clock(n, 1 << 62, 0, out)
c_ns = (time.perf_counter_ns() - t0) / n
print(json.dumps({
    "rx_ns": best(rx.rx_clock_get_monotonic, n),
    "host_ns": best(time.monotonic_ns, n),
    "syscall_ns": best(lambda: rx.rx_vmo_get_size(vmo), max(n // 500, 200)),
    "c_ns": c_ns,
}))
"""


# -- copy-on-write benchmarks (5-7) -----------------------------------------------------------------

# Shared by the rx client programs below: kmem from the client itself, and a wait for rxd to settle
# (closing a snapshot leaves a hidden node that rxd collapses asynchronously; until it has, a write
# to the parent would copy).
RX_PRELUDE = """
import json, os, sys, time
import rxkernel.client as rx
from rxkernel.native import ffi, lib
RW = rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE
SYSTEM = rx.rx_system_handle()
def kmem():
    return rx.rx_object_get_info(SYSTEM, rx.RX_INFO_KMEM_STATS)
def settle(committed, processes=None):
    deadline = time.monotonic() + 60
    while True:
        k = kmem()
        if not k["num_hidden_nodes"] and k["committed_bytes"] == committed and processes in (None, k["num_processes"]):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"rxd did not settle to {committed} committed bytes / {processes} processes: {k}")
        time.sleep(0.002)
"""

# This process's memory as Linux counts it (bytes): the whole process (Python's own pages too), and
# the mappings inside [lo, hi) (the memory under test) from /proc/self/smaps.
PROC_MEM = """
def mem_status(lo, hi):
    out = {"range_Rss": 0, "range_Private_Dirty": 0, "range_Shared_Dirty": 0}
    for line in open("/proc/self/status"):
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            out[key] = int(rest.split()[0]) * 1024
    inside = False
    for line in open("/proc/self/smaps"):
        first = line.split(None, 1)[0]
        if not first.endswith(":"):
            start, end = (int(x, 16) for x in first.split("-"))
            inside = start < hi and end > lo
        elif inside and "range_" + first[:-1] in out:
            out["range_" + first[:-1]] += int(line.split()[1]) * 1024
    return out
"""

SNAPSHOT = RX_PRELUDE + """
big, small, rounds, mapped = (int(a) for a in sys.argv[1:5])
t0 = time.perf_counter_ns()
vmos = {size: rx.rx_vmo_create(size, rx.RX_VMO_COMMIT_EAGER) for size in (big, small)}
commit_ns = time.perf_counter_ns() - t0
committed = kmem()["committed_bytes"]
assert committed == big + small, kmem()
addrs = {size: rx.rx_vmar_map(vmo, 0, size, RW) for size, vmo in vmos.items()} if mapped else {}
times = {big: [], small: []}
touch = []
for r in range(rounds):
    for size in (small, big):
        vmo = vmos[size]
        mark = b"snap%04d" % r
        rx.rx_vmo_write(vmo, size - 4096, mark)
        if mapped:
            faults = rx.rx_trap_counters()["faults"]
            ns = lib.rx_touch(addrs[size], size, 1)
            if size == big:
                touch.append({"ns": ns, "faults": rx.rx_trap_counters()["faults"] - faults})
        t0 = time.perf_counter_ns()
        child = rx.rx_vmo_create_child(vmo, rx.RX_VMO_CHILD_SNAPSHOT, 0, size)
        times[size].append(time.perf_counter_ns() - t0)
        k = kmem()
        assert k["committed_bytes"] == committed, f"a snapshot committed memory: {k}"
        assert rx.rx_vmo_read(child, size - 4096, 8) == mark, "the snapshot does not show the parent's data"
        rx.rx_handle_close(child)
        settle(committed)
print(json.dumps({"big_ns": times[big], "small_ns": times[small], "commit_ns": commit_ns, "touch": touch}))
"""

# Linux baselines: a process with `size` bytes of touched private anonymous memory forks.
#   fork: time os.fork() until it returns in the parent; the child _exit(0)s at once.
#   cow:  the child writes one byte per page (rx_touch: the same C loop as the rx side), timed.
#   rss:  the child's memory before and after writing one page.
LINUX_FORK = PROC_MEM + """
import json, mmap, os, sys, time, traceback
from rxkernel.native import ffi, lib
size, rounds, modes = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(",")
mem = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
addr = int(ffi.cast("uintptr_t", ffi.from_buffer(mem)))
out = {"touch_ns": lib.rx_touch(addr, size, 1)}
def in_child(fn):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # never return into the parent's code, whatever happens
        try:
            os.close(r)
            os.write(w, json.dumps(fn()).encode())
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert status == 0, status
    return json.loads(data)
if "fork" in modes:
    out["fork_ns"] = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        out["fork_ns"].append(time.perf_counter_ns() - t0)
        os.waitpid(pid, 0)
if "cow" in modes:
    out["cow_ns"] = [in_child(lambda: lib.rx_touch(addr, size, 1)) for _ in range(rounds)]
if "rss" in modes:
    def one_page():
        mem_status(addr, addr + size)  # warm up, as on the rx side
        before = mem_status(addr, addr + size)
        lib.rx_touch(addr, 4096, 1)
        return {"before": before, "after": mem_status(addr, addr + size)}
    out["rss"] = in_child(one_page)
print(json.dumps(out))
"""

COW_WRITE = RX_PRELUDE + """
size, rounds = int(sys.argv[1]), int(sys.argv[2])
vmo = rx.rx_vmo_create(size, rx.RX_VMO_COMMIT_EAGER)
marks = {0: b"first pg", size // 2: b"middle p", size - 4096: b"last pg!"}
for off, mark in marks.items():
    rx.rx_vmo_write(vmo, off, mark)
settle(size)
out = []
for _ in range(rounds):
    child = rx.rx_vmo_create_child(vmo, rx.RX_VMO_CHILD_SNAPSHOT, 0, size)
    addr = rx.rx_vmar_map(child, 0, size, RW)
    k0, f0 = kmem(), rx.rx_trap_counters()["faults"]
    ns = lib.rx_touch(addr, size, 1)
    k1, f1 = kmem(), rx.rx_trap_counters()["faults"]
    view = rx.rx_view(addr, size)
    for off, mark in marks.items():
        assert bytes(view[off:off + 8]) == mark, f"the child lost the parent's data at {off:#x}"
    view[0:8] = b"childwr!"
    assert rx.rx_vmo_read(vmo, 0, 8) == marks[0], "the child's write reached the parent"
    del view
    out.append({"ns": ns, "faults": f1 - f0, **{key: k1[key] - k0[key] for key in ("committed_bytes", "cow_faults", "cow_pages_copied")}})
    rx.rx_vmar_unmap(addr, size)
    rx.rx_handle_close(child)
    settle(size)
print(json.dumps(out))
"""

RX_FORK = RX_PRELUDE + PROC_MEM + """
import traceback
size, rounds = int(sys.argv[1]), int(sys.argv[2])
vmo = rx.rx_vmo_create(size, rx.RX_VMO_COMMIT_EAGER)
addr = rx.rx_vmar_map(vmo, 0, size, RW)
view = rx.rx_view(addr, size)
view[0:8] = b"parent!!"
processes = kmem()["num_processes"]
fork_ns = []
for _ in range(rounds):
    lib.rx_touch(addr, size, 1)
    t0 = time.perf_counter_ns()
    pid = rx.fork()
    if pid == 0:
        os._exit(0)
    fork_ns.append(time.perf_counter_ns() - t0)
    _, status = os.waitpid(pid, 0)
    assert status == 0, status
    settle(size, processes)
# One more fork whose child writes one page: what that costs rxd and the child.
lib.rx_touch(addr, size, 1)
r, w = os.pipe()
go_r, go_w = os.pipe()
k0 = kmem()
pid = rx.fork()
if pid == 0:  # never return into the parent's code, whatever happens
    try:
        os.close(r)
        os.close(go_w)
        mem_status(addr, addr + size)  # warm up: the figures should show the page, not Python's first call
        before = mem_status(addr, addr + size)
        lib.rx_touch(addr, 4096, 1)
        after = mem_status(addr, addr + size)
        view[0:8] = b"childwr!"
        ok = bytes(view[0:8]) == b"childwr!"
        os.write(w, json.dumps({"before": before, "after": after, "ok": ok}).encode())
        os.close(w)
        os.read(go_r, 1)
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    os._exit(0)
os.close(w)
os.close(go_r)
data = b""
while chunk := os.read(r, 65536):
    data += chunk
os.close(r)
child = json.loads(data)
k1 = kmem()
assert child["ok"], "the fork child does not see its own write"
assert bytes(view[0:8]) == b"parent!!", "the child's write reached the parent"
# rx_fork_prepare took the parent's pages away (its mapping now reads through a hidden node):
# the parent faults them back in (reads, nothing copied) while the child is alive.
f0 = rx.rx_trap_counters()["faults"]
reread_ns = lib.rx_touch(addr, size, 0)
reread_faults = rx.rx_trap_counters()["faults"] - f0
k2 = kmem()
os.write(go_w, b"x")
os.close(go_w)
_, status = os.waitpid(pid, 0)
assert status == 0, status
print(json.dumps({"fork_ns": fork_ns, "child": child, "committed_delta": k1["committed_bytes"] - k0["committed_bytes"],
                  "cow_pages_copied": k1["cow_pages_copied"] - k0["cow_pages_copied"], "reread_ns": reread_ns,
                  "reread_faults": reread_faults, "reread_committed_delta": k2["committed_bytes"] - k1["committed_bytes"]}))
"""


def human_size(n: int) -> str:
    return f"{n >> 30} GiB" if n >= 1 << 30 and not n % (1 << 30) else f"{n >> 20} MiB"


def mem_available() -> int:
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable")


def cow_size(quick: bool) -> tuple[int, str]:
    """1 GiB if it fits twice over with room to spare, else 512 MiB. Benchmark 6 holds a VMO and
    its full copy in rxd (2×), and its Linux baseline a process and its child's full copy (2× more,
    though not at the same time); keep 1 GiB of headroom on top."""
    available = mem_available()
    if quick:
        return 256 << 20, f"quick run: 256 MiB ({available >> 20} MiB RAM available)"
    need = 4 * (1 << 30) + (1 << 30)
    if available >= need:
        return 1 << 30, f"1 GiB ({available >> 20} MiB RAM available, {need >> 20} MiB wanted)"
    return 512 << 20, f"scaled down to 512 MiB: only {available >> 20} MiB RAM available, 1 GiB wants {need >> 20} MiB"


def bench_snapshot(rxd: Any, size: int, rounds: int) -> dict[str, Any]:
    small = 1 << 20
    linux = client(rxd, LINUX_FORK, str(size), str(rounds), "fork")
    fork_ns = min(linux["fork_ns"])
    out: dict[str, Any] = {"size": size, "small_size": small, "linux_fork_ms": fork_ns / 1e6,
                           "linux_fork_ms_all": [t / 1e6 for t in linux["fork_ns"]]}
    for mode, mapped in (("unmapped", 0), ("mapped", 1)):
        rxd.wait_idle()
        r = client(rxd, SNAPSHOT, str(size), str(small), str(rounds), str(mapped))
        big_ns, small_ns = min(r["big_ns"]), min(r["small_ns"])
        out[mode] = {
            "big_ms": big_ns / 1e6, "small_ms": small_ns / 1e6, "ratio_vs_small": big_ns / small_ns,
            "ratio_vs_fork": big_ns / fork_ns, "big_ms_all": [t / 1e6 for t in r["big_ns"]],
            "small_ms_all": [t / 1e6 for t in r["small_ns"]], "eager_commit_ms": r["commit_ns"] / 1e6,
            "touch": r["touch"],
        }
    return out


def bench_cow_write(rxd: Any, size: int, rounds: int) -> dict[str, Any]:
    pages = size // 4096
    rxd.wait_idle()
    rx_rounds = client(rxd, COW_WRITE, str(size), str(rounds))
    linux = client(rxd, LINUX_FORK, str(size), str(rounds), "cow")
    rx_ns, linux_ns = min(r["ns"] for r in rx_rounds), min(linux["cow_ns"])
    return {
        "size": size, "rx_pages_per_s": pages / rx_ns * 1e9, "linux_pages_per_s": pages / linux_ns * 1e9,
        "ratio": linux_ns / rx_ns,  # rx's rate as a multiple of Linux's
        "rx_pages_per_s_all": [pages / r["ns"] * 1e9 for r in rx_rounds],
        "linux_pages_per_s_all": [pages / ns * 1e9 for ns in linux["cow_ns"]],
        "rx_rounds": rx_rounds,
    }


def bench_rx_fork(rxd: Any, size: int, rounds: int) -> dict[str, Any]:
    rxd.wait_idle()
    r = client(rxd, RX_FORK, str(size), str(rounds))
    linux = client(rxd, LINUX_FORK, str(size), str(rounds), "fork,rss")
    rx_ns, linux_ns = min(r["fork_ns"]), min(linux["fork_ns"])

    def growth(c: dict[str, Any]) -> dict[str, int]:
        return {k: c["after"][k] - c["before"][k] for k in c["before"]}

    return {
        "size": size, "rx_fork_ms": rx_ns / 1e6, "linux_fork_ms": linux_ns / 1e6, "ratio": rx_ns / linux_ns,
        "rx_fork_ms_all": [t / 1e6 for t in r["fork_ns"]], "linux_fork_ms_all": [t / 1e6 for t in linux["fork_ns"]],
        "rx_child_committed_delta": r["committed_delta"], "rx_child_cow_pages_copied": r["cow_pages_copied"],
        "rx_child_mem_growth": growth(r["child"]), "rx_child_mem_before": r["child"]["before"],
        "linux_child_mem_growth": growth(linux["rss"]), "linux_child_mem_before": linux["rss"]["before"],
        "rx_parent_reread_ms": r["reread_ns"] / 1e6, "rx_parent_reread_faults": r["reread_faults"],
        "rx_parent_reread_committed_delta": r["reread_committed_delta"],
    }


def bench_first_touch(rxd: Any, sizes: list[int], rounds: int) -> dict[str, Any]:
    """Sequential first touch at each size; the figures of the largest, and every size's for the plot."""
    by_size = []
    for size in sizes:
        r = client(rxd, FIRST_TOUCH, str(size), str(rounds))
        pages = size // 4096
        by_size.append({"bytes": size, "rx_us_per_page": r["rx_ns"] / pages / 1000, "linux_us_per_page": r["linux_ns"] / pages / 1000,
                        "ratio": r["rx_ns"] / r["linux_ns"], "faults": r["faults_last_round"]})
    return {**by_size[-1], "by_size": by_size}


def bench_fault_latency(rxd: Any, n: int) -> dict[str, Any]:
    r = client(rxd, FAULT_LATENCY, str(n))
    samples = {k: [v / 1000 for v in r.pop(k)] for k in ("rx_ns", "base_ns")}  # µs, for the CDF plot
    return {**{k: v / 1000 for k, v in r.items()}, "ratio_p50": r["rx_p50"] / r["base_p50"], "ratio_p99": r["rx_p99"] / r["base_p99"],
            "ratio_p999": r["rx_p999"] / r["base_p999"], "rx_us": samples["rx_ns"], "base_us": samples["base_ns"]}


def bench_syscalls(rxd: Any, clients: int, seconds: float) -> dict[str, Any]:
    procs = [rxd.spawn(SYSCALL_LOOP, str(seconds)) for _ in range(clients)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    cpu0, t0 = rxd_cpu_seconds(rxd.proc.pid), time.monotonic()
    for p in procs:
        p.stdin.write("\n")
        p.stdin.flush()
    calls = 0
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        calls += json.loads(out.strip().splitlines()[-1])["calls"]
    wall, cpu = time.monotonic() - t0, rxd_cpu_seconds(rxd.proc.pid) - cpu0
    ceiling = bench_c_echo(clients, seconds)
    c_clients = bench_rx_c_clients(rxd, clients, seconds)
    return {"clients": clients, "calls_per_s": calls / wall, "rxd_cpu_us_per_call": cpu / calls * 1e6, "c_echo": ceiling,
            "ratio": calls / wall / ceiling["calls_per_s"], "c_clients": c_clients,
            "c_clients_ratio": c_clients["calls_per_s"] / ceiling["calls_per_s"]}


def bench_rx_c_clients(rxd: Any, clients: int, seconds: float) -> dict[str, Any]:
    """rxd with the C echo's own kind of clients: C processes calling rx_vmo_get_size over the
    library's C round trip, so the ratio to the echo server compares servers, not clients."""
    native = _bench_native.load()
    hello = Connection(Role.CLIENT, kind=CHANNEL_MAIN).send(Hello(CHANNEL_MAIN, None))
    create = encode_request(1, SYSCALL_NUMBERS["rx_vmo_create"], (4096, 0))
    out = native.ffi.new("int64_t[2]")
    cpu0 = rxd_cpu_seconds(rxd.proc.pid)
    rc = native.lib.rx_bench_rx_call_rate(rxd.socket.encode(), hello, len(hello), create, len(create),
                                          SYSCALL_NUMBERS["rx_vmo_get_size"], rxkernel_lib.rx_vvar_size(), clients,
                                          int(seconds * 1e9), out)
    assert rc == 0, rc
    cpu = rxd_cpu_seconds(rxd.proc.pid) - cpu0
    return {"calls_per_s": out[0] / (out[1] / 1e9), "rxd_cpu_us_per_call": cpu / out[0] * 1e6}


def quantiles(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {name: xs[min(len(xs) - 1, int(len(xs) * f))] for name, f in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999))}


def bench_syscall_latency(rxd: Any, n: int) -> dict[str, Any]:
    """One client's rx_vmo_get_size round trips vs a bare Python Unix-socket echo's, in µs."""
    rx = [v / 1000 for v in client(rxd, SYSCALL_LATENCY, str(n))]
    out = subprocess.run([sys.executable, "-c", PY_ECHO, str(n)], capture_output=True, text=True, timeout=600, check=True)
    base = [v / 1000 for v in json.loads(out.stdout)]
    r, b = quantiles(rx), quantiles(base)
    return {"rx": r, "py_echo": b, "ratio_p50": r["p50"] / b["p50"], "ratio_p99": r["p99"] / b["p99"]}


def bench_c_echo(clients: int, seconds: float) -> dict[str, Any]:
    """The ceiling for syscalls/s: a bare C epoll echo server and as many C client processes."""
    native = _bench_native.load()
    out = native.ffi.new("int64_t[3]")
    rc = native.lib.rx_bench_echo_rate(clients, int(seconds * 1e9), out)
    assert rc == 0, rc
    return {"clients": clients, "calls_per_s": out[0] / (out[1] / 1e9), "server_cpu_us_per_call": out[2] / out[0] / 1000}


def bench_clock(rxd: Any, n: int, rounds: int) -> dict[str, Any]:
    r = client(rxd, CLOCK_CALLS, str(n), str(rounds))
    return {**r, "ratio_vs_host": r["rx_ns"] / r["host_ns"], "speedup_vs_syscall": r["syscall_ns"] / r["rx_ns"]}


def bench_memory(rxd: Any) -> dict[str, Any]:
    before = rxd_rss(rxd.proc.pid)
    p = rxd.spawn(COMMIT_1G)
    assert p.stdout.readline().strip() == "committed"
    after = rxd_rss(rxd.proc.pid)
    kmem = rxd.kmem()
    p.communicate("\n", timeout=60)
    pages = kmem["committed_bytes"] // 4096
    return {"committed_pages": pages, "rss_bytes_per_page": (after - before) / pages, "metadata_bytes_per_page": kmem["wired_bytes"] / pages}


TOUCH_IN_JOB = """
import json, sys
import rxkernel.client as rx
from rxkernel.native import lib
size, rounds = int(sys.argv[1]), int(sys.argv[2])
best = None
for _ in range(rounds):
    vmo = rx.rx_vmo_create(size)
    addr = rx.rx_vmar_map(vmo, 0, size, rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE)
    ns = lib.rx_touch(addr, size, 1)
    best = ns if best is None else min(best, ns)
    rx.rx_vmar_unmap(addr, size)
    rx.rx_handle_close(vmo)
print(json.dumps({"ns": best}))
"""

PRESSURE_WATCHER = """
import json, sys
import rxkernel.client as rx
level = rx.rx_system_get_pressure_level()
print("ready", flush=True)
level = rx.rx_system_wait_pressure(level)
print(json.dumps({"woke_ns": rx.rx_clock_get_monotonic(), "level": level}), flush=True)
sys.stdin.readline()  # exiting at once would load both CPUs while the other watchers wake
"""

WAKE_WATCHER = """
import socket, sys, time
s = socket.socket(fileno=int(sys.argv[1]))
print("ready", flush=True)
s.recv(64)
print(time.monotonic_ns(), flush=True)
sys.stdin.readline()
"""

PRESSURE_TRIGGER = """
import json, sys
import rxkernel.client as rx
pages = int(sys.argv[1])
vmo = rx.rx_vmo_create(pages * 4096)
rx.rx_vmo_write(vmo, 0, b"x" * ((pages - 1) * 4096))   # just short of the threshold
print("primed", flush=True)
sys.stdin.readline()
t0 = rx.rx_clock_get_monotonic()
rx.rx_vmo_write(vmo, (pages - 1) * 4096, b"x")          # the page that crosses it
print(json.dumps({"t0_ns": t0, "t1_ns": rx.rx_clock_get_monotonic()}), flush=True)
sys.stdin.readline()
"""

OOM_TOUCH = """
import json, sys
import rxkernel.client as rx
from rxkernel.native import lib
n = int(sys.argv[1])
vmo = rx.rx_vmo_create(n * 4096)
addr = rx.rx_vmar_map(vmo, 0, n * 4096, rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE, rx.RX_VM_MAP_RANDOM)
lat = [lib.rx_touch(addr + i * 4096, 4096, 1) for i in range(n)]
print("touched", json.dumps(lat), flush=True)
sys.stdin.readline()
"""


def _in_job(rxd: Any, job: int, code: str, *args: str) -> subprocess.Popen[str]:
    env = {**rxd.env, "RX_JOB": rxd.call("rx_handle_export", job, RX_RIGHT_SAME_RIGHTS)}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def bench_charge_touch(rxd: Any, size: int, rounds: int) -> dict[str, Any]:
    """First touch in the default job vs four jobs deep, each with a limit and a high mark that
    are never reached: what charging through the tree costs per page."""
    job = rxd.call("rx_job_default")
    for _ in range(4):
        job = rxd.call("rx_job_create", job, 0)
        rxd.call("rx_object_set_property", job, RX_PROP_JOB_COMMIT_MAX, 2 * size)
        rxd.call("rx_object_set_property", job, RX_PROP_JOB_COMMIT_HIGH, 2 * size)
    shallow = client(rxd, TOUCH_IN_JOB, str(size), str(rounds))["ns"]
    p = _in_job(rxd, job, TOUCH_IN_JOB, str(size), str(rounds))
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    deep = json.loads(out.strip().splitlines()[-1])["ns"]
    pages = size // 4096
    return {"default_us_per_page": shallow / pages / 1000, "deep_us_per_page": deep / pages / 1000, "ratio": deep / shallow}


def bench_pressure_latency(waiters: int) -> dict[str, Any]:
    """From the commit that crosses WARNING to each of `waiters` blocked clients waking with it."""
    with running_rxd(memory="64MiB", extra=["--pressure-hysteresis", "0.05"]) as rxd:
        procs = [rxd.spawn(PRESSURE_WATCHER) for _ in range(waiters)]
        for p in procs:
            read_line(p, "ready")
        k = rxd.kmem()  # WARNING begins when free pages fall to its threshold: the last page crosses it
        pages = (k["total_bytes"] - k["committed_bytes"] - k["pressure_warning_bytes"]) // 4096
        trigger = rxd.spawn(PRESSURE_TRIGGER, str(pages))
        read_line(trigger, "primed")
        time.sleep(0.2)  # every watcher is blocked in rxd by now
        assert trigger.stdin is not None
        trigger.stdin.write("\n")
        trigger.stdin.flush()
        t = json.loads(read_line(trigger))
        woke = [json.loads(read_line(p))["woke_ns"] for p in procs]
        for p in (*procs, trigger):
            p.communicate("\n", timeout=60)
    lat = sorted((w - t["t0_ns"]) / 1e6 for w in woke)  # from the call that crossed it
    base = bench_wake_baseline(waiters)
    return {"waiters": waiters, "p50_ms": lat[len(lat) // 2], "max_ms": lat[-1], "write_ms": (t["t1_ns"] - t["t0_ns"]) / 1e6,
            "base_p50_ms": base[len(base) // 2], "base_max_ms": base[-1]}


def bench_wake_baseline(waiters: int) -> list[float]:
    """The machine's figure: `waiters` Python processes blocked in recv() on a Unix socket each,
    woken by one process sending to each in turn (what rxd does for a level change, with no rx)."""
    pairs = [socket.socketpair() for _ in range(waiters)]
    procs = []
    for ours, theirs in pairs:
        procs.append(subprocess.Popen([sys.executable, "-c", WAKE_WATCHER, str(theirs.fileno())], pass_fds=[theirs.fileno()],
                                      text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        theirs.close()
    for p in procs:
        read_line(p, "ready")
    time.sleep(0.2)
    t0 = time.monotonic_ns()
    for ours, _ in pairs:
        ours.send(b"x" * 24)
    lat = sorted((int(read_line(p)) - t0) / 1e6 for p in procs)
    for p in procs:
        p.communicate("\n", timeout=60)
    for ours, _ in pairs:
        ours.close()
    return lat


def bench_oom_path(rxd: Any) -> dict[str, Any]:
    """A fault past a job's limit: from the fault to the retried commit, through the OOM killer."""
    job = rxd.call("rx_job_create", rxd.call("rx_job_default"), 0)
    rxd.call("rx_object_set_property", job, RX_PROP_JOB_COMMIT_MAX, 1024 * 4096)
    hog = _in_job(rxd, job, OOM_TOUCH, "600")
    assert read_line(hog).startswith("touched")
    faulter = _in_job(rxd, job, OOM_TOUCH, "600")
    lat = json.loads(read_line(faulter).split(" ", 1)[1])
    faulter.communicate("\n", timeout=60)
    hog.wait(60)
    normal = sorted(lat)[len(lat) // 2]
    worst = max(lat)
    return {"oom_fault_ms": worst / 1e6, "normal_fault_us": normal / 1000, "ratio": worst / normal,
            "hog_killed": hog.returncode == -9, "kills": rxd.kmem()["oom_kills"]}


def rows_jobs(results: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    if c := results.get("charge_touch"):
        rows.append(("first touch charged 4 jobs deep (limits, high) vs the default job", f"{c['deep_us_per_page']:.2f} µs/page",
                     f"default job {c['default_us_per_page']:.2f} µs/page", f"{c['ratio']:.2f}×", "≈ 1.0×"))
    for p in results.get("pressure_latency", []):
        # The wake begins inside the write that crossed the threshold, a cold syscall after a
        # quiet spell: the baseline is that write plus waking as many Python processes by socket.
        rows.append((f"pressure change to {p['waiters']} waiting clients, from the start of the write that crossed it",
                     f"p50 {p['p50_ms']:.2f} ms, max {p['max_ms']:.2f} ms",
                     f"that write {p['write_ms']:.2f} ms + {p['waiters']} Python processes woken by socket sends "
                     f"(p50 {p['base_p50_ms']:.2f} ms, max {p['base_max_ms']:.2f} ms)",
                     f"{p['max_ms'] / (p['write_ms'] + p['base_max_ms']):.1f}× (max)", "milliseconds"))
    if o := results.get("oom_path"):
        rows.append(("OOM path: fault past the limit → victim killed → commit retried", f"{o['oom_fault_ms']:.2f} ms",
                     f"an ordinary fault {o['normal_fault_us']:.0f} µs", f"{o['ratio']:.0f}×", "—"))
    return rows


CORE = ["first-touch", "fault-latency", "syscall-latency", "syscalls", "memory"]
COW = ["snapshot", "cow-write", "rx-fork"]
CLOCK = ["clock"]
SYNC = ["mutex", "ring"]
JOBS = ["charge-touch", "pressure-latency", "oom-path"]
GROUPS = {"core": CORE, "cow": COW, "clock": CLOCK, "sync": SYNC, "jobs": JOBS, "all": CORE + COW + CLOCK + SYNC + JOBS}


def selected(names: list[str]) -> list[str]:
    """Benchmark names from command-line words: groups (core, cow, all) or single benchmarks."""
    chosen: set[str] = set()
    for name in names or ["all"]:
        if name in GROUPS:
            chosen.update(GROUPS[name])
        elif name in GROUPS["all"]:
            chosen.add(name)
        else:
            raise SystemExit(f"unknown benchmark {name!r}: choose from {', '.join([*GROUPS, *GROUPS['all']])}")
    return [b for b in GROUPS["all"] if b in chosen]


def rows_core(results: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    if ft := results.get("first_touch"):
        rows.append((f"1. first touch, {ft['bytes'] >> 20} MiB sequential", f"{ft['rx_us_per_page']:.2f} µs/page ({ft['faults']} faults)",
                     f"Linux anon {ft['linux_us_per_page']:.2f} µs/page", f"{ft['ratio']:.2f}×", "≤ 1.0×"))
    if fl := results.get("fault_latency"):
        rows.append(("2. fault latency p50 (1 page, random)", f"{fl['rx_p50']:.0f} µs", f"C process pair: round trip + mmap {fl['base_p50']:.0f} µs",
                     f"{fl['ratio_p50']:.2f}×", "≤ 1.5×"))
        rows.append(("2. fault latency p99", f"{fl['rx_p99']:.0f} µs", f"{fl['base_p99']:.0f} µs", f"{fl['ratio_p99']:.2f}×", "≤ 3×"))
        rows.append(("2. fault latency p99.9", f"{fl['rx_p999']:.0f} µs", f"{fl['base_p999']:.0f} µs", f"{fl['ratio_p999']:.2f}×", ""))
    if sl := results.get("syscall_latency"):
        r, b = sl["rx"], sl["py_echo"]
        rows.append(("3. syscall round trip (rx_vmo_get_size, 1 client) p50 / p99 / p99.9",
                     f"{r['p50']:.0f} / {r['p99']:.0f} / {r['p999']:.0f} µs",
                     f"bare Python Unix-socket echo {b['p50']:.0f} / {b['p99']:.0f} / {b['p999']:.0f} µs",
                     f"{sl['ratio_p50']:.2f}× (p50)", "≤ 1.5×"))
    for s in results.get("syscalls", []):
        c = s["c_echo"]
        rows.append((f"3. rx_vmo_get_size, {s['clients']} clients", f"{s['calls_per_s']:.0f} calls/s",
                     f"bare C epoll echo, {s['clients']} C clients: {c['calls_per_s']:.0f} calls/s", f"{s['ratio']:.2f}×", "≥ 0.5×"))
        if cc := s.get("c_clients"):
            rows.append((f"3. rx_vmo_get_size, {s['clients']} C clients", f"{cc['calls_per_s']:.0f} calls/s",
                         f"bare C epoll echo, {s['clients']} C clients: {c['calls_per_s']:.0f} calls/s", f"{s['c_clients_ratio']:.2f}×", "≥ 0.5×"))
        rows.append((f"3. rxd CPU per syscall, {s['clients']} clients", f"{s['rxd_cpu_us_per_call']:.1f} µs"
                     + (f" (C clients: {cc['rxd_cpu_us_per_call']:.1f} µs)" if cc else ""),
                     f"the C echo server's {c['server_cpu_us_per_call']:.1f} µs", "", "≤ 10 µs"))
    if mem := results.get("memory"):
        rows.append(("4. rxd memory per committed page (1 GiB)", f"{mem['rss_bytes_per_page']:.2f} B RSS",
                     f"metadata {mem['metadata_bytes_per_page']:.2f} B", "", "< 16 B"))
    return rows


def times(x: float) -> str:
    return f"{x:.2f}×" if x >= 0.1 else f"{x:.2g}×"


def kib(n: int) -> str:
    return f"{n / 1024:+.0f} KiB"


def rows_clock(results: dict[str, Any]) -> list[tuple[str, ...]]:
    if not (c := results.get("clock")):
        return []
    return [
        ("8. rx_clock_get_monotonic() from Python (vDSO)", f"{c['rx_ns']:.0f} ns", f"time.monotonic_ns() {c['host_ns']:.0f} ns",
         times(c["ratio_vs_host"]), "≤ 3×"),
        ("8. same vs an rx syscall round trip", f"{c['rx_ns']:.0f} ns", f"rx_vmo_get_size {c['syscall_ns'] / 1000:.1f} µs",
         f"{c['speedup_vs_syscall']:.0f}× faster", "> 100×"),
        ("8. the vDSO read itself, from C", f"{c['c_ns']:.1f} ns", "", "", ""),
    ]


def rows_cow(results: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    if sn := results.get("snapshot"):
        size, small = human_size(sn["size"]), human_size(sn["small_size"])
        for mode, what in (("unmapped", "unmapped"), ("mapped", "mapped + touched")):
            m = sn[mode]
            target = "≈ 1× (O(1))" if mode == "unmapped" else ""
            rows.append((f"5. snapshot, {size} committed, {what}", f"{m['big_ms']:.2f} ms",
                         f"same, {small}: {m['small_ms']:.2f} ms", times(m["ratio_vs_small"]), target))
            rows.append((f"5. snapshot, {size} {what} vs fork", f"{m['big_ms']:.2f} ms",
                         f"os.fork, {size} anon touched: {sn['linux_fork_ms']:.2f} ms", times(m["ratio_vs_fork"]), ""))
    if cw := results.get("cow_write"):
        faults = cw["rx_rounds"][0]["faults"]
        rows.append((f"6. COW write faults, {human_size(cw['size'])} sequential", f"{cw['rx_pages_per_s'] / 1000:.0f} k pages/s ({faults} faults)",
                     f"Linux fork child {cw['linux_pages_per_s'] / 1000:.0f} k pages/s", f"{times(cw['ratio'])} Linux's rate", ""))
    if fk := results.get("rx_fork"):
        size = human_size(fk["size"])
        rows.append((f"7. rx.fork(), {size} mapped + touched", f"{fk['rx_fork_ms']:.1f} ms",
                     f"os.fork, {size} anon touched: {fk['linux_fork_ms']:.1f} ms", times(fk["ratio"]), ""))
        rg, lg = fk["rx_child_mem_growth"], fk["linux_child_mem_growth"]
        rows.append(("7. fork child writes 1 page", f"rxd committed {kib(fk['rx_child_committed_delta'])}; rx range RSS "
                     f"{kib(rg['range_Rss'])} (process RSS {kib(rg['VmRSS'])})",
                     f"Linux child: range Private_Dirty {kib(lg['range_Private_Dirty'])}, RSS {kib(lg['range_Rss'])} "
                     f"(process RSS {kib(lg['VmRSS'])})", "", "+1 page committed"))
        rows.append((f"7. parent rereads {size} after rx.fork", f"{fk['rx_parent_reread_ms']:.0f} ms ({fk['rx_parent_reread_faults']} faults)",
                     "Linux: none (page tables copied)", "", ""))
    return rows


# -- sync objects (9-10) ----------------------------------------------------------------------------

MUTEX_UNCONTENDED = BENCH_NATIVE + """
import json, multiprocessing, sys, time
import rxkernel.client as rx
n, rounds = int(sys.argv[1]), int(sys.argv[2])
vmo = rx.Vmo(4096)
m = vmo.map()
mutex = rx.Mutex.create(m, 0)
mlock = multiprocessing.get_context("spawn").Lock()
def loop(acquire, release):
    t0 = time.perf_counter_ns()
    for _ in range(n):
        acquire()
        release()
    return (time.perf_counter_ns() - t0) / n
me = rx.rx_process_self()
before = rx.rx_object_get_info(me, rx.RX_INFO_TASK_STATS)["syscalls"]
rx_ns = min(loop(mutex.acquire, mutex.release) for _ in range(rounds))
syscalls = rx.rx_object_get_info(me, rx.RX_INFO_TASK_STATS)["syscalls"] - before - 1
mp_ns = min(loop(mlock.acquire, mlock.release) for _ in range(rounds))
c_ns = min(bench.rx_mutex_bench_c(mutex.addr, 1, n) / n for _ in range(rounds))
print(json.dumps({"rx_ns": rx_ns, "mp_ns": mp_ns, "c_ns": c_ns, "syscalls": syscalls, "pairs": n * rounds}))
"""


def bench_mutex(rxd: Any, n: int, rounds: int) -> dict[str, Any]:
    r: dict[str, Any] = client(rxd, MUTEX_UNCONTENDED, str(n), str(rounds))
    return {**r, "ratio": r["rx_ns"] / r["mp_ns"]}


def bench_ring(rxd: Any, producers: int, consumers: int, messages: int, rounds: int) -> dict[str, Any]:
    demo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ring_buffer_demo.py")
    best: dict[str, float] = {}
    for _ in range(rounds):
        for impl in ("rx", "mp", "pipe"):
            out = subprocess.run([sys.executable, demo, "--impl", impl, "--json", "--producers", str(producers),
                                  "--consumers", str(consumers), "--messages", str(messages)],
                                 env=rxd.env, capture_output=True, text=True, timeout=600)
            if out.returncode != 0:
                raise RuntimeError(f"ring buffer ({impl}) failed:\n{out.stderr}")
            rate = json.loads(out.stdout.strip().splitlines()[-1])["msgs_per_s"]
            best[impl] = max(best.get(impl, 0.0), rate)
    return {"producers": producers, "consumers": consumers, "messages": producers * messages, "rounds": rounds,
            **{f"{k}_msgs_per_s": v for k, v in best.items()},
            "ratio_vs_mp": best["rx"] / best["mp"], "ratio_vs_pipe": best["rx"] / best["pipe"]}


def rows_sync(results: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    if mu := results.get("mutex"):
        rows.append(("9. uncontended Mutex acquire+release (Python)", f"{mu['rx_ns']:.0f} ns ({mu['syscalls']} syscalls)",
                     f"multiprocessing.Lock {mu['mp_ns']:.0f} ns", times(mu["ratio"]), "0 syscalls"))
        rows.append(("9. the same pair in C (rxsync.c)", f"{mu['c_ns']:.1f} ns", "", "", ""))
    if rg := results.get("ring"):
        what = f"{rg['producers']} producers, {rg['consumers']} consumers, {rg['messages']} msgs"
        rows.append((f"10. ring buffer, {what}", f"{rg['rx_msgs_per_s'] / 1000:.1f} k msgs/s",
                     f"shared_memory + mp.Condition {rg['mp_msgs_per_s'] / 1000:.1f} k msgs/s", times(rg["ratio_vs_mp"]), "≥ 1×"))
        rows.append((f"10. ring buffer vs a pipe", f"{rg['rx_msgs_per_s'] / 1000:.1f} k msgs/s",
                     f"os.pipe {rg['pipe_msgs_per_s'] / 1000:.1f} k msgs/s", times(rg["ratio_vs_pipe"]), ""))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description="rxkernel benchmarks (a Markdown table on stdout, JSON in bench-results/)")
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    ap.add_argument("--plot", action="store_true", help="also write PNGs into docs/ (needs the bench extra: pip install -e '.[bench]')")
    ap.add_argument("benchmarks", nargs="*", metavar="NAME",
                    help=f"groups ({', '.join(GROUPS)}) or benchmarks ({', '.join(GROUPS['all'])}); default all")
    args = ap.parse_args()
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            sys.exit("scripts/bench --plot needs matplotlib: .venv/bin/pip install -e '.[bench]'")
    quick = args.quick
    run = selected(args.benchmarks)
    _bench_native.build()  # once here, not in each client that loads it
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "kernel": os.uname().release}}
    if any(b in CORE for b in run):
        with running_rxd(memory="4GiB") as rxd:
            if "first-touch" in run:
                sizes = [m << 20 for m in ((8, 32) if quick else (4, 16, 64, 256))]
                results["first_touch"] = bench_first_touch(rxd, sizes, 1 if quick else 3)
            if "fault-latency" in run:
                results["fault_latency"] = bench_fault_latency(rxd, 500 if quick else 3000)
            if "syscall-latency" in run:
                results["syscall_latency"] = bench_syscall_latency(rxd, 2000 if quick else 20000)
            if "syscalls" in run:
                results["syscalls"] = [bench_syscalls(rxd, n, 1.0 if quick else 3.0) for n in ((1, 4) if quick else (1, 16, 64))]
            if "memory" in run:
                results["memory"] = bench_memory(rxd)
    if "clock" in run:
        with running_rxd(memory="256MiB") as rxd:
            results["clock"] = bench_clock(rxd, 200_000 if quick else 1_000_000, 3 if quick else 7)
    size_note = ""
    if any(b in COW for b in run):
        size, size_note = cow_size(quick)
        thp = open("/sys/kernel/mm/transparent_hugepage/enabled").read().strip()
        results["machine"].update({"mem_available_bytes": mem_available(), "transparent_hugepage": thp})
        results["cow_size"] = {"bytes": size, "note": size_note}
        rounds = 2 if quick else 3
        # rxd holds at most a VMO and its full copy (benchmark 6) at once.
        with running_rxd(memory=f"{(2 * size + (256 << 20)) >> 20}MiB") as rxd:
            for name, key, bench, n in (("snapshot", "snapshot", bench_snapshot, rounds + 2),
                                        ("cow-write", "cow_write", bench_cow_write, rounds),
                                        ("rx-fork", "rx_fork", bench_rx_fork, rounds)):
                if name in run:
                    t0 = time.monotonic()
                    results[key] = {**bench(rxd, size, n), "wall_s": time.monotonic() - t0}
            rxd.wait_idle()
    if any(b in SYNC for b in run):
        with running_rxd(memory="1GiB") as rxd:
            if "mutex" in run:
                results["mutex"] = bench_mutex(rxd, 20_000 if quick else 200_000, 3 if quick else 5)
            if "ring" in run:
                results["ring"] = bench_ring(rxd, 4, 4, 2000 if quick else 20_000, 1 if quick else 3)
    if any(b in JOBS for b in run):
        with running_rxd(memory="1GiB") as rxd:
            if "charge-touch" in run:
                results["charge_touch"] = bench_charge_touch(rxd, (32 if quick else 128) << 20, 1 if quick else 3)
            if "oom-path" in run:
                results["oom_path"] = bench_oom_path(rxd)
        if "pressure-latency" in run:
            results["pressure_latency"] = [bench_pressure_latency(n) for n in (1, 16)]
    os.makedirs("bench-results", exist_ok=True)
    path = os.path.join("bench-results", time.strftime("bench-%Y%m%d-%H%M%S.json"))
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print("| benchmark | rx | baseline (same run) | ratio | target |")
    print("|---|---|---|---|---|")
    for r in rows_core(results) + rows_cow(results) + rows_clock(results) + rows_sync(results) + rows_jobs(results):
        print("| " + " | ".join(r) + " |")
    if size_note:
        print(f"\nBenchmarks 5-7 at {size_note}; transparent hugepages: {results['machine']['transparent_hugepage']}.")
    print(f"\nJSON: {path}")
    if args.plot:
        for png in plot(results, "docs"):
            print(f"plot: {png}")


def plot(results: dict[str, Any], directory: str) -> list[str]:
    """The figures the README shows beside the table, as PNGs in `directory`."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    written = []

    def save(fig: Any, name: str) -> None:
        path = os.path.join(directory, name)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    if fl := results.get("fault_latency"):
        fig, ax = plt.subplots(figsize=(6.4, 4))
        for key, label in (("rx_us", "rx fault (1 page, random)"), ("base_us", "C process pair: round trip + mmap")):
            xs = sorted(fl[key])
            ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=label)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("latency (µs, log scale)")
        ax.set_ylabel("fraction of faults at or below")
        ax.set_title("Fault latency CDF")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right")
        save(fig, "fault-latency-cdf.png")
    if sc := results.get("syscalls"):
        fig, ax = plt.subplots(figsize=(6.4, 4))
        clients = [s["clients"] for s in sc]
        ax.plot(clients, [s["calls_per_s"] for s in sc], "o-", label="rx_vmo_get_size (Python clients)")
        if all("c_clients" in s for s in sc):
            ax.plot(clients, [s["c_clients"]["calls_per_s"] for s in sc], "^-", label="rx_vmo_get_size (C clients)")
        ax.plot(clients, [s["c_echo"]["calls_per_s"] for s in sc], "s--", label="bare C epoll echo (C clients)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("client processes")
        ax.set_ylabel("calls per second (log scale)")
        ax.set_title("Syscalls per second against client count")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        save(fig, "syscalls-vs-clients.png")
    if (ft := results.get("first_touch")) and len(ft.get("by_size", [])) > 1:
        fig, ax = plt.subplots(figsize=(6.4, 4))
        mib = [b["bytes"] >> 20 for b in ft["by_size"]]
        ax.plot(mib, [b["rx_us_per_page"] for b in ft["by_size"]], "o-", label="rx")
        ax.plot(mib, [b["linux_us_per_page"] for b in ft["by_size"]], "s--", label="Linux anonymous memory")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("mapping size (MiB)")
        ax.set_ylabel("µs per page")
        ax.set_ylim(bottom=0)
        ax.set_title("Sequential first touch")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        save(fig, "first-touch-vs-size.png")
    return written


if __name__ == "__main__":
    main()
