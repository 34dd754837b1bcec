"""The VM layer: VMOs, copy-on-write trees, page stores, physical memory, mappings and address
spaces, fault resolution and shootdowns (ARCHITECTURE.md "Layers"). It knows processes only as
`Mapper`s and control channels only as `ControlPort`s, and never imports the layers above it.
"""

from ._aspace import AddressSpace as AddressSpace
from ._clone import new_slice as new_slice
from ._clone import snapshot_locked as snapshot_locked
from ._context import SLOW_FAULT_REASONS as SLOW_FAULT_REASONS
from ._context import VmContext as VmContext
from ._cowpages import CowPages as CowPages
from ._fault import resolve_fault as resolve_fault
from ._mapper import ControlPort as ControlPort
from ._mapper import Mapper as Mapper
from ._mapping import Mapping as Mapping
from ._pagestore import PageStore as PageStore
from ._charge import ChargeEvents as ChargeEvents
from ._charge import ChargeGroup as ChargeGroup
from ._pmm import CommitRefused as CommitRefused
from ._pmm import Counters as Counters
from ._pressure import Pressure as Pressure
from ._psi import StallClock as StallClock
from ._psi import Stalls as Stalls
from ._pressure import PressureLevels as PressureLevels
from ._pressure import Thresholds as Thresholds
from ._pmm import PhysicalMemory as PhysicalMemory
from ._storefds import drop_stores as drop_stores
from ._throttle import throttle_high as throttle_high
from ._storefds import forget_store as forget_store
from ._storefds import prune_stores as prune_stores
from ._usage import active_pages as active_pages
from ._usage import live_nodes as live_nodes
from ._usage import mapped_committed_pages as mapped_committed_pages
from ._usage import mapped_pages as mapped_pages
from ._usage import vmo_pages as vmo_pages
from ._usage import wired_bytes as wired_bytes
from ._vmo import KIND_AT_LEAST_ON_WRITE as KIND_AT_LEAST_ON_WRITE
from ._vmo import KIND_ROOT as KIND_ROOT
from ._vmo import KIND_SLICE as KIND_SLICE
from ._vmo import KIND_SNAPSHOT as KIND_SNAPSHOT
from ._vmo import Vmo as Vmo
from ._vmo import new_root_vmo as new_root_vmo
