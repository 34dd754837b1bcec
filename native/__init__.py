"""rxkernel.native: the C core (cffi, out-of-line API mode).

The client side (native/client/) is the SIGSEGV trap that pages rx mappings in on demand, the
mapping and store tables it consults, the control thread that applies rxd's INVALIDATE/PROTECT,
the at-fork reset, the sync-object atomics (rxsync.h) and the vDSO loader (rxvdso_loader.h); the
server side (native/server/) is rxd's store I/O (rxstoreio.h), cache maintenance (rxcache.h) and
the vvar writer (rxvvar_writer.h). Every function's contract is in its header (native/include/);
the constants shared with rxkernel.proto are in rxwire.h and are attributes of `lib` too
(lib.RX_ERR_NO_MEMORY, lib.RX_CONTROL_INVALIDATE, ...).

VDSO_IMAGE is the vDSO image built at install time (native/vdso/, native/_build_vdso.py). Only
rxd reads it: clients load the copy rxd sends them.
"""

import os as _os

from rxkernel.native._rxnative import ffi as ffi, lib as lib

VDSO_IMAGE = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "rxvdso.so")
VDSO_HEADER_DIR = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "vdso")

__all__ = ["ffi", "lib", "VDSO_IMAGE", "VDSO_HEADER_DIR"]
