/* rxvdso.c — the rx vDSO image: a tiny position-independent library with no libc (-nostdlib,
 * -ffreestanding), loaded into every client from the memfd rxd sends, reading the vvar page rxd
 * writes (rxvvar.h). Built by native/_build_vdso.py; every exported name is in rxvdso.map and its
 * contract in rxvdso.h.
 *
 * Why no libc: like the kernel's vDSO it must not depend on what the process linked, and a
 * clock read must not enter anything that could take a lock. The only "library" code it needs is
 * a bounded strcmp, written here.
 */
#include <stdint.h>

#include "rxvdso.h"
#include "rxvvar.h"

#if !defined(__x86_64__) && !defined(__aarch64__)
#error "the rx vDSO supports x86_64 and aarch64"
#endif

#define LD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

/* The page rx_vdso_init attached; read with acquire so a reader sees the page's contents as
 * initialised as when init ran. The one writable word of the image. */
static const struct rx_vvar *vvar_page;

static inline const struct rx_vvar *page(void) {
    return __atomic_load_n(&vvar_page, __ATOMIC_ACQUIRE);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__)
    __asm__ volatile("pause" ::: "memory");
#else
    __asm__ volatile("yield" ::: "memory");
#endif
}

/* The counter, ordered after the loads before it (lfence / isb), so a reader cannot sample the
 * counter before it loaded the parameters it converts it with. */
static inline uint64_t read_ticks(void) {
#if defined(__x86_64__)
    uint32_t lo, hi;
    __asm__ volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi)::"memory");
    return ((uint64_t)hi << 32) | lo;
#else
    uint64_t v;
    __asm__ volatile("isb; mrs %0, cntvct_el0" : "=r"(v)::"memory");
    return v;
#endif
}

struct rx_timespec {
    int64_t tv_sec;
    int64_t tv_nsec;
};

/* clock_gettime(CLOCK_MONOTONIC) straight to the host kernel: the fallback when the ticks are not
 * invariant. No libc, so the raw instruction. */
static int64_t host_monotonic_ns(void) {
    struct rx_timespec ts = {0, 0};
#if defined(__x86_64__)
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "0"(228L /* clock_gettime */), "D"(1L /* MONOTONIC */), "S"(&ts)
                     : "rcx", "r11", "memory");
#else
    register long x8 __asm__("x8") = 113; /* clock_gettime */
    register long x0 __asm__("x0") = 1;   /* CLOCK_MONOTONIC */
    register long x1 __asm__("x1") = (long)&ts;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1) : "memory");
    long ret = x0;
#endif
    if (ret != 0)
        return RX_VDSO_ERR_BAD_STATE;
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* One consistent reading of the clock: monotonic ns, and the realtime offset that goes with it. */
static int64_t read_clock(const struct rx_vvar *v, int64_t *realtime_offset) {
    for (;;) {
        uint32_t s = __atomic_load_n(&v->seq, __ATOMIC_ACQUIRE);
        if (UNLIKELY(s & 1)) {
            cpu_relax();
            continue;
        }
        uint32_t flags = LD(&v->flags);
        uint64_t base = LD(&v->tick_base);
        int64_t mono = LD(&v->mono_base_ns);
        uint64_t mult = LD(&v->mult);
        uint32_t shift = LD(&v->shift);
        int64_t offset = LD(&v->realtime_offset_ns);
        uint64_t ticks = (flags & RX_VVAR_CLOCK_SYSCALL) ? 0 : read_ticks();
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (UNLIKELY(LD(&v->seq) != s))
            continue;
        *realtime_offset = offset;
        if (UNLIKELY(flags & RX_VVAR_CLOCK_SYSCALL))
            return host_monotonic_ns();
        int64_t delta = (int64_t)(ticks - base);
        if (UNLIKELY(delta < 0))
            delta = 0; /* another CPU's counter a few ticks behind the anchor's */
        return mono + (int64_t)(((unsigned __int128)(uint64_t)delta * mult) >> (shift & 127));
    }
}

int rx_vdso_init(const void *vvar) {
    const struct rx_vvar *v = (const struct rx_vvar *)vvar;
    if (v == 0)
        return RX_VDSO_ERR_INVALID_ARGS;
    if (LD(&v->magic) != RX_VVAR_MAGIC || LD(&v->version) != RX_VVAR_VERSION)
        return RX_VDSO_ERR_NOT_SUPPORTED;
    __atomic_store_n(&vvar_page, v, __ATOMIC_RELEASE);
    return 0;
}

int64_t rx_clock_get_monotonic(void) {
    const struct rx_vvar *v = page();
    if (UNLIKELY(!v))
        return RX_VDSO_ERR_BAD_STATE;
    int64_t offset;
    return read_clock(v, &offset);
}

int64_t rx_clock_get_realtime(void) {
    const struct rx_vvar *v = page();
    if (UNLIKELY(!v))
        return RX_VDSO_ERR_BAD_STATE;
    int64_t offset;
    int64_t mono = read_clock(v, &offset);
    return mono < 0 ? mono : mono + offset;
}

uint64_t rx_ticks_get(void) {
    return read_ticks();
}

uint64_t rx_ticks_per_second(void) {
    const struct rx_vvar *v = page();
    return LIKELY(v) ? LD(&v->ticks_per_second) : (uint64_t)(int64_t)RX_VDSO_ERR_BAD_STATE;
}

uint64_t rx_thread_tls_base(void) {
    uint64_t tp;
#if defined(__x86_64__)
    /* glibc and musl keep the TCB's self-pointer at %fs:0, so this is the fs base. */
    __asm__("movq %%fs:0, %0" : "=r"(tp));
#else
    __asm__("mrs %0, tpidr_el0" : "=r"(tp));
#endif
    return tp;
}

uint64_t rx_cpu_features(void) {
    const struct rx_vvar *v = page();
    return LIKELY(v) ? LD(&v->cpu_features) : 0;
}

/* strcmp bounded by the table's name size; the table's names are NUL-terminated by rxd. */
static int name_equal(const char *a, const char *table_name) {
    for (int i = 0; i < RX_VVAR_SYSCALL_NAME_MAX; i++) {
        if (a[i] != table_name[i])
            return 0;
        if (a[i] == '\0')
            return 1;
    }
    return 0;
}

int64_t rx_get_syscall_number(const char *name) {
    const struct rx_vvar *v = page();
    if (UNLIKELY(!v))
        return RX_VDSO_ERR_BAD_STATE;
    if (name == 0)
        return RX_VDSO_ERR_INVALID_ARGS;
    uint32_t n = LD(&v->syscall_count);
    if (n > RX_VVAR_SYSCALLS_MAX)
        n = RX_VVAR_SYSCALLS_MAX;
    for (uint32_t i = 0; i < n; i++)
        if (name_equal(name, v->syscalls[i].name))
            return LD(&v->syscalls[i].number);
    return RX_VDSO_ERR_NOT_FOUND;
}

uint64_t rx_system_get_page_size(void) {
    const struct rx_vvar *v = page();
    return LIKELY(v) ? LD(&v->page_size) : (uint64_t)(int64_t)RX_VDSO_ERR_BAD_STATE;
}

uint64_t rx_system_get_physmem(void) {
    const struct rx_vvar *v = page();
    return LIKELY(v) ? LD(&v->physmem_bytes) : (uint64_t)(int64_t)RX_VDSO_ERR_BAD_STATE;
}

uint64_t rx_system_get_pressure_level(void) {
    const struct rx_vvar *v = page();
    return LIKELY(v) ? __atomic_load_n(&v->memory_pressure, __ATOMIC_ACQUIRE) : (uint64_t)(int64_t)RX_VDSO_ERR_BAD_STATE;
}
