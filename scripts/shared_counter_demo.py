"""Cross-process demo: real processes map one VMO through rxd and share it with plain loads and stores.

1. The parent creates a 64 MiB VMO and maps it: nothing is committed until pages are touched.
2. It writes a greeting; the first touch traps and rxd commits exactly one page.
3. It hands four children an export token each (argv). Each child imports the VMO, maps it, writes a
   line into its own page, waits until it can see every sibling's line, and sums a NumPy array the
   parent filled.
4. One more child gets a read-only token: its mapping can read, and a writable map is refused.
5. The parent prints what rxd counted: committed bytes, faults, shared/private bytes per process.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np

import rxkernel.client as rx

SIZE = 64 << 20
CHILDREN = 4
RW = rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE
SLOT = 1 << 20  # each child writes at slot × 1 MiB

CHILD = r"""
import sys, time
import numpy as np
import rxkernel.client as rx
token, me, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
vmo = rx.rx_handle_import(token)
size = rx.rx_vmo_get_size(vmo)
view = rx.rx_view(rx.rx_vmar_map(vmo, 0, size, rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE), size)
line = f"child {me} (pid {__import__('os').getpid()}) was here".encode()
view[(me + 1) << 20:((me + 1) << 20) + len(line)] = line
deadline = time.monotonic() + 30
while not all(view[(i + 1) << 20] for i in range(n)):
    assert time.monotonic() < deadline
    time.sleep(0.001)
seen = [bytes(view[(i + 1) << 20:((i + 1) << 20) + 40]).rstrip(b"\0").decode() for i in range(n)]
total = int(np.frombuffer(view, dtype=np.int64, count=1000, offset=32 << 20).sum())
print(f"  child {me}: sees {len(seen)} sibling lines, numpy sum of parent's array = {total}")
"""

READER = r"""
import sys
import rxkernel.client as rx
vmo = rx.rx_handle_import(sys.argv[1])
try:
    rx.rx_vmar_map(vmo, 0, 4096, rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE)
except rx.RxError as e:
    print(f"  read-only child: writable map refused with {e.name}")
view = rx.rx_view(rx.rx_vmar_map(vmo, 0, 4096, rx.RX_VM_PERM_READ), 4096)
print(f"  read-only child: reads {bytes(view[:22]).decode()!r}")
"""


def committed(vmo: int) -> int:
    return int(rx.rx_object_get_info(vmo, rx.RX_INFO_VMO)["committed_bytes"])


def main() -> None:
    vmo = rx.rx_vmo_create(SIZE)
    addr = rx.rx_vmar_map(vmo, 0, SIZE, RW)
    view = rx.rx_view(addr, SIZE)
    print(f"mapped a {SIZE >> 20} MiB VMO at {addr:#x}; committed: {committed(vmo)} bytes")
    view[0:22] = b"hello from the parent!"
    print(f"wrote 22 bytes (first touch trapped to rxd); committed: {committed(vmo)} bytes")
    assert bytes(view[16 << 20:(16 << 20) + 4096]) == bytes(4096)
    print(f"read an untouched page (the host zero page); committed: {committed(vmo)} bytes")
    np.frombuffer(view, dtype=np.int64, count=1000, offset=32 << 20)[:] = np.arange(1000)

    t0 = time.monotonic()
    tokens = [rx.rx_handle_export(vmo) for _ in range(CHILDREN)]
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, tokens[i], str(i), str(CHILDREN)]) for i in range(CHILDREN)]
    reader = subprocess.Popen([sys.executable, "-c", READER, rx.rx_handle_export(vmo, rx.RX_RIGHT_READ | rx.RX_RIGHT_MAP)])
    for p in [*procs, reader]:
        if p.wait() != 0:
            raise SystemExit(f"a child failed with {p.returncode}")
    print(f"{CHILDREN + 1} child processes shared the VMO in {time.monotonic() - t0:.2f} s; lines they wrote:")
    for i in range(CHILDREN):
        print("   ", bytes(view[(i + 1) * SLOT:(i + 1) * SLOT + 40]).rstrip(b"\0").decode())

    task = rx.rx_object_get_info(rx.rx_process_self(), rx.RX_INFO_TASK_STATS)
    kmem = rx.rx_object_get_info(rx.rx_system_handle(), rx.RX_INFO_KMEM_STATS)
    print(f"VMO committed: {committed(vmo)} bytes of {SIZE} ({committed(vmo) // 4096} pages)")
    print(f"this process: mapped {task['mem_mapped_bytes'] >> 20} MiB, private {task['mem_private_bytes']} B, "
          f"{task['page_faults']} faults served; trap counters {rx.rx_trap_counters()}")
    print(f"rxd: {kmem['page_faults']} faults ({kmem['zero_page_faults']} zero-page), {kmem['shootdowns']} shootdowns, "
          f"committed {kmem['committed_bytes']} of {kmem['total_bytes']} bytes")


if __name__ == "__main__":
    main()
