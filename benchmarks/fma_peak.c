/*
 * The arithmetic limit of one core, for benchmarks/bench_lstm.py's ceilings: rounds of fused
 * multiply-adds on 12 independent AVX2 registers (enough chains to cover the FMA latency on two
 * FMA pipes), no memory traffic. No GEMM, blocked or not, retires floating-point work faster, so
 * flops / (cores x this rate) bounds from below the time of any implementation doing those flops.
 * Built by the benchmark with the system C compiler (cc -O2 -shared -fPIC); not part of the package.
 */
#include <immintrin.h>

int fma_peak_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

#define CHAINS 12

/* The sum of every lane of every chain is returned, so that no chain's work can be dropped. */
#define DEFINE_FMA_PEAK(NAME, SCALAR, VEC, LANES, SET1, FMADD, STOREU)                            \
    __attribute__((target("avx2,fma"))) double NAME(long rounds)                                  \
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

DEFINE_FMA_PEAK(fma_peak_f64, double, __m256d, 4, _mm256_set1_pd, _mm256_fmadd_pd, _mm256_storeu_pd)
DEFINE_FMA_PEAK(fma_peak_f32, float, __m256, 8, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_storeu_ps)
