/* rxmsgpack.h — the msgpack subset of the C channels (common/msgpack.c): arrays of integers, a
 * bin, and where any value ends (framing). Shared by the client's channels and rxd's fault server
 * and call front end; nothing here is for Python (the cdef block is empty). Async-signal-safe.
 */
#ifndef RXMSGPACK_H
#define RXMSGPACK_H

#include <stddef.h>
#include <stdint.h>

/* cdef-begin */
/* cdef-end */

#pragma GCC visibility push(hidden) /* not exported from the extension */

/* Encoders write at p (room enough: at most 9 bytes per integer) and return the bytes used. */
size_t mp_put_array(uint8_t *p, uint32_t n);
size_t mp_put_int(uint8_t *p, int64_t v);
size_t mp_put_uint(uint8_t *p, uint64_t u);
size_t mp_put_bin(uint8_t *p, const uint8_t *data, uint8_t n);

/* One whole array of at most maxv integers at p (n bytes buffered): 1 with the values in
 * v[0..*count) and *used bytes, 0 when incomplete, -1 when malformed or longer than maxv. With
 * ints_only, nil and booleans are malformed too (Python's decoder refuses them where it wants an
 * int); without it they read as 0 and 0/1. uint64 values above INT64_MAX come back reinterpreted. */
int mp_get_array(const uint8_t *p, size_t n, int64_t *v, uint32_t maxv, uint32_t *count, size_t *used,
                 int ints_only);

/* Framing: where the one msgpack value at p ends, whatever it holds (a whole request or reply).
 * Resumable, so a frame arriving in pieces is walked once: zero *st before the first call. 1 when
 * the value is whole (its length is st->at; the next call starts a new scan), 0 when it needs
 * more than the n bytes buffered (call again with more, same p), -1 for 0xc1, a byte msgpack
 * never uses.
 * Only framing: whether Python can hold the value (nesting, map keys) is its decoder's to judge. */
struct mp_scan {
    size_t at;        /* bytes walked over */
    uint64_t pending; /* values still to walk over; 0: no scan under way */
};
int mp_frame_scan(const uint8_t *p, size_t n, struct mp_scan *st);

#pragma GCC visibility pop

#endif /* RXMSGPACK_H */
