/* rxvdso_loader.h — loading the vDSO rxd sends (vdso/rxvdso.h) into this process, and the
 * trampolines Python calls it through.
 *
 * rxv_attach maps the vvar read-only, dlopens the image from its fd, resolves its rx_* names and
 * calls rx_vdso_init. The rxv_* trampolines then cost one indirect call each. Before the first
 * attach, and in a fork child until it attaches again (a fork child is a new rx process), they
 * return RXV_DETACHED, which the Python wrappers take as "connect first".
 *
 * The trampolines are named rxv_* so that no name of this library equals one of the image's.
 */
#ifndef RXVDSO_LOADER_H
#define RXVDSO_LOADER_H

#include <stdint.h>

/* cdef-begin */

#define RXV_DETACHED -9223372036854775807

/* Load the image from image_fd and attach it to the vvar in vvar_fd (vvar_size bytes). Neither fd
 * is closed (the mappings keep what they need). Attaching again (a new connection) re-initialises
 * the image with the new page; the same image (same inode) is not loaded twice, nor the same
 * vvar mapped twice. Nothing earlier is unmapped: another thread may be inside it.
 * 0, a negative rx status from rx_vdso_init, or -errno (-ENOEXEC: dlopen failed, see
 * rxv_last_error). */
int rxv_attach(int image_fd, int vvar_fd, uint64_t vvar_size);

/* dlopen's last complaint, or "". */
const char *rxv_last_error(void);

int64_t rxv_clock_get_monotonic(void);
int64_t rxv_clock_get_realtime(void);
int64_t rxv_ticks_get(void);
int64_t rxv_ticks_per_second(void);
int64_t rxv_thread_tls_base(void);
int64_t rxv_cpu_features(void);
int64_t rxv_get_syscall_number(const char *name);
int64_t rxv_system_get_page_size(void);
int64_t rxv_system_get_physmem(void);
int64_t rxv_system_get_pressure_level(void);

/* Where the attached image and vvar are mapped (0 when detached). */
uint64_t rxv_image_base(void);
uint64_t rxv_vvar_base(void);

/* For tests: read rx_clock_get_monotonic `iterations` times in a tight loop (GIL released) and
 * count the reads that go backwards, jump more than max_step_ns past the previous one, or lie
 * more than max_host_diff_ns outside the CLOCK_MONOTONIC readings taken just before and after
 * (0: no host check). out (may be NULL) gets [bad reads, largest distance from the host bracket,
 * largest step]. The bad count, or RXV_DETACHED. */
int64_t rxv_check_clock(uint64_t iterations, int64_t max_step_ns, int64_t max_host_diff_ns, int64_t *out);

/* cdef-end */

#endif /* RXVDSO_LOADER_H */
