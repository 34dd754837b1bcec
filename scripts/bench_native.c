/* bench_native.c — the C baselines of scripts/bench.py. Not part of the rxkernel library: this
 * is compiled on demand by scripts/_bench_native.py into a module cached under build/, together
 * with native/client/rxsync.c (for the Mutex pair; the same source and flags the library uses).
 *
 * _bench_native.py feeds the block between the cdef markers to cffi verbatim, so it must stay
 * plain declarations. Conventions as rxnative.h: a value >= 0 on success, -errno on failure.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "internal.h" /* send_all: the socket I/O the fault channels use (client/wire.c) */
#include "rxsync.h"
#include "rxwire.h"

/* cdef-begin */

/* Linux baseline: mmap anonymous RW, write one byte per page, munmap. ns spent touching or
 * -errno. */
int64_t rx_bench_anon_first_touch(uint64_t length);

/* Bare C baseline: iterations round trips of 24-byte request/reply over a socketpair with an
 * echo pthread; with_mmap adds one mmap(MAP_FIXED|MAP_POPULATE) of a 4 KiB memfd page per
 * iteration (the cost of applying a fault reply). Total ns or -errno; out_ns (may be NULL) gets
 * each iteration's latency. */
int64_t rx_bench_socket_roundtrip(int iterations, int with_mmap, int64_t *out_ns);

/* A loop of n trylock/unlock pairs (no wake) on the Mutex word at addr (rxsync.h), for the
 * benchmark's C baseline: nanoseconds. */
int64_t rx_mutex_bench_c(uint64_t addr, uint32_t pid, uint64_t n);

/* cdef-end */

/* As in the library (native/client/): the same clock and the same send loop the fault path uses. */
static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t rx_bench_anon_first_touch(uint64_t length) {
    if (!length) return -EINVAL;
    uint8_t *m = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return -errno;
    int64_t t0 = now_ns();
    for (uint64_t off = 0; off < length; off += RX_PAGE_SIZE) ((volatile uint8_t *)m)[off] = 1;
    int64_t dt = now_ns() - t0;
    munmap(m, length);
    return dt;
}

#define RX_BENCH_MSG 24

static int read_all(int fd, uint8_t *p, size_t n) {
    while (n) {
        ssize_t k = read(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static void *bench_echo(void *arg) {
    int fd = *(int *)arg;
    uint8_t m[RX_BENCH_MSG];
    while (read_all(fd, m, sizeof m) == 0 && send_all(fd, m, sizeof m) == 0) {}
    return NULL;
}

int64_t rx_bench_socket_roundtrip(int iterations, int with_mmap, int64_t *out_ns) {
    if (iterations <= 0) return -EINVAL;
    int sv[2], memfd = -1, rc = 0;
    int64_t total = 0;
    void *scratch = MAP_FAILED;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return -errno;
    if (with_mmap) {
        memfd = memfd_create("rx-bench", MFD_CLOEXEC);
        scratch = mmap(NULL, RX_PAGE_SIZE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (memfd < 0 || ftruncate(memfd, RX_PAGE_SIZE) < 0 || scratch == MAP_FAILED) {
            rc = -errno;
            goto out_fds;
        }
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t peer;
    int e = pthread_create(&peer, NULL, bench_echo, &sv[1]);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e) {
        rc = -e;
        goto out_fds;
    }
    uint8_t m[RX_BENCH_MSG] = {0};
    int64_t total0 = now_ns();
    for (int i = 0; i < iterations && !rc; i++) {
        int64_t t0 = now_ns();
        memcpy(m, &i, sizeof i);
        if (send_all(sv[0], m, sizeof m) < 0 || read_all(sv[0], m, sizeof m) < 0) rc = -EIO;
        if (with_mmap && !rc &&
            mmap(scratch, RX_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED | MAP_POPULATE,
                 memfd, 0) == MAP_FAILED)
            rc = -errno;
        if (out_ns) out_ns[i] = now_ns() - t0;
    }
    total = now_ns() - total0;
    shutdown(sv[0], SHUT_RDWR); /* the echo peer sees EOF */
    pthread_join(peer, NULL);
out_fds:
    if (scratch != MAP_FAILED) munmap(scratch, RX_PAGE_SIZE);
    if (memfd >= 0) close(memfd);
    close(sv[0]);
    close(sv[1]);
    return rc ? rc : total;
}

int64_t rx_mutex_bench_c(uint64_t addr, uint32_t pid, uint64_t n) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (uint64_t i = 0; i < n; i++) {
        rx_mutex_trylock(addr, pid, 0);
        rx_mutex_unlock(addr, pid);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    return (int64_t)(b.tv_sec - a.tv_sec) * 1000000000 + (b.tv_nsec - a.tv_nsec);
}
