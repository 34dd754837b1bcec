"""Processes that die, fork, stall or outlive rxd: rxd's accounting stays exact."""

from __future__ import annotations

import os
import signal
import time

from rxkernel.proto import RX_RIGHT_SAME_RIGHTS
from rxtest import Rxd, read_line, running_rxd

HEADER = "import rxkernel.client as rx, os, sys, time\nRW = rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE\n"


def test_sigkill_while_faulting_frees_everything(rxd: Rxd) -> None:
    fds_before = rxd.fd_count()
    for _ in range(3):
        proc = rxd.spawn(HEADER + """
import random
size = 256 << 20
vmo = rx.rx_vmo_create(size)
view = rx.rx_view(rx.rx_vmar_map(vmo, 0, size, RW, rx.RX_VM_MAP_RANDOM), size)
print("go", flush=True)
while True:
    view[random.randrange(size)] = 1
""")
        read_line(proc, expect="go")
        rxd.wait_for(lambda: rxd.kmem()["committed_bytes"] > 64 * 4096, "the client to be faulting")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        rxd.wait_idle()
        rxd.wait_for(lambda: rxd.fd_count() == fds_before, f"rxd fd count back to {fds_before}")


def test_fork_child_is_a_new_rx_process(rxd: Rxd) -> None:
    rxd.run(HEADER + """
vmo = rx.rx_vmo_create(1 << 20)
addr = rx.rx_vmar_map(vmo, 0, 1 << 20, RW)
view = rx.rx_view(addr, 1 << 20)
view[0] = 42
parent_koid = rx.rx_object_get_info(rx.rx_process_self(), rx.RX_INFO_HANDLE_BASIC)["koid"]
pid = os.fork()
if pid == 0:
    try:
        child_koid = rx.rx_object_get_info(rx.rx_process_self(), rx.RX_INFO_HANDLE_BASIC)["koid"]
        assert child_koid != parent_koid
        v2 = rx.rx_vmo_create(4096)
        a2 = rx.rx_vmar_map(v2, 0, 4096, RW)
        rx.rx_view(a2, 4096)[0] = 9
        assert rx.rx_vmo_read(v2, 0, 1) == b"\\x09"
        try:
            rx.rx_vmo_get_size(vmo)   # the parent's handle value means nothing here
        except rx.RxError as e:
            assert e.name == "RX_ERR_BAD_HANDLE"
        else:
            os._exit(3)
        os._exit(0)
    except BaseException:
        import traceback; traceback.print_exc()
        os._exit(1)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
pid = os.fork()
if pid == 0:
    import ctypes
    ctypes.string_at(addr, 1)  # inherited address: a clear diagnostic, then SIGSEGV
    os._exit(0)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == -11, status
assert view[0] == 42   # the parent is untouched
""")


def test_client_that_does_not_ack_is_killed() -> None:
    with running_rxd(ack_deadline=1.0) as rxd:
        vmo = rxd.call("rx_vmo_create", 1 << 20, 0)
        token = rxd.call("rx_handle_export", vmo, RX_RIGHT_SAME_RIGHTS)
        staller = rxd.spawn(HEADER + """
vmo = rx.rx_handle_import(sys.argv[1])
view = rx.rx_view(rx.rx_vmar_map(vmo, 0, 1 << 20, RW), 1 << 20)
assert view[0] == 0          # zero page mapped: a later commit must take it away from us
print("mapped", flush=True)
time.sleep(600)
""", token)
        read_line(staller, expect="mapped")
        staller.send_signal(signal.SIGSTOP)  # its control thread cannot ack any more
        t0 = time.monotonic()
        rxd.call("rx_vmo_write", vmo, 0, b"x")  # commits page 0: needs the staller's ack
        elapsed = time.monotonic() - t0
        assert staller.wait(10) == -signal.SIGKILL
        assert 0.9 < elapsed < 10, elapsed
        assert rxd.kmem()["clients_killed"] == 1
        assert rxd.call("rx_vmo_read", vmo, 0, 1) == b"x"


def test_rxd_shutdown_gives_peer_closed() -> None:
    with running_rxd(expect_alive=False) as rxd:
        proc = rxd.spawn(HEADER + """
vmo = rx.rx_vmo_create(4096)
print("ready", flush=True)
sys.stdin.readline()
try:
    rx.rx_vmo_get_size(vmo)
except rx.RxError as e:
    print(e.name)
""")
        read_line(proc, expect="ready")
        rxd.proc.send_signal(signal.SIGTERM)
        assert rxd.proc.wait(20) == 0
        out, _ = proc.communicate("\n", timeout=20)
        assert out.strip() == "RX_ERR_PEER_CLOSED"


def test_a_big_eager_commit_does_not_stall_other_clients() -> None:
    with running_rxd(memory="8GiB") as rxd:
        big = rxd.spawn(HEADER + """
t0 = time.monotonic()
rx.rx_vmo_create(3 << 30, rx.RX_VMO_COMMIT_EAGER)
print(time.monotonic() - t0, flush=True)
""")
        small = rxd.run(HEADER + """
vmo = rx.rx_vmo_create(4096)
worst = 0.0
t_end = time.monotonic() + 1.5
n = 0
while time.monotonic() < t_end:
    t0 = time.monotonic()
    rx.rx_vmo_get_size(vmo)
    worst = max(worst, time.monotonic() - t0)
    n += 1
print(n, worst)
""")
        out, err = big.communicate(timeout=120)
        assert big.returncode == 0, err
        n, worst = small.stdout.split()
        assert int(n) > 100 and float(worst) < 0.25, (n, worst, out)


# A client leaving (rx.disconnect(), an exit) closes its control channel a moment before its main
# one; a shootdown that finds the control channel gone in that moment must not SIGKILL a client
# that is going away by itself. Here the moment is stretched to 0.5 s (under the ack deadline).
LEAVER = HEADER + """
from rxkernel.native import lib
vmo = rx.rx_handle_import(sys.argv[1])
view = rx.rx_view(rx.rx_vmar_map(vmo, 0, 1 << 20, RW), 1 << 20)
assert view[0] == 0          # zero page mapped: a commit of page 0 must take it away from us
lib.rx_control_stop()        # what rx.disconnect() does first
print("leaving", flush=True)
time.sleep(float(sys.argv[2]))
rx.disconnect()
print("gone", flush=True)
"""


def test_a_client_leaving_during_a_shootdown_is_not_killed() -> None:
    with running_rxd(ack_deadline=5.0) as rxd:
        vmo = rxd.call("rx_vmo_create", 1 << 20, 0)
        leaver = rxd.spawn(LEAVER, rxd.call("rx_handle_export", vmo, RX_RIGHT_SAME_RIGHTS), "0.5")
        assert leaver.stdout is not None and leaver.stdout.readline().strip() == "leaving"
        time.sleep(0.1)  # rxd has seen the control channel end
        t0 = time.monotonic()
        rxd.call("rx_vmo_write", vmo, 0, b"x")  # commits page 0: a shootdown of the leaver's zero page
        elapsed = time.monotonic() - t0
        out, err = leaver.communicate(timeout=20)
        assert leaver.returncode == 0 and out.strip() == "gone", (leaver.returncode, out, err)
        assert rxd.kmem()["clients_killed"] == 0
        assert elapsed < 4, elapsed  # it waited for the leaver to go, not for the deadline
        assert rxd.call("rx_vmo_read", vmo, 0, 1) == b"x"


def test_a_client_that_keeps_mappings_without_a_control_channel_is_killed_at_the_deadline() -> None:
    with running_rxd(ack_deadline=1.0) as rxd:
        vmo = rxd.call("rx_vmo_create", 1 << 20, 0)
        stayer = rxd.spawn(LEAVER, rxd.call("rx_handle_export", vmo, RX_RIGHT_SAME_RIGHTS), "600")
        assert stayer.stdout is not None and stayer.stdout.readline().strip() == "leaving"
        time.sleep(0.1)
        t0 = time.monotonic()
        rxd.call("rx_vmo_write", vmo, 0, b"x")
        elapsed = time.monotonic() - t0
        assert stayer.wait(10) == -signal.SIGKILL
        assert 0.9 < elapsed < 10, elapsed
        assert rxd.kmem()["clients_killed"] == 1


# Played by a raw client in a process of its own (rxd may kill it): a mapping whose zero page it
# faulted in, then a write of its own that must take that zero page away from it, which its
# control channel never acks.
OWN_SHOOTDOWN = """
import sys, msgpack
sys.path.insert(0, sys.argv[2])
from rxtest import RawClient
from rxkernel.proto import CHANNEL_CONTROL, CHANNEL_FAULT, SYSCALL_NUMBERS
c = RawClient(sys.argv[1])
control, fault = c.side_channel(CHANNEL_CONTROL), c.side_channel(CHANNEL_FAULT)
vmo = c.call("rx_vmo_create", 4096, 0)
addr = 0x7E0000000000
c.call("rx_vmar_map", vmo, 0, 4096, 3, 0, addr)
fault.sendall(msgpack.packb([1, addr, 0]))          # a read fault: the zero page
assert msgpack.unpackb(fault.recv(1 << 16))[1] == 0
c.send_raw(msgpack.packb([9, SYSCALL_NUMBERS["rx_vmo_write"], vmo, 0, b"x"]))
print("writing", flush=True)
control.recv(1 << 16)                               # the INVALIDATE, never acked
print("invalidate", flush=True)
sys.stdin.readline()
"""


def test_a_client_killed_while_its_own_call_waits_for_its_ack_is_gone_at_once() -> None:
    """Its teardown cannot wait for its main channel's task: that task is the one waiting."""
    with running_rxd(ack_deadline=5.0) as rxd:
        proc = rxd.spawn(OWN_SHOOTDOWN, rxd.socket, os.path.dirname(os.path.abspath(__file__)))
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "writing"
        assert proc.stdout.readline().strip() == "invalidate", proc.stderr.read() if proc.stderr else ""
        t0 = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        rxd.wait_for(lambda: rxd.kmem()["num_processes"] == 1, "the killed client to be gone", timeout=20)
        assert time.monotonic() - t0 < 2, "rxd waited for the ack deadline"
        assert rxd.kmem()["clients_killed"] == 0, "it was dead already: nothing for rxd to kill"
