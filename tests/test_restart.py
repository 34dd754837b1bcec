"""What a client keeps and loses when rxd goes away and comes back (README "When rxd restarts").

Its mappings' pages are gone for good, but their addresses stay reserved until the process
unmaps them: a view made before the restart never silently reads whatever lands at its address
next (the new vvar page, another mapping); touching it dies with the one-line diagnostic.
"""

from __future__ import annotations

import shutil
import signal
import tempfile

import pytest

from rxtest import Rxd, read_line

CLIENT = """
import sys
import rxkernel.client as rx
from rxkernel.native import lib
RW = rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE
vmo = rx.rx_vmo_create(4096)
addr = rx.rx_vmar_map(vmo, 0, 4096, RW)
view = rx.rx_view(addr, 4096)
view[0] = 42
print(hex(addr), flush=True)
sys.stdin.readline()                         # the test restarts rxd meanwhile
try:
    rx.rx_vmo_get_size(vmo)
except rx.RxError as e:
    print("call:", e.name, flush=True)
fresh = rx.rx_vmo_create(4096)               # reconnects: a new process of the new rxd
print("vdso:", rx.rx_clock_get_monotonic() > 0, "lookup:", lib.rx_map_lookup(addr), flush=True)
if sys.argv[1] == "unmap":
    rx.rx_vmar_unmap(addr, 4096)             # given back locally: the new rxd never knew it
    print("after unmap:", lib.rx_map_lookup(addr), flush=True)
    again = rx.rx_vmar_map(fresh, 0, 4096, RW)
    rx.rx_view(again, 4096)[0] = 7
    print("new mapping:", rx.rx_vmo_read(fresh, 0, 1)[0], flush=True)
else:
    print("touching", flush=True)
    view[0]                                  # the lost diagnostic, never a read of other memory
    print("read something: must not happen", flush=True)
"""


@pytest.mark.parametrize("then", ["touch", "unmap"])
def test_mappings_lost_with_rxd_stay_reserved_and_say_so(then: str) -> None:
    directory = tempfile.mkdtemp(prefix="rxt-", dir="/tmp")
    rxd = Rxd(directory, "256MiB", 5.0, [])
    proc = None
    try:
        proc = rxd.spawn(CLIENT, then)
        addr = int(read_line(proc), 16)
        rxd.stop()
        rxd = Rxd(directory, "256MiB", 5.0, [])
        out, err = proc.communicate("\n", timeout=60)
        assert "call: RX_ERR_PEER_CLOSED" in out, (out, err)
        assert "vdso: True lookup: 3" in out, (out, err)  # 3: an rx mapping lost with its connection
        if then == "touch":
            assert proc.returncode == -signal.SIGSEGV, (proc.returncode, out, err)
            assert "must not happen" not in out
            lines = [line for line in err.splitlines() if line.startswith("rx: ")]
            assert lines == [f"rx: access at {addr:#x} to an rx mapping lost when rxd went away"], err
        else:
            assert proc.returncode == 0, err
            assert "after unmap: 0" in out and "new mapping: 7" in out, out
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        rxd.stop()
        shutil.rmtree(directory, ignore_errors=True)
