/* msgpack.c — the msgpack subset every C channel speaks (proto/WIRE.md): arrays of integers, and
 * a bin for the session token. The client's channels (client/wire.c) and rxd's fault server
 * (server/faultserver.c) both use it. Owns no state; async-signal-safe (the fault handler uses it).
 */
#include <stddef.h>

#include "rxmsgpack.h"

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
static int mp_get_int(const uint8_t *p, size_t n, int64_t *out, int ints_only) {
    if (n < 1) return 0;
    uint8_t b = p[0];
    int w;
    if (b < 0x80) { *out = b; return 1; }
    if (b >= 0xe0) { *out = (int8_t)b; return 1; }
    switch (b) {
    case 0xc0: case 0xc2: case 0xc3:
        if (ints_only) return -1;
        *out = b == 0xc3;
        return 1; /* nil, false, true */
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

int mp_get_array(const uint8_t *p, size_t n, int64_t *v, uint32_t maxv, uint32_t *count, size_t *used,
                 int ints_only) {
    if (n < 1) return 0;
    uint32_t len;
    size_t at;
    if ((p[0] & 0xf0) == 0x90) { len = p[0] & 0x0f; at = 1; }
    else if (p[0] == 0xdc) { if (n < 3) return 0; len = (uint32_t)mp_be(p + 1, 2); at = 3; }
    else if (p[0] == 0xdd) { if (n < 5) return 0; len = (uint32_t)mp_be(p + 1, 4); at = 5; }
    else return -1;
    if (len > maxv) return -1;
    for (uint32_t i = 0; i < len; i++) {
        int k = mp_get_int(p + at, n - at, &v[i], ints_only);
        if (k <= 0) return k;
        at += (size_t)k;
    }
    *count = len;
    *used = at;
    return 1;
}

