/* rxnative.c — see rxnative.h for every function's contract; DESIGN.md §4/§5 and proto/WIRE.md
 * for why things are the way they are.
 *
 * Lock order / who guards what:
 *   map_mu, store_mu   serialise writers of the two tables (Python threads). Readers (the fault
 *                      handler, the control thread) never lock: they read under a seqlock
 *                      (map_seq, store_seq) and retry when a writer was active.
 *   apply_lock         a spinlock held only while doing mmap/mprotect/madvise for a fault reply
 *                      or a control request, never across socket I/O. Guards applied_seq.
 *   slot.busy          a fault-channel slot belongs to whoever CASed busy 0 -> 1.
 *   ctl_mu             start/stop/exit of the control thread; guards ctl_fd.
 *   install_mu         rx_trap_install; the handler reads prev_act[prev_idx] lock-free.
 * Nothing in the signal handler takes a pthread lock, mallocs, or uses TLS.
 */
#define _GNU_SOURCE
#include "rxnative.h"
#include "rxwire.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

#define RX_PAGE_MASK (RX_PAGE_SIZE - 1)
#define RX_MAP_MAX 8192
#define RX_STORE_MAX 1024
#define RX_FAULT_SLOTS 16
#define RX_FAULT_BUF 16384
#define RX_FAULT_MAX_VALUES (RX_FAULT_REPLY_HEAD + RX_FAULT_OP_WORDS * RX_FAULT_MAX_OPS)
#define CTL_BUF_BYTES RX_CONTROL_MAX_FRAME_BYTES
/* PROTECT has the widest ranges. */
#define CTL_MAX_VALUES (RX_CONTROL_REQUEST_HEAD + RX_CONTROL_PROTECT_WIDTH * RX_CONTROL_MAX_RANGES)
#define RX_FDQ_MAX 16

#define LD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define ST(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)

enum { CNT_FAULTS, CNT_PAGES, CNT_STALE, CNT_CONTROL, CNT_CHANNELS, CNT_N = 8 };
static uint64_t counters[CNT_N];

static void cnt_add(int which, uint64_t n) { __atomic_fetch_add(&counters[which], n, __ATOMIC_RELAXED); }

void rx_trap_counters(uint64_t out[8]) {
    for (int i = 0; i < CNT_N; i++) out[i] = LD(&counters[i]);
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- seqlock: lock-free readers that a signal handler can use ---------------------------- */

static uint32_t seq_read_begin(const uint32_t *seq) {
    for (;;) {
        uint32_t s = __atomic_load_n(seq, __ATOMIC_ACQUIRE);
        if (!(s & 1)) return s;
        sched_yield(); /* a writer (another thread) is mid-update */
    }
}

static int seq_read_retry(const uint32_t *seq, uint32_t s) {
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return LD(seq) != s;
}

static void seq_write_begin(uint32_t *seq) {
    ST(seq, LD(seq) + 1);
    __atomic_thread_fence(__ATOMIC_RELEASE);
}

static void seq_write_end(uint32_t *seq) { __atomic_store_n(seq, LD(seq) + 1, __ATOMIC_RELEASE); }

/* ---- mapping table ------------------------------------------------------------------------ */

/* An entry is free when len == 0. Entries never overlap. stale = inherited over fork. */
struct rx_map_ent {
    uint64_t base;
    uint64_t len;
    uint32_t stale;
};

static struct rx_map_ent map_tab[RX_MAP_MAX];
static uint32_t map_hi; /* entries [0, map_hi) may be in use */
static uint32_t map_seq;
static pthread_mutex_t map_mu = PTHREAD_MUTEX_INITIALIZER;

static int range_ok(uint64_t base, uint64_t len) {
    return len != 0 && !(base & RX_PAGE_MASK) && !(len & RX_PAGE_MASK) && base + len > base;
}

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
                r = LD(&map_tab[i].stale) ? 2 : 1;
                break;
            }
        }
    } while (seq_read_retry(&map_seq, s));
    return r;
}

/* The lowest piece of [cursor, end) that lies inside one live entry: *lo and *len, 1 if found.
 * Walking with cursor = *lo + *len visits every piece in address order, however many entries the
 * range spans, with no buffer to overflow. */
static int map_next_piece(uint64_t cursor, uint64_t end, uint64_t *lo, uint64_t *len) {
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

/* Inside a seqlock write section, with room checked. */
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

static int map_change(uint64_t base, uint64_t length, int add) {
    if (!range_ok(base, length)) return -EINVAL;
    pthread_mutex_lock(&map_mu);
    int rc = 0;
    if (!map_room_locked(base, base + length, add ? 1 : 0)) {
        rc = -ENOMEM;
    } else {
        seq_write_begin(&map_seq);
        map_cut_locked(base, base + length);
        if (add) map_put_locked(base, length, 0);
        seq_write_end(&map_seq);
    }
    pthread_mutex_unlock(&map_mu);
    return rc;
}


/* ---- store table ---------------------------------------------------------------------------- */

struct rx_store_ent {
    uint64_t id;
    int fd;
    int used;
    int owned; /* the fd came on the control channel: the table closes it when it goes */
    uint32_t gen; /* the control session that sent it (owned entries) */
};

static struct rx_store_ent store_tab[RX_STORE_MAX];
static uint32_t store_seq;
static pthread_mutex_t store_mu = PTHREAD_MUTEX_INITIALIZER;

static int store_lookup(uint64_t id) {
    int fd;
    uint32_t s;
    do {
        s = seq_read_begin(&store_seq);
        fd = -1;
        for (int i = 0; i < RX_STORE_MAX; i++) {
            if (LD(&store_tab[i].used) && LD(&store_tab[i].id) == id) {
                fd = LD(&store_tab[i].fd);
                break;
            }
        }
    } while (seq_read_retry(&store_seq, s));
    return fd;
}

/* Put (store_id, fd) in the table, replacing an entry for the same id. *old gets the replaced fd
 * if the table owned it (the caller closes it once no fault handler can be using it), else -1. */
static int store_put(uint64_t store_id, int fd, int owned, uint32_t gen, int *old) {
    *old = -1;
    if (fd < 0) return -EBADF;
    pthread_mutex_lock(&store_mu);
    int slot = -1, rc = 0;
    for (int i = 0; i < RX_STORE_MAX; i++) {
        if (store_tab[i].used && store_tab[i].id == store_id) { slot = i; break; }
        if (!store_tab[i].used && slot < 0) slot = i;
    }
    if (slot < 0) {
        rc = -ENOMEM;
    } else {
        if (store_tab[slot].used && store_tab[slot].owned && store_tab[slot].fd != fd) *old = store_tab[slot].fd;
        seq_write_begin(&store_seq);
        ST(&store_tab[slot].id, store_id);
        ST(&store_tab[slot].fd, fd);
        ST(&store_tab[slot].owned, owned);
        store_tab[slot].gen = gen;
        ST(&store_tab[slot].used, 1);
        seq_write_end(&store_seq);
    }
    pthread_mutex_unlock(&store_mu);
    return rc;
}

static int store_drop(uint64_t store_id, int *old) {
    *old = -1;
    pthread_mutex_lock(&store_mu);
    int rc = -ENOENT;
    for (int i = 0; i < RX_STORE_MAX; i++) {
        if (store_tab[i].used && store_tab[i].id == store_id) {
            if (store_tab[i].owned) *old = store_tab[i].fd;
            seq_write_begin(&store_seq);
            ST(&store_tab[i].used, 0);
            ST(&store_tab[i].fd, -1);
            seq_write_end(&store_seq);
            rc = 0;
            break;
        }
    }
    pthread_mutex_unlock(&store_mu);
    return rc;
}

int rx_store_register(uint64_t store_id, int fd) {
    int old;
    return store_put(store_id, fd, 0, 0, &old);
}

/* The control session `gen` ended: its stores' fds go with it (store ids mean nothing to the
 * next session, which may talk to another rxd). Caller holds the apply lock. */
static void store_drop_session(uint32_t gen) {
    pthread_mutex_lock(&store_mu);
    for (int i = 0; i < RX_STORE_MAX; i++) {
        if (store_tab[i].used && store_tab[i].owned && store_tab[i].gen == gen) {
            int fd = store_tab[i].fd;
            seq_write_begin(&store_seq);
            ST(&store_tab[i].used, 0);
            ST(&store_tab[i].fd, -1);
            seq_write_end(&store_seq);
            close(fd);
        }
    }
    pthread_mutex_unlock(&store_mu);
}

int rx_store_fd(uint64_t store_id) {
    int fd = store_lookup(store_id);
    return fd < 0 ? -ENOENT : fd;
}

int rx_store_unregister(uint64_t store_id) {
    int old;
    return store_drop(store_id, &old);
}

/* ---- msgpack: arrays of integers, and a bin for the token --------------------------------- */

static size_t mp_put_array(uint8_t *p, uint32_t n) {
    if (n < 16) { p[0] = (uint8_t)(0x90 | n); return 1; }
    if (n < 65536) { p[0] = 0xdc; p[1] = (uint8_t)(n >> 8); p[2] = (uint8_t)n; return 3; }
    p[0] = 0xdd;
    for (int i = 0; i < 4; i++) p[1 + i] = (uint8_t)(n >> (24 - 8 * i));
    return 5;
}

static size_t mp_put_be(uint8_t *p, uint8_t tag, uint64_t v, int bytes) {
    p[0] = tag;
    for (int i = 0; i < bytes; i++) p[1 + i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
    return 1 + (size_t)bytes;
}

/* The smallest encoding, like Python's msgpack. */
static size_t mp_put_int(uint8_t *p, int64_t v) {
    if (v >= 0) {
        uint64_t u = (uint64_t)v;
        if (u < 128) { p[0] = (uint8_t)u; return 1; }
        if (u <= 0xff) return mp_put_be(p, 0xcc, u, 1);
        if (u <= 0xffff) return mp_put_be(p, 0xcd, u, 2);
        if (u <= 0xffffffffu) return mp_put_be(p, 0xce, u, 4);
        return mp_put_be(p, 0xcf, u, 8);
    }
    if (v >= -32) { p[0] = (uint8_t)(int8_t)v; return 1; }
    if (v >= INT8_MIN) return mp_put_be(p, 0xd0, (uint64_t)v, 1);
    if (v >= INT16_MIN) return mp_put_be(p, 0xd1, (uint64_t)v, 2);
    if (v >= INT32_MIN) return mp_put_be(p, 0xd2, (uint64_t)v, 4);
    return mp_put_be(p, 0xd3, (uint64_t)v, 8);
}

static size_t mp_put_uint(uint8_t *p, uint64_t u) {
    return u <= INT64_MAX ? mp_put_int(p, (int64_t)u) : mp_put_be(p, 0xcf, u, 8);
}

static size_t mp_put_bin(uint8_t *p, const uint8_t *data, uint8_t n) {
    p[0] = 0xc4;
    p[1] = n;
    for (int i = 0; i < n; i++) p[2 + i] = data[i];
    return 2 + (size_t)n;
}

static uint64_t mp_be(const uint8_t *p, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v = (v << 8) | p[i];
    return v;
}

/* One scalar: bytes used, 0 when more bytes are needed, -1 when it is not an integer/nil/bool.
 * uint64 values above INT64_MAX come back reinterpreted (addresses never get there). */
static int mp_get_int(const uint8_t *p, size_t n, int64_t *out) {
    if (n < 1) return 0;
    uint8_t b = p[0];
    int w;
    if (b < 0x80) { *out = b; return 1; }
    if (b >= 0xe0) { *out = (int8_t)b; return 1; }
    switch (b) {
    case 0xc0: *out = 0; return 1; /* nil */
    case 0xc2: *out = 0; return 1; /* false */
    case 0xc3: *out = 1; return 1; /* true */
    case 0xcc: case 0xcd: case 0xce: case 0xcf:
        w = 1 << (b - 0xcc);
        if (n < (size_t)w + 1) return 0;
        *out = (int64_t)mp_be(p + 1, w);
        return w + 1;
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        w = 1 << (b - 0xd0);
        if (n < (size_t)w + 1) return 0;
        uint64_t u = mp_be(p + 1, w);
        int shift = 64 - 8 * w; /* sign-extend */
        *out = shift ? (int64_t)(u << shift) >> shift : (int64_t)u;
        return w + 1;
    }
    default:
        return -1;
    }
}

/* One whole array of integers: 1 with *used bytes, 0 when incomplete, -1 when malformed or
 * longer than maxv. */
static int mp_get_array(const uint8_t *p, size_t n, int64_t *v, uint32_t maxv, uint32_t *count,
                        size_t *used) {
    if (n < 1) return 0;
    uint32_t len;
    size_t at;
    if ((p[0] & 0xf0) == 0x90) { len = p[0] & 0x0f; at = 1; }
    else if (p[0] == 0xdc) { if (n < 3) return 0; len = (uint32_t)mp_be(p + 1, 2); at = 3; }
    else if (p[0] == 0xdd) { if (n < 5) return 0; len = (uint32_t)mp_be(p + 1, 4); at = 5; }
    else return -1;
    if (len > maxv) return -1;
    for (uint32_t i = 0; i < len; i++) {
        int k = mp_get_int(p + at, n - at, &v[i]);
        if (k <= 0) return k;
        at += (size_t)k;
    }
    *count = len;
    *used = at;
    return 1;
}

/* ---- socket I/O (async-signal-safe) ---------------------------------------------------------- */

static int send_all(int fd, const uint8_t *p, size_t n) {
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL); /* a dead rxd must not SIGPIPE us */
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Read until one whole array is buffered; leftover bytes stay for the next frame. */
/* An fd queue for a channel that carries SCM_RIGHTS: fds arrive with the bytes of the message
 * they belong to, in order, so a FIFO matches them to the requests that name them. */
struct rx_fdq {
    int fds[RX_FDQ_MAX];
    int n;
};

static void fdq_take(struct rx_fdq *q, struct msghdr *mh) {
    for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int *fds = (int *)CMSG_DATA(c);
        for (int i = 0; i < k; i++) {
            if (q->n < RX_FDQ_MAX) q->fds[q->n++] = fds[i];
            else close(fds[i]); /* more than rxd ever sends unasked: drop them */
        }
    }
}

/* The oldest queued fd, or -1. */
static int fdq_pop(struct rx_fdq *q) {
    if (!q->n) return -1;
    int fd = q->fds[0];
    memmove(q->fds, q->fds + 1, (size_t)(q->n - 1) * sizeof(int));
    q->n--;
    return fd;
}

static int read_frame_fds(int fd, uint8_t *buf, size_t cap, size_t *len, int64_t *v, uint32_t maxv,
                          uint32_t *count, struct rx_fdq *q) {
    for (;;) {
        if (*len) {
            size_t used = 0;
            int r = mp_get_array(buf, *len, v, maxv, count, &used);
            if (r < 0) return -1;
            if (r > 0) {
                memmove(buf, buf + used, *len - used);
                *len -= used;
                return 0;
            }
        }
        if (*len >= cap) return -1; /* a frame bigger than the buffer */
        ssize_t k;
        if (q) {
            union { char buf[CMSG_SPACE(sizeof(int) * RX_FDQ_MAX)]; struct cmsghdr align; } cbuf;
            struct iovec iov = { buf + *len, cap - *len };
            struct msghdr mh;
            memset(&mh, 0, sizeof mh);
            mh.msg_iov = &iov;
            mh.msg_iovlen = 1;
            mh.msg_control = cbuf.buf;
            mh.msg_controllen = sizeof cbuf.buf;
            k = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
            if (k > 0) fdq_take(q, &mh);
        } else {
            k = read(fd, buf + *len, cap - *len);
        }
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (k == 0) return -1;
        *len += (size_t)k;
    }
}

static int read_frame(int fd, uint8_t *buf, size_t cap, size_t *len, int64_t *v, uint32_t maxv,
                      uint32_t *count) {
    return read_frame_fds(fd, buf, cap, len, v, maxv, count, NULL);
}

/* ---- apply lock --------------------------------------------------------------------------- */

static int apply_lock;
static uint64_t applied_seq; /* guarded by apply_lock */
/* Bumped (under apply_lock) when the client itself takes memory back: a fault reply requested
 * before then is stale, like one overtaken by an rxd invalidation. */
static uint64_t local_epoch;

static void apply_acquire(void) {
    while (__atomic_exchange_n(&apply_lock, 1, __ATOMIC_ACQUIRE)) {
        while (LD(&apply_lock)) sched_yield();
    }
}

static void apply_release(void) { __atomic_store_n(&apply_lock, 0, __ATOMIC_RELEASE); }

/* INVALIDATE: the next touch faults again. MAP_FIXED replaces atomically, no hole. */
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

static int map_none(uint64_t addr, uint64_t len) {
    void *p = mmap((void *)(uintptr_t)addr, len, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return -1;
    madvise(p, len, MADV_DONTFORK);
    return 0;
}

/* ---- fault channels ------------------------------------------------------------------------ */

struct rx_slot {
    int busy;
    int fd;
    uint32_t gen; /* chan_gen at connect: a channel of an earlier session is reopened */
    size_t len;
    uint8_t buf[RX_FAULT_BUF];
};

static struct rx_slot slots[RX_FAULT_SLOTS];
static uint32_t chan_gen;
static uint64_t fault_seq;
static int trap_ready; /* path and token are set */
static char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static uint8_t token[RX_SESSION_TOKEN_BYTES];

static struct rx_slot *slot_claim(void) {
    for (;;) {
        for (int i = 0; i < RX_FAULT_SLOTS; i++) {
            int zero = 0;
            if (__atomic_compare_exchange_n(&slots[i].busy, &zero, 1, 0, __ATOMIC_ACQUIRE,
                                            __ATOMIC_RELAXED))
                return &slots[i];
        }
        sched_yield(); /* more than 16 threads faulting at once: wait for a slot */
    }
}

static void slot_release(struct rx_slot *s) { __atomic_store_n(&s->busy, 0, __ATOMIC_RELEASE); }

static void slot_close(struct rx_slot *s) {
    if (s->fd >= 0) close(s->fd);
    s->fd = -1;
    s->len = 0;
}

/* Connect and do the fault-channel hello. 0 or -1. */
static int slot_open(struct rx_slot *s) {
    if (!LD(&trap_ready)) return -1;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, sock_path, sizeof sa.sun_path);
    int fd = -1;
    for (int attempt = 0; attempt < 3 && fd < 0; attempt++) {
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) return -1;
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
            int e = errno;
            close(fd);
            fd = -1;
            if (e != EINTR) return -1;
        }
    }
    if (fd < 0) return -1;
    s->fd = fd;
    s->len = 0;
    s->gen = LD(&chan_gen);
    uint8_t msg[32];
    size_t n = mp_put_array(msg, 4);
    n += mp_put_int(msg + n, RX_PROTOCOL_MAGIC);
    n += mp_put_int(msg + n, RX_PROTOCOL_VERSION);
    n += mp_put_int(msg + n, RX_CHANNEL_FAULT);
    n += mp_put_bin(msg + n, token, RX_SESSION_TOKEN_BYTES);
    int64_t v[8];
    uint32_t count = 0;
    if (send_all(fd, msg, n) < 0 || read_frame(fd, s->buf, sizeof s->buf, &s->len, v, 8, &count) < 0 ||
        count < 3 || v[0] != RX_PROTOCOL_MAGIC || v[1] != RX_PROTOCOL_VERSION || v[2] != RX_OK) {
        slot_close(s);
        return -1;
    }
    cnt_add(CNT_CHANNELS, 1);
    return 0;
}

/* Ask rxd about addr. 0 with the reply in v/count, or -1 when rxd cannot be reached. */
static int fault_roundtrip(uint64_t addr, int write, int64_t *v, uint32_t *count) {
    struct rx_slot *s = slot_claim();
    if (s->fd >= 0 && s->gen != LD(&chan_gen)) slot_close(s);
    if (s->fd < 0 && slot_open(s) < 0) {
        slot_release(s);
        return -1;
    }
    uint64_t seq = __atomic_add_fetch(&fault_seq, 1, __ATOMIC_RELAXED);
    uint8_t msg[32];
    size_t n = mp_put_array(msg, 3);
    n += mp_put_uint(msg + n, seq);
    n += mp_put_uint(msg + n, addr);
    n += mp_put_int(msg + n, write ? 1 : 0);
    int rc = 0;
    if (send_all(s->fd, msg, n) < 0 ||
        read_frame(s->fd, s->buf, sizeof s->buf, &s->len, v, RX_FAULT_MAX_VALUES, count) < 0 ||
        *count < 2 || (uint64_t)v[0] != seq) {
        slot_close(s); /* a broken channel is never reused */
        rc = -1;
    }
    slot_release(s);
    return rc;
}

/* ---- diagnostics (no printf in a handler) ------------------------------------------------------ */

struct rx_line {
    char b[192];
    size_t n;
};

static void line_str(struct rx_line *l, const char *s) {
    while (*s && l->n < sizeof l->b) l->b[l->n++] = *s++;
}

static void line_hex(struct rx_line *l, uint64_t v) {
    char tmp[16];
    int k = 0;
    do { tmp[k++] = "0123456789abcdef"[v & 15]; v >>= 4; } while (v);
    line_str(l, "0x");
    while (k && l->n < sizeof l->b) l->b[l->n++] = tmp[--k];
}

static void line_dec(struct rx_line *l, int64_t v) {
    char tmp[24];
    int k = 0;
    uint64_t u = v < 0 ? -(uint64_t)v : (uint64_t)v;
    do { tmp[k++] = (char)('0' + u % 10); u /= 10; } while (u);
    if (v < 0) line_str(l, "-");
    while (k && l->n < sizeof l->b) l->b[l->n++] = tmp[--k];
}

static void line_emit(struct rx_line *l) {
    line_str(l, "\n");
    size_t off = 0;
    while (off < l->n) {
        ssize_t k = write(2, l->b + off, l->n - off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        off += (size_t)k;
    }
}

#define RX_STATUS_ENTRY(name) {name, #name},
static const struct { int status; const char *name; } status_names[] = {RX_STATUS_LIST(RX_STATUS_ENTRY)};
#undef RX_STATUS_ENTRY

/* Same spelling as proto's status_name() for codes we do not know. */
static void line_status(struct rx_line *l, int64_t status) {
    for (size_t i = 0; i < sizeof status_names / sizeof status_names[0]; i++) {
        if (status_names[i].status == status) { line_str(l, status_names[i].name); return; }
    }
    line_str(l, "RX_ERR_UNKNOWN(");
    line_dec(l, status);
    line_str(l, ")");
}

/* The default action of sig, now. If we somehow survive raise(), returning from the handler
 * re-executes the instruction, which faults again under SIG_DFL. */
static void rx_die(int sig) {
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
    if (sig != SIGSEGV) sigaction(SIGSEGV, &dfl, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    raise(sig);
}

/* WIRE.md "Refused faults". */
static void rx_refuse(uint64_t addr, int64_t status) {
    struct rx_line l = {.n = 0};
    int sig = SIGSEGV;
    switch (status) {
    case RX_ERR_ACCESS_DENIED:
        line_str(&l, "rx: write fault at "); line_hex(&l, addr); line_str(&l, " in read-only mapping");
        break;
    case RX_ERR_OUT_OF_RANGE:
        line_str(&l, "rx: fault at "); line_hex(&l, addr); line_str(&l, " beyond the end of the VMO");
        sig = SIGBUS;
        break;
    case RX_ERR_NO_MEMORY:
        line_str(&l, "rx: out of memory at "); line_hex(&l, addr);
        line_str(&l, " (rxd memory budget exhausted)");
        sig = SIGBUS;
        break;
    case RX_ERR_NOT_FOUND:
        line_str(&l, "rx: fault at "); line_hex(&l, addr); line_str(&l, " in no rx mapping");
        break;
    default:
        line_str(&l, "rx: fault at "); line_hex(&l, addr); line_str(&l, " refused by rxd (");
        line_status(&l, status); line_str(&l, ")");
        break;
    }
    line_emit(&l);
    rx_die(sig);
}

static void rx_unreachable(uint64_t addr) {
    struct rx_line l = {.n = 0};
    line_str(&l, "rx: fault at "); line_hex(&l, addr); line_str(&l, ": cannot reach rxd");
    line_emit(&l);
    rx_die(SIGSEGV);
}

static void rx_not_inherited(uint64_t addr) {
    struct rx_line l = {.n = 0};
    line_str(&l, "rx: access at "); line_hex(&l, addr);
    line_str(&l, " to an rx mapping not inherited across fork()");
    line_emit(&l);
    rx_die(SIGSEGV);
}

/* ---- the handler ------------------------------------------------------------------------------- */

#if defined(__aarch64__)
/* The kernel appends an esr_context record to the signal frame's __reserved area; defined
 * here to avoid <asm/sigcontext.h> clashing with glibc's headers. */
struct rx_a64_ctx_head {
    uint32_t magic;
    uint32_t size;
};
#define RX_ESR_MAGIC 0x45535201u
#endif

/* 1 when the faulting access was a write. Without the information (other architectures, or an
 * aarch64 frame with no ESR record) we say read: a write then faults again on the read-only
 * page and is again reported as a read, so such a write would loop. Linux always provides the
 * ESR for aarch64 data aborts, and REG_ERR on x86_64. */
static int fault_is_write(void *ctx) {
#if defined(__x86_64__)
    ucontext_t *uc = ctx;
    return (uc->uc_mcontext.gregs[REG_ERR] & 2) != 0;
#elif defined(__aarch64__)
    ucontext_t *uc = ctx;
    const uint8_t *p = (const uint8_t *)uc->uc_mcontext.__reserved;
    const uint8_t *end = p + sizeof uc->uc_mcontext.__reserved;
    while (p + sizeof(struct rx_a64_ctx_head) <= end) {
        struct rx_a64_ctx_head h;
        memcpy(&h, p, sizeof h);
        if (h.magic == 0 || h.size < sizeof h || h.size > (size_t)(end - p)) break;
        if (h.magic == RX_ESR_MAGIC && h.size >= 16) {
            uint64_t esr;
            memcpy(&esr, p + 8, sizeof esr);
            uint32_t ec = (uint32_t)(esr >> 26) & 0x3f;
            if (ec == 0x24 || ec == 0x25) return (esr >> 6) & 1; /* data abort: WnR */
            return 0;
        }
        p += h.size;
    }
    return 0;
#else
    (void)ctx;
    return 0;
#endif
}

static void rx_on_sigsegv(int sig, siginfo_t *si, void *ctx);

/* The handler we replaced, double-buffered so rx_trap_install can swap it while a handler in
 * another thread reads it. */
static struct sigaction prev_act[2];
static int prev_idx;
static int chained; /* we handed a crash to prev already: a re-raise must not go there again */
static pthread_mutex_t install_mu = PTHREAD_MUTEX_INITIALIZER;

static int prev_is_handler(const struct sigaction *a) {
    if (a->sa_flags & SA_SIGINFO) return a->sa_sigaction != NULL && a->sa_sigaction != rx_on_sigsegv;
    return a->sa_handler != SIG_DFL && a->sa_handler != SIG_IGN;
}

/* A fault at an address that is not ours: what would have happened without us. */
static void rx_chain(int sig, siginfo_t *si, void *ctx) {
    const struct sigaction *prev = &prev_act[__atomic_load_n(&prev_idx, __ATOMIC_ACQUIRE)];
    if (prev_is_handler(prev)) {
        ST(&chained, 1);
        if (prev->sa_flags & SA_SIGINFO) prev->sa_sigaction(sig, si, ctx);
        else prev->sa_handler(sig);
        return;
    }
    /* SIG_DFL (or SIG_IGN, which the kernel overrides for a real fault): re-fault and die. */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGSEGV, &dfl, NULL);
}

/* SIGSEGV sent with kill/raise (si_code <= 0): never an rx fault. faulthandler re-raises after
 * dumping, after restoring the handler it replaced (possibly ours), so a second trip to it would
 * loop; after one chain we take the default action. */
static void rx_chain_sent(int sig, siginfo_t *si, void *ctx) {
    const struct sigaction *prev = &prev_act[__atomic_load_n(&prev_idx, __ATOMIC_ACQUIRE)];
    if (!LD(&chained) && prev_is_handler(prev)) {
        rx_chain(sig, si, ctx);
        return;
    }
    if (!LD(&chained) && !(prev->sa_flags & SA_SIGINFO) && prev->sa_handler == SIG_IGN) return;
    rx_die(sig);
}

static void rx_fault(uint64_t addr, int write) {
    int64_t v[RX_FAULT_MAX_VALUES];
    uint32_t n = 0;
    uint64_t epoch = __atomic_load_n(&local_epoch, __ATOMIC_ACQUIRE);
    if (fault_roundtrip(addr, write, v, &n) < 0) {
        rx_unreachable(addr);
        return;
    }
    if (v[1] < 0) {
        rx_refuse(addr, v[1]);
        return;
    }
    if (n < 3 || (n - 3) % 6 != 0) {
        rx_refuse(addr, RX_ERR_INTERNAL);
        return;
    }
    /* Validate every op before applying any. Where they land is checked under the apply lock:
     * only the parts still in the mapping table are applied (another thread may have unmapped
     * part of a fault-around window meanwhile; rxd may only ever map inside our rx mappings). */
    uint32_t nops = (n - 3) / 6;
    int fds[RX_FAULT_MAX_OPS];
    uint64_t pages = 0;
    int covers_fault = 0; /* rxd always maps the faulting page; a reply that does not would loop */
    for (uint32_t i = 0; i < nops; i++) {
        const int64_t *op = v + 3 + 6 * i;
        uint64_t a = (uint64_t)op[0], len = (uint64_t)op[1];
        int64_t kind = op[2], prot = op[3], off = op[5];
        fds[i] = -1;
        int ok = range_ok(a, len) && (prot & ~(int64_t)3) == 0;
        if (ok && kind == RX_FAULT_OP_STORE) {
            ok = off >= 0 && !(off & (int64_t)RX_PAGE_MASK);
        } else if (kind != RX_FAULT_OP_ZERO) {
            ok = 0;
        }
        if (!ok) {
            rx_refuse(addr, RX_ERR_INTERNAL);
            return;
        }
        pages += len / RX_PAGE_SIZE;
        if (addr - a < len) covers_fault = 1;
    }
    if (!covers_fault) {
        rx_refuse(addr, RX_ERR_INTERNAL);
        return;
    }
    uint64_t inval_seq = (uint64_t)v[2];
    int failed = 0;
    apply_acquire();
    if (applied_seq > inval_seq || local_epoch != epoch) {
        /* An invalidation reached us after rxd computed this reply: it may be stale, so it is
         * not applied. Its ranges are emptied instead: rxd computed the reply believing these
         * pages would be replaced (a write fault stops tracking the zero pages it replaces), so
         * leaving whatever was mapped there could keep a zero page rxd no longer knows about.
         * The next touch asks anew. */
        for (uint32_t i = 0; i < nops; i++) {
            const int64_t *op = v + 3 + 6 * i;
            uint64_t end = (uint64_t)op[0] + (uint64_t)op[1], lo, len;
            for (uint64_t cur = (uint64_t)op[0]; map_next_piece(cur, end, &lo, &len); cur = lo + len)
                map_none(lo, len);
        }
        apply_release();
        cnt_add(CNT_FAULTS, 1);
        cnt_add(CNT_STALE, 1);
        return;
    }
    /* Store fds are looked up under the apply lock (the control thread replaces and closes them
     * under it too, so an fd number can never be closed and reused between lookup and mmap), and
     * only for a reply that is not stale: a stale one may name a store rxd has since forgotten. */
    for (uint32_t i = 0; i < nops && !failed; i++) {
        const int64_t *op = v + 3 + 6 * i;
        if (op[2] == RX_FAULT_OP_STORE && (fds[i] = store_lookup((uint64_t)op[4])) < 0) failed = 1;
    }
    if (failed) {
        apply_release();
        rx_refuse(addr, RX_ERR_INTERNAL);
        return;
    }
    for (uint32_t i = 0; i < nops && !failed; i++) {
        const int64_t *op = v + 3 + 6 * i;
        uint64_t base = (uint64_t)op[0], end = base + (uint64_t)op[1], lo, len;
        for (uint64_t cur = base; !failed && map_next_piece(cur, end, &lo, &len); cur = lo + len) {
            void *p;
            if (op[2] == RX_FAULT_OP_ZERO)
                p = mmap((void *)(uintptr_t)lo, len, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
                         -1, 0);
            else
                p = mmap((void *)(uintptr_t)lo, len, (int)op[3], MAP_SHARED | MAP_FIXED | MAP_POPULATE, fds[i],
                         (off_t)(op[5] + (int64_t)(lo - base)));
            if (p == MAP_FAILED) failed = 1;
            else madvise(p, len, MADV_DONTFORK);
        }
    }
    apply_release();
    if (failed) {
        rx_refuse(addr, RX_ERR_INTERNAL);
        return;
    }
    cnt_add(CNT_FAULTS, 1);
    cnt_add(CNT_PAGES, pages);
}

static void rx_on_sigsegv(int sig, siginfo_t *si, void *ctx) {
    int saved_errno = errno;
    if (si == NULL || si->si_code <= 0) {
        rx_chain_sent(sig, si, ctx);
    } else {
        uint64_t addr = (uint64_t)(uintptr_t)si->si_addr;
        switch (rx_map_lookup(addr)) {
        case 0: rx_chain(sig, si, ctx); break;
        case 2: rx_not_inherited(addr); break;
        default: rx_fault(addr, fault_is_write(ctx)); break;
        }
    }
    errno = saved_errno;
}

int rx_trap_install(void) {
    pthread_mutex_lock(&install_mu);
    int rc = 0;
    struct sigaction cur;
    if (sigaction(SIGSEGV, NULL, &cur) < 0) {
        rc = -errno;
    } else if (!((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == rx_on_sigsegv)) {
        int next = !LD(&prev_idx);
        prev_act[next] = cur;
        __atomic_store_n(&prev_idx, next, __ATOMIC_RELEASE);
        ST(&chained, 0);
        struct sigaction act;
        memset(&act, 0, sizeof act);
        act.sa_sigaction = rx_on_sigsegv;
        sigemptyset(&act.sa_mask);
        act.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
        if (sigaction(SIGSEGV, &act, NULL) < 0) rc = -errno;
    }
    pthread_mutex_unlock(&install_mu);
    return rc;
}

/* ---- control thread ---------------------------------------------------------------------------- */

struct rx_ctl {
    int fd;
    uint32_t gen;
    struct rx_fdq fdq;
    size_t len;
    uint8_t buf[CTL_BUF_BYTES];
    int64_t v[CTL_MAX_VALUES];
};

static pthread_mutex_t ctl_mu = PTHREAD_MUTEX_INITIALIZER;
static int ctl_fd = -1; /* the running thread's fd, guarded by ctl_mu */
static uint32_t ctl_gen; /* control sessions started, guarded by ctl_mu; 0 = stores Python registered */

/* PROTECT changes only the parts of a range that map a file (a store's pages): over the PROT_NONE
 * reservation or a zero-page run (anonymous memory) an mprotect would make plain memory that never
 * faults again. The control thread is an ordinary thread, so it may read /proc/self/maps: once per
 * request, under the apply lock (no fault reply can change the mappings meanwhile), into a sorted
 * list of file-backed areas that each range is then intersected with. */
struct rx_vmas {
    uint64_t (*v)[2];
    size_t n, cap;
};

static int vmas_read(struct rx_vmas *out) {
    out->v = NULL;
    out->n = out->cap = 0;
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f) return -1;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        unsigned long long lo, hi, off, inode;
        unsigned int major, minor;
        char perms[8];
        if (sscanf(line, "%llx-%llx %7s %llx %x:%x %llu", &lo, &hi, perms, &off, &major, &minor, &inode) != 7 || !inode)
            continue;
        if (out->n == out->cap) {
            size_t cap = out->cap ? 2 * out->cap : 256;
            void *p = realloc(out->v, cap * sizeof *out->v);
            if (!p) {
                fclose(f);
                free(out->v);
                out->v = NULL;
                return -1;
            }
            out->v = p;
            out->cap = cap;
        }
        out->v[out->n][0] = lo;
        out->v[out->n][1] = hi;
        out->n++;
    }
    fclose(f);
    return 0;
}

static int protect_file_backed(const struct rx_vmas *vmas, uint64_t addr, uint64_t len, int prot) {
    uint64_t end = addr + len;
    size_t a = 0, b = vmas->n; /* the first area ending after addr */
    while (a < b) {
        size_t mid = a + (b - a) / 2;
        if (vmas->v[mid][1] <= addr) a = mid + 1;
        else b = mid;
    }
    int rc = 0;
    for (size_t i = a; i < vmas->n && vmas->v[i][0] < end; i++) {
        uint64_t lo = vmas->v[i][0] > addr ? vmas->v[i][0] : addr, hi = vmas->v[i][1] < end ? vmas->v[i][1] : end;
        if (mprotect((void *)(uintptr_t)lo, hi - lo, prot) < 0) rc = -1;
    }
    return rc;
}

/* STORE: the fd that came with the request becomes store_id's (replacing a less capable one);
 * FORGET: close those stores' fds. Under the apply lock, like every change a fault could see. */
static int64_t ctl_stores(int64_t op, const int64_t *args, uint32_t na, struct rx_fdq *q, uint32_t gen) {
    int64_t status = RX_OK;
    if (op == RX_CONTROL_STORE) {
        int fd = fdq_pop(q), old = -1;
        if (fd < 0) return RX_ERR_INVALID_ARGS; /* rxd sends the fd with the request */
        if (na != 2) {
            close(fd);
            return RX_ERR_INVALID_ARGS;
        }
        apply_acquire();
        if (store_put((uint64_t)args[0], fd, 1, gen, &old) < 0) {
            close(fd);
            status = RX_ERR_NO_RESOURCES;
        }
        if (old >= 0) close(old);
        apply_release();
        return status;
    }
    apply_acquire();
    for (uint32_t i = 0; i < na; i++) {
        int old = -1;
        store_drop((uint64_t)args[i], &old);
        if (old >= 0) close(old);
    }
    apply_release();
    return status;
}

/* Apply one request; returns the ack status. Malformed or out-of-table requests change nothing. */
static int64_t ctl_apply(const int64_t *v, uint32_t n, struct rx_fdq *q, uint32_t gen) {
    if (n < 3) return RX_ERR_INVALID_ARGS;
    int64_t op = v[1];
    uint64_t inval_seq = (uint64_t)v[2];
    const int64_t *args = v + 3;
    uint32_t na = n - 3, width;
    switch (op) {
    case RX_CONTROL_INVALIDATE: width = 2; break;
    case RX_CONTROL_PROTECT: width = 3; break;
    case RX_CONTROL_PING: width = 1; if (na) return RX_ERR_INVALID_ARGS; break;
    case RX_CONTROL_STORE:
    case RX_CONTROL_FORGET: {
        int64_t status = ctl_stores(op, args, na, q, gen);
        apply_acquire();
        if (inval_seq > applied_seq) applied_seq = inval_seq;
        apply_release();
        cnt_add(CNT_CONTROL, 1);
        return status;
    }
    default: return RX_ERR_INVALID_ARGS;
    }
    if (na % width) return RX_ERR_INVALID_ARGS;
    for (uint32_t i = 0; op != RX_CONTROL_PING && i < na; i += width) {
        if (!range_ok((uint64_t)args[i], (uint64_t)args[i + 1])) return RX_ERR_INVALID_ARGS;
        if (op == RX_CONTROL_PROTECT && (args[i + 2] & ~(int64_t)3)) return RX_ERR_INVALID_ARGS;
    }
    int64_t status = RX_OK;
    apply_acquire();
    struct rx_vmas vmas = { NULL, 0, 0 };
    if (op == RX_CONTROL_PROTECT && vmas_read(&vmas) < 0) {
        apply_release();
        return RX_ERR_INTERNAL;
    }
    for (uint32_t i = 0; op != RX_CONTROL_PING && i < na; i += width) {
        /* Only the parts still in the table: a range the client unmapped while this request was
         * in flight is already gone (and its addresses may hold other memory by now). */
        uint64_t end = (uint64_t)args[i] + (uint64_t)args[i + 1], lo, len;
        for (uint64_t cur = (uint64_t)args[i]; map_next_piece(cur, end, &lo, &len); cur = lo + len) {
            int r = op == RX_CONTROL_INVALIDATE ? map_none(lo, len) : protect_file_backed(&vmas, lo, len, (int)args[i + 2]);
            if (r < 0) status = RX_ERR_INTERNAL;
        }
    }
    if (inval_seq > applied_seq) applied_seq = inval_seq;
    apply_release();
    free(vmas.v);
    cnt_add(CNT_CONTROL, 1);
    return status;
}

static void *ctl_main(void *arg) {
    struct rx_ctl *c = arg;
    for (;;) {
        uint32_t n = 0;
        if (read_frame_fds(c->fd, c->buf, sizeof c->buf, &c->len, c->v, CTL_MAX_VALUES, &n, &c->fdq) < 0 ||
            n < 1)
            break; /* EOF, error, or a stream we cannot ack: the channel is over */
        int64_t status = ctl_apply(c->v, n, &c->fdq, c->gen);
        uint8_t msg[32];
        size_t k = mp_put_array(msg, 2);
        k += mp_put_uint(msg + k, (uint64_t)c->v[0]);
        k += mp_put_int(msg + k, status);
        if (send_all(c->fd, msg, k) < 0) break;
    }
    pthread_mutex_lock(&ctl_mu);
    if (ctl_fd == c->fd) ctl_fd = -1;
    close(c->fd); /* under ctl_mu, so rx_control_stop never shuts down a reused fd number */
    pthread_mutex_unlock(&ctl_mu);
    for (int fd; (fd = fdq_pop(&c->fdq)) >= 0;) close(fd);
    apply_acquire();
    store_drop_session(c->gen);
    apply_release();
    free(c);
    return NULL;
}

int rx_control_start(int fd) {
    if (fd < 0) return -EBADF;
    pthread_mutex_lock(&ctl_mu);
    int rc = 0;
    if (ctl_fd == fd) goto out;
    if (ctl_fd >= 0) {
        shutdown(ctl_fd, SHUT_RDWR); /* the old thread exits and closes it */
        ctl_fd = -1;
    }
    struct rx_ctl *c = malloc(sizeof *c);
    if (!c) { rc = -ENOMEM; goto out; }
    c->fd = fd;
    c->gen = ++ctl_gen;
    c->fdq.n = 0;
    c->len = 0;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* the thread inherits: no signal lands there */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    int e = pthread_create(&t, &attr, ctl_main, c);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e) {
        free(c);
        rc = -e;
    } else {
        ctl_fd = fd;
    }
out:
    pthread_mutex_unlock(&ctl_mu);
    return rc;
}

void rx_control_stop(void) {
    pthread_mutex_lock(&ctl_mu);
    if (ctl_fd >= 0) shutdown(ctl_fd, SHUT_RDWR);
    ctl_fd = -1;
    pthread_mutex_unlock(&ctl_mu);
}

/* ---- setup and fork ------------------------------------------------------------------------------ */

/* The child of fork() is a new rx process with nothing: no channels, no control thread, no rx
 * mappings (MADV_DONTFORK dropped them), no stores. Only this thread exists, so plain resets. */
static void rx_atfork_child(void) {
    for (int i = 0; i < RX_FAULT_SLOTS; i++) {
        if (slots[i].fd >= 0) close(slots[i].fd);
        slots[i].fd = -1;
        slots[i].len = 0;
        slots[i].busy = 0;
    }
    trap_ready = 0;
    pthread_mutex_init(&ctl_mu, NULL);
    if (ctl_fd >= 0) close(ctl_fd);
    ctl_fd = -1;
    pthread_mutex_init(&map_mu, NULL);
    map_seq = 0;
    for (uint32_t i = 0; i < map_hi; i++) {
        map_tab[i].stale = 1;
        /* Keep the addresses reserved (MADV_DONTFORK left a hole): nothing else may land there
         * before rx.fork()'s child maps its clones over them, and a touch still gets the clear
         * "not inherited" diagnostic. */
        if (map_tab[i].len)
            mmap((void *)(uintptr_t)map_tab[i].base, map_tab[i].len, PROT_NONE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
    }
    pthread_mutex_init(&store_mu, NULL);
    store_seq = 0;
    for (int i = 0; i < RX_STORE_MAX; i++) {
        if (store_tab[i].used && store_tab[i].owned) close(store_tab[i].fd);
        store_tab[i].used = 0;
        store_tab[i].fd = -1;
    }
    pthread_mutex_init(&install_mu, NULL);
    apply_lock = 0;
    applied_seq = 0;
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static int atfork_rc;

static void register_atfork(void) { atfork_rc = -pthread_atfork(NULL, NULL, rx_atfork_child); }

int rx_trap_setup(const char *socket_path, const uint8_t *session_token) {
    if (!socket_path || !session_token) return -EINVAL;
    size_t n = strlen(socket_path);
    if (n >= sizeof sock_path) return -ENAMETOOLONG;
    ST(&trap_ready, 0);
    memset(sock_path, 0, sizeof sock_path);
    memcpy(sock_path, socket_path, n);
    memcpy(token, session_token, RX_SESSION_TOKEN_BYTES);
    /* Channels of an earlier session are closed by whoever next claims their slot. */
    __atomic_add_fetch(&chan_gen, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < RX_FAULT_SLOTS; i++) {
        int zero = 0;
        if (__atomic_compare_exchange_n(&slots[i].busy, &zero, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
            slot_close(&slots[i]);
            slot_release(&slots[i]);
        }
    }
    __atomic_store_n(&trap_ready, 1, __ATOMIC_RELEASE);
    pthread_once(&atfork_once, register_atfork);
    if (atfork_rc) return atfork_rc;
    return rx_trap_install();
}

/* Fault-channel fds start closed; static storage starts at 0, which is a valid fd. */
__attribute__((constructor)) static void rx_init(void) {
    for (int i = 0; i < RX_FAULT_SLOTS; i++) slots[i].fd = -1;
    for (int i = 0; i < RX_STORE_MAX; i++) store_tab[i].fd = -1;
}

/* ---- reservations ------------------------------------------------------------------------------- */

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
    local_epoch++;
    apply_release();
    return rc;
}

int rx_unreserve(uint64_t addr, uint64_t length) {
    apply_acquire();
    int rc = munmap((void *)(uintptr_t)addr, length) < 0 ? -errno : 0;
    local_epoch++;
    apply_release();
    return rc;
}

/* ---- touch ---------------------------------------------------------------------------------- */

int64_t rx_touch(uint64_t addr, uint64_t length, int write) {
    int64_t t0 = now_ns();
    uint64_t end = addr + length;
    for (uint64_t p = addr; p < end && p >= addr; p = (p & ~RX_PAGE_MASK) + RX_PAGE_SIZE) {
        if (write) __atomic_fetch_add((uint8_t *)(uintptr_t)p, 0, __ATOMIC_RELAXED);
        else (void)*(volatile uint8_t *)(uintptr_t)p;
    }
    return now_ns() - t0;
}

/* ---- server helpers ---------------------------------------------------------------------------- */

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
