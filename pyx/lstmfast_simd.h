/*
 * Vectorisable exp / tanh / sigmoid over arrays, for lstmfast's element-wise gate passes.
 *
 * Why: with scalar libm expf/tanhf the element-wise part of an LSTM step costs more than its
 * GEMMs. These are branch-free (selects only), so GCC vectorises the array loops; each array
 * function is compiled twice, for baseline x86-64 (SSE2) and for AVX2+FMA, and the variant is
 * chosen once at run time from the CPU's features (no -march=native in the build).
 *
 * Accuracy (measured by tests/test_simd_math.py against NumPy, all finite inputs):
 *   exp:  Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, Taylor polynomial of e^r
 *         (degree 12 in double: truncation < 2e-16 relative; degree 7 in float: < 1e-8),
 *         evaluated in Estrin's scheme (short dependency chains);
 *   tanh: sign(x) * m / (m + 2) with m = expm1(2|x|) = 2^n expm1(r) + (2^n - 1), the same
 *         reduction with a Taylor polynomial of expm1(r): n = 0 for 2|x| < ln2/2, so no
 *         cancellation near 0; 1 for |x| past where tanh rounds to 1. (One polynomial per
 *         element: the earlier form, a series below ln2/2 and e^u - 1 above, evaluated both
 *         and cost twice as much: 3.5 -> 1.8 ns per double, 1.19 -> 0.80 ns per float.)
 *   Measured worst errors (tests/test_simd_math.py grid): float tanh 2.1, sigmoid 1.8, exp 1.4
 *   eps; double tanh 2.5, sigmoid 2.3, exp 2.2 eps.
 *   sigmoid: 1 / (1 + e^-x).
 *   Inputs below the normal range of exp give 0 (not subnormals); NaN propagates; +-Inf give
 *   the limits. No -ffast-math: the build keeps IEEE semantics (only -fno-math-errno and
 *   -fno-trapping-math, so that selects vectorise).
 */
#ifndef LSTMFAST_SIMD_H
#define LSTMFAST_SIMD_H

#include <stdint.h>
#include <string.h>
#include <stddef.h>
#include <math.h>

/* Always inlined: the loops that call them vectorise only with their bodies in place (with many
 * call sites, as lstmfast_cells.h has, GCC's inliner otherwise leaves scalar calls). */
#if defined(__GNUC__)
#define LF_MATH_INLINE static inline __attribute__((always_inline))
#else
#define LF_MATH_INLINE static inline
#endif

/* The clamps of the sigmoid's exp argument, [lo, hi], read from variables: with constant bounds
 * GCC evaluates the sigmoid at them and selects those results after the polynomial (four compares
 * and three blends or masks) instead of clamping the argument with one max and one min. Measured
 * (AVX2, arrays of 16384): sigmoid 1.54 -> 1.15 ns per double, 0.60 -> 0.42 ns per float. Never
 * written; not static (hidden from other shared objects) so that the compiler cannot assume their
 * values. */
#if defined(__GNUC__)
#define LF_HIDDEN __attribute__((visibility("hidden")))
#else
#define LF_HIDDEN
#endif
LF_HIDDEN double lstmfast_sigmoid_clamp_f64[2] = {-708.0, 710.0};
LF_HIDDEN float lstmfast_sigmoid_clamp_f32[2] = {-86.0f, 89.0f};

/* ---------------------------------------------------------------- double */

#define LF_LOG2E 1.4426950408889634074
#define LF_LN2_HI 6.93147180369123816490e-01  /* high bits of ln 2: n * LN2_HI is exact */
#define LF_LN2_LO 1.90821492927058770002e-10

/* e^x for x in [-708, 710] (or NaN), without the selects at the ends of the range: normal
 * results (e^-708 is 3.3e-308), +Inf from x = 709.78... on, where 2^n overflows. */
LF_MATH_INLINE double lf_exp_core_f64(double x)
{
    const double shifter = 6755399441055744.0; /* 1.5 * 2^52: adding it rounds to an integer */
    double t = x * LF_LOG2E + shifter;
    double n = t - shifter;
    double r = (x - n * LF_LN2_HI) - n * LF_LN2_LO;
    /* 2 e^r, Taylor to degree 12 with every coefficient doubled (exact: the sum is 2 e^r to the
     * bit), in Estrin's scheme: the same terms as Horner's, but a dependency chain of 5
     * multiply-adds instead of 12 (Horner's latency bound the loops) */
    double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    double p01 = 2.0 + r * 2.0, p23 = 1.0 + r * (2.0 / 6.0), p45 = 2.0 / 24.0 + r * (2.0 / 120.0);
    double p67 = 2.0 / 720.0 + r * (2.0 / 5040.0), p89 = 2.0 / 40320.0 + r * (2.0 / 362880.0);
    double p1011 = 2.0 / 3628800.0 + r * (2.0 / 39916800.0);
    double q0 = p01 + r2 * p23, q1 = p45 + r2 * p67, q2 = p89 + r2 * p1011;
    double p = (q0 + r4 * q1) + r8 * (q2 + r4 * (2.0 / 479001600.0));
    /* 2^(n-1) from the integer held in t's low mantissa bits, times 2 e^r (n may be 1024) */
    int64_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (int64_t)((uint64_t)(bits + 1022) << 52);
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

LF_MATH_INLINE double lf_exp_f64(double x)
{
    const double hi = 709.782712893384, lo = -708.0;
    double xc = x > hi ? hi : x;                /* NaN passes through both clamps */
    xc = xc < lo ? lo : xc;
    double result = lf_exp_core_f64(xc);
    result = x < lo ? 0.0 : result;
    result = x > hi ? (double)INFINITY : result;
    return result;
}

/* expm1(u) for 0 <= u <= 40: u = n ln2 + r, |r| <= ln2/2, e^u - 1 = 2^n expm1(r) + (2^n - 1)
 * with expm1(r) a Taylor polynomial (degree 13, Estrin). n = 0 below ln2/2, so small u get the
 * polynomial alone (no cancellation); above, the two terms cancel by at most a factor ~3.4. */
LF_MATH_INLINE double lf_expm1_pos_f64(double u)
{
    const double shifter = 6755399441055744.0;
    double t = u * LF_LOG2E + shifter;
    double n = t - shifter;
    double r = (u - n * LF_LN2_HI) - n * LF_LN2_LO;
    double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    double p12 = 1.0 + r * 0.5, p34 = 1.0 / 6.0 + r * (1.0 / 24.0);
    double p56 = 1.0 / 120.0 + r * (1.0 / 720.0), p78 = 1.0 / 5040.0 + r * (1.0 / 40320.0);
    double p910 = 1.0 / 362880.0 + r * (1.0 / 3628800.0);
    double p1112 = 1.0 / 39916800.0 + r * (1.0 / 479001600.0);
    double q0 = p12 + r2 * p34, q1 = p56 + r2 * p78, q2 = p910 + r2 * p1112;
    double q = r * ((q0 + r4 * q1) + r8 * (q2 + r4 * (1.0 / 6227020800.0)));
    int64_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (int64_t)((uint64_t)(bits + 1023) << 52);
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return scale * q + (scale - 1.0);
}

LF_MATH_INLINE double lf_tanh_f64(double x)
{
    double ax = x < 0 ? -x : x;
    double ac = ax > 20.0 ? 20.0 : ax;          /* tanh(20) rounds to 1 in double */
    double m = lf_expm1_pos_f64(2.0 * ac);
    double t = m / (m + 2.0);
    t = ax > 20.0 ? 1.0 : t;
    return copysign(t, x);                      /* keeps -0 for -0; NaN stays NaN */
}

LF_MATH_INLINE double lf_sigmoid_f64(double x)
{
    /* e^-x with -x clamped to [-708, 710] and no selects after: below, e^-x is under 3.3e-308
     * and 1 + e^-x rounds to 1 as 1 + 0 does; above 709.78 e^-x is +Inf as it should be */
    double u = -x;
    u = u > lstmfast_sigmoid_clamp_f64[1] ? lstmfast_sigmoid_clamp_f64[1] : u;     /* NaN passes */
    u = u < lstmfast_sigmoid_clamp_f64[0] ? lstmfast_sigmoid_clamp_f64[0] : u;
    return 1.0 / (1.0 + lf_exp_core_f64(u));
}

/* ---------------------------------------------------------------- float */

/* e^x for x in [-86, 89] (or NaN), as lf_exp_core_f64: normal results, +Inf from 88.72... on */
LF_MATH_INLINE float lf_exp_core_f32(float x)
{
    const float shifter = 12582912.0f;         /* 1.5 * 2^23 */
    float t = x * 1.44269504f + shifter;
    float n = t - shifter;
    float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;  /* ln2 = 0.693359375 - 2.12194440e-4 */
    /* 2 e^r, Taylor to degree 7 with doubled coefficients, Estrin's scheme (see lf_exp_core_f64) */
    float r2 = r * r, r4 = r2 * r2;
    float p01 = 2.0f + r * 2.0f, p23 = 1.0f + r * (2.0f / 6.0f);
    float p45 = 2.0f / 24.0f + r * (2.0f / 120.0f), p67 = 2.0f / 720.0f + r * (2.0f / 5040.0f);
    float p = (p01 + r2 * p23) + r4 * (p45 + r2 * p67);
    int32_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (int32_t)((uint32_t)(bits + 126) << 23);
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

LF_MATH_INLINE float lf_exp_f32(float x)
{
    const float hi = 88.72283f, lo = -86.0f;
    float xc = x > hi ? hi : x;
    xc = xc < lo ? lo : xc;
    float result = lf_exp_core_f32(xc);
    result = x < lo ? 0.0f : result;
    result = x > hi ? (float)INFINITY : result;
    return result;
}

/* expm1(u) for 0 <= u <= 20, as lf_expm1_pos_f64 (Taylor degree 8) */
LF_MATH_INLINE float lf_expm1_pos_f32(float u)
{
    const float shifter = 12582912.0f;
    float t = u * 1.44269504f + shifter;
    float n = t - shifter;
    float r = (u - n * 0.693359375f) - n * -2.12194440e-4f;
    float r2 = r * r, r4 = r2 * r2;
    float p12 = 1.0f + r * 0.5f, p34 = 1.0f / 6.0f + r * (1.0f / 24.0f);
    float p56 = 1.0f / 120.0f + r * (1.0f / 720.0f), p78 = 1.0f / 5040.0f + r * (1.0f / 40320.0f);
    float q = r * ((p12 + r2 * p34) + r4 * (p56 + r2 * p78));
    int32_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (int32_t)((uint32_t)(bits + 127) << 23);
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return scale * q + (scale - 1.0f);
}

LF_MATH_INLINE float lf_tanh_f32(float x)
{
    float ax = x < 0 ? -x : x;
    float ac = ax > 10.0f ? 10.0f : ax;          /* tanh(10) rounds to 1 in float */
    float m = lf_expm1_pos_f32(2.0f * ac);
    float t = m / (m + 2.0f);
    t = ax > 10.0f ? 1.0f : t;
    return copysignf(t, x);
}

LF_MATH_INLINE float lf_sigmoid_f32(float x)
{
    /* as lf_sigmoid_f64: e^-86 is 4.5e-38 (1 + it rounds to 1), e^-x is +Inf past 88.72 */
    float u = -x;
    u = u > lstmfast_sigmoid_clamp_f32[1] ? lstmfast_sigmoid_clamp_f32[1] : u;
    u = u < lstmfast_sigmoid_clamp_f32[0] ? lstmfast_sigmoid_clamp_f32[0] : u;
    return 1.0f / (1.0f + lf_exp_core_f32(u));
}

/* ---------------------------------------------------------------- array functions + dispatch */

#define LF_DEFINE_ARRAY(NAME, T, SCALAR)                                                     \
    static void NAME##_portable(const T* x, T* y, ptrdiff_t n)                               \
    {                                                                                         \
        for (ptrdiff_t i = 0; i < n; i++) y[i] = SCALAR(x[i]);                                \
    }                                                                                         \
    __attribute__((target("avx2,fma"))) static void NAME##_avx2(const T* x, T* y, ptrdiff_t n)\
    {                                                                                         \
        for (ptrdiff_t i = 0; i < n; i++) y[i] = SCALAR(x[i]);                                \
    }

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define LF_HAVE_DISPATCH 1
LF_DEFINE_ARRAY(lf_tanh_array_f64, double, lf_tanh_f64)
LF_DEFINE_ARRAY(lf_sigmoid_array_f64, double, lf_sigmoid_f64)
LF_DEFINE_ARRAY(lf_exp_array_f64, double, lf_exp_f64)
LF_DEFINE_ARRAY(lf_tanh_array_f32, float, lf_tanh_f32)
LF_DEFINE_ARRAY(lf_sigmoid_array_f32, float, lf_sigmoid_f32)
LF_DEFINE_ARRAY(lf_exp_array_f32, float, lf_exp_f32)
#else
#define LF_HAVE_DISPATCH 0
#define LF_DEFINE_PORTABLE(NAME, T, SCALAR)                                                  \
    static void NAME##_portable(const T* x, T* y, ptrdiff_t n)                               \
    {                                                                                         \
        for (ptrdiff_t i = 0; i < n; i++) y[i] = SCALAR(x[i]);                                \
    }
LF_DEFINE_PORTABLE(lf_tanh_array_f64, double, lf_tanh_f64)
LF_DEFINE_PORTABLE(lf_sigmoid_array_f64, double, lf_sigmoid_f64)
LF_DEFINE_PORTABLE(lf_exp_array_f64, double, lf_exp_f64)
LF_DEFINE_PORTABLE(lf_tanh_array_f32, float, lf_tanh_f32)
LF_DEFINE_PORTABLE(lf_sigmoid_array_f32, float, lf_sigmoid_f32)
LF_DEFINE_PORTABLE(lf_exp_array_f32, float, lf_exp_f32)
#endif

typedef void (*lf_array_f64)(const double*, double*, ptrdiff_t);
typedef void (*lf_array_f32)(const float*, float*, ptrdiff_t);

/* The chosen variants; written once by lf_select_variant (at module import), read-only after. */
static lf_array_f64 lf_tanh_array_f64 = lf_tanh_array_f64_portable;
static lf_array_f64 lf_sigmoid_array_f64 = lf_sigmoid_array_f64_portable;
static lf_array_f64 lf_exp_array_f64 = lf_exp_array_f64_portable;
static lf_array_f32 lf_tanh_array_f32 = lf_tanh_array_f32_portable;
static lf_array_f32 lf_sigmoid_array_f32 = lf_sigmoid_array_f32_portable;
static lf_array_f32 lf_exp_array_f32 = lf_exp_array_f32_portable;


/* ---------------------------------------------------------------- recurrent GEMM, packed weights
 *
 * C[M, N] = addend + A[M, K] B[K, N] + 1 bias^T, column-major (addend: NULL for none, C itself
 * to accumulate, or another matrix with its own leading dimension; bias [N] or NULL), for the
 * per-step products (M = minibatch): the recurrent one, onto the step's input projection read
 * from the chunk's projection buffer (no copy of it into C first), and the input one when it is
 * done per step (then with the bias, so that no pass over C adds it):
 * B (the recurrent weights) is packed once per pass into panels of LF_NR columns, so that each step
 * streams it without BLAS re-packing it (for h = 512 that re-packing alone moved 4 MB per step).
 * A is read in place (rows contiguous) or first copied into row blocks (a_pack, see
 * LF_DEFINE_GEMM_PACKED). Micro-kernel: 16 (float) / 8 (double) rows x 6 columns in 12 AVX2
 * accumulators, fused multiply-add; partial row blocks use masked loads and a scalar store loop.
 */
#define LF_NR 6

/* Pack B (element (k, n) at B[k * sk + n * sn]) into panels: panel p, element (k, j) at
 * Bp[p * K * LF_NR + k * LF_NR + j]; columns past N are zero. */
#define LF_DEFINE_PACK(NAME, T)                                                                  \
    static void NAME(const T* B, ptrdiff_t sk, ptrdiff_t sn, ptrdiff_t K, ptrdiff_t N, T* Bp)    \
    {                                                                                             \
        for (ptrdiff_t n0 = 0; n0 < N; n0 += LF_NR) {                                             \
            T* panel = Bp + (n0 / LF_NR) * K * LF_NR;                                             \
            for (ptrdiff_t k = 0; k < K; k++)                                                     \
                for (ptrdiff_t j = 0; j < LF_NR; j++)                                             \
                    panel[k * LF_NR + j] = n0 + j < N ? B[k * sk + (n0 + j) * sn] : (T)0;         \
        }                                                                                         \
    }
LF_DEFINE_PACK(lf_pack_b_f32, float)
LF_DEFINE_PACK(lf_pack_b_f64, double)

/* Few rows (minibatch 1-3, the streaming and tiny-batch case): the 16-row micro-kernel would
 * compute mostly masked-out rows. B is then packed as rows of N padded to 8 floats (Bp[k * Np + n],
 * Np = N rounded up to 8; columns past N are zero) and each row of C is a vector-times-matrix
 * product along N. */
#define LF_SMALL_M 4
#define LF_ROW_PAD 8

#define LF_DEFINE_PACK_ROWS(NAME, T)                                                             \
    static void NAME(const T* B, ptrdiff_t sk, ptrdiff_t sn, ptrdiff_t K, ptrdiff_t N, T* Bp)    \
    {                                                                                             \
        ptrdiff_t Np = ((N + LF_ROW_PAD - 1) / LF_ROW_PAD) * LF_ROW_PAD;                          \
        for (ptrdiff_t k = 0; k < K; k++)                                                         \
            for (ptrdiff_t n = 0; n < Np; n++)                                                    \
                Bp[k * Np + n] = n < N ? B[k * sk + n * sn] : (T)0;                               \
    }
LF_DEFINE_PACK_ROWS(lf_pack_rows_f32_generic, float)
LF_DEFINE_PACK_ROWS(lf_pack_rows_f64_generic, double)

#if LF_HAVE_DISPATCH
#include <immintrin.h>

/* Row packing of a column-major B (sk 1: the forward's W and RW) is a transpose, done here in
 * BW x BW blocks through AVX registers (BLOCK(src, sn, row, Np): BW values down each of BW
 * columns sn apart from src, to BW rows of Bp Np apart from row); the rest (a last partial block
 * of k or of columns, the zero padding) as LF_DEFINE_PACK_ROWS. Element by element the reads jumped sn
 * apart: packing W and RW was 7.4% of the instructions of a (20, 1, 32, 32) float32 training
 * step (callgrind). */
#define LF_DEFINE_PACK_ROWS_AVX2(NAME, T, BW, BLOCK)                                              \
    __attribute__((target("avx2,fma")))                                                          \
    static void NAME(const T* B, ptrdiff_t sn, ptrdiff_t K, ptrdiff_t N, T* Bp)                  \
    {                                                                                             \
        ptrdiff_t Np = ((N + LF_ROW_PAD - 1) / LF_ROW_PAD) * LF_ROW_PAD;                          \
        ptrdiff_t Nb = N - N % BW, Kb = K - K % BW;                                               \
        for (ptrdiff_t n0 = 0; n0 < Nb; n0 += BW) {                                               \
            const T* col = B + n0 * sn;                                                           \
            for (ptrdiff_t k0 = 0; k0 < Kb; k0 += BW)                                             \
                BLOCK(col + k0, sn, Bp + k0 * Np + n0, Np);                                       \
            for (ptrdiff_t k = Kb; k < K; k++)                                                    \
                for (ptrdiff_t j = 0; j < BW; j++)                                                \
                    Bp[k * Np + n0 + j] = col[k + j * sn];                                        \
        }                                                                                         \
        for (ptrdiff_t k = 0; k < K; k++)                                                         \
            for (ptrdiff_t n = Nb; n < Np; n++)                                                   \
                Bp[k * Np + n] = n < N ? B[k + n * sn] : (T)0;                                    \
    }

/* 8 x 8 floats: pairs of columns interleaved, then quads, then the 128-bit halves exchanged */
#define LF_TRANSPOSE_8X8_F32(src, sn, row, Np)                                                    \
    {                                                                                             \
        __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps((src) + (sn));                     \
        __m256 r2 = _mm256_loadu_ps((src) + 2 * (sn)), r3 = _mm256_loadu_ps((src) + 3 * (sn));    \
        __m256 r4 = _mm256_loadu_ps((src) + 4 * (sn)), r5 = _mm256_loadu_ps((src) + 5 * (sn));    \
        __m256 r6 = _mm256_loadu_ps((src) + 6 * (sn)), r7 = _mm256_loadu_ps((src) + 7 * (sn));    \
        __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);                  \
        __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);                  \
        __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);                  \
        __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);                  \
        __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));                           \
        __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));                           \
        __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));                           \
        __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));                           \
        __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));                           \
        __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));                           \
        __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));                           \
        __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));                           \
        _mm256_storeu_ps(row, _mm256_permute2f128_ps(s0, s4, 0x20));                              \
        _mm256_storeu_ps((row) + (Np), _mm256_permute2f128_ps(s1, s5, 0x20));                     \
        _mm256_storeu_ps((row) + 2 * (Np), _mm256_permute2f128_ps(s2, s6, 0x20));                 \
        _mm256_storeu_ps((row) + 3 * (Np), _mm256_permute2f128_ps(s3, s7, 0x20));                 \
        _mm256_storeu_ps((row) + 4 * (Np), _mm256_permute2f128_ps(s0, s4, 0x31));                 \
        _mm256_storeu_ps((row) + 5 * (Np), _mm256_permute2f128_ps(s1, s5, 0x31));                 \
        _mm256_storeu_ps((row) + 6 * (Np), _mm256_permute2f128_ps(s2, s6, 0x31));                 \
        _mm256_storeu_ps((row) + 7 * (Np), _mm256_permute2f128_ps(s3, s7, 0x31));                 \
    }

/* 4 x 4 doubles: pairs of columns interleaved, then the 128-bit halves exchanged */
#define LF_TRANSPOSE_4X4_F64(src, sn, row, Np)                                                    \
    {                                                                                             \
        __m256d r0 = _mm256_loadu_pd(src), r1 = _mm256_loadu_pd((src) + (sn));                    \
        __m256d r2 = _mm256_loadu_pd((src) + 2 * (sn)), r3 = _mm256_loadu_pd((src) + 3 * (sn));   \
        __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);                 \
        __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);                 \
        _mm256_storeu_pd(row, _mm256_permute2f128_pd(t0, t2, 0x20));                              \
        _mm256_storeu_pd((row) + (Np), _mm256_permute2f128_pd(t1, t3, 0x20));                     \
        _mm256_storeu_pd((row) + 2 * (Np), _mm256_permute2f128_pd(t0, t2, 0x31));                 \
        _mm256_storeu_pd((row) + 3 * (Np), _mm256_permute2f128_pd(t1, t3, 0x31));                 \
    }

LF_DEFINE_PACK_ROWS_AVX2(lf_pack_rows_f32_avx2, float, 8, LF_TRANSPOSE_8X8_F32)
LF_DEFINE_PACK_ROWS_AVX2(lf_pack_rows_f64_avx2, double, 4, LF_TRANSPOSE_4X4_F64)

/* C[M, N] = addend + A[M, K] B (+ bias) for row-packed B (see LF_DEFINE_PACK_ROWS), one row of C at a time, 32
 * (float) / 16 (double) columns per pass over K. */
#define LF_DEFINE_GEMM_ROWS(NAME, T, VEC, W, ZERO, BCAST, LOAD, FMADD, STORE)                     \
    __attribute__((target("avx2,fma")))                                                          \
    static void NAME(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const T* A, ptrdiff_t lda,           \
                     const T* Bp, T* C, ptrdiff_t ldc, const T* addend, ptrdiff_t ld_addend,    \
                     const T* bias)                                                               \
    {                                                                                             \
        ptrdiff_t Np = ((N + LF_ROW_PAD - 1) / LF_ROW_PAD) * LF_ROW_PAD;                          \
        T tmp[4 * W];                                                                             \
        for (ptrdiff_t m = 0; m < M; m++) {                                                       \
            for (ptrdiff_t n0 = 0; n0 < Np; n0 += 4 * W) {                                        \
                VEC acc0 = ZERO(), acc1 = ZERO(), acc2 = ZERO(), acc3 = ZERO();                   \
                ptrdiff_t width = Np - n0 < 4 * W ? Np - n0 : 4 * W;                              \
                if (bias != NULL) {                                                               \
                    /* through tmp: bias has N elements, the accumulators cover up to Np */        \
                    for (ptrdiff_t j = 0; j < 4 * W; j++)                                         \
                        tmp[j] = n0 + j < N ? bias[n0 + j] : (T)0;                                \
                    acc0 = LOAD(tmp); acc1 = LOAD(tmp + W);                                       \
                    acc2 = LOAD(tmp + 2 * W); acc3 = LOAD(tmp + 3 * W);                           \
                }                                                                                 \
                const T* b = Bp + n0;                                                             \
                if (width == 4 * W) {                                                             \
                    for (ptrdiff_t k = 0; k < K; k++) {                                           \
                        VEC a = BCAST(A + m + k * lda);                                           \
                        const T* row = b + k * Np;                                                \
                        acc0 = FMADD(a, LOAD(row), acc0);                                         \
                        acc1 = FMADD(a, LOAD(row + W), acc1);                                     \
                        acc2 = FMADD(a, LOAD(row + 2 * W), acc2);                                 \
                        acc3 = FMADD(a, LOAD(row + 3 * W), acc3);                                 \
                    }                                                                             \
                } else {                                                                          \
                    /* the last 8 (float) / 4 (double)-column groups: Np is a multiple of 8 */    \
                    for (ptrdiff_t k = 0; k < K; k++) {                                           \
                        VEC a = BCAST(A + m + k * lda);                                           \
                        const T* row = b + k * Np;                                                \
                        acc0 = FMADD(a, LOAD(row), acc0);                                         \
                        if (width > W) acc1 = FMADD(a, LOAD(row + W), acc1);                      \
                        if (width > 2 * W) acc2 = FMADD(a, LOAD(row + 2 * W), acc2);              \
                    }                                                                             \
                }                                                                                 \
                STORE(tmp, acc0); STORE(tmp + W, acc1); STORE(tmp + 2 * W, acc2);                 \
                STORE(tmp + 3 * W, acc3);                                                         \
                ptrdiff_t ncols = N - n0 < 4 * W ? N - n0 : 4 * W;                                \
                for (ptrdiff_t j = 0; j < ncols; j++)                                             \
                    C[m + (n0 + j) * ldc] = addend != NULL                                    \
                        ? addend[m + (n0 + j) * ld_addend] + tmp[j] : tmp[j];                     \
            }                                                                                     \
        }                                                                                         \
    }
LF_DEFINE_GEMM_ROWS(lf_gemm_rows_f32_avx2, float, __m256, 8, _mm256_setzero_ps,
                    _mm256_broadcast_ss, _mm256_loadu_ps, _mm256_fmadd_ps, _mm256_storeu_ps)
LF_DEFINE_GEMM_ROWS(lf_gemm_rows_f64_avx2, double, __m256d, 4, _mm256_setzero_pd,
                    _mm256_broadcast_sd, _mm256_loadu_pd, _mm256_fmadd_pd, _mm256_storeu_pd)

#define LF_FMA6(TYPE, BCAST, FMADD, a0, a1, bp)                                                  \
    { TYPE b_;                                                                                    \
      b_ = BCAST((bp) + 0); c00 = FMADD(a0, b_, c00); c01 = FMADD(a1, b_, c01);                   \
      b_ = BCAST((bp) + 1); c10 = FMADD(a0, b_, c10); c11 = FMADD(a1, b_, c11);                   \
      b_ = BCAST((bp) + 2); c20 = FMADD(a0, b_, c20); c21 = FMADD(a1, b_, c21);                   \
      b_ = BCAST((bp) + 3); c30 = FMADD(a0, b_, c30); c31 = FMADD(a1, b_, c31);                   \
      b_ = BCAST((bp) + 4); c40 = FMADD(a0, b_, c40); c41 = FMADD(a1, b_, c41);                   \
      b_ = BCAST((bp) + 5); c50 = FMADD(a0, b_, c50); c51 = FMADD(a1, b_, c51); }

/* A's rows m0 .. m0+16-1 start at A + (m0 / 16) * a_block, element (r, k) of them at r + k * lda:
 * a_block 16 for column-major A, 16 * K with lda 16 for A packed by LF_DEFINE_GEMM_PACKED */
__attribute__((target("avx2,fma")))
static void lf_gemm_panels_f32_avx2(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const float* A,
                                    ptrdiff_t lda, ptrdiff_t a_block, const float* Bp,
                                    float* C, ptrdiff_t ldc,
                                    const float* addend, ptrdiff_t ld_addend, const float* bias)
{
    for (ptrdiff_t n0 = 0; n0 < N; n0 += LF_NR) {
        const float* panel = Bp + (n0 / LF_NR) * K * LF_NR;
        ptrdiff_t ncols = N - n0 < LF_NR ? N - n0 : LF_NR;
        for (ptrdiff_t m0 = 0; m0 < M; m0 += 16) {
            ptrdiff_t rows = M - m0 < 16 ? M - m0 : 16;
            __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
            __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
            if (bias != NULL) {
                float b[LF_NR] = {0};
                for (ptrdiff_t j = 0; j < ncols; j++) b[j] = bias[n0 + j];
                c00 = c01 = _mm256_set1_ps(b[0]); c10 = c11 = _mm256_set1_ps(b[1]);
                c20 = c21 = _mm256_set1_ps(b[2]); c30 = c31 = _mm256_set1_ps(b[3]);
                c40 = c41 = _mm256_set1_ps(b[4]); c50 = c51 = _mm256_set1_ps(b[5]);
            }
            const float* a = A + (m0 / 16) * a_block;
            if (addend != NULL && addend != C)
                /* a cold source (the step's input projection): start its tile's lines now */
                for (ptrdiff_t j = 0; j < ncols; j++) {
                    const float* column = addend + m0 + (n0 + j) * ld_addend;
                    _mm_prefetch((const char*)column, _MM_HINT_T0);
                    _mm_prefetch((const char*)(column + rows - 1), _MM_HINT_T0);
                }
            if (rows == 16) {
                for (ptrdiff_t k = 0; k < K; k++) {
                    __m256 a0 = _mm256_loadu_ps(a + k * lda), a1 = _mm256_loadu_ps(a + k * lda + 8);
                    LF_FMA6(__m256, _mm256_broadcast_ss, _mm256_fmadd_ps, a0, a1, panel + k * LF_NR)
                }
            } else {
                __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                __m256i mask0 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)rows), lane);
                __m256i mask1 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)rows - 8), lane);
                for (ptrdiff_t k = 0; k < K; k++) {
                    __m256 a0 = _mm256_maskload_ps(a + k * lda, mask0);
                    __m256 a1 = _mm256_maskload_ps(a + k * lda + 8, mask1);
                    LF_FMA6(__m256, _mm256_broadcast_ss, _mm256_fmadd_ps, a0, a1, panel + k * LF_NR)
                }
            }
            __m256 acc[LF_NR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
            for (ptrdiff_t j = 0; j < ncols; j++) {
                float* c = C + m0 + (n0 + j) * ldc;
                const float* add = addend != NULL ? addend + m0 + (n0 + j) * ld_addend : NULL;
                if (rows == 16 && add != NULL) {
                    _mm256_storeu_ps(c, _mm256_add_ps(_mm256_loadu_ps(add), acc[j][0]));
                    _mm256_storeu_ps(c + 8, _mm256_add_ps(_mm256_loadu_ps(add + 8), acc[j][1]));
                } else if (rows == 16) {
                    _mm256_storeu_ps(c, acc[j][0]);
                    _mm256_storeu_ps(c + 8, acc[j][1]);
                } else {
                    float tmp[16];
                    _mm256_storeu_ps(tmp, acc[j][0]);
                    _mm256_storeu_ps(tmp + 8, acc[j][1]);
                    for (ptrdiff_t r = 0; r < rows; r++) c[r] = add != NULL ? add[r] + tmp[r] : tmp[r];
                }
            }
        }
    }
}

/* A's rows m0 .. m0+8-1 start at A + (m0 / 8) * a_block, element (r, k) of them at r + k * lda:
 * a_block 8 for column-major A, 8 * K with lda 8 for A packed by LF_DEFINE_GEMM_PACKED */
__attribute__((target("avx2,fma")))
static void lf_gemm_panels_f64_avx2(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const double* A,
                                    ptrdiff_t lda, ptrdiff_t a_block, const double* Bp,
                                    double* C, ptrdiff_t ldc,
                                    const double* addend, ptrdiff_t ld_addend, const double* bias)
{
    for (ptrdiff_t n0 = 0; n0 < N; n0 += LF_NR) {
        const double* panel = Bp + (n0 / LF_NR) * K * LF_NR;
        ptrdiff_t ncols = N - n0 < LF_NR ? N - n0 : LF_NR;
        for (ptrdiff_t m0 = 0; m0 < M; m0 += 8) {
            ptrdiff_t rows = M - m0 < 8 ? M - m0 : 8;
            __m256d c00 = _mm256_setzero_pd(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
            __m256d c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
            if (bias != NULL) {
                double b[LF_NR] = {0};
                for (ptrdiff_t j = 0; j < ncols; j++) b[j] = bias[n0 + j];
                c00 = c01 = _mm256_set1_pd(b[0]); c10 = c11 = _mm256_set1_pd(b[1]);
                c20 = c21 = _mm256_set1_pd(b[2]); c30 = c31 = _mm256_set1_pd(b[3]);
                c40 = c41 = _mm256_set1_pd(b[4]); c50 = c51 = _mm256_set1_pd(b[5]);
            }
            const double* a = A + (m0 / 8) * a_block;
            if (addend != NULL && addend != C)
                /* a cold source (the step's input projection): start its tile's lines now */
                for (ptrdiff_t j = 0; j < ncols; j++) {
                    const double* column = addend + m0 + (n0 + j) * ld_addend;
                    _mm_prefetch((const char*)column, _MM_HINT_T0);
                    _mm_prefetch((const char*)(column + rows - 1), _MM_HINT_T0);
                }
            if (rows == 8) {
                for (ptrdiff_t k = 0; k < K; k++) {
                    __m256d a0 = _mm256_loadu_pd(a + k * lda), a1 = _mm256_loadu_pd(a + k * lda + 4);
                    LF_FMA6(__m256d, _mm256_broadcast_sd, _mm256_fmadd_pd, a0, a1, panel + k * LF_NR)
                }
            } else {
                __m256i lane = _mm256_setr_epi64x(0, 1, 2, 3);
                __m256i mask0 = _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)rows), lane);
                __m256i mask1 = _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)rows - 4), lane);
                for (ptrdiff_t k = 0; k < K; k++) {
                    __m256d a0 = _mm256_maskload_pd(a + k * lda, mask0);
                    __m256d a1 = _mm256_maskload_pd(a + k * lda + 4, mask1);
                    LF_FMA6(__m256d, _mm256_broadcast_sd, _mm256_fmadd_pd, a0, a1, panel + k * LF_NR)
                }
            }
            __m256d acc[LF_NR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
            for (ptrdiff_t j = 0; j < ncols; j++) {
                double* c = C + m0 + (n0 + j) * ldc;
                const double* add = addend != NULL ? addend + m0 + (n0 + j) * ld_addend : NULL;
                if (rows == 8 && add != NULL) {
                    _mm256_storeu_pd(c, _mm256_add_pd(_mm256_loadu_pd(add), acc[j][0]));
                    _mm256_storeu_pd(c + 4, _mm256_add_pd(_mm256_loadu_pd(add + 4), acc[j][1]));
                } else if (rows == 8) {
                    _mm256_storeu_pd(c, acc[j][0]);
                    _mm256_storeu_pd(c + 4, acc[j][1]);
                } else {
                    double tmp[8];
                    _mm256_storeu_pd(tmp, acc[j][0]);
                    _mm256_storeu_pd(tmp + 4, acc[j][1]);
                    for (ptrdiff_t r = 0; r < rows; r++) c[r] = add != NULL ? add[r] + tmp[r] : tmp[r];
                }
            }
        }
    }
}

/* Every 6-column panel of B is swept against all M rows of A, a column of 16 floats / 8 doubles
 * per k. In place, those columns are lda apart: at minibatch 128 (float) or 64 (double) that is
 * 512 bytes, so one micro-kernel's column of A falls into 8 of L1's 64 sets and evicts the B
 * panel it works on. With a_pack (ceil(M / 16) * 16 * K elements, kernels.pyx's _a_pack_len;
 * NULL: A in place) A is first copied into blocks of 16 / 8 rows, each one run of K columns
 * (a_packed != 0: a_pack holds this A packed already, by the previous call on other columns);
 * measured at 128 x 4096 x 1024 float, one thread: 70 -> 92 GFLOP/s (blocking K instead, with
 * A in place, gave nothing). */
#define LF_DEFINE_GEMM_PACKED(NAME, PANELS, T, MR)                                                \
    __attribute__((target("avx2,fma")))                                                          \
    static void NAME(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const T* A, ptrdiff_t lda,            \
                     const T* Bp, T* C, ptrdiff_t ldc, const T* addend, ptrdiff_t ld_addend,     \
                     const T* bias, T* a_pack, int a_packed)                                      \
    {                                                                                             \
        if (a_pack == NULL) {                                                                     \
            PANELS(M, N, K, A, lda, MR, Bp, C, ldc, addend, ld_addend, bias);                     \
            return;                                                                               \
        }                                                                                         \
        for (ptrdiff_t m0 = 0; m0 < M && !a_packed; m0 += MR) {                                   \
            ptrdiff_t rows = M - m0 < MR ? M - m0 : MR;                                           \
            T* block = a_pack + (m0 / MR) * MR * K;                                               \
            const T* column = A + m0;                                                             \
            for (ptrdiff_t k = 0; k < K; k++, column += lda)                                      \
                for (ptrdiff_t r = 0; r < rows; r++)                                              \
                    block[k * MR + r] = column[r];                                                \
        }                                                                                         \
        PANELS(M, N, K, a_pack, MR, MR * K, Bp, C, ldc, addend, ld_addend, bias);                 \
    }
LF_DEFINE_GEMM_PACKED(lf_gemm_packed_f32_avx2, lf_gemm_panels_f32_avx2, float, 16)
LF_DEFINE_GEMM_PACKED(lf_gemm_packed_f64_avx2, lf_gemm_panels_f64_avx2, double, 8)
#endif

/* 1 when the packed AVX2 recurrent GEMM may be used (set by lf_select_variant). */
static int lf_packed_gemm_available = 0;

/* B packed as rows (LF_DEFINE_PACK_ROWS): a column-major B through the AVX2 transpose when the
 * packed kernels are in use (they need AVX2 too) */
#if LF_HAVE_DISPATCH
#define LF_PACK_ROWS_FAST(AVX2)                                                                   \
    if (sk == 1 && lf_packed_gemm_available) {                                                    \
        AVX2(B, sn, K, N, Bp);                                                                    \
        return;                                                                                   \
    }
#else
#define LF_PACK_ROWS_FAST(AVX2)
#endif
#define LF_DEFINE_PACK_ROWS_CHOICE(NAME, T, AVX2, GENERIC)                                        \
    static void NAME(const T* B, ptrdiff_t sk, ptrdiff_t sn, ptrdiff_t K, ptrdiff_t N, T* Bp)    \
    {                                                                                             \
        LF_PACK_ROWS_FAST(AVX2)                                                                   \
        GENERIC(B, sk, sn, K, N, Bp);                                                             \
    }
LF_DEFINE_PACK_ROWS_CHOICE(lf_pack_rows_f32, float, lf_pack_rows_f32_avx2,
                           lf_pack_rows_f32_generic)
LF_DEFINE_PACK_ROWS_CHOICE(lf_pack_rows_f64, double, lf_pack_rows_f64_avx2,
                           lf_pack_rows_f64_generic)

/* The packed product for M rows: row-packed B when M < LF_SMALL_M, panel-packed otherwise (the
 * caller packs with lf_pack_rows_* or lf_pack_b_* accordingly). */
static inline void lf_gemm_packed_f32(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const float* A,
                                      ptrdiff_t lda, const float* Bp, float* C, ptrdiff_t ldc,
                                      const float* addend, ptrdiff_t ld_addend, const float* bias,
                                      float* a_pack, int a_packed)
{
#if LF_HAVE_DISPATCH
    if (M < LF_SMALL_M)
        lf_gemm_rows_f32_avx2(M, N, K, A, lda, Bp, C, ldc, addend, ld_addend, bias);
    else
        lf_gemm_packed_f32_avx2(M, N, K, A, lda, Bp, C, ldc, addend, ld_addend, bias, a_pack,
                                a_packed);
#else
    (void)M; (void)N; (void)K; (void)A; (void)lda; (void)Bp; (void)C; (void)ldc; (void)addend;
    (void)ld_addend; (void)bias; (void)a_pack; (void)a_packed;
#endif
}

static inline void lf_gemm_packed_f64(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const double* A,
                                      ptrdiff_t lda, const double* Bp, double* C, ptrdiff_t ldc,
                                      const double* addend, ptrdiff_t ld_addend, const double* bias,
                                      double* a_pack, int a_packed)
{
#if LF_HAVE_DISPATCH
    if (M < LF_SMALL_M)
        lf_gemm_rows_f64_avx2(M, N, K, A, lda, Bp, C, ldc, addend, ld_addend, bias);
    else
        lf_gemm_packed_f64_avx2(M, N, K, A, lda, Bp, C, ldc, addend, ld_addend, bias, a_pack,
                                a_packed);
#else
    (void)M; (void)N; (void)K; (void)A; (void)lda; (void)Bp; (void)C; (void)ldc; (void)addend;
    (void)ld_addend; (void)bias; (void)a_pack; (void)a_packed;
#endif
}

/* Choose AVX2+FMA when the CPU has it and allow_avx2 is set; returns 1 if AVX2+FMA is active. */
static int lf_select_variant(int allow_avx2)
{
#if LF_HAVE_DISPATCH
    __builtin_cpu_init();
    if (allow_avx2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        lf_tanh_array_f64 = lf_tanh_array_f64_avx2;
        lf_sigmoid_array_f64 = lf_sigmoid_array_f64_avx2;
        lf_exp_array_f64 = lf_exp_array_f64_avx2;
        lf_tanh_array_f32 = lf_tanh_array_f32_avx2;
        lf_sigmoid_array_f32 = lf_sigmoid_array_f32_avx2;
        lf_exp_array_f32 = lf_exp_array_f32_avx2;
        lf_packed_gemm_available = 1;
        return 1;
    }
#endif
    lf_tanh_array_f64 = lf_tanh_array_f64_portable;
    lf_sigmoid_array_f64 = lf_sigmoid_array_f64_portable;
    lf_exp_array_f64 = lf_exp_array_f64_portable;
    lf_tanh_array_f32 = lf_tanh_array_f32_portable;
    lf_sigmoid_array_f32 = lf_sigmoid_array_f32_portable;
    lf_exp_array_f32 = lf_exp_array_f32_portable;
    lf_packed_gemm_available = 0;
    (void)allow_avx2;
    return 0;
}

/* A flag another thread may set while a pass runs (Ctrl-C from the Python entry): read it anew
 * each time. */
static inline int lf_load_flag(const int* flag)
{
    return *(const volatile int*)flag;
}

#endif /* LSTMFAST_SIMD_H */
