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

__attribute__((target("avx2,fma"))) double fma_peak_f64(long rounds)
{
    __m256d acc[CHAINS];
    const __m256d scale = _mm256_set1_pd(0.9999999), shift = _mm256_set1_pd(1e-7);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_set1_pd((double)i);
    for (long r = 0; r < rounds; r++) {
#pragma GCC unroll 12
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_fmadd_pd(acc[i], scale, shift);
    }
    double lanes[4], total = 0.0;    /* a result that depends on every chain: nothing is dropped */
    for (int i = 0; i < CHAINS; i++) {
        _mm256_storeu_pd(lanes, acc[i]);
        total += lanes[0] + lanes[1] + lanes[2] + lanes[3];
    }
    return total;
}

__attribute__((target("avx2,fma"))) double fma_peak_f32(long rounds)
{
    __m256 acc[CHAINS];
    const __m256 scale = _mm256_set1_ps(0.9999999f), shift = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_set1_ps((float)i);
    for (long r = 0; r < rounds; r++) {
#pragma GCC unroll 12
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_fmadd_ps(acc[i], scale, shift);
    }
    float lanes[8];
    double total = 0.0;
    for (int i = 0; i < CHAINS; i++) {
        _mm256_storeu_ps(lanes, acc[i]);
        for (int j = 0; j < 8; j++) total += lanes[j];
    }
    return total;
}
