"""Compact per-page state: one byte per page in sparse 64 KiB chunks (ARCHITECTURE.md "Page state").

Linux spends 64 bytes of `struct page` per 4 KiB page; a PageMap spends one byte per page, and only
for the 256 MiB stretches of a VMO where any page was ever set. The bytes are in C memory
(native/server/pagemap.c) so that rxd's C side can read the same state Python keeps; counts and
runs are found there, so scanning a 512-page fault window is one call, not 512 Python steps. A
ChargeMap keeps its group slots in one too (bytes 1..255 instead of a set's 1).
"""

from __future__ import annotations

import errno
from collections.abc import Iterator

from rxkernel.native import ffi, lib

from ._runs import Runs

CHUNK_SHIFT = 16
CHUNK_PAGES = 1 << CHUNK_SHIFT
_RUNS_PER_CALL = 64
_RUN_BUFFER = ffi.new("uint64_t[]", 3 * _RUNS_PER_CALL)  # rxd's trio thread reuses it
_HISTOGRAM = ffi.new("uint64_t[256]")  # (so does histogram)


class PageMap:
    """A set of page indices in [0, 2**40 / 4096), with counts and runs over ranges. The bytes
    live in C (native/server/pagemap.c), where rxd's C side can read them too; `handle` is the
    map's C pointer."""

    __slots__ = ("handle",)

    def __init__(self) -> None:
        handle = lib.rx_pagemap_new()
        if handle == ffi.NULL:
            raise MemoryError("rxd could not allocate a page map")
        self.handle = ffi.gc(handle, lib.rx_pagemap_free)

    @property
    def count_set(self) -> int:
        """The number of set pages over all chunks."""
        return int(self.handle.count_set)

    @property
    def memory_bytes(self) -> int:
        return int(self.handle.allocated) * CHUNK_PAGES

    def get(self, page: int) -> bool:
        return bool(lib.rx_pagemap_get(self.handle, page))

    def count(self, start: int, end: int) -> int:
        """How many pages in [start, end) are set."""
        return int(lib.rx_pagemap_count(self.handle, start, end))

    def set_range(self, start: int, end: int, value: bool) -> int:
        """Set or clear [start, end); returns how many pages changed state."""
        return self.fill(start, end, 1 if value else 0)

    def fill(self, start: int, end: int, value: int) -> int:
        """Set [start, end) to byte `value` (1..255; a ChargeMap's slots), or clear it (0);
        returns how many pages went from clear to set or back."""
        changed = int(lib.rx_pagemap_set_range(self.handle, start, end, value))
        if changed < 0:
            if changed == -errno.ENOMEM:
                raise MemoryError("rxd could not allocate a page map chunk")
            raise ValueError(f"pages [{start}, {end}) or value {value} are outside a page map")
        return changed

    def histogram(self, start: int, end: int) -> list[int]:
        """How many pages of [start, end) hold each byte value (256 counts)."""
        lib.rx_pagemap_histogram(self.handle, start, end, _HISTOGRAM)
        return ffi.unpack(_HISTOGRAM, 256)  # type: ignore[no-any-return]

    def value_runs(self, start: int, end: int) -> Iterator[tuple[int, int, int]]:
        """Maximal runs (run_start, run_end, byte value) covering [start, end) in order."""
        while start < end:
            batch = self._batch(start, end)
            yield from batch
            if len(batch) < _RUNS_PER_CALL:
                return
            start = batch[-1][1]

    def _batch(self, start: int, end: int) -> list[tuple[int, int, int]]:
        """The runs of [start, end) from one call into C: all of them, or the first
        _RUNS_PER_CALL (the last one's end is where the next batch starts)."""
        n = lib.rx_pagemap_runs(self.handle, start, end, _RUN_BUFFER, _RUNS_PER_CALL)
        if n == 1:  # the common case: a window in one state
            return [(_RUN_BUFFER[0], _RUN_BUFFER[1], _RUN_BUFFER[2])]
        v = ffi.unpack(_RUN_BUFFER, 3 * n)  # copied out: the buffer is shared (rxd's one thread)
        return list(zip(v[0::3], v[1::3], v[2::3]))

    def runs(self, start: int, end: int) -> Iterator[tuple[int, int, bool]]:
        """Maximal runs (run_start, run_end, is_set) covering [start, end) in order."""
        while start < end:
            batch = self._batch(start, end)
            for s, e, v in batch:
                yield s, e, bool(v)
            if len(batch) < _RUNS_PER_CALL:
                return
            start = batch[-1][1]

    def runs_of(self, start: int, end: int, value: bool = True) -> Runs:
        """The runs of [start, end) that are set (or, with value False, clear)."""
        out: Runs = []
        want = 1 if value else 0
        while start < end:
            batch = self._batch(start, end)
            out += [(s, e) for s, e, v in batch if v == want]
            if len(batch) < _RUNS_PER_CALL:
                break
            start = batch[-1][1]
        return out
