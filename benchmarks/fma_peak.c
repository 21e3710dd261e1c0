/*
 * The arithmetic limit of one core, for benchmarks/bench_lstm.py's ceilings: rounds of fused
 * multiply-adds on 12 independent vector registers (enough chains to cover the FMA latency on two
 * FMA pipes), no memory traffic, with AVX2 (256-bit) and, where the CPU and the OS support it,
 * AVX-512 (512-bit: twice the flops per instruction, which some cores retire at the AVX2 rate of
 * instructions and others at half of it). No GEMM, blocked or not, retires floating-point work
 * faster than the better of the two, so flops / (cores x that rate) bounds from below the time of
 * any implementation doing those flops.
 * Built by the benchmark with the system C compiler (cc -O2 -shared -fPIC); not part of the package.
 */
#include <immintrin.h>

int fma_peak_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

/* __builtin_cpu_supports("avx512f") also checks that the OS saves the ZMM state (XCR0). */
int fma_peak_avx512_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}

#define CHAINS 12

/* The sum of every lane of every chain is returned, so that no chain's work can be dropped. */
#define DEFINE_FMA_PEAK(NAME, TARGET, SCALAR, VEC, LANES, SET1, FMADD, STOREU)                    \
    __attribute__((target(TARGET))) double NAME(long rounds)                                      \
    {                                                                                             \
        VEC acc[CHAINS];                                                                          \
        const VEC scale = SET1((SCALAR)0.9999999), shift = SET1((SCALAR)1e-7);                    \
        for (int i = 0; i < CHAINS; i++) acc[i] = SET1((SCALAR)i);                                \
        for (long r = 0; r < rounds; r++) {                                                       \
            _Pragma("GCC unroll 12")                                                              \
            for (int i = 0; i < CHAINS; i++) acc[i] = FMADD(acc[i], scale, shift);                \
        }                                                                                         \
        SCALAR lanes[LANES];                                                                      \
        double total = 0.0;                                                                       \
        for (int i = 0; i < CHAINS; i++) {                                                        \
            STOREU(lanes, acc[i]);                                                                \
            for (int j = 0; j < LANES; j++) total += lanes[j];                                    \
        }                                                                                         \
        return total;                                                                             \
    }

DEFINE_FMA_PEAK(fma_peak_f64, "avx2,fma", double, __m256d, 4, _mm256_set1_pd, _mm256_fmadd_pd,
                _mm256_storeu_pd)
DEFINE_FMA_PEAK(fma_peak_f32, "avx2,fma", float, __m256, 8, _mm256_set1_ps, _mm256_fmadd_ps,
                _mm256_storeu_ps)
DEFINE_FMA_PEAK(fma_peak_avx512_f64, "avx512f", double, __m512d, 8, _mm512_set1_pd, _mm512_fmadd_pd,
                _mm512_storeu_pd)
DEFINE_FMA_PEAK(fma_peak_avx512_f32, "avx512f", float, __m512, 16, _mm512_set1_ps, _mm512_fmadd_ps,
                _mm512_storeu_ps)
