/* pagemap.c — rxpagemap.h: byte-per-page sets in sparse chunks.
 *
 * Owns: each map's chunk directory (chunks[], counts[], grown with realloc, never shrunk) and
 * its chunks (calloc'd on the first set page, freed when their last page clears). Nothing is
 * locked here: the caller holds whatever guards the map (rxpagemap.h).
 */
#include "rxpagemap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_PAGES (1u << RX_PAGEMAP_CHUNK_SHIFT)

struct rx_pagemap *rx_pagemap_new(void) { return calloc(1, sizeof(struct rx_pagemap)); }

void rx_pagemap_free(struct rx_pagemap *m) {
    if (!m) return;
    for (uint32_t i = 0; i < m->nchunks; i++) free(m->chunks[i]);
    free(m->chunks);
    free(m->counts);
    free(m);
}

static const uint8_t *chunk_of(const struct rx_pagemap *m, uint64_t index) {
    return index < m->nchunks ? m->chunks[index] : NULL;
}

int rx_pagemap_get(const struct rx_pagemap *m, uint64_t page) {
    const uint8_t *c = chunk_of(m, page >> RX_PAGEMAP_CHUNK_SHIFT);
    return c != NULL && c[page & (CHUNK_PAGES - 1)];
}

/* Set (non-zero) bytes of c[lo, hi): memchr-style scanning a word at a time would be faster
 * still; a fault window is at most 512 pages, so a plain loop that the compiler vectorises is
 * enough. */
static uint64_t count_bytes(const uint8_t *c, uint32_t lo, uint32_t hi) {
    uint64_t n = 0;
    for (uint32_t i = lo; i < hi; i++) n += c[i] != 0;
    return n;
}

uint64_t rx_pagemap_count(const struct rx_pagemap *m, uint64_t start, uint64_t end) {
    uint64_t n = 0; /* (pages past the last chunk, even past RX_PAGEMAP_PAGES, are clear) */
    while (start < end) {
        uint64_t index = start >> RX_PAGEMAP_CHUNK_SHIFT, base = index << RX_PAGEMAP_CHUNK_SHIFT;
        if (index >= m->nchunks) break; /* nothing is set past the directory */
        uint64_t stop = end < base + CHUNK_PAGES ? end : base + CHUNK_PAGES;
        const uint8_t *c = m->chunks[index];
        if (c) n += count_bytes(c, (uint32_t)(start - base), (uint32_t)(stop - base));
        start = stop;
    }
    return n;
}

static int grow(struct rx_pagemap *m, uint64_t need) {
    if (need <= m->nchunks) return 0;
    uint64_t n = m->nchunks ? m->nchunks : 1;
    while (n < need) n *= 2;
    uint8_t **chunks = realloc(m->chunks, n * sizeof *chunks);
    if (!chunks) return -ENOMEM;
    m->chunks = chunks;
    uint32_t *counts = realloc(m->counts, n * sizeof *counts);
    if (!counts) return -ENOMEM;
    m->counts = counts;
    memset(m->chunks + m->nchunks, 0, (n - m->nchunks) * sizeof *chunks);
    memset(m->counts + m->nchunks, 0, (n - m->nchunks) * sizeof *counts);
    m->nchunks = (uint32_t)n;
    return 0;
}

int64_t rx_pagemap_set_range(struct rx_pagemap *m, uint64_t start, uint64_t end, int value) {
    if (start > end || end > RX_PAGEMAP_PAGES || value < 0 || value > 255) return -EINVAL;
    if (start == end) return 0;
    if (value) {
        /* Allocate every chunk first, so that a failure changes nothing. */
        uint64_t last = (end - 1) >> RX_PAGEMAP_CHUNK_SHIFT;
        if (grow(m, last + 1) < 0) return -ENOMEM;
        for (uint64_t i = start >> RX_PAGEMAP_CHUNK_SHIFT; i <= last; i++) {
            if (!m->chunks[i]) {
                if (!(m->chunks[i] = calloc(CHUNK_PAGES, 1))) {
                    for (uint64_t j = start >> RX_PAGEMAP_CHUNK_SHIFT; j < i; j++) { /* undo: nothing changed */
                        if (m->chunks[j] && !m->counts[j]) {
                            free(m->chunks[j]);
                            m->chunks[j] = NULL;
                            m->allocated--;
                        }
                    }
                    return -ENOMEM;
                }
                m->allocated++;
            }
        }
    }
    int64_t changed = 0;
    while (start < end) {
        uint64_t index = start >> RX_PAGEMAP_CHUNK_SHIFT, base = index << RX_PAGEMAP_CHUNK_SHIFT;
        uint64_t stop = end < base + CHUNK_PAGES ? end : base + CHUNK_PAGES;
        uint8_t *c = index < m->nchunks ? m->chunks[index] : NULL;
        if (c) {
            uint32_t lo = (uint32_t)(start - base), hi = (uint32_t)(stop - base);
            uint64_t before = count_bytes(c, lo, hi);
            uint64_t delta = value ? (hi - lo) - before : before;
            memset(c + lo, value, hi - lo);
            changed += (int64_t)delta;
            m->counts[index] = value ? m->counts[index] + (uint32_t)delta : m->counts[index] - (uint32_t)delta;
            if (!m->counts[index]) { /* empty again: give its memory back */
                free(c);
                m->chunks[index] = NULL;
                m->allocated--;
            }
        }
        start = stop;
    }
    m->count_set = value ? m->count_set + (uint64_t)changed : m->count_set - (uint64_t)changed;
    return changed;
}

/* The first page in c[pos, hi) whose byte differs from v, or hi. */
static uint32_t run_end(const uint8_t *c, uint32_t pos, uint32_t hi, uint8_t v) {
    if (v == 1) { /* a set's runs: the first clear byte */
        const uint8_t *z = memchr(c + pos, 0, hi - pos);
        return z ? (uint32_t)(z - c) : hi;
    }
    while (pos < hi && c[pos] == v) pos++;
    return pos;
}

void rx_pagemap_histogram(const struct rx_pagemap *m, uint64_t start, uint64_t end, uint64_t *out) {
    memset(out, 0, 256 * sizeof *out);
    while (start < end) {
        uint64_t index = start >> RX_PAGEMAP_CHUNK_SHIFT, base = index << RX_PAGEMAP_CHUNK_SHIFT;
        if (index >= m->nchunks) break;
        uint64_t stop = end < base + CHUNK_PAGES ? end : base + CHUNK_PAGES;
        const uint8_t *c = m->chunks[index];
        if (c)
            for (uint64_t i = start - base; i < stop - base; i++) out[c[i]]++;
        else
            out[0] += stop - start;
        start = stop;
    }
}

int rx_pagemap_runs(const struct rx_pagemap *m, uint64_t start, uint64_t end, uint64_t *out, int max_runs) {
    int n = 0; /* (pages past the last chunk, even past RX_PAGEMAP_PAGES, are clear) */
    uint64_t run_start = start;
    int run_value = -1;
    while (start < end) {
        uint64_t index = start >> RX_PAGEMAP_CHUNK_SHIFT, base = index << RX_PAGEMAP_CHUNK_SHIFT;
        const uint8_t *c = chunk_of(m, index);
        /* Past the directory everything is clear: one step to `end`, not one per chunk. */
        uint64_t stop = index >= m->nchunks ? end : (end < base + CHUNK_PAGES ? end : base + CHUNK_PAGES);
        uint64_t pos = start - base, hi = stop - base;
        while (pos < hi) {
            int v = c != NULL ? c[pos] : 0;
            uint64_t next = c ? run_end(c, (uint32_t)pos, (uint32_t)hi, (uint8_t)v) : hi; /* (c: within one chunk) */
            if (run_value < 0) {
                run_value = v;
            } else if (v != run_value) {
                if (n == max_runs) return n;
                out[3 * n] = run_start;
                out[3 * n + 1] = base + pos;
                out[3 * n + 2] = (uint64_t)run_value;
                n++;
                run_start = base + pos;
                run_value = v;
            }
            pos = next;
        }
        start = stop;
    }
    if (run_value >= 0 && n < max_runs) {
        out[3 * n] = run_start;
        out[3 * n + 1] = end;
        out[3 * n + 2] = (uint64_t)run_value;
        n++;
    }
    return n;
}
