"""NumPy arrays on rx memory, and handing them to other processes without a copy.

    a = rx.ndarray((1024, 1024), "f4")    # zeros, on a fresh VMO mapped read/write
    conn.send(rx.share(a))                # pickles an export token, not the data
    b = conn.recv()                       # the other process: an ndarray on the same pages

An rx array is a plain numpy.ndarray whose memory is an rx mapping. Its `.base` chain ends in
an owner object that holds the VMO handle and the mapping; numpy keeps the owner alive as long
as the array, any view of it, or any buffer exported from them, and when the last of those goes
the mapping is unmapped and the handle closed. Pickling a plain ndarray copies its bytes, as it
always does; `rx.share(arr)` wraps one whose pickle carries a fresh one-time export token and
the array's layout instead, and unpickles (in any process connected to the same rxd) as an
ndarray on the same memory.
"""

from __future__ import annotations

import operator
import threading
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from rxkernel.proto import (
    PAGE_SIZE,
    RX_DEFAULT_VMO_RIGHTS,
    RX_RIGHT_WRITE,
    RX_VM_PERM_READ,
    RX_VM_PERM_WRITE,
    RX_VMO_MAX_SIZE,
    RxError,
)

from . import _stubs
from ._connection import RxConnection
from ._process import PROCESS, LocalMapping

if TYPE_CHECKING:
    import numpy
    import numpy.typing as npt


def _numpy() -> Any:
    try:
        import numpy
    except ImportError as e:
        raise ImportError("rx.ndarray and rx.share need NumPy, which is not installed (pip install numpy)") from e
    return numpy


class _RxMemory:
    """One VMO mapped once: the object at the end of an rx array's `.base` chain. numpy holds it
    through `__array_interface__`; when the last array goes, the finalizer unmaps and closes."""

    __slots__ = ("__weakref__", "addr", "finalizer", "handle", "length", "rights", "writable")

    def __init__(self, handle: int, rights: int, length: int, writable: bool) -> None:
        perms = RX_VM_PERM_READ | (RX_VM_PERM_WRITE if writable else 0)
        self.addr = _stubs.rx_vmar_map(handle, 0, length, perms)  # on failure the caller closes the handle
        self.handle, self.rights, self.length, self.writable = handle, rights, length, writable
        with PROCESS.lock:
            record = PROCESS.find(self.addr, length)[0]
            connection = PROCESS.connection
        assert connection is not None
        self.finalizer = weakref.finalize(self, _release, handle, self.addr, length, record, connection)
        self.finalizer.atexit = False  # at exit rxd frees all of it when our connection closes

    @property
    def __array_interface__(self) -> dict[str, Any]:
        return {"version": 3, "shape": (self.length,), "typestr": "|u1", "data": (self.addr, not self.writable)}

    def flat(self) -> npt.NDArray[numpy.uint8]:
        """The whole mapping as bytes; its .base is this object."""
        flat: npt.NDArray[numpy.uint8] = _numpy().asarray(self)
        return flat


def _release(handle: int, addr: int, length: int, record: LocalMapping, connection: RxConnection) -> None:
    """The owner is gone. gc may run this anywhere, even inside a stub call on this thread (which
    holds the process lock or the main channel's): then a thread of its own does it once the call
    is over, instead of deadlocking or cutting the mapping records in the middle of a change."""
    if PROCESS.call_in_progress_here():
        try:
            threading.Thread(target=_release_now, args=(handle, addr, length, record, connection), daemon=True,
                             name="rx-ndarray-release").start()
        except RuntimeError:
            pass  # no new threads at interpreter shutdown: rxd frees it all when the connection closes
    else:
        _release_now(handle, addr, length, record, connection)


def _release_now(handle: int, addr: int, length: int, record: LocalMapping, connection: RxConnection) -> None:
    with PROCESS.lock:
        # Only what is still ours: after rx.disconnect(), a reconnect or a fork, the range and
        # the handle value may belong to someone else now (rxd freed ours with the connection).
        found = PROCESS.find(addr, length)
        ours = len(found) == 1 and found[0] is record
        live = PROCESS.connection is connection and not connection.closed
        try:
            if ours and live and not record.lost:
                _stubs.rx_vmar_unmap(addr, length)
            elif ours:
                _stubs._forget_local(addr, length)  # rxd's side went with the connection
            if live:
                _stubs.rx_handle_close(handle)
        except RxError:
            pass  # rxd went away meanwhile: it freed both


def _shape_of(shape: int | Sequence[int]) -> tuple[int, ...]:
    dims: list[int] = []
    for d in (shape,) if not isinstance(shape, Sequence) else shape:
        if isinstance(d, bool):
            raise TypeError(f"rx.ndarray: shape must be an int or a sequence of ints, not {shape!r}")
        try:
            dims.append(operator.index(d))
        except TypeError:
            raise TypeError(f"rx.ndarray: shape must be an int or a sequence of ints, not {shape!r}") from None
    if any(d < 0 for d in dims):
        raise ValueError(f"rx.ndarray: shape {tuple(dims)} has a negative dimension")
    return tuple(dims)


def ndarray(shape: int | Sequence[int], dtype: npt.DTypeLike = float, *, order: Literal["C", "F"] = "C") -> npt.NDArray[Any]:
    """A numpy.ndarray of `shape` and `dtype` (default float64) on a fresh VMO of its size
    rounded up to pages, mapped read/write: zeros, like numpy.zeros, committing pages on first
    write. The array (and every view of it) keeps the mapping alive through its .base chain;
    when the last one goes, the mapping is unmapped and the VMO's handle closed. Hand it to
    another process with rx.share(arr). Needs NumPy; object dtypes are refused (pointers mean
    nothing in another process)."""
    np = _numpy()
    dims = _shape_of(shape)
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"rx.ndarray: not a dtype: {dtype!r} ({e})") from None
    if dt.hasobject:
        raise TypeError(f"rx.ndarray: dtype {dt} holds Python objects, which cannot live in shared memory")
    if order not in ("C", "F"):
        raise ValueError(f"rx.ndarray: order must be 'C' or 'F', not {order!r}")
    nbytes = dt.itemsize
    for d in dims:
        nbytes *= d
    length = max(PAGE_SIZE, -(-nbytes // PAGE_SIZE) * PAGE_SIZE)
    if length > RX_VMO_MAX_SIZE:
        raise ValueError(f"rx.ndarray: {dims} of {dt} is {nbytes} bytes, more than a VMO holds ({RX_VMO_MAX_SIZE})")
    handle = _stubs.rx_vmo_create(length)
    try:
        owner = _RxMemory(handle, RX_DEFAULT_VMO_RIGHTS, length, writable=True)
    except BaseException:
        _stubs.rx_handle_close(handle)
        raise
    arr: npt.NDArray[Any] = np.ndarray(dims, dt, buffer=owner.flat(), order=order)
    return arr


def _owner_of(arr: Any) -> _RxMemory | None:
    base = arr
    while base is not None and not isinstance(base, _RxMemory):
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    return base


class SharedArray:
    """An rx array on its way to another process: rx.share(arr). Pickling it exports a fresh
    one-time token for the array's VMO (read-only if the array is) and sends that with the
    array's dtype, shape, strides and offset, never the data; unpickling, in any process
    connected to the same rxd, imports the token and gives a numpy.ndarray on the same memory
    (writes on either side are seen on the other). Pickle it once per receiver: each pickle is
    one token, spent by the first load. A token nobody loads holds the VMO in rxd until this
    process exits, and a token dies with this process: keep it alive until the receiver has
    loaded it. `array` is the array itself (this object keeps it alive)."""

    __slots__ = ("_offset", "_owner", "array")

    def __init__(self, array: npt.NDArray[Any], owner: _RxMemory, offset: int) -> None:
        self.array = array
        self._owner = owner
        self._offset = offset

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        owner, arr = self._owner, self.array
        writable = bool(arr.flags.writeable) and owner.writable
        rights = owner.rights if writable else owner.rights & ~RX_RIGHT_WRITE
        token = _stubs.rx_handle_export(owner.handle, rights)
        return (_rebuild, (token, rights, owner.length, self._offset, arr.shape, arr.strides, arr.dtype, writable))

    def __repr__(self) -> str:
        return f"<rx.SharedArray {self.array.shape} {self.array.dtype} on VMO handle {self._owner.handle:#x}>"


def share(arr: npt.NDArray[Any]) -> SharedArray:
    """Wrap an array made by rx.ndarray (or any view of one: a slice, a transpose, a .view of
    another dtype) so that pickling carries its VMO instead of its bytes: `pickle.loads` in a
    process connected to the same rxd gives an ndarray on the same memory, zero copy both
    sides. TypeError for what is not an ndarray, ValueError for an array not on rx memory."""
    np = _numpy()
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"rx.share: expected a numpy.ndarray made by rx.ndarray, not {type(arr).__name__}")
    owner = _owner_of(arr)
    if owner is None:
        raise ValueError("rx.share: this array is not on rx memory; make it with rx.ndarray(shape, dtype) "
                         "(rx.ndarray(a.shape, a.dtype)[...] = a copies one in)")
    data = int(arr.__array_interface__["data"][0])
    lo = hi = data
    for n, stride in zip(arr.shape, arr.strides):
        if n > 0:
            lo, hi = lo + min(0, stride * (n - 1)), hi + max(0, stride * (n - 1))
    if arr.size and not (owner.addr <= lo and hi + arr.itemsize <= owner.addr + owner.length):
        raise ValueError("rx.share: the array's memory is not inside its rx mapping")  # not made by numpy
    return SharedArray(arr, owner, data - owner.addr if arr.size else 0)


def _rebuild(token: str, rights: int, length: int, offset: int, shape: tuple[int, ...], strides: tuple[int, ...],
             dtype: numpy.dtype[Any], writable: bool) -> npt.NDArray[Any]:
    """Unpickling a SharedArray: claim the token, map the VMO, lay the array out as it was."""
    np = _numpy()
    handle = _stubs.rx_handle_import(token)
    try:
        owner = _RxMemory(handle, rights, length, writable)
    except BaseException:
        _stubs.rx_handle_close(handle)
        raise
    arr: npt.NDArray[Any] = np.ndarray(shape, dtype, buffer=owner.flat(), offset=offset, strides=strides)
    return arr
