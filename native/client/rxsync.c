/* rxsync.c — see rxsync.h. */
#define _GNU_SOURCE
#include "rxsync.h"

#include <sched.h>

#define W(addr) ((uint32_t *)(uintptr_t)(addr))

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    __asm__ __volatile__("" ::: "memory");
#endif
}

uint32_t rx_atomic_load(uint64_t addr) { return __atomic_load_n(W(addr), __ATOMIC_SEQ_CST); }

void rx_atomic_store(uint64_t addr, uint32_t value) { __atomic_store_n(W(addr), value, __ATOMIC_SEQ_CST); }

uint32_t rx_atomic_cas(uint64_t addr, uint32_t expected, uint32_t desired) {
    __atomic_compare_exchange_n(W(addr), &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return expected; /* on failure the builtin stores the observed value here */
}

uint32_t rx_atomic_add(uint64_t addr, uint32_t delta) { return __atomic_fetch_add(W(addr), delta, __ATOMIC_SEQ_CST); }

uint32_t rx_atomic_xchg(uint64_t addr, uint32_t value) { return __atomic_exchange_n(W(addr), value, __ATOMIC_SEQ_CST); }

uint32_t rx_atomic_or(uint64_t addr, uint32_t bits) { return __atomic_fetch_or(W(addr), bits, __ATOMIC_SEQ_CST); }

uint32_t rx_atomic_dec_if_positive(uint64_t addr) {
    uint32_t old = __atomic_load_n(W(addr), __ATOMIC_RELAXED);
    while (old > 0) {
        if (__atomic_compare_exchange_n(W(addr), &old, old - 1, 1, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) return old;
    }
    return 0;
}

uint32_t rx_spin_while_eq(uint64_t addr, uint32_t value, uint32_t spins, uint32_t yields) {
    uint32_t v;
    for (uint32_t i = 0; i < spins; i++) {
        v = __atomic_load_n(W(addr), __ATOMIC_ACQUIRE);
        if (v != value) return v;
        cpu_relax();
    }
    for (uint32_t i = 0; i < yields; i++) {
        v = __atomic_load_n(W(addr), __ATOMIC_ACQUIRE);
        if (v != value) return v;
        sched_yield();
    }
    return __atomic_load_n(W(addr), __ATOMIC_SEQ_CST);
}

/* One attempt: acquire ordering on success (the critical section must not float above it). */
static inline uint32_t try_once(uint32_t *w, uint32_t old, uint32_t pid, uint32_t extra) {
    while ((old & RX_FUTEX_OWNER_MASK) == 0) {
        uint32_t desired = pid | extra | (old & (RX_FUTEX_OWNER_DIED | RX_FUTEX_WAITERS));
        if (__atomic_compare_exchange_n(w, &old, desired, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            return old & ~RX_FUTEX_OWNER_MASK;  /* owner field 0: success */
    }
    return old;
}

uint32_t rx_mutex_trylock(uint64_t addr, uint32_t pid, uint32_t extra) {
    uint32_t *w = W(addr);
    return try_once(w, __atomic_load_n(w, __ATOMIC_RELAXED), pid, extra & (RX_FUTEX_WAITERS | RX_FUTEX_OWNER_DIED));
}

uint32_t rx_mutex_lock_spin(uint64_t addr, uint32_t pid, uint32_t extra, uint32_t spins, uint32_t yields) {
    uint32_t *w = W(addr);
    extra &= RX_FUTEX_WAITERS | RX_FUTEX_OWNER_DIED;
    uint32_t r = try_once(w, __atomic_load_n(w, __ATOMIC_RELAXED), pid, extra);
    for (uint32_t i = 0; i < spins + yields; i++) {
        if ((r & RX_FUTEX_OWNER_MASK) == 0 || (r & RX_FUTEX_WAITERS)) return r;
        if (i < spins) cpu_relax(); else sched_yield();
        r = try_once(w, __atomic_load_n(w, __ATOMIC_RELAXED), pid, extra);
    }
    return r;
}

int rx_mutex_unlock(uint64_t addr, uint32_t pid) {
    uint32_t *w = W(addr);
    uint32_t old = __atomic_load_n(w, __ATOMIC_RELAXED);
    do {
        if ((old & RX_FUTEX_OWNER_MASK) != pid) return -1;
    } while (!__atomic_compare_exchange_n(w, &old, 0, 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED));
    return (old & RX_FUTEX_WAITERS) != 0;
}
