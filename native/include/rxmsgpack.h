/* rxmsgpack.h — the msgpack subset of the C channels (common/msgpack.c): arrays of integers and
 * a bin. Shared by the client's channels and rxd's fault server; nothing here is for Python (the
 * cdef block is empty). Async-signal-safe.
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

#pragma GCC visibility pop

#endif /* RXMSGPACK_H */
