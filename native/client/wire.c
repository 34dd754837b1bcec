/* wire.c — the wire codec and socket I/O of the client's C channels (proto/WIRE.md).
 *
 * Owns no state, only code: send/receive loops over the msgpack codec (common/msgpack.c) and
 * the fd queue of a channel that carries SCM_RIGHTS.
 * Buffers and queues belong to the caller (a fault-channel slot, the control thread).
 * Everything here is async-signal-safe: the fault handler uses it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

/* ---- socket I/O (async-signal-safe) ---------------------------------------------------------- */

int send_all(int fd, const uint8_t *p, size_t n) {
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

/* ---- fd queues ---------------------------------------------------------------------------- */

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

int fdq_pop(struct rx_fdq *q) {
    if (!q->n) return -1;
    int fd = q->fds[0];
    memmove(q->fds, q->fds + 1, (size_t)(q->n - 1) * sizeof(int));
    q->n--;
    return fd;
}

int read_frame_fds(int fd, uint8_t *buf, size_t cap, size_t *len, int64_t *v, uint32_t maxv,
                   uint32_t *count, struct rx_fdq *q) {
    for (;;) {
        if (*len) {
            size_t used = 0;
            int r = mp_get_array(buf, *len, v, maxv, count, &used, 0);
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

int read_frame(int fd, uint8_t *buf, size_t cap, size_t *len, int64_t *v, uint32_t maxv,
               uint32_t *count) {
    return read_frame_fds(fd, buf, cap, len, v, maxv, count, NULL);
}
