"""What every layer of rxd builds on: reference-counted kernel objects and locks whose holding is
checked (ARCHITECTURE.md "Locks"), fields kept in C for the fault thread. Knows nothing of memory, processes or the protocol."""

from ._locks import CHECK_LOCKS as CHECK_LOCKS
from ._locks import FastLock as FastLock
from ._locks import requires_lock as requires_lock
from ._mirrored import MirroredBool as MirroredBool
from ._mirrored import MirroredInt as MirroredInt
from ._mirrored import MirroredLimit as MirroredLimit
from ._refcount import KernelObject as KernelObject
from ._sleepers import Sleepers as Sleepers
from ._sleepers import hung_up as hung_up
