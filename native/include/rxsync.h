/* rxsync.h — atomics on 32-bit words in shared (rx-mapped) memory, for the synchronization
 * objects of rxkernel.client (client/_sync.py) and for C users of the same layouts.
 *
 * Everything here is a few atomic instructions: no Python, no GIL, no request to rxd. Blocking
 * is the caller's business (rx_futex_wait); these functions only try, spin and report.
 *
 * Addresses are plain integers (uint64_t) so Python passes them without building cffi pointers;
 * each must be 4-byte aligned and point into memory the caller may write (an rx mapping: the
 * first touch of a page traps to rxd and the instruction retries, as for any store).
 *
 * Mutex word (the ROBUST futex protocol of rx_futex_wait; the bits are rxwire.h's RX_FUTEX_*):
 *   bits 0..29  RX_FUTEX_OWNER_MASK: owner pid (0 = unlocked)
 *   bit  30     RX_FUTEX_OWNER_DIED: the previous owner died holding it (kept while held)
 *   bit  31     RX_FUTEX_WAITERS: someone may sleep on the word; unlock must wake
 */
#ifndef RXSYNC_H
#define RXSYNC_H

#include <stdint.h>

#include "rxwire.h"

/* cdef-begin */

/* ---- generic atomics (sequentially consistent) ---------------------------------------------- */

uint32_t rx_atomic_load(uint64_t addr);
void rx_atomic_store(uint64_t addr, uint32_t value);
/* Compare-and-swap: the value observed (== expected when the swap happened). */
uint32_t rx_atomic_cas(uint64_t addr, uint32_t expected, uint32_t desired);
/* Fetch-and-add (wrapping; pass 0xffffffff to subtract one): the value before. */
uint32_t rx_atomic_add(uint64_t addr, uint32_t delta);
uint32_t rx_atomic_xchg(uint64_t addr, uint32_t value);
uint32_t rx_atomic_or(uint64_t addr, uint32_t bits);

/* Decrement *addr if it is > 0: the value before (0 means nothing was taken). */
uint32_t rx_atomic_dec_if_positive(uint64_t addr);

/* ---- spinning --------------------------------------------------------------------------------- */

/* Wait, boundedly, for *addr to differ from value: `spins` rounds of a CPU relax hint (x86
 * `pause`, aarch64 `yield`), then up to `yields` sched_yield() calls (lets a preempted owner run
 * on a busy machine). The value last observed (== value when the budget ran out). */
uint32_t rx_spin_while_eq(uint64_t addr, uint32_t value, uint32_t spins, uint32_t yields);

/* ---- mutex fast paths ------------------------------------------------------------------------- */

/* Take the mutex word if its owner field is 0: the new word is
 * pid | extra | (old & (OWNER_DIED | WAITERS)). Returns a word whose owner field is 0 on
 * success — 0, or RX_FUTEX_OWNER_DIED (and/or WAITERS) from the old word, so the caller learns
 * that the previous owner died — or, on failure, the observed word (owner field != 0).
 * pid must be in 1..2^30-1. */
uint32_t rx_mutex_trylock(uint64_t addr, uint32_t pid, uint32_t extra);

/* rx_mutex_trylock, retried while the word is owned for `spins` relax rounds then `yields`
 * sched_yield()s. Same result. Gives up at once when the WAITERS bit is set (others already
 * sleep: queue behind them instead of burning the CPU the owner may need). */
uint32_t rx_mutex_lock_spin(uint64_t addr, uint32_t pid, uint32_t extra, uint32_t spins, uint32_t yields);

/* Release by pid: the word becomes 0 (owner, OWNER_DIED and WAITERS cleared). 1 when WAITERS
 * was set (the caller must rx_futex_wake one waiter), 0 when not, -1 (nothing changed) when the
 * owner field is not pid. A CAS loop, not check-then-exchange: the owner is a process, so two
 * of its threads may release at once, and the loser must not clear the word after the winner's
 * release let another process lock it (WAITERS set in between fails the CAS and is retried). */
int rx_mutex_unlock(uint64_t addr, uint32_t pid);

/* cdef-end */

#endif
