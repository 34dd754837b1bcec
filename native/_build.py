"""cffi out-of-line API build of rxkernel.native._rxnative (setup.py: cffi_modules).

The declarations cffi sees are the block of rxnative.h between the cdef markers, so the header
stays the single place where the C API and its contracts are written down.
"""

from __future__ import annotations

import os

import cffi

_HERE = os.path.dirname(os.path.abspath(__file__))
_HEADER = os.path.join(_HERE, "rxnative.h")
_SOURCE = os.path.join(_HERE, "rxnative.c")


def _cdef() -> str:
    with open(_HEADER, encoding="utf-8") as f:
        text = f.read()
    begin = text.index("/* cdef-begin */") + len("/* cdef-begin */")
    end = text.index("/* cdef-end */")
    return text[begin:end]


ffibuilder = cffi.FFI()
ffibuilder.cdef(_cdef())
ffibuilder.set_source(
    "rxkernel.native._rxnative",
    '#include "rxnative.h"',
    # setuptools rejects absolute source paths; relative to the cwd works from any directory.
    sources=[os.path.relpath(_SOURCE)],
    include_dirs=[_HERE],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=gnu11"],
    libraries=["pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
