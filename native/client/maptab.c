/* maptab.c — the mapping table (which addresses are rx mappings) and address reservations.
 *
 * Owns:
 *   map_tab, map_hi   the table: fixed entries, free when len == 0; entries [0, map_hi) may be in
 *                     use. Written only under map_mu (always taken under the apply lock, so a
 *                     fault reply or control request that checked the table maps before the range
 *                     can leave it) inside a map_seq write section; read lock-free under the
 *                     map_seq seqlock by the fault handler and the control thread.
 *   gone_tab, gone_next  a ring of the last RX_GONE_MAX ranges unmapped from the table, so a touch
 *                     there afterwards gets a diagnostic, not a bare SIGSEGV; written and read
 *                     like the table (same lock, same seqlock).
 *   map_mu, map_seq   see above. Lock order: internal.h.
 * Reservations keep no state: they are address space (PROT_NONE, MADV_DONTFORK) that Python maps
 * rx mappings into; taking one back takes the apply lock and bumps the epoch (apply.c).
 */
#define _GNU_SOURCE
#include "rxnative.h"

#include <errno.h>
#include <pthread.h>
#include <sys/mman.h>

#include "internal.h"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

/* ---- the table -------------------------------------------------------------------------------- */

/* An entry is free when len == 0. Entries never overlap. stale: 0 a live rx mapping, else why
 * it is not one any more but still reserved (PROT_NONE) so that nothing else lands there:
 * MAP_STALE_FORK (inherited over fork) or MAP_STALE_LOST (the connection that owned it is gone). */
enum { MAP_LIVE = 0, MAP_STALE_FORK = 1, MAP_STALE_LOST = 2 };

struct rx_map_ent {
    uint64_t base;
    uint64_t len;
    uint32_t stale;
};

static struct rx_map_ent map_tab[RX_MAP_MAX];
static uint32_t map_hi; /* entries [0, map_hi) may be in use */

#define RX_GONE_MAX 64
struct rx_gone_ent {
    uint64_t base;
    uint64_t len; /* 0: free */
};
static struct rx_gone_ent gone_tab[RX_GONE_MAX];
static uint32_t gone_next; /* the slot the next unmapped range overwrites */
static uint32_t map_seq;
static pthread_mutex_t map_mu = PTHREAD_MUTEX_INITIALIZER;

int rx_map_lookup(uint64_t addr) {
    int r;
    uint32_t s;
    do {
        s = seq_read_begin(&map_seq);
        r = 0;
        uint32_t hi = LD(&map_hi);
        if (hi > RX_MAP_MAX) hi = RX_MAP_MAX;
        for (uint32_t i = 0; i < hi; i++) {
            uint64_t len = LD(&map_tab[i].len);
            if (!len) continue;
            if (addr - LD(&map_tab[i].base) < len) {
                uint32_t stale = LD(&map_tab[i].stale);
                r = stale == MAP_LIVE ? 1 : stale == MAP_STALE_FORK ? 2 : 3;
                break;
            }
        }
        for (uint32_t i = 0; !r && i < RX_GONE_MAX; i++) {
            uint64_t len = LD(&gone_tab[i].len);
            if (len && addr - LD(&gone_tab[i].base) < len) r = 4;
        }
    } while (seq_read_retry(&map_seq, s));
    return r;
}

/* The lowest piece of [cursor, end) that lies inside one live entry: *lo and *len, 1 if found.
 * Walking with cursor = *lo + *len visits every piece in address order, however many entries the
 * range spans, with no buffer to overflow. */
int map_next_piece(uint64_t cursor, uint64_t end, uint64_t *lo, uint64_t *len) {
    int found;
    uint32_t s;
    do {
        s = seq_read_begin(&map_seq);
        found = 0;
        uint64_t best_lo = end, best_hi = end;
        uint32_t hi = LD(&map_hi);
        if (hi > RX_MAP_MAX) hi = RX_MAP_MAX;
        for (uint32_t i = 0; i < hi; i++) {
            uint64_t elen = LD(&map_tab[i].len), eb = LD(&map_tab[i].base);
            if (!elen || LD(&map_tab[i].stale)) continue;
            uint64_t plo = eb > cursor ? eb : cursor, phi = eb + elen < end ? eb + elen : end;
            if (plo < phi && plo < best_lo) {
                best_lo = plo;
                best_hi = phi;
                found = 1;
            }
        }
        *lo = best_lo;
        *len = best_hi - best_lo;
    } while (seq_read_retry(&map_seq, s));
    return found;
}

/* How many more entries cutting [b, e) and then adding `adding` entries needs than exist. */
static int map_room_locked(uint64_t b, uint64_t e, uint32_t adding) {
    uint32_t free_n = RX_MAP_MAX - map_hi, split = 0;
    for (uint32_t i = 0; i < map_hi; i++) {
        uint64_t len = map_tab[i].len, eb = map_tab[i].base, ee = eb + len;
        if (!len) free_n++;
        else if (ee <= b || eb >= e) continue;
        else if (eb >= b && ee <= e) free_n++;
        else if (eb < b && ee > e) split++;
    }
    return free_n >= split + adding;
}

static void map_put_locked(uint64_t base, uint64_t len, uint32_t stale) {
    uint32_t i = 0;
    while (i < map_hi && map_tab[i].len) i++;
    ST(&map_tab[i].base, base);
    ST(&map_tab[i].stale, stale);
    ST(&map_tab[i].len, len); /* publish the length last */
    if (i == map_hi) ST(&map_hi, map_hi + 1);
}

/* Take [b, e) out of the table: entries inside it go, entries overlapping one end are trimmed,
 * an entry spanning it is split in two. This is the only C code that cuts or splits an entry:
 * everything else only adds whole entries (map_put_locked) or marks them stale (the fork child).
 *
 * Why an entry is only an address range and a stale flag: the SIGSEGV handler reads this table
 * to decide whether a fault is ours, and may not take a lock, allocate or call into Python, so
 * what it needs (is addr in a live rx mapping, or in one inherited over fork) is all the table
 * holds, in fixed-size entries read under a seqlock. Permissions, VMOs and offsets live in Python
 * (the client's mapping records) and in rxd, which answers every fault with what to map.
 *
 * Inside a seqlock write section, with room checked. */
static void map_cut_locked(uint64_t b, uint64_t e) {
    uint32_t hi = map_hi;
    for (uint32_t i = 0; i < hi; i++) {
        uint64_t len = map_tab[i].len, eb = map_tab[i].base, ee = eb + len;
        if (!len || ee <= b || eb >= e) continue;
        if (eb >= b && ee <= e) {
            ST(&map_tab[i].len, 0); /* clear the length first */
            ST(&map_tab[i].base, 0);
        } else if (eb < b && ee > e) {
            ST(&map_tab[i].len, b - eb);
            map_put_locked(e, ee - e, map_tab[i].stale);
        } else if (eb < b) {
            ST(&map_tab[i].len, b - eb);
        } else {
            ST(&map_tab[i].len, 0);
            ST(&map_tab[i].base, e);
            ST(&map_tab[i].len, ee - e);
        }
    }
    while (map_hi && !map_tab[map_hi - 1].len) ST(&map_hi, map_hi - 1);
}

/* Inside a seqlock write section: remember the live parts of [b, e) as unmapped (adding), or
 * forget every remembered range that overlaps [b, e) (it is an rx mapping again). */
static void gone_note_locked(uint64_t b, uint64_t e, int adding) {
    for (uint32_t i = 0; !adding && i < RX_GONE_MAX; i++) {
        uint64_t gb = gone_tab[i].base, ge = gb + gone_tab[i].len;
        if (gone_tab[i].len && gb < e && ge > b) ST(&gone_tab[i].len, 0);
    }
    for (uint32_t i = 0; adding && i < map_hi; i++) {
        uint64_t len = map_tab[i].len, eb = map_tab[i].base, ee = eb + len;
        if (!len || map_tab[i].stale != MAP_LIVE || ee <= b || eb >= e) continue;
        struct rx_gone_ent *g = &gone_tab[gone_next];
        gone_next = (gone_next + 1) % RX_GONE_MAX;
        ST(&g->len, 0);
        ST(&g->base, eb > b ? eb : b);
        ST(&g->len, (ee < e ? ee : e) - (eb > b ? eb : b)); /* publish the length last */
    }
}

static int map_change(uint64_t base, uint64_t length, int add) {
    if (!range_ok(base, length)) return -EINVAL;
    pthread_mutex_lock(&map_mu);
    int rc = 0;
    if (!map_room_locked(base, base + length, add ? 1 : 0)) {
        rc = -ENOMEM;
    } else {
        seq_write_begin(&map_seq);
        gone_note_locked(base, base + length, !add);
        map_cut_locked(base, base + length);
        if (add) map_put_locked(base, length, 0);
        seq_write_end(&map_seq);
    }
    pthread_mutex_unlock(&map_mu);
    return rc;
}

/* Table changes take the apply lock: a fault reply or control request checks the table and maps
 * under that lock, so it can never map over a range the moment after it left the table (and
 * the caller munmapped it, letting other memory take its place). */
int rx_map_register(uint64_t base, uint64_t length) {
    apply_acquire();
    int rc = map_change(base, length, 1);
    apply_release();
    return rc;
}

int rx_map_unregister(uint64_t base, uint64_t length) {
    apply_acquire();
    int rc = map_change(base, length, 0);
    apply_release();
    return rc;
}

/* The fork child inherits the table but none of the memory (MADV_DONTFORK): every entry turns
 * stale, which only marks it (nothing is cut: rx.fork()'s child maps its clones over the stale
 * ranges, and rx_map_register trims them like any overlap). Only this thread exists. */
void maptab_atfork_child(void) {
    pthread_mutex_init(&map_mu, NULL);
    map_seq = 0;
    for (uint32_t i = 0; i < RX_GONE_MAX; i++) gone_tab[i].len = 0; /* the parent's unmaps */
    for (uint32_t i = 0; i < map_hi; i++) {
        map_tab[i].stale = MAP_STALE_FORK;
        /* Keep the addresses reserved (MADV_DONTFORK left a hole): nothing else may land there
         * before rx.fork()'s child maps its clones over them, and a touch still gets the clear
         * "not inherited" diagnostic. */
        if (map_tab[i].len)
            mmap((void *)(uintptr_t)map_tab[i].base, map_tab[i].len, PROT_NONE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
    }
}

/* The connection that owned the live entries is gone (rxd died or restarted): their pages are
 * out of reach for good, but their addresses stay reserved, PROT_NONE, until the process unmaps
 * them, so a touch gets the "lost" diagnostic instead of whatever would land there next (a new
 * vvar page, another mapping). Under the apply lock: no fault reply or control request can map
 * into them meanwhile, and replies already in flight are stale. The number of entries marked. */
int rx_map_lose_all(void) {
    apply_acquire();
    pthread_mutex_lock(&map_mu);
    int n = 0;
    seq_write_begin(&map_seq);
    for (uint32_t i = 0; i < map_hi; i++) {
        if (map_tab[i].len && map_tab[i].stale == MAP_LIVE) {
            ST(&map_tab[i].stale, MAP_STALE_LOST);
            n++;
        }
    }
    seq_write_end(&map_seq);
    for (uint32_t i = 0; i < map_hi; i++)
        if (map_tab[i].len && map_tab[i].stale == MAP_STALE_LOST) map_none(map_tab[i].base, map_tab[i].len);
    pthread_mutex_unlock(&map_mu);
    apply_bump_epoch_locked();
    apply_release();
    return n;
}

/* ---- reservations ----------------------------------------------------------------------------- */

int64_t rx_reserve(uint64_t length) {
    if (!length || (length & RX_PAGE_MASK)) return -EINVAL;
    void *p = mmap(NULL, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return -errno;
    if (madvise(p, length, MADV_DONTFORK) < 0) {
        int e = errno;
        munmap(p, length);
        return -e;
    }
    return (int64_t)(uintptr_t)p;
}

/* Both under the apply lock, and both make every fault reply already in flight stale: a control
 * request reads /proc/self/maps and a fault reply maps pages under that lock, and neither may act
 * on memory the process has just taken back (an old reply would re-map the old VMO's pages). */
int rx_reserve_at(uint64_t addr, uint64_t length) {
    if (!range_ok(addr, length)) return -EINVAL;
    apply_acquire();
    int rc = map_none(addr, length) < 0 ? -errno : 0;
    apply_bump_epoch_locked();
    apply_release();
    return rc;
}

int rx_unreserve(uint64_t addr, uint64_t length) {
    apply_acquire();
    int rc = munmap((void *)(uintptr_t)addr, length) < 0 ? -errno : 0;
    apply_bump_epoch_locked();
    apply_release();
    return rc;
}
