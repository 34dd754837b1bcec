"""Pythonic wrappers over the stubs: thin, and sharing the stubs' code.

    with Vmo(64 << 20) as vmo, vmo.map() as m:
        m.view[0:5] = b"hello"
        numpy.frombuffer(m.view, dtype=numpy.uint32)
"""

from __future__ import annotations

from typing import Any

from rxkernel.proto import (
    RX_ERR_BAD_HANDLE,
    RX_INFO_VMO,
    RX_RIGHT_SAME_RIGHTS,
    RX_VM_PERM_READ,
    RX_VM_PERM_WRITE,
    RX_VMAR_OP_COMMIT,
    RX_VMO_CHILD_SNAPSHOT,
    RX_VMO_OP_COMMIT,
    RX_VMO_OP_DECOMMIT,
    RX_VMO_OP_ZERO,
    RxError,
)

from . import _stubs


class Vmo:
    """An owned VMO handle. Closing it (or leaving the `with`) closes the handle; mappings made
    from it keep the VMO alive until they are unmapped."""

    def __init__(self, size: int = 0, options: int = 0, *, handle: int | None = None) -> None:
        self._handle = _stubs.rx_vmo_create(size, options) if handle is None else handle

    @property
    def handle(self) -> int:
        """The handle value; using a closed Vmo is RX_ERR_BAD_HANDLE with words that say so."""
        if not self._handle:
            raise RxError(RX_ERR_BAD_HANDLE, "the Vmo is closed (its handle was closed with close() or by leaving `with`)")
        return self._handle

    @classmethod
    def import_token(cls, token: str) -> Vmo:
        """A Vmo for the handle an export token names (rx_handle_import; each token is claimed once)."""
        return cls(handle=_stubs.rx_handle_import(token))

    def __enter__(self) -> Vmo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True once close() ran (or the `with` ended)."""
        return not self._handle

    def close(self) -> None:
        """Close the handle (again is a no-op). Mappings made from it stay valid until unmapped."""
        if self._handle:
            handle, self._handle = self._handle, 0
            _stubs.rx_handle_close(handle)

    @property
    def size(self) -> int:
        """The VMO's size in bytes (rx_vmo_get_size); set it to resize one created with RX_VMO_RESIZABLE."""
        return _stubs.rx_vmo_get_size(self.handle)

    @size.setter
    def size(self, size: int) -> None:
        _stubs.rx_vmo_set_size(self.handle, size)

    def read(self, offset: int, length: int) -> bytes:
        """`length` bytes from `offset` (rx_vmo_read; READ right). Pages nobody wrote read as zero."""
        return _stubs.rx_vmo_read(self.handle, offset, length)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write `data` at `offset` (rx_vmo_write; WRITE right), committing the pages it touches."""
        _stubs.rx_vmo_write(self.handle, offset, data)

    def commit(self, offset: int, size: int) -> None:
        """Commit [offset, offset+size) now (RX_VMO_OP_COMMIT), so later touches do not allocate."""
        _stubs.rx_vmo_op_range(self.handle, RX_VMO_OP_COMMIT, offset, size)

    def decommit(self, offset: int, size: int) -> None:
        """Free the committed pages of [offset, offset+size) (RX_VMO_OP_DECOMMIT); they read as zero again."""
        _stubs.rx_vmo_op_range(self.handle, RX_VMO_OP_DECOMMIT, offset, size)

    def zero(self, offset: int, size: int) -> None:
        """Make [offset, offset+size) read as zero (RX_VMO_OP_ZERO), freeing whole pages."""
        _stubs.rx_vmo_op_range(self.handle, RX_VMO_OP_ZERO, offset, size)

    def op_range(self, op: int, offset: int, size: int) -> None:
        """Any rx_vmo_op_range op, e.g. RX_VMO_OP_CACHE_CLEAN (READ right) or
        RX_VMO_OP_CACHE_INVALIDATE (WRITE right) on bytes [offset, offset+size)."""
        _stubs.rx_vmo_op_range(self.handle, op, offset, size)

    def child(self, options: int = RX_VMO_CHILD_SNAPSHOT, offset: int = 0, size: int | None = None) -> Vmo:
        """A child VMO (rx_vmo_create_child): by default a snapshot of the whole VMO."""
        return Vmo(handle=_stubs.rx_vmo_create_child(self.handle, options, offset, self.size - offset if size is None else size))

    def info(self) -> dict[str, Any]:
        """RX_INFO_VMO: size, committed bytes (own, private, shared, scaled), mappings, flags, rights."""
        info: dict[str, Any] = _stubs.rx_object_get_info(self.handle, RX_INFO_VMO)
        return info

    def export(self, rights: int = RX_RIGHT_SAME_RIGHTS) -> str:
        """A one-time token another process turns into a handle with rx_handle_import (rights at most this handle's)."""
        return _stubs.rx_handle_export(self.handle, rights)

    def duplicate(self, rights: int = RX_RIGHT_SAME_RIGHTS) -> Vmo:
        """A second Vmo on the same VMO with `rights` (rx_handle_duplicate; DUPLICATE right)."""
        return Vmo(handle=_stubs.rx_handle_duplicate(self.handle, rights))

    def map(
        self, perms: int = RX_VM_PERM_READ | RX_VM_PERM_WRITE, offset: int = 0, length: int | None = None, options: int = 0
    ) -> Mapping:
        """Map [offset, offset+length) of the VMO (default: all of it, read/write) into this process; returns a Mapping."""
        length = self.size - offset if length is None else length
        return Mapping(_stubs.rx_vmar_map(self.handle, offset, length, perms, options), length)


class Mapping:
    """A live mapping. `view` is a memoryview of it (writable if the mapping is); on Python 3.12+
    the object itself supports the buffer protocol too."""

    def __init__(self, addr: int, length: int) -> None:
        self.addr = addr
        self.length = length
        self.view = _stubs.rx_view(addr, length)

    def __enter__(self) -> Mapping:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unmap()

    def __buffer__(self, flags: int) -> memoryview:
        return self.view

    def __len__(self) -> int:
        return self.length

    def protect(self, perms: int) -> None:
        """Change the mapping's permissions (rx_vmar_protect); `view` is remade to match."""
        _stubs.rx_vmar_protect(self.addr, self.length, perms)
        self.view = _stubs.rx_view(self.addr, self.length)

    def prefault(self) -> None:
        """Commit and map every page now (RX_VMAR_OP_COMMIT), so touches do not fault."""
        _stubs.rx_vmar_op_range(self.addr, self.length, RX_VMAR_OP_COMMIT)

    def unmap(self) -> None:
        """Unmap it (rx_vmar_unmap) and release `view`; again is a no-op."""
        if self.length:
            self.view.release()
            _stubs.rx_vmar_unmap(self.addr, self.length)
            self.length = 0
