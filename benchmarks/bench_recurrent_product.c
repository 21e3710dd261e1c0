/*
 * The per-step recurrent product alone, C[M, N] += A[M, K] B[K, N] on weights packed once (the
 * kernels of pyx/lstmfast_gemm.inc.h, A packed per call as the passes do), on every instruction
 * set this CPU has, against the one-core FMA limit of benchmarks/fma_peak.c (the better of its
 * AVX2 and AVX-512 rates). The baseline path has no packed kernel (the passes call BLAS there).
 *
 *   cc -O2 -I pyx benchmarks/bench_recurrent_product.c -o bench_recurrent_product -lm
 *   ./bench_recurrent_product [M N K]          (default 64 1024 256: minibatch 64, h 256)
 *
 * Prints GFLOP/s (best of 7 samples of about 0.1 s) and the fraction of the FMA limit per path
 * and dtype, and checks that every path gives the same C to the bit. One thread; times on a
 * shared machine are not facts: compare the paths side by side in one run.
 */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "lstmfast_simd.h"
#include "fma_peak.c"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* the best of 7 samples of the FMA limit (GFLOP/s) in a dtype, over the vector widths the CPU has */
static double fma_limit(int f32)
{
    double best = 0.0;
    for (int width = 0; width < 2; width++) {
        if (width == 1 && !fma_peak_avx512_supported())
            break;
        double (*fn)(long) = f32 ? (width ? fma_peak_avx512_f32 : fma_peak_f32)
                                 : (width ? fma_peak_avx512_f64 : fma_peak_f64);
        int lanes = (f32 ? 8 : 4) * (width ? 2 : 1);
        for (int s = 0; s < 7; s++) {
            long rounds = 20000000;
            double t0 = now(), sink = fn(rounds), t = now() - t0;
            double rate = 2.0 * 12 * lanes * rounds / t * 1e-9;
            if (rate > best && sink == sink) best = rate;
        }
    }
    return best;
}

#define LF_BENCH_TYPE(T, SFX)                                                                     \
    static double bench_##SFX(int level, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, T* out)           \
    {                                                                                             \
        lf_select_simd(level);                                                                    \
        T* A = malloc(sizeof(T) * M * K);                                                         \
        T* B = malloc(sizeof(T) * K * N);                                                         \
        T* Bp = malloc(sizeof(T) * ((N + LF_NR - 1) / LF_NR) * LF_NR * K);                        \
        T* a_pack = malloc(sizeof(T) * (M + 15) / 16 * 16 * K);                                   \
        srand(1);                                                                                 \
        for (ptrdiff_t i = 0; i < M * K; i++) A[i] = (T)rand() / RAND_MAX - (T)0.5;               \
        for (ptrdiff_t i = 0; i < K * N; i++) B[i] = ((T)rand() / RAND_MAX - (T)0.5) / 16;         \
        for (ptrdiff_t i = 0; i < M * N; i++) out[i] = 0;                                         \
        lf_pack_b_##SFX(B, 1, K, K, N, Bp);                                                       \
        lf_gemm_packed_##SFX(M, N, K, A, M, Bp, out, M, out, M, NULL, a_pack, 0);                 \
        double best = 0.0;                                                                        \
        T* C = malloc(sizeof(T) * M * N);                                                         \
        for (int s = 0; s < 7; s++) {                                                             \
            long calls = 0;                                                                       \
            double t0 = now(), t;                                                                 \
            do {                                                                                  \
                for (int r = 0; r < 10; r++, calls++)                                             \
                    lf_gemm_packed_##SFX(M, N, K, A, M, Bp, C, M, C, M, NULL, a_pack, 0);         \
                t = now() - t0;                                                                   \
            } while (t < 0.1);                                                                    \
            double rate = 2.0 * M * N * K * calls / t * 1e-9;                                     \
            if (rate > best) best = rate;                                                         \
        }                                                                                         \
        free(A); free(B); free(Bp); free(a_pack); free(C);                                        \
        return best;                                                                              \
    }
LF_BENCH_TYPE(float, f32)
LF_BENCH_TYPE(double, f64)

int main(int argc, char** argv)
{
    ptrdiff_t M = 64, N = 1024, K = 256;
    if (argc == 4) {
        M = atol(argv[1]);
        N = atol(argv[2]);
        K = atol(argv[3]);
    }
    int cpu = lf_cpu_isa();
    printf("recurrent product C[%td, %td] += A[%td, %td] B, packed weights, one thread\n", M, N, M,
           K);
    for (int f32 = 1; f32 >= 0; f32--) {
        double limit = fma_limit(f32);
        printf("%s: FMA limit %.1f GFLOP/s\n", f32 ? "float32" : "float64", limit);
        void* first = NULL;
        for (int level = LF_ISA_BASELINE; level <= LF_ISA_AVX512; level++) {
            if (level == LF_ISA_BASELINE || level > cpu) {
                printf("  %-8s %s\n", lf_isa_names[level],
                       level == LF_ISA_BASELINE ? "no packed kernel (BLAS)" : "not on this CPU");
                continue;
            }
            void* out = malloc((f32 ? sizeof(float) : sizeof(double)) * M * N);
            double rate = f32 ? bench_f32(level, M, N, K, out) : bench_f64(level, M, N, K, out);
            const char* same = "";
            if (first == NULL)
                first = out;
            else {
                same = memcmp(first, out, (f32 ? sizeof(float) : sizeof(double)) * M * N) == 0
                    ? ", same bits as avx2" : ", DIFFERS from avx2";
                free(out);
            }
            printf("  %-8s %6.1f GFLOP/s, %5.1f%% of the FMA limit%s\n", lf_isa_names[level], rate,
                   100.0 * rate / limit, same);
        }
        free(first);
    }
    return 0;
}
