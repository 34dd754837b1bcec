/* apply.c — the apply lock: the one lock under which the client changes what is mapped at rx
 * addresses (proto/WIRE.md "Ordering between faults and invalidations").
 *
 * Owns:
 *   apply_lock   a spinlock (the fault handler takes it: no pthread lock there). Held while a
 *                fault reply is checked and mapped, a control request applied, the mapping table
 *                changed, a store fd replaced or closed, or memory taken back; never across
 *                socket I/O. Lock order: internal.h.
 *   applied_seq  the highest inval_seq of a control request applied. Guarded by apply_lock.
 *   local_epoch  bumped when the client itself takes memory back (rx_reserve_at, rx_unreserve):
 *                a fault reply requested before then is stale, like one overtaken by an rxd
 *                invalidation. Written under apply_lock; read lock-free when a fault is sent,
 *                compared under the lock when its reply is applied.
 * A fault reply that either moved past is not applied (trap.c).
 */
#define _GNU_SOURCE
#include <sched.h>
#include <sys/mman.h>

#include "internal.h"

static int apply_lock;
static uint64_t applied_seq;
static uint64_t local_epoch;

void apply_acquire(void) {
    while (__atomic_exchange_n(&apply_lock, 1, __ATOMIC_ACQUIRE)) {
        while (LD(&apply_lock)) sched_yield();
    }
}

void apply_release(void) { __atomic_store_n(&apply_lock, 0, __ATOMIC_RELEASE); }

uint64_t apply_epoch(void) { return __atomic_load_n(&local_epoch, __ATOMIC_ACQUIRE); }

int apply_stale_locked(uint64_t inval_seq, uint64_t epoch) {
    return applied_seq > inval_seq || local_epoch != epoch;
}

void apply_done_locked(uint64_t inval_seq) {
    if (inval_seq > applied_seq) applied_seq = inval_seq;
}

void apply_bump_epoch_locked(void) { local_epoch++; }

int map_none(uint64_t addr, uint64_t len) {
    void *p = mmap((void *)(uintptr_t)addr, len, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return -1;
    madvise(p, len, MADV_DONTFORK);
    return 0;
}

/* Only this thread exists in a fork child: nobody holds the lock. local_epoch stays as it is. */
void apply_atfork_child(void) {
    apply_lock = 0;
    applied_seq = 0;
}
