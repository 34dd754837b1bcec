"""The vDSO: the image rxd serves, the vvar page, the clock, and proof that reads need no request.

Clients are real processes; the torn-read test writes a vvar page of its own (the C writer in
the pytest process, hammering) while reader processes check every read.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from typing import Any

import pytest

import rxkernel.proto as p
from rxkernel.native import VDSO_HEADER_DIR, VDSO_IMAGE, ffi, lib
from rxkernel.proto import CHANNEL_MAIN, NEED_DATA, Connection, Hello, HelloReply, Role, RxError
from rxtest import CLIENT_TIMEOUT, QUICK_TIMEOUT, Rxd, read_line, running_rxd

EXPORTS = {
    "rx_vdso_init", "rx_clock_get_monotonic", "rx_clock_get_realtime", "rx_ticks_get", "rx_ticks_per_second",
    "rx_thread_tls_base", "rx_cpu_features", "rx_get_syscall_number", "rx_system_get_page_size",
    "rx_system_get_physmem", "rx_system_get_pressure_level",
}

# /proc/cpuinfo flag for each x86_64 feature bit (SSE3 is "pni"; an invariant TSC is nonstop_tsc).
X86_FLAGS = {
    "SSE2": "sse2", "SSE3": "pni", "SSSE3": "ssse3", "SSE4_1": "sse4_1", "SSE4_2": "sse4_2", "POPCNT": "popcnt",
    "AES": "aes", "PCLMULQDQ": "pclmulqdq", "AVX": "avx", "AVX2": "avx2", "BMI1": "bmi1", "BMI2": "bmi2",
    "AVX512F": "avx512f", "RDRAND": "rdrand", "RDSEED": "rdseed", "CLFLUSHOPT": "clflushopt", "CLWB": "clwb",
    "ERMS": "erms", "FSRM": "fsrm", "INVARIANT_TSC": "nonstop_tsc", "SHA": "sha_ni",
}


def client_json(rxd: Rxd, code: str, *args: str) -> Any:
    return json.loads(rxd.run(code, *args).stdout.strip().splitlines()[-1])


def hello_fds(path: str) -> tuple[socket.socket, dict[str, Any], list[int]]:
    """A main-channel hello by hand (a real rx process, no native code): the reply's info and the
    two fds it carries (vDSO image, vvar)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(path)
    conn = Connection(Role.CLIENT, kind=CHANNEL_MAIN)
    sock.sendall(conn.send(Hello(CHANNEL_MAIN)))
    fds: list[int] = []
    while (event := conn.next_event()) is NEED_DATA:
        data, new_fds, _, _ = socket.recv_fds(sock, 1 << 16, 8)
        fds.extend(new_fds)
        conn.receive_data(data)
    assert isinstance(event, HelloReply) and event.status == 0 and event.info is not None
    return sock, event.info, fds


# -- the image ----------------------------------------------------------------------------------------


def test_image_exports_exactly_the_vdso_symbols_and_needs_no_library() -> None:
    nm = subprocess.run(["nm", "-D", "--defined-only", VDSO_IMAGE], capture_output=True, text=True, check=True,
                        timeout=QUICK_TIMEOUT)
    assert {line.split()[-1] for line in nm.stdout.splitlines() if line.strip()} == EXPORTS
    dynamic = subprocess.run(["readelf", "-d", VDSO_IMAGE], capture_output=True, text=True, check=True,
                             timeout=QUICK_TIMEOUT).stdout
    assert "NEEDED" not in dynamic and "TEXTREL" not in dynamic
    undefined = subprocess.run(["nm", "-D", "--undefined-only", VDSO_IMAGE], capture_output=True, text=True, check=True,
                               timeout=QUICK_TIMEOUT)
    assert undefined.stdout.strip() == ""


def test_the_aarch64_branch_builds_too() -> None:
    cc = shutil.which("aarch64-linux-gnu-gcc")
    if cc is None:
        pytest.skip("no aarch64 cross compiler")
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "native"))
    try:
        import _build_vdso
    finally:
        sys.path.pop(0)
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "rxvdso-arm64.so")
        _build_vdso.build(out, cc)
        header = subprocess.run(["readelf", "-hd", out], capture_output=True, text=True, check=True,
                                timeout=QUICK_TIMEOUT).stdout
        assert "AArch64" in header and "NEEDED" not in header


def test_what_rxd_sends_is_sealed_and_read_only(rxd: Rxd) -> None:
    sock, info, fds = hello_fds(rxd.socket)
    try:
        image_fd, vvar_fd = fds
        assert os.fstat(image_fd).st_size == info["vdso_size"] == os.path.getsize(VDSO_IMAGE)
        assert os.fstat(vvar_fd).st_size == info["vvar_size"]
        assert os.readlink(f"/proc/self/fd/{image_fd}").startswith("/memfd:rx-vdso")
        assert os.readlink(f"/proc/self/fd/{vvar_fd}").startswith("/memfd:rx-vvar")
        with pytest.raises(PermissionError):
            os.pwrite(image_fd, b"x", 0)  # F_SEAL_WRITE
        with pytest.raises(PermissionError):
            mmap.mmap(vvar_fd, info["vvar_size"], mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        # Even reopened read-write through /proc, the vvar cannot be written (F_SEAL_FUTURE_WRITE).
        rw = os.open(f"/proc/self/fd/{vvar_fd}", os.O_RDWR)
        try:
            with pytest.raises(PermissionError):
                os.pwrite(rw, b"x", 0)
            with pytest.raises(PermissionError):
                mmap.mmap(rw, info["vvar_size"], mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(rw)
    finally:
        for fd in fds:
            os.close(fd)
        sock.close()


# -- mapped in every client ---------------------------------------------------------------------------

MAPS = """
import json, sys
import rxkernel.client as rx
rx.rx_clock_get_monotonic()
image, vvar = rx.rx_vdso_addresses()
lines = [l.split() for l in open("/proc/self/maps") if "rx-vdso" in l or "rx-vvar" in l]
print(json.dumps({"image": image, "vvar": vvar, "maps": [[l[0], l[1], l[5]] for l in lines]}), flush=True)
sys.stdin.readline()
"""


def test_every_client_maps_the_image_r_x_and_the_vvar_read_only(rxd: Rxd) -> None:
    procs = [rxd.spawn(MAPS) for _ in range(3)]
    try:
        seen = [json.loads(read_line(proc)) for proc in procs]
        assert len(rxd.processes()) == 4  # all three at once, plus the admin connection
    finally:
        for proc in procs:
            proc.communicate("\n", timeout=30)
    for s in seen:
        image = [m for m in s["maps"] if m[2] == "/memfd:rx-vdso"]
        vvar = [m for m in s["maps"] if m[2] == "/memfd:rx-vvar"]
        assert any(perms == "r-xp" for _, perms, _ in image), s
        assert all("w" not in perms for _, perms, _ in image), s
        assert vvar and all(perms == "r--s" for _, perms, _ in vvar), s
        assert int(image[0][0].split("-")[0], 16) == s["image"]
        assert int(vvar[0][0].split("-")[0], 16) == s["vvar"]


# -- the functions ------------------------------------------------------------------------------------

VALUES = """
import json, threading, time
import rxkernel.client as rx
rx.rx_clock_get_monotonic()  # connect
mono, real = [], []
for _ in range(2000):
    a = time.monotonic_ns(); m = rx.rx_clock_get_monotonic(); b = time.monotonic_ns()
    mono.append(max(a - m, m - b, 0))
    a = time.time_ns(); r = rx.rx_clock_get_realtime(); b = time.time_ns()
    real.append(max(a - r, r - b, 0))
t0, n0 = rx.rx_ticks_get(), time.monotonic_ns()
time.sleep(0.3)
t1, n1 = rx.rx_ticks_get(), time.monotonic_ns()
tls = {}
alive = threading.Barrier(4)   # all alive at once: an exited thread's TCB is reused
def worker(i):
    first = rx.rx_thread_tls_base()
    alive.wait()
    tls[i] = (first, rx.rx_thread_tls_base(), threading.get_ident())
    alive.wait()
threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({
    "mono_err": max(mono), "real_err": max(real),
    "ticks_s": (t1 - t0) / rx.rx_ticks_per_second(), "host_s": (n1 - n0) / 1e9,
    "tls": list(tls.values()), "main_tls": [rx.rx_thread_tls_base(), threading.get_ident()],
    "features": rx.rx_cpu_features(), "page": rx.rx_system_get_page_size(), "physmem": rx.rx_system_get_physmem(),
}))
"""


def test_clocks_ticks_and_system_values(rxd: Rxd) -> None:
    v = client_json(rxd, VALUES)
    # The clock starts equal to CLOCK_MONOTONIC and is kept there: microseconds, not milliseconds.
    assert v["mono_err"] < 200_000, v
    assert v["real_err"] < 2_000_000, v
    assert abs(v["ticks_s"] - v["host_s"]) < 0.01 * v["host_s"], v
    tls = v["tls"]
    assert all(a == b for a, b, _ in tls) and len({a for a, _, _ in tls} | {v["main_tls"][0]}) == 5
    if os.uname().machine == "x86_64":  # glibc: the fs base is the TCB is pthread_self()
        assert all(a == ident for a, _, ident in tls) and v["main_tls"][0] == v["main_tls"][1]
    assert v["page"] == p.PAGE_SIZE
    assert v["physmem"] == 1 << 30  # running_rxd's --memory 1GiB


def test_cpu_features_agree_with_proc_cpuinfo(rxd: Rxd) -> None:
    features = client_json(rxd, "import json, rxkernel.client as rx; print(json.dumps(rx.rx_cpu_features()))")
    if os.uname().machine != "x86_64":
        pytest.skip("the cpuinfo comparison is written for x86_64")
    with open("/proc/cpuinfo") as f:
        flags = set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())
    for name, flag in X86_FLAGS.items():
        bit = getattr(p, f"RX_CPU_X86_{name}")
        assert bool(features & bit) == (flag in flags), (name, flag)
    known = 0
    for name in X86_FLAGS:
        known |= getattr(p, f"RX_CPU_X86_{name}")
    assert features & ~known == 0


def test_syscall_numbers_come_from_proto(rxd: Rxd) -> None:
    names = [c.name for c in p.SYSCALLS]
    got = client_json(rxd, """
import json, sys
import rxkernel.client as rx
numbers = {n: rx.rx_get_syscall_number(n) for n in sys.argv[1:]}
errors = []
for bad in ("rx_no_such_call", "", "rx_vmo_create_", "RX_VMO_CREATE", "x" * 100):
    try:
        rx.rx_get_syscall_number(bad)
    except rx.RxError as e:
        errors.append(e.status)
print(json.dumps({"numbers": numbers, "errors": errors}))
""", *names)
    assert got["numbers"] == {c.name: c.number for c in p.SYSCALLS}
    assert got["errors"] == [p.RX_ERR_NOT_FOUND] * 5


def test_monotonic_never_goes_backwards_across_threads(rxd: Rxd) -> None:
    got = client_json(rxd, """
import json, threading
import rxkernel.client as rx
from rxkernel.native import ffi, lib
rx.rx_clock_get_monotonic()
lock, last, backwards = threading.Lock(), [0], [0]
def chained():
    # Under one lock, each read happens after the previous one in any thread.
    for _ in range(20000):
        with lock:
            t = rx.rx_clock_get_monotonic()
            backwards[0] += t < last[0]
            last[0] = t
results = []
def tight():
    out = ffi.new("int64_t[3]")
    lib.rxv_check_clock(300000, 1_000_000_000, 5_000_000, out)   # C loop, GIL released
    results.append(list(out))
threads = [threading.Thread(target=f) for f in (chained, chained, chained, tight, tight)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"backwards": backwards[0], "tight": results}))
""")
    assert got["backwards"] == 0
    for bad, host_diff, _ in got["tight"]:
        assert bad == 0 and host_diff < 5_000_000, got


# -- realtime adjustment --------------------------------------------------------------------------------

WATCH_REALTIME = """
import sys, time
import rxkernel.client as rx
print(rx.rx_clock_get_realtime() - time.time_ns(), flush=True)
sys.stdin.readline()
print(rx.rx_clock_get_realtime() - time.time_ns(), flush=True)
"""


def test_adjust_realtime_reaches_clients_without_a_request(rxd: Rxd) -> None:
    watchers = [rxd.spawn(WATCH_REALTIME) for _ in range(2)]
    try:
        before = [int(read_line(w)) for w in watchers]
        pids = {w.pid for w in watchers}
        counts = {q["pid"]: q["syscalls"] for q in rxd.processes() if q["pid"] in pids}
        assert len(counts) == 2 and set(counts.values()) == {0}  # connecting is no syscall
        # Another process (here the admin connection) moves realtime one hour ahead.
        host_offset = time.time_ns() - time.monotonic_ns()
        rxd.call("rx_clock_adjust_realtime", rxd.system, host_offset + 3600 * 10**9)
        after = []
        for w in watchers:
            out, err = w.communicate("\n", timeout=30)
            assert w.returncode == 0, err
            after.append(int(out.split()[-1]))
        counts_after = {q["pid"]: q["syscalls"] for q in rxd.processes() if q["pid"] in pids}
    finally:
        for w in watchers:
            if w.poll() is None:
                w.kill()
    assert all(abs(b) < 2_000_000 for b in before), before
    assert all(abs(a - 3600 * 10**9) < 5_000_000 for a in after), after
    # The watchers have exited by now: the list holds them only if rxd still had them. Either way,
    # no request came from them between the two reads.
    assert all(counts_after.get(pid, 0) == 0 for pid in pids), counts_after


def test_adjust_realtime_needs_the_system_handle(rxd: Rxd) -> None:
    process = rxd.call("rx_process_self")
    vmo = rxd.call("rx_vmo_create", 4096, 0)
    for handle in (process, vmo):
        with pytest.raises(RxError) as e:
            rxd.call("rx_clock_adjust_realtime", handle, 0)
        assert e.value.status == p.RX_ERR_WRONG_TYPE
    with pytest.raises(RxError) as e:
        rxd.call("rx_clock_adjust_realtime", 0x12345673, 0)
    assert e.value.status == p.RX_ERR_BAD_HANDLE
    with pytest.raises(RxError) as e:
        rxd.call("rx_clock_adjust_realtime", rxd.system, 1 << 63)  # not an i64
    assert e.value.status == p.RX_ERR_INVALID_ARGS
    # Any handle to the system will do (this is a second one).
    other = rxd.call("rx_system_handle")
    assert other != rxd.system
    rxd.call("rx_clock_adjust_realtime", other, -(1 << 62))
    real = client_json(rxd, "import json, rxkernel.client as rx; print(json.dumps(rx.rx_clock_get_realtime()))")
    assert real < 0


def test_realtime_adjust_with_the_stub_library() -> None:
    with running_rxd() as rxd:
        got = client_json(rxd, """
import json, time
import rxkernel.client as rx
system = rx.rx_system_handle()
base = time.time_ns() - time.monotonic_ns()
rx.rx_clock_adjust_realtime(system, base - 10**12)
print(json.dumps(time.time_ns() - rx.rx_clock_get_realtime()))
""")
        assert abs(got - 10**12) < 5_000_000


# -- the seqlock -----------------------------------------------------------------------------------------

READER = """
import json, os, sys, threading, time
from rxkernel.native import VDSO_IMAGE, ffi, lib
vvar_fd, size, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
image_fd = os.open(VDSO_IMAGE, os.O_RDONLY)
assert lib.rxv_attach(image_fd, vvar_fd, size) == 0
print("ready", flush=True)
sys.stdin.readline()
results = []
def reader():
    out, reads, bad, worst = ffi.new("int64_t[3]"), 0, 0, 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        # any torn mix of the two parameter sets is off by >= 100 ms; the limit is 20 ms
        bad += lib.rxv_check_clock(20000, 10**9, 20_000_000, out)
        reads += 20000
        worst = max(worst, out[1])
    results.append((reads, bad, worst))
threads = [threading.Thread(target=reader) for _ in range(2)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(results))
"""


def test_seqlock_readers_never_see_a_torn_update() -> None:
    size = lib.rx_vvar_size()
    fd = os.memfd_create("rx-vvar-hammer", os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    page = mmap.mmap(fd, size)
    vvar = ffi.from_buffer(page)
    assert lib.rx_vvar_setup(vvar, 4096, 1 << 30, lib.RX_VVAR_MODE_TICKS) == 0
    ro = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY)
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(ro), str(size), "3"], pass_fds=[ro], text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    stop = ffi.new("int *")
    updates: list[int] = []
    writer = threading.Thread(target=lambda: updates.append(lib.rx_vvar_hammer(vvar, stop, 1 << 62, 200)))
    try:
        for r in readers:
            read_line(r, expect="ready")
        time.sleep(0.3)  # so that a mix of mult and shift is off by far more than the limit
        writer.start()
        for r in readers:
            r.stdin.write("\n")  # type: ignore[union-attr]
            r.stdin.flush()  # type: ignore[union-attr]
        results = []
        for r in readers:
            out, err = r.communicate(timeout=60)
            assert r.returncode == 0, err
            results.extend(json.loads(out.splitlines()[-1]))
    finally:
        stop[0] = 1
        if writer.is_alive():
            writer.join()
        for r in readers:
            if r.poll() is None:
                r.kill()
        os.close(ro)
        os.close(fd)
    reads = sum(r[0] for r in results)
    assert updates and updates[0] > 10_000, updates
    assert reads > 100_000, results
    assert all(bad == 0 for _, bad, _ in results), results


# -- callable from C --------------------------------------------------------------------------------------

C_PROGRAM = r"""
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include "rxvdso.h"

#define SYM(name) __typeof__(&name) p_##name = (__typeof__(&name))dlsym(h, #name); if (!p_##name) return 4;

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    int image_fd = atoi(argv[1]), vvar_fd = atoi(argv[2]);
    size_t vvar_size = strtoul(argv[3], NULL, 10);
    const void *vvar = mmap(NULL, vvar_size, PROT_READ, MAP_SHARED, vvar_fd, 0);
    if (vvar == MAP_FAILED) return 3;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", image_fd);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) { fprintf(stderr, "%s\n", dlerror()); return 5; }
    SYM(rx_vdso_init) SYM(rx_clock_get_monotonic) SYM(rx_clock_get_realtime) SYM(rx_ticks_per_second)
    SYM(rx_get_syscall_number) SYM(rx_system_get_page_size) SYM(rx_system_get_physmem) SYM(rx_cpu_features)
    if (p_rx_clock_get_monotonic() != RX_VDSO_ERR_BAD_STATE) return 6;  /* not attached yet */
    if (p_rx_vdso_init(vvar) != 0) return 7;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long long host = ts.tv_sec * 1000000000LL + ts.tv_nsec;
    long long mono = p_rx_clock_get_monotonic();
    printf("{\"mono_minus_host\": %lld, \"realtime\": %lld, \"tps\": %llu, \"vmo_create\": %lld, "
           "\"unknown\": %lld, \"page\": %llu, \"physmem\": %llu, \"features\": %llu}\n",
           mono - host, (long long)p_rx_clock_get_realtime(), (unsigned long long)p_rx_ticks_per_second(),
           (long long)p_rx_get_syscall_number("rx_vmo_create"), (long long)p_rx_get_syscall_number("nope"),
           (unsigned long long)p_rx_system_get_page_size(), (unsigned long long)p_rx_system_get_physmem(),
           (unsigned long long)p_rx_cpu_features());
    return 0;
}
"""


def test_a_c_program_calls_the_vdso_with_fds_from_its_parent(rxd: Rxd, tmp_path: Any) -> None:
    src, exe = tmp_path / "vdso_user.c", tmp_path / "vdso_user"
    src.write_text(C_PROGRAM)
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", f"-I{VDSO_HEADER_DIR}", "-o", str(exe), str(src), "-ldl"], check=True,
                   timeout=CLIENT_TIMEOUT)
    sock, info, fds = hello_fds(rxd.socket)
    try:
        image_fd, vvar_fd = fds
        out = subprocess.run([str(exe), str(image_fd), str(vvar_fd), str(info["vvar_size"])], pass_fds=fds,
                             capture_output=True, text=True, timeout=30)
    finally:
        for fd in fds:
            os.close(fd)
        sock.close()
    assert out.returncode == 0, (out.returncode, out.stderr)
    got = json.loads(out.stdout)
    features = client_json(rxd, "import json, rxkernel.client as rx; print(json.dumps(rx.rx_cpu_features()))")
    assert 0 <= got["mono_minus_host"] < 1_000_000, got
    assert abs(got["realtime"] - time.time_ns()) < 1_000_000_000
    assert got["vmo_create"] == p.SYSCALL_NUMBERS["rx_vmo_create"] and got["unknown"] == p.RX_ERR_NOT_FOUND
    assert got["page"] == p.PAGE_SIZE and got["physmem"] == 1 << 30 and got["features"] == features
    assert got["tps"] > 1_000_000


# -- re-attaching ----------------------------------------------------------------------------------------

REATTACH = """
import json, os, sys
import rxkernel.client as rx
def state():
    koid = rx.connect().process_koid   # reconnects if the connection was lost
    return {"physmem": rx.rx_system_get_physmem(), "koid": koid,
            "image": rx.rx_vdso_addresses()[0], "mono": rx.rx_clock_get_monotonic()}
first = state()
first["kind"] = type(rx.rx_clock_get_monotonic).__name__   # bound to the cffi function by now
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    # A fork child is a new rx process: the wrappers are back, and the first call connects.
    kind = type(rx.rx_clock_get_monotonic).__name__
    mono = rx.rx_clock_get_monotonic()
    os.write(w, json.dumps({**state(), "kind": kind, "first_mono": mono}).encode())
    os._exit(0)
os.waitpid(pid, 0)
child = json.loads(os.read(r, 1 << 16))
print(json.dumps({"first": first, "child": child}), flush=True)
sys.stdin.readline()   # the test restarts rxd with another --memory meanwhile
try:
    rx.rx_process_self()
except rx.RxError:
    pass   # the old connection is gone; the next call reconnects
print(json.dumps(state()), flush=True)
"""


def test_fork_child_and_rxd_restart_attach_again() -> None:
    directory = tempfile.mkdtemp(prefix="rxt-", dir="/tmp")
    rxd = Rxd(directory, "1GiB", 5.0, [])
    proc = None
    try:
        proc = rxd.spawn(REATTACH)
        before = json.loads(read_line(proc))
        first, child = before["first"], before["child"]
        assert first["physmem"] == child["physmem"] == 1 << 30
        assert child["koid"] != first["koid"] and child["image"] == first["image"]
        assert child["mono"] >= child["first_mono"] >= first["mono"]
        assert first["kind"] == "builtin_function_or_method" and child["kind"] == "function"
        rxd.stop()
        rxd = Rxd(directory, "512MiB", 5.0, [])
        out, err = proc.communicate("\n", timeout=60)
        assert proc.returncode == 0, err
        after = json.loads(out.splitlines()[-1])
        # The new rxd's image (another memfd) and vvar page, not the dead rxd's.
        assert after["physmem"] == 512 << 20 and after["image"] != first["image"], after
        assert after["mono"] > child["mono"]
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        rxd.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_syscall_clock_mode_reads_the_host_clock() -> None:
    with running_rxd(extra=["--clock", "syscall"]) as rxd:
        got = client_json(rxd, """
import json, time
import rxkernel.client as rx
a = time.monotonic_ns(); m = rx.rx_clock_get_monotonic(); b = time.monotonic_ns()
rx.rx_clock_adjust_realtime(rx.rx_system_handle(), 7 * 10**9)
print(json.dumps({"in_bracket": a <= m <= b, "real_minus_mono": rx.rx_clock_get_realtime() - rx.rx_clock_get_monotonic()}))
""")
        assert got["in_bracket"]
        assert abs(got["real_minus_mono"] - 7 * 10**9) < 1_000_000


def test_rxd_logs_the_clock_discipline() -> None:
    with running_rxd() as rxd:
        time.sleep(2.3)
        errors = [int(m) for m in re.findall(r"clock disciplined\s+error_ns=(-?\d+)", rxd.log_text())]
    assert len(errors) >= 2, errors
    assert all(abs(e) < 100_000 for e in errors), errors  # microseconds at most


def test_rx_vdso_fds_hands_a_c_child_what_it_needs(rxd: Rxd, tmp_path: Any) -> None:
    src, exe = tmp_path / "vdso_user.c", tmp_path / "vdso_user"
    src.write_text(C_PROGRAM)
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", f"-I{VDSO_HEADER_DIR}", "-o", str(exe), str(src), "-ldl"], check=True,
                   timeout=CLIENT_TIMEOUT)
    out = rxd.run(
        """
import os, subprocess, sys
import rxkernel.client as rx
image, vvar, size = rx.rx_vdso_fds()
r = subprocess.run([sys.argv[1], str(image), str(vvar), str(size)], pass_fds=[image, vvar], capture_output=True, text=True,
                   timeout=30)
os.close(image); os.close(vvar)
print(r.returncode, r.stdout.strip(), r.stderr.strip())
""",
        str(exe),
    ).stdout
    code, _, rest = out.partition(" ")
    assert code == "0", out
    assert json.loads(rest)["vmo_create"] == p.SYSCALL_NUMBERS["rx_vmo_create"]
