/*
 * The element-wise code of one LSTM step, the seed's gate math (DL4J 0.9.1 LSTMHelpers'
 * activateHelper / backpropGradientHelper), for every activation: lf_forward_cells_<type> and
 * lf_backward_cells_<type>, which the passes (pyx/_forward.pyx, pyx/_backward.pyx) call.
 *
 * Why C: the tanh / sigmoid bodies compute each element's deltas and cell error in registers in
 * one loop (forwards one pass per activation with the arithmetic folded in), where one pass per
 * operation stores every intermediate block and loads it again; GCC vectorises the loops, and
 * each function is compiled once per instruction set from lstmfast_cells.inc.h, chosen at run
 * time (lf_select_isa) as in lstmfast_simd.h. The other activations and masked backward steps
 * share the template, one pass per operation.
 *
 * Layout as the passes' element-wise code: n values per gate, the gate blocks (i, f, o, g)
 * `stride` apart, unit k's values at m + k * mb; peepholes (wFF, wOO, wGG) broadcast to blocks
 * `stride` apart, or NULL.
 */
#ifndef LSTMFAST_CELLS_H
#define LSTMFAST_CELLS_H

#include "lstmfast_simd.h"

/* The activation codes: the values of lstmfast.kernels' ACT_* (lstmfast/kernels.pxd; the module
 * checks at import that they agree). */
#define LF_ACT_TANH 0
#define LF_ACT_SIGMOID 1
#define LF_ACT_HARDSIGMOID 2
#define LF_ACT_SOFTSIGN 3
#define LF_ACT_RELU 4
#define LF_ACT_LEAKYRELU 5
#define LF_ACT_ELU 6
#define LF_ACT_SELU 7
#define LF_ACT_SOFTPLUS 8
#define LF_ACT_IDENTITY 9
#define LF_ACT_HARDTANH 10
#define LF_ACT_CUBE 11
#define LF_ACT_RECTIFIEDTANH 12
#define LF_ACT_RATIONALTANH 13
#define LF_ACT_COUNT 14

/* DL4J's constants (ActivationLReLU's default alpha, ActivationSELU, ActivationRationalTanh) */
#define LF_LEAKYRELU_ALPHA 0.01
#define LF_SELU_ALPHA 1.6732632423543772848170429916717
#define LF_SELU_LAMBDA 1.0507009873554804934193349852946
#define LF_RATIONALTANH_SCALE 1.7159
#define LF_RATIONALTANH_A 1.41645

/* per type: LF_T, LF_SFX and libm's functions of that type */
#define LF_T float
#define LF_SFX f32
#define LF_EXP expf
#define LF_EXPM1 expm1f
#define LF_LOG1P log1pf
#define LF_FABS fabsf
#include "lstmfast_cells_types.inc.h"
#undef LF_T
#undef LF_SFX
#undef LF_EXP
#undef LF_EXPM1
#undef LF_LOG1P
#undef LF_FABS

#define LF_T double
#define LF_SFX f64
#define LF_EXP exp
#define LF_EXPM1 expm1
#define LF_LOG1P log1p
#define LF_FABS fabs
#include "lstmfast_cells_types.inc.h"
#undef LF_T
#undef LF_SFX
#undef LF_EXP
#undef LF_EXPM1
#undef LF_LOG1P
#undef LF_FABS

/* Choose every variant (vectorised math, packed products, cells) for the CPU's instruction set,
 * lowered by LSTMFAST_ISA (lstmfast_isa.h); returns the LF_ISA_* level in use. Each compiled
 * module holds its own copy of the variants and calls this at import. */
static int lf_select_isa(void)
{
    int level = lf_select_simd(lf_isa_active());
    lf_cells_select_f32(level);
    lf_cells_select_f64(level);
    return level;
}

#endif /* LSTMFAST_CELLS_H */
