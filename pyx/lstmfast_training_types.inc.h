/*
 * Template: for one element type (LF_T, LF_SFX, LF_SQRT), the training loops on every
 * instruction set, the variants in use and their choice (see lstmfast_training.h).
 */

#define LF_EACH_ISA_TEMPLATE "lstmfast_training.inc.h"
#include "lstmfast_each_isa.inc.h"
#undef LF_EACH_ISA_TEMPLATE

typedef void (*LF_TYPED(lf_softmax_rows_fn))(ptrdiff_t, ptrdiff_t, const LF_T*, LF_T*);
typedef double (*LF_TYPED(lf_softmax_xent_fn))(ptrdiff_t, ptrdiff_t, const LF_T*, const LF_T*,
                                               const LF_T*, LF_T*);
typedef void (*LF_TYPED(lf_softmax_xent_gradient_fn))(ptrdiff_t, ptrdiff_t, const LF_T*,
                                                      const LF_T*, const LF_T*, LF_T, LF_T*);
typedef void (*LF_TYPED(lf_adam_fn))(ptrdiff_t, const LF_T*, const LF_T*, const LF_T*,
                                     const LF_T*, LF_T, LF_T, LF_T, LF_T, LF_T, LF_T, LF_T*,
                                     LF_T*, LF_T*);

/* The variants in use; written once by lf_select_training (at module import), read-only after. */
static LF_TYPED(lf_softmax_rows_fn) LF_TYPED(lf_softmax_rows) =
    LF_VARIANT(lf_softmax_rows, baseline);
static LF_TYPED(lf_softmax_xent_fn) LF_TYPED(lf_softmax_xent) =
    LF_VARIANT(lf_softmax_xent, baseline);
static LF_TYPED(lf_softmax_xent_gradient_fn) LF_TYPED(lf_softmax_xent_gradient) =
    LF_VARIANT(lf_softmax_xent_gradient, baseline);
static LF_TYPED(lf_adam_fn) LF_TYPED(lf_adam) = LF_VARIANT(lf_adam, baseline);

/* level: what lf_select_simd chose */
static void LF_TYPED(lf_training_select)(int level)
{
    LF_TYPED(lf_softmax_rows) = LF_VARIANT(lf_softmax_rows, baseline);
    LF_TYPED(lf_softmax_xent) = LF_VARIANT(lf_softmax_xent, baseline);
    LF_TYPED(lf_softmax_xent_gradient) = LF_VARIANT(lf_softmax_xent_gradient, baseline);
    LF_TYPED(lf_adam) = LF_VARIANT(lf_adam, baseline);
#if LF_HAVE_DISPATCH
    if (level == LF_ISA_AVX2) {
        LF_TYPED(lf_softmax_rows) = LF_VARIANT(lf_softmax_rows, avx2);
        LF_TYPED(lf_softmax_xent) = LF_VARIANT(lf_softmax_xent, avx2);
        LF_TYPED(lf_softmax_xent_gradient) = LF_VARIANT(lf_softmax_xent_gradient, avx2);
        LF_TYPED(lf_adam) = LF_VARIANT(lf_adam, avx2);
    } else if (level == LF_ISA_AVX512) {
        LF_TYPED(lf_softmax_rows) = LF_VARIANT(lf_softmax_rows, avx512);
        LF_TYPED(lf_softmax_xent) = LF_VARIANT(lf_softmax_xent, avx512);
        LF_TYPED(lf_softmax_xent_gradient) = LF_VARIANT(lf_softmax_xent_gradient, avx512);
        LF_TYPED(lf_adam) = LF_VARIANT(lf_adam, avx512);
    }
#else
    (void)level;
#endif
}
