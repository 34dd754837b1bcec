/* rxcache.c — see rxcache.h. */
#define _GNU_SOURCE
#include "rxcache.h"
#include "rxwire.h"

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

enum {
    INSN_NONE = 0,
    INSN_CLFLUSH = 1,
    INSN_CLFLUSHOPT = 2,
    INSN_CLWB = 3,
    INSN_CPUID = 4,
    INSN_DC_CVAC = 10,
    INSN_DC_CIVAC = 11,
    INSN_DC_CVAU_IC_IVAU = 12,
};

/* Map and mincore this much of a store at a time: bounded address space, a 16 KiB vector. */
#define WINDOW (64ull << 20)
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

static pthread_once_t detect_once = PTHREAD_ONCE_INIT;
static uint32_t dline = 64; /* data cache line, bytes */
static uint32_t iline = 64; /* instruction cache line, bytes */

#if defined(__x86_64__)

static int has_clflush, has_clflushopt, has_clwb;

static void detect(void) {
    unsigned a, b, c, d;
    if (__get_cpuid(1, &a, &b, &c, &d)) {
        has_clflush = (d >> 19) & 1;
        uint32_t line = ((b >> 8) & 0xff) * 8; /* CLFLUSH line size, in 8-byte units */
        if (line) dline = iline = line;
    }
    if (__get_cpuid_max(0, NULL) >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        has_clflushopt = (b >> 23) & 1;
        has_clwb = (b >> 24) & 1;
    }
}

static int insn_for(int op) {
    switch (op) {
    case RX_VMO_OP_CACHE_SYNC: return INSN_CPUID;
    case RX_VMO_OP_CACHE_INVALIDATE: return INSN_NONE;
    case RX_VMO_OP_CACHE_CLEAN:
        if (has_clwb) return INSN_CLWB;
        /* Zircon cleans with a clean+invalidate when there is no CLWB */
        __attribute__((fallthrough));
    case RX_VMO_OP_CACHE_CLEAN_INVALIDATE:
        return has_clflushopt ? INSN_CLFLUSHOPT : has_clflush ? INSN_CLFLUSH : INSN_NONE;
    }
    return -EINVAL;
}

#define LINE_START(p, line) ((const char *)((uintptr_t)(p) & ~((uintptr_t)(line) - 1)))

__attribute__((target("clwb"))) static void lines_clwb(const char *p, const char *e) {
    for (p = LINE_START(p, dline); p < e; p += dline) __builtin_ia32_clwb((void *)(uintptr_t)p);
}

__attribute__((target("clflushopt"))) static void lines_clflushopt(const char *p, const char *e) {
    for (p = LINE_START(p, dline); p < e; p += dline) __builtin_ia32_clflushopt((void *)(uintptr_t)p);
}

static void lines_clflush(const char *p, const char *e) {
    for (p = LINE_START(p, dline); p < e; p += dline) __builtin_ia32_clflush(p);
}

static void apply(int insn, const char *p, const char *e) {
    switch (insn) {
    case INSN_CLWB: lines_clwb(p, e); break;
    case INSN_CLFLUSHOPT: lines_clflushopt(p, e); break;
    case INSN_CLFLUSH: lines_clflush(p, e); break;
    }
}

static void finish(int insn) {
    if (insn == INSN_CLWB || insn == INSN_CLFLUSHOPT)
        __builtin_ia32_sfence(); /* they are weakly ordered: complete them before we return */
    else if (insn == INSN_CLFLUSH)
        __builtin_ia32_mfence(); /* CLFLUSH is ordered with stores, not with later loads */
}

static void serialize(void) {
    /* Intel SDM vol. 3 §8.1.3: a serializing instruction before executing modified code. */
    unsigned a, b, c, d;
    __cpuid(0, a, b, c, d);
    (void)a, (void)b, (void)c, (void)d;
}

#elif defined(__aarch64__)

static void detect(void) {
    uint64_t ctr;
    __asm__ volatile("mrs %0, ctr_el0" : "=r"(ctr));
    dline = 4u << ((ctr >> 16) & 0xf); /* DminLine: log2 of words */
    iline = 4u << (ctr & 0xf);         /* IminLine */
}

static int insn_for(int op) {
    switch (op) {
    case RX_VMO_OP_CACHE_SYNC: return INSN_DC_CVAU_IC_IVAU;
    case RX_VMO_OP_CACHE_INVALIDATE: return INSN_DC_CIVAC; /* DC IVAC is EL1-only */
    case RX_VMO_OP_CACHE_CLEAN: return INSN_DC_CVAC;
    case RX_VMO_OP_CACHE_CLEAN_INVALIDATE: return INSN_DC_CIVAC;
    }
    return -EINVAL;
}

#define LINE_START(p, line) ((const char *)((uintptr_t)(p) & ~((uintptr_t)(line) - 1)))

static void apply(int insn, const char *p, const char *e) {
    const char *q;
    switch (insn) {
    case INSN_DC_CVAC:
        for (q = LINE_START(p, dline); q < e; q += dline) __asm__ volatile("dc cvac, %0" ::"r"(q) : "memory");
        break;
    case INSN_DC_CIVAC:
        for (q = LINE_START(p, dline); q < e; q += dline) __asm__ volatile("dc civac, %0" ::"r"(q) : "memory");
        break;
    case INSN_DC_CVAU_IC_IVAU:
        for (q = LINE_START(p, dline); q < e; q += dline) __asm__ volatile("dc cvau, %0" ::"r"(q) : "memory");
        __asm__ volatile("dsb ish" ::: "memory");
        for (q = LINE_START(p, iline); q < e; q += iline) __asm__ volatile("ic ivau, %0" ::"r"(q) : "memory");
        __asm__ volatile("dsb ish" ::: "memory");
        break;
    }
}

static void finish(int insn) {
    if (insn == INSN_DC_CVAC || insn == INSN_DC_CIVAC)
        __asm__ volatile("dsb sy" ::: "memory");
    else if (insn == INSN_DC_CVAU_IC_IVAU)
        __asm__ volatile("isb" ::: "memory");
}

static void serialize(void) { __asm__ volatile("isb" ::: "memory"); }

#endif

#if defined(__x86_64__) || defined(__aarch64__)

int rx_cache_insn(int op) {
    pthread_once(&detect_once, detect);
    return insn_for(op);
}

uint32_t rx_cache_line_size(void) {
    pthread_once(&detect_once, detect);
    return dline;
}

int64_t rx_cache_op(int fd, uint64_t offset, uint64_t length, int op) {
    if (op < RX_VMO_OP_CACHE_SYNC || op > RX_VMO_OP_CACHE_CLEAN_INVALIDATE) return -EINVAL;
    uint64_t end = offset + length;
    if (end < offset || end > (uint64_t)INT64_MAX) return -EINVAL;
    pthread_once(&detect_once, detect);
    int insn = insn_for(op);
    if (insn == INSN_CPUID) {
        serialize();
        return 0;
    }
    if (insn == INSN_NONE || length == 0) return 0;

    const uint64_t ps = (uint64_t)sysconf(_SC_PAGESIZE);
    unsigned char vec[WINDOW / 4096];
    uint64_t pos = offset & ~(ps - 1);
    const uint64_t stop = (end + ps - 1) & ~(ps - 1);
    int64_t pages = 0;
    while (pos < stop) {
        uint64_t n = stop - pos < WINDOW ? stop - pos : WINDOW;
        /* Read-only is enough: every op here is a load for permission purposes. Nothing is
         * populated: a non-resident page must stay untouched (touching a hole allocates it). */
        char *base = mmap(NULL, n, PROT_READ, MAP_SHARED, fd, (off_t)pos);
        if (base == MAP_FAILED) return -errno;
        if (mincore(base, n, vec) < 0) {
            int e = errno;
            munmap(base, n);
            return -e;
        }
        size_t np = (size_t)(n / ps);
        for (size_t i = 0; i < np;) {
            if (!(vec[i] & 1)) {
                i++;
                continue;
            }
            size_t j = i;
            while (j < np && (vec[j] & 1)) j++;
            /* Map the resident run in one call instead of a minor fault per page; errors are
             * harmless (the instructions then fault the pages in, still only resident ones). */
            madvise(base + i * ps, (j - i) * ps, MADV_POPULATE_READ);
            uint64_t lo = pos + i * ps > offset ? pos + i * ps : offset;
            uint64_t hi = pos + j * ps < end ? pos + j * ps : end;
            apply(insn, base + (lo - pos), base + (hi - pos));
            pages += (int64_t)(j - i);
            i = j;
        }
        finish(insn);
        munmap(base, n);
        pos += n;
    }
    return pages;
}

#else

int rx_cache_insn(int op) {
    (void)op;
    return -ENOSYS;
}

uint32_t rx_cache_line_size(void) { return 0; }

int64_t rx_cache_op(int fd, uint64_t offset, uint64_t length, int op) {
    (void)fd, (void)offset, (void)length, (void)op;
    return -ENOSYS;
}

#endif
