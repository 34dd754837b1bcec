/* fault_floor.c — what the two fault transports cost with no decision in them (measure
 * before choosing). Not part of rxkernel. Build and run:
 *     gcc -O2 -o /tmp/fault_floor scripts/fault_floor.c && /tmp/fault_floor 5000
 * (userfaultfd needs root here, or vm.unprivileged_userfaultfd=1.)
 *
 * Floors of the two fault transports, process pairs, one page per fault, random pages:
 *  sigsegv: PROT_NONE reservation; the handler sends [seq,addr,write] to a server process,
 *           which answers with an op; the handler mmaps MAP_FIXED|MAP_POPULATE the memfd page.
 *  uffd:    memfd mapped MAP_SHARED, registered MISSING|MINOR with userfaultfd; the uffd goes to a
 *           server process (SCM_RIGHTS) which fallocates the page in the memfd and UFFDIO_CONTINUEs
 *           (the faulting thread sleeps in the kernel). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PG 4096UL
#define SIZE (1UL << 30)
static int64_t now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000000000LL + t.tv_nsec; }
static int sock, memfd;
static uint8_t *base;

static void on_segv(int sig, siginfo_t *si, void *ctx) {
    (void)sig; (void)ctx;
    uint64_t req[3] = {1, (uint64_t)si->si_addr & ~(PG - 1), 1}, rep[3];
    if (write(sock, req, sizeof req) != sizeof req || read(sock, rep, sizeof rep) != sizeof rep) _exit(3);
    if (mmap((void *)rep[0], PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED | MAP_POPULATE, memfd, (off_t)(rep[0] - (uint64_t)base)) == MAP_FAILED) _exit(4);
}

static void send_fd(int s, int fd) {
    char c = 0; struct iovec io = {&c, 1}; char buf[CMSG_SPACE(sizeof(int))];
    struct msghdr m = {0}; m.msg_iov = &io; m.msg_iovlen = 1; m.msg_control = buf; m.msg_controllen = sizeof buf;
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m); cm->cmsg_level = SOL_SOCKET; cm->cmsg_type = SCM_RIGHTS; cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof fd); sendmsg(s, &m, 0);
}
static int recv_fd(int s) {
    char c; struct iovec io = {&c, 1}; char buf[CMSG_SPACE(sizeof(int))];
    struct msghdr m = {0}; m.msg_iov = &io; m.msg_iovlen = 1; m.msg_control = buf; m.msg_controllen = sizeof buf;
    if (recvmsg(s, &m, 0) <= 0) return -1;
    int fd; memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof fd); return fd;
}
static int cmp(const void *a, const void *b) { int64_t x = *(int64_t *)a, y = *(int64_t *)b; return x < y ? -1 : x > y; }

static void report(const char *name, int64_t *lat, int n) {
    qsort(lat, n, sizeof *lat, cmp);
    printf("%-8s p50 %6.1f  p99 %6.1f  p99.9 %6.1f us\n", name, lat[n / 2] / 1e3, lat[n * 99 / 100] / 1e3, lat[n * 999 / 1000] / 1e3);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    int n = argc > 1 ? atoi(argv[1]) : 5000;
    int64_t *lat = calloc(n, sizeof *lat);
    uint64_t *pages = calloc(n, sizeof *pages);
    srand(1);
    for (int i = 0; i < n; i++) pages[i] = ((uint64_t)rand() * 7919) % (SIZE / PG);
    /* --- sigsegv --- */
    int sv[2]; socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    memfd = memfd_create("floor", 0); ftruncate(memfd, SIZE);
    if (fork() == 0) {
        uint64_t req[3];
        close(sv[0]);
        while (read(sv[1], req, sizeof req) == sizeof req) {
            uint64_t rep[3] = {req[1], 0, 0}; /* map the page at the faulting address */
            write(sv[1], rep, sizeof rep);
        }
        _exit(0);
    }
    sock = sv[0];
    base = mmap(NULL, SIZE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    struct sigaction sa = {0}; sa.sa_sigaction = on_segv; sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, NULL);
    for (int i = 0; i < n; i++) {
        volatile uint8_t *p = base + pages[i] * PG;
        int64_t t0 = now(); *p = 1; lat[i] = now() - t0;
    }
    report("sigsegv", lat, n);
    close(sv[0]); wait(NULL);
    /* --- uffd --- */
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    int mfd = memfd_create("floor2", 0); ftruncate(mfd, SIZE);
    uint8_t *m = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    int uffd = syscall(SYS_userfaultfd, O_CLOEXEC);
    if (uffd < 0) { perror("userfaultfd"); return 1; }
    struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_MINOR_SHMEM};
    if (ioctl(uffd, UFFDIO_API, &api)) { perror("UFFDIO_API"); return 1; }
    struct uffdio_register reg = {.range = {(uint64_t)m, SIZE}, .mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR};
    if (ioctl(uffd, UFFDIO_REGISTER, &reg)) { perror("UFFDIO_REGISTER"); return 1; }
    if (fork() == 0) {
        int u = recv_fd(sv[1]), f = recv_fd(sv[1]);
        uint64_t mb; read(sv[1], &mb, sizeof mb);
        for (;;) {
            struct pollfd pf = {u, POLLIN, 0};
            if (poll(&pf, 1, 2000) <= 0) _exit(0); /* the client is done */
            struct uffd_msg msg;
            if (read(u, &msg, sizeof msg) != sizeof msg) continue;
            if (msg.event != UFFD_EVENT_PAGEFAULT) continue;
            uint64_t a = msg.arg.pagefault.address & ~(PG - 1);
            if (msg.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_MINOR) {
                struct uffdio_continue c = {.range = {a, PG}};
                if (ioctl(u, UFFDIO_CONTINUE, &c)) fprintf(stderr, "continue: %s\n", strerror(errno));
            } else { /* missing: the page joins the memfd (a commit), then it is a minor fault */
                fallocate(f, 0, (off_t)(a - mb), PG);
                struct uffdio_continue c = {.range = {a, PG}};
                if (ioctl(u, UFFDIO_CONTINUE, &c)) {
                    static int told;
                    if (!told++) fprintf(stderr, "continue on missing: %s\n", strerror(errno));
                    struct uffdio_range r = {a, PG};
                    ioctl(u, UFFDIO_WAKE, &r);
                }
            }
        }
    }
    send_fd(sv[0], uffd); send_fd(sv[0], mfd); uint64_t mb = (uint64_t)m; write(sv[0], &mb, sizeof mb);
    usleep(100000);
    for (int i = 0; i < n; i++) {
        volatile uint8_t *p = m + pages[i] * PG;
        int64_t t0 = now(); *p = 1; lat[i] = now() - t0;
    }
    report("uffd", lat, n);
    /* a first touch of Linux anonymous memory, random pages, for scale */
    uint8_t *an = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    for (int i = 0; i < n; i++) { volatile uint8_t *p = an + pages[i] * PG; int64_t t0 = now(); *p = 1; lat[i] = now() - t0; }
    report("anon", lat, n);
    return 0;
}
