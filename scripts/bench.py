"""rxkernel benchmarks. Each figure is a ratio against a baseline measured in the same run, because
this is a noisy 2-vCPU VM and absolute numbers drift (DESIGN.md §4).

1. first touch: sequential first touch of a 256 MiB mapping vs the same on Linux anonymous memory
2. fault latency: single-page faults (random pages, fault-around off) p50/p99 vs a bare C Unix-socket
   round trip plus one mmap
3. syscall throughput: rx_vmo_get_size with 1, 16 and 64 client processes, and rxd's CPU per syscall
4. rxd memory per committed page with 1 GiB committed
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from rxtest import running_rxd  # noqa: E402

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


FIRST_TOUCH = """
import json, sys
import rxkernel.client as rx
from rxkernel.native import lib
size, rounds = int(sys.argv[1]), int(sys.argv[2])
rxs, linux = [], []
for _ in range(rounds):
    linux.append(lib.rx_bench_anon_first_touch(size))
    vmo = rx.rx_vmo_create(size)
    addr = rx.rx_vmar_map(vmo, 0, size, rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE)
    before = rx.rx_trap_counters()["faults"]
    rxs.append(lib.rx_touch(addr, size, 1))
    faults = rx.rx_trap_counters()["faults"] - before
    rx.rx_vmar_unmap(addr, size)
    rx.rx_handle_close(vmo)
print(json.dumps({"rx_ns": min(rxs), "linux_ns": min(linux), "faults_last_round": faults}))
"""

FAULT_LATENCY = """
import json, random, sys
import rxkernel.client as rx
from rxkernel.native import ffi, lib
n = int(sys.argv[1])
size = 1 << 30
vmo = rx.rx_vmo_create(size)
addr = rx.rx_vmar_map(vmo, 0, size, rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE, rx.RX_VM_MAP_RANDOM)
pages = random.sample(range(size // 4096), n)
for p in pages[:50]:
    lib.rx_touch(addr + p * 4096, 4096, 1)   # warm up channels
lat = sorted(lib.rx_touch(addr + p * 4096, 4096, 1) for p in pages[50:])
base = ffi.new("int64_t[]", n)
lib.rx_bench_socket_roundtrip(n, 1, base)
b = sorted(base[i] for i in range(n))
q = lambda xs, f: xs[min(len(xs) - 1, int(len(xs) * f))]
print(json.dumps({"rx_p50": q(lat, .5), "rx_p99": q(lat, .99), "base_p50": q(b, .5), "base_p99": q(b, .99)}))
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


def bench_first_touch(rxd: Any, size: int, rounds: int) -> dict[str, Any]:
    r = client(rxd, FIRST_TOUCH, str(size), str(rounds))
    pages = size // 4096
    return {
        "rx_us_per_page": r["rx_ns"] / pages / 1000,
        "linux_us_per_page": r["linux_ns"] / pages / 1000,
        "ratio": r["rx_ns"] / r["linux_ns"],
        "faults": r["faults_last_round"],
    }


def bench_fault_latency(rxd: Any, n: int) -> dict[str, Any]:
    r = client(rxd, FAULT_LATENCY, str(n))
    return {**{k: v / 1000 for k, v in r.items()}, "ratio_p50": r["rx_p50"] / r["base_p50"], "ratio_p99": r["rx_p99"] / r["base_p99"]}


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
    return {"clients": clients, "calls_per_s": calls / wall, "rxd_cpu_us_per_call": cpu / calls * 1e6}


def bench_memory(rxd: Any) -> dict[str, Any]:
    before = rxd_rss(rxd.proc.pid)
    p = rxd.spawn(COMMIT_1G)
    assert p.stdout.readline().strip() == "committed"
    after = rxd_rss(rxd.proc.pid)
    kmem = rxd.kmem()
    p.communicate("\n", timeout=60)
    pages = kmem["committed_bytes"] // 4096
    return {"committed_pages": pages, "rss_bytes_per_page": (after - before) / pages, "metadata_bytes_per_page": kmem["wired_bytes"] / pages}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = ap.parse_args()
    quick = args.quick
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "kernel": os.uname().release}}
    with running_rxd(memory="4GiB") as rxd:
        results["first_touch"] = bench_first_touch(rxd, (32 if quick else 256) << 20, 1 if quick else 3)
        results["fault_latency"] = bench_fault_latency(rxd, 500 if quick else 3000)
        results["syscalls"] = [bench_syscalls(rxd, n, 1.0 if quick else 3.0) for n in ((1, 4) if quick else (1, 16, 64))]
        results["memory"] = bench_memory(rxd)
    os.makedirs("bench-results", exist_ok=True)
    path = os.path.join("bench-results", time.strftime("bench-%Y%m%d-%H%M%S.json"))
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    ft, fl, mem = results["first_touch"], results["fault_latency"], results["memory"]
    rows = [
        ("1. first touch, 256 MiB sequential", f"{ft['rx_us_per_page']:.2f} µs/page ({ft['faults']} faults)",
         f"Linux anon {ft['linux_us_per_page']:.2f} µs/page", f"{ft['ratio']:.2f}×", "≤ 1.5×"),
        ("2. fault latency p50 (1 page, random)", f"{fl['rx_p50']:.0f} µs", f"C round trip + mmap {fl['base_p50']:.0f} µs",
         f"{fl['ratio_p50']:.2f}×", "≤ 2×"),
        ("2. fault latency p99", f"{fl['rx_p99']:.0f} µs", f"{fl['base_p99']:.0f} µs", f"{fl['ratio_p99']:.2f}×", ""),
    ]
    for s in results["syscalls"]:
        rows.append((f"3. rx_vmo_get_size, {s['clients']} clients", f"{s['calls_per_s']:.0f} calls/s",
                     "rxd CPU per call", f"{s['rxd_cpu_us_per_call']:.1f} µs", "< 20 µs"))
    rows.append(("4. rxd memory per committed page (1 GiB)", f"{mem['rss_bytes_per_page']:.2f} B RSS",
                 f"metadata {mem['metadata_bytes_per_page']:.2f} B", "", "< 16 B"))
    print("| benchmark | rx | baseline (same run) | ratio | target |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
