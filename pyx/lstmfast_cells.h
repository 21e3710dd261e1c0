/*
 * The element-wise code of one LSTM step for the usual activations (tanh for the block input
 * and the cell, sigmoid for the gates): kernels.pyx's _forward_cells and _backward_cells call
 * these instead of their pass-per-operation loops when the layer uses them.
 *
 * Why: the general path makes about a dozen passes over [mb, h] blocks per step (peepholes, each
 * activation, the cell, the output; backward each derivative and delta), every pass storing its
 * result and the next one loading it again, and Cython's loops compile for baseline x86-64
 * (SSE2). Here the backward computes each element's deltas and cell error in registers in one
 * loop, the forward makes one pass per activation with the arithmetic folded in; GCC vectorises
 * the loops, and each function is compiled twice, for baseline x86-64 and for AVX2+FMA, chosen
 * at run time (lf_cells_select) as in lstmfast_simd.h.
 *
 * The operations and their order are those of the general path, so the two agree to rounding
 * (the AVX2 build may fuse a multiply and an add into one FMA).
 *
 * Layout as kernels.pyx's element-wise code: n values per gate, the gate blocks (i, f, o, g)
 * `stride` apart; peepholes (wFF, wOO, wGG) broadcast to blocks `stride` apart, or NULL.
 */
#ifndef LSTMFAST_CELLS_H
#define LSTMFAST_CELLS_H

#include "lstmfast_simd.h"

#if defined(__GNUC__)
#define LF_ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define LF_ALWAYS_INLINE static inline
#endif

/* Forward. z holds x W + b + h_prev RW on entry; on exit the complete pre-activations (with
 * the peephole terms), a the activations [i, f, o, g] and mca tanh(c) (the backward pass
 * needs them), c_cur and h_cur the step's state. Inference stores them too, into scratch, so
 * that inference and training run the same code: a variant without the stores was compiled
 * apart, GCC fused its multiplies and adds differently, and the two outputs differed in the
 * last bit. One loop per activation: a loop evaluating all five polynomials at once runs out of vector
 * registers (measured 1.5x slower than these passes, which stay in L1/L2 for a step's block).
 * The flags are compile-time constants at each call below, so each combination is its own code. */
#define LF_DEFINE_FORWARD_BODY(NAME, T, SIGMOID, TANH)                                            \
    LF_ALWAYS_INLINE void NAME(ptrdiff_t n, T* restrict zi, T* restrict zf, T* restrict zo,       \
                               T* restrict zg, T* restrict ai, T* restrict af, T* restrict ao,    \
                               T* restrict ag, T* restrict mca, const T* restrict pf,             \
                               const T* restrict po, const T* restrict pg,                        \
                               const T* restrict c_prev, T* restrict h_cur, T* restrict c_cur,    \
                               const int has_peep)                                                \
    {                                                                                             \
        if (has_peep) {                                                                           \
            for (ptrdiff_t i = 0; i < n; i++) {                                                   \
                zf[i] = zf[i] + c_prev[i] * pf[i];                                                \
                zg[i] = zg[i] + c_prev[i] * pg[i];                                                \
            }                                                                                     \
        }                                                                                         \
        for (ptrdiff_t i = 0; i < n; i++) ai[i] = TANH(zi[i]);                                    \
        for (ptrdiff_t i = 0; i < n; i++) af[i] = SIGMOID(zf[i]);                                 \
        for (ptrdiff_t i = 0; i < n; i++) ag[i] = SIGMOID(zg[i]);                                 \
        for (ptrdiff_t i = 0; i < n; i++) {                                                       \
            T cc = af[i] * c_prev[i] + ag[i] * ai[i];                                             \
            c_cur[i] = cc;                                                                        \
            if (has_peep)                                                                         \
                zo[i] = zo[i] + cc * po[i];                                                       \
        }                                                                                         \
        for (ptrdiff_t i = 0; i < n; i++) ao[i] = SIGMOID(zo[i]);                                 \
        for (ptrdiff_t i = 0; i < n; i++) {                                                       \
            T m = TANH(c_cur[i]);                                                                 \
            mca[i] = m;                                                                           \
            h_cur[i] = m * ao[i];                                                                 \
        }                                                                                         \
    }

/* p + k, or NULL for a block that is absent (no arithmetic on a null pointer) */
#define LF_AT(p, k) ((p) != NULL ? (p) + (k) : NULL)

#define LF_FORWARD_CALL(BODY, P)                                                                  \
    BODY(n, z, z + stride, z + 2 * stride, z + 3 * stride, a, a + stride, a + 2 * stride,         \
         a + 3 * stride, mca, peep, LF_AT(peep, stride), LF_AT(peep, 2 * stride), c_prev, h_cur,  \
         c_cur, P)

#define LF_DEFINE_FORWARD(NAME, ATTR, T, BODY)                                                    \
    ATTR static void NAME(ptrdiff_t n, ptrdiff_t stride, T* z, T* a, T* mca, const T* peep,       \
                          const T* c_prev, T* h_cur, T* c_cur)                                    \
    {                                                                                             \
        if (peep != NULL) LF_FORWARD_CALL(BODY, 1);                                               \
        else LF_FORWARD_CALL(BODY, 0);                                                            \
    }

/* Backward, an unmasked step (a step with a mask that is not all ones takes the general path:
 * its cell activation's derivative is taken at the masked cell state). From the forward record
 * a [i, f, o, g] and mca, this step's c_prev, and nabla_out = dL/dh: the deltas [i, f, o, g]
 * (delta) and the cell error. a_next_f (the next processed step's forget activation),
 * delta_next_f / delta_next_g and cell_error_next belong to the next processed step (has_next
 * 0 at the last); cell_error_extra (dL/d last c) is added when has_extra. Masking and the
 * peephole sums stay with the caller. */
#define LF_DEFINE_BACKWARD_BODY(NAME, T)                                                          \
    LF_ALWAYS_INLINE void NAME(ptrdiff_t n, const T* restrict ai, const T* restrict af,           \
                               const T* restrict ao, const T* restrict ag,                        \
                               const T* restrict mca, const T* restrict c_prev,                   \
                               const T* restrict nabla_out, const T* restrict a_next_f,           \
                               const T* restrict delta_next_f, const T* restrict delta_next_g,    \
                               const T* restrict cell_error_next, const T* restrict pf,           \
                               const T* restrict po, const T* restrict pg,                        \
                               const T* restrict cell_error_extra, T* restrict di,                \
                               T* restrict df, T* restrict d_o, T* restrict dg,                   \
                               T* restrict cell_error, const int has_peep, const int has_next,    \
                               const int has_extra)                                               \
    {                                                                                             \
        for (ptrdiff_t i = 0; i < n; i++) {                                                       \
            T oa = ao[i], m = mca[i], nab = nabla_out[i];                                         \
            T grad_o = oa * ((T)1 - oa);                                                          \
            T delta_o = (nab * m) * grad_o;                                                       \
            T ce = ((T)1 - m * m) * (oa * nab);                                                   \
            if (has_peep)                                                                         \
                ce = ce + delta_o * po[i];                                                        \
            if (has_next) {                                                                       \
                if (has_peep)                                                                     \
                    ce = (delta_next_f[i] * pf[i] + delta_next_g[i] * pg[i]) + ce;                \
                ce = ce + a_next_f[i] * cell_error_next[i];                                       \
            }                                                                                     \
            if (has_extra)                                                                        \
                ce = ce + cell_error_extra[i];                                                    \
            T fa = af[i], ga = ag[i], ia = ai[i];                                                 \
            d_o[i] = delta_o;                                                                     \
            cell_error[i] = ce;                                                                   \
            df[i] = ((fa * ((T)1 - fa)) * ce) * c_prev[i];                                        \
            dg[i] = (ga * ((T)1 - ga)) * (ia * ce);                                               \
            di[i] = ((T)1 - ia * ia) * (ga * ce);                                                 \
        }                                                                                         \
    }

#define LF_BACKWARD_CALL(BODY, P, X, E)                                                           \
    BODY(n, a, a + stride, a + 2 * stride, a + 3 * stride, mca, c_prev, nabla_out,                \
         LF_AT(a_next, stride), LF_AT(delta_next, stride), LF_AT(delta_next, 3 * stride),         \
         cell_error_next, peep, LF_AT(peep, stride), LF_AT(peep, 2 * stride), cell_error_extra,   \
         delta, delta + stride, delta + 2 * stride, delta + 3 * stride, cell_error, P, X, E)

#define LF_DEFINE_BACKWARD(NAME, ATTR, T, BODY)                                                   \
    ATTR static void NAME(ptrdiff_t n, ptrdiff_t stride, const T* a, const T* mca,                \
                          const T* c_prev, const T* nabla_out, const T* a_next,                   \
                          const T* delta_next, const T* cell_error_next, const T* peep,           \
                          const T* cell_error_extra, T* delta, T* cell_error)                     \
    {                                                                                             \
        int has_next = delta_next != NULL;                                                        \
        if (peep != NULL) {                                                                       \
            if (has_next) {                                                                       \
                if (cell_error_extra != NULL) LF_BACKWARD_CALL(BODY, 1, 1, 1);                    \
                else LF_BACKWARD_CALL(BODY, 1, 1, 0);                                             \
            } else {                                                                              \
                if (cell_error_extra != NULL) LF_BACKWARD_CALL(BODY, 1, 0, 1);                    \
                else LF_BACKWARD_CALL(BODY, 1, 0, 0);                                             \
            }                                                                                     \
        } else {                                                                                  \
            if (has_next) {                                                                       \
                if (cell_error_extra != NULL) LF_BACKWARD_CALL(BODY, 0, 1, 1);                    \
                else LF_BACKWARD_CALL(BODY, 0, 1, 0);                                             \
            } else {                                                                              \
                if (cell_error_extra != NULL) LF_BACKWARD_CALL(BODY, 0, 0, 1);                    \
                else LF_BACKWARD_CALL(BODY, 0, 0, 0);                                             \
            }                                                                                     \
        }                                                                                         \
    }

LF_DEFINE_FORWARD_BODY(lf_forward_body_f32, float, lf_sigmoid_f32, lf_tanh_f32)
LF_DEFINE_FORWARD_BODY(lf_forward_body_f64, double, lf_sigmoid_f64, lf_tanh_f64)
LF_DEFINE_BACKWARD_BODY(lf_backward_body_f32, float)
LF_DEFINE_BACKWARD_BODY(lf_backward_body_f64, double)

#define LF_PORTABLE_ATTR
LF_DEFINE_FORWARD(lf_forward_cells_f32_portable, LF_PORTABLE_ATTR, float, lf_forward_body_f32)
LF_DEFINE_FORWARD(lf_forward_cells_f64_portable, LF_PORTABLE_ATTR, double, lf_forward_body_f64)
LF_DEFINE_BACKWARD(lf_backward_cells_f32_portable, LF_PORTABLE_ATTR, float, lf_backward_body_f32)
LF_DEFINE_BACKWARD(lf_backward_cells_f64_portable, LF_PORTABLE_ATTR, double, lf_backward_body_f64)
#if LF_HAVE_DISPATCH
#define LF_AVX2_ATTR __attribute__((target("avx2,fma")))
LF_DEFINE_FORWARD(lf_forward_cells_f32_avx2, LF_AVX2_ATTR, float, lf_forward_body_f32)
LF_DEFINE_FORWARD(lf_forward_cells_f64_avx2, LF_AVX2_ATTR, double, lf_forward_body_f64)
LF_DEFINE_BACKWARD(lf_backward_cells_f32_avx2, LF_AVX2_ATTR, float, lf_backward_body_f32)
LF_DEFINE_BACKWARD(lf_backward_cells_f64_avx2, LF_AVX2_ATTR, double, lf_backward_body_f64)
#endif

typedef void (*lf_forward_cells_f32_fn)(ptrdiff_t, ptrdiff_t, float*, float*, float*,
                                        const float*, const float*, float*, float*);
typedef void (*lf_forward_cells_f64_fn)(ptrdiff_t, ptrdiff_t, double*, double*, double*,
                                        const double*, const double*, double*, double*);
typedef void (*lf_backward_cells_f32_fn)(ptrdiff_t, ptrdiff_t, const float*, const float*,
                                         const float*, const float*, const float*, const float*,
                                         const float*, const float*, const float*, float*, float*);
typedef void (*lf_backward_cells_f64_fn)(ptrdiff_t, ptrdiff_t, const double*, const double*,
                                         const double*, const double*, const double*,
                                         const double*, const double*, const double*,
                                         const double*, double*, double*);

/* The chosen variants; written once by lf_cells_select (at module import), read-only after. */
static lf_forward_cells_f32_fn lf_forward_cells_f32 = lf_forward_cells_f32_portable;
static lf_forward_cells_f64_fn lf_forward_cells_f64 = lf_forward_cells_f64_portable;
static lf_backward_cells_f32_fn lf_backward_cells_f32 = lf_backward_cells_f32_portable;
static lf_backward_cells_f64_fn lf_backward_cells_f64 = lf_backward_cells_f64_portable;

/* avx2: whatever lf_select_variant returned (1: the CPU has AVX2+FMA and they are allowed). */
static void lf_cells_select(int avx2)
{
#if LF_HAVE_DISPATCH
    if (avx2) {
        lf_forward_cells_f32 = lf_forward_cells_f32_avx2;
        lf_forward_cells_f64 = lf_forward_cells_f64_avx2;
        lf_backward_cells_f32 = lf_backward_cells_f32_avx2;
        lf_backward_cells_f64 = lf_backward_cells_f64_avx2;
        return;
    }
#endif
    (void)avx2;
    lf_forward_cells_f32 = lf_forward_cells_f32_portable;
    lf_forward_cells_f64 = lf_forward_cells_f64_portable;
    lf_backward_cells_f32 = lf_backward_cells_f32_portable;
    lf_backward_cells_f64 = lf_backward_cells_f64_portable;
}

#endif /* LSTMFAST_CELLS_H */
