"""Constants shared by rxd, the stub library and the C core (options, ops, info topics, limits)."""

from __future__ import annotations

PAGE_SIZE = 4096
PAGE_SHIFT = 12

PROTOCOL_MAGIC = 0x5258  # "RX"
PROTOCOL_VERSION = 1

# Channel kinds in the hello (WIRE.md).
CHANNEL_MAIN = 0
CHANNEL_FAULT = 1
CHANNEL_CONTROL = 2
CHANNEL_THREAD = 3  # per client thread: calls that may block (futex waits) without holding up main

SESSION_TOKEN_BYTES = 16

# The most ops one fault reply carries (WIRE.md "Fault channel"): the C core sizes its buffers by it
# (native/include/rxwire.h RX_FAULT_MAX_OPS), so rxd must never send more.
FAULT_MAX_OPS = 64

# The largest frame either side accepts on the main channel; vmo_read/vmo_write move at most
# RX_MAX_IO bytes per call, so a frame stays well under this.
MAX_FRAME_BYTES = 8 << 20
RX_MAX_IO = 4 << 20

# A VMO's size is at most this (the store is a sparse memfd this big at most).
RX_VMO_MAX_SIZE = 1 << 40
# The sparse capacity a resizable VMO's store gets, unless its initial size is larger.
RX_VMO_RESIZABLE_CAPACITY = 64 << 30

# rx_vmo_create options.
RX_VMO_RESIZABLE = 1 << 1
RX_VMO_COMMIT_EAGER = 1 << 16  # rx extension: commit every page at create
# rx extension: pages are committed only when asked (rx_vmo_op_range COMMIT, rx_vmo_write,
# rx_vmar_op_range COMMIT, RX_VM_MAP_RANGE); a write fault on an uncommitted page is refused.
RX_VMO_COMMIT_EXPLICIT = 1 << 17
RX_VMO_CREATE_OPTIONS = RX_VMO_RESIZABLE | RX_VMO_COMMIT_EAGER | RX_VMO_COMMIT_EXPLICIT

# rx_vmo_create_child options (values as in Zircon).
RX_VMO_CHILD_SNAPSHOT = 1 << 0
RX_VMO_CHILD_RESIZABLE = 1 << 2
RX_VMO_CHILD_SLICE = 1 << 3
RX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE = 1 << 4
RX_VMO_CHILD_NO_WRITE = 1 << 5
RX_VMO_CHILD_OPTIONS = (
    RX_VMO_CHILD_SNAPSHOT | RX_VMO_CHILD_RESIZABLE | RX_VMO_CHILD_SLICE | RX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE
    | RX_VMO_CHILD_NO_WRITE
)

# rx_vmo_op_range ops (values as in Zircon).
RX_VMO_OP_COMMIT = 1
RX_VMO_OP_DECOMMIT = 2
RX_VMO_OP_CACHE_SYNC = 6
RX_VMO_OP_CACHE_INVALIDATE = 7
RX_VMO_OP_CACHE_CLEAN = 8
RX_VMO_OP_CACHE_CLEAN_INVALIDATE = 9
RX_VMO_OP_ZERO = 10

# Mapping permissions.
RX_VM_PERM_READ = 1 << 0
RX_VM_PERM_WRITE = 1 << 1
RX_VM_PERMS = RX_VM_PERM_READ | RX_VM_PERM_WRITE

# rx_vmar_map options.
RX_VM_SPECIFIC = 1 << 5  # map exactly at addr, replacing whatever rx mappings are there (Zircon's
#                          SPECIFIC_OVERWRITE): the old mappings go and the new one appears at once
RX_VM_MAP_RANGE = 1 << 10  # prefault the whole range now
RX_VM_MAP_RANDOM = 1 << 20  # rx extension: no fault-around (like MADV_RANDOM)
RX_VM_MAP_OPTIONS = RX_VM_SPECIFIC | RX_VM_MAP_RANGE | RX_VM_MAP_RANDOM

# rx_object_set_property / rx_object_get_property: a job's commit limits (memcg's memory.max and
# memory.high; Zircon has none). Numbers are rx's own.
RX_PROP_JOB_COMMIT_MAX = 1000  # bytes, a multiple of the page size; 0 = no limit of its own
RX_PROP_JOB_COMMIT_HIGH = 1001  # bytes; 0 = none
RX_PROP_JOB_OVERCOMMIT = 1002  # an RX_OVERCOMMIT_* mode for VMOs its processes create (inherited)
RX_PROP_JOB_KILL_ON_OOM = 15  # Zircon's number: 0 or 1; its processes are the OOM killer's first choice
RX_PROP_JOB_OOM_GROUP = 1003  # 0 or 1: the OOM killer takes the whole job at once (memory.oom.group)
RX_PROP_PROCESS_OOM_SCORE_ADJ = 1010  # -1000..1000 added to the badness; -1000: never chosen
# Memory pressure levels (Zircon's system events, in order of severity; rx_system_get_pressure_level).
RX_PRESSURE_NORMAL = 0
RX_PRESSURE_WARNING = 1
RX_PRESSURE_CRITICAL = 2
RX_PRESSURE_IMMINENT_OOM = 3
RX_PRESSURE_OUT_OF_MEMORY = 4
PRESSURE_NAMES = {0: "RX_PRESSURE_NORMAL", 1: "RX_PRESSURE_WARNING", 2: "RX_PRESSURE_CRITICAL",
                  3: "RX_PRESSURE_IMMINENT_OOM", 4: "RX_PRESSURE_OUT_OF_MEMORY"}

# RX_PROP_JOB_OVERCOMMIT modes, Linux's vm.overcommit_memory numbers.
RX_OVERCOMMIT_HEURISTIC = 0  # the default: refuse only a lazy VMO that could never fit
RX_OVERCOMMIT_ALWAYS = 1  # never refuse at creation
RX_OVERCOMMIT_NEVER = 2  # a lazy VMO reserves its whole size at creation; its faults never fail
OVERCOMMIT_NAMES = {0: "RX_OVERCOMMIT_HEURISTIC", 1: "RX_OVERCOMMIT_ALWAYS", 2: "RX_OVERCOMMIT_NEVER"}
PROP_NAMES = {value: name for name, value in list(globals().items()) if name.startswith("RX_PROP_") and isinstance(value, int)}

# rx_vmar_op_range ops.
RX_VMAR_OP_COMMIT = 1

# rx_object_get_info topics.
RX_INFO_HANDLE_BASIC = 2
RX_INFO_JOB = 13  # Zircon's number; rx's fields (charge, limits, events)
RX_INFO_PROCESS_MAPS = 19
RX_INFO_PROCESS_VMOS = 20
RX_INFO_TASK_STATS = 12
RX_INFO_VMO = 18
RX_INFO_KMEM_STATS = 10
RX_INFO_SYSTEM_PROCESSES = 100  # rx extension: per-process summary (rxctl ps)
RX_INFO_SYSTEM_VMOS = 101  # rx extension: every live VMO (rxctl vmos)
RX_INFO_SYSTEM_JOBS = 102  # rx extension: every live job, parents first (rxctl jobs)
INFO_TOPIC_NAMES = {value: name for name, value in list(globals().items()) if name.startswith("RX_INFO_") and
                    not name.startswith("RX_INFO_VMO_") and isinstance(value, int)}

# RX_INFO_VMO flags.
RX_INFO_VMO_TYPE_PAGED = 1 << 0
RX_INFO_VMO_RESIZABLE = 1 << 1
RX_INFO_VMO_COMMIT_EAGER = 1 << 2
RX_INFO_VMO_COMMIT_EXPLICIT = 1 << 3  # rx extension (a slice of one is explicit too)
RX_INFO_VMO_IS_COW_CLONE = 1 << 4  # a snapshot or at-least-on-write child (Zircon's value)
RX_INFO_VMO_IS_SLICE = 1 << 5  # rx extension: a slice child

# Futexes.
RX_TIME_INFINITE = (1 << 63) - 1  # a deadline that never comes (Zircon's ZX_TIME_INFINITE)
RX_FUTEX_WAKE_ALL = (1 << 32) - 1  # a wake or requeue count meaning every waiter
# Robust futex words (the sync objects' Mutex): the owner's pid in the low bits, and two flags.
RX_FUTEX_OWNER_MASK = (1 << 30) - 1
RX_FUTEX_OWNER_DIED = 1 << 30  # the last owner died holding it; set by rxd, kept by the next owner
RX_FUTEX_WAITERS = 1 << 31  # someone waits (or may): the owner must wake on release

# rx_cpu_features() bits (native/vdso/rxvvar.h has the same values and where each comes from).
# x86_64, from CPUID (AVX, AVX2, AVX512F only when the OS enabled their register state):
RX_CPU_X86_SSE2 = 1 << 0
RX_CPU_X86_SSE3 = 1 << 1
RX_CPU_X86_SSSE3 = 1 << 2
RX_CPU_X86_SSE4_1 = 1 << 3
RX_CPU_X86_SSE4_2 = 1 << 4
RX_CPU_X86_POPCNT = 1 << 5
RX_CPU_X86_AES = 1 << 6
RX_CPU_X86_PCLMULQDQ = 1 << 7
RX_CPU_X86_AVX = 1 << 8
RX_CPU_X86_AVX2 = 1 << 9
RX_CPU_X86_BMI1 = 1 << 10
RX_CPU_X86_BMI2 = 1 << 11
RX_CPU_X86_AVX512F = 1 << 12
RX_CPU_X86_RDRAND = 1 << 13
RX_CPU_X86_RDSEED = 1 << 14
RX_CPU_X86_CLFLUSHOPT = 1 << 15
RX_CPU_X86_CLWB = 1 << 16
RX_CPU_X86_ERMS = 1 << 17
RX_CPU_X86_FSRM = 1 << 18
RX_CPU_X86_INVARIANT_TSC = 1 << 19
RX_CPU_X86_SHA = 1 << 20
# aarch64, from getauxval(AT_HWCAP):
RX_CPU_ARM64_FP = 1 << 0
RX_CPU_ARM64_ASIMD = 1 << 1
RX_CPU_ARM64_AES = 1 << 2
RX_CPU_ARM64_PMULL = 1 << 3
RX_CPU_ARM64_SHA1 = 1 << 4
RX_CPU_ARM64_SHA2 = 1 << 5
RX_CPU_ARM64_CRC32 = 1 << 6
RX_CPU_ARM64_ATOMICS = 1 << 7
RX_CPU_ARM64_DCPOP = 1 << 8
RX_CPU_ARM64_SHA3 = 1 << 9
RX_CPU_ARM64_SHA512 = 1 << 10
RX_CPU_ARM64_SVE = 1 << 11

# Object types.
RX_OBJ_TYPE_PROCESS = 1
RX_OBJ_TYPE_VMO = 3
RX_OBJ_TYPE_JOB = 17
RX_OBJ_TYPE_SYSTEM = 100
