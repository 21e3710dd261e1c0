/*
 * Template: the array functions of the vectorised exp / tanh / sigmoid for one element type and
 * one instruction set (lstmfast_simd.h includes it once per pair). The loops hold the scalar
 * functions of lstmfast_simd.h inlined, so that GCC vectorises them for the target at hand.
 *
 * Parameters (#defined by the includer, #undefined by lstmfast_simd.h after each inclusion):
 *   LF_T       float or double
 *   LF_SFX     f32 or f64: the suffix of the scalar functions (lf_tanh_f32, ...)
 *   LF_ISA     baseline, avx2 or avx512: the suffix of the functions defined here
 *   LF_TARGET  the function attribute that compiles for that instruction set (empty: baseline)
 * Defines lf_{tanh,sigmoid,exp}_array_<SFX>_<ISA>(const LF_T* x, LF_T* y, ptrdiff_t n):
 * y[i] = f(x[i]).
 */

LF_TARGET static void LF_NAME(lf_tanh_array)(const LF_T* x, LF_T* y, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++) y[i] = LF_TYPED(lf_tanh)(x[i]);
}

LF_TARGET static void LF_NAME(lf_sigmoid_array)(const LF_T* x, LF_T* y, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++) y[i] = LF_TYPED(lf_sigmoid)(x[i]);
}

LF_TARGET static void LF_NAME(lf_exp_array)(const LF_T* x, LF_T* y, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++) y[i] = LF_TYPED(lf_exp)(x[i]);
}
