/* rxvdso_loader.c — see rxvdso_loader.h.
 *
 * Who guards what: attach_mu serialises rxv_attach (Python may call it from any thread). The
 * function pointers are published with release stores after rx_vdso_init ran, and read with
 * acquire loads by the trampolines, lock-free; the at-fork child handler clears them.
 *
 * glibc's dlopen finds an already loaded object by NAME before it looks at the inode, so
 * "/proc/self/fd/7" after a new rxd (a different image behind fd 7) would silently return the old
 * image. We therefore remember the inode of every image loaded and, when dlopen hands back one
 * of those for a different inode, load again through a dup of the fd at another number.
 */
#define _GNU_SOURCE
#include "rxvdso_loader.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef int (*init_fn)(const void *);
typedef int64_t (*i64_fn)(void);
typedef uint64_t (*u64_fn)(void);
typedef int64_t (*name_fn)(const char *);

enum { F_MONO, F_REAL, F_TICKS, F_TPS, F_TLS, F_CPU, F_PAGE, F_PHYS, F_PRES, F_N };
static const char *const fn_names[F_N] = {
    "rx_clock_get_monotonic", "rx_clock_get_realtime", "rx_ticks_get", "rx_ticks_per_second",
    "rx_thread_tls_base", "rx_cpu_features", "rx_system_get_page_size", "rx_system_get_physmem",
    "rx_system_get_pressure_level",
};
static void *fns[F_N];
static name_fn syscall_number_fn;

#define MAX_IMAGES 16
static struct { void *handle; dev_t dev; ino_t ino; } images[MAX_IMAGES];
static int n_images;
static struct { void *addr; dev_t dev; ino_t ino; } vvar_map;
static uint64_t image_base;
static pthread_mutex_t attach_mu = PTHREAD_MUTEX_INITIALIZER;
static int atfork_registered;
static char last_error[256];

static void forget_in_child(void) {
    for (int i = 0; i < F_N; i++)
        __atomic_store_n(&fns[i], NULL, __ATOMIC_RELAXED);
    __atomic_store_n(&syscall_number_fn, NULL, __ATOMIC_RELAXED);
    pthread_mutex_init(&attach_mu, NULL);
}

const char *rxv_last_error(void) { return last_error; }

static void *load_image(int image_fd, int *err) {
    struct stat st;
    if (fstat(image_fd, &st) < 0) {
        *err = -errno;
        return NULL;
    }
    for (int i = 0; i < n_images; i++)
        if (images[i].dev == st.st_dev && images[i].ino == st.st_ino)
            return images[i].handle; /* this image is loaded already: just re-init it */
    if (n_images == MAX_IMAGES) {
        *err = -ENOSPC;
        return NULL;
    }
    int fd = image_fd;
    for (int attempt = 0; attempt < 8; attempt++) {
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (h == NULL) {
            snprintf(last_error, sizeof last_error, "%s", dlerror());
            if (fd != image_fd)
                close(fd);
            *err = -ENOEXEC;
            return NULL;
        }
        int stale = 0;
        for (int i = 0; i < n_images; i++)
            stale |= images[i].handle == h;
        if (fd != image_fd)
            close(fd);
        if (!stale) {
            images[n_images].handle = h;
            images[n_images].dev = st.st_dev;
            images[n_images].ino = st.st_ino;
            n_images++;
            return h;
        }
        dlclose(h); /* an earlier image that had this name: drop the extra reference, rename */
        fd = fcntl(image_fd, F_DUPFD_CLOEXEC, 100 + 37 * attempt);
        if (fd < 0) {
            *err = -errno;
            return NULL;
        }
    }
    *err = -EEXIST;
    return NULL;
}

static void *map_vvar(int vvar_fd, uint64_t size, int *err) {
    struct stat st;
    if (fstat(vvar_fd, &st) < 0) {
        *err = -errno;
        return NULL;
    }
    if (vvar_map.addr != NULL && vvar_map.dev == st.st_dev && vvar_map.ino == st.st_ino)
        return vvar_map.addr; /* the same page (a fork child reconnecting to the same rxd) */
    void *p = mmap(NULL, size, PROT_READ, MAP_SHARED, vvar_fd, 0);
    if (p == MAP_FAILED) {
        *err = -errno;
        return NULL;
    }
    /* The earlier page, if any, stays mapped: a thread may be reading it right now. */
    vvar_map.addr = p;
    vvar_map.dev = st.st_dev;
    vvar_map.ino = st.st_ino;
    return p;
}

int rxv_attach(int image_fd, int vvar_fd, uint64_t vvar_size) {
    if (image_fd < 0 || vvar_fd < 0 || vvar_size == 0)
        return -EINVAL;
    pthread_mutex_lock(&attach_mu);
    if (!atfork_registered) {
        pthread_atfork(NULL, NULL, forget_in_child);
        atfork_registered = 1;
    }
    int err = 0;
    void *h = load_image(image_fd, &err);
    void *vvar = h ? map_vvar(vvar_fd, vvar_size, &err) : NULL;
    if (vvar == NULL)
        goto out;
    void *resolved[F_N];
    init_fn init = (init_fn)dlsym(h, "rx_vdso_init");
    name_fn by_name = (name_fn)dlsym(h, "rx_get_syscall_number");
    int missing = init == NULL || by_name == NULL;
    for (int i = 0; i < F_N; i++)
        missing |= (resolved[i] = dlsym(h, fn_names[i])) == NULL;
    if (missing) {
        snprintf(last_error, sizeof last_error, "the vDSO image lacks an rx_* symbol");
        err = -ENOENT;
        goto out;
    }
    err = init(vvar);
    if (err < 0)
        goto out;
    Dl_info info;
    if (dladdr((void *)init, &info) != 0)
        image_base = (uint64_t)(uintptr_t)info.dli_fbase;
    for (int i = 0; i < F_N; i++)
        __atomic_store_n(&fns[i], resolved[i], __ATOMIC_RELEASE);
    __atomic_store_n(&syscall_number_fn, by_name, __ATOMIC_RELEASE);
out:
    pthread_mutex_unlock(&attach_mu);
    return err;
}

#define TRAMPOLINE(name, idx, type)                                       \
    int64_t name(void) {                                                  \
        type f = (type)__atomic_load_n(&fns[idx], __ATOMIC_ACQUIRE);      \
        return __builtin_expect(f != NULL, 1) ? (int64_t)f() : RXV_DETACHED; \
    }

TRAMPOLINE(rxv_clock_get_monotonic, F_MONO, i64_fn)
TRAMPOLINE(rxv_clock_get_realtime, F_REAL, i64_fn)
TRAMPOLINE(rxv_ticks_get, F_TICKS, u64_fn)
TRAMPOLINE(rxv_ticks_per_second, F_TPS, u64_fn)
TRAMPOLINE(rxv_thread_tls_base, F_TLS, u64_fn)
TRAMPOLINE(rxv_cpu_features, F_CPU, u64_fn)
TRAMPOLINE(rxv_system_get_page_size, F_PAGE, u64_fn)
TRAMPOLINE(rxv_system_get_physmem, F_PHYS, u64_fn)
TRAMPOLINE(rxv_system_get_pressure_level, F_PRES, u64_fn)

int64_t rxv_get_syscall_number(const char *name) {
    name_fn f = __atomic_load_n(&syscall_number_fn, __ATOMIC_ACQUIRE);
    return f ? f(name) : RXV_DETACHED;
}

uint64_t rxv_image_base(void) {
    return __atomic_load_n(&fns[F_MONO], __ATOMIC_ACQUIRE) ? image_base : 0;
}

uint64_t rxv_vvar_base(void) {
    return __atomic_load_n(&fns[F_MONO], __ATOMIC_ACQUIRE) ? (uint64_t)(uintptr_t)vvar_map.addr : 0;
}

static int64_t host_mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t rxv_check_clock(uint64_t iterations, int64_t max_step_ns, int64_t max_host_diff_ns, int64_t *out) {
    i64_fn mono = (i64_fn)__atomic_load_n(&fns[F_MONO], __ATOMIC_ACQUIRE);
    if (mono == NULL)
        return RXV_DETACHED;
    int64_t bad = 0, worst_host = 0, worst_step = 0, prev = mono();
    for (uint64_t i = 0; i < iterations; i++) {
        /* The host clock brackets the read, so a preemption in between widens the bracket
         * instead of looking like an error. */
        int64_t before = max_host_diff_ns > 0 ? host_mono() : 0;
        int64_t now = mono();
        int64_t after = max_host_diff_ns > 0 ? host_mono() : 0;
        int64_t step = now - prev;
        int wrong = step < 0 || step > max_step_ns;
        if (step > worst_step) worst_step = step;
        if (max_host_diff_ns > 0) {
            int64_t diff = now < before ? before - now : now > after ? now - after : 0;
            if (diff > worst_host) worst_host = diff;
            wrong |= diff > max_host_diff_ns;
        }
        bad += wrong;
        if (now > prev)
            prev = now;
    }
    if (out) {
        out[0] = bad;
        out[1] = worst_host;
        out[2] = worst_step;
    }
    return bad;
}
