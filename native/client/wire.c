/* wire.c — the wire codec and socket I/O of the client's C channels (proto/WIRE.md).
 *
 * Owns no state, only code: msgpack encoders for what the C side sends (arrays of integers, the
 * session token's bin), a decoder for what it receives (one array of integers; nil and bools
 * read as 0/1), send/receive loops, and the fd queue of a channel that carries SCM_RIGHTS.
 * Buffers and queues belong to the caller (a fault-channel slot, the control thread).
 * Everything here is async-signal-safe: the fault handler uses it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

/* ---- msgpack: arrays of integers, and a bin for the token --------------------------------- */

size_t mp_put_array(uint8_t *p, uint32_t n) {
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
size_t mp_put_int(uint8_t *p, int64_t v) {
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

size_t mp_put_uint(uint8_t *p, uint64_t u) {
    return u <= INT64_MAX ? mp_put_int(p, (int64_t)u) : mp_put_be(p, 0xcf, u, 8);
}

size_t mp_put_bin(uint8_t *p, const uint8_t *data, uint8_t n) {
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

int read_frame(int fd, uint8_t *buf, size_t cap, size_t *len, int64_t *v, uint32_t maxv,
               uint32_t *count) {
    return read_frame_fds(fd, buf, cap, len, v, maxv, count, NULL);
}
