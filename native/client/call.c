/* call.c — the call channels' round trip (rxcall.h). Owns no state: the buffer is the caller's.
 * Not for the signal handler (it mallocs); the fault path has its own channels (faultchan.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"
#include "rxcall.h"
#include "rxmsgpack.h"
#include "rxvdso_loader.h"
#include "vdso/rxvvar.h"

#define BUF_MIN 4096

/* The vvar's call_load (0 before the vDSO is attached: the hello). */
static uint32_t call_load(void) {
    const struct rx_vvar *v = (const struct rx_vvar *)(uintptr_t)rxv_vvar_base();
    return v ? __atomic_load_n(&v->call_load, __ATOMIC_RELAXED) : 0;
}

static int wait_readable(int fd) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, -1);
}

static void take_fds(struct rx_call_buf *b, struct msghdr *mh) {
    for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int fds[RX_CALL_MAX_FDS * 2];
        memcpy(fds, CMSG_DATA(c), (size_t)(k < RX_CALL_MAX_FDS * 2 ? k : RX_CALL_MAX_FDS * 2) * sizeof(int));
        for (int i = 0; i < k && i < RX_CALL_MAX_FDS * 2; i++) {
            if (b->nfds < RX_CALL_MAX_FDS) b->fds[b->nfds++] = fds[i];
            else close(fds[i]); /* more than any reply carries: not ours to keep */
        }
    }
}

int rx_call_resume(int fd, struct rx_call_buf *b, uint64_t max_frame) {
    struct mp_scan st = {.at = b->scan_at, .pending = b->scan_pending};
    for (;;) {
        int r = mp_frame_scan(b->data, b->have, &st);
        b->scan_at = st.at, b->scan_pending = st.pending;
        if (r < 0) return -EPROTO;
        if (r > 0) { b->frame = st.at; return 0; }
        if (b->have > max_frame) return -EMSGSIZE;
        if (b->cap - b->have < BUF_MIN) {
            uint64_t cap = b->cap ? b->cap * 2 : BUF_MIN;
            uint8_t *d = realloc(b->data, cap);
            if (!d) return -ENOMEM;
            b->data = d, b->cap = cap;
        }
        struct iovec iov = {.iov_base = b->data + b->have, .iov_len = b->cap - b->have};
        union {
            char buf[CMSG_SPACE(RX_CALL_MAX_FDS * 2 * sizeof(int))];
            struct cmsghdr align;
        } u;
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
        /* How to wait. A blocking recv is woken by every wake-up on the socket, rxd's read of
         * our request included (its "write space" wake), where poll waits for POLLIN only. When
         * rxd is busy (the vvar says its last batch held several requests) that needless wake
         * costs rxd an IPI per request, so we wait in poll; when it is idle, the early wake
         * keeps this vCPU from sleeping deep and the reply gets here sooner, so we block. */
        int busy = b->have == 0 && call_load() > 1;
        if (busy && wait_readable(fd) < 0) return -errno;
        ssize_t k = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | (busy ? MSG_DONTWAIT : 0));
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            /* (a socket made non-blocking, by a Python default timeout: wait in poll then) */
            if (!busy && wait_readable(fd) < 0) return -errno;
            continue;
        }
        if (k < 0) return -errno; /* (EINTR included: the caller runs its signal handlers first) */
        if (k == 0) return -EPIPE;
        take_fds(b, &mh);
        b->have += (uint64_t)k;
    }
}

int rx_call_roundtrip(int fd, const uint8_t *req, uint64_t n, struct rx_call_buf *b, uint64_t max_frame) {
    if (b->frame) { /* the last reply is read: drop it, keep what came behind it */
        memmove(b->data, b->data + b->frame, b->have - b->frame);
        b->have -= b->frame;
        b->frame = 0;
    }
    if (b->cap > 16 * BUF_MIN && b->have <= BUF_MIN) { /* a big reply came and went */
        uint8_t *d = realloc(b->data, BUF_MIN);
        if (d) b->data = d, b->cap = BUF_MIN;
    }
    b->nfds = 0;
    b->scan_at = b->scan_pending = 0;
    if (send_all(fd, req, n) < 0) return errno == EPIPE || errno == ECONNRESET ? -EPIPE : -errno;
    return rx_call_resume(fd, b, max_frame);
}

void rx_call_buf_release(struct rx_call_buf *b) {
    free(b->data); /* (fds that came are the caller's even if it never looked) */
    memset(b, 0, sizeof *b);
}
