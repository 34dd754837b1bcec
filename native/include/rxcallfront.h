/* rxcallfront.h — rxd's call front end (server/callfront.c; ARCHITECTURE.md "The call front end"):
 * the socket work of the channels that carry syscalls, in C, driven by rxd's trio thread in
 * batches. Server side only.
 *
 * The front end owns an inner epoll that holds every call channel it serves. Trio waits until
 * that one fd is readable, then rx_cf_poll receives from every ready channel and cuts whole
 * request frames out of what came (msgpack framing only: proto decodes them) — one call into C
 * for a whole batch, where trio alone paid an epoll registration, a wake-up and a recv per
 * request. Replies go out through rx_cf_reply, which sends at once and keeps what the socket
 * would not take for a later poll (EPOLLOUT). No thread of its own: everything here runs on the
 * trio thread, so nothing needs a lock.
 *
 * One request per channel at a time: after handing out a frame, the front end does not look at
 * that channel again until its reply went through rx_cf_reply (a client that sends several at
 * once has them served in order, one after another). A channel the front end cannot frame (a
 * byte msgpack never uses, a frame over the size limit) is handed back to Python whole, bytes
 * read so far included: proto's decoder judges it with its own words.
 * Conventions as rxnative.h: a value >= 0 on success, -errno on failure.
 */
#ifndef RXCALLFRONT_H
#define RXCALLFRONT_H

#include <stdint.h>

/* cdef-begin */

/* What rx_cf_poll reports, per channel. */
#define RX_CF_REQUEST 1 /* a whole frame: data[0..len) is valid until this channel's rx_cf_reply */
#define RX_CF_CLOSED 2  /* the peer closed or the socket failed: the channel is out of the front end */
#define RX_CF_HANDOFF 3 /* not ours to frame: data[0..len) is what was read; Python serves it now */

struct rx_cf_event {
    int64_t channel;
    int32_t kind;
    int32_t error;       /* RX_CF_CLOSED: errno of the failure, 0 for a clean close */
    const uint8_t *data;
    uint64_t len;
};

struct rx_cf_counters {
    uint64_t polls;      /* rx_cf_poll calls that found work */
    uint64_t requests;   /* frames handed out */
    uint64_t replies;    /* replies sent whole at once */
    uint64_t deferred_sends; /* replies the socket did not take at once (finished on EPOLLOUT) */
    uint64_t max_batch;  /* the most frames one poll handed out */
};

struct rx_cf;

/* max_frame: the largest request frame (bytes); a longer one is handed off. The counters are the
 * caller's (they outlive the front end); so is vvar (NULL: none), where each poll that finds work
 * publishes how many requests it found (rx_vvar_set_call_load): clients wait for replies the
 * way that suits how busy rxd is (client/call.c). */
struct rx_cf *rx_cf_new(uint64_t max_frame, struct rx_cf_counters *c, void *vvar);
void rx_cf_free(struct rx_cf *cf);
int rx_cf_fd(const struct rx_cf *cf); /* readable when rx_cf_poll has work */

/* Serve the channel on socket fd (non-blocking, its hello answered, nothing read past it): an id
 * (> 0), or -errno. The fd stays the caller's to close, after rx_cf_remove. */
int64_t rx_cf_add(struct rx_cf *cf, int fd);
/* Forget the channel (idempotent): its buffers go, data pointers it handed out die. */
void rx_cf_remove(struct rx_cf *cf, int64_t channel);

/* Up to max events from channels that are ready. Frames already buffered behind a reply count as
 * ready too, so call until it returns 0 before waiting on rx_cf_fd again. */
int rx_cf_poll(struct rx_cf *cf, struct rx_cf_event *out, int max);

/* The reply to the channel's outstanding request, with nfds fds riding on its first byte (the
 * front end dups what it cannot send at once; the caller's stay the caller's). 0 when sent or
 * queued, -ENOENT for an unknown channel or one with no request out, another -errno when the
 * socket failed (the channel is gone: the caller closes it). */
int rx_cf_reply(struct rx_cf *cf, int64_t channel, const uint8_t *data, uint64_t len, const int *fds, int nfds);

/* cdef-end */

#endif /* RXCALLFRONT_H */
