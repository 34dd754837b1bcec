"""Fields kept in C memory, for rxd's fault thread (ARCHITECTURE.md "The fault fast path").

An object whose state the fault thread reads keeps those fields in its C struct, `ff` (a cffi
struct of native/include/rxfastfault.h), and nowhere else, so there is no copy to keep in step.
These descriptors are the fields' Python face: `length = MirroredInt("length")` reads and writes
`self.ff.length`; `via` names an attribute whose `ff` holds the field instead (a process keeps
its fields in its address space's struct). MirroredLimit maps None to the C side's -1.
"""

from __future__ import annotations

from typing import Any


class _Mirrored:
    __slots__ = ("_field", "_via")

    def __init__(self, field: str, via: str | None = None) -> None:
        self._field = field
        self._via = via

    def _struct(self, obj: object) -> Any:
        return getattr(obj if self._via is None else getattr(obj, self._via), "ff")

    def _read(self, obj: object) -> int:
        return int(getattr(self._struct(obj), self._field))

    def _write(self, obj: object, value: int) -> None:
        setattr(self._struct(obj), self._field, value)


class MirroredInt(_Mirrored):
    def __get__(self, obj: object, owner: type | None = None) -> int:
        return self._read(obj)

    def __set__(self, obj: object, value: int) -> None:
        self._write(obj, value)


class MirroredBool(_Mirrored):
    def __get__(self, obj: object, owner: type | None = None) -> bool:
        return bool(self._read(obj))

    def __set__(self, obj: object, value: bool) -> None:
        self._write(obj, int(value))


class MirroredLimit(_Mirrored):
    """A limit in pages, None for none (-1 in C)."""

    def __get__(self, obj: object, owner: type | None = None) -> int | None:
        value = self._read(obj)
        return None if value < 0 else value

    def __set__(self, obj: object, value: int | None) -> None:
        self._write(obj, -1 if value is None else value)
