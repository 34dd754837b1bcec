"""Build the vDSO image (native/vdso/rxvdso.c) into a shared object: setup.py's build_ext calls
`build()` so the image lands beside the cffi extension, for `pip install .` and `pip install -e .`.

Flags and why: -nostdlib and -ffreestanding (no libc: nothing the client linked can matter, and no
NEEDED entry), no stack protector (it would need libc's canary), -z defs (any call into libc or
libgcc fails the link instead of the load), the version script (exactly the rx_* names exported),
-Bsymbolic (calls inside the image never go through the PLT), both hash styles (any loader).
"""

from __future__ import annotations

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
VDSO_DIR = os.path.join(HERE, "vdso")
SOURCES = [os.path.join(VDSO_DIR, n) for n in ("rxvdso.c", "rxvdso.h", "rxvvar.h", "rxvdso.map")]

CFLAGS = [
    "-O2", "-fPIC", "-shared", "-nostdlib", "-ffreestanding", "-fno-builtin", "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables", "-fno-plt", "-std=gnu11", "-Wall", "-Wextra", "-Werror",
]


def command(output: str, cc: str = "gcc", extra: list[str] | None = None) -> list[str]:
    return [
        cc, *CFLAGS, *(extra or []), f"-I{VDSO_DIR}", "-o", output, os.path.join(VDSO_DIR, "rxvdso.c"),
        f"-Wl,--version-script={os.path.join(VDSO_DIR, 'rxvdso.map')}", "-Wl,-Bsymbolic", "-Wl,--hash-style=both",
        "-Wl,-z,defs", "-Wl,-z,noexecstack", "-Wl,-soname,rxvdso.so",
    ]


def build(output: str, cc: str | None = None) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    subprocess.run(command(output, cc or os.environ.get("CC", "gcc")), check=True)


if __name__ == "__main__":
    build(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "rxvdso.so"))
