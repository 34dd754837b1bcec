/* rxvvar.h — the vvar page: the data rxd publishes and every process reads through the vDSO.
 *
 * rxd creates it as a sealed memfd ("rx-vvar"), maps it read-write in itself only, and hands each
 * client an O_RDONLY fd in the connect handshake; the client maps it PROT_READ, MAP_SHARED and
 * gives its address to the vDSO image (rx_vdso_init). Nothing here is a pointer: the page means
 * the same thing at any address in any process. Shared by native/vdso/rxvdso.c (the reader) and
 * native/server/rxvvar_writer.c (rxd, the only writer).
 *
 * Seqlock (the `seq` word, like Linux's vDSO data page). Fields marked [seq] may change at any time
 * and must be read under it:
 *   reader: s = load_acquire(seq); if s is odd retry; read the fields (relaxed atomic loads);
 *           fence(acquire); if load(seq) != s retry.
 *   writer: store(seq, seq + 1) (odd); fence(release); write the fields; fence(release);
 *           store(seq, seq + 1) (even again).
 * Fields marked [once] are written before any client can attach and never change; fields marked
 * [atomic] are single aligned words that change alone and are read with one atomic load.
 *
 * The clock (rx_clock_get_monotonic), in ticks mode (flags without RX_VVAR_CLOCK_SYSCALL):
 *   ns = mono_base_ns + (int64_t)(((unsigned __int128)(ticks - tick_base) * mult) >> shift)
 * with ticks the CPU counter (x86_64: rdtsc; aarch64: cntvct_el0), and a negative
 * ticks - tick_base (counters a few ticks apart between CPUs) clamped to 0. The 128-bit product
 * cannot overflow, so rxd may re-anchor as rarely as it likes. Realtime is monotonic plus
 * realtime_offset_ns, read in the same seqlock section. In syscall mode (the ticks are not
 * invariant), the vDSO asks the host kernel for CLOCK_MONOTONIC with a raw `syscall` instruction
 * instead and only realtime_offset_ns comes from here.
 */
#ifndef RXVVAR_H
#define RXVVAR_H

#include <stdint.h>

#define RX_VVAR_MAGIC 0x52585656u /* "RXVV" */
#define RX_VVAR_VERSION 1u
#define RX_VVAR_SIZE 8192u /* two pages; the struct is smaller, the rest is zero */

#define RX_VVAR_SYSCALL_NAME_MAX 40 /* bytes, including the terminating NUL */
#define RX_VVAR_SYSCALLS_MAX 128

/* flags */
#define RX_VVAR_CLOCK_SYSCALL (1u << 0)   /* ticks are not invariant: the clock is a raw syscall */
#define RX_VVAR_TICKS_INVARIANT (1u << 1) /* x86_64: CPUID 80000007H EDX bit 8; aarch64: always */

/* CPU feature bits of cpu_features (rx_cpu_features()). They mean different things per
 * architecture; proto/_constants.py has the same values as RX_CPU_X86_* / RX_CPU_ARM64_*.
 * x86_64, from CPUID (AVX, AVX2 and AVX512F only when the OS enabled their state in XCR0), less
 * what the kernel's /proc/cpuinfo does not list (features it found broken or turned off):
 *   0 SSE2  1 SSE3  2 SSSE3  3 SSE4_1  4 SSE4_2  5 POPCNT  6 AES  7 PCLMULQDQ  8 AVX  9 AVX2
 *   10 BMI1  11 BMI2  12 AVX512F  13 RDRAND  14 RDSEED  15 CLFLUSHOPT  16 CLWB  17 ERMS  18 FSRM
 *   19 INVARIANT_TSC  20 SHA
 * aarch64, from getauxval(AT_HWCAP):
 *   0 FP  1 ASIMD  2 AES  3 PMULL  4 SHA1  5 SHA2  6 CRC32  7 ATOMICS (LSE)  8 DCPOP (DC CVAP)
 *   9 SHA3  10 SHA512  11 SVE
 */
#define RX_CPU_X86_SSE2 (1ull << 0)
#define RX_CPU_X86_SSE3 (1ull << 1)
#define RX_CPU_X86_SSSE3 (1ull << 2)
#define RX_CPU_X86_SSE4_1 (1ull << 3)
#define RX_CPU_X86_SSE4_2 (1ull << 4)
#define RX_CPU_X86_POPCNT (1ull << 5)
#define RX_CPU_X86_AES (1ull << 6)
#define RX_CPU_X86_PCLMULQDQ (1ull << 7)
#define RX_CPU_X86_AVX (1ull << 8)
#define RX_CPU_X86_AVX2 (1ull << 9)
#define RX_CPU_X86_BMI1 (1ull << 10)
#define RX_CPU_X86_BMI2 (1ull << 11)
#define RX_CPU_X86_AVX512F (1ull << 12)
#define RX_CPU_X86_RDRAND (1ull << 13)
#define RX_CPU_X86_RDSEED (1ull << 14)
#define RX_CPU_X86_CLFLUSHOPT (1ull << 15)
#define RX_CPU_X86_CLWB (1ull << 16)
#define RX_CPU_X86_ERMS (1ull << 17)
#define RX_CPU_X86_FSRM (1ull << 18)
#define RX_CPU_X86_INVARIANT_TSC (1ull << 19)
#define RX_CPU_X86_SHA (1ull << 20)

#define RX_CPU_ARM64_FP (1ull << 0)
#define RX_CPU_ARM64_ASIMD (1ull << 1)
#define RX_CPU_ARM64_AES (1ull << 2)
#define RX_CPU_ARM64_PMULL (1ull << 3)
#define RX_CPU_ARM64_SHA1 (1ull << 4)
#define RX_CPU_ARM64_SHA2 (1ull << 5)
#define RX_CPU_ARM64_CRC32 (1ull << 6)
#define RX_CPU_ARM64_ATOMICS (1ull << 7)
#define RX_CPU_ARM64_DCPOP (1ull << 8)
#define RX_CPU_ARM64_SHA3 (1ull << 9)
#define RX_CPU_ARM64_SHA512 (1ull << 10)
#define RX_CPU_ARM64_SVE (1ull << 11)

struct rx_vvar_syscall {
    char name[RX_VVAR_SYSCALL_NAME_MAX]; /* NUL-terminated */
    int64_t number;
};

struct rx_vvar {
    uint32_t magic;   /* [once] RX_VVAR_MAGIC */
    uint32_t version; /* [once] RX_VVAR_VERSION: a reader refuses any other */
    uint32_t seq;     /* the seqlock word: odd while rxd writes */
    uint32_t flags;   /* [seq] RX_VVAR_CLOCK_SYSCALL, RX_VVAR_TICKS_INVARIANT */

    uint64_t tick_base;         /* [seq] the anchor: ticks at the last re-anchoring */
    int64_t mono_base_ns;       /* [seq] rx monotonic ns at tick_base */
    uint64_t mult;              /* [seq] ns per tick << shift (slewed by rxd, see rxvvar_writer.c) */
    uint32_t shift;             /* [seq] */
    uint32_t memory_pressure;   /* [atomic] the RX_PRESSURE_* level in force (0 normal .. 4 out of memory) */
    int64_t realtime_offset_ns; /* [seq] realtime = monotonic + this (rx_clock_adjust_realtime) */
    uint64_t ticks_per_second;  /* [once] calibrated at rxd start (aarch64: cntfrq_el0) */

    uint64_t page_size;      /* [once] rx's page size */
    uint64_t physmem_bytes;  /* [atomic] rxd's physical memory budget */
    uint64_t cpu_features;   /* [once] RX_CPU_* bits */
    uint32_t syscall_count;  /* [once] entries used in syscalls[] */
    uint32_t call_load;      /* [atomic] requests rxd's call front end found in its last batch: a
                              * client waits for a reply in poll when rxd is this busy (client/call.c) */
    uint64_t reserved[52];   /* zero: room for later fields without moving the table */

    struct rx_vvar_syscall syscalls[RX_VVAR_SYSCALLS_MAX]; /* [once] from rxkernel.proto.SYSCALLS */
};

_Static_assert(sizeof(struct rx_vvar) <= RX_VVAR_SIZE, "the vvar must fit its pages");
_Static_assert(__builtin_offsetof(struct rx_vvar, syscalls) == 512, "the header is 512 bytes");

#endif /* RXVVAR_H */
