/* rxvvar_writer.h — rxd's side of the vvar page (vdso/rxvvar.h): set it up, calibrate and
 * discipline the clock, set the realtime offset. rxd is the only writer of a page, and calls
 * these from its one trio thread; the calibration state is per process (one rxd, one page).
 *
 * Conventions as rxnative.h: 0 (or a value >= 0) on success, -errno on failure.
 */
#ifndef RXVVAR_WRITER_H
#define RXVVAR_WRITER_H

#include <stdint.h>

/* cdef-begin */

/* Clock modes for rx_vvar_setup. AUTO picks TICKS when the counter is invariant (x86_64: CPUID
 * 80000007H EDX bit 8; aarch64: always), else SYSCALL (the vDSO asks the host kernel). */
#define RX_VVAR_MODE_AUTO 0
#define RX_VVAR_MODE_TICKS 1
#define RX_VVAR_MODE_SYSCALL 2

/* Bytes the page needs (RX_VVAR_SIZE, a multiple of 4 KiB). */
uint64_t rx_vvar_size(void);

/* Fill a zeroed, writable, RX_VVAR_SIZE-byte page: magic/version, CPU features, page size,
 * physmem, and the clock: ticks per second calibrated against CLOCK_MONOTONIC for ~50 ms (the
 * call sleeps that long), anchored so that rx monotonic = CLOCK_MONOTONIC now, realtime offset =
 * CLOCK_REALTIME - CLOCK_MONOTONIC. 0 or -EINVAL. */
int rx_vvar_setup(void *vvar, uint64_t page_size, uint64_t physmem_bytes, int mode);

/* Append one entry to the syscall-number table (before clients attach). 0, -ENAMETOOLONG,
 * -ENOSPC or -EINVAL. */
int rx_vvar_add_syscall(void *vvar, const char *name, int64_t number);

/* Re-anchor the clock now and slew its rate toward CLOCK_MONOTONIC so that the error is gone by
 * period_ns from now (bounded to 500 ppm; see rxvvar_writer.c). Returns the error it found
 * (rx monotonic - CLOCK_MONOTONIC, ns) before correcting; out (may be NULL) gets
 * [error_ns, rate correction in parts per billion, 1 if it stepped forward else 0]. */
int64_t rx_vvar_discipline(void *vvar, int64_t period_ns, int64_t *out);

/* Set realtime = monotonic + offset_ns (seqlock write). */
void rx_vvar_set_realtime_offset(void *vvar, int64_t offset_ns);
int64_t rx_vvar_realtime_offset(const void *vvar);

/* Set the physical memory budget the vDSO reports. */
void rx_vvar_set_physmem(void *vvar, uint64_t physmem_bytes);
/* The memory pressure level every client reads with rx_system_get_pressure_level(). */
void rx_vvar_set_pressure(void *vvar, uint32_t level);
/* How many requests the call front end's last batch held (rxcallfront.h writes it). */
void rx_vvar_set_call_load(void *vvar, uint32_t requests);

/* RX_CPU_* bits of this machine (what rx_vvar_setup publishes). */
uint64_t rx_vvar_detect_cpu_features(void);

/* For the torn-read test: rewrite the clock parameters under the seqlock, alternating between
 * the current set and an equivalent one (anchored 2^shift * k ticks earlier, mult doubled, shift
 * + 1: the same clock to the nanosecond, but any mix of the two sets is off by seconds), until
 * *stop is nonzero or max_updates writes are done; spin `pause` relax-loops between writes.
 * Leaves the original set in place. Returns the number of writes, or -EINVAL. */
int64_t rx_vvar_hammer(void *vvar, const volatile int *stop, uint64_t max_updates, uint32_t pause);

/* cdef-end */

#endif /* RXVVAR_WRITER_H */
