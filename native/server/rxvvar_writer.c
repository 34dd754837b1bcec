/* rxvvar_writer.c — rxd's writer of the vvar page (contracts in rxvvar_writer.h, layout and the
 * seqlock protocol in vdso/rxvvar.h).
 *
 * The clock model. rx monotonic time is a linear function of the CPU counter, published as
 * (tick_base, mono_base_ns, mult, shift). At start rxd measures the counter's rate against
 * CLOCK_MONOTONIC over ~50 ms and anchors the line at "now", so rx monotonic starts equal to the
 * host's CLOCK_MONOTONIC (same epoch: rxd's futex deadlines mix the two). Then, about once a
 * second, rx_vvar_discipline:
 *   1. takes a tight (counter, CLOCK_MONOTONIC) pair and re-estimates the base rate over the
 *      whole run since start (this converges: the window grows, the sampling error does not);
 *   2. inside the write section, reads the counter once more (the new anchor) and evaluates the
 *      OLD line there: the new line starts exactly where the old one is, so the clock stays
 *      continuous and never steps back;
 *   3. measures the error e = rx - host at the anchor and sets the new rate to
 *      base_rate * (1 - e / period), bounded to +-500 ppm (NTP's slew limit): by the next
 *      re-anchoring the error is gone, and a reader never sees time run backwards or jump.
 * If rx is behind by more than 1 ms (a host hiccup), it steps forward to the host value (forward
 * steps keep monotonicity); if it is ahead, it can only slew. Measured error after the first
 * second: a few microseconds at most (tests/test_vdso.py, and `rxd --log-level debug` logs it).
 *
 * Why re-anchor inside the write section: a reader that finished with the old parameters read
 * the counter before the section began (the seq was still even), so before the anchor, where the
 * old line is at or below the new one's start.
 */
#define _GNU_SOURCE
#include "rxvvar_writer.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>
#include <time.h>

#include "vdso/rxvvar.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#define NS_PER_S 1000000000LL
#define SHIFT 32
#define MAX_SLEW_PPM 500
#define STEP_NS 1000000LL
#define CALIBRATE_NS 50000000LL

#define ST(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define LD(p) __atomic_load_n((p), __ATOMIC_RELAXED)

/* Calibration state: one page per process (rxd's). */
static uint64_t start_ticks;
static int64_t start_ns;

static struct rx_vvar *as_vvar(void *p) { return (struct rx_vvar *)p; }

static uint64_t read_ticks(void) {
#if defined(__x86_64__)
    uint32_t lo, hi;
    __asm__ volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi)::"memory");
    return ((uint64_t)hi << 32) | lo;
#elif defined(__aarch64__)
    uint64_t v;
    __asm__ volatile("isb; mrs %0, cntvct_el0" : "=r"(v)::"memory");
    return v;
#else
#error "rx supports x86_64 and aarch64"
#endif
}

static int64_t host_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

/* A (ticks, CLOCK_MONOTONIC) pair: the tightest bracket of a few tries, ticks at its middle. */
static void sample(uint64_t *ticks, int64_t *ns) {
    uint64_t best = UINT64_MAX;
    for (int i = 0; i < 9; i++) {
        uint64_t t0 = read_ticks();
        int64_t n = host_ns(CLOCK_MONOTONIC);
        uint64_t t1 = read_ticks();
        if (t1 - t0 < best) {
            best = t1 - t0;
            *ticks = t0 + (t1 - t0) / 2;
            *ns = n;
        }
    }
}

static void write_begin(struct rx_vvar *v) {
    ST(&v->seq, LD(&v->seq) + 1); /* odd: readers retry */
    __atomic_thread_fence(__ATOMIC_RELEASE);
}

static void write_end(struct rx_vvar *v) {
    __atomic_thread_fence(__ATOMIC_RELEASE);
    ST(&v->seq, LD(&v->seq) + 1);
}

/* The line's value at ticks (the vDSO's formula). */
static int64_t line_at(uint64_t base, int64_t mono, uint64_t mult, uint32_t shift, uint64_t ticks) {
    int64_t delta = (int64_t)(ticks - base);
    if (delta < 0)
        delta = 0;
    return mono + (int64_t)(((unsigned __int128)(uint64_t)delta * mult) >> shift);
}

/* ns per tick << SHIFT over the run since start (or since calibration began). */
static uint64_t base_mult(uint64_t ticks, int64_t ns) {
    uint64_t dt = ticks - start_ticks;
    int64_t dn = ns - start_ns;
    if (dt == 0 || dn <= 0)
        return 0;
    return (uint64_t)(((unsigned __int128)dn << SHIFT) / dt);
}

static int counter_invariant(void) {
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (!__get_cpuid(0x80000000u, &a, &b, &c, &d) || a < 0x80000007u)
        return 0;
    __get_cpuid(0x80000007u, &a, &b, &c, &d);
    return (d >> 8) & 1;
#else
    return 1; /* the generic timer's virtual counter runs at a constant rate by architecture */
#endif
}

#if defined(__x86_64__)
static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}
#endif

#if defined(__x86_64__)
/* The kernel's word on each feature: it clears the ones it found broken or turned off (an AMD
 * RDSEED erratum, noxsave, ...) from /proc/cpuinfo while CPUID still reports them, and a program
 * must not use what the kernel disowned. Names as /proc/cpuinfo spells them. */
static const struct { uint64_t bit; const char *flag; } cpuinfo_names[] = {
    {RX_CPU_X86_SSE2, "sse2"},     {RX_CPU_X86_SSE3, "pni"},         {RX_CPU_X86_SSSE3, "ssse3"},
    {RX_CPU_X86_SSE4_1, "sse4_1"}, {RX_CPU_X86_SSE4_2, "sse4_2"},    {RX_CPU_X86_POPCNT, "popcnt"},
    {RX_CPU_X86_AES, "aes"},       {RX_CPU_X86_PCLMULQDQ, "pclmulqdq"}, {RX_CPU_X86_AVX, "avx"},
    {RX_CPU_X86_AVX2, "avx2"},     {RX_CPU_X86_BMI1, "bmi1"},        {RX_CPU_X86_BMI2, "bmi2"},
    {RX_CPU_X86_AVX512F, "avx512f"}, {RX_CPU_X86_RDRAND, "rdrand"},  {RX_CPU_X86_RDSEED, "rdseed"},
    {RX_CPU_X86_CLFLUSHOPT, "clflushopt"}, {RX_CPU_X86_CLWB, "clwb"}, {RX_CPU_X86_ERMS, "erms"},
    {RX_CPU_X86_FSRM, "fsrm"},     {RX_CPU_X86_SHA, "sha_ni"},
};

/* Clear from f every feature /proc/cpuinfo's flags do not list; f unchanged if it cannot be read. */
static uint64_t as_the_kernel_says(uint64_t f) {
    FILE *in = fopen("/proc/cpuinfo", "re");
    if (!in) return f;
    char line[8192];
    int found = 0;
    while (fgets(line, sizeof line, in))
        if (!strncmp(line, "flags", 5) && strchr(line, ':')) { found = 1; break; }
    fclose(in);
    if (!found) return f;
    for (unsigned i = 0; i < sizeof cpuinfo_names / sizeof cpuinfo_names[0]; i++) {
        size_t n = strlen(cpuinfo_names[i].flag);
        int listed = 0;
        for (const char *p = strchr(line, ':') + 1; (p = strstr(p, cpuinfo_names[i].flag)); p += n)
            if (p[-1] == ' ' && (p[n] == ' ' || p[n] == '\n' || p[n] == 0)) { listed = 1; break; }
        if (!listed) f &= ~cpuinfo_names[i].bit;
    }
    return f;
}
#endif

uint64_t rx_vvar_detect_cpu_features(void) {
    uint64_t f = 0;
#if defined(__x86_64__)
    unsigned a, b, c, d, max;
    if (!__get_cpuid(0, &max, &b, &c, &d))
        return 0;
    __get_cpuid(1, &a, &b, &c, &d);
    unsigned c1 = c, d1 = d;
    if (d1 & (1u << 26)) f |= RX_CPU_X86_SSE2;
    if (c1 & (1u << 0)) f |= RX_CPU_X86_SSE3;
    if (c1 & (1u << 9)) f |= RX_CPU_X86_SSSE3;
    if (c1 & (1u << 19)) f |= RX_CPU_X86_SSE4_1;
    if (c1 & (1u << 20)) f |= RX_CPU_X86_SSE4_2;
    if (c1 & (1u << 23)) f |= RX_CPU_X86_POPCNT;
    if (c1 & (1u << 25)) f |= RX_CPU_X86_AES;
    if (c1 & (1u << 1)) f |= RX_CPU_X86_PCLMULQDQ;
    if (c1 & (1u << 30)) f |= RX_CPU_X86_RDRAND;
    /* AVX state usable only if the OS saves it: OSXSAVE, and XCR0 has SSE|AVX (and the AVX-512
     * opmask/ZMM bits for AVX512F). */
    uint64_t xcr0 = (c1 & (1u << 27)) ? xgetbv0() : 0;
    int avx_os = (xcr0 & 0x6) == 0x6;
    int avx512_os = avx_os && (xcr0 & 0xe0) == 0xe0;
    if (avx_os && (c1 & (1u << 28))) f |= RX_CPU_X86_AVX;
    if (max >= 7) {
        __get_cpuid_count(7, 0, &a, &b, &c, &d);
        if (avx_os && (b & (1u << 5))) f |= RX_CPU_X86_AVX2;
        if (b & (1u << 3)) f |= RX_CPU_X86_BMI1;
        if (b & (1u << 8)) f |= RX_CPU_X86_BMI2;
        if (avx512_os && (b & (1u << 16))) f |= RX_CPU_X86_AVX512F;
        if (b & (1u << 18)) f |= RX_CPU_X86_RDSEED;
        if (b & (1u << 23)) f |= RX_CPU_X86_CLFLUSHOPT;
        if (b & (1u << 24)) f |= RX_CPU_X86_CLWB;
        if (b & (1u << 9)) f |= RX_CPU_X86_ERMS;
        if (b & (1u << 29)) f |= RX_CPU_X86_SHA;
        if (d & (1u << 4)) f |= RX_CPU_X86_FSRM;
    }
    if (counter_invariant()) f |= RX_CPU_X86_INVARIANT_TSC;
    f = as_the_kernel_says(f);
#elif defined(__aarch64__)
    /* AT_HWCAP bit numbers from the arm64 uapi <asm/hwcap.h>. */
    static const struct { unsigned hwcap_bit; uint64_t rx; } map[] = {
        {0, RX_CPU_ARM64_FP},     {1, RX_CPU_ARM64_ASIMD}, {3, RX_CPU_ARM64_AES},
        {4, RX_CPU_ARM64_PMULL},  {5, RX_CPU_ARM64_SHA1},  {6, RX_CPU_ARM64_SHA2},
        {7, RX_CPU_ARM64_CRC32},  {8, RX_CPU_ARM64_ATOMICS}, {16, RX_CPU_ARM64_DCPOP},
        {17, RX_CPU_ARM64_SHA3},  {21, RX_CPU_ARM64_SHA512}, {22, RX_CPU_ARM64_SVE},
    };
    unsigned long hw = getauxval(AT_HWCAP);
    for (unsigned i = 0; i < sizeof map / sizeof map[0]; i++)
        if (hw & (1ul << map[i].hwcap_bit))
            f |= map[i].rx;
#endif
    return f;
}

uint64_t rx_vvar_size(void) { return RX_VVAR_SIZE; }

int rx_vvar_setup(void *page, uint64_t page_size, uint64_t physmem_bytes, int mode) {
    struct rx_vvar *v = as_vvar(page);
    if (v == NULL || mode < RX_VVAR_MODE_AUTO || mode > RX_VVAR_MODE_SYSCALL)
        return -EINVAL;
    int invariant = counter_invariant();
    if (mode == RX_VVAR_MODE_AUTO)
        mode = invariant ? RX_VVAR_MODE_TICKS : RX_VVAR_MODE_SYSCALL;
    v->magic = RX_VVAR_MAGIC;
    v->version = RX_VVAR_VERSION;
    v->page_size = page_size;
    v->physmem_bytes = physmem_bytes;
    v->cpu_features = rx_vvar_detect_cpu_features();

    /* Calibrate: the rate over CALIBRATE_NS of CLOCK_MONOTONIC. */
    sample(&start_ticks, &start_ns);
    struct timespec nap = {0, CALIBRATE_NS};
    while (nanosleep(&nap, &nap) != 0 && errno == EINTR) {
    }
    uint64_t t;
    int64_t n;
    sample(&t, &n);
    uint64_t mult = base_mult(t, n);
#if defined(__aarch64__)
    uint64_t freq;
    __asm__ volatile("mrs %0, cntfrq_el0" : "=r"(freq));
    v->ticks_per_second = freq;
#else
    v->ticks_per_second = (uint64_t)(((unsigned __int128)(t - start_ticks) * NS_PER_S) / (uint64_t)(n - start_ns));
#endif
    int64_t realtime_offset = host_ns(CLOCK_REALTIME) - host_ns(CLOCK_MONOTONIC);

    write_begin(v);
    ST(&v->flags, (mode == RX_VVAR_MODE_SYSCALL ? RX_VVAR_CLOCK_SYSCALL : 0u) |
                      (invariant ? RX_VVAR_TICKS_INVARIANT : 0u));
    ST(&v->tick_base, t);
    ST(&v->mono_base_ns, n);
    ST(&v->mult, mult);
    ST(&v->shift, (uint32_t)SHIFT);
    ST(&v->realtime_offset_ns, realtime_offset);
    write_end(v);
    return 0;
}

int rx_vvar_add_syscall(void *page, const char *name, int64_t number) {
    struct rx_vvar *v = as_vvar(page);
    if (v == NULL || name == NULL)
        return -EINVAL;
    size_t len = strlen(name);
    if (len >= RX_VVAR_SYSCALL_NAME_MAX)
        return -ENAMETOOLONG;
    uint32_t i = v->syscall_count;
    if (i >= RX_VVAR_SYSCALLS_MAX)
        return -ENOSPC;
    memcpy(v->syscalls[i].name, name, len + 1);
    v->syscalls[i].number = number;
    __atomic_store_n(&v->syscall_count, i + 1, __ATOMIC_RELEASE);
    return 0;
}

int64_t rx_vvar_discipline(void *page, int64_t period_ns, int64_t *out) {
    struct rx_vvar *v = as_vvar(page);
    if (out) {
        out[0] = 0;
        out[1] = 0;
        out[2] = 0;
    }
    if (LD(&v->flags) & RX_VVAR_CLOCK_SYSCALL)
        return 0; /* the clock is the host's own */
    if (period_ns <= 0)
        period_ns = NS_PER_S;
    uint64_t tk;
    int64_t hn;
    sample(&tk, &hn);
    uint64_t base = base_mult(tk, hn);
    if (base == 0)
        return 0;

    write_begin(v);
    __atomic_thread_fence(__ATOMIC_SEQ_CST); /* the odd seq is visible before the anchor is read */
    uint64_t anchor = read_ticks();
    int64_t rx = line_at(v->tick_base, v->mono_base_ns, v->mult, v->shift, anchor);
    int64_t host = hn + (int64_t)(((__int128)(int64_t)(anchor - tk) * (__int128)base) >> SHIFT);
    int64_t err = rx - host;
    int stepped = 0;
    __int128 adj = 0;
    if (err < -STEP_NS) {
        rx = host; /* far behind: step forward (never back) */
        stepped = 1;
    } else {
        __int128 limit = (__int128)base * MAX_SLEW_PPM / 1000000;
        adj = (__int128)base * err / period_ns;
        if (adj > limit) adj = limit;
        if (adj < -limit) adj = -limit;
    }
    ST(&v->tick_base, anchor);
    ST(&v->mono_base_ns, rx);
    ST(&v->mult, (uint64_t)((__int128)base - adj));
    ST(&v->shift, (uint32_t)SHIFT);
    write_end(v);

    if (out) {
        out[0] = err;
        out[1] = (int64_t)(-adj * 1000000000 / (__int128)base);
        out[2] = stepped;
    }
    return err;
}

void rx_vvar_set_realtime_offset(void *page, int64_t offset_ns) {
    struct rx_vvar *v = as_vvar(page);
    write_begin(v);
    ST(&v->realtime_offset_ns, offset_ns);
    write_end(v);
}

int64_t rx_vvar_realtime_offset(const void *page) {
    return LD(&((const struct rx_vvar *)page)->realtime_offset_ns);
}

void rx_vvar_set_physmem(void *page, uint64_t physmem_bytes) {
    __atomic_store_n(&as_vvar(page)->physmem_bytes, physmem_bytes, __ATOMIC_RELAXED);
}

void rx_vvar_set_pressure(void *page, uint32_t level) {
    __atomic_store_n(&as_vvar(page)->memory_pressure, level, __ATOMIC_RELEASE);
}

void rx_vvar_set_call_load(void *page, uint32_t requests) {
    __atomic_store_n(&as_vvar(page)->call_load, requests, __ATOMIC_RELAXED);
}

int64_t rx_vvar_hammer(void *page, const volatile int *stop, uint64_t max_updates, uint32_t pause) {
    struct rx_vvar *v = as_vvar(page);
    if (v == NULL || stop == NULL)
        return -EINVAL;
    uint64_t base = v->tick_base, mult = v->mult;
    int64_t mono = v->mono_base_ns;
    uint32_t shift = v->shift;
    uint64_t k = base >> shift; /* anchor the twin k * 2^shift ticks earlier: exact in ns */
    if (k > 256)
        k = 256;
    if (k == 0 || shift >= 63 || mult >= (1ull << 54))
        return -EINVAL;
    uint64_t n = 0;
    while (n < max_updates && !*stop) {
        int twin = (n & 1) == 0;
        write_begin(v);
        ST(&v->tick_base, twin ? base - (k << shift) : base);
        ST(&v->mono_base_ns, twin ? mono - (int64_t)(k * mult) : mono);
        ST(&v->mult, twin ? mult * 2 : mult);
        ST(&v->shift, twin ? shift + 1 : shift);
        write_end(v);
        n++;
        for (uint32_t i = 0; i < pause; i++)
            __asm__ volatile("" ::: "memory");
    }
    if (n & 1) { /* leave the original set */
        write_begin(v);
        ST(&v->tick_base, base);
        ST(&v->mono_base_ns, mono);
        ST(&v->mult, mult);
        ST(&v->shift, shift);
        write_end(v);
    }
    return (int64_t)n;
}
