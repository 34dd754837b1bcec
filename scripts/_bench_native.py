"""The benchmarks' C baselines (scripts/bench_native.c), built on demand: not part of rxkernel.

load() returns the cffi module (`.lib`, `.ffi`), compiling it first when no build of the current
sources exists. Builds are cached in build/bench-native/ under the project root, one per hash of
the sources and the Python that builds them, so editing bench_native.c (or the rxsync.c it links)
rebuilds and nothing stale is ever loaded. Each build happens in a private directory and is
renamed into place, so processes that load at the same moment do not trip over each other.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import sys
import tempfile
from types import ModuleType

import cffi

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "scripts", "bench_native.c")
NATIVE = os.path.join(ROOT, "native")
# rxsync.c gives the Mutex baseline the library's own trylock/unlock; wire.c (over the msgpack
# codec) the round trip's socket I/O (send_all), so the C baseline sends the way the fault
# channels do.
# call.c and rxvdso_loader.c the C rx clients' round trip and vDSO, as the library has them.
LINKED = [os.path.join(NATIVE, *p) for p in (("client", "rxsync.c"), ("client", "wire.c"), ("client", "call.c"),
                                             ("client", "rxvdso_loader.c"), ("common", "msgpack.c"))]
HEADERS = [*(os.path.join(NATIVE, "include", h) for h in ("rxsync.h", "rxwire.h", "rxmsgpack.h", "rxcall.h", "rxvdso_loader.h")),
           os.path.join(NATIVE, "vdso", "rxvvar.h"),
           os.path.join(NATIVE, "client", "internal.h")]
CACHE = os.path.join(ROOT, "build", "bench-native")
CFLAGS = ["-O2", "-Wall", "-Wextra", "-std=gnu11"]


def _cdef() -> str:
    with open(SOURCE, encoding="utf-8") as f:
        text = f.read()
    return text[text.index("/* cdef-begin */") + len("/* cdef-begin */") : text.index("/* cdef-end */")]


def _module_name() -> str:
    digest = hashlib.sha256()
    for path in [SOURCE, *LINKED, *HEADERS, os.path.abspath(__file__)]:
        with open(path, "rb") as f:
            digest.update(path.encode() + b"\0" + f.read() + b"\0")
    digest.update(f"{sys.version} {cffi.__version__} {CFLAGS}".encode())
    return f"_rxbench_{digest.hexdigest()[:16]}"


def _suffix() -> str:
    return importlib.machinery.EXTENSION_SUFFIXES[0]


def build() -> str:
    """Compile the module unless this build exists; the path of its shared object."""
    name = _module_name()
    target = os.path.join(CACHE, name + _suffix())
    if os.path.exists(target):
        return target
    os.makedirs(CACHE, exist_ok=True)
    ffi = cffi.FFI()
    ffi.cdef(_cdef())
    # The declarations are the whole preamble: bench_native.c compiles as its own unit, as the
    # library's files do, not inside cffi's generated file.
    ffi.set_source(name, "#include <stdint.h>\n" + _cdef(), sources=[SOURCE, *LINKED],
                   include_dirs=[os.path.join(NATIVE, "include"), os.path.join(NATIVE, "client"), NATIVE], extra_compile_args=CFLAGS, libraries=["pthread", "dl"])
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        built = ffi.compile(tmpdir=tmp)
        os.replace(built, target)
    for old in os.listdir(CACHE):  # builds of older sources (unlinking a loaded one is harmless)
        if old.startswith("_rxbench_") and old != os.path.basename(target):
            os.unlink(os.path.join(CACHE, old))
    return target


def load() -> ModuleType:
    """The compiled module (built first if needed): `load().lib.rx_bench_anon_first_touch(...)`."""
    path = build()
    name = os.path.basename(path).split(".", 1)[0]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


if __name__ == "__main__":
    print(build())
