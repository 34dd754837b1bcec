/* rxvdso.h — the rx vDSO's functions, for C programs (README "The vDSO").
 *
 * rxd hands every client two fds when it connects: the vDSO image (a sealed memfd, "rx-vdso") and
 * the vvar page (read-only, "rx-vvar"). A C program maps the vvar PROT_READ, MAP_SHARED, loads the
 * image with dlopen("/proc/self/fd/N", RTLD_NOW | RTLD_LOCAL), resolves these names with dlsym and
 * calls rx_vdso_init(vvar) once; then every call below is a few instructions and no request to
 * rxd. The Python stub library does exactly that (native/client/rxvdso_loader.c).
 *
 * Status codes are rx's (negative, proto/_status.py). Before rx_vdso_init succeeded, the functions
 * return RX_VDSO_ERR_BAD_STATE (-20).
 */
#ifndef RXVDSO_H
#define RXVDSO_H

#include <stdint.h>

#define RX_VDSO_ERR_NOT_SUPPORTED (-2)
#define RX_VDSO_ERR_INVALID_ARGS (-10)
#define RX_VDSO_ERR_BAD_STATE (-20)
#define RX_VDSO_ERR_NOT_FOUND (-25)

#ifdef __cplusplus
extern "C" {
#endif

/* Attach the image to a mapped vvar page. 0, RX_VDSO_ERR_INVALID_ARGS (NULL) or
 * RX_VDSO_ERR_NOT_SUPPORTED (not a vvar of this version). Calling it again switches pages. */
int rx_vdso_init(const void *vvar);

/* rx monotonic time, ns: never goes backwards, within microseconds of the host's
 * CLOCK_MONOTONIC (same epoch). */
int64_t rx_clock_get_monotonic(void);
/* Wall-clock ns since the Unix epoch: monotonic + the offset rx_clock_adjust_realtime sets. */
int64_t rx_clock_get_realtime(void);
/* The raw CPU counter (x86_64 rdtsc, aarch64 cntvct_el0) and its rate. */
uint64_t rx_ticks_get(void);
uint64_t rx_ticks_per_second(void);
/* The calling thread's thread pointer (x86_64: the fs base, glibc's TCB = pthread_self();
 * aarch64: tpidr_el0). */
uint64_t rx_thread_tls_base(void);
/* RX_CPU_* bits (native/vdso/rxvvar.h). */
uint64_t rx_cpu_features(void);
/* The number of the syscall named `name` in rx's table, RX_VDSO_ERR_NOT_FOUND, or
 * RX_VDSO_ERR_INVALID_ARGS for NULL. */
int64_t rx_get_syscall_number(const char *name);
/* rx's page size and rxd's physical memory budget in bytes. */
uint64_t rx_system_get_page_size(void);
uint64_t rx_system_get_physmem(void);
/* The RX_PRESSURE_* level rxd has in force now. */
uint64_t rx_system_get_pressure_level(void);

#ifdef __cplusplus
}
#endif

#endif /* RXVDSO_H */
