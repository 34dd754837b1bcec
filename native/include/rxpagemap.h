/* rxpagemap.h — rxd's compact per-page state (server/vm/_pagemap.py drives it): a byte per page
 * (0: clear; a set is the pages whose byte is 1, a ChargeMap's bytes are group slots), kept in
 * 64 Ki-page chunks allocated only where a page was ever set, in C memory so that rxd's fault
 * thread can read it as well as Python (ARCHITECTURE.md "The fault fast path"). Server side only.
 *
 * Who may touch a map: the holder of the lock that guards its owner (a store's or a node's tree
 * lock, ARCHITECTURE.md "Locks"); nothing here locks. Pages are < RX_PAGEMAP_PAGES.
 * Conventions as rxnative.h: a value >= 0 on success, -errno on failure.
 */
#ifndef RXPAGEMAP_H
#define RXPAGEMAP_H

#include <stdint.h>

/* cdef-begin */

#define RX_PAGEMAP_CHUNK_SHIFT 16
#define RX_PAGEMAP_PAGES 268435456 /* 2^40 bytes of pages: the largest VMO offset rx allows */

struct rx_pagemap {
    uint8_t **chunks;   /* chunks[i]: pages [i << 16, (i + 1) << 16), non-zero = set; NULL: none set */
    uint32_t *counts;   /* set (non-zero) pages per chunk */
    uint32_t nchunks;   /* entries in chunks/counts (grown on demand) */
    uint32_t allocated; /* chunks allocated */
    uint64_t count_set; /* set pages in all */
};

/* A new empty map, or NULL (no memory). */
struct rx_pagemap *rx_pagemap_new(void);
void rx_pagemap_free(struct rx_pagemap *m);

int rx_pagemap_get(const struct rx_pagemap *m, uint64_t page);

/* Set pages in [start, end). */
uint64_t rx_pagemap_count(const struct rx_pagemap *m, uint64_t start, uint64_t end);

/* Set [start, end) to value (1..255), or clear it (0): how many pages went from clear to set or
 * back, or -ENOMEM (nothing changed) / -EINVAL (out of range, a value past 255). A chunk left
 * empty is freed. */
int64_t rx_pagemap_set_range(struct rx_pagemap *m, uint64_t start, uint64_t end, int value);

/* How many pages of [start, end) hold each byte value: out[256]. */
void rx_pagemap_histogram(const struct rx_pagemap *m, uint64_t start, uint64_t end, uint64_t *out);

/* The maximal runs covering [start, end), in order, as (run_start, run_end, value) triples
 * into out (room for max_runs): how many were written. When the room runs out before end, the
 * last run written ends where the next call should start. */
int rx_pagemap_runs(const struct rx_pagemap *m, uint64_t start, uint64_t end, uint64_t *out, int max_runs);

/* cdef-end */

#endif /* RXPAGEMAP_H */
