/* trap.c — the SIGSEGV trap: rx mappings are paged in on demand by asking rxd (ARCHITECTURE.md "The fault path",
 * proto/WIRE.md "Fault channel").
 *
 * A fault at an address of the mapping table is sent to rxd on a fault channel (faultchan.c);
 * the reply's ops are checked, then mapped under the apply lock (apply.c), unless an
 * invalidation or the client itself overtook the reply, which is then dropped. A fault rxd
 * refuses, or cannot answer, ends the process with a diagnostic (diag.c). A fault anywhere else
 * goes to whatever handler was active before ours.
 *
 * Owns:
 *   counters[]   rx_trap_counters' numbers; relaxed atomic adds (cnt_add, from every module).
 *   prev_act[2], prev_idx   the handler we replaced, double-buffered: rx_trap_install writes the
 *                spare one and publishes its index (release) under install_mu; the handler reads
 *                prev_act[prev_idx] lock-free (acquire).
 *   chained      set when a crash was handed to the previous handler (a re-raise must not go
 *                there again); relaxed atomics.
 *   install_mu   serialises rx_trap_install; held with no other lock (internal.h: lock order).
 * The handler itself takes no pthread lock, mallocs nothing, uses no TLS and saves errno.
 */
#define _GNU_SOURCE
#include "rxnative.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <ucontext.h>

#include "internal.h"

static uint64_t counters[CNT_N];

void cnt_add(int which, uint64_t n) { __atomic_fetch_add(&counters[which], n, __ATOMIC_RELAXED); }

void rx_trap_counters(uint64_t out[8]) {
    for (int i = 0; i < CNT_N; i++) out[i] = LD(&counters[i]);
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

/* ---- the fault path: ask rxd, check the reply, map it ------------------------------------------- */

/* A fault reply, decoded where fault_roundtrip left it. */
struct fault_reply {
    const int64_t *v;   /* [seq, status, inval_seq, op...] */
    uint32_t nops;
    uint64_t inval_seq; /* rxd's inval_seq when it computed the reply */
    uint64_t pages;     /* pages the ops map */
};

static inline const int64_t *reply_op(const struct fault_reply *r, uint32_t i) {
    return r->v + RX_FAULT_REPLY_HEAD + RX_FAULT_OP_WORDS * i;
}

/* Decode and validate the reply to a fault at addr: RX_OK, or the status to refuse the fault
 * with (rxd's refusal, or RX_ERR_INTERNAL for a reply we cannot use). Every op is checked before
 * any is applied. Where they land is checked later, under the apply lock: only the parts still in
 * the mapping table are applied (another thread may have unmapped part of a fault-around window
 * meanwhile; rxd may only ever map inside our rx mappings). */
static int64_t reply_decode(uint64_t addr, const int64_t *v, uint32_t n, struct fault_reply *r) {
    if (v[RX_FAULT_REPLY_FIELD_STATUS] < 0) return v[RX_FAULT_REPLY_FIELD_STATUS];
    if (n < RX_FAULT_REPLY_HEAD || (n - RX_FAULT_REPLY_HEAD) % RX_FAULT_OP_WORDS != 0) return RX_ERR_INTERNAL;
    r->v = v;
    r->nops = (n - RX_FAULT_REPLY_HEAD) / RX_FAULT_OP_WORDS;
    r->inval_seq = (uint64_t)v[RX_FAULT_REPLY_FIELD_INVAL_SEQ];
    r->pages = 0;
    int covers_fault = 0; /* rxd always maps the faulting page; a reply that does not would loop */
    for (uint32_t i = 0; i < r->nops; i++) {
        const int64_t *op = reply_op(r, i);
        uint64_t a = (uint64_t)op[RX_FAULT_OP_FIELD_ADDR], len = (uint64_t)op[RX_FAULT_OP_FIELD_LENGTH];
        int64_t kind = op[RX_FAULT_OP_FIELD_KIND], prot = op[RX_FAULT_OP_FIELD_PROT];
        int64_t off = op[RX_FAULT_OP_FIELD_FILE_OFFSET];
        int ok = range_ok(a, len) && (prot & ~(int64_t)RX_VM_PERMS) == 0;
        if (ok && kind == RX_FAULT_OP_STORE) {
            ok = off >= 0 && !(off & (int64_t)RX_PAGE_MASK);
        } else if (kind != RX_FAULT_OP_ZERO) {
            ok = 0;
        }
        if (!ok) return RX_ERR_INTERNAL;
        r->pages += len / RX_PAGE_SIZE;
        if (addr - a < len) covers_fault = 1;
    }
    return covers_fault ? RX_OK : RX_ERR_INTERNAL;
}

/* An invalidation reached us after rxd computed this reply: it may be stale, so it is not
 * applied. Its ranges are emptied instead: rxd computed the reply believing these pages would be
 * replaced (a write fault stops tracking the zero pages it replaces), so leaving whatever was
 * mapped there could keep a zero page rxd no longer knows about. The next touch asks anew. */
static void reply_drop_locked(const struct fault_reply *r) {
    for (uint32_t i = 0; i < r->nops; i++) {
        const int64_t *op = reply_op(r, i);
        uint64_t base = (uint64_t)op[RX_FAULT_OP_FIELD_ADDR], end = base + (uint64_t)op[RX_FAULT_OP_FIELD_LENGTH];
        uint64_t lo, len;
        for (uint64_t cur = base; map_next_piece(cur, end, &lo, &len); cur = lo + len) map_none(lo, len);
    }
}

/* The fd of each STORE op's store into fds[] (-1 for ZERO ops): 0, or -1 when the reply names a
 * store we do not hold. Under the apply lock (the control thread replaces and closes store fds
 * under it too, so an fd number can never be closed and reused between lookup and mmap), and
 * only for a reply that is not stale: a stale one may name a store rxd has since forgotten. */
static int reply_stores_locked(const struct fault_reply *r, int *fds) {
    for (uint32_t i = 0; i < r->nops; i++) {
        const int64_t *op = reply_op(r, i);
        fds[i] = -1;
        if (op[RX_FAULT_OP_FIELD_KIND] == RX_FAULT_OP_STORE &&
            (fds[i] = store_lookup((uint64_t)op[RX_FAULT_OP_FIELD_STORE_ID])) < 0)
            return -1;
    }
    return 0;
}

/* Fault and PROTECT ops' prot goes to mmap as it is. */
_Static_assert(RX_VM_PERM_READ == PROT_READ && RX_VM_PERM_WRITE == PROT_WRITE, "rx perms are mmap prots");

/* Map each op over the parts of its range still in the mapping table (proto/WIRE.md "Fault
 * channel"), each mapping MADV_DONTFORK. 0, or -1 when an mmap failed (the ops before it stay). */
static int reply_map_locked(const struct fault_reply *r, const int *fds) {
    for (uint32_t i = 0; i < r->nops; i++) {
        const int64_t *op = reply_op(r, i);
        uint64_t base = (uint64_t)op[RX_FAULT_OP_FIELD_ADDR], end = base + (uint64_t)op[RX_FAULT_OP_FIELD_LENGTH];
        uint64_t lo, len;
        for (uint64_t cur = base; map_next_piece(cur, end, &lo, &len); cur = lo + len) {
            void *at = (void *)(uintptr_t)lo, *p;
            if (op[RX_FAULT_OP_FIELD_KIND] == RX_FAULT_OP_ZERO)
                p = mmap(at, len, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
            else
                p = mmap(at, len, (int)op[RX_FAULT_OP_FIELD_PROT], MAP_SHARED | MAP_FIXED | MAP_POPULATE, fds[i],
                         (off_t)(op[RX_FAULT_OP_FIELD_FILE_OFFSET] + (int64_t)(lo - base)));
            if (p == MAP_FAILED) return -1;
            madvise(p, len, MADV_DONTFORK);
        }
    }
    return 0;
}

/* A fault at addr, in an rx mapping: ask rxd, then map what it says, drop it if it is stale, or
 * die with the diagnostic (the epoch is read before asking: memory the client takes back while
 * the request is in flight makes the reply stale). */
static void rx_fault(uint64_t addr, int write) {
    int64_t v[RX_FAULT_MAX_VALUES];
    uint32_t n = 0;
    uint64_t epoch = apply_epoch();
    if (fault_roundtrip(addr, write, v, &n) < 0) {
        rx_unreachable(addr);
        return;
    }
    struct fault_reply r;
    int64_t status = reply_decode(addr, v, n, &r);
    if (status != RX_OK) {
        rx_refuse(addr, write, status);
        return;
    }
    int fds[RX_FAULT_MAX_OPS];
    apply_acquire();
    if (apply_stale_locked(r.inval_seq, epoch)) {
        reply_drop_locked(&r);
        apply_release();
        cnt_add(CNT_FAULTS, 1);
        cnt_add(CNT_STALE, 1);
        return;
    }
    if (reply_stores_locked(&r, fds) < 0) {
        apply_release();
        rx_refuse(addr, write, RX_ERR_INTERNAL);
        return;
    }
    int failed = reply_map_locked(&r, fds) < 0;
    apply_release();
    if (failed) {
        rx_refuse(addr, write, RX_ERR_INTERNAL);
        return;
    }
    cnt_add(CNT_FAULTS, 1);
    cnt_add(CNT_PAGES, r.pages);
}

static void rx_on_sigsegv(int sig, siginfo_t *si, void *ctx) {
    int saved_errno = errno;
    if (si == NULL || si->si_code <= 0) {
        rx_chain_sent(sig, si, ctx);
    } else {
        uint64_t addr = (uint64_t)(uintptr_t)si->si_addr;
        int kind = rx_map_lookup(addr);
        switch (kind) {
        case 0: rx_chain(sig, si, ctx); break;
        case 2: case 3: case 4: rx_no_longer_mapped(addr, kind); break;
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

/* ---- setup ------------------------------------------------------------------------------------ */

int rx_trap_setup(const char *socket_path, const uint8_t *session_token) {
    if (!socket_path || !session_token) return -EINVAL;
    int rc = faultchan_setup(socket_path, session_token);
    if (rc) return rc;
    rc = atfork_register();
    if (rc) return rc;
    return rx_trap_install();
}

/* A fork child installs nothing new: the handler stays, with nothing to resolve until rx connects
 * again. Only this thread exists. */
void trap_atfork_child(void) { pthread_mutex_init(&install_mu, NULL); }

/* ---- touch ------------------------------------------------------------------------------------ */

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t rx_touch(uint64_t addr, uint64_t length, int write) {
    int64_t t0 = now_ns();
    uint64_t end = addr + length;
    for (uint64_t p = addr; p < end && p >= addr; p = (p & ~RX_PAGE_MASK) + RX_PAGE_SIZE) {
        if (write) __atomic_fetch_add((uint8_t *)(uintptr_t)p, 0, __ATOMIC_RELAXED);
        else (void)*(volatile uint8_t *)(uintptr_t)p;
    }
    return now_ns() - t0;
}
