/* fastfault.c — the mirror's tables and the fault decision of rxd's fast path (rxfastfault.h).
 *
 * rx_ff_resolve is server/vm/_fault.py's _resolve_locked restricted to what needs no await and
 * no policy: a mapping with the access allowed, a tree nobody holds the lock of, and
 *   - a read: the window (the same fault-around as Mapping.fault_window) maps the node's own
 *     pages from its store with the mapping's permissions, an ancestor's pages read-only from
 *     the ancestor's store and the rest as the zero page, both marked in `shadowed`;
 *   - a write: the window's pages are the node's own, or (a node without a parent only: a
 *     clone's split is Python's) become so by a lazy commit that needs
 *     no decision of Python's: PhysicalMemory.commit's checks (every hard limit up the charge
 *     tree, the budget beside the reservations) pass, no high mark is passed (no throttling,
 *     no event), free memory stays above the pressure floor (no level changes), and nothing
 *     but the faulting mapping shows the old content (shadow marks only if it is the node's
 *     one mapping, no zero markers, no children reading through):
 *     then it counts and charges them exactly as PageStore.commit does. With
 *     RX_VMO_COMMIT_EXPLICIT the window shrinks to the held pages around the fault instead.
 * Anything else is a deferral: the fault goes to Python untouched (the fault-around state too,
 * so Python computes the same window). Callers hold the mirror's mutex (rxfastfault.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rxfastfault.h"
#include "rxwire.h"


struct rx_ff_proc *rx_ff_proc_new(void) {
    struct rx_ff_proc *p = calloc(1, sizeof *p);
    if (p) p->alive = 1;
    return p;
}

void rx_ff_proc_free(struct rx_ff_proc *p) {
    if (!p) return;
    free(p->maps);
    free(p->stores);
    free(p);
}

static int grow(void **arr, uint32_t *cap, uint32_t need, size_t size) {
    if (need <= *cap) return 0;
    uint32_t n = *cap ? *cap * 2 : 8;
    while (n < need) n *= 2;
    void *q = realloc(*arr, (size_t)n * size);
    if (!q) return -ENOMEM;
    *arr = q;
    *cap = n;
    return 0;
}

int rx_ff_proc_insert(struct rx_ff_proc *p, uint32_t i, struct rx_ff_mapping *m) {
    if (i > p->nmaps) return -EINVAL;
    if (grow((void **)&p->maps, &p->cap_maps, p->nmaps + 1, sizeof *p->maps)) return -ENOMEM;
    memmove(&p->maps[i + 1], &p->maps[i], (size_t)(p->nmaps - i) * sizeof *p->maps);
    p->maps[i] = m;
    p->nmaps++;
    return 0;
}

void rx_ff_proc_remove(struct rx_ff_proc *p, uint32_t i) {
    if (i >= p->nmaps) return;
    memmove(&p->maps[i], &p->maps[i + 1], (size_t)(p->nmaps - i - 1) * sizeof *p->maps);
    p->nmaps--;
}

void rx_ff_proc_clear(struct rx_ff_proc *p) { p->nmaps = 0; }

int rx_ff_proc_hold_store(struct rx_ff_proc *p, uint64_t store_id, int writable) {
    uint64_t word = store_id << 1 | (writable ? 1 : 0);
    for (uint32_t i = 0; i < p->nstores; i++)
        if (p->stores[i] >> 1 == store_id) { p->stores[i] = word; return 0; }
    if (grow((void **)&p->stores, &p->cap_stores, p->nstores + 1, sizeof *p->stores)) return -ENOMEM;
    p->stores[p->nstores++] = word;
    return 0;
}

void rx_ff_proc_drop_store(struct rx_ff_proc *p, uint64_t store_id) {
    for (uint32_t i = 0; i < p->nstores; i++)
        if (p->stores[i] >> 1 == store_id) { p->stores[i] = p->stores[--p->nstores]; return; }
}

void rx_ff_proc_drop_stores(struct rx_ff_proc *p) { p->nstores = 0; }

/* -1: not held, 0: read-only, 1: writable. */
static int held(const struct rx_ff_proc *p, uint64_t store_id) {
    for (uint32_t i = 0; i < p->nstores; i++)
        if (p->stores[i] >> 1 == store_id) return (int)(p->stores[i] & 1);
    return -1;
}

static struct rx_ff_mapping *find(const struct rx_ff_proc *p, uint64_t addr) {
    uint32_t lo = 0, hi = p->nmaps; /* the last mapping whose base <= addr */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (p->maps[mid]->base <= addr) lo = mid + 1;
        else hi = mid;
    }
    if (lo == 0) return NULL;
    struct rx_ff_mapping *m = p->maps[lo - 1];
    return addr - m->base < m->length ? m : NULL;
}

/* Mapping.fault_window, without changing the mapping (the caller commits the new state). */
static void fault_window(const struct rx_ff_mapping *m, uint64_t page, int write, uint64_t limit, uint64_t *start,
                         uint64_t *end, int64_t *window) {
    uint64_t end_page = (m->first_page << RX_PAGE_SHIFT) + m->length;
    uint64_t end_limit = end_page >> RX_PAGE_SHIFT;
    if (limit < end_limit) end_limit = limit;
    if (m->options & RX_VM_MAP_RANDOM) {
        *start = page, *end = page + 1, *window = m->window;
        return;
    }
    int64_t w;
    if ((int64_t)page == m->next_page) {
        w = m->window * 2 > 2 ? m->window * 2 : 2;
        if (w > RX_FF_AROUND_MAX_PAGES) w = RX_FF_AROUND_MAX_PAGES;
        *start = page;
        *end = (page + (uint64_t)w) & ~((uint64_t)w - 1);
        if (*end <= page) *end = page + (uint64_t)w;
    } else if (write) {
        w = 1, *start = page, *end = page + 1;
    } else {
        w = RX_FF_AROUND_READ_PAGES;
        *start = page & ~(uint64_t)(w - 1);
        if (*start < m->first_page) *start = m->first_page;
        *end = *start + (uint64_t)w;
    }
    if (*end > end_limit) *end = end_limit;
    *window = w;
}

static void advance(struct rx_ff_mapping *m, uint64_t end, int64_t window) {
    if (!(m->options & RX_VM_MAP_RANDOM)) m->window = window, m->next_page = (int64_t)end;
}

void rx_ff_fault_window(struct rx_ff_mapping *m, uint64_t page, int write, uint64_t limit, uint64_t *out) {
    int64_t window;
    fault_window(m, page, write, limit, &out[0], &out[1], &window);
    advance(m, out[1], window);
}

static int64_t *put_op(int64_t *o, uint64_t addr, uint64_t length, int kind, int prot, uint64_t store_id,
                       uint64_t file_offset) {
    o[RX_FAULT_OP_FIELD_ADDR] = (int64_t)addr;
    o[RX_FAULT_OP_FIELD_LENGTH] = (int64_t)length;
    o[RX_FAULT_OP_FIELD_KIND] = kind;
    o[RX_FAULT_OP_FIELD_PROT] = prot;
    o[RX_FAULT_OP_FIELD_STORE_ID] = (int64_t)store_id;
    o[RX_FAULT_OP_FIELD_FILE_OFFSET] = (int64_t)file_offset;
    return o + RX_FAULT_OP_WORDS;
}

/* Node pages [s, e) live in owner's store from page `at` on (owner NULL: they read as zero). */
struct owned {
    uint64_t s, e;
    const struct rx_ff_node *owner;
    uint64_t at;
};

/* CowPages.resolve of [start, end) (at most a window), page by page up the chain, merged into
 * maximal runs as _merge_resolved does: how many runs, or -1 when a chain is deeper than
 * RX_FF_MAX_DEPTH. */
static int resolve_chain(const struct rx_ff_node *node, uint64_t start, uint64_t end, struct owned *out) {
    int n = 0;
    for (uint64_t p = start; p < end; p++) {
        const struct rx_ff_node *x = node;
        uint64_t q = p;
        for (int depth = 0; !rx_pagemap_get(x->store->committed, q); depth++) {
            if (!x->parent || q >= x->parent_limit || rx_pagemap_get(x->zeroed, q)) { x = NULL; break; }
            if (depth == RX_FF_MAX_DEPTH) return -1;
            q += x->parent_offset;
            x = x->parent;
        }
        struct owned *last = n ? &out[n - 1] : NULL;
        if (last && last->e == p && last->owner == x && (!x || last->at + (p - last->s) == q))
            last->e = p + 1;
        else
            out[n++] = (struct owned){p, p + 1, x, x ? q : 0};
    }
    return n;
}

/* The slot of group g in a store's charges, or 0 (Python gives it one on its next commit). */
static uint32_t slot_of(const struct rx_ff_charges *ch, const struct rx_ff_group *g) {
    for (uint32_t i = 1; i < ch->nslots; i++)
        if (ch->groups[i] == g) return i;
    return 0;
}

/* Commit the clear runs among runs[0..n) (node pages) for process p: RX_FF_SERVED, or why
 * Python must (nothing changed). See the file comment for the conditions. */
static int commit(struct rx_ff_proc *p, struct rx_ff_pmm *pmm, struct rx_ff_node *node, const struct rx_ff_vmo *vmo,
                  const uint64_t *runs, int n) {
    if (!pmm || vmo->reserving || node->nchildren) return RX_FF_COMMIT;
    struct rx_ff_group *g = p->charge;
    struct rx_ff_charges *charges = node->store->charges;
    uint32_t slot = g && !g->retired ? slot_of(charges, g) : 0;
    if (!slot) return RX_FF_COMMIT;
    int64_t missing = 0;
    for (int i = 0; i < n; i++) {
        if (runs[3 * i + 2]) continue;
        uint64_t s = runs[3 * i], e = runs[3 * i + 1];
        /* What shows these pages now must be taken away, unless it is only the faulting
         * mapping itself (its zero pages, which the reply replaces: Vmo.commit_locked's
         * `exclude`). */
        if (rx_pagemap_count(node->zeroed, s, e)) return RX_FF_COMMIT;
        if (node->nmappings != 1 && rx_pagemap_count(node->shadowed, s, e)) return RX_FF_COMMIT;
        missing += (int64_t)(e - s);
    }
    for (const struct rx_ff_group *x = g; x; x = x->parent) {
        if (x->max >= 0 && x->charged + x->reserved + missing > x->max) return RX_FF_COMMIT;
        if (x->high >= 0 && x->charged + missing > x->high) return RX_FF_COMMIT;
    }
    int64_t free_pages = pmm->total - pmm->committed;
    if (missing > free_pages - pmm->reserved || free_pages - missing <= pmm->floor) return RX_FF_COMMIT;
    struct rx_pagemap *committed = node->store->committed;
    for (int i = 0; i < n; i++) {
        if (runs[3 * i + 2]) continue;
        uint64_t s = runs[3 * i], e = runs[3 * i + 1];
        if (rx_pagemap_set_range(charges->map, s, e, (int)slot) < 0 || rx_pagemap_set_range(committed, s, e, 1) < 0) {
            for (int j = 0; j <= i; j++) /* out of memory for a chunk: undo, Python says so */
                if (!runs[3 * j + 2]) {
                    rx_pagemap_set_range(charges->map, runs[3 * j], runs[3 * j + 1], 0);
                    rx_pagemap_set_range(committed, runs[3 * j], runs[3 * j + 1], 0);
                }
            return RX_FF_COMMIT;
        }
    }
    for (int i = 0; i < n; i++) /* (clear_marks: the reply replaces what the marks recorded) */
        if (!runs[3 * i + 2]) rx_pagemap_set_range(node->shadowed, runs[3 * i], runs[3 * i + 1], 0);
    pmm->committed += missing;
    for (struct rx_ff_group *x = g; x; x = x->parent) x->charged += missing;
    charges->pages[slot] += (uint64_t)missing;
    return RX_FF_SERVED;
}

int rx_ff_resolve(struct rx_ff_proc *p, struct rx_ff_pmm *pmm, struct rx_ff_counters *c, int64_t seq, uint64_t addr,
                  int write, int64_t *out, uint32_t *nout) {
    if (!p->alive) return RX_FF_GONE;
    struct rx_ff_mapping *m = find(p, addr);
    if (!m) return RX_FF_NO_MAPPING;
    struct rx_ff_vmo *vmo = m->vmo;
    struct rx_ff_node *node = vmo->node;
    if (*node->tree_locked) return RX_FF_LOCKED;
    if (!(m->perms & RX_VM_PERM_READ) || (write && !(m->perms & RX_VM_PERM_WRITE))) return RX_FF_DENIED;
    uint64_t page = m->first_page + ((addr - m->base) >> RX_PAGE_SHIFT);
    if (page >= vmo->size_pages) return RX_FF_OUT_OF_RANGE;

    uint64_t off = vmo->node_offset, start, end;
    int64_t window;
    fault_window(m, page, write, vmo->size_pages, &start, &end, &window);
    struct rx_pagemap *committed = node->store->committed;
    uint64_t store_id = node->store->store_id;
    int prot = m->perms & (RX_VM_PERM_READ | RX_VM_PERM_WRITE);
    /* The window's runs in node pages: (start, end, committed) triples; a window is at most
     * RX_FF_AROUND_MAX_PAGES pages, so there are at most that many runs. */
    uint64_t runs[3 * RX_FF_AROUND_MAX_PAGES];
    int n = rx_pagemap_runs(committed, start + off, end + off, runs, RX_FF_AROUND_MAX_PAGES);
    int64_t *o = out + RX_FAULT_REPLY_HEAD;
    int zero_page = 0;

    if (write) {
        if (node->parent && (vmo->commit_explicit || n > 1 || !runs[2])) return RX_FF_ANCESTOR; /* a split */
        if (held(p, store_id) != 1) return RX_FF_STORE;
        if (vmo->commit_explicit) {
            int at = 0;
            while (!(runs[3 * at] <= page + off && page + off < runs[3 * at + 1])) at++;
            if (!runs[3 * at + 2]) return RX_FF_COMMIT; /* (Python refuses it) */
            start = runs[3 * at] - off, end = runs[3 * at + 1] - off; /* the held pages around it */
        } else if (n > 1 || !runs[2]) {
            int why = commit(p, pmm, node, vmo, runs, n);
            if (why != RX_FF_SERVED) return why;
        }
        o = put_op(o, m->base + ((start - m->first_page) << RX_PAGE_SHIFT), (end - start) << RX_PAGE_SHIFT,
                   RX_FAULT_OP_STORE, prot, store_id, (start + off) << RX_PAGE_SHIFT);
    } else {
        /* Where each page of the window lives: CowPages.resolve. */
        struct owned own[RX_FF_AROUND_MAX_PAGES];
        int k = 0;
        if (!node->parent) {
            for (int i = 0; i < n; i++)
                own[k++] = (struct owned){runs[3 * i], runs[3 * i + 1], runs[3 * i + 2] ? node : NULL, runs[3 * i]};
        } else if ((k = resolve_chain(node, start + off, end + off, own)) < 0) {
            return RX_FF_ANCESTOR;
        }
        /* Every store the reply names must be held: ours writable where the mapping is. */
        for (int i = 0; i < k; i++) {
            if (!own[i].owner) continue;
            int need = own[i].owner == node && (m->perms & RX_VM_PERM_WRITE) ? 1 : 0;
            if (held(p, own[i].owner->store->store_id) < need) return RX_FF_STORE;
        }
        for (int i = 0; i < k && i < RX_FAULT_MAX_OPS; i++) {
            uint64_t s = own[i].s, e = own[i].e;
            uint64_t at = m->base + ((s - off - m->first_page) << RX_PAGE_SHIFT), length = (e - s) << RX_PAGE_SHIFT;
            if (own[i].owner == node) {
                o = put_op(o, at, length, RX_FAULT_OP_STORE, prot, store_id, s << RX_PAGE_SHIFT);
                continue;
            }
            /* Not this node's own page: read-only, and shadow-marked (see _cowpages.py). A
             * failure here leaves marks that only cost an extra invalidation later. */
            if (rx_pagemap_set_range(node->shadowed, s, e, 1) < 0) return RX_FF_COMMIT;
            if (!own[i].owner)
                o = put_op(o, at, length, RX_FAULT_OP_ZERO, RX_VM_PERM_READ, 0, 0);
            else
                o = put_op(o, at, length, RX_FAULT_OP_STORE, RX_VM_PERM_READ, own[i].owner->store->store_id,
                           own[i].at << RX_PAGE_SHIFT);
        }
        for (int i = 0; i < k; i++)
            if (own[i].s <= page + off && page + off < own[i].e) zero_page = !own[i].owner;
    }
    advance(m, end, window);
    c->page_faults++;
    c->zero_page_faults += (uint64_t)zero_page;
    p->page_faults++;
    out[RX_FAULT_REPLY_FIELD_SEQ] = seq;
    out[RX_FAULT_REPLY_FIELD_STATUS] = RX_OK;
    out[RX_FAULT_REPLY_FIELD_INVAL_SEQ] = (int64_t)p->inval_seq;
    *nout = (uint32_t)(o - out);
    return RX_FF_SERVED;
}
