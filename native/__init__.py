"""rxkernel.native: the C core (cffi, out-of-line API mode).

The client side is the SIGSEGV trap that pages rx mappings in on demand, the mapping and store
tables it consults, the control thread that applies rxd's INVALIDATE/PROTECT, and the at-fork
reset; the server side is a few fallocate/pread/pwrite helpers for rxd's memfds. Every function's
contract is in rxnative.h.
"""

from rxkernel.native._rxnative import ffi as ffi, lib as lib

__all__ = ["ffi", "lib"]
