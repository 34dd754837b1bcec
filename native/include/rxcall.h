/* rxcall.h — a syscall round trip on a call channel (the main one, a thread's own), in C
 * (client/call.c): send the request frame, receive until one whole reply frame is buffered,
 * with the fds that rode on it. The frames themselves are proto's (Python encodes the request
 * and decodes the reply); what C saves is the receive loop, the framing and the buffers, with
 * the GIL let go while rxd works. Client side.
 * Conventions as rxnative.h: a value >= 0 on success, -errno on failure.
 */
#ifndef RXCALL_H
#define RXCALL_H

#include <stdint.h>

/* cdef-begin */

#define RX_CALL_MAX_FDS 16

struct rx_call_buf {  /* a channel's receive side; zero it to start, rx_call_buf_release at the end */
    uint8_t *data;    /* data[0..frame): the reply of the last round trip */
    uint64_t cap, have, frame;
    uint64_t scan_at, scan_pending; /* (the framing's resume point: rxmsgpack.h's mp_scan) */
    int fds[RX_CALL_MAX_FDS];       /* fds that came with the reply: the caller's now */
    int nfds;
    int pad;
};

/* Send req[0..n) on fd, then receive the reply. 0 with data[0..frame) the reply; -EPIPE when rxd
 * closed the channel, -EPROTO for a byte msgpack never uses, -EMSGSIZE past max_frame, -EINTR
 * when a signal came while waiting (run the handlers, then rx_call_resume), another -errno from
 * the socket. */
int rx_call_roundtrip(int fd, const uint8_t *req, uint64_t n, struct rx_call_buf *b, uint64_t max_frame);
/* Go on receiving the reply after -EINTR. */
int rx_call_resume(int fd, struct rx_call_buf *b, uint64_t max_frame);
void rx_call_buf_release(struct rx_call_buf *b);

/* cdef-end */

#endif /* RXCALL_H */
