/*
 * Template: the fused element-wise code of one LSTM step (tanh block input and cell, sigmoid
 * gates) for one element type and one instruction set; lstmfast_cells.h includes it once per
 * pair. Parameters LF_T, LF_SFX, LF_ISA, LF_TARGET as for lstmfast_math.inc.h. Defines
 * lf_forward_cells_<SFX>_<ISA> and lf_backward_cells_<SFX>_<ISA> (see lstmfast_cells.h).
 */

/* Forward. z holds x W + b + h_prev RW on entry; on exit the complete pre-activations (with
 * the peephole terms), a the activations [i, f, o, g] and mca tanh(c) (the backward pass
 * needs them), c_cur and h_cur the step's state. Inference stores them too, into scratch, so
 * that inference and training run the same code: a variant without the stores was compiled
 * apart, GCC fused its multiplies and adds differently, and the two outputs differed in the
 * last bit. One loop per activation: a loop evaluating all five polynomials at once runs out of
 * vector registers (measured 1.5x slower than these passes, which stay in L1/L2 for a step's
 * block). has_peep is a constant at each call below, so each case is its own code. */
LF_TARGET LF_ALWAYS_INLINE void LF_NAME(lf_forward_body)(
    ptrdiff_t n, LF_T* restrict zi, LF_T* restrict zf, LF_T* restrict zo, LF_T* restrict zg,
    LF_T* restrict ai, LF_T* restrict af, LF_T* restrict ao, LF_T* restrict ag,
    LF_T* restrict mca, const LF_T* restrict pf, const LF_T* restrict po,
    const LF_T* restrict pg, const LF_T* restrict c_prev, LF_T* restrict h_cur,
    LF_T* restrict c_cur, const int has_peep)
{
    /* forget and input-gate peepholes on the previous cell state (wFF, wGG): LSTMHelpers
     * 207-208, 226-227 */
    if (has_peep) {
        for (ptrdiff_t i = 0; i < n; i++) {
            zf[i] = zf[i] + c_prev[i] * pf[i];
            zg[i] = zg[i] + c_prev[i] * pg[i];
        }
    }
    for (ptrdiff_t i = 0; i < n; i++) ai[i] = LF_TYPED(lf_tanh)(zi[i]);     /* LSTMHelpers 190-203 */
    for (ptrdiff_t i = 0; i < n; i++) af[i] = LF_TYPED(lf_sigmoid)(zf[i]);  /* 204-222 */
    for (ptrdiff_t i = 0; i < n; i++) ag[i] = LF_TYPED(lf_sigmoid)(zg[i]);  /* 223-240 */
    /* c = fa * c_prev + ga * ia (LSTMHelpers 248-256); the output-gate peephole on the current c
     * (wOO, 259-263) */
    for (ptrdiff_t i = 0; i < n; i++) {
        LF_T cc = af[i] * c_prev[i] + ag[i] * ai[i];
        c_cur[i] = cc;
        if (has_peep)
            zo[i] = zo[i] + cc * po[i];
    }
    for (ptrdiff_t i = 0; i < n; i++) ao[i] = LF_TYPED(lf_sigmoid)(zo[i]);  /* 264-276 */
    /* memCellActivations (282) and h = mca * oa (287-297) */
    for (ptrdiff_t i = 0; i < n; i++) {
        LF_T m = LF_TYPED(lf_tanh)(c_cur[i]);
        mca[i] = m;
        h_cur[i] = m * ao[i];
    }
}

/* p + k, or NULL for a block that is absent (no arithmetic on a null pointer) */
#define LF_AT(p, k) ((p) != NULL ? (p) + (k) : NULL)

LF_TARGET static void LF_NAME(lf_forward_cells)(ptrdiff_t n, ptrdiff_t stride, LF_T* z, LF_T* a,
                                                LF_T* mca, const LF_T* peep, const LF_T* c_prev,
                                                LF_T* h_cur, LF_T* c_cur)
{
#define LF_FORWARD_BODY(HAS_PEEP)                                                               \
    LF_NAME(lf_forward_body)(n, z, z + stride, z + 2 * stride, z + 3 * stride, a, a + stride,  \
                             a + 2 * stride, a + 3 * stride, mca, peep, LF_AT(peep, stride),   \
                             LF_AT(peep, 2 * stride), c_prev, h_cur, c_cur, HAS_PEEP)
    if (peep != NULL) LF_FORWARD_BODY(1);
    else LF_FORWARD_BODY(0);
#undef LF_FORWARD_BODY
}

/* Backward, an unmasked step (a step with a mask that is not all ones takes the general path:
 * its cell activation's derivative is taken at the masked cell state). From the forward record
 * a [i, f, o, g] and mca, this step's c_prev, and nabla_out = dL/dh: the deltas [i, f, o, g]
 * (delta) and the cell error. a_next_f (the next processed step's forget activation),
 * delta_next_f / delta_next_g and cell_error_next belong to the next processed step (has_next
 * 0 at the last); cell_error_extra (dL/d last c) is added when has_extra. Masking and the
 * peephole sums stay with the caller. The flags are constants at each call below. */
LF_TARGET LF_ALWAYS_INLINE void LF_NAME(lf_backward_body)(
    ptrdiff_t n, const LF_T* restrict ai, const LF_T* restrict af, const LF_T* restrict ao,
    const LF_T* restrict ag, const LF_T* restrict mca, const LF_T* restrict c_prev,
    const LF_T* restrict nabla_out, const LF_T* restrict a_next_f,
    const LF_T* restrict delta_next_f, const LF_T* restrict delta_next_g,
    const LF_T* restrict cell_error_next, const LF_T* restrict pf, const LF_T* restrict po,
    const LF_T* restrict pg, const LF_T* restrict cell_error_extra, LF_T* restrict di,
    LF_T* restrict df, LF_T* restrict d_o, LF_T* restrict dg, LF_T* restrict cell_error,
    const int has_peep, const int has_next, const int has_extra)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        /* the output gate's delta: LSTMHelpers 438-447 */
        LF_T oa = ao[i], m = mca[i], nab = nabla_out[i];
        LF_T grad_o = oa * ((LF_T)1 - oa);
        LF_T delta_o = (nab * m) * grad_o;
        /* the cell error (nablaCellState): 451-452, + deltao wOO 454-455, + the next step's
         * wFF / wGG terms 417-424 and fa_next nablaCellStateNext 459-460 */
        LF_T ce = ((LF_T)1 - m * m) * (oa * nab);
        if (has_peep)
            ce = ce + delta_o * po[i];
        if (has_next) {
            if (has_peep)
                ce = (delta_next_f[i] * pf[i] + delta_next_g[i] * pg[i]) + ce;
            ce = ce + a_next_f[i] * cell_error_next[i];
        }
        if (has_extra)
            ce = ce + cell_error_extra[i];
        /* the forget, input-gate and block-input deltas: 466-476, 482-494, 497-501 */
        LF_T fa = af[i], ga = ag[i], ia = ai[i];
        d_o[i] = delta_o;
        cell_error[i] = ce;
        df[i] = ((fa * ((LF_T)1 - fa)) * ce) * c_prev[i];
        dg[i] = (ga * ((LF_T)1 - ga)) * (ia * ce);
        di[i] = ((LF_T)1 - ia * ia) * (ga * ce);
    }
}

LF_TARGET static void LF_NAME(lf_backward_cells)(ptrdiff_t n, ptrdiff_t stride, const LF_T* a,
                                                 const LF_T* mca, const LF_T* c_prev,
                                                 const LF_T* nabla_out, const LF_T* a_next,
                                                 const LF_T* delta_next,
                                                 const LF_T* cell_error_next, const LF_T* peep,
                                                 const LF_T* cell_error_extra, LF_T* delta,
                                                 LF_T* cell_error)
{
#define LF_BACKWARD_BODY(P, X, E)                                                               \
    LF_NAME(lf_backward_body)(n, a, a + stride, a + 2 * stride, a + 3 * stride, mca, c_prev,   \
                              nabla_out, LF_AT(a_next, stride), LF_AT(delta_next, stride),     \
                              LF_AT(delta_next, 3 * stride), cell_error_next, peep,            \
                              LF_AT(peep, stride), LF_AT(peep, 2 * stride), cell_error_extra,  \
                              delta, delta + stride, delta + 2 * stride, delta + 3 * stride,   \
                              cell_error, P, X, E)
    int has_next = delta_next != NULL, has_extra = cell_error_extra != NULL;
    if (peep != NULL) {
        if (has_next) {
            if (has_extra) LF_BACKWARD_BODY(1, 1, 1);
            else LF_BACKWARD_BODY(1, 1, 0);
        } else {
            if (has_extra) LF_BACKWARD_BODY(1, 0, 1);
            else LF_BACKWARD_BODY(1, 0, 0);
        }
    } else {
        if (has_next) {
            if (has_extra) LF_BACKWARD_BODY(0, 1, 1);
            else LF_BACKWARD_BODY(0, 1, 0);
        } else {
            if (has_extra) LF_BACKWARD_BODY(0, 0, 1);
            else LF_BACKWARD_BODY(0, 0, 0);
        }
    }
#undef LF_BACKWARD_BODY
}

#undef LF_AT
