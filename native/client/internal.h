/* internal.h — what the client-side C files share with each other. Not API: cffi never sees this
 * header (native/_build.py reads include/ only) and every name here is hidden in the library.
 *
 * The client side (what runs in every rx process), one mechanism per file:
 *   trap.c        the SIGSEGV handler: installing and chaining it, the fault path, rx_trap_setup,
 *                 the trap counters, rx_touch
 *   diag.c        the one line a refused or impossible fault prints before the process dies
 *   faultchan.c   the fault-channel slots: connect + hello, one request/reply round trip
 *   wire.c        socket I/O over the msgpack codec (common/msgpack.c, rxmsgpack.h)
 *   apply.c       the apply lock and the sequence numbers it guards; emptying a range
 *   maptab.c      the mapping table; address reservations
 *   storetab.c    the store table
 *   control.c     the control thread
 *   atfork.c      the fork child's reset: it calls each module's own *_atfork_child()
 *   rxsync.c, rxvdso_loader.c   their own mechanisms (rxsync.h, rxvdso_loader.h); nothing here
 * Each file owns its static state; no file reads or writes another's statics: all they share is
 * the functions declared below (and the wire constants of include/rxwire.h).
 *
 * Locks and the order they nest in (a lock is only ever taken with the ones listed above it held,
 * never the other way round):
 *   ctl_mu       (control.c)   start/stop/exit of the control thread; guards ctl_fd and ctl_gen.
 *                              Held with no other lock.
 *   install_mu   (trap.c)      serialises rx_trap_install. Held with no other lock; the handler
 *                              reads prev_act[prev_idx] lock-free.
 *   slot.busy    (faultchan.c) a fault-channel slot belongs to whoever CASed busy 0 -> 1, for one
 *                              round trip; released before the fault path takes the apply lock.
 *   apply_lock   (apply.c)     a spinlock held while mapping for a fault reply, applying a control
 *                              request, changing the mapping table, replacing or closing a store
 *                              fd, or taking memory back (rx_reserve_at, rx_unreserve); never across
 *                              socket I/O. Guards applied_seq and local_epoch.
 *     map_mu     (maptab.c)    serialises writers of the mapping table; always under apply_lock.
 *     store_mu   (storetab.c)  serialises writers of the store table; under apply_lock from the
 *                              control thread, alone from rx_store_register/unregister (tests).
 *                              map_mu and store_mu are never held together.
 * Readers of the two tables (the fault handler, the control thread) never take map_mu or
 * store_mu: they read under a seqlock (map_seq, store_seq) and retry when a writer was active.
 * Nothing in the signal handler takes a pthread lock, mallocs, or uses TLS: it only spins, on
 * slot.busy, apply_lock and the seqlocks, none of which is held by code that touches rx memory.
 */
#ifndef RX_CLIENT_INTERNAL_H
#define RX_CLIENT_INTERNAL_H

#include <sched.h>
#include <stddef.h>
#include <stdint.h>

#include "rxmsgpack.h"
#include "rxwire.h"

#pragma GCC visibility push(hidden)

#define LD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define ST(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)

#define RX_PAGE_MASK (RX_PAGE_SIZE - 1)

/* A page-aligned, non-empty range that does not wrap. */
static inline int range_ok(uint64_t base, uint64_t len) {
    return len != 0 && !(base & RX_PAGE_MASK) && !(len & RX_PAGE_MASK) && base + len > base;
}

/* ---- seqlock: lock-free readers that a signal handler can use (maptab.c, storetab.c) ---------- */

static inline uint32_t seq_read_begin(const uint32_t *seq) {
    for (;;) {
        uint32_t s = __atomic_load_n(seq, __ATOMIC_ACQUIRE);
        if (!(s & 1)) return s;
        sched_yield(); /* a writer (another thread) is mid-update */
    }
}

static inline int seq_read_retry(const uint32_t *seq, uint32_t s) {
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return LD(seq) != s;
}

static inline void seq_write_begin(uint32_t *seq) {
    ST(seq, LD(seq) + 1);
    __atomic_thread_fence(__ATOMIC_RELEASE);
}

static inline void seq_write_end(uint32_t *seq) { __atomic_store_n(seq, LD(seq) + 1, __ATOMIC_RELEASE); }

/* ---- trap.c ----------------------------------------------------------------------------------- */

/* rx_trap_counters' slots. */
enum { CNT_FAULTS, CNT_PAGES, CNT_STALE, CNT_CONTROL, CNT_CHANNELS, CNT_N = 8 };
void cnt_add(int which, uint64_t n);
void trap_atfork_child(void);

/* ---- diag.c (async-signal-safe; each ends the process) ----------------------------------------- */

/* The name RX_STATUS_LIST gives status, or NULL for a status this version does not know. */
const char *rx_status_name(int64_t status);
void rx_die(int sig);
void rx_refuse(uint64_t addr, int write, int64_t status);
void rx_unreachable(uint64_t addr);
void rx_no_longer_mapped(uint64_t addr, int why); /* why: rx_map_lookup's 2, 3 or 4 */

/* ---- wire.c (async-signal-safe) ------------------------------------------------------------------ */

/* send() all of it, without SIGPIPE. 0 or -1. */
int send_all(int fd, const uint8_t *p, size_t n);

/* An fd queue for a channel that carries SCM_RIGHTS: fds arrive with the bytes of the message
 * they belong to, in order, so a FIFO matches them to the requests that name them. */
#define RX_FDQ_MAX 16
struct rx_fdq {
    int fds[RX_FDQ_MAX];
    int n;
};

/* The oldest queued fd, or -1. */
int fdq_pop(struct rx_fdq *q);

/* Read from fd into buf (cap bytes, *len of them already buffered) until one whole array of at
 * most maxv integers is buffered: 0 with the values in v[0..*count), or -1 (EOF, error, a frame
 * that is malformed or bigger than the buffer). Leftover bytes stay for the next frame. With q,
 * fds that arrive are queued there (recvmsg). */
int read_frame_fds(int fd, uint8_t *buf, size_t cap, size_t *len, int64_t *v, uint32_t maxv, uint32_t *count,
                   struct rx_fdq *q);
int read_frame(int fd, uint8_t *buf, size_t cap, size_t *len, int64_t *v, uint32_t maxv, uint32_t *count);

/* ---- faultchan.c ---------------------------------------------------------------------------------- */

/* A fault reply has at most this many integers. */
#define RX_FAULT_MAX_VALUES (RX_FAULT_REPLY_HEAD + RX_FAULT_OP_WORDS * RX_FAULT_MAX_OPS)

/* Remember rxd's socket path and the session token, and retire the channels of an earlier
 * session. 0 or -ENAMETOOLONG (then nothing changed). */
int faultchan_setup(const char *socket_path, const uint8_t *session_token);

/* Ask rxd about addr (async-signal-safe). 0 with the reply in v[0..*count) (at least seq and
 * status, seq checked), or -1 when rxd cannot be reached. */
int fault_roundtrip(uint64_t addr, int write, int64_t *v, uint32_t *count);
void faultchan_atfork_child(void);

/* ---- apply.c ---------------------------------------------------------------------------------------- */

void apply_acquire(void);
void apply_release(void);

/* local_epoch now (acquire load, no lock): a fault reply is stale if it changed by the time the
 * reply is applied. */
uint64_t apply_epoch(void);

/* Under the apply lock: */
/* A fault reply computed at inval_seq, requested at epoch, may be stale: an invalidation
 * reached us after rxd computed it, or the client took memory back after asking. */
int apply_stale_locked(uint64_t inval_seq, uint64_t epoch);
/* A control request numbered inval_seq is applied. */
void apply_done_locked(uint64_t inval_seq);
/* The client takes memory back: every fault reply in flight is stale. */
void apply_bump_epoch_locked(void);

/* Empty [addr, addr+len): PROT_NONE reservation (MAP_FIXED replaces atomically, no hole) and
 * MADV_DONTFORK. The next touch faults. 0 or -1 (errno set). */
int map_none(uint64_t addr, uint64_t len);
void apply_atfork_child(void);

/* ---- maptab.c --------------------------------------------------------------------------------------- */

#define RX_MAP_MAX 8192

/* The lowest piece of [cursor, end) that lies inside one live entry: *lo and *len, 1 if found.
 * Lock-free (seqlock); async-signal-safe. */
int map_next_piece(uint64_t cursor, uint64_t end, uint64_t *lo, uint64_t *len);
void maptab_atfork_child(void);

/* ---- storetab.c ------------------------------------------------------------------------------------- */

#define RX_STORE_MAX 1024

/* The fd registered for id, or -1. Lock-free (seqlock); async-signal-safe. */
int store_lookup(uint64_t id);

/* Put (store_id, fd) in the table, replacing an entry for the same id; owned entries came on
 * control session gen and are closed by the table. *old gets the replaced fd if the table owned
 * it (the caller closes it once no fault handler can be using it), else -1.
 * 0, -EBADF or -ENOMEM. */
int store_put(uint64_t store_id, int fd, int owned, uint32_t gen, int *old);

/* Forget store_id; *old gets its fd if the table owned it, else -1. 0 or -ENOENT. */
int store_drop(uint64_t store_id, int *old);

/* The control session gen ended: close its stores' fds. Caller holds the apply lock. */
void store_drop_session(uint32_t gen);
void storetab_atfork_child(void);

/* ---- control.c, atfork.c ---------------------------------------------------------------------------- */

void control_atfork_child(void);

/* Register the fork child's reset, once. 0 or -errno. */
int atfork_register(void);

#pragma GCC visibility pop

#endif /* RX_CLIENT_INTERNAL_H */
