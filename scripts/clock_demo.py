"""Clock demo: the vDSO in every process, and a realtime adjustment reaching them without a request.

1. Three child processes connect; each prints where rxd's vDSO image and vvar page are mapped in it
   (from /proc/self/maps: an r-x mapping of the sealed memfd "rx-vdso", a read-only "rx-vvar") and
   its clock readings.
2. The parent, holding the system handle, moves realtime one hour ahead (rx_clock_adjust_realtime).
3. Each child reads realtime again: the hour is there, and rxd counted no syscall from any child
   between the two readings (its vDSO read the vvar page rxd rewrote).
4. The parent puts realtime back.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time

import rxkernel.client as rx

CHILDREN = 3
HOUR = 3600 * 10**9

CHILD = r"""
import datetime, os, sys, time
import rxkernel.client as rx

def stamp(ns):
    return datetime.datetime.fromtimestamp(ns / 1e9, datetime.timezone.utc).strftime("%H:%M:%S.%f UTC")

rx.rx_clock_get_monotonic()   # the first call connects and loads rxd's vDSO
mono, host = rx.rx_clock_get_monotonic(), time.monotonic_ns()
image, vvar = rx.rx_vdso_addresses()
text = next(l.split()[0] for l in open("/proc/self/maps") if "rx-vdso" in l and " r-xp " in l)
print(f"pid {os.getpid()}: vDSO image at {image:#x} (code {text} r-x), vvar at {vvar:#x} r--; "
      f"monotonic {mono / 1e9:.6f} s (host {host / 1e9:.6f} s), "
      f"realtime {stamp(rx.rx_clock_get_realtime())}", flush=True)
for line in sys.stdin:
    print(f"pid {os.getpid()}: realtime now {stamp(rx.rx_clock_get_realtime())} "
          f"(host says {stamp(time.time_ns())})", flush=True)
"""


def syscall_counts(system: int, pids: set[int]) -> dict[int, int]:
    procs = rx.rx_object_get_info(system, rx.RX_INFO_SYSTEM_PROCESSES)
    return {p["pid"]: p["syscalls"] for p in procs if p["pid"] in pids}


def main() -> None:
    system = rx.rx_system_handle()
    children = [subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                for _ in range(CHILDREN)]
    try:
        for child in children:
            assert child.stdout is not None
            print(child.stdout.readline().rstrip())
        pids = {c.pid for c in children}
        before = syscall_counts(system, pids)
        offset = time.time_ns() - rx.rx_clock_get_monotonic()
        print(f"\nparent (pid {os.getpid()}): rx_clock_adjust_realtime(system, host offset + 1 hour)\n")
        rx.rx_clock_adjust_realtime(system, offset + HOUR)
        for child in children:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write("\n")
            child.stdin.flush()
            print(child.stdout.readline().rstrip())
        after = syscall_counts(system, pids)
        print(f"\nsyscalls rxd counted from each child: before {sorted(before.values())}, "
              f"after {sorted(after.values())} (vDSO reads send no request)")
    finally:
        rx.rx_clock_adjust_realtime(system, time.time_ns() - rx.rx_clock_get_monotonic())
        for child in children:
            if child.stdin is not None:
                child.stdin.close()
            child.wait(timeout=30)
    now = datetime.datetime.fromtimestamp(rx.rx_clock_get_realtime() / 1e9, datetime.timezone.utc)
    print(f"realtime put back: {now.strftime('%H:%M:%S.%f UTC')}")


if __name__ == "__main__":
    main()
