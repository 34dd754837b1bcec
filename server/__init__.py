"""rxkernel.server: the Trio daemon `rxd` (processes, handles, VMOs, page stores, address spaces,
fault resolution, coherence, statistics). Start it with the `rxd` command or `run()`."""

from ._kernel import Kernel as Kernel
from ._main import main as main
from ._main import parse_size as parse_size
from ._main import run as run
from ._server import Server as Server
