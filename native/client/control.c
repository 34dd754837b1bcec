/* control.c — the control thread: applies rxd's INVALIDATE / PROTECT / PING / STORE / FORGET
 * requests and acks them (proto/WIRE.md "Control channel").
 *
 * Owns:
 *   ctl_fd, ctl_gen   the running thread's channel fd, and the number of control sessions
 *                     started (a store that came on session g is closed when g ends; 0 = stores
 *                     Python registered). Guarded by ctl_mu, which serialises start, stop and the
 *                     thread's exit and is held with no other lock.
 *   struct rx_ctl     one per thread (malloc'd, freed by the thread): its fd, session, read
 *                     buffer, decoded values and the fd queue of the store fds that came with
 *                     its requests. Only that thread touches it.
 * Every change a fault could see (mappings, protections, store fds, applied_seq) is made under
 * the apply lock (apply.c), never across socket I/O. Lock order: internal.h.
 */
#define _GNU_SOURCE
#include "rxnative.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

#define CTL_BUF_BYTES RX_CONTROL_MAX_FRAME_BYTES
/* PROTECT has the widest ranges. */
#define CTL_MAX_VALUES (RX_CONTROL_REQUEST_HEAD + RX_CONTROL_PROTECT_WIDTH * RX_CONTROL_MAX_RANGES)

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
        if (na != RX_CONTROL_STORE_WIDTH) { /* exactly one (store_id, writable) */
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
    if (n < RX_CONTROL_REQUEST_HEAD) return RX_ERR_INVALID_ARGS;
    int64_t op = v[RX_CONTROL_REQUEST_FIELD_OP];
    uint64_t inval_seq = (uint64_t)v[RX_CONTROL_REQUEST_FIELD_INVAL_SEQ];
    const int64_t *args = v + RX_CONTROL_REQUEST_HEAD;
    uint32_t na = n - RX_CONTROL_REQUEST_HEAD, width;
    switch (op) {
    case RX_CONTROL_INVALIDATE: width = RX_CONTROL_INVALIDATE_WIDTH; break;
    case RX_CONTROL_PROTECT: width = RX_CONTROL_PROTECT_WIDTH; break;
    /* No args (RX_CONTROL_PING_WIDTH 0); width 1 only keeps na % width defined. */
    case RX_CONTROL_PING: width = 1; if (na) return RX_ERR_INVALID_ARGS; break;
    case RX_CONTROL_STORE:
    case RX_CONTROL_FORGET: {
        int64_t status = ctl_stores(op, args, na, q, gen);
        apply_acquire();
        apply_done_locked(inval_seq);
        apply_release();
        cnt_add(CNT_CONTROL, 1);
        return status;
    }
    default: return RX_ERR_INVALID_ARGS;
    }
    if (na % width) return RX_ERR_INVALID_ARGS;
    for (uint32_t i = 0; op != RX_CONTROL_PING && i < na; i += width) {
        if (!range_ok((uint64_t)args[i], (uint64_t)args[i + 1])) return RX_ERR_INVALID_ARGS;
        if (op == RX_CONTROL_PROTECT && (args[i + 2] & ~(int64_t)RX_VM_PERMS)) return RX_ERR_INVALID_ARGS;
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
            int r = op == RX_CONTROL_INVALIDATE ? map_none(lo, len)
                                                : protect_file_backed(&vmas, lo, len, (int)args[i + 2]);
            if (r < 0) status = RX_ERR_INTERNAL;
        }
    }
    apply_done_locked(inval_seq);
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
            break; /* EOF, error, or a stream we cannot ack (no seq): the channel is over */
        int64_t status = ctl_apply(c->v, n, &c->fdq, c->gen);
        uint8_t msg[32];
        size_t k = mp_put_array(msg, RX_CONTROL_ACK_WORDS);
        k += mp_put_uint(msg + k, (uint64_t)c->v[RX_CONTROL_REQUEST_FIELD_SEQ]);
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

/* A fork child has no control thread (threads do not survive fork) and no channel. Only this
 * thread exists. */
void control_atfork_child(void) {
    pthread_mutex_init(&ctl_mu, NULL);
    if (ctl_fd >= 0) close(ctl_fd);
    ctl_fd = -1;
}
