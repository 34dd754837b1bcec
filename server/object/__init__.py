"""Kernel objects: the kernel's registries, processes and their handle tables, futexes, export
tokens and fork tickets, the vDSO (ARCHITECTURE.md "Layers"). Below the syscalls, above vm/."""

from ._handles import MAX_HANDLES_PER_PROCESS as MAX_HANDLES_PER_PROCESS
from ._handles import Handle as Handle
from ._handles import HandleTable as HandleTable
from ._job import Job as Job
from ._kernel import Kernel as Kernel
from ._kernel import SystemResource as SystemResource
from ._process import Process as Process
from ._tokens import ForkEntry as ForkEntry
