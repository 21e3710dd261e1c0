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
 *         (degree 12 in double: truncation < 2e-16 relative; degree 7 in float: < 1e-8);
 *   tanh: sign(x) * m / (m + 2) with m = expm1(2|x|): a Taylor series for 2|x| < ln2/2 (no
 *         cancellation near 0), e^(2|x|) - 1 above, 1 for |x| past where tanh rounds to 1;
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

/* ---------------------------------------------------------------- double */

#define LF_LOG2E 1.4426950408889634074
#define LF_LN2_HI 6.93147180369123816490e-01  /* high bits of ln 2: n * LN2_HI is exact */
#define LF_LN2_LO 1.90821492927058770002e-10

static inline double lf_exp_f64(double x)
{
    const double hi = 709.782712893384, lo = -708.0;
    const double shifter = 6755399441055744.0; /* 1.5 * 2^52: adding it rounds to an integer */
    double xc = x > hi ? hi : x;                /* NaN passes through both clamps */
    xc = xc < lo ? lo : xc;
    double t = xc * LF_LOG2E + shifter;
    double n = t - shifter;
    double r = (xc - n * LF_LN2_HI) - n * LF_LN2_LO;
    /* e^r, Taylor to degree 12 (Horner) */
    double p = 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    /* 2^(n-1) from the integer held in t's low mantissa bits; times 2 below (n may be 1024) */
    int64_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (int64_t)((uint64_t)(bits + 1022) << 52);
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    double result = p * scale * 2.0;
    result = x < lo ? 0.0 : result;
    result = x > hi ? (double)INFINITY : result;
    return result;
}

/* expm1(u) for 0 <= u: Taylor series below ln2/2, e^u - 1 above (cancellation at most ~3.4x) */
static inline double lf_expm1_pos_f64(double u)
{
    double s = 1.0 / 6227020800.0;               /* 1/13! */
    s = s * u + 1.0 / 479001600.0;
    s = s * u + 1.0 / 39916800.0;
    s = s * u + 1.0 / 3628800.0;
    s = s * u + 1.0 / 362880.0;
    s = s * u + 1.0 / 40320.0;
    s = s * u + 1.0 / 5040.0;
    s = s * u + 1.0 / 720.0;
    s = s * u + 1.0 / 120.0;
    s = s * u + 1.0 / 24.0;
    s = s * u + 1.0 / 6.0;
    s = s * u + 0.5;
    s = s * u + 1.0;
    double small = s * u;
    double large = lf_exp_f64(u) - 1.0;
    return u < 0.34657359027997264 ? small : large;
}

static inline double lf_tanh_f64(double x)
{
    double ax = x < 0 ? -x : x;
    double ac = ax > 20.0 ? 20.0 : ax;          /* tanh(20) rounds to 1 in double */
    double m = lf_expm1_pos_f64(2.0 * ac);
    double t = m / (m + 2.0);
    t = ax > 20.0 ? 1.0 : t;
    return x < 0 ? -t : t;
}

static inline double lf_sigmoid_f64(double x)
{
    return 1.0 / (1.0 + lf_exp_f64(-x));
}

/* ---------------------------------------------------------------- float */

static inline float lf_exp_f32(float x)
{
    const float hi = 88.72283f, lo = -86.0f;
    const float shifter = 12582912.0f;         /* 1.5 * 2^23 */
    float xc = x > hi ? hi : x;
    xc = xc < lo ? lo : xc;
    float t = xc * 1.44269504f + shifter;
    float n = t - shifter;
    float r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;  /* ln2 = 0.693359375 - 2.12194440e-4 */
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (int32_t)((uint32_t)(bits + 126) << 23);
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float result = p * scale * 2.0f;
    result = x < lo ? 0.0f : result;
    result = x > hi ? (float)INFINITY : result;
    return result;
}

static inline float lf_expm1_pos_f32(float u)
{
    float s = 1.0f / 40320.0f;
    s = s * u + 1.0f / 5040.0f;
    s = s * u + 1.0f / 720.0f;
    s = s * u + 1.0f / 120.0f;
    s = s * u + 1.0f / 24.0f;
    s = s * u + 1.0f / 6.0f;
    s = s * u + 0.5f;
    s = s * u + 1.0f;
    float small = s * u;
    float large = lf_exp_f32(u) - 1.0f;
    return u < 0.34657359f ? small : large;
}

static inline float lf_tanh_f32(float x)
{
    float ax = x < 0 ? -x : x;
    float ac = ax > 10.0f ? 10.0f : ax;          /* tanh(10) rounds to 1 in float */
    float m = lf_expm1_pos_f32(2.0f * ac);
    float t = m / (m + 2.0f);
    t = ax > 10.0f ? 1.0f : t;
    return x < 0 ? -t : t;
}

static inline float lf_sigmoid_f32(float x)
{
    return 1.0f / (1.0f + lf_exp_f32(-x));
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
        return 1;
    }
#endif
    lf_tanh_array_f64 = lf_tanh_array_f64_portable;
    lf_sigmoid_array_f64 = lf_sigmoid_array_f64_portable;
    lf_exp_array_f64 = lf_exp_array_f64_portable;
    lf_tanh_array_f32 = lf_tanh_array_f32_portable;
    lf_sigmoid_array_f32 = lf_sigmoid_array_f32_portable;
    lf_exp_array_f32 = lf_exp_array_f32_portable;
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
