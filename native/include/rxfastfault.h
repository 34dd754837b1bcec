/* rxfastfault.h — rxd's fault fast path (ARCHITECTURE.md "The fault fast path"): the faults rxd
 * can decide in C, from state Python keeps in C memory, and the thread that serves the fault
 * channels with them. Server side only.
 *
 * Two parts:
 *   - the mirror (server/fastfault.c): C structs Python fills and keeps current for what a
 *     fault reads (a page store, a copy-on-write node, a VMO, a mapping, a process), and the
 *     decision, rx_ff_resolve, which either answers a fault exactly as server/vm/_fault.py
 *     would, or says why it cannot (a deferral reason) and changes nothing;
 *   - the fault server (server/faultserver.c): a thread that owns the fault channels (epoll),
 *     decodes requests, answers what rx_ff_resolve answers and queues everything else, with an
 *     eventfd, for rxd's trio side, which answers those on the same channel.
 *
 * Locking: one mutex (the server's) guards every struct here. rxd's trio thread holds it
 * whenever it runs Python and lets go only while it waits for I/O (a trio instrument:
 * server/ipc/_fastfaults.py), so at every moment the fault thread can take it, no trio task is
 * in the middle of a step that does not await, and Python's state is consistent. What stays
 * inconsistent across an await is guarded by a tree lock: its word (`tree_locked`) is set while
 * a trio task holds it, and the fault thread defers every fault on a locked tree. Without a
 * server (no thread) the trio thread is alone and needs no mutex.
 * Conventions as rxnative.h: a value >= 0 on success, -errno on failure.
 */
#ifndef RXFASTFAULT_H
#define RXFASTFAULT_H

#include <stdint.h>

#include "rxpagemap.h"

/* cdef-begin */

/* ---- the mirror ------------------------------------------------------------------------------ */

/* Fault-around (server/vm/_mapping.py reads these): a random read maps an aligned window of this
 * many pages; sequential faults double the window up to the maximum. */
#define RX_FF_AROUND_READ_PAGES 16
#define RX_FF_AROUND_MAX_PAGES 512
/* Ancestors a read resolves through in C; deeper chains are Python's. */
#define RX_FF_MAX_DEPTH 32

struct rx_ff_group {              /* a ChargeGroup (server/vm/_charge.py): its counters live here */
    int64_t charged;              /* pages: its own and its children's */
    int64_t reserved;             /* promised to RX_OVERCOMMIT_NEVER VMOs, not committed yet */
    int64_t max;                  /* hard limit in pages, -1: none */
    int64_t high;                 /* throttle point in pages, -1: none */
    struct rx_ff_group *parent;   /* NULL: the root */
    int32_t retired;              /* its job is gone: new pages go to an ancestor (Python's call) */
    int32_t pad;
};

struct rx_ff_charges {            /* a ChargeMap: per page of a store, the slot of its group */
    struct rx_pagemap *map;       /* the slot bytes (0: not committed) */
    struct rx_ff_group *groups[256]; /* slot -> group; [0] and free slots NULL */
    uint64_t pages[256];          /* slot -> pages charged through this store */
    uint32_t nslots;              /* slots in use are [1, nslots) */
    uint32_t pad;
};

struct rx_ff_pmm {                /* PhysicalMemory's counters (server/vm/_pmm.py) */
    int64_t total;                /* the budget, pages */
    int64_t committed;
    int64_t reserved;
    int64_t floor;                /* the fault thread commits only if free pages stay above this
                                     (the pressure level could change at or below it) */
};

struct rx_ff_store {              /* a PageStore */
    struct rx_pagemap *committed; /* its committed pages */
    struct rx_ff_charges *charges;
    uint64_t store_id;
};

struct rx_ff_node {               /* a CowPages node */
    struct rx_ff_store *store;    /* the store it owns now (a snapshot or collapse replaces it) */
    struct rx_pagemap *shadowed;  /* pages some client maps from elsewhere than this store */
    struct rx_pagemap *zeroed;    /* zero markers */
    struct rx_ff_node *parent;    /* NULL: no ancestor to read through to */
    uint64_t parent_offset;       /* pages: my page i is the parent's page i + parent_offset */
    uint64_t parent_limit;        /* pages [0, parent_limit) read through to the parent */
    int32_t *tree_locked;         /* its tree's lock word: nonzero while a trio task holds it */
    int32_t nchildren;            /* nodes reading through to this one */
    int32_t nmappings;            /* mappings of the VMOs standing on it, in every process */
};

struct rx_ff_vmo {
    struct rx_ff_node *node;
    uint64_t node_offset;         /* pages */
    uint64_t size_pages;
    int32_t commit_explicit;      /* RX_VMO_COMMIT_EXPLICIT: faults never commit */
    int32_t reserving;            /* it has a reservation (RX_OVERCOMMIT_NEVER): Python commits */
};

struct rx_ff_mapping {
    uint64_t base;
    uint64_t length;              /* bytes; shrinks when a cut splits the mapping */
    uint64_t first_page;          /* the VMO page mapped at base */
    struct rx_ff_vmo *vmo;
    int32_t perms;                /* RX_VM_PERM_* */
    int32_t options;              /* RX_VM_MAP_* (RX_VM_MAP_RANDOM turns fault-around off) */
    int64_t next_page;            /* fault-around: where the last window ended (-1: none) */
    int64_t window;               /* fault-around: the last window's size in pages */
};

struct rx_ff_proc {               /* a process: its mappings by address, the store fds it holds */
    uint64_t inval_seq;           /* control requests sent so far (WIRE.md "Ordering") */
    uint64_t page_faults;         /* served, by either side */
    int32_t alive;
    uint32_t nmaps;
    uint32_t cap_maps;
    uint32_t nstores;
    uint32_t cap_stores;
    uint32_t pad;
    struct rx_ff_mapping **maps;  /* sorted by base, never overlapping */
    uint64_t *stores;             /* store_id << 1 | writable */
    struct rx_ff_group *charge;   /* where its commits are charged (its job's group) */
};

/* Why a fault went to the trio side (the slow path); 0 is "served here". */
#define RX_FF_SERVED 0
#define RX_FF_NO_MAPPING 1        /* no mapping at the address: Python refuses it */
#define RX_FF_LOCKED 2            /* its tree's lock is held: a trio task is changing the tree */
#define RX_FF_DENIED 3            /* the mapping's permissions refuse the access */
#define RX_FF_OUT_OF_RANGE 4      /* past the VMO's end */
#define RX_FF_ANCESTOR 5          /* a write to a node that reads through to a parent (a
                                     copy-on-write split), or a read through a chain deeper than
                                     RX_FF_MAX_DEPTH */
#define RX_FF_COMMIT 6            /* a write needs a commit Python makes: past a limit or a high mark,
                                     near a pressure level, a reservation, zero pages to take away,
                                     children reading through, a charge slot not there yet */
#define RX_FF_STORE 7             /* the client lacks the store fd, or holds it read-only */
#define RX_FF_GONE 8              /* the process is being torn down */
#define RX_FF_FRAME 9             /* a frame the fault server does not decode (Python judges it) */
#define RX_FF_REASONS 10

struct rx_ff_counters {
    uint64_t page_faults;         /* served here (the trio side counts its own in Python) */
    uint64_t zero_page_faults;
    uint64_t deferred[RX_FF_REASONS]; /* [reason]: faults handed to the trio side; [0] unused */
    uint64_t lock_waits;          /* times the fault thread found the mutex held by trio */
    uint64_t lock_wait_ns;        /* and how long it waited, in all */
    uint64_t lock_wait_max_ns;    /* the longest such wait */
};

struct rx_ff_proc *rx_ff_proc_new(void);
void rx_ff_proc_free(struct rx_ff_proc *p);
/* The mapping table, in Python's order (AddressSpace): insert m at index i / remove index i. */
int rx_ff_proc_insert(struct rx_ff_proc *p, uint32_t i, struct rx_ff_mapping *m);
void rx_ff_proc_remove(struct rx_ff_proc *p, uint32_t i);
void rx_ff_proc_clear(struct rx_ff_proc *p);
/* The client holds store_id's fd (writable or not) / no longer holds it / holds none. */
int rx_ff_proc_hold_store(struct rx_ff_proc *p, uint64_t store_id, int writable);
void rx_ff_proc_drop_store(struct rx_ff_proc *p, uint64_t store_id);
void rx_ff_proc_drop_stores(struct rx_ff_proc *p);

/* Mapping.fault_window: the pages [out[0], out[1]) a fault at VMO page `page` brings in (limit:
 * the VMO's page count), and the mapping's fault-around state moved on. The trio side's fault
 * path calls it too, so both paths grow the same windows. */
void rx_ff_fault_window(struct rx_ff_mapping *m, uint64_t page, int write, uint64_t limit, uint64_t *out);

/* The fault at addr (a write if `write`) of process p, decided as server/vm/_fault.py would:
 * RX_FF_SERVED with the reply [seq, 0, inval_seq, op*6...] in out (room for 3 + 6 *
 * RX_FAULT_MAX_OPS) and its length in *nout, the mirror updated (fault-around state, shadow
 * marks, commits and their charges, counters); or a reason > 0 and nothing changed. pmm NULL:
 * commit nothing (a write that needs a commit is RX_FF_COMMIT). */
int rx_ff_resolve(struct rx_ff_proc *p, struct rx_ff_pmm *pmm, struct rx_ff_counters *c, int64_t seq, uint64_t addr,
                  int write, int64_t *out, uint32_t *nout);

/* ---- the fault server ------------------------------------------------------------------------- */

struct rx_ff_server;

/* What the fault thread hands the trio side (rx_ff_drain). */
#define RX_FF_EV_FAULT 1          /* decide this fault (seq, addr, write; `reason` says why) */
#define RX_FF_EV_CLOSED 2         /* the channel hit EOF or an error: it is out of epoll */
#define RX_FF_EV_HANDOFF 3        /* the thread stopped reading the channel: its unread bytes are
                                     rx_ff_channel_bytes, Python reads the rest itself */
#define RX_FF_EV_SEND 4           /* a reply the socket would not take at once: send
                                     rx_ff_channel_bytes, then rx_ff_channel_rearm */

struct rx_ff_event {
    uint64_t channel;
    int32_t kind;
    int32_t reason;
    int64_t seq;
    uint64_t addr;
    int32_t write;
    int32_t pad;
};

/* A server (no thread yet) committing against pmm, counting into c; NULL when out of memory or
 * fds. */
struct rx_ff_server *rx_ff_server_new(struct rx_ff_pmm *pmm, struct rx_ff_counters *c);
/* Start the fault thread; the caller holds the mutex (rx_ff_lock). 0 or -errno. */
int rx_ff_server_start(struct rx_ff_server *s);
/* Stop and join the thread; the caller holds the mutex and no longer does afterwards. */
void rx_ff_server_stop(struct rx_ff_server *s);
/* Free it: the thread is stopped (or never ran) and every channel removed. */
void rx_ff_server_free(struct rx_ff_server *s);
void rx_ff_lock(struct rx_ff_server *s);
void rx_ff_unlock(struct rx_ff_server *s);
/* The eventfd that is readable while events wait for rx_ff_drain. */
int rx_ff_wake_fd(const struct rx_ff_server *s);

/* Serve connected fault channel fd (its hello answered, nothing buffered) for process p: its id
 * (> 0), or -errno. The caller keeps the fd open, and p alive, until rx_ff_channel_remove. */
int64_t rx_ff_channel_add(struct rx_ff_server *s, int fd, struct rx_ff_proc *p);
void rx_ff_channel_remove(struct rx_ff_server *s, int64_t id);
/* Watch the channel again after a FAULT or SEND event was answered. 0 or -errno. */
int rx_ff_channel_rearm(struct rx_ff_server *s, int64_t id);
/* Copy the channel's pending bytes (HANDOFF: unread input; SEND: unsent output) into out and
 * forget them: how many, or -ENOENT / -ENOSPC. */
int rx_ff_channel_bytes(struct rx_ff_server *s, int64_t id, uint8_t *out, uint32_t cap);
/* Move up to max queued events into out: how many. */
int rx_ff_drain(struct rx_ff_server *s, struct rx_ff_event *out, int max);

/* cdef-end */

#endif /* RXFASTFAULT_H */
