"""The syscall layer: one handler per entry of proto's table, one file per object kind, as
Zircon's lib/syscalls/ (ARCHITECTURE.md "Layers"). Each handler says which semantics it
implements, validates every argument before it touches state, and raises RxError for the caller's
mistakes; then it calls into object/ and vm/, which never call back up."""

from . import _clock, _fork, _futex, _handle, _info, _job, _pressure, _vmar, _vmo  # noqa: F401  (they register themselves)
from ._table import HANDLERS as HANDLERS
from ._table import SYNC_HANDLERS as SYNC_HANDLERS
from ._table import Call as Call
from ._table import Handler as Handler
