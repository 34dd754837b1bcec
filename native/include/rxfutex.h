/* rxfutex.h — rxd's atomic access to a futex word inside a page store (server/_futex.py).
 *
 * rxd reads futex values with pread (a torn read only makes a waiter retry or wait for a wake that
 * is already on its way), but a robust-mutex takeover must change the word atomically against
 * clients' own atomics on the same page: that needs a real mapping and a real CAS.
 * Conventions as rxnative.h: 0 or a value >= 0 on success, -errno on failure.
 */
#ifndef RXFUTEX_H
#define RXFUTEX_H

#include <stdint.h>

/* cdef-begin */

/* Compare-and-swap the 32-bit word at byte `offset` (4-byte aligned) of the memfd `fd`: if it
 * holds `expected` it becomes `desired`. Returns the value found (== expected on success), or
 * -EINVAL (misaligned) / -errno of mmap. The page must already exist in the file (committed):
 * mapping a hole would allocate it. */
int64_t rx_word_cas(int fd, uint64_t offset, uint32_t expected, uint32_t desired);

/* cdef-end */

#endif
