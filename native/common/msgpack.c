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


/* The size of one msgpack value's header and payload: *head bytes of header (0: need more),
 * *body bytes of payload, *items values nested in it. -1 for 0xc1, the one byte msgpack never uses. */
static int mp_head(const uint8_t *p, size_t n, size_t *head, uint64_t *body, uint64_t *items) {
    uint8_t b = p[0];
    *body = 0, *items = 0, *head = 1;
    if (b < 0x80 || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) return 0;
    if ((b & 0xf0) == 0x80) { *items = 2u * (b & 0x0f); return 0; }
    if ((b & 0xf0) == 0x90) { *items = b & 0x0f; return 0; }
    if ((b & 0xe0) == 0xa0) { *body = b & 0x1f; return 0; }
    static const uint8_t fixed[] = {[0xca - 0xc4] = 4, [0xcb - 0xc4] = 8, [0xcc - 0xc4] = 1, [0xcd - 0xc4] = 2,
                                    [0xce - 0xc4] = 4, [0xcf - 0xc4] = 8, [0xd0 - 0xc4] = 1, [0xd1 - 0xc4] = 2,
                                    [0xd2 - 0xc4] = 4, [0xd3 - 0xc4] = 8, [0xd4 - 0xc4] = 2, [0xd5 - 0xc4] = 3,
                                    [0xd6 - 0xc4] = 5, [0xd7 - 0xc4] = 9, [0xd8 - 0xc4] = 17};
    if (b >= 0xca && b <= 0xd8) { *body = fixed[b - 0xc4]; return 0; } /* numbers, fixext (type + data) */
    int w; /* the width of the length field */
    switch (b) {
    case 0xc4: case 0xd9: w = 1; break; /* bin8, str8 */
    case 0xc5: case 0xda: case 0xdc: case 0xde: w = 2; break;
    case 0xc6: case 0xdb: case 0xdd: case 0xdf: w = 4; break;
    case 0xc7: w = 1; break; /* ext8/16/32: the length, then a type byte */
    case 0xc8: w = 2; break;
    case 0xc9: w = 4; break;
    default: return -1; /* 0xc1 */
    }
    if (n < 1 + (size_t)w) { *head = 0; return 0; }
    uint64_t len = mp_be(p + 1, w);
    *head = 1 + (size_t)w;
    if (b == 0xdc || b == 0xdd) *items = len;
    else if (b == 0xde || b == 0xdf) *items = 2 * len;
    else *body = len + (b >= 0xc7 && b <= 0xc9); /* (ext: + its type byte) */
    return 0;
}

int mp_frame_scan(const uint8_t *p, size_t n, struct mp_scan *st) {
    if (!st->pending) st->pending = 1, st->at = 0; /* a fresh scan: one value to walk over */
    while (st->pending) {
        size_t at = st->at, head;
        uint64_t body, items;
        if (at >= n) return 0;
        if (mp_head(p + at, n - at, &head, &body, &items) < 0) return -1;
        if (!head || body > n - at - head) return 0; /* resumes here when more bytes came */
        st->at = at + head + (size_t)body;
        st->pending += items - 1; /* each container adds its items */
    }
    return 1;
}
