/* storeio.c — rxd's I/O on its page stores (memfds): commit, decommit, zero, copy, and the CAS
 * on a futex word. See rxstoreio.h for each function's contract.
 *
 * Owns no state: each call stands alone, so any thread may make it.
 */
#define _GNU_SOURCE
#include "rxstoreio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "rxwire.h"

static int off_ok(uint64_t off, uint64_t len) { return off <= INT64_MAX && len <= INT64_MAX - off; }

int rx_punch_hole(int fd, uint64_t offset, uint64_t length) {
    if (!off_ok(offset, length)) return -EINVAL;
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length) < 0
               ? -errno : 0;
}

int rx_allocate(int fd, uint64_t offset, uint64_t length) {
    if (!off_ok(offset, length)) return -EINVAL;
    return fallocate(fd, 0, (off_t)offset, (off_t)length) < 0 ? -errno : 0;
}

#define RX_CHUNK 65536
static const uint8_t zeros[RX_CHUNK];

int rx_zero_range(int fd, uint64_t offset, uint64_t length) {
    if (!off_ok(offset, length)) return -EINVAL;
    while (length) {
        size_t n = length < RX_CHUNK ? (size_t)length : RX_CHUNK;
        ssize_t k = pwrite(fd, zeros, n, (off_t)offset);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (k == 0) return -EIO;
        offset += (uint64_t)k;
        length -= (uint64_t)k;
    }
    return 0;
}

int rx_copy_range(int dst_fd, uint64_t dst_off, int src_fd, uint64_t src_off, uint64_t length) {
    if (!off_ok(dst_off, length) || !off_ok(src_off, length)) return -EINVAL;
    uint8_t buf[RX_CHUNK];
    while (length) {
        size_t want = length < RX_CHUNK ? (size_t)length : RX_CHUNK;
        ssize_t got = pread(src_fd, buf, want, (off_t)src_off);
        if (got < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (got == 0) return -EIO; /* the source ends before the range does */
        size_t done = 0;
        while (done < (size_t)got) {
            ssize_t k = pwrite(dst_fd, buf + done, (size_t)got - done, (off_t)(dst_off + done));
            if (k < 0) {
                if (errno == EINTR) continue;
                return -errno;
            }
            if (k == 0) return -EIO;
            done += (size_t)k;
        }
        src_off += (uint64_t)got;
        dst_off += (uint64_t)got;
        length -= (uint64_t)got;
    }
    return 0;
}

/* ---- futex words -------------------------------------------------------------------------------- */

int64_t rx_word_cas(int fd, uint64_t offset, uint32_t expected, uint32_t desired) {
    if (offset & 3)
        return -EINVAL;
    const uint64_t page = RX_PAGE_SIZE;
    uint64_t base = offset & ~(page - 1);
    void *p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)base);
    if (p == MAP_FAILED)
        return -errno;
    uint32_t *word = (uint32_t *)((char *)p + (offset - base));
    uint32_t seen = expected;
    __atomic_compare_exchange_n(word, &seen, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    munmap(p, page);
    return (int64_t)seen;
}
