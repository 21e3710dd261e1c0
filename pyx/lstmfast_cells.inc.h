/*
 * Template: the element-wise code of one LSTM step, every activation, for one element type and
 * one instruction set; lstmfast_cells.h includes it once per pair. Parameters LF_T, LF_SFX,
 * LF_ISA, LF_TARGET as for lstmfast_math.inc.h, and LF_EXP, LF_EXPM1, LF_LOG1P, LF_FABS (libm
 * of LF_T). Defines lf_forward_cells_<SFX>_<ISA> and lf_backward_cells_<SFX>_<ISA> (at the end):
 * the fused tanh / sigmoid bodies first, then the general passes. "LSTMHelpers N-M" cites the
 * lines of deeplearning4j-nn/.../layers/recurrent/LSTMHelpers.java (0.9.1) a block ports.
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

/* Backward, an unmasked step (a step with a mask that is not all ones takes the general passes:
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

/* ---- Every activation: the cells of one step for any pair of ACT_* codes, and for the backward
 * steps with a mask that is not all ones. tanh block input and cell with sigmoid gates go through
 * the fused bodies above; every other pair takes one pass per operation below, each activation a
 * switch per array (the loop inside each case vectorises) or per element (the rarer ones).
 * Multiplies and adds are not fused into FMAs here (fp-contract off): these passes give the same
 * bits on every instruction set, and a masked tanh / sigmoid step the same bits as before. */
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")

/* f(x) for the codes lf_activate_array does not handle itself (NaN for an unknown code); DL4J's
 * definitions (the Activation* classes of ND4J 0.9.1) */
LF_TARGET static inline LF_T LF_NAME(lf_activate_one)(int kind, LF_T x)
{
    LF_T y, ax;
    switch (kind) {
    case LF_ACT_SOFTSIGN: return x / ((LF_T)1 + LF_FABS(x));
    case LF_ACT_RELU: return x <= 0 ? (LF_T)0 : x;      /* max(0, x); NaN stays NaN */
    case LF_ACT_LEAKYRELU: return x > 0 ? x : (LF_T)LF_LEAKYRELU_ALPHA * x;
    case LF_ACT_ELU: return x > 0 ? x : LF_EXPM1(x);
    case LF_ACT_SELU:
        if (x > 0)
            return (LF_T)LF_SELU_LAMBDA * x;
        return (LF_T)(LF_SELU_LAMBDA * LF_SELU_ALPHA) * LF_EXPM1(x);
    case LF_ACT_SOFTPLUS:                               /* log(1 + e^x), no overflow for large x */
        if (x > 0)
            return x + LF_LOG1P(LF_EXP(-x));
        return LF_LOG1P(LF_EXP(x));
    case LF_ACT_HARDTANH: return x < -1 ? (LF_T)-1 : (x > 1 ? (LF_T)1 : x);
    case LF_ACT_CUBE: return x * x * x;
    case LF_ACT_RATIONALTANH:
        /* 1.7159 t(2x/3), t(y) = sgn(y) (1 - 1/(1 + |y| + y^2 + 1.41645 y^4)) */
        y = x * (LF_T)(2.0 / 3.0);
        ax = LF_FABS(y);
        ax = (LF_T)1 - (LF_T)1 / ((LF_T)1 + ax + y * y + (LF_T)LF_RATIONALTANH_A * (y * y) * (y * y));
        if (y < 0)
            ax = -ax;
        return (LF_T)LF_RATIONALTANH_SCALE * ax;
    default: return (LF_T)NAN;
    }
}

/* f'(x), given y = f(x), for the codes lf_derivative_array does not handle itself */
LF_TARGET static inline LF_T LF_NAME(lf_derivative_one)(int kind, LF_T x, LF_T y)
{
    LF_T t, ax, d;
    switch (kind) {
    case LF_ACT_SOFTSIGN:
        t = (LF_T)1 + LF_FABS(x);
        return (LF_T)1 / (t * t);
    case LF_ACT_RELU: return x > 0 ? (LF_T)1 : (LF_T)0;
    case LF_ACT_LEAKYRELU: return x >= 0 ? (LF_T)1 : (LF_T)LF_LEAKYRELU_ALPHA; /* d1 >= 0 ? 1 : alpha */
    case LF_ACT_ELU: return x > 0 ? (LF_T)1 : LF_EXP(x);
    case LF_ACT_SELU:
        if (x > 0)
            return (LF_T)LF_SELU_LAMBDA;
        return (LF_T)(LF_SELU_LAMBDA * LF_SELU_ALPHA) * LF_EXP(x);
    case LF_ACT_SOFTPLUS: return (LF_T)1 / ((LF_T)1 + LF_EXP(-x));   /* the sigmoid */
    case LF_ACT_HARDTANH: return (x < -1 || x > 1) ? (LF_T)0 : (LF_T)1;
    case LF_ACT_CUBE: return (LF_T)3 * x * x;
    case LF_ACT_RECTIFIEDTANH: return x > 0 ? (LF_T)1 - y * y : (LF_T)0;
    case LF_ACT_RATIONALTANH:
        /* d/dx 1.7159 t(2x/3) = 1.7159 * 2/3 * (1 + 2|u| + 4a|u|^3) / D^2, u = 2x/3 */
        t = x * (LF_T)(2.0 / 3.0);
        ax = LF_FABS(t);
        d = (LF_T)1 + ax + t * t + (LF_T)LF_RATIONALTANH_A * (t * t) * (t * t);
        return (LF_T)(LF_RATIONALTANH_SCALE * 2.0 / 3.0)
               * ((LF_T)1 + (LF_T)2 * ax + (LF_T)4 * (LF_T)LF_RATIONALTANH_A * ax * ax * ax) / (d * d);
    default: return (LF_T)NAN;
    }
}

/* y[i] = f(x[i]): the switch outside the loops, so that each loop vectorises */
LF_TARGET static void LF_NAME(lf_activate_array)(int kind, const LF_T* x, LF_T* y, ptrdiff_t n)
{
    switch (kind) {
    /* through the variants in use (lstmfast_simd.h), not inlined here: inlined, the polynomials
     * would lose their FMAs and give other bits than the fused cells */
    case LF_ACT_TANH: LF_TYPED(lf_tanh_array)(x, y, n); break;
    case LF_ACT_SIGMOID: LF_TYPED(lf_sigmoid_array)(x, y, n); break;
    case LF_ACT_HARDSIGMOID:                            /* min(1, max(0, 0.2 x + 0.5)) */
        for (ptrdiff_t i = 0; i < n; i++) {
            LF_T v = (LF_T)0.2 * x[i] + (LF_T)0.5;
            y[i] = v < 0 ? (LF_T)0 : (v > 1 ? (LF_T)1 : v);
        }
        break;
    case LF_ACT_IDENTITY:
        for (ptrdiff_t i = 0; i < n; i++) y[i] = x[i];
        break;
    case LF_ACT_RECTIFIEDTANH:                          /* max(0, tanh x) */
        LF_TYPED(lf_tanh_array)(x, y, n);
        for (ptrdiff_t i = 0; i < n; i++) y[i] = y[i] <= 0 ? (LF_T)0 : y[i];
        break;
    default:
        for (ptrdiff_t i = 0; i < n; i++) y[i] = LF_NAME(lf_activate_one)(kind, x[i]);
    }
}

/* out[i] = f'(x[i]) given y[i] = f(x[i]); where f' is cheaper from y (tanh, sigmoid) it is
 * taken from y, as the seed does (TimesOneMinus on the gate activation) */
LF_TARGET static void LF_NAME(lf_derivative_array)(int kind, const LF_T* x, const LF_T* y,
                                                   LF_T* out, ptrdiff_t n)
{
    switch (kind) {
    case LF_ACT_TANH:
        for (ptrdiff_t i = 0; i < n; i++) out[i] = (LF_T)1 - y[i] * y[i];
        break;
    case LF_ACT_SIGMOID:
        for (ptrdiff_t i = 0; i < n; i++) out[i] = y[i] * ((LF_T)1 - y[i]);
        break;
    case LF_ACT_HARDSIGMOID:
        for (ptrdiff_t i = 0; i < n; i++)
            out[i] = (x[i] > (LF_T)-2.5 && x[i] < (LF_T)2.5) ? (LF_T)0.2 : (LF_T)0;
        break;
    case LF_ACT_IDENTITY:
        for (ptrdiff_t i = 0; i < n; i++) out[i] = 1;
        break;
    default:
        for (ptrdiff_t i = 0; i < n; i++) out[i] = LF_NAME(lf_derivative_one)(kind, x[i], y[i]);
    }
}

/* The mask zeroes h and c (the seed's muliColumnVector(timeStepMaskColumn), LSTMHelpers
 * 299-307); mask_col NULL: no mask. Unit k's values are at m + k * mb. */
LF_TARGET static void LF_NAME(lf_mask_cells)(ptrdiff_t n, ptrdiff_t mb, const LF_T* mask_col,
                                             LF_T* h_cur, LF_T* c_cur)
{
    if (mask_col == NULL)
        return;
    for (ptrdiff_t k = 0; k < n / mb; k++)
        for (ptrdiff_t m = 0; m < mb; m++) {
            LF_T msk = mask_col[m];
            h_cur[m + k * mb] = h_cur[m + k * mb] * msk;
            c_cur[m + k * mb] = c_cur[m + k * mb] * msk;
        }
}

/* Forward, any activations: one pass per operation (the fused body's steps, in its order) */
LF_TARGET static void LF_NAME(lf_forward_general)(ptrdiff_t n, ptrdiff_t stride, int act,
                                                  int gate, LF_T* z, LF_T* a, LF_T* mca,
                                                  const LF_T* peep, const LF_T* c_prev,
                                                  LF_T* h_cur, LF_T* c_cur)
{
    LF_T *zi = z, *zf = z + stride, *zo = z + 2 * stride, *zg = z + 3 * stride;
    LF_T *ai = a, *af = a + stride, *ao = a + 2 * stride, *ag = a + 3 * stride;
    /* forget and input-gate peepholes on the previous cell state (wFF, wGG): LSTMHelpers
     * 207-208, 226-227 */
    if (peep != NULL)
        for (ptrdiff_t i = 0; i < n; i++) {
            zf[i] = zf[i] + c_prev[i] * peep[i];
            zg[i] = zg[i] + c_prev[i] * peep[2 * stride + i];
        }
    LF_NAME(lf_activate_array)(act, zi, ai, n);        /* block input: LSTMHelpers 190-203 */
    LF_NAME(lf_activate_array)(gate, zf, af, n);       /* forget gate: 204-222 */
    LF_NAME(lf_activate_array)(gate, zg, ag, n);       /* input gate: 223-240 */
    /* c = fa * c_prev + ga * ia (248-256); the output-gate peephole on the current, unmasked c
     * (wOO, 259-263), a loop of its own: one output per loop keeps it vectorised */
    for (ptrdiff_t i = 0; i < n; i++) c_cur[i] = af[i] * c_prev[i] + ag[i] * ai[i];
    if (peep != NULL)
        for (ptrdiff_t i = 0; i < n; i++) zo[i] = zo[i] + c_cur[i] * peep[stride + i];
    LF_NAME(lf_activate_array)(gate, zo, ao, n);       /* output gate: 264-276 */
    LF_NAME(lf_activate_array)(act, c_cur, mca, n);    /* memCellActivations (unmasked c): 282 */
    for (ptrdiff_t i = 0; i < n; i++) h_cur[i] = mca[i] * ao[i];   /* h = mca * oa: 287-297 */
}

/* Backward, any activations and masked steps: one pass per operation, in the fused body's order.
 * scratch: 6 blocks `stride` apart. */
LF_TARGET static void LF_NAME(lf_backward_general)(
    ptrdiff_t n, ptrdiff_t stride, ptrdiff_t mb, int act, int gate, const LF_T* z, const LF_T* a,
    const LF_T* mca, const LF_T* c_prev, const LF_T* c_cur, const LF_T* mask_col,
    int masked_step, const LF_T* nabla_out, const LF_T* a_next, const LF_T* delta_next,
    const LF_T* cell_error_next, const LF_T* peep, LF_T* delta, LF_T* cell_error, LF_T* scratch,
    const LF_T* cell_error_extra)
{
    const LF_T *zi = z, *zf = z + stride, *zo = z + 2 * stride, *zg = z + 3 * stride;
    const LF_T *ai = a, *af = a + stride, *ao = a + 2 * stride, *ag = a + 3 * stride;
    LF_T *di = delta, *df = delta + stride, *d_o = delta + 2 * stride, *dg = delta + 3 * stride;
    LF_T *grad_o = scratch, *grad_cell = scratch + stride, *grad_f = scratch + 2 * stride;
    LF_T *grad_g = scratch + 3 * stride, *grad_i = scratch + 4 * stride;
    LF_T *cell_act = scratch + 5 * stride;
    /* the output gate's delta: LSTMHelpers 438-447 */
    LF_NAME(lf_derivative_array)(gate, zo, ao, grad_o, n);
    /* the layer activation's derivative at the stored (masked) cell state, as the seed's
     * afn.backprop(currMemCellState, ...); where unmasked that is memCellActivations' point */
    if (masked_step) {
        LF_NAME(lf_activate_array)(act, c_cur, cell_act, n);
        for (ptrdiff_t k = 0; k < n / mb; k++)
            for (ptrdiff_t m = 0; m < mb; m++)
                if (mask_col[m] == 1)
                    cell_act[m + k * mb] = mca[m + k * mb];
        LF_NAME(lf_derivative_array)(act, c_cur, cell_act, grad_cell, n);
    } else {
        LF_NAME(lf_derivative_array)(act, c_cur, mca, grad_cell, n);
    }
    /* output-gate delta (masked at the end, as the seed) and the cell error (nablaCellState:
     * 451-452, + deltao wOO 454-455, + the next step's wFF / wGG terms 417-424 and fa_next
     * nablaCellStateNext 459-460); one output per loop (with several, GCC gives up its run-time
     * alias checks and the loop stays scalar) */
    for (ptrdiff_t i = 0; i < n; i++) d_o[i] = (nabla_out[i] * mca[i]) * grad_o[i];
    for (ptrdiff_t i = 0; i < n; i++) cell_error[i] = grad_cell[i] * (ao[i] * nabla_out[i]);
    if (peep != NULL)
        for (ptrdiff_t i = 0; i < n; i++)
            cell_error[i] = cell_error[i] + d_o[i] * peep[stride + i];
    if (delta_next != NULL) {
        if (peep != NULL)
            for (ptrdiff_t i = 0; i < n; i++)
                cell_error[i] = ((delta_next[stride + i] * peep[i]
                                  + delta_next[3 * stride + i] * peep[2 * stride + i])
                                 + cell_error[i]);
        for (ptrdiff_t i = 0; i < n; i++)
            cell_error[i] = cell_error[i] + a_next[stride + i] * cell_error_next[i];
    }
    if (cell_error_extra != NULL)
        for (ptrdiff_t i = 0; i < n; i++) cell_error[i] = cell_error[i] + cell_error_extra[i];
    /* the forget, input-gate and block-input deltas: 466-476, 482-494, 497-501 */
    LF_NAME(lf_derivative_array)(gate, zf, af, grad_f, n);
    LF_NAME(lf_derivative_array)(gate, zg, ag, grad_g, n);
    LF_NAME(lf_derivative_array)(act, zi, ai, grad_i, n);
    for (ptrdiff_t i = 0; i < n; i++) df[i] = (grad_f[i] * cell_error[i]) * c_prev[i];
    for (ptrdiff_t i = 0; i < n; i++) dg[i] = grad_g[i] * (ai[i] * cell_error[i]);
    for (ptrdiff_t i = 0; i < n; i++) di[i] = grad_i[i] * (ag[i] * cell_error[i]);
}

/* The end of every backward step: the mask on the deltas (LSTMHelpers 505-511), then (with
 * peepholes) each unit's sums over the minibatch for the peephole gradients. */
LF_TARGET static void LF_NAME(lf_mask_and_peephole_sums)(
    ptrdiff_t n, ptrdiff_t stride, ptrdiff_t mb, const LF_T* mask_col, const LF_T* c_prev,
    const LF_T* c_cur, LF_T* delta, const LF_T* peep, LF_T* sum_f, LF_T* sum_o, LF_T* sum_g)
{
    LF_T *di = delta, *df = delta + stride, *d_o = delta + 2 * stride, *dg = delta + 3 * stride;
    if (mask_col != NULL)
        for (ptrdiff_t k = 0; k < n / mb; k++)
            for (ptrdiff_t m = 0; m < mb; m++) {
                LF_T msk = mask_col[m];
                ptrdiff_t i = m + k * mb;
                di[i] = di[i] * msk;
                df[i] = df[i] * msk;
                d_o[i] = d_o[i] * msk;
                dg[i] = dg[i] * msk;
            }
    if (peep != NULL)
        for (ptrdiff_t k = 0; k < n / mb; k++) {
            LF_T s_f = 0, s_o = 0, s_g = 0;
            for (ptrdiff_t m = 0; m < mb; m++) {
                ptrdiff_t i = m + k * mb;
                s_f = s_f + df[i] * c_prev[i];
                s_g = s_g + dg[i] * c_prev[i];
                s_o = s_o + d_o[i] * c_cur[i];
            }
            sum_f[k] += s_f;
            sum_o[k] += s_o;
            sum_g[k] += s_g;
        }
}

#pragma GCC pop_options

/* ---- The cells of one step, every activation: what the passes call (lstmfast_cells.h). */

/* Gates, cell and output of a step for n values per gate (gate blocks i, f, o, g `stride`
 * apart, unit k's values at m + k * mb): z holds x W + b + h_prev RW on entry, the complete
 * pre-activations on exit; a and mca receive the activations, c_cur and h_cur the state (masked
 * by mask_col, or NULL). */
LF_TARGET static void LF_NAME(lf_forward_cells)(ptrdiff_t n, ptrdiff_t stride, ptrdiff_t mb,
                                                int act, int gate, LF_T* z, LF_T* a, LF_T* mca,
                                                const LF_T* peep, const LF_T* c_prev,
                                                LF_T* h_cur, LF_T* c_cur, const LF_T* mask_col)
{
    if (act == LF_ACT_TANH && gate == LF_ACT_SIGMOID) {
        /* the default pair: lf_forward_body, its peephole case its own code */
#define LF_FORWARD_BODY(HAS_PEEP)                                                               \
    LF_NAME(lf_forward_body)(n, z, z + stride, z + 2 * stride, z + 3 * stride, a, a + stride,  \
                             a + 2 * stride, a + 3 * stride, mca, peep, LF_AT(peep, stride),   \
                             LF_AT(peep, 2 * stride), c_prev, h_cur, c_cur, HAS_PEEP)
        if (peep != NULL) LF_FORWARD_BODY(1);
        else LF_FORWARD_BODY(0);
#undef LF_FORWARD_BODY
    } else {
        LF_NAME(lf_forward_general)(n, stride, act, gate, z, a, mca, peep, c_prev, h_cur, c_cur);
    }
    LF_NAME(lf_mask_cells)(n, mb, mask_col, h_cur, c_cur);
}

/* The deltas of a step: nabla_out = dL/dh of this step; a_next, delta_next, cell_error_next of
 * the next processed step (NULL at the last); writes the masked deltas [i, f, o, g] and the cell
 * error (not masked, as in the seed), adds the peephole sums into sum_f / sum_o / sum_g.
 * masked_step: some entry of mask_col is not 1. */
LF_TARGET static void LF_NAME(lf_backward_cells)(
    ptrdiff_t n, ptrdiff_t stride, ptrdiff_t mb, int act, int gate, const LF_T* z, const LF_T* a,
    const LF_T* mca, const LF_T* c_prev, const LF_T* c_cur, const LF_T* mask_col,
    int masked_step, const LF_T* nabla_out, const LF_T* a_next, const LF_T* delta_next,
    const LF_T* cell_error_next, const LF_T* peep, LF_T* delta, LF_T* cell_error, LF_T* sum_f,
    LF_T* sum_o, LF_T* sum_g, LF_T* scratch, const LF_T* cell_error_extra)
{
    if (act == LF_ACT_TANH && gate == LF_ACT_SIGMOID && !masked_step) {
        /* the default pair, an unmasked step: lf_backward_body, each case of its flags its own
         * code */
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
    } else {
        LF_NAME(lf_backward_general)(n, stride, mb, act, gate, z, a, mca, c_prev, c_cur,
                                     mask_col, masked_step, nabla_out, a_next, delta_next,
                                     cell_error_next, peep, delta, cell_error, scratch,
                                     cell_error_extra);
    }
    LF_NAME(lf_mask_and_peephole_sums)(n, stride, mb, mask_col, c_prev, c_cur, delta, peep,
                                       sum_f, sum_o, sum_g);
}

#undef LF_AT
