/* callfront.c — rxd's call front end (rxcallfront.h): receive, frame and send for the call
 * channels, a batch per call from the trio thread.
 *
 * Every channel sits in the epoll edge-triggered from rx_cf_add to rx_cf_remove, so serving a
 * request costs no epoll_ctl. The price is one rule: `stirred` says the socket may hold bytes (or
 * its end) that no edge will announce again — an edge came while the channel was not READING, or
 * a frame was cut before a read came up short — and only a read that finds the socket drained
 * clears it; a channel whose reply went out goes back to the ready list while it is set. A
 * channel is in one of three states:
 *   READING  waiting for bytes (an edge), or on the ready list with bytes buffered or to read;
 *   OUT      a request frame is with Python (in[0..frame) until rx_cf_reply);
 *   SENDING  a reply the socket did not take at once: EPOLLOUT is added until it is all sent;
 * and HANDED once it went back to Python (out of the epoll for good, bytes kept for the taking).
 * Ids carry a generation, so an id of a removed channel finds nothing even if its slot is reused.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rxcallfront.h"
#include "rxmsgpack.h"
#include "rxvvar_writer.h"

#define IN_MIN 4096        /* a fresh channel's buffer; most requests are tens of bytes */
#define RECV_ROOM 65536    /* room a recv asks for at least, once a frame is big */
#define RECV_ROUNDS 16     /* recvs for one channel per poll (a big frame: about 1 MiB a turn) */
#define MAX_FDS 16

enum { READING, OUT, SENDING, HANDED };

struct chan {
    int fd;
    int state;
    int in_epoll;
    int ready;            /* on the ready list: serve without waiting for epoll */
    int stirred;          /* the socket may hold bytes no edge will announce (see the top) */
    uint8_t *in;
    size_t have, cap;     /* bytes buffered, buffer size */
    size_t frame;         /* OUT: the length of the frame at in[0] */
    struct mp_scan scan;  /* the frame being walked over at in[0] */
    uint8_t *out;         /* SENDING: the rest of the reply */
    size_t out_len, out_at;
    int out_fds[MAX_FDS]; /* SENDING with nothing sent yet: our dups of the reply's fds */
    int out_nfds;
};

struct rx_cf {
    int epfd;
    int wakefd;           /* in the epoll (id 0): makes it readable for a ready list filled outside a poll */
    int polling;
    uint64_t max_frame;
    struct chan **chans;  /* by slot; NULL: free */
    uint32_t *gens;       /* by slot, bumped when freed */
    uint32_t nslots;
    int64_t *ready;       /* ids of channels to serve without epoll */
    uint32_t nready, ready_cap;
    struct rx_cf_counters *c;
    void *vvar;
    uint32_t load; /* what the vvar says now */
};

static int64_t chan_id(uint32_t slot, uint32_t gen) { return (int64_t)((uint64_t)gen << 32 | (slot + 1)); }

static struct chan *lookup(const struct rx_cf *cf, int64_t id) {
    uint32_t slot = (uint32_t)((uint64_t)id & 0xffffffffu) - 1;
    if (id <= 0 || slot >= cf->nslots || cf->gens[slot] != (uint32_t)((uint64_t)id >> 32)) return NULL;
    return cf->chans[slot];
}

static int watch(struct rx_cf *cf, int64_t id, struct chan *ch, uint32_t events) {
    struct epoll_event ev = {.events = events | EPOLLIN | EPOLLRDHUP | EPOLLET, .data.u64 = (uint64_t)id};
    if (epoll_ctl(cf->epfd, ch->in_epoll ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, ch->fd, &ev) < 0) return -errno;
    ch->in_epoll = 1;
    return 0;
}

static void unwatch(struct rx_cf *cf, struct chan *ch) {
    if (ch->in_epoll) epoll_ctl(cf->epfd, EPOLL_CTL_DEL, ch->fd, NULL);
    ch->in_epoll = 0;
}

static void drop_out(struct chan *ch) {
    free(ch->out);
    ch->out = NULL;
    ch->out_len = ch->out_at = 0;
    for (int i = 0; i < ch->out_nfds; i++) close(ch->out_fds[i]);
    ch->out_nfds = 0;
}

/* Make the epoll readable (the eventfd in it): trio, waiting on it, comes to serve the ready list. */
static void wake(struct rx_cf *cf) {
    uint64_t one = 1;
    ssize_t k = write(cf->wakefd, &one, sizeof one);
    (void)k; /* (an eventfd refuses only at a count of 2^64 - 1) */
}

static void make_ready(struct rx_cf *cf, int64_t id, struct chan *ch) {
    if (ch->ready) return;
    if (cf->nready == cf->ready_cap) {
        uint32_t cap = cf->ready_cap ? cf->ready_cap * 2 : 64;
        int64_t *r = realloc(cf->ready, cap * sizeof *r);
        if (!r) return; /* (out of memory: it waits for epoll instead, which sees no new bytes) */
        cf->ready = r, cf->ready_cap = cap;
    }
    cf->ready[cf->nready++] = id;
    ch->ready = 1;
    if (!cf->polling && cf->nready == 1) wake(cf); /* (a poll wakes itself as it ends) */
}

static void event(struct rx_cf_event *ev, int64_t id, int kind, int error, const uint8_t *data, size_t len) {
    *ev = (struct rx_cf_event){.channel = id, .kind = kind, .error = error, .data = data, .len = len};
}

/* Out of the epoll for good: Python has the channel now, or only removing it is left. */
static void give_up(struct rx_cf *cf, struct chan *ch) {
    drop_out(ch);
    unwatch(cf, ch);
    ch->state = HANDED;
}

static int hand_off(struct rx_cf *cf, int64_t id, struct chan *ch, struct rx_cf_event *ev) {
    give_up(cf, ch);
    event(ev, id, RX_CF_HANDOFF, 0, ch->in, ch->have);
    return 1;
}

static int closed(struct rx_cf *cf, int64_t id, struct chan *ch, int error, struct rx_cf_event *ev) {
    give_up(cf, ch);
    event(ev, id, RX_CF_CLOSED, error, NULL, 0);
    return 1;
}

/* A frame at in[0] if one is whole: 1 with the event, 0 to wait for more, 1 with a HANDOFF. */
static int cut(struct rx_cf *cf, int64_t id, struct chan *ch, struct rx_cf_event *ev) {
    int r = mp_frame_scan(ch->in, ch->have, &ch->scan);
    if (r < 0) return hand_off(cf, id, ch, ev);
    if (r == 0) return ch->have > cf->max_frame ? hand_off(cf, id, ch, ev) : 0;
    if (ch->scan.at > cf->max_frame) return hand_off(cf, id, ch, ev);
    ch->frame = ch->scan.at;
    ch->state = OUT;
    cf->c->requests++;
    event(ev, id, RX_CF_REQUEST, 0, ch->in, ch->frame);
    return 1;
}

static int grow(struct chan *ch, size_t want) {
    if (ch->cap - ch->have >= want) return 0;
    size_t cap = ch->cap;
    while (cap - ch->have < want) cap *= 2;
    uint8_t *in = realloc(ch->in, cap);
    if (!in) return -ENOMEM;
    ch->in = in, ch->cap = cap;
    return 0;
}

/* A READING channel: take what the socket has, then cut a frame. until_again: read until the socket says EAGAIN. Edge-triggered, a short read means drained,
 * unless the end of the stream came with the bytes (then no further edge comes for it: the
 * epoll event said EPOLLRDHUP) or we come from the ready list (we do not know what is there). */
static int serve_readable(struct rx_cf *cf, int64_t id, struct chan *ch, struct rx_cf_event *ev, int until_again) {
    if (ch->have && cut(cf, id, ch, ev)) return 1; /* (a frame that was already buffered; stirred stays) */
    until_again |= ch->stirred;
    for (int round = 0; round < RECV_ROUNDS; round++) {
        size_t room = ch->have < IN_MIN / 2 ? IN_MIN / 2 : RECV_ROOM;
        if (grow(ch, room) < 0) return closed(cf, id, ch, ENOMEM, ev);
        size_t ask = ch->cap - ch->have;
        /* recvmsg with no room for ancillary data: fds a client sends here are not ours (the
         * host closes them), but a read stops at them, short of what is there: MSG_CTRUNC says so. */
        struct iovec iov = {.iov_base = ch->in + ch->have, .iov_len = ask};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
        ssize_t k;
        do k = recvmsg(ch->fd, &mh, MSG_DONTWAIT);
        while (k < 0 && errno == EINTR); /* (edge-triggered: giving up here would lose the edge) */
        if (k == 0) return ch->have ? hand_off(cf, id, ch, ev) : closed(cf, id, ch, 0, ev); /* (mid-frame: proto says so) */
        if (k < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) return closed(cf, id, ch, errno, ev);
            ch->stirred = 0;
            return 0; /* drained: the next edge brings us back */
        }
        ch->have += (size_t)k;
        int drained = (size_t)k < ask && !until_again && !(mh.msg_flags & MSG_CTRUNC);
        if (drained) ch->stirred = 0;
        if (cut(cf, id, ch, ev)) {
            if (!drained) ch->stirred = 1; /* (more, or the end, may be behind it: look after the reply) */
            return 1;
        }
        if (drained) return 0; /* (as above) */
    }
    ch->stirred = 1;
    make_ready(cf, id, ch); /* a big frame still coming: the rest next poll, after the others */
    return 0;
}

/* The reply went out whole: the next request, if one came already, else watch for it. */
static void reply_done(struct rx_cf *cf, int64_t id, struct chan *ch) {
    ch->state = READING;
    if (ch->have || ch->stirred) {
        make_ready(cf, id, ch);
        return;
    }
    if (ch->cap > IN_MIN) { /* a big frame came and went: give its buffer back */
        uint8_t *in = realloc(ch->in, IN_MIN);
        if (in) ch->in = in, ch->cap = IN_MIN;
    }
}

/* Send from data[at..len), fds on the first byte: bytes sent, or -errno (EAGAIN: none). */
static ssize_t send_some(int fd, const uint8_t *data, size_t len, const int *fds, int nfds) {
    struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
    union {
        char buf[CMSG_SPACE(MAX_FDS * sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds) {
        mh.msg_control = u.buf;
        mh.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
        memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
    }
    for (;;) {
        ssize_t k = sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (k >= 0) return k;
        if (errno != EINTR) return -errno;
    }
}

static int serve_writable(struct rx_cf *cf, int64_t id, struct chan *ch, struct rx_cf_event *ev) {
    ssize_t k = send_some(ch->fd, ch->out + ch->out_at, ch->out_len - ch->out_at, ch->out_fds, ch->out_nfds);
    if (k == -EAGAIN) k = 0;
    else if (k < 0) return closed(cf, id, ch, (int)-k, ev);
    if (k > 0) {
        for (int i = 0; i < ch->out_nfds; i++) close(ch->out_fds[i]); /* (they went with the first byte) */
        ch->out_nfds = 0;
        ch->out_at += (size_t)k;
    }
    if (ch->out_at < ch->out_len) return 0; /* (the next EPOLLOUT edge) */
    drop_out(ch);
    int rc = watch(cf, id, ch, 0); /* EPOLLIN only again */
    if (rc < 0) return closed(cf, id, ch, -rc, ev);
    reply_done(cf, id, ch);
    return 0;
}

struct rx_cf *rx_cf_new(uint64_t max_frame, struct rx_cf_counters *c, void *vvar) {
    struct rx_cf *cf = calloc(1, sizeof *cf);
    if (!cf) return NULL;
    cf->max_frame = max_frame;
    cf->c = c;
    cf->vvar = vvar;
    cf->epfd = epoll_create1(EPOLL_CLOEXEC);
    cf->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
    if (cf->epfd < 0 || cf->wakefd < 0 || epoll_ctl(cf->epfd, EPOLL_CTL_ADD, cf->wakefd, &ev) < 0) {
        if (cf->epfd >= 0) close(cf->epfd);
        if (cf->wakefd >= 0) close(cf->wakefd);
        free(cf);
        return NULL;
    }
    return cf;
}

static void free_chan(struct chan *ch) {
    drop_out(ch);
    free(ch->in);
    free(ch);
}

void rx_cf_free(struct rx_cf *cf) {
    if (!cf) return;
    for (uint32_t i = 0; i < cf->nslots; i++)
        if (cf->chans[i]) free_chan(cf->chans[i]);
    free(cf->chans);
    free(cf->gens);
    free(cf->ready);
    close(cf->epfd);
    close(cf->wakefd);
    free(cf);
}

int rx_cf_fd(const struct rx_cf *cf) { return cf->epfd; }

int64_t rx_cf_add(struct rx_cf *cf, int fd) {
    uint32_t slot = 0;
    while (slot < cf->nslots && cf->chans[slot]) slot++;
    if (slot == cf->nslots) {
        uint32_t n = cf->nslots ? cf->nslots * 2 : 64;
        struct chan **chans = realloc(cf->chans, n * sizeof *chans);
        if (!chans) return -ENOMEM;
        cf->chans = chans;
        uint32_t *gens = realloc(cf->gens, n * sizeof *gens);
        if (!gens) return -ENOMEM;
        cf->gens = gens;
        for (uint32_t i = cf->nslots; i < n; i++) cf->chans[i] = NULL, cf->gens[i] = 1;
        cf->nslots = n;
    }
    struct chan *ch = calloc(1, sizeof *ch);
    if (!ch || !(ch->in = malloc(IN_MIN))) { free(ch); return -ENOMEM; }
    ch->fd = fd;
    ch->cap = IN_MIN;
    int64_t id = chan_id(slot, cf->gens[slot]);
    int rc = watch(cf, id, ch, 0);
    if (rc < 0) { free_chan(ch); return rc; }
    cf->chans[slot] = ch;
    return id;
}

void rx_cf_remove(struct rx_cf *cf, int64_t id) {
    struct chan *ch = lookup(cf, id);
    if (!ch) return;
    unwatch(cf, ch);
    uint32_t slot = (uint32_t)((uint64_t)id & 0xffffffffu) - 1;
    cf->chans[slot] = NULL;
    cf->gens[slot]++;
    free_chan(ch); /* (a stale id left on the ready list finds nothing) */
}

int rx_cf_poll(struct rx_cf *cf, struct rx_cf_event *out, int max) {
    int n = 0;
    uint64_t requests_before = cf->c->requests;
    cf->polling = 1;
    /* The ready list first: frames that were buffered behind a reply, reads cut short. */
    uint32_t i = 0;
    for (; i < cf->nready && n < max; i++) {
        struct chan *ch = lookup(cf, cf->ready[i]);
        if (!ch) continue;
        ch->ready = 0;
        if (ch->state == READING) n += serve_readable(cf, cf->ready[i], ch, &out[n], 1);
    }
    memmove(cf->ready, cf->ready + i, (cf->nready - i) * sizeof *cf->ready);
    cf->nready -= i;
    if (n < max) {
        struct epoll_event evs[64];
        int want = max - n < 64 ? max - n : 64;
        int k = epoll_wait(cf->epfd, evs, want, 0);
        for (int j = 0; j < k; j++) {
            int64_t id = (int64_t)evs[j].data.u64;
            if (id == 0) { /* the wake: the ready list it was for is served above or next time */
                uint64_t v;
                ssize_t r = read(cf->wakefd, &v, sizeof v);
                (void)r;
                continue;
            }
            struct chan *ch = lookup(cf, id);
            if (!ch) continue;
            if (ch->state == READING) {
                if (!ch->ready) /* (on the list: served there) */
                    n += serve_readable(cf, id, ch, &out[n], !!(evs[j].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)));
            } else if (ch->state == SENDING && (evs[j].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
                if (evs[j].events & EPOLLIN) ch->stirred = 1;
                n += serve_writable(cf, id, ch, &out[n]);
            } else if (ch->state != HANDED) {
                ch->stirred = 1; /* bytes (or the end) behind a request: served after its reply */
            }
        }
    }
    cf->polling = 0;
    if (cf->nready) wake(cf); /* what is left on the list (a big frame still coming in) is served next */
    uint32_t requests = (uint32_t)(cf->c->requests - requests_before);
    if (requests && requests != cf->load && cf->vvar) rx_vvar_set_call_load(cf->vvar, cf->load = requests);
    if (n) {
        cf->c->polls++;
        if ((uint64_t)n > cf->c->max_batch) cf->c->max_batch = (uint64_t)n;
    }
    return n;
}

int rx_cf_reply(struct rx_cf *cf, int64_t id, const uint8_t *data, uint64_t len, const int *fds, int nfds) {
    struct chan *ch = lookup(cf, id);
    if (!ch || ch->state != OUT) return -ENOENT;
    if (nfds < 0 || nfds > MAX_FDS) return -EINVAL;
    /* The request is answered: its frame goes, the bytes behind it stay. */
    memmove(ch->in, ch->in + ch->frame, ch->have - ch->frame);
    ch->have -= ch->frame;
    ch->frame = 0;
    ssize_t k = send_some(ch->fd, data, len, fds, nfds);
    if (k == -EAGAIN) k = 0;
    else if (k < 0) { give_up(cf, ch); return (int)k; }
    if ((uint64_t)k == len) {
        cf->c->replies++;
        reply_done(cf, id, ch);
        return 0;
    }
    cf->c->deferred_sends++;
    ch->out_len = len - (size_t)k;
    ch->out_at = 0;
    ch->out = malloc(ch->out_len);
    if (!ch->out) { give_up(cf, ch); return -ENOMEM; }
    memcpy(ch->out, data + k, ch->out_len);
    if (k == 0) { /* the fds did not go: ours to send with the first byte that does */
        for (int i = 0; i < nfds; i++) {
            int d = fcntl(fds[i], F_DUPFD_CLOEXEC, 0);
            if (d < 0) { int e = errno; give_up(cf, ch); return -e; }
            ch->out_fds[ch->out_nfds++] = d;
        }
    }
    ch->state = SENDING;
    int rc = watch(cf, id, ch, EPOLLOUT);
    if (rc < 0) give_up(cf, ch);
    return rc;
}
