/* faultserver.c — the fault thread of rxd's fast path (rxfastfault.h): it owns the fault channels
 * handed to it, answers the faults rx_ff_resolve can decide, and queues everything else for the
 * trio side.
 *
 * Each channel is in the thread's epoll with EPOLLONESHOT: once a request went to trio (a FAULT
 * event) or a reply could not be sent whole (SEND), the thread does not touch the channel again
 * until trio has answered and rearmed it, so the two sides never write one channel at once.
 * A frame the thread does not decode exactly as proto would (anything but an array of three
 * integers, a negative seq or address) hands the channel over to Python for good (HANDOFF):
 * Python's decoder judges it, with its error messages and its rules for closing. So does a
 * client that sends another request before its reply: one request per channel at a time is the
 * protocol, and pipelining is for Python to sort out.
 *
 * The mutex: held by the thread from the moment epoll_wait returns until it has served what it
 * got (recv, decide, send: a few microseconds), and by the trio thread whenever it runs (see
 * rxfastfault.h). Channel ids carry a generation, so an event for a channel removed meanwhile
 * finds nothing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "rxfastfault.h"
#include "rxmsgpack.h"
#include "rxwire.h"

#define IN_CAP 256 /* a fault request is at most 30 bytes; a client sends one at a time */
#define REPLY_WORDS (RX_FAULT_REPLY_HEAD + RX_FAULT_OP_WORDS * RX_FAULT_MAX_OPS)
#define OUT_CAP (5 + 9 * REPLY_WORDS)
#define STOP_ID 0 /* the epoll tag of the stop eventfd; channel ids are never 0 */

struct chan {
    int fd;
    int armed; /* in epoll and watched (not waiting for trio) */
    struct rx_ff_proc *proc;
    uint32_t have; /* bytes buffered in `in` */
    uint32_t npending; /* bytes of `pending` (HANDOFF input or SEND output) trio takes */
    uint8_t in[IN_CAP];
    uint8_t pending[OUT_CAP];
};

struct rx_ff_server {
    pthread_mutex_t mu;
    pthread_t thread;
    int running, stopping;
    int epfd, wakefd, stopfd;
    struct rx_ff_pmm *pmm;
    struct rx_ff_counters *c;
    struct chan **chans; /* by slot; NULL: free */
    uint32_t *gens;      /* by slot: bumped when the slot is freed */
    uint32_t nslots;
    struct rx_ff_event *q;
    uint32_t qn, qcap;
};

static int64_t chan_id(uint32_t slot, uint32_t gen) { return (int64_t)((uint64_t)gen << 32 | (slot + 1)); }

static struct chan *lookup(const struct rx_ff_server *s, int64_t id) {
    uint32_t slot = (uint32_t)((uint64_t)id & 0xffffffffu) - 1;
    if ((uint64_t)id == STOP_ID || slot >= s->nslots || s->gens[slot] != (uint32_t)((uint64_t)id >> 32)) return NULL;
    return s->chans[slot];
}

static void push(struct rx_ff_server *s, int64_t id, int kind, int reason, int64_t seq, uint64_t addr, int is_write) {
    if (s->qn == s->qcap) {
        uint32_t cap = s->qcap ? s->qcap * 2 : 64;
        struct rx_ff_event *q = realloc(s->q, cap * sizeof *q);
        if (!q) return; /* (out of memory: the client's fault times out on its side, rxd lives) */
        s->q = q, s->qcap = cap;
    }
    s->q[s->qn++] = (struct rx_ff_event){(uint64_t)id, kind, reason, seq, addr, is_write, 0};
    if (s->qn == 1) { /* trio drains everything each time it wakes, so one wake per batch */
        uint64_t one = 1;
        ssize_t k = write(s->wakefd, &one, sizeof one);
        (void)k; /* an eventfd only refuses at a counter of 2^64 - 1 */
    }
}

static int arm(struct rx_ff_server *s, int64_t id, struct chan *ch, int op) {
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT, .data.u64 = (uint64_t)id};
    if (epoll_ctl(s->epfd, op, ch->fd, &ev) < 0) return -errno;
    ch->armed = 1;
    return 0;
}

static void unwatch(struct rx_ff_server *s, struct chan *ch) {
    if (ch->armed >= 0) epoll_ctl(s->epfd, EPOLL_CTL_DEL, ch->fd, NULL);
    ch->armed = -1; /* out of epoll for good */
}

static void hand_off(struct rx_ff_server *s, int64_t id, struct chan *ch) {
    unwatch(s, ch);
    memcpy(ch->pending, ch->in, ch->have);
    ch->npending = ch->have;
    ch->have = 0;
    s->c->deferred[RX_FF_FRAME]++;
    push(s, id, RX_FF_EV_HANDOFF, RX_FF_FRAME, 0, 0, 0);
}

static void closed(struct rx_ff_server *s, int64_t id, struct chan *ch) {
    unwatch(s, ch);
    push(s, id, RX_FF_EV_CLOSED, 0, 0, 0, 0);
}

/* Serve every whole request buffered; then watch again unless one went to trio. */
static void serve_buffered(struct rx_ff_server *s, int64_t id, struct chan *ch) {
    int64_t out[REPLY_WORDS];
    uint8_t bytes[OUT_CAP];
    while (ch->have) {
        int64_t v[3];
        uint32_t count;
        size_t used;
        int r = mp_get_array(ch->in, ch->have, v, 3, &count, &used, 1);
        if (r == 0 && ch->have < IN_CAP) break; /* the rest of the frame is on its way */
        if (r <= 0 || count != 3 || v[0] < 0 || v[1] < 0) { hand_off(s, id, ch); return; }
        memmove(ch->in, ch->in + used, ch->have - used);
        ch->have -= (uint32_t)used;
        uint32_t nout;
        int reason = rx_ff_resolve(ch->proc, s->pmm, s->c, v[0], (uint64_t)v[1], (int)(v[2] & RX_FAULT_FLAG_WRITE), out, &nout);
        if (reason != RX_FF_SERVED) {
            s->c->deferred[reason]++;
            push(s, id, RX_FF_EV_FAULT, reason, v[0], (uint64_t)v[1], (int)(v[2] & RX_FAULT_FLAG_WRITE));
            return; /* (bytes still buffered are a pipelining client's: rearm hands them over) */
        }
        size_t n = mp_put_array(bytes, nout);
        for (uint32_t i = 0; i < nout; i++) n += mp_put_int(bytes + n, out[i]);
        ssize_t k = send(ch->fd, bytes, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) { closed(s, id, ch); return; }
        if (k < (ssize_t)n) { /* the client is not reading: trio sends the rest when it can */
            size_t sent = k > 0 ? (size_t)k : 0;
            memcpy(ch->pending, bytes + sent, n - sent);
            ch->npending = (uint32_t)(n - sent);
            push(s, id, RX_FF_EV_SEND, 0, 0, 0, 0);
            return;
        }
    }
    if (arm(s, id, ch, EPOLL_CTL_MOD) < 0) closed(s, id, ch);
}

static void serve(struct rx_ff_server *s, int64_t id, struct chan *ch) {
    ch->armed = 0; /* EPOLLONESHOT disarmed it */
    ssize_t k = recv(ch->fd, ch->in + ch->have, IN_CAP - ch->have, MSG_DONTWAIT);
    if (k == 0) { closed(s, id, ch); return; }
    if (k < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            if (arm(s, id, ch, EPOLL_CTL_MOD) < 0) closed(s, id, ch);
        } else {
            closed(s, id, ch);
        }
        return;
    }
    ch->have += (uint32_t)k;
    serve_buffered(s, id, ch);
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Take the mutex, counting how long trio kept the fault thread waiting: the fast path's tail. */
static void lock(struct rx_ff_server *s) {
    if (!pthread_mutex_trylock(&s->mu)) return;
    uint64_t t0 = now_ns();
    pthread_mutex_lock(&s->mu);
    uint64_t waited = now_ns() - t0;
    s->c->lock_waits++;
    s->c->lock_wait_ns += waited;
    if (waited > s->c->lock_wait_max_ns) s->c->lock_wait_max_ns = waited;
}

static void *run(void *arg) {
    struct rx_ff_server *s = arg;
    struct epoll_event evs[64];
    for (;;) {
        int n = epoll_wait(s->epfd, evs, 64, -1);
        if (n < 0 && errno != EINTR) n = 0; /* (only EINTR happens on a valid epoll fd) */
        lock(s);
        if (s->stopping) break;
        for (int i = 0; i < n; i++) {
            int64_t id = (int64_t)evs[i].data.u64;
            struct chan *ch = lookup(s, id);
            if (ch && ch->armed == 1) serve(s, id, ch);
        }
        pthread_mutex_unlock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

struct rx_ff_server *rx_ff_server_new(struct rx_ff_pmm *pmm, struct rx_ff_counters *c) {
    struct rx_ff_server *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->pmm = pmm;
    s->c = c;
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    s->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    s->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = STOP_ID};
    if (s->epfd < 0 || s->wakefd < 0 || s->stopfd < 0 || epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->stopfd, &ev) < 0 ||
        pthread_mutex_init(&s->mu, NULL)) {
        if (s->epfd >= 0) close(s->epfd);
        if (s->wakefd >= 0) close(s->wakefd);
        if (s->stopfd >= 0) close(s->stopfd);
        free(s);
        return NULL;
    }
    return s;
}

int rx_ff_server_start(struct rx_ff_server *s) {
    if (s->running) return -EBUSY;
    int rc = pthread_create(&s->thread, NULL, run, s);
    if (rc) return -rc;
    s->running = 1;
    return 0;
}

void rx_ff_server_stop(struct rx_ff_server *s) {
    s->stopping = 1;
    uint64_t one = 1;
    ssize_t k = write(s->stopfd, &one, sizeof one);
    (void)k;
    pthread_mutex_unlock(&s->mu);
    if (s->running) pthread_join(s->thread, NULL);
    s->running = 0;
}

void rx_ff_server_free(struct rx_ff_server *s) {
    if (!s) return;
    for (uint32_t i = 0; i < s->nslots; i++) free(s->chans[i]);
    free(s->chans);
    free(s->gens);
    free(s->q);
    close(s->epfd);
    close(s->wakefd);
    close(s->stopfd);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

void rx_ff_lock(struct rx_ff_server *s) { pthread_mutex_lock(&s->mu); }
void rx_ff_unlock(struct rx_ff_server *s) { pthread_mutex_unlock(&s->mu); }
int rx_ff_wake_fd(const struct rx_ff_server *s) { return s->wakefd; }

int64_t rx_ff_channel_add(struct rx_ff_server *s, int fd, struct rx_ff_proc *p) {
    uint32_t slot = 0;
    while (slot < s->nslots && s->chans[slot]) slot++;
    if (slot == s->nslots) {
        uint32_t n = s->nslots ? s->nslots * 2 : 16;
        struct chan **chans = realloc(s->chans, n * sizeof *chans);
        if (!chans) return -ENOMEM;
        s->chans = chans;
        uint32_t *gens = realloc(s->gens, n * sizeof *gens);
        if (!gens) return -ENOMEM;
        s->gens = gens;
        for (uint32_t i = s->nslots; i < n; i++) s->chans[i] = NULL, s->gens[i] = 1;
        s->nslots = n;
    }
    struct chan *ch = calloc(1, sizeof *ch);
    if (!ch) return -ENOMEM;
    ch->fd = fd;
    ch->proc = p;
    int64_t id = chan_id(slot, s->gens[slot]);
    int rc = arm(s, id, ch, EPOLL_CTL_ADD);
    if (rc < 0) { free(ch); return rc; }
    s->chans[slot] = ch;
    return id;
}

void rx_ff_channel_remove(struct rx_ff_server *s, int64_t id) {
    struct chan *ch = lookup(s, id);
    if (!ch) return;
    unwatch(s, ch);
    uint32_t slot = (uint32_t)((uint64_t)id & 0xffffffffu) - 1;
    s->chans[slot] = NULL;
    s->gens[slot]++;
    free(ch);
}

int rx_ff_channel_rearm(struct rx_ff_server *s, int64_t id) {
    struct chan *ch = lookup(s, id);
    if (!ch || ch->armed < 0) return -ENOENT;
    if (ch->have) { hand_off(s, id, ch); return 0; } /* bytes came before the answer: see above */
    return arm(s, id, ch, EPOLL_CTL_MOD);
}

int rx_ff_channel_bytes(struct rx_ff_server *s, int64_t id, uint8_t *out, uint32_t cap) {
    struct chan *ch = lookup(s, id);
    if (!ch) return -ENOENT;
    if (ch->npending > cap) return -ENOSPC;
    uint32_t n = ch->npending;
    memcpy(out, ch->pending, n);
    ch->npending = 0;
    return (int)n;
}

int rx_ff_drain(struct rx_ff_server *s, struct rx_ff_event *out, int max) {
    int n = (int)s->qn < max ? (int)s->qn : max;
    memcpy(out, s->q, (size_t)n * sizeof *out);
    memmove(s->q, s->q + n, (s->qn - (uint32_t)n) * sizeof *s->q);
    s->qn -= (uint32_t)n;
    if (!s->qn) {
        uint64_t v;
        ssize_t k = read(s->wakefd, &v, sizeof v); /* (EAGAIN when trio read it already) */
        (void)k;
    }
    return n;
}
