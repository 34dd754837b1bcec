"""Copy-on-write demo: a snapshot that copies nothing, and rx.fork() children that share every page.

1. The parent fills 256 MiB of a VMO it maps, then takes a snapshot: O(1), nothing is copied.
2. It writes into its own mapping: only the pages written are copied (the snapshot keeps the old).
3. It rx.fork()s four children. Each sees the parent's data at the same addresses and overwrites one
   MiB of its own; rxd commits exactly what they wrote.
4. The parent prints what rxd counted at each step.
"""

from __future__ import annotations

import os
import time

import rxkernel.client as rx
from rxkernel.native import lib

SIZE = 256 << 20
MIB = 1 << 20
CHILDREN = 4
RW = rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE


def main() -> None:
    system = rx.rx_system_handle()

    def committed_mib() -> float:
        return int(rx.rx_object_get_info(system, rx.RX_INFO_KMEM_STATS)["committed_bytes"]) / MIB

    start = committed_mib()
    vmo = rx.rx_vmo_create(SIZE)
    addr = rx.rx_vmar_map(vmo, 0, SIZE, RW)
    view = rx.rx_view(addr, SIZE)
    lib.rx_touch(addr, SIZE, 1)
    view[0:6] = b"parent"
    print(f"filled {SIZE // MIB} MiB: rxd holds {committed_mib() - start:.0f} MiB")

    t = time.perf_counter()
    snap = rx.rx_vmo_create_child(vmo, rx.RX_VMO_CHILD_SNAPSHOT, 0, SIZE)
    took = (time.perf_counter() - t) * 1e3
    print(f"snapshot of {SIZE // MIB} MiB in {took:.1f} ms: rxd holds {committed_mib() - start:.0f} MiB (nothing copied)")
    view[0:6] = b"PARENT"
    print(f"after writing 1 page of the original: {committed_mib() - start:.3f} MiB; "
          f"the snapshot still reads {rx.rx_vmo_read(snap, 0, 6)!r}")
    rx.rx_handle_close(snap)

    before = committed_mib()
    done_r, done_w = os.pipe()
    go_r, go_w = os.pipe()
    t = time.perf_counter()
    pids = []
    for i in range(CHILDREN):
        pid = rx.fork()
        if pid == 0:
            os.close(go_w)  # (so the parent's close is the last one)
            os.close(done_r)
            assert bytes(view[0:6]) == b"PARENT", "the child sees the parent's data at the same address"
            lo = (i + 1) * MIB
            lib.rx_touch(addr + lo, MIB, 1)  # one MiB of its own
            view[lo : lo + 5] = b"child"
            os.write(done_w, b"x")
            os.read(go_r, 1)  # stay alive until the parent has counted
            os._exit(0)
        pids.append(pid)
    forked = (time.perf_counter() - t) * 1e3
    for _ in range(CHILDREN):
        os.read(done_r, 1)
    grown = committed_mib() - before
    os.close(go_w)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert status == 0
    print(f"{CHILDREN} rx.fork() children in {forked:.0f} ms; each wrote 1 MiB of the 256 MiB it sees: "
          f"rxd grew by {grown:.0f} MiB (copying the mapping would take {CHILDREN * SIZE // MIB} MiB)")
    print(f"their writes stay theirs: the parent reads {bytes(view[MIB:MIB + 5])!r} where child 0 wrote b'child'; "
          f"after they exit rxd holds {committed_mib() - start:.0f} MiB")
    rx.rx_vmar_unmap(addr, SIZE)
    rx.rx_handle_close(vmo)


if __name__ == "__main__":
    main()
