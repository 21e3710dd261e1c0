/*
 * Vectorisable exp / tanh / sigmoid over arrays, for lstmfast's element-wise gate passes.
 *
 * Why: with scalar libm expf/tanhf the element-wise part of an LSTM step costs more than its
 * GEMMs. These are branch-free (selects only), so GCC vectorises the array loops; each array
 * function is compiled once per instruction set (lstmfast_isa.h) from lstmfast_math.inc.h, and
 * the variant is chosen once at run time from the CPU's features (no -march=native in the
 * build). The packed per-step matrix products (lstmfast_gemm.inc.h) are chosen with them.
 *
 * Accuracy (measured by tests/core/test_simd_math.py against NumPy, all finite inputs, on every
 * instruction set):
 *   exp:  Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, Taylor polynomial of e^r
 *         (degree 12 in double: truncation < 2e-16 relative; degree 7 in float: < 1e-8),
 *         evaluated in Estrin's scheme (short dependency chains);
 *   tanh: sign(x) * m / (m + 2) with m = expm1(2|x|) = 2^n expm1(r) + (2^n - 1), the same
 *         reduction with a Taylor polynomial of expm1(r): n = 0 for 2|x| < ln2/2, so no
 *         cancellation near 0; 1 for |x| past where tanh rounds to 1. (One polynomial per
 *         element: the earlier form, a series below ln2/2 and e^u - 1 above, evaluated both
 *         and cost twice as much: 3.5 -> 1.8 ns per double, 1.19 -> 0.80 ns per float.)
 *   Measured worst errors (tests/core/test_simd_math.py grid): float tanh 2.1, sigmoid 1.8, exp 1.4
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

#include "lstmfast_isa.h"

/* Always inlined: the loops that call them vectorise only with their bodies in place (with many
 * call sites, as lstmfast_cells.h has, GCC's inliner otherwise leaves scalar calls). */
#if defined(__GNUC__)
#define LF_ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define LF_ALWAYS_INLINE static inline
#endif
#define LF_MATH_INLINE LF_ALWAYS_INLINE

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

/* ---------------------------------------------------------------- instantiation of the templates
 *
 * For each element type (LF_T, LF_SFX, LF_F32) and instruction set (LF_ISA, LF_TARGET, LF_LEVEL;
 * see lstmfast_isa.h) the templates define LF_NAME(base) = base_<SFX>_<ISA>; LF_TYPED(base) is
 * base_<SFX>.
 *
 * The packed per-step products (lstmfast_gemm.inc.h): C[M, N] = addend + A[M, K] B[K, N] +
 * 1 bias^T, column-major (addend: NULL for none, C itself to accumulate, or another matrix with
 * its own leading dimension; bias [N] or NULL), for the per-step products (M = minibatch): the
 * recurrent one, onto the step's input projection read from the chunk's projection buffer (no
 * copy of it into C first), and the input one when it is done per step (then with the bias, so
 * that no pass over C adds it). B (the weights) is packed once per pass, so that each step
 * streams it without BLAS re-packing it (for h = 512 that re-packing alone moved 4 MB per step):
 *   - M >= LF_SMALL_M: panels of LF_NR columns (lf_pack_b_*): panel p, element (k, j) at
 *     Bp[p * K * LF_NR + k * LF_NR + j]; columns past N are zero;
 *   - M < LF_SMALL_M (minibatch 1-3, the streaming and tiny-batch case, where a tile of 16 rows
 *     would compute mostly masked-out rows): rows of N padded to LF_ROW_PAD (lf_pack_rows_*):
 *     Bp[k * Np + n], Np = N rounded up to LF_ROW_PAD; columns past N are zero; each row of C is
 *     then a vector-times-matrix product along N.
 * They exist for the vector instruction sets only: on the baseline the passes call BLAS
 * (lf_packed_gemm_available 0). */
#define LF_NR 6
#define LF_SMALL_M 4
#define LF_ROW_PAD 8

#define LF_CAT2_(a, b) a##_##b
#define LF_CAT2(a, b) LF_CAT2_(a, b)
#define LF_TYPED(base) LF_CAT2(base, LF_SFX)
#define LF_VARIANT(base, isa) LF_CAT2(LF_TYPED(base), isa)
#define LF_NAME(base) LF_VARIANT(base, LF_ISA)

/* 1 when the packed recurrent GEMM may be used, and the level of the variants in use (set by
 * lf_select_simd). */
static int lf_packed_gemm_available = 0;
static int lf_simd_level = LF_ISA_BASELINE;

#define LF_T float
#define LF_SFX f32
#define LF_F32 1
#include "lstmfast_simd_types.inc.h"
#undef LF_T
#undef LF_SFX
#undef LF_F32

#define LF_T double
#define LF_SFX f64
#define LF_F32 0
#include "lstmfast_simd_types.inc.h"
#undef LF_T
#undef LF_SFX
#undef LF_F32

/* Choose the variants of the vectorised math and of the packed products for `level` (an
 * LF_ISA_* no higher than lf_cpu_isa()); returns the level chosen (the highest one compiled in
 * at or below `level`). */
static int lf_select_simd(int level)
{
#if LF_HAVE_DISPATCH
    int chosen = level > LF_ISA_AVX512 ? LF_ISA_AVX512 : level;
#else
    int chosen = LF_ISA_BASELINE;
    (void)level;
#endif
    lf_select_simd_f32(chosen);
    lf_select_simd_f64(chosen);
    lf_packed_gemm_available = chosen > LF_ISA_BASELINE;
    lf_simd_level = chosen;
    return chosen;
}

/* A flag another thread may set while a pass runs (Ctrl-C from the Python entry): read it anew
 * each time. */
static inline int lf_load_flag(const int* flag)
{
    return *(const volatile int*)flag;
}

#endif /* LSTMFAST_SIMD_H */
