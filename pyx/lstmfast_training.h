/*
 * The element-wise loops of a training step around the LSTM passes (lstmfast._training_math):
 * the softmax output layer's activations, loss and gradient, and Adam's update, for float and
 * double on every instruction set (lstmfast_training.inc.h), the variants chosen at run time as
 * the vectorised math is (lstmfast_isa.h, lstmfast_simd.h).
 */
#ifndef LSTMFAST_TRAINING_H
#define LSTMFAST_TRAINING_H

#include "lstmfast_simd.h"

/* partial sums per row reduction (one vector of double on AVX-512; lf_sum_parts adds them) */
#define LF_TRAINING_PARTS 8
/* the softmax's rows are taken in blocks of about this many elements (4 KB of float, in L1) */
#define LF_TRAINING_BLOCK 1024

#define LF_T float
#define LF_SFX f32
#define LF_SQRT sqrtf
#include "lstmfast_training_types.inc.h"
#undef LF_T
#undef LF_SFX
#undef LF_SQRT

#define LF_T double
#define LF_SFX f64
#define LF_SQRT sqrt
#include "lstmfast_training_types.inc.h"
#undef LF_T
#undef LF_SFX
#undef LF_SQRT

/* Choose the variants for the CPU's instruction set, lowered by LSTMFAST_ISA (lstmfast_isa.h);
 * returns the LF_ISA_* level in use. */
static int lf_select_training(void)
{
    int level = lf_select_simd(lf_isa_active());
    lf_training_select_f32(level);
    lf_training_select_f64(level);
    return level;
}

#endif /* LSTMFAST_TRAINING_H */
