"""Kernel objects: what a handle, a mapping or an export token can keep alive (ARCHITECTURE.md).

An object lives while anything refers to it; the last reference going runs `_on_zero_refs`
synchronously, so what it frees is uncounted the moment the last handle closes.
"""

from __future__ import annotations


class KernelObject:
    """Base of everything a handle can name. Subclasses set `obj_type` and free themselves in
    `_on_zero_refs` once `refs` falls to zero."""

    obj_type = 0
    type_name = "object"

    def __init__(self, koid: int) -> None:
        self.koid = koid
        self.refs = 0  # invariant: handles + mappings + unclaimed tokens naming this object

    def add_ref(self) -> None:
        self.refs += 1

    def drop_ref(self) -> None:
        assert self.refs > 0, self
        self.refs -= 1
        if self.refs == 0:
            self._on_zero_refs()

    def _on_zero_refs(self) -> None:
        pass
