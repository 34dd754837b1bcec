/* bench_native.c — the C baselines of scripts/bench.py. Not part of the rxkernel library: this
 * is compiled on demand by scripts/_bench_native.py into a module cached under build/, together
 * with native/client/rxsync.c (for the Mutex pair; the same source and flags the library uses).
 *
 * _bench_native.py feeds the block between the cdef markers to cffi verbatim, so it must stay
 * plain declarations. Conventions as rxnative.h: a value >= 0 on success, -errno on failure.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <sys/un.h>

#include "internal.h" /* send_all: the socket I/O the fault channels use (client/wire.c) */
#include "rxcall.h"
#include "rxvdso_loader.h"
#include "rxmsgpack.h"
#include "rxsync.h"
#include "rxwire.h"

/* cdef-begin */

/* Linux baseline: mmap anonymous RW, write one byte per page, munmap. ns spent touching or
 * -errno. */
int64_t rx_bench_anon_first_touch(uint64_t length);

/* Bare C baseline: iterations round trips of 24-byte request/reply over a socketpair with an
 * echo process (forked; it only echoes and _exits); with_mmap adds one mmap(MAP_FIXED|MAP_POPULATE) of a 4 KiB memfd page per
 * iteration (the cost of applying a fault reply). Total ns or -errno; out_ns (may be NULL) gets
 * each iteration's latency. */
int64_t rx_bench_socket_roundtrip(int iterations, int with_mmap, int64_t *out_ns);

/* The C ceiling for syscalls/s: a forked epoll echo server and `clients` forked C clients, each
 * doing 24-byte round trips over its own Unix socket for duration_ns. out[0] gets the calls of
 * all clients, out[1] the wall ns, out[2] the server's CPU ns (user + system). 0 or -errno. */
int64_t rx_bench_echo_rate(int clients, int64_t duration_ns, int64_t *out);

/* rx with the same C clients: `clients` forked processes, each opening a main channel to the rxd
 * at path (sending hello[0..nhello), attaching the vDSO its reply's fds carry, as the library
 * does: vvar_size bytes of vvar), creating a VMO with
 * create[0..ncreate) (its reply is [id, 0, handle]), then calling rx_vmo_get_size (syscall
 * number get_size) on it in a loop for duration_ns through the library's round trip
 * (client/call.c). out[0] gets the calls of all clients, out[1] the wall ns. 0 or -errno. */
int64_t rx_bench_rx_call_rate(const char *path, const uint8_t *hello, uint64_t nhello, const uint8_t *create,
                              uint64_t ncreate, int get_size, uint64_t vvar_size, int clients, int64_t duration_ns,
                              int64_t *out);

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

static void bench_echo(int fd) {
    uint8_t m[RX_BENCH_MSG];
    while (read_all(fd, m, sizeof m) == 0 && send_all(fd, m, sizeof m) == 0) {}
}

/* The echo server of rx_bench_echo_rate: one epoll loop over every client's socket, as rxd has
 * one event loop; each readable socket gets its bytes back. Until every client hung up. */
static void echo_server(int *fds, int n) {
    int ep = epoll_create1(0), open_ = n;
    for (int i = 0; i < n; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fds[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
    }
    struct epoll_event evs[64];
    uint8_t buf[4096];
    while (open_ > 0) {
        int k = epoll_wait(ep, evs, 64, -1);
        for (int i = 0; i < k; i++) {
            int fd = evs[i].data.fd;
            ssize_t got = read(fd, buf, sizeof buf);
            if (got <= 0) {
                epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                close(fd);
                open_--;
            } else if (send_all(fd, buf, (size_t)got) < 0) {
                open_ = 0;
            }
        }
    }
}

int64_t rx_bench_echo_rate(int clients, int64_t duration_ns, int64_t *out) {
    if (clients <= 0 || clients > 1024) return -EINVAL;
    int (*sv)[2] = calloc((size_t)clients, sizeof *sv), counts[2], go[2];
    pid_t *kids = calloc((size_t)clients, sizeof *kids);
    if (!sv || !kids || pipe(counts) < 0 || pipe(go) < 0) return -ENOMEM;
    int *server_fds = calloc((size_t)clients, sizeof *server_fds);
    for (int i = 0; i < clients; i++) {
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv[i]) < 0) return -errno;
        server_fds[i] = sv[i][1];
    }
    pid_t server = fork();
    if (server == 0) {
        for (int i = 0; i < clients; i++) close(sv[i][0]);
        echo_server(server_fds, clients);
        _exit(0);
    }
    for (int i = 0; i < clients; i++) close(sv[i][1]);
    for (int i = 0; i < clients; i++) {
        kids[i] = fork();
        if (kids[i] == 0) {
            char c;
            if (read(go[0], &c, 1) != 1) _exit(1); /* every client starts together */
            uint8_t m[RX_BENCH_MSG] = {0};
            int64_t calls = 0, end = now_ns() + duration_ns;
            while (now_ns() < end) {
                if (send_all(sv[i][0], m, sizeof m) < 0 || read_all(sv[i][0], m, sizeof m) < 0) break;
                calls++;
            }
            if (write(counts[1], &calls, sizeof calls) != sizeof calls) _exit(1);
            _exit(0);
        }
    }
    for (int i = 0; i < clients; i++) close(sv[i][0]);
    int64_t t0 = now_ns(), total = 0;
    for (int i = 0; i < clients; i++)
        if (write(go[1], "g", 1) != 1) return -EIO;
    for (int i = 0; i < clients; i++) {
        int64_t c;
        if (read_all(counts[0], (uint8_t *)&c, sizeof c) == 0) total += c;
    }
    int64_t wall = now_ns() - t0;
    for (int i = 0; i < clients; i++) waitpid(kids[i], NULL, 0);
    struct rusage ru;
    wait4(server, NULL, 0, &ru);
    out[0] = total;
    out[1] = wall;
    out[2] = ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000 + ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
    close(counts[0]); close(counts[1]); close(go[0]); close(go[1]);
    free(sv); free(kids); free(server_fds);
    return 0;
}

/* One C rx client of rx_bench_rx_call_rate: its calls, or -1. */
static int64_t rx_client_loop(const char *path, const uint8_t *hello, uint64_t nhello, const uint8_t *create,
                              uint64_t ncreate, int get_size, uint64_t vvar_size, int64_t duration_ns) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strncpy(sa.sun_path, path, sizeof sa.sun_path - 1);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) return -1;
    struct rx_call_buf b = {0};
    int64_t v[8], handle;
    uint32_t count;
    size_t used;
    /* The hello's reply is a frame like any reply ([magic, version, status, info]) with the
     * vDSO image and the vvar. */
    if (rx_call_roundtrip(fd, hello, nhello, &b, 1 << 20) < 0 || b.nfds != 2 || rxv_attach(b.fds[0], b.fds[1], vvar_size) < 0)
        return -1;
    if (rx_call_roundtrip(fd, create, ncreate, &b, 1 << 20) < 0 ||
        mp_get_array(b.data, b.frame, v, 8, &count, &used, 1) != 1 || count != 3 || v[1] != 0)
        return -1;
    handle = v[2];
    int64_t calls = 0, id = 1000, end = now_ns() + duration_ns;
    uint8_t req[32];
    while (now_ns() < end) {
        size_t n = mp_put_array(req, 3);
        n += mp_put_int(req + n, id++);
        n += mp_put_int(req + n, get_size);
        n += mp_put_int(req + n, handle);
        if (rx_call_roundtrip(fd, req, n, &b, 1 << 20) < 0 ||
            mp_get_array(b.data, b.frame, v, 8, &count, &used, 1) != 1 || v[1] != 0 || v[2] != 4096)
            return -1;
        calls++;
    }
    rx_call_buf_release(&b);
    close(fd);
    return calls;
}

int64_t rx_bench_rx_call_rate(const char *path, const uint8_t *hello, uint64_t nhello, const uint8_t *create,
                              uint64_t ncreate, int get_size, uint64_t vvar_size, int clients, int64_t duration_ns,
                              int64_t *out) {
    if (clients <= 0 || clients > 1024) return -EINVAL;
    int counts[2], go[2];
    pid_t *kids = calloc((size_t)clients, sizeof *kids);
    if (!kids || pipe(counts) < 0 || pipe(go) < 0) return -ENOMEM;
    for (int i = 0; i < clients; i++) {
        kids[i] = fork();
        if (kids[i] == 0) {
            char c;
            if (read(go[0], &c, 1) != 1) _exit(1); /* every client starts together */
            int64_t calls = rx_client_loop(path, hello, nhello, create, ncreate, get_size, vvar_size, duration_ns);
            if (write(counts[1], &calls, sizeof calls) != sizeof calls) _exit(1);
            _exit(0);
        }
    }
    int64_t t0 = now_ns(), total = 0, failed = 0;
    for (int i = 0; i < clients; i++)
        if (write(go[1], "g", 1) != 1) return -EIO;
    for (int i = 0; i < clients; i++) {
        int64_t c;
        if (read_all(counts[0], (uint8_t *)&c, sizeof c) == 0) {
            if (c < 0) failed++;
            else total += c;
        }
    }
    int64_t wall = now_ns() - t0;
    for (int i = 0; i < clients; i++) waitpid(kids[i], NULL, 0);
    out[0] = total;
    out[1] = wall;
    close(counts[0]); close(counts[1]); close(go[0]); close(go[1]);
    free(kids);
    return failed ? -EPROTO : 0;
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
    pid_t peer = fork();
    if (peer < 0) {
        rc = -errno;
        goto out_fds;
    }
    if (peer == 0) {
        close(sv[0]);
        bench_echo(sv[1]);
        _exit(0);
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
    waitpid(peer, NULL, 0);
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
