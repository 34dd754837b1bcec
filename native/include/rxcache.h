/* rxcache.h — data cache maintenance on page-store ranges (rx_vmo_op_range CACHE_* ops).
 *
 * rxd calls rx_cache_op on each committed run of a VMO range (resolved through the copy-on-write
 * tree to the store that holds it). The store range is mapped into rxd read-only and MAP_SHARED,
 * mincore() picks the pages the host actually holds, and only those are touched: a page that is
 * not resident has nothing in any cache, and reading a shmem hole through a mapping would
 * allocate it (ARCHITECTURE.md "Memory"), so a cache op never allocates memory.
 *
 * What each op executes follows Zircon's arch cache routines:
 *   x86_64   CLEAN             CLWB + SFENCE, else as CLEAN_INVALIDATE
 *            CLEAN_INVALIDATE  CLFLUSHOPT + SFENCE, else CLFLUSH (ordered by itself)
 *            INVALIDATE        nothing: x86 has no user-mode invalidate without write-back
 *                              (INVD is privileged and loses data) and its caches are coherent
 *                              with DMA; Zircon's arch_invalidate_cache_range is empty on x86
 *            SYNC              CPUID (serializing), as Zircon: x86 keeps the instruction stream
 *                              coherent with data writes, no per-line work
 *   aarch64  CLEAN             DC CVAC per line, DSB SY
 *            CLEAN_INVALIDATE  DC CIVAC per line, DSB SY
 *            INVALIDATE        DC CIVAC (DC IVAC is EL1-only and would drop dirty data)
 *            SYNC              DC CVAU per line, DSB ISH, IC IVAU per line, DSB ISH, ISB
 *   others   -ENOSYS
 * Line sizes come from CPUID leaf 1 (x86) or CTR_EL0 (aarch64), detected once.
 *
 * Ops are rxwire.h's RX_VMO_OP_CACHE_* (Zircon's numbers: 6 SYNC, 7 INVALIDATE, 8 CLEAN,
 * 9 CLEAN_INVALIDATE).
 * Thread safe; called from Trio worker threads for large ranges.
 */
#ifndef RXCACHE_H
#define RXCACHE_H

#include <stdint.h>

/* cdef-begin */

/* Apply cache op `op` to bytes [offset, offset+length) of the file fd (any alignment: every
 * cache line overlapping the range). Only pages resident in the host's page cache are touched.
 * Returns the number of resident pages the op walked line by line (0 when the op has no per-line
 * work on this CPU, see rx_cache_insn), or -EINVAL (unknown op, range overflows), -ENOSYS (no
 * implementation for this architecture) or -errno (mmap, mincore). */
int64_t rx_cache_op(int fd, uint64_t offset, uint64_t length, int op);

/* The instruction op uses on this CPU (RX_CACHE_INSN_*: 0 none, 1 CLFLUSH, 2 CLFLUSHOPT,
 * 3 CLWB, 4 CPUID serialize, 10 DC CVAC, 11 DC CIVAC, 12 DC CVAU+IC IVAU), -EINVAL for an
 * unknown op, -ENOSYS on other architectures. For tests and diagnostics. */
int rx_cache_insn(int op);

/* The data cache line size the ops step by, in bytes (0 on other architectures). */
uint32_t rx_cache_line_size(void);

/* cdef-end */

#endif /* RXCACHE_H */
