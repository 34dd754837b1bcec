/* rxfutex.c — see rxfutex.h. */
#define _GNU_SOURCE
#include "rxfutex.h"
#include "rxwire.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

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
