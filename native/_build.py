"""cffi out-of-line API build of rxkernel.native._rxnative (setup.py: cffi_modules).

Layout (each .c file says at its top what it owns):
  include/  the public headers; the declarations cffi sees are the blocks between the cdef
            markers of each of them, so a header stays the single place where its part of the
            C API and its contracts are written down. rxwire.h (the wire constants) has no such
            block: cffi gets `#define NAME ...` for each of its RX_* macros and reads the values
            from the compiled header
  client/   what runs in every rx client process (the trap, its tables, the control thread, ...)
  server/   what only rxd calls (store I/O, cache ops, the vvar writer, page maps, the fault
            fast path)
  common/   what both sides use (the msgpack codec)
  vdso/     the vDSO image (not part of this extension: _build_vdso.py)
  pyext/    the _rxlock CPython type (setup.py)
The extension is every .c file of client/, server/ and common/.
"""

from __future__ import annotations

import glob
import os
import re

import cffi

_HERE = os.path.dirname(os.path.abspath(__file__))
_INCLUDE = os.path.join(_HERE, "include")
# The public headers, rxwire and rxnative first (the wire constants, the conventions), then the
# others by name.
_FIRST = ["rxwire", "rxnative"]


def _headers() -> list[str]:
    names = sorted(os.path.basename(p)[:-2] for p in glob.glob(os.path.join(_INCLUDE, "rx*.h")))
    return [*_FIRST, *(n for n in names if n not in _FIRST)]


def _sources() -> list[str]:
    paths = sorted(p for part in ("client", "server", "common") for p in glob.glob(os.path.join(_HERE, part, "*.c")))
    # setuptools rejects absolute source paths; relative to the cwd works from any directory.
    return [os.path.relpath(p) for p in paths]


# An object-like macro: the name is followed by blanks and a value, not by "(".
_WIRE_MACRO = re.compile(r"^#define\s+(RX_[A-Z0-9_]+)[ \t]+\S", re.MULTILINE)


def _wire_names(text: str) -> list[str]:
    """The constants of include/rxwire.h, in order."""
    return _WIRE_MACRO.findall(text)


def _cdef(header: str) -> str:
    with open(header, encoding="utf-8") as f:
        text = f.read()
    if os.path.basename(header) == "rxwire.h":
        # No cdef block: every constant is exposed, cffi reading its value from the header.
        return "".join(f"#define {name} ...\n" for name in _wire_names(text))
    begin = text.index("/* cdef-begin */") + len("/* cdef-begin */")
    end = text.index("/* cdef-end */")
    return text[begin:end]


_HEADERS = _headers()
ffibuilder = cffi.FFI()
ffibuilder.cdef("\n".join(_cdef(os.path.join(_INCLUDE, f"{h}.h")) for h in _HEADERS))
ffibuilder.set_source(
    "rxkernel.native._rxnative",
    "\n".join(f'#include "{h}.h"' for h in _HEADERS),
    sources=_sources(),
    include_dirs=[_INCLUDE, _HERE],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=gnu11"],
    libraries=["pthread", "dl"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
