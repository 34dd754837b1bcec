/* rxnative.h — the client side of rxkernel's C core (ARCHITECTURE.md, proto/WIRE.md), as every
 * rx process uses it: the SIGSEGV trap that pages rx mappings in on demand, the mapping and store
 * tables it consults, address reservations, the control thread that applies rxd's requests, and
 * the at-fork reset (implemented in native/client/; internal.h there says which file does what).
 * The wire constants are in rxwire.h; rxd's own helpers in rxstoreio.h, rxcache.h and
 * rxvvar_writer.h.
 *
 * Conventions (for every header here): functions return 0 (or a value >= 0) on success and
 * -errno on failure. Addresses and lengths are uint64_t; mapping ranges must be page aligned
 * (RX_PAGE_SIZE, 4 KiB).
 *
 * _build.py feeds the block between the cdef markers to cffi verbatim, so it must stay plain
 * declarations (no preprocessor lines, no inline bodies).
 */
#ifndef RXNATIVE_H
#define RXNATIVE_H

#include <stdint.h>

/* cdef-begin */

/* ---- trap (client) ---------------------------------------------------------------------- */

/* Remember rxd's socket path and the 16-byte session token (copied into static storage; the
 * fault handler opens fault channels lazily with them), forget fault channels of an earlier
 * connection, register the at-fork child reset once, then rx_trap_install().
 * 0, -EINVAL (NULL argument), -ENAMETOOLONG (path does not fit sun_path) or -errno. */
int rx_trap_setup(const char *socket_path, const uint8_t *session_token);

/* Make our SIGSEGV handler the active one. If another handler is active (e.g. Python's
 * faulthandler replaced ours), it becomes the one we chain to for addresses we do not own.
 * Idempotent; call it on every connect and map. 0 or -errno. */
int rx_trap_install(void);

/* Counters (relaxed snapshots): [0] faults resolved by rxd (applied or discarded as stale),
 * [1] pages mapped by fault replies, [2] stale replies discarded, [3] control requests applied,
 * [4] fault channels opened, [5..7] reserved (0). */
void rx_trap_counters(uint64_t out[8]);

/* ---- mapping table ------------------------------------------------------------------------ */

/* Record [base, base+length) as an rx mapping the trap resolves. Any overlapping entries
 * (typically stale ones inherited over fork) are trimmed away first, like MAP_FIXED.
 * 0, -EINVAL (unaligned, empty or wrapping range) or -ENOMEM (table full: 8192 entries). */
int rx_map_register(uint64_t base, uint64_t length);

/* Forget [base, base+length); entries that overlap it partially are trimmed or split.
 * 0, -EINVAL or -ENOMEM (a split needs a free entry and there is none; nothing changed). */
int rx_map_unregister(uint64_t base, uint64_t length);

/* What the trap would think of addr: 0 unknown, 1 a live rx mapping, 2 an rx mapping
 * inherited over fork (stale), 3 an rx mapping lost when its connection to rxd went away, 4 no
 * rx mapping now but one of the last 64 ranges unmapped (a touch there gets a diagnostic).
 * For tests and diagnostics. */
int rx_map_lookup(uint64_t addr);

/* The connection that owned every live mapping is gone: mark them lost and make them PROT_NONE,
 * keeping their addresses reserved until rx_map_unregister + rx_unreserve (a touch dies with
 * "rx: access at 0x… to an rx mapping lost when rxd went away"). Returns how many. */
int rx_map_lose_all(void);

/* ---- store fds ------------------------------------------------------------------------------ */

/* Let fault replies name store_id: STORE ops map fd. Re-registering an id replaces its fd.
 * The caller keeps owning fd (it is never closed here). 0, -EBADF or -ENOMEM (1024 stores).
 * In normal use rxd sends store fds on the control channel (CONTROL_STORE) and the control
 * thread registers them itself, owning them: it closes them on CONTROL_FORGET, on replacement,
 * and when its channel ends. This call is for tests that play rxd. */
int rx_store_register(uint64_t store_id, int fd);

/* Forget store_id (does not close its fd). 0 or -ENOENT. */
int rx_store_unregister(uint64_t store_id);

/* The fd registered for store_id (still owned by the table), or -ENOENT. For tests and
 * diagnostics: the fd may be closed by the control thread at any moment after. */
int rx_store_fd(uint64_t store_id);

/* ---- address reservations ------------------------------------------------------------------- */

/* Reserve length bytes of address space: PROT_NONE, MAP_NORESERVE, MADV_DONTFORK.
 * The address, or -EINVAL (length 0 or not page aligned) / -errno. */
int64_t rx_reserve(uint64_t length);

/* Reserve exactly [addr, addr+length), replacing whatever is mapped there (MAP_FIXED): for
 * RX_VM_SPECIFIC maps over rx memory or over the placeholders a fork child keeps. 0 or -errno. */
int rx_reserve_at(uint64_t addr, uint64_t length);

/* munmap a reservation (or part of one). 0 or -errno. */
int rx_unreserve(uint64_t addr, uint64_t length);

/* ---- control thread ------------------------------------------------------------------------- */

/* Start the control thread on fd, a control channel on which the hello is already done. On
 * success the thread owns fd and closes it when the channel ends. Calling it again with the
 * running fd is a no-op; with another fd it stops the old thread first (reconnect).
 * 0 or -errno (then the caller still owns fd). */
int rx_control_start(int fd);

/* Make the control thread exit (shutdown(SHUT_RDWR) on its fd; the thread closes it).
 * Idempotent; rx_control_start may be called again afterwards. */
void rx_control_stop(void);

/* ---- touch helper ---------------------------------------------------------------------------- */

/* Touch one byte in each 4 KiB page of [addr, addr+length): a volatile load, or with write an
 * atomic add of 0 (faults as a write, keeps the data). Faults go through the trap. Returns the
 * elapsed CLOCK_MONOTONIC nanoseconds. Releases the GIL (cffi), so threads can fault at once. */
int64_t rx_touch(uint64_t addr, uint64_t length, int write);

/* cdef-end */

#endif /* RXNATIVE_H */
