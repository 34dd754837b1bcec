/* rxstoreio.h — rxd's I/O on its page stores (server/vm/_pagestore.py, server/object/_futex.py): the
 * sealed memfds that hold each object's pages. Server side only: clients never call these.
 *
 * Commit and decommit are fallocate calls; zeroing and copying go through pread/pwrite (a hole
 * reads as zeros, and nothing here maps a hole, which would allocate it). A futex word is read
 * with pread (a torn read only makes a waiter retry or wait for a wake that is already on its
 * way), but a robust-mutex takeover must change the word atomically against clients' own atomics
 * on the same page: that needs a real mapping and a real CAS (rx_word_cas).
 *
 * Conventions as rxnative.h: 0 (or a value >= 0) on success, -errno on failure.
 */
#ifndef RXSTOREIO_H
#define RXSTOREIO_H

#include <stdint.h>

/* cdef-begin */

/* fallocate(PUNCH_HOLE|KEEP_SIZE): decommit. 0 or -errno. */
int rx_punch_hole(int fd, uint64_t offset, uint64_t length);

/* fallocate(mode 0): commit the pages of the range. 0 or -errno. */
int rx_allocate(int fd, uint64_t offset, uint64_t length);

/* pwrite zeros over the range (partial pages, recycling without punching). 0 or -errno. */
int rx_zero_range(int fd, uint64_t offset, uint64_t length);

/* Copy length bytes from src_fd@src_off to dst_fd@dst_off with pread/pwrite in 64 KiB chunks.
 * Reading a hole yields zeros. Ranges of the same file must not overlap. 0, -EIO (source ends
 * early) or -errno. */
int rx_copy_range(int dst_fd, uint64_t dst_off, int src_fd, uint64_t src_off, uint64_t length);

/* ---- futex words --------------------------------------------------------------------------------- */

/* Compare-and-swap the 32-bit word at byte `offset` (4-byte aligned) of the memfd `fd`: if it
 * holds `expected` it becomes `desired`. Returns the value found (== expected on success), or
 * -EINVAL (misaligned) / -errno of mmap. The page must already exist in the file (committed):
 * mapping a hole would allocate it. */
int64_t rx_word_cas(int fd, uint64_t offset, uint32_t expected, uint32_t desired);

/* cdef-end */

#endif /* RXSTOREIO_H */
