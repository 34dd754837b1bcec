"""Regression tests for races and leaks found in review: each one failed before its fix.

They use real processes and real timing windows (another client holding a VMO lock, a stream of
shootdowns), and assert the outcome, not the timing.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

from rxtest import QUICK_TIMEOUT, Rxd, read_line, running_rxd

HEADER = "import rxkernel.client as rx, os, sys, time, threading\nRW = rx.RX_VM_PERM_READ | rx.RX_VM_PERM_WRITE\n"

# Decommits a page of a VMO a client maps, over and over: a steady stream of INVALIDATEs to it.
SHOOTER = HEADER + """
w = rx.rx_handle_import(sys.argv[1])
print("go", flush=True)
while True:
    rx.rx_vmo_write(w, 0, b"x")
    rx.rx_vmo_op_range(w, rx.RX_VMO_OP_DECOMMIT, 0, 4096)
"""


@contextlib.contextmanager
def shooting(rxd: Rxd, token: str) -> Iterator[None]:
    """Run SHOOTER against the VMO behind `token` for the duration of the block."""
    shooter = rxd.spawn(SHOOTER, token)
    try:
        read_line(shooter, expect="go")
        yield
    finally:
        shooter.kill()
        shooter.wait(QUICK_TIMEOUT)


def test_protect_never_turns_untouched_pages_into_plain_memory(rxd: Rxd) -> None:
    rxd.run(HEADER + """
v = rx.rx_vmo_create(16 * 4096)
a = rx.rx_vmar_map(v, 0, 16 * 4096, RW)
rx.rx_vmar_protect(a, 16 * 4096, rx.RX_VM_PERM_READ)
rx.rx_vmo_write(v, 5 * 4096, b"DATA")
assert bytes(rx.rx_view(a, 16 * 4096)[5 * 4096:5 * 4096 + 4]) == b"DATA"
v2 = rx.rx_vmo_create(16 * 4096)
b = rx.rx_vmar_map(v2, 0, 16 * 4096, RW)
rx.rx_vmar_protect(b, 16 * 4096, RW)
rx.rx_view(b, 16 * 4096)[7 * 4096:7 * 4096 + 4] = b"KEPT"
assert rx.rx_vmo_read(v2, 7 * 4096, 4) == b"KEPT"
""")


def test_dropped_stale_reply_leaves_no_untracked_zero_page(rxd: Rxd) -> None:
    groups = 300
    a = rxd.spawn(HEADER + f"""
G = {groups}
w = rx.rx_vmo_create(4096)
rx.rx_vmar_map(w, 0, 4096, RW)                     # so the shooter's decommits reach us
print(rx.rx_handle_export(w), flush=True)
sys.stdin.readline()
bad = 0
t_end = time.monotonic() + 30
while time.monotonic() < t_end:   # until the shooter's invalidations have made some replies stale
    v = rx.rx_vmo_create(G * 32 * 4096)
    view = rx.rx_view(rx.rx_vmar_map(v, 0, G * 32 * 4096, RW), G * 32 * 4096)
    for g in range(0, G * 32, 32):
        view[(g + 20) * 4096]      # read: zero-maps [g+16, g+32)
        view[g * 4096]             # read: zero-maps [g, g+16)
        view[(g + 16) * 4096] = 1  # sequential write: its reply replaces the zero pages of [g+16, g+32)
    for g in range(0, G * 32, 32):
        rx.rx_vmo_write(v, (g + 20) * 4096, b"Z")
    bad += sum(view[(g + 20) * 4096] != ord("Z") for g in range(0, G * 32, 32))
    if rx.rx_trap_counters()["stale_replies"]:
        break
print(rx.rx_trap_counters()["stale_replies"], bad, flush=True)
""")
    with shooting(rxd, read_line(a)):
        out, err = a.communicate("\n", timeout=120)
    assert a.returncode == 0, err
    stale, bad = map(int, out.split())
    assert stale > 0, "the scenario did not produce a stale reply; the test proves nothing"
    assert bad == 0, f"{bad} pages still show the zero page after vmo_write ({stale} stale replies)"


def test_fault_waiting_for_a_lock_sees_the_mapping_split_meanwhile() -> None:
    with running_rxd(memory="4GiB") as rxd:
        a = rxd.spawn(HEADER + """
from rxkernel.native import lib
v = rx.rx_vmo_create(2 << 30)
a = rx.rx_vmar_map(v, 0, 64 * 4096, RW)
print(rx.rx_handle_export(v), flush=True)
sys.stdin.readline()            # another client is eagerly committing 1.5 GiB of v under its lock
time.sleep(0.05)
t = threading.Thread(target=lib.rx_touch, args=(a + 10 * 4096, 4096, 1))
t.start()                       # a write fault at page 10 waits for the lock
time.sleep(0.05)
rx.rx_vmar_protect(a, 4 * 4096, RW)   # splits the mapping at page 4 meanwhile
t.join()
assert rx.rx_vmo_read(v, 0, 1) == b"\\0"
print("ok", flush=True)
""")
        assert a.stdin is not None
        b = rxd.spawn(HEADER + """
v = rx.rx_handle_import(sys.argv[1])
print("go", flush=True)
rx.rx_vmo_op_range(v, rx.RX_VMO_OP_COMMIT, 512 << 20, 1536 << 20)
""", read_line(a))
        read_line(b, expect="go")
        a.stdin.write("\n")
        a.stdin.flush()
        out, err = a.communicate(timeout=60)
        assert a.returncode == 0 and out.strip() == "ok", err
        b.communicate(timeout=60)
        assert b.returncode == 0
        rxd.wait_idle()


def test_unmap_racing_an_invalidate_is_not_a_kill(rxd: Rxd) -> None:
    a = rxd.spawn(HEADER + """
w = rx.rx_vmo_create(4096)
print(rx.rx_handle_export(w), flush=True)
sys.stdin.readline()
t_end = time.monotonic() + 3
n = 0
while time.monotonic() < t_end:
    rx.rx_vmar_unmap(rx.rx_vmar_map(w, 0, 4096, RW), 4096)
    n += 1
print(n, flush=True)
""")
    with shooting(rxd, read_line(a)):
        out, err = a.communicate("\n", timeout=60)
    assert a.returncode == 0 and int(out) > 100, (a.returncode, err)
    assert rxd.kmem()["clients_killed"] == 0


def test_commit_whose_caller_dies_still_takes_zero_pages_away() -> None:
    """rxd tears the committer down while its commit allocates (it stops acking, and a shootdown
    on another VMO kills it): the commit task is cancelled mid-way, and the pages it counted must
    still have lost their zero-page mappings elsewhere. (A client whose control channel ended
    has until the ack deadline to go away before it is killed: the deadline is short, so the kill
    lands while the 4 GiB commit, ~1.7 s here, is still allocating.)"""
    with running_rxd(memory="8GiB", ack_deadline=0.5) as rxd:
        reader = rxd.spawn(HEADER + """
v = rx.rx_vmo_create(4 << 30)
view = rx.rx_view(rx.rx_vmar_map(v, 0, 4096, rx.RX_VM_PERM_READ), 4096)
assert view[0] == 0                     # the zero page is mapped here
print(rx.rx_handle_export(v), rx.rx_handle_export(v), flush=True)
sys.stdin.readline()
print(bytes(view[0:4]).decode(), rx.rx_vmo_read(v, 0, 4).decode(), flush=True)
""")
        token_v1, token_v2 = read_line(reader).split()
        committer = rxd.spawn(HEADER + """
from rxkernel.native import lib
v = rx.rx_handle_import(sys.argv[1])
w = rx.rx_vmo_create(4096)
rx.rx_vmar_map(w, 0, 4096, RW)
print(rx.rx_handle_export(w), flush=True)
lib.rx_control_stop()                   # from now on this client cannot ack anything
print("go", flush=True)
rx.rx_vmo_op_range(v, rx.RX_VMO_OP_COMMIT, 0, 4 << 30)
""", token_v1)
        token_w = read_line(committer)
        read_line(committer, expect="go")
        rxd.wait_for(lambda: rxd.kmem()["committed_bytes"] >= 4 << 30, "the commit to be allocating")
        rxd.run(HEADER + """
w = rx.rx_handle_import(sys.argv[1])
rx.rx_vmo_write(w, 0, b"x")
rx.rx_vmo_op_range(w, rx.RX_VMO_OP_DECOMMIT, 0, 4096)   # the committer cannot ack: killed
v = rx.rx_handle_import(sys.argv[2])
rx.rx_vmo_write(v, 0, b"DATA")
""", token_w, token_v2)
        assert committer.wait(30) == -signal.SIGKILL
        out, err = reader.communicate("\n", timeout=60)
        assert out.split() == ["DATA", "DATA"], (out, err)


def test_interrupted_call_does_not_desynchronise_the_connection() -> None:
    with running_rxd(memory="4GiB") as rxd:
        out = rxd.run(HEADER + """
import signal
class Boom(Exception): pass
def boom(*a): raise Boom()
signal.signal(signal.SIGALRM, boom)
v = rx.rx_vmo_create(2 << 30)
signal.setitimer(signal.ITIMER_REAL, 0.02)
try:
    rx.rx_vmo_op_range(v, rx.RX_VMO_OP_COMMIT, 0, 2 << 30)
except Boom:
    pass
else:
    raise AssertionError("the commit should have been interrupted")
# The old connection is gone with its handles; the next call opens a new one and gets
# answers to its own requests, never to the interrupted one.
for _ in range(3):
    try:
        rx.rx_vmo_get_size(v)
    except rx.RxError as e:
        assert e.name == "RX_ERR_BAD_HANDLE", e
w = rx.rx_vmo_create(8192)
assert rx.rx_vmo_get_size(w) == 8192
print("ok")
""")
        assert out.stdout.strip() == "ok"
        rxd.wait_idle()


def test_full_mapping_table_is_an_error_not_a_crash(rxd: Rxd) -> None:
    out = rxd.run(HEADER + """
v = rx.rx_vmo_create(4096)
addrs = []
try:
    while True:
        addrs.append(rx.rx_vmar_map(v, 0, 4096, RW))
except rx.RxError as e:
    assert e.name == "RX_ERR_NO_RESOURCES", e
rx.rx_view(addrs[-1], 4096)[0] = 1
assert rx.rx_vmo_read(v, 0, 1) == b"\\x01"
print(len(addrs))
""")
    assert int(out.stdout) == 8192, out.stdout


def test_invalidate_spanning_hundreds_of_mappings(rxd: Rxd) -> None:
    vmo = rxd.call("rx_vmo_create", 4096, 0)
    rxd.call("rx_vmo_write", vmo, 0, b"x")
    token = rxd.call("rx_handle_export", vmo, 1 << 31)
    proc = rxd.spawn(HEADER + """
v = rx.rx_handle_import(sys.argv[1])
views = [rx.rx_view(rx.rx_vmar_map(v, 0, 4096, RW), 4096) for _ in range(300)]
assert all(view[0] == ord("x") for view in views)   # adjacent reservations: one big range to rxd
print("mapped", flush=True)
sys.stdin.readline()
assert all(view[0] == 0 for view in views)
""", token)
    read_line(proc, expect="mapped")
    rxd.call("rx_vmo_op_range", vmo, 2, 0, 4096)  # DECOMMIT: one INVALIDATE over 300 mappings
    _, err = proc.communicate("\n", timeout=60)
    assert proc.returncode == 0, err
    assert rxd.kmem()["clients_killed"] == 0


def test_upgrading_a_store_fd_does_not_leak(rxd: Rxd) -> None:
    rxd.run(HEADER + """
v = rx.rx_vmo_create(4096)
rx.rx_vmo_write(v, 0, b"x")
ro = rx.rx_handle_duplicate(v, rx.RX_RIGHT_READ | rx.RX_RIGHT_MAP)
def store_fds():
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if "rx-vmo" in os.readlink(f"/proc/self/fd/{fd}"):
                fds.append(fd)
        except OSError:
            pass
    return len(fds)
most = 0
for i in range(200):
    a = rx.rx_vmar_map(ro, 0, 4096, rx.RX_VM_PERM_READ)
    assert bytes(rx.rx_view(a, 1)) == b"x"                # rxd sends a read-only fd
    b = rx.rx_vmar_map(v, 0, 4096, RW)
    rx.rx_view(b, 1)[0] = ord("x")                        # upgraded to a writable one
    most = max(most, store_fds())
    rx.rx_vmar_unmap(a, 4096)
    rx.rx_vmar_unmap(b, 4096)                             # nothing maps it: rxd says forget it
assert most <= 2, most                                    # replaced fds are closed, not piled up
deadline = time.monotonic() + 10
while store_fds() and time.monotonic() < deadline:        # the forget is asynchronous
    time.sleep(0.01)
assert store_fds() == 0
""")


def test_unmapping_part_of_a_fault_window_while_it_commits() -> None:
    with running_rxd(ack_deadline=1.0) as rxd:
        a = rxd.spawn(HEADER + """
from rxkernel.native import lib
v = rx.rx_vmo_create(32 * 4096)
a = rx.rx_vmar_map(v, 0, 32 * 4096, RW)
print(rx.rx_handle_export(v), flush=True)
sys.stdin.readline()          # the stalled reader has zero-mapped pages 0..31
for p in (0, 1, 2, 4):        # sequential writes: the next fault-around window is [8, 16)
    lib.rx_touch(a + p * 4096, 1, 1)
print("stop it", flush=True)
sys.stdin.readline()
t = threading.Thread(target=lib.rx_touch, args=(a + 8 * 4096, 1, 1))
t.start()                     # the window's commit waits for the stalled reader's ack
time.sleep(0.2)
rx.rx_vmar_unmap(a + 12 * 4096, 4 * 4096)   # the window's tail, not the faulting page
t.join()
assert rx.rx_vmo_read(v, 8 * 4096, 1) == b"\\0" and rx.rx_view(a + 8 * 4096, 4096)[0] == 0
print("ok", flush=True)
""")
        assert a.stdin is not None
        reader = rxd.spawn(HEADER + """
v = rx.rx_handle_import(sys.argv[1])
view = rx.rx_view(rx.rx_vmar_map(v, 0, 32 * 4096, rx.RX_VM_PERM_READ), 32 * 4096)
for i in range(32):
    view[i * 4096]
print("ready", flush=True)
sys.stdin.readline()
""", read_line(a))
        try:
            read_line(reader, expect="ready")
            a.stdin.write("\n")
            a.stdin.flush()
            read_line(a, expect="stop it")
            reader.send_signal(signal.SIGSTOP)
            a.stdin.write("\n")
            a.stdin.flush()
            out, err = a.communicate(timeout=60)
            assert a.returncode == 0 and out.strip() == "ok", err
        finally:
            reader.kill()
            reader.wait(QUICK_TIMEOUT)
