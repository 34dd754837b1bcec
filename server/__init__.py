"""rxkernel.server: the Trio daemon `rxd`. Start it with the `rxd` command or `run()`.

Layers, top to bottom, each importing only those below it (ARCHITECTURE.md; import-linter checks
it): _main (the command line) → ipc (serving the protocol) → syscalls (validation, one file per
object kind) → object (kernel registries, processes, handles, futexes, vDSO) → vm (VMOs, trees,
page stores, physical memory, mappings, faults, shootdowns) → base (ref counts, locks).
"""

from ._main import main as main
from ._main import parse_size as parse_size
from ._main import run as run
from .ipc import Server as Server
from .object import Kernel as Kernel
