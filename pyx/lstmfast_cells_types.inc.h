/*
 * Template: for one element type (LF_T, LF_SFX), the fused cells on every instruction set, the
 * variants in use and their choice (see lstmfast_cells.h).
 */

#define LF_EACH_ISA_TEMPLATE "lstmfast_cells.inc.h"
#include "lstmfast_each_isa.inc.h"
#undef LF_EACH_ISA_TEMPLATE

typedef void (*LF_TYPED(lf_forward_cells_fn))(ptrdiff_t, ptrdiff_t, ptrdiff_t, int, int, LF_T*,
                                              LF_T*, LF_T*, const LF_T*, const LF_T*, LF_T*,
                                              LF_T*, const LF_T*);
typedef void (*LF_TYPED(lf_backward_cells_fn))(ptrdiff_t, ptrdiff_t, ptrdiff_t, int, int,
                                               const LF_T*, const LF_T*, const LF_T*,
                                               const LF_T*, const LF_T*, const LF_T*, int,
                                               const LF_T*, const LF_T*, const LF_T*,
                                               const LF_T*, const LF_T*, LF_T*, LF_T*, LF_T*,
                                               LF_T*, LF_T*, LF_T*, const LF_T*);

/* The variants in use; written once by lf_select_isa (at module import), read-only after. */
static LF_TYPED(lf_forward_cells_fn) LF_TYPED(lf_forward_cells) =
    LF_VARIANT(lf_forward_cells, baseline);
static LF_TYPED(lf_backward_cells_fn) LF_TYPED(lf_backward_cells) =
    LF_VARIANT(lf_backward_cells, baseline);

/* level: what lf_select_simd chose */
static void LF_TYPED(lf_cells_select)(int level)
{
    LF_TYPED(lf_forward_cells) = LF_VARIANT(lf_forward_cells, baseline);
    LF_TYPED(lf_backward_cells) = LF_VARIANT(lf_backward_cells, baseline);
#if LF_HAVE_DISPATCH
    if (level == LF_ISA_AVX2) {
        LF_TYPED(lf_forward_cells) = LF_VARIANT(lf_forward_cells, avx2);
        LF_TYPED(lf_backward_cells) = LF_VARIANT(lf_backward_cells, avx2);
    } else if (level == LF_ISA_AVX512) {
        LF_TYPED(lf_forward_cells) = LF_VARIANT(lf_forward_cells, avx512);
        LF_TYPED(lf_backward_cells) = LF_VARIANT(lf_backward_cells, avx512);
    }
#else
    (void)level;
#endif
}
