/*
 * The instruction sets lstmfast's C kernels are compiled for, and the choice among them at run
 * time.
 *
 * Every vectorised function exists once per instruction set, each instantiated from one template
 * (lstmfast_math.inc.h, lstmfast_gemm.inc.h, lstmfast_cells.inc.h) with a function-level target
 * attribute, so that the wheel stays baseline x86-64 (no -march=native) and a new instruction set
 * is one more instantiation: an LF_ISA_* level, its LF_TARGET_* attribute, its row in the vector
 * tables at the top of lstmfast_gemm.inc.h, and a case in the selection functions.
 *
 * Levels, lowest first:
 *   baseline  x86-64 (SSE2) or whatever the compiler targets elsewhere: scalar-friendly loops,
 *             BLAS for every matrix product;
 *   avx2      AVX2 + FMA (16 ymm registers): the vectorised math, the packed recurrent products;
 *   avx512    AVX-512 F/BW/VL/DQ (32 zmm registers): the same, with 512-bit vectors and larger
 *             register tiles in the packed products.
 * The CPU's level comes from CPUID and from XGETBV (the OS must save the YMM / ZMM state: a CPU
 * can have AVX-512 and an OS or a hypervisor that does not enable it). LSTMFAST_ISA may lower it
 * (lf_isa_limit), never raise it.
 */
#ifndef LSTMFAST_ISA_H
#define LSTMFAST_ISA_H

#include <stdlib.h>
#include <string.h>

#define LF_ISA_BASELINE 0
#define LF_ISA_AVX2 1
#define LF_ISA_AVX512 2

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define LF_HAVE_DISPATCH 1
#include <cpuid.h>
#include <immintrin.h>
#define LF_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define LF_TARGET_AVX512 \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,prefer-vector-width=512")))
#else
#define LF_HAVE_DISPATCH 0
#endif

/* Names of the levels, for LSTMFAST_ISA and for lstmfast.kernels.simd_variant(). */
static const char* const lf_isa_names[] = {"baseline", "avx2", "avx512"};

#if LF_HAVE_DISPATCH
/* XCR0 through XGETBV (ECX 0), as bytes of an instruction: no xsave target needed to assemble */
static unsigned long long lf_xgetbv0(void)
{
    unsigned int eax, edx;
    __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}
#endif

/* The highest level this CPU and its OS support. */
static int lf_cpu_isa(void)
{
#if LF_HAVE_DISPATCH
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx))
        return LF_ISA_BASELINE;
    const int osxsave = (ecx >> 27) & 1, avx = (ecx >> 28) & 1, fma = (ecx >> 12) & 1;
    if (!osxsave || !avx || !fma)
        return LF_ISA_BASELINE;
    const unsigned long long xcr0 = lf_xgetbv0();
    if ((xcr0 & 0x6) != 0x6)                   /* bits 1-2: the OS saves the XMM and YMM state */
        return LF_ISA_BASELINE;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx))
        return LF_ISA_BASELINE;
    if (!((ebx >> 5) & 1))                     /* AVX2 */
        return LF_ISA_BASELINE;
    /* AVX512F (bit 16), DQ (17), BW (30), VL (31); XCR0 bits 5-7: opmask, ZMM0-15 upper halves,
     * ZMM16-31 */
    const unsigned int avx512 = (1u << 16) | (1u << 17) | (1u << 30) | (1u << 31);
    if ((ebx & avx512) == avx512 && (xcr0 & 0xe0) == 0xe0)
        return LF_ISA_AVX512;
    return LF_ISA_AVX2;
#else
    return LF_ISA_BASELINE;
#endif
}

/* The level a value of LSTMFAST_ISA names (case as written: "baseline", "avx2", "avx512"); -1
 * for anything else. */
static int lf_isa_parse(const char* value)
{
    for (int level = LF_ISA_BASELINE; level <= LF_ISA_AVX512; level++)
        if (strcmp(value, lf_isa_names[level]) == 0)
            return level;
    return -1;
}

/* The highest level the environment allows: LSTMFAST_ISA (unset, empty or not a level: no
 * limit; the Python module warns about a bad value), then the older LSTMFAST_DISABLE_AVX2 (set
 * to anything but "" or "0": baseline). */
static int lf_isa_limit(void)
{
    int limit = LF_ISA_AVX512;
    const char* isa = getenv("LSTMFAST_ISA");
    if (isa != NULL && isa[0] != 0 && lf_isa_parse(isa) >= 0)
        limit = lf_isa_parse(isa);
    const char* disable = getenv("LSTMFAST_DISABLE_AVX2");
    if (disable != NULL && disable[0] != 0 && strcmp(disable, "0") != 0)
        limit = LF_ISA_BASELINE;
    return limit;
}

/* The level the kernels run at: the CPU's, lowered to the environment's limit. */
static int lf_isa_active(void)
{
    int cpu = lf_cpu_isa(), limit = lf_isa_limit();
    return cpu < limit ? cpu : limit;
}

#endif /* LSTMFAST_ISA_H */
