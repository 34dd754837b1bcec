/* faultchan.c — fault channels: the fault handler's connections to rxd (proto/WIRE.md "Fault
 * channel"), one round trip per fault.
 *
 * Owns:
 *   slots[]      a pool of RX_FAULT_SLOTS channels; a slot (its fd and read buffer) belongs to the
 *                thread that CASed its busy flag 0 -> 1, for one round trip, so as many threads
 *                fault at once as there are slots (more wait for one). A slot connects lazily.
 *   chan_gen     bumped by faultchan_setup: a slot opened in an earlier session is reopened.
 *   fault_seq    the request numbers (atomic).
 *   sock_path, token, trap_ready   where to connect and the session token; written by
 *                faultchan_setup (trap_ready 0 while it does, release-published as 1 after), read
 *                by the handler once trap_ready is 1.
 * Lock order: internal.h. Everything a handler calls here is async-signal-safe.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"

#define RX_FAULT_SLOTS 16
#define RX_FAULT_BUF 16384

struct rx_slot {
    int busy;
    int fd;
    uint32_t gen; /* chan_gen at connect: a channel of an earlier session is reopened */
    size_t len;
    uint8_t buf[RX_FAULT_BUF];
};

static struct rx_slot slots[RX_FAULT_SLOTS];
static uint32_t chan_gen;
static uint64_t fault_seq;
static int trap_ready; /* path and token are set */
static char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static uint8_t token[RX_SESSION_TOKEN_BYTES];

static struct rx_slot *slot_claim(void) {
    for (;;) {
        for (int i = 0; i < RX_FAULT_SLOTS; i++) {
            int zero = 0;
            if (__atomic_compare_exchange_n(&slots[i].busy, &zero, 1, 0, __ATOMIC_ACQUIRE,
                                            __ATOMIC_RELAXED))
                return &slots[i];
        }
        sched_yield(); /* more than 16 threads faulting at once: wait for a slot */
    }
}

static void slot_release(struct rx_slot *s) { __atomic_store_n(&s->busy, 0, __ATOMIC_RELEASE); }

static void slot_close(struct rx_slot *s) {
    if (s->fd >= 0) close(s->fd);
    s->fd = -1;
    s->len = 0;
}

/* Connect and do the fault-channel hello. 0 or -1. */
static int slot_open(struct rx_slot *s) {
    if (!LD(&trap_ready)) return -1;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, sock_path, sizeof sa.sun_path);
    int fd = -1;
    for (int attempt = 0; attempt < 3 && fd < 0; attempt++) {
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) return -1;
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
            int e = errno;
            close(fd);
            fd = -1;
            if (e != EINTR) return -1;
        }
    }
    if (fd < 0) return -1;
    s->fd = fd;
    s->len = 0;
    s->gen = LD(&chan_gen);
    uint8_t msg[32];
    size_t n = mp_put_array(msg, RX_HELLO_WORDS);
    n += mp_put_int(msg + n, RX_PROTOCOL_MAGIC);
    n += mp_put_int(msg + n, RX_PROTOCOL_VERSION);
    n += mp_put_int(msg + n, RX_CHANNEL_FAULT);
    n += mp_put_bin(msg + n, token, RX_SESSION_TOKEN_BYTES);
    int64_t v[8]; /* [magic, version, status] */
    uint32_t count = 0;
    if (send_all(fd, msg, n) < 0 || read_frame(fd, s->buf, sizeof s->buf, &s->len, v, 8, &count) < 0 ||
        count < RX_HELLO_REPLY_HEAD || v[0] != RX_PROTOCOL_MAGIC || v[1] != RX_PROTOCOL_VERSION || v[2] != RX_OK) {
        slot_close(s);
        return -1;
    }
    cnt_add(CNT_CHANNELS, 1);
    return 0;
}

int fault_roundtrip(uint64_t addr, int write, int64_t *v, uint32_t *count) {
    struct rx_slot *s = slot_claim();
    if (s->fd >= 0 && s->gen != LD(&chan_gen)) slot_close(s);
    if (s->fd < 0 && slot_open(s) < 0) {
        slot_release(s);
        return -1;
    }
    uint64_t seq = __atomic_add_fetch(&fault_seq, 1, __ATOMIC_RELAXED);
    uint8_t msg[32];
    size_t n = mp_put_array(msg, RX_FAULT_REQUEST_WORDS);
    n += mp_put_uint(msg + n, seq);
    n += mp_put_uint(msg + n, addr);
    n += mp_put_int(msg + n, write ? RX_FAULT_FLAG_WRITE : 0);
    int rc = 0;
    if (send_all(s->fd, msg, n) < 0 ||
        read_frame(s->fd, s->buf, sizeof s->buf, &s->len, v, RX_FAULT_MAX_VALUES, count) < 0 ||
        *count <= RX_FAULT_REPLY_FIELD_STATUS || (uint64_t)v[RX_FAULT_REPLY_FIELD_SEQ] != seq) {
        slot_close(s); /* a broken channel is never reused */
        rc = -1;
    }
    slot_release(s);
    return rc;
}

int faultchan_setup(const char *socket_path, const uint8_t *session_token) {
    size_t n = strlen(socket_path);
    if (n >= sizeof sock_path) return -ENAMETOOLONG;
    ST(&trap_ready, 0);
    memset(sock_path, 0, sizeof sock_path);
    memcpy(sock_path, socket_path, n);
    memcpy(token, session_token, RX_SESSION_TOKEN_BYTES);
    /* Channels of an earlier session are closed by whoever next claims their slot. */
    __atomic_add_fetch(&chan_gen, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < RX_FAULT_SLOTS; i++) {
        int zero = 0;
        if (__atomic_compare_exchange_n(&slots[i].busy, &zero, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
            slot_close(&slots[i]);
            slot_release(&slots[i]);
        }
    }
    __atomic_store_n(&trap_ready, 1, __ATOMIC_RELEASE);
    return 0;
}

/* A fork child has no channels (the parent's are the parent's) and must be set up again. Only
 * this thread exists, so plain resets. */
void faultchan_atfork_child(void) {
    for (int i = 0; i < RX_FAULT_SLOTS; i++) {
        if (slots[i].fd >= 0) close(slots[i].fd);
        slots[i].fd = -1;
        slots[i].len = 0;
        slots[i].busy = 0;
    }
    trap_ready = 0;
}

/* Fault-channel fds start closed; static storage starts at 0, which is a valid fd. */
__attribute__((constructor)) static void faultchan_init(void) {
    for (int i = 0; i < RX_FAULT_SLOTS; i++) slots[i].fd = -1;
}
