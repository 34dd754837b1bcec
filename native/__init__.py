"""rxkernel.native: the C core (cffi, out-of-line API mode).

The client side is the SIGSEGV trap that pages rx mappings in on demand, the mapping and store
tables it consults, the control thread that applies rxd's INVALIDATE/PROTECT, the at-fork
reset, and the vDSO loader (rxvdso_loader.h); the server side is a few fallocate/pread/pwrite
helpers for rxd's memfds and the vvar writer (rxvvar_writer.h). Every function's contract is in
its header.

VDSO_IMAGE is the vDSO image built at install time (native/vdso/, native/_build_vdso.py). Only
rxd reads it: clients load the copy rxd sends them.
"""

import os as _os

from rxkernel.native._rxnative import ffi as ffi, lib as lib

VDSO_IMAGE = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "rxvdso.so")
VDSO_HEADER_DIR = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "vdso")

__all__ = ["ffi", "lib", "VDSO_IMAGE", "VDSO_HEADER_DIR"]
