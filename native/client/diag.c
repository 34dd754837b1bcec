/* diag.c — what a fault that ends the process prints (proto/WIRE.md "Refused faults"): one line
 * on stderr, then the default action of the signal, as a kernel would.
 *
 * Owns no state. Runs in the SIGSEGV handler, so no printf, no malloc, no locks: lines are built
 * in a buffer on the stack and written with write(2).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

struct rx_line {
    char b[192];
    size_t n;
};

static void line_str(struct rx_line *l, const char *s) {
    while (*s && l->n < sizeof l->b) l->b[l->n++] = *s++;
}

static void line_hex(struct rx_line *l, uint64_t v) {
    char tmp[16];
    int k = 0;
    do { tmp[k++] = "0123456789abcdef"[v & 15]; v >>= 4; } while (v);
    line_str(l, "0x");
    while (k && l->n < sizeof l->b) l->b[l->n++] = tmp[--k];
}

static void line_dec(struct rx_line *l, int64_t v) {
    char tmp[24];
    int k = 0;
    uint64_t u = v < 0 ? -(uint64_t)v : (uint64_t)v;
    do { tmp[k++] = (char)('0' + u % 10); u /= 10; } while (u);
    if (v < 0) line_str(l, "-");
    while (k && l->n < sizeof l->b) l->b[l->n++] = tmp[--k];
}

static void line_emit(struct rx_line *l) {
    line_str(l, "\n");
    size_t off = 0;
    while (off < l->n) {
        ssize_t k = write(2, l->b + off, l->n - off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        off += (size_t)k;
    }
}

/* Every status of rxwire.h, by name (tests/test_wire.py checks this table against proto/). */
#define RX_STATUS_ENTRY(name) {name, #name},
static const struct { int status; const char *name; } status_names[] = {RX_STATUS_LIST(RX_STATUS_ENTRY)};
#undef RX_STATUS_ENTRY

const char *rx_status_name(int64_t status) {
    for (size_t i = 0; i < sizeof status_names / sizeof status_names[0]; i++) {
        if (status_names[i].status == status) return status_names[i].name;
    }
    return NULL;
}

/* Same spelling as proto's status_name() for codes we do not know. */
static void line_status(struct rx_line *l, int64_t status) {
    const char *name = rx_status_name(status);
    if (name) {
        line_str(l, name);
        return;
    }
    line_str(l, "RX_ERR_UNKNOWN(");
    line_dec(l, status);
    line_str(l, ")");
}

/* The default action of sig, now. If we somehow survive raise(), returning from the handler
 * re-executes the instruction, which faults again under SIG_DFL. */
void rx_die(int sig) {
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
    if (sig != SIGSEGV) sigaction(SIGSEGV, &dfl, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    raise(sig);
}

/* WIRE.md "Refused faults". */
void rx_refuse(uint64_t addr, int write, int64_t status) {
    struct rx_line l = {.n = 0};
    int sig = SIGSEGV;
    switch (status) {
    case RX_ERR_ACCESS_DENIED: /* rxd refuses what the mapping's permissions do not allow */
        if (write) {
            line_str(&l, "rx: write fault at "); line_hex(&l, addr); line_str(&l, " in read-only mapping");
        } else {
            line_str(&l, "rx: read fault at "); line_hex(&l, addr);
            line_str(&l, " in a mapping without read permission");
        }
        break;
    case RX_ERR_OUT_OF_RANGE:
        line_str(&l, "rx: fault at "); line_hex(&l, addr); line_str(&l, " beyond the end of the VMO");
        sig = SIGBUS;
        break;
    case RX_ERR_NO_MEMORY:
        line_str(&l, "rx: out of memory at "); line_hex(&l, addr);
        line_str(&l, " (rxd's memory budget, or the commit limit of this process's job, is reached)");
        sig = SIGBUS;
        break;
    case RX_ERR_NOT_FOUND:
        line_str(&l, "rx: fault at "); line_hex(&l, addr); line_str(&l, " in no rx mapping");
        break;
    case RX_ERR_BAD_STATE: /* rxd refuses to commit on a fault in an RX_VMO_COMMIT_EXPLICIT VMO */
        line_str(&l, "rx: write fault at "); line_hex(&l, addr);
        line_str(&l, " in an uncommitted page of an RX_VMO_COMMIT_EXPLICIT VMO (commit it first)");
        sig = SIGBUS;
        break;
    default:
        line_str(&l, "rx: fault at "); line_hex(&l, addr); line_str(&l, " refused by rxd (");
        line_status(&l, status); line_str(&l, ")");
        break;
    }
    line_emit(&l);
    rx_die(sig);
}

void rx_unreachable(uint64_t addr) {
    struct rx_line l = {.n = 0};
    line_str(&l, "rx: fault at "); line_hex(&l, addr); line_str(&l, ": cannot reach rxd");
    line_emit(&l);
    rx_die(SIGSEGV);
}

/* A touch of an address that was, but is no longer, a live rx mapping (rx_map_lookup's 2, 3
 * and 4): "rx: access at 0x… to an rx mapping <why>", then SIGSEGV. */
void rx_no_longer_mapped(uint64_t addr, int why) {
    static const char *const whys[] = {
        [2] = " to an rx mapping not inherited across fork()",
        [3] = " to an rx mapping lost when rxd went away",
        [4] = " to an rx mapping that was unmapped (rx_vmar_unmap)",
    };
    struct rx_line l = {.n = 0};
    line_str(&l, "rx: access at "); line_hex(&l, addr);
    line_str(&l, why >= 2 && why <= 4 ? whys[why] : " to an rx mapping no longer mapped");
    line_emit(&l);
    rx_die(SIGSEGV);
}
