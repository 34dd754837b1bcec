/* storetab.c — the store table: which fd a fault reply's store_id means (proto/WIRE.md
 * "Control channel", STORE and FORGET).
 *
 * Owns:
 *   store_tab   fixed entries (id, fd, used, owned, gen); fd is -1 when unused. Written only under
 *               store_mu inside a store_seq write section; read lock-free under the store_seq
 *               seqlock (the fault handler looks fds up under the apply lock, which the control
 *               thread also holds while it replaces or closes one, so a number it looked up
 *               cannot be closed and reused before its mmap). Owned entries' fds came on the
 *               control channel and are closed when they go: by the control thread on FORGET or
 *               replacement (store_drop/store_put hand the old fd back), here when their control
 *               session ends (store_drop_session) and in a fork child.
 *   store_mu, store_seq   see above. Lock order: internal.h.
 */
#define _GNU_SOURCE
#include "rxnative.h"

#include <errno.h>
#include <pthread.h>
#include <unistd.h>

#include "internal.h"

struct rx_store_ent {
    uint64_t id;
    int fd;
    int used;
    int owned; /* the fd came on the control channel: the table closes it when it goes */
    uint32_t gen; /* the control session that sent it (owned entries) */
};

static struct rx_store_ent store_tab[RX_STORE_MAX];
static uint32_t store_seq;
static pthread_mutex_t store_mu = PTHREAD_MUTEX_INITIALIZER;

int store_lookup(uint64_t id) {
    int fd;
    uint32_t s;
    do {
        s = seq_read_begin(&store_seq);
        fd = -1;
        for (int i = 0; i < RX_STORE_MAX; i++) {
            if (LD(&store_tab[i].used) && LD(&store_tab[i].id) == id) {
                fd = LD(&store_tab[i].fd);
                break;
            }
        }
    } while (seq_read_retry(&store_seq, s));
    return fd;
}

/* Put (store_id, fd) in the table, replacing an entry for the same id. *old gets the replaced fd
 * if the table owned it (the caller closes it once no fault handler can be using it), else -1. */
int store_put(uint64_t store_id, int fd, int owned, uint32_t gen, int *old) {
    *old = -1;
    if (fd < 0) return -EBADF;
    pthread_mutex_lock(&store_mu);
    int slot = -1, rc = 0;
    for (int i = 0; i < RX_STORE_MAX; i++) {
        if (store_tab[i].used && store_tab[i].id == store_id) { slot = i; break; }
        if (!store_tab[i].used && slot < 0) slot = i;
    }
    if (slot < 0) {
        rc = -ENOMEM;
    } else {
        if (store_tab[slot].used && store_tab[slot].owned && store_tab[slot].fd != fd) *old = store_tab[slot].fd;
        seq_write_begin(&store_seq);
        ST(&store_tab[slot].id, store_id);
        ST(&store_tab[slot].fd, fd);
        ST(&store_tab[slot].owned, owned);
        store_tab[slot].gen = gen;
        ST(&store_tab[slot].used, 1);
        seq_write_end(&store_seq);
    }
    pthread_mutex_unlock(&store_mu);
    return rc;
}

int store_drop(uint64_t store_id, int *old) {
    *old = -1;
    pthread_mutex_lock(&store_mu);
    int rc = -ENOENT;
    for (int i = 0; i < RX_STORE_MAX; i++) {
        if (store_tab[i].used && store_tab[i].id == store_id) {
            if (store_tab[i].owned) *old = store_tab[i].fd;
            seq_write_begin(&store_seq);
            ST(&store_tab[i].used, 0);
            ST(&store_tab[i].fd, -1);
            seq_write_end(&store_seq);
            rc = 0;
            break;
        }
    }
    pthread_mutex_unlock(&store_mu);
    return rc;
}

int rx_store_register(uint64_t store_id, int fd) {
    int old;
    return store_put(store_id, fd, 0, 0, &old);
}

/* The control session `gen` ended: its stores' fds go with it (store ids mean nothing to the
 * next session, which may talk to another rxd). Caller holds the apply lock. */
void store_drop_session(uint32_t gen) {
    pthread_mutex_lock(&store_mu);
    for (int i = 0; i < RX_STORE_MAX; i++) {
        if (store_tab[i].used && store_tab[i].owned && store_tab[i].gen == gen) {
            int fd = store_tab[i].fd;
            seq_write_begin(&store_seq);
            ST(&store_tab[i].used, 0);
            ST(&store_tab[i].fd, -1);
            seq_write_end(&store_seq);
            close(fd);
        }
    }
    pthread_mutex_unlock(&store_mu);
}

int rx_store_fd(uint64_t store_id) {
    int fd = store_lookup(store_id);
    return fd < 0 ? -ENOENT : fd;
}

int rx_store_unregister(uint64_t store_id) {
    int old;
    return store_drop(store_id, &old);
}

/* A fork child has no stores: the control channel they came on is the parent's. Only this thread
 * exists. */
void storetab_atfork_child(void) {
    pthread_mutex_init(&store_mu, NULL);
    store_seq = 0;
    for (int i = 0; i < RX_STORE_MAX; i++) {
        if (store_tab[i].used && store_tab[i].owned) close(store_tab[i].fd);
        store_tab[i].used = 0;
        store_tab[i].fd = -1;
    }
}

/* Unused entries hold fd -1; static storage starts at 0, which is a valid fd. */
__attribute__((constructor)) static void storetab_init(void) {
    for (int i = 0; i < RX_STORE_MAX; i++) store_tab[i].fd = -1;
}
