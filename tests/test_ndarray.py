"""rx.ndarray and rx.share across real processes: one VMO, zero copies, lifetime tied to the array."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import rxkernel.client as rx
from rxkernel.proto import RX_INFO_SYSTEM_VMOS
from rxtest import Rxd, read_line

MiB = 1 << 20

CHILD = """
import gc, pickle, sys
import numpy as np, rxkernel.client as rx

def recv():
    n = int.from_bytes(sys.stdin.buffer.read(8), "little")
    return pickle.loads(sys.stdin.buffer.read(n))

b, v, (shape, strides, dtype) = recv(), recv(), recv()
assert type(b) is np.ndarray and b.shape == (256, 1024) and b.dtype == np.float64 and b.flags.c_contiguous
assert v.shape == tuple(shape) and v.strides == tuple(strides) and str(v.dtype) == dtype, (v.shape, v.strides)
assert b.flags.writeable and v.flags.writeable
assert (b.ravel() == np.arange(b.size)).all()  # the parent's writes, never copied to us
assert (v == b[::2, 3:].T).all()
b[0, 0] = -1.0
v[5, 7] = 123.0  # b[14, 8]
print("loaded", flush=True)
sys.stdin.buffer.readline()
assert b[1, 1] == 42.0, b[1, 1]  # written by the parent after we loaded
del b, v
gc.collect()
me = rx.rx_process_self()
assert rx.rx_object_get_info(me, rx.RX_INFO_TASK_STATS)["mem_mapped_bytes"] == 0
assert rx.rx_object_get_info(me, rx.RX_INFO_PROCESS_VMOS) == []  # both handles closed
print("checked", flush=True)
"""

PARENT = """
import pickle, subprocess, sys
import numpy as np, rxkernel.client as rx

a = rx.ndarray((256, 1024), "f8")  # 2 MiB
a[:] = np.arange(a.size).reshape(a.shape)
view = a[::2, 3:].T  # strided and transposed: Fortran-ordered, not contiguous
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
sizes = []
for obj in (rx.share(a), rx.share(view), (view.shape, view.strides, str(view.dtype))):
    data = pickle.dumps(obj)
    sizes.append(len(data))
    child.stdin.write(len(data).to_bytes(8, "little") + data)
child.stdin.flush()
assert max(sizes) < 1000, sizes  # a token and a layout, not 2 MiB of floats
assert child.stdout.readline() == b"loaded\\n"
assert a[0, 0] == -1.0 and a[14, 8] == 123.0  # the child's writes, through both of its arrays
a[1, 1] = 42.0
print("ready", flush=True)  # the test looks at rxd now: both processes map the one VMO
sys.stdin.readline()
child.stdin.write(b"go\\n")
child.stdin.flush()
assert child.stdout.readline() == b"checked\\n"
assert child.wait() == 0
print("done", flush=True)
"""


def test_parent_and_child_share_one_array_without_copies(rxd: Rxd) -> None:
    parent = rxd.spawn(PARENT, textwrap.dedent(CHILD))
    assert parent.stdout is not None and parent.stdin is not None
    read_line(parent, "ready")
    vmos = [v for v in rxd.call("rx_object_get_info", rxd.system, RX_INFO_SYSTEM_VMOS) if v["committed_bytes"]]
    assert len(vmos) == 1, vmos  # one VMO behind every array on both sides
    assert vmos[0]["size_bytes"] == 2 * MiB and vmos[0]["num_mappings"] == 3  # parent's, and the child's two loads
    assert rxd.kmem()["committed_bytes"] == 2 * MiB  # one copy of the data, not two
    out, err = parent.communicate("go\n", timeout=60)
    assert parent.returncode == 0 and out.strip() == "done", out + err
    rxd.wait_idle()


LIFETIME = """
import gc, os, pickle
import numpy as np, rxkernel.client as rx
from rxkernel.client._process import PROCESS

me = rx.rx_process_self()

def mapped():
    return rx.rx_object_get_info(me, rx.RX_INFO_TASK_STATS)["mem_mapped_bytes"]

def handles():
    return sum(v["num_handles"] for v in rx.rx_object_get_info(me, rx.RX_INFO_PROCESS_VMOS))

a = rx.ndarray(1 << 20, "u1")
a[::4096] = 1
assert mapped() == 1 << 20 and handles() == 1
v = a[4096:].view("u4")
mv = memoryview(v[:10])
del a
gc.collect()
assert mapped() == 1 << 20  # the view keeps the mapping
del v
gc.collect()
assert mapped() == 1 << 20  # so does a buffer exported from a view
del mv
assert mapped() == 0 and handles() == 0  # the last reference went: unmapped and closed at once

c = rx.ndarray((3, 3))
cycle = [c]
cycle.append(cycle)
del c, cycle
assert mapped() == 4096  # only a reference cycle holds it now
gc.collect()
assert mapped() == 0 and handles() == 0

d = rx.ndarray(10)
with PROCESS.lock:  # as if gc ran the finalizer in the middle of a stub call on this thread
    del d
    assert mapped() == 4096  # it waits for the call to be over, on a thread of its own
for _ in range(500):
    if mapped() == 0:
        break
    import time; time.sleep(0.01)
assert mapped() == 0 and handles() == 0

# Fork children: the array's finalizer there leaves the parent's mapping and handle alone.
e = rx.ndarray(4, "i4")
e[:] = 1
pid = rx.fork()  # copy-on-write: the child's array sees the contents, its writes stay its own
if pid == 0:
    ok = e.sum() == 4
    e[0] = 9
    del e
    gc.collect()
    os._exit(0 if ok else 1)
assert os.waitpid(pid, 0)[1] == 0 and e[0] == 1
pid = os.fork()  # a plain fork: the child has no rx mappings; dropping the array does nothing
if pid == 0:
    del e
    gc.collect()
    os._exit(0)
assert os.waitpid(pid, 0)[1] == 0
assert e.sum() == 4 and mapped() == 4096 and handles() == 1
print("ok")
"""


def test_the_mapping_lives_exactly_as_long_as_the_arrays(rxd: Rxd) -> None:
    assert rxd.run(LIFETIME).stdout.strip() == "ok"
    rxd.wait_idle()


TOKENS = """
import pickle
import numpy as np, rxkernel.client as rx

a = rx.ndarray((4, 4), "i8")
shared = rx.share(a)
first, second = pickle.dumps(shared), pickle.dumps(shared)
assert first != second  # every pickle exports a token of its own
b = pickle.loads(first)
b[2, 3] = 7
assert a[2, 3] == 7  # the same process may load one too: a second mapping of the VMO
try:
    pickle.loads(first)
except rx.RxError as e:
    assert e.name == "RX_ERR_NOT_FOUND", e
else:
    raise AssertionError("a token loaded twice")
assert (pickle.loads(second) == a).all()

r = a[1:].view()
r.flags.writeable = False
ro = pickle.loads(pickle.dumps(rx.share(r)))
assert not ro.flags.writeable and (ro == a[1:]).all()
try:
    ro.flags.writeable = True
except ValueError:
    pass
else:
    raise AssertionError("a read-only share became writable")
from rxkernel.client._ndarray import _owner_of
rights = rx.rx_object_get_info(_owner_of(ro).handle, rx.RX_INFO_HANDLE_BASIC)["rights"]
assert not rights & rx.RX_RIGHT_WRITE and rights & rx.RX_RIGHT_MAP, hex(rights)  # its handle cannot write either
me = rx.rx_process_self()
assert len(rx.rx_object_get_info(me, rx.RX_INFO_PROCESS_VMOS)) == 1  # a, b, the second load and ro: one VMO
print("ok")
"""


def test_tokens_are_one_time_and_read_only_arrays_share_read_only(rxd: Rxd) -> None:
    assert rxd.run(TOKENS).stdout.strip() == "ok"
    rxd.wait_idle()


def test_bad_input_is_refused_by_name() -> None:
    # None of these reach rxd: this process installs no trap.
    with pytest.raises(TypeError, match="shape"):
        rx.ndarray("10")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="shape"):
        rx.ndarray((2, True))
    with pytest.raises(ValueError, match="negative"):
        rx.ndarray((2, -1))
    with pytest.raises(TypeError, match="dtype"):
        rx.ndarray(3, "not-a-dtype")
    with pytest.raises(TypeError, match="Python objects"):
        rx.ndarray(3, object)
    with pytest.raises(ValueError, match="order"):
        rx.ndarray(3, order="K")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="more than a VMO"):
        rx.ndarray((1 << 30, 1 << 20))
    with pytest.raises(ValueError, match="not on rx memory"):
        rx.share(np.zeros(3))
    with pytest.raises(TypeError, match="numpy.ndarray"):
        rx.share([1, 2, 3])  # type: ignore[arg-type]


def test_without_numpy_the_error_names_numpy() -> None:
    code = "import sys; sys.modules['numpy'] = None\nimport rxkernel.client as rx\nrx.ndarray(3)"
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "ImportError: rx.ndarray and rx.share need NumPy" in result.stderr, result.stderr
