"""cffi out-of-line API build of rxkernel.native._rxnative (setup.py: cffi_modules).

The extension is every `native/rx*.c` unit; the declarations cffi sees are the blocks between the
cdef markers of the matching `rx*.h` headers, so each header stays the single place where its
part of the C API and its contracts are written down.
"""

from __future__ import annotations

import glob
import os

import cffi

_HERE = os.path.dirname(os.path.abspath(__file__))


def _units() -> list[str]:
    """rxnative first (it defines the shared conventions), then the others by name."""
    names = sorted(os.path.basename(p)[:-2] for p in glob.glob(os.path.join(_HERE, "rx*.c")))
    names.remove("rxnative")
    return ["rxnative", *names]


def _cdef(header: str) -> str:
    with open(header, encoding="utf-8") as f:
        text = f.read()
    begin = text.index("/* cdef-begin */") + len("/* cdef-begin */")
    end = text.index("/* cdef-end */")
    return text[begin:end]


_UNITS = _units()
ffibuilder = cffi.FFI()
ffibuilder.cdef("\n".join(_cdef(os.path.join(_HERE, f"{u}.h")) for u in _UNITS))
ffibuilder.set_source(
    "rxkernel.native._rxnative",
    "\n".join(f'#include "{u}.h"' for u in _UNITS),
    # setuptools rejects absolute source paths; relative to the cwd works from any directory.
    sources=[os.path.relpath(os.path.join(_HERE, f"{u}.c")) for u in _UNITS],
    include_dirs=[_HERE],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=gnu11"],
    libraries=["pthread", "dl"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
