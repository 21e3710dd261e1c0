# cython: language_level=3
"""The port of DL4J's LSTMHelpers (../shared/seed/LSTMHelpers.java) to typed Cython over BLAS.

Internal layout. The seed works on [minibatch, features] slices, one time step at a time, with
`ifogActivations = input . W + prevOutput . RW` as [minibatch, 4h]. This port keeps that
orientation (example-major: it is also the fastest for OpenBLAS when the minibatch is small)
and stacks the steps in *processing order* s = 0..T-1 (time t = s going forwards, t = T-1-s
going backwards): a per-step quantity with F features is a column-major [mb*S, F] matrix whose
rows s*mb .. s*mb+mb-1 belong to step s (S steps, leading dimension mb*S). Then
  - the input projection of all steps is one GEMM (seed: `miniBatchData.mmul(inputWeights)` per step),
  - inside the time loop only the recurrent GEMM remains (seed: `Nd4j.gemm(prevOutputActivations,
    recurrentWeightsIFOG, ...)` and, backwards, `Nd4j.gemm(deltaifogNext, wIFOG, nablaOut, ...)`),
  - after the backward loop one GEMM each gives dL/dW, dL/dRW and dL/dx (the seed accumulates
    them step by step),
  - the element-wise code is one pass per step over the [mb, 4h] block, unit by unit, each loop
    running over the contiguous minibatch.

Cache written by a forward pass for backprop (the seed's FwdPassReturn):
  xp   [mb*T, n_in]      packed input
  hs   [mb*(T+1), h]     slot 0: h0 (or zeros); slot s+1: output of step s (masked)   (prevAct, fwdPassOutputAsArrays)
  cs   [mb*(T+1), h]     slot 0: c0 (or zeros); slot s+1: cell state of step s (masked) (prevMemCell, memCellState)
  z    [mb*T, 4h]        gate pre-activations incl. bias and peepholes                  (iz, fz, oz, gz)
  a    [mb*T, 4h]        gate activations                                              (ia, fa, oa, ga)
  mca  [mb*T, h]         layer activation of the unmasked cell state                   (memCellActivations)
  mp   [mb*T]            mask in processing order (1 where no mask was given)
Gate blocks in every 4h: [block input i, forget f, output o, input gate g], the seed's [I, F, O, G].
"""
from libc.stdlib cimport malloc, free
from libc.string cimport memset
from cython cimport floating

cimport numpy as cnp
import numpy as np

from lstmfast._blas cimport gemm, fits_blas_int
from lstmfast._activations cimport (activate_array, derivative_array, lf_select_variant,
                                    lf_exp_array_f32, lf_exp_array_f64, lf_load_flag,
                                    lf_prefetch_run, lf_packed_gemm_available, lf_packed_size,
                                    lf_pack_b_f32, lf_pack_b_f64, lf_gemm_packed_f32,
                                    lf_gemm_packed_f64)
from lstmfast.kernels cimport (lstm_dims, lstm_strides, LSTM_OK, LSTM_ERR_ARGUMENT,
                               LSTM_ERR_ACTIVATION, LSTM_ERR_TOO_LARGE, LSTM_ERR_NO_MEMORY,
                               LSTM_ERR_CANCELLED,
                               ACT_TANH, ACT_SIGMOID, ACT_HARDSIGMOID, ACT_COUNT)

cnp.import_array()

import os as _os
# AVX2+FMA variants of the vectorised math when the CPU has them (LSTMFAST_DISABLE_AVX2=1: portable)
_AVX2_ACTIVE = lf_select_variant(0 if _os.environ.get("LSTMFAST_DISABLE_AVX2", "") not in ("", "0") else 1)

# Inference processes the input projection in chunks of time steps so that its working memory
# stays bounded for long sequences; about this many elements per chunk (at least one step).
cdef Py_ssize_t INFERENCE_CHUNK_ELEMENTS = 1 << 21

cdef Py_ssize_t SIZE_MAX_ELEMENTS = (<Py_ssize_t>1 << 62) // 16


# ---------------------------------------------------------------------------------------------
# sizes and checks

cdef inline Py_ssize_t _mul(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """a * b for non-negative sizes, or -1 if either is negative or the product is too large."""
    if a < 0 or b < 0:
        return -1
    if a != 0 and b > SIZE_MAX_ELEMENTS // a:
        return -1
    return a * b


cdef inline Py_ssize_t _add(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    if a < 0 or b < 0 or a > SIZE_MAX_ELEMENTS - b:
        return -1
    return a + b


cdef int lstm_check_dims(const lstm_dims* dims) noexcept nogil:
    """LSTM_OK if dims is usable: sizes >= 1, known activations, every BLAS size representable."""
    if dims == NULL:
        return LSTM_ERR_ARGUMENT
    if dims.minibatch < 1 or dims.n_in < 1 or dims.hidden < 1 or dims.time_steps < 1:
        return LSTM_ERR_ARGUMENT
    if dims.activation < 0 or dims.activation >= ACT_COUNT:
        return LSTM_ERR_ACTIVATION
    if dims.gate_activation != ACT_SIGMOID and dims.gate_activation != ACT_HARDSIGMOID:
        return LSTM_ERR_ACTIVATION
    # BLAS sees m/n/k and leading dimensions among 4h(+3), h, n_in, mb*(T+1)
    cdef Py_ssize_t rows = _mul(dims.minibatch, _add(dims.time_steps, 1))
    cdef Py_ssize_t gates = _mul(4, dims.hidden)
    if rows < 0 or gates < 0 or not fits_blas_int(rows) or not fits_blas_int(gates + 3):
        return LSTM_ERR_TOO_LARGE
    if not fits_blas_int(dims.n_in):
        return LSTM_ERR_TOO_LARGE
    if lstm_cache_size(dims) < 0 or lstm_backward_workspace_size(dims) < 0:
        return LSTM_ERR_TOO_LARGE
    return LSTM_OK


cdef Py_ssize_t lstm_cache_size(const lstm_dims* dims) noexcept nogil:
    if dims == NULL:
        return -1
    cdef Py_ssize_t mb = dims.minibatch, n_in = dims.n_in, h = dims.hidden, T = dims.time_steps
    # per row (s, m): xp n_in, z 4h, a 4h, mca h, mask 1; plus hs and cs with T+1 slots
    cdef Py_ssize_t per_row = _add(_add(n_in, _mul(9, h)), 1)
    cdef Py_ssize_t state = _mul(2, _mul(h, _mul(mb, _add(T, 1))))
    return _add(_mul(per_row, _mul(mb, T)), state)


cdef inline Py_ssize_t _inference_chunk(const lstm_dims* dims) noexcept nogil:
    cdef Py_ssize_t per_step = (dims.n_in + 4 * dims.hidden + 1) * dims.minibatch
    cdef Py_ssize_t chunk = INFERENCE_CHUNK_ELEMENTS // per_step
    if chunk < 1:
        chunk = 1
    if chunk > dims.time_steps:
        chunk = dims.time_steps
    return chunk


cdef Py_ssize_t lstm_forward_workspace_size(const lstm_dims* dims, bint for_backprop) noexcept nogil:
    if dims == NULL or dims.minibatch < 1 or dims.n_in < 1 or dims.hidden < 1 or dims.time_steps < 1:
        return -1
    # a contiguous copy of the bias (4h), the element-wise pass's column scratch (5 mb), the
    # previous output as a contiguous [mb, h] (the recurrent GEMM's A), and the packed RW
    cdef Py_ssize_t extra = _add(_mul(4, dims.hidden), _mul(5, dims.minibatch))
    extra = _add(extra, _mul(dims.minibatch, dims.hidden))
    extra = _add(extra, _mul(_mul((4 * dims.hidden + 5) // 6, 6), dims.hidden))
    if for_backprop:
        return extra if lstm_cache_size(dims) >= 0 else -1
    cdef Py_ssize_t chunk = _inference_chunk(dims)
    cdef Py_ssize_t per_row = _add(_add(dims.n_in, _mul(4, dims.hidden)), 1)
    # a chunk of packed input, pre-activations and mask; two slots each of h and c
    return _add(_add(_mul(_mul(per_row, dims.minibatch), chunk),
                     _mul(4, _mul(dims.hidden, dims.minibatch))), extra)


cdef Py_ssize_t lstm_backward_workspace_size(const lstm_dims* dims) noexcept nogil:
    if dims == NULL or dims.minibatch < 1 or dims.n_in < 1 or dims.hidden < 1 or dims.time_steps < 1:
        return -1
    cdef Py_ssize_t mb = dims.minibatch, h = dims.hidden
    cdef Py_ssize_t rows = _mul(mb, dims.time_steps)
    # deltas [mb*T, 4h], dL/dx packed [mb*T, n_in], nablaOut and two cell errors [mb, h],
    # RW[:, :4h] transposed [4h, h], peephole sums 3h, column scratch 6 mb, ones [mb*T] and
    # the bias gradient [4h] (column sums of the deltas, as a GEMM)
    cdef Py_ssize_t total = _mul(rows, _add(_add(_mul(4, h), dims.n_in), 1))
    total = _add(total, _mul(4, h))
    total = _add(total, _mul(3, _mul(mb, h)))
    total = _add(total, _mul(_mul(4, h), h))
    total = _add(total, _add(_mul(3, h), _mul(6, mb)))
    # two contiguous [mb, 4h] copies of the deltas (the recurrent GEMM's A), the packed RW^T
    total = _add(total, _mul(2, _mul(mb, _mul(4, h))))
    total = _add(total, _mul(_mul((h + 5) // 6, 6), _mul(4, h)))
    return total


# ---------------------------------------------------------------------------------------------
# the per-step recurrent product

# 1: use the packed-weights AVX2 kernel for the per-step recurrent GEMMs when the CPU has it;
# 0: always OpenBLAS (see set_recurrent_gemm)
cdef int _use_packed_gemm = 1


cdef inline bint _packed_gemm_on() noexcept nogil:
    return _use_packed_gemm != 0 and lf_packed_gemm_available != 0


cdef inline void _recurrent_product(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                                    const floating* a, Py_ssize_t lda,
                                    const floating* packed_b, const floating* b, Py_ssize_t ldb,
                                    char transb, floating* c, Py_ssize_t ldc) noexcept nogil:
    """C[M, N] += A[M, K] op(B): with the packed weights when they were packed, else BLAS."""
    if packed_b != NULL:
        if floating is float:
            lf_gemm_packed_f32(M, N, K, a, lda, packed_b, c, ldc)
        else:
            lf_gemm_packed_f64(M, N, K, a, lda, packed_b, c, ldc)
    else:
        gemm(c'N', transb, M, N, K, <floating>1, a, lda, b, ldb, <floating>1, c, ldc)


cdef inline void _pack_weights(const floating* b, Py_ssize_t sk, Py_ssize_t sn, Py_ssize_t K,
                               Py_ssize_t N, floating* packed) noexcept nogil:
    if floating is float:
        lf_pack_b_f32(b, sk, sn, K, N, packed)
    else:
        lf_pack_b_f64(b, sk, sn, K, N, packed)


# ---------------------------------------------------------------------------------------------
# element-wise step code: one pass per step over the [mb, 4h] block, unit by unit

cdef inline void _forward_cells(const lstm_dims* dims,
                                floating* z, floating* a, floating* mca, Py_ssize_t ld_gates,
                                const floating* bias,
                                const floating* peep_f, const floating* peep_o, const floating* peep_g,
                                const floating* c_prev, floating* h_cur, floating* c_cur,
                                Py_ssize_t ld_state, const floating* mask_col, floating* scratch,
                                floating* out, lstm_strides out_strides,
                                bint prefetch_next) noexcept nogil:
    """Gates, cell and output of one step: seed lines 'inputActivations' .. 'prevMemCellState = ...'.

    z [mb, 4h] (leading dimension ld_gates) holds x W + h_prev RW on entry; on exit it holds the
    complete pre-activations (bias and peepholes added). a [mb, 4h] and mca [mb, h] (same leading
    dimension) are written when not NULL (for backprop); otherwise `scratch` (5 mb) holds one unit's
    columns. c_prev, h_cur, c_cur are [mb, h] with leading dimension ld_state. out (strided, may be
    NULL) receives the step's output.
    """
    cdef Py_ssize_t h = dims.hidden, mb = dims.minibatch, m, k
    cdef int act = dims.activation, gate = dims.gate_activation
    cdef floating c, hv, b_i, b_f, b_o, b_g, w_f, w_o, w_g
    cdef floating* zi
    cdef floating* zf
    cdef floating* zo
    cdef floating* zg
    cdef floating* ai
    cdef floating* af
    cdef floating* ao
    cdef floating* ag
    cdef floating* mc
    cdef floating* cc
    cdef floating* hc
    cdef const floating* cp
    cdef bint peepholes = peep_f != NULL
    for k in range(h):
        zi = z + k * ld_gates
        zf = z + (h + k) * ld_gates
        zo = z + (2 * h + k) * ld_gates
        zg = z + (3 * h + k) * ld_gates
        if a != NULL:
            ai = a + k * ld_gates
            af = a + (h + k) * ld_gates
            ao = a + (2 * h + k) * ld_gates
            ag = a + (3 * h + k) * ld_gates
            mc = mca + k * ld_gates
        else:
            ai = scratch
            af = scratch + mb
            ao = scratch + 2 * mb
            ag = scratch + 3 * mb
            mc = scratch + 4 * mb
        cp = c_prev + k * ld_state
        cc = c_cur + k * ld_state
        hc = h_cur + k * ld_state
        b_i = bias[k]
        b_f = bias[h + k]
        b_o = bias[2 * h + k]
        b_g = bias[3 * h + k]
        # bias; forget and input-gate peepholes on the previous cell state (wFF, wGG)
        if peepholes:
            w_f = peep_f[k]
            w_g = peep_g[k]
            for m in range(mb):
                zi[m] = zi[m] + b_i
                zf[m] = (zf[m] + b_f) + cp[m] * w_f
                zg[m] = (zg[m] + b_g) + cp[m] * w_g
        else:
            for m in range(mb):
                zi[m] = zi[m] + b_i
                zf[m] = zf[m] + b_f
                zg[m] = zg[m] + b_g
        if prefetch_next:
            # the next step's rows of this unit sit mb rows down (written by the input GEMM)
            lf_prefetch_run(zi + mb, mb * sizeof(floating))
            lf_prefetch_run(zf + mb, mb * sizeof(floating))
            lf_prefetch_run(zo + mb, mb * sizeof(floating))
            lf_prefetch_run(zg + mb, mb * sizeof(floating))
        activate_array(act, zi, ai, mb)          # block input
        activate_array(gate, zf, af, mb)         # forget gate
        activate_array(gate, zg, ag, mb)         # input gate
        # c = fa * c_prev + ga * ia; output-gate peephole on the current, unmasked c (wOO)
        if peepholes:
            w_o = peep_o[k]
            for m in range(mb):
                c = af[m] * cp[m] + ag[m] * ai[m]
                cc[m] = c
                zo[m] = (zo[m] + b_o) + c * w_o
        else:
            for m in range(mb):
                cc[m] = af[m] * cp[m] + ag[m] * ai[m]
                zo[m] = zo[m] + b_o
        activate_array(gate, zo, ao, mb)         # output gate
        activate_array(act, cc, mc, mb)          # memCellActivations (unmasked c)
        # output; the mask zeroes h and c (the seed's muliColumnVector(timeStepMaskColumn))
        for m in range(mb):
            hv = (mc[m] * ao[m]) * mask_col[m]
            hc[m] = hv
            cc[m] = cc[m] * mask_col[m]
        if out != NULL:
            for m in range(mb):
                out[m * out_strides.minibatch + k * out_strides.feature] = hc[m]


cdef inline void _backward_cells(const lstm_dims* dims,
                                 const floating* z, const floating* a, const floating* mca,
                                 Py_ssize_t ld_gates,
                                 const floating* c_prev, const floating* c_cur, Py_ssize_t ld_state,
                                 const floating* mask_col, bint masked_step,
                                 const floating* nabla_out,
                                 const floating* a_next, const floating* delta_next,
                                 const floating* cell_error_next,
                                 const floating* peep_f, const floating* peep_o, const floating* peep_g,
                                 floating* delta, Py_ssize_t ld_delta, floating* cell_error,
                                 floating* sum_f, floating* sum_o, floating* sum_g,
                                 floating* scratch, bint prefetch_previous,
                                 floating* delta_copy) noexcept nogil:
    """Deltas of one step: seed lines 'nablaCellState' .. 'deltaifogNext.muliColumnVector'.

    nabla_out [mb, h] (leading dimension mb) is dL/dh of this step (epsilon plus the recurrent
    term). a_next (ld_gates), delta_next (ld_delta) and cell_error_next ([mb, h], ld mb) belong to
    the next processed step, or are NULL at the last step. Writes this step's masked deltas
    [i, f, o, g] ([mb, 4h], ld_delta) and its cell error (nablaCellState: not masked, as in the
    seed); accumulates the peephole gradient sums. masked_step: some mask entry of this step is
    not 1. scratch: 6 mb.
    """
    cdef Py_ssize_t h = dims.hidden, mb = dims.minibatch, m, k
    cdef int act = dims.activation, gate = dims.gate_activation
    cdef floating d_o, nabla_c, w_f, w_o, w_g, s_f, s_o, s_g
    cdef const floating* ai
    cdef const floating* af
    cdef const floating* ao
    cdef const floating* ag
    cdef const floating* mc
    cdef const floating* cp
    cdef const floating* cc
    cdef const floating* no
    cdef const floating* dn_f
    cdef const floating* dn_g
    cdef const floating* an_f
    cdef const floating* cen
    cdef floating* di
    cdef floating* df
    cdef floating* do_
    cdef floating* dg
    cdef floating* ce
    cdef floating* grad_o = scratch
    cdef floating* grad_cell = scratch + mb
    cdef floating* grad_f = scratch + 2 * mb
    cdef floating* grad_g = scratch + 3 * mb
    cdef floating* grad_i = scratch + 4 * mb
    cdef floating* cell_act = scratch + 5 * mb
    cdef bint peepholes = peep_f != NULL
    cdef bint has_next = delta_next != NULL
    w_f = w_o = w_g = 0
    for k in range(h):
        ai = a + k * ld_gates
        af = a + (h + k) * ld_gates
        ao = a + (2 * h + k) * ld_gates
        ag = a + (3 * h + k) * ld_gates
        mc = mca + k * ld_gates
        cp = c_prev + k * ld_state
        cc = c_cur + k * ld_state
        no = nabla_out + k * mb
        ce = cell_error + k * mb
        di = delta + k * ld_delta
        df = delta + (h + k) * ld_delta
        do_ = delta + (2 * h + k) * ld_delta
        dg = delta + (3 * h + k) * ld_delta
        if peepholes:
            w_f = peep_f[k]
            w_o = peep_o[k]
            w_g = peep_g[k]
        if prefetch_previous:
            # the previous step's rows of this unit (processed next) sit mb rows up
            lf_prefetch_run(z + k * ld_gates - mb, mb * sizeof(floating))
            lf_prefetch_run(z + (h + k) * ld_gates - mb, mb * sizeof(floating))
            lf_prefetch_run(z + (2 * h + k) * ld_gates - mb, mb * sizeof(floating))
            lf_prefetch_run(z + (3 * h + k) * ld_gates - mb, mb * sizeof(floating))
            lf_prefetch_run(ai - mb, mb * sizeof(floating))
            lf_prefetch_run(af - mb, mb * sizeof(floating))
            lf_prefetch_run(ao - mb, mb * sizeof(floating))
            lf_prefetch_run(ag - mb, mb * sizeof(floating))
            lf_prefetch_run(mc - mb, mb * sizeof(floating))
            lf_prefetch_run(cp - mb, mb * sizeof(floating))
        derivative_array(gate, z + (2 * h + k) * ld_gates, ao, grad_o, mb)
        # the layer activation's derivative at the stored (masked) cell state, as the seed's
        # afn.backprop(currMemCellState, ...); where unmasked that is memCellActivations' point
        if masked_step:
            activate_array(act, cc, cell_act, mb)
            for m in range(mb):
                cell_act[m] = mc[m] if mask_col[m] == 1 else cell_act[m]
            derivative_array(act, cc, cell_act, grad_cell, mb)
        else:
            derivative_array(act, cc, mc, grad_cell, mb)
        # output-gate delta and the cell error (nablaCellState)
        for m in range(mb):
            d_o = (no[m] * mc[m]) * grad_o[m]
            do_[m] = d_o
            ce[m] = grad_cell[m] * (ao[m] * no[m])
        if peepholes:
            for m in range(mb):
                ce[m] = ce[m] + do_[m] * w_o
        if has_next:
            dn_f = delta_next + (h + k) * ld_delta
            dn_g = delta_next + (3 * h + k) * ld_delta
            an_f = a_next + (h + k) * ld_gates
            cen = cell_error_next + k * mb
            if peepholes:
                for m in range(mb):
                    ce[m] = (dn_f[m] * w_f + dn_g[m] * w_g) + ce[m]
            for m in range(mb):
                ce[m] = ce[m] + an_f[m] * cen[m]
        # forget, input-gate and block-input deltas; then the mask on all four
        derivative_array(gate, z + (h + k) * ld_gates, af, grad_f, mb)
        derivative_array(gate, z + (3 * h + k) * ld_gates, ag, grad_g, mb)
        derivative_array(act, z + k * ld_gates, ai, grad_i, mb)
        for m in range(mb):
            nabla_c = ce[m]
            df[m] = ((grad_f[m] * nabla_c) * cp[m]) * mask_col[m]
            dg[m] = (grad_g[m] * (ai[m] * nabla_c)) * mask_col[m]
            di[m] = (grad_i[m] * (ag[m] * nabla_c)) * mask_col[m]
            do_[m] = do_[m] * mask_col[m]
        # and a contiguous [mb, 4h] copy for the next step's recurrent GEMM
        for m in range(mb):
            delta_copy[m + k * mb] = di[m]
            delta_copy[m + (h + k) * mb] = df[m]
            delta_copy[m + (2 * h + k) * mb] = do_[m]
            delta_copy[m + (3 * h + k) * mb] = dg[m]
        if peepholes:
            s_f = 0
            s_o = 0
            s_g = 0
            for m in range(mb):
                s_f = s_f + df[m] * cp[m]
                s_g = s_g + dg[m] * cp[m]
                s_o = s_o + do_[m] * cc[m]
            sum_f[k] += s_f
            sum_o[k] += s_o
            sum_g[k] += s_g


# ---------------------------------------------------------------------------------------------
# packing between the caller's strided arrays and the step-stacked layout

cdef inline Py_ssize_t _time_of(const lstm_dims* dims, Py_ssize_t s) noexcept nogil:
    return s if dims.forwards else dims.time_steps - 1 - s


cdef inline void _copy_block(const floating* src, Py_ssize_t ld_src, floating* dst,
                             Py_ssize_t ld_dst, Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    cdef Py_ssize_t i, j
    for j in range(cols):
        for i in range(rows):
            dst[i + j * ld_dst] = src[i + j * ld_src]


cdef inline void _gather_state(const lstm_dims* dims, const floating* src, lstm_strides st,
                               floating* dst, Py_ssize_t ld) noexcept nogil:
    """[mb, h] strided -> [mb, h] with leading dimension ld; zeros if src is NULL."""
    cdef Py_ssize_t m, k
    for k in range(dims.hidden):
        if src == NULL:
            for m in range(dims.minibatch):
                dst[m + k * ld] = 0
        else:
            for m in range(dims.minibatch):
                dst[m + k * ld] = src[m * st.minibatch + k * st.feature]


cdef inline void _scatter_state(const lstm_dims* dims, const floating* src, Py_ssize_t ld,
                                floating* dst, lstm_strides st) noexcept nogil:
    cdef Py_ssize_t m, k
    if dst == NULL:
        return
    for k in range(dims.hidden):
        for m in range(dims.minibatch):
            dst[m * st.minibatch + k * st.feature] = src[m + k * ld]


cdef inline void _pack_input(const lstm_dims* dims, const floating* x, lstm_strides st,
                             Py_ssize_t s_begin, Py_ssize_t s_end, floating* xp) noexcept nogil:
    """x [mb, n_in, T] strided -> xp [mb*(s_end-s_begin), n_in] in processing order."""
    cdef Py_ssize_t s, m, i, mb = dims.minibatch, ld = mb * (s_end - s_begin)
    cdef const floating* xt
    cdef floating* dst
    for s in range(s_begin, s_end):
        xt = x + _time_of(dims, s) * st.time
        for i in range(dims.n_in):
            dst = xp + mb * (s - s_begin) + i * ld
            for m in range(mb):
                dst[m] = xt[m * st.minibatch + i * st.feature]


cdef inline void _pack_mask(const lstm_dims* dims, const floating* mask, lstm_strides st,
                            Py_ssize_t s_begin, Py_ssize_t s_end, floating* mp) noexcept nogil:
    cdef Py_ssize_t s, m, mb = dims.minibatch, t
    for s in range(s_begin, s_end):
        t = _time_of(dims, s)
        for m in range(mb):
            mp[mb * (s - s_begin) + m] = 1 if mask == NULL else mask[m * st.minibatch + t * st.time]


# ---------------------------------------------------------------------------------------------
# forward

cdef int lstm_forward(const lstm_dims* dims,
                      const floating* x, lstm_strides x_strides,
                      const floating* input_weights, Py_ssize_t ld_input_weights,
                      const floating* recurrent_weights, Py_ssize_t ld_recurrent_weights,
                      const floating* bias, Py_ssize_t bias_stride,
                      const floating* h0, lstm_strides h0_strides,
                      const floating* c0, lstm_strides c0_strides,
                      const floating* mask, lstm_strides mask_strides,
                      floating* output, lstm_strides output_strides,
                      floating* last_h, lstm_strides last_h_strides,
                      floating* last_c, lstm_strides last_c_strides,
                      floating* cache, floating* workspace) noexcept nogil:
    return _forward_impl(dims, x, x_strides, input_weights, ld_input_weights, recurrent_weights,
                         ld_recurrent_weights, bias, bias_stride, h0, h0_strides, c0, c0_strides,
                         mask, mask_strides, output, output_strides, last_h, last_h_strides,
                         last_c, last_c_strides, cache, workspace, NULL)


cdef int _forward_impl(const lstm_dims* dims,
                      const floating* x, lstm_strides x_strides,
                      const floating* input_weights, Py_ssize_t ld_input_weights,
                      const floating* recurrent_weights, Py_ssize_t ld_recurrent_weights,
                      const floating* bias, Py_ssize_t bias_stride,
                      const floating* h0, lstm_strides h0_strides,
                      const floating* c0, lstm_strides c0_strides,
                      const floating* mask, lstm_strides mask_strides,
                      floating* output, lstm_strides output_strides,
                      floating* last_h, lstm_strides last_h_strides,
                      floating* last_c, lstm_strides last_c_strides,
                      floating* cache, floating* workspace, const int* cancel) noexcept nogil:
    """lstm_forward; `cancel` (may be NULL) is polled once per time step: nonzero stops the pass
    with LSTM_ERR_CANCELLED (used by the Python entry to honour Ctrl-C)."""
    cdef int status = lstm_check_dims(dims)
    if status != LSTM_OK:
        return status
    if x == NULL or input_weights == NULL or recurrent_weights == NULL or bias == NULL:
        return LSTM_ERR_ARGUMENT
    if ld_input_weights < dims.n_in or ld_recurrent_weights < dims.hidden:
        return LSTM_ERR_ARGUMENT
    if not fits_blas_int(ld_input_weights) or not fits_blas_int(ld_recurrent_weights):
        return LSTM_ERR_TOO_LARGE

    cdef Py_ssize_t mb = dims.minibatch, n_in = dims.n_in, h = dims.hidden, T = dims.time_steps
    cdef Py_ssize_t G = 4 * h
    cdef bint for_backprop = cache != NULL
    cdef Py_ssize_t ws_size = lstm_forward_workspace_size(dims, for_backprop)
    cdef floating* owned = NULL
    if ws_size < 0:
        return LSTM_ERR_TOO_LARGE
    if workspace == NULL:
        owned = <floating*>malloc(ws_size * sizeof(floating))
        if owned == NULL:
            return LSTM_ERR_NO_MEMORY
        workspace = owned

    cdef const floating* peep_f = NULL
    cdef const floating* peep_o = NULL
    cdef const floating* peep_g = NULL
    if dims.peepholes:
        # columns 4h, 4h+1, 4h+2 of RW: wFF, wOO, wGG
        peep_f = recurrent_weights + G * ld_recurrent_weights
        peep_o = recurrent_weights + (G + 1) * ld_recurrent_weights
        peep_g = recurrent_weights + (G + 2) * ld_recurrent_weights

    cdef floating* xp
    cdef floating* hs
    cdef floating* cs
    cdef floating* z
    cdef floating* a = NULL
    cdef floating* mca = NULL
    cdef floating* mp
    cdef Py_ssize_t chunk, ld_state
    if for_backprop:
        chunk = T
        ld_state = mb * (T + 1)
        xp = cache
        hs = xp + n_in * mb * T
        cs = hs + h * ld_state
        z = cs + h * ld_state
        a = z + G * mb * T
        mca = a + G * mb * T
        mp = mca + h * mb * T
    else:
        chunk = _inference_chunk(dims)
        ld_state = 2 * mb           # two [mb, h] slots stacked row-wise, used alternately
        xp = workspace
        z = xp + n_in * mb * chunk
        mp = z + G * mb * chunk
        hs = mp + mb * chunk
        cs = hs + 2 * h * mb
    # at the workspace's end: a contiguous bias, the element-wise column scratch, the previous
    # output as a contiguous [mb, h] (the recurrent GEMM's A) and the packed RW[:, :4h]
    cdef Py_ssize_t packed_size = ((G + 5) // 6) * 6 * h
    cdef floating* bias_contiguous = workspace + (ws_size - G - 5 * mb - mb * h - packed_size)
    cdef floating* scratch = bias_contiguous + G
    cdef floating* h_prev_contiguous = scratch + 5 * mb
    cdef floating* packed_rw = NULL
    cdef Py_ssize_t j
    for j in range(G):
        bias_contiguous[j] = bias[j * bias_stride]
    if T > 1 and _packed_gemm_on():
        packed_rw = h_prev_contiguous + mb * h
        _pack_weights(recurrent_weights, 1, ld_recurrent_weights, h, G, packed_rw)

    _gather_state(dims, h0, h0_strides, hs, ld_state)
    _gather_state(dims, c0, c0_strides, cs, ld_state)
    _copy_block(hs, ld_state, h_prev_contiguous, mb, mb, h)

    cdef Py_ssize_t s0, s1, s, t, ld_gates, slot_prev, slot_cur
    cdef floating* z_step
    cdef bint h_prev_is_zero = h0 == NULL
    s0 = 0
    while s0 < T:
        s1 = s0 + chunk if s0 + chunk < T else T
        ld_gates = mb * (s1 - s0)
        # one GEMM for the input projection of every step of the chunk: [mb*S, 4h] = xp W
        _pack_input(dims, x, x_strides, s0, s1, xp)
        _pack_mask(dims, mask, mask_strides, s0, s1, mp)
        gemm(c'N', c'N', ld_gates, G, n_in, <floating>1, xp, ld_gates,
             input_weights, ld_input_weights, <floating>0, z, ld_gates)
        for s in range(s0, s1):
            if cancel != NULL and lf_load_flag(cancel):
                free(owned)
                return LSTM_ERR_CANCELLED
            t = _time_of(dims, s)
            if for_backprop:
                slot_prev = mb * s
                slot_cur = mb * (s + 1)
            else:
                slot_prev = mb * (s % 2)
                slot_cur = mb * ((s + 1) % 2)
            z_step = z + mb * (s - s0)
            if not h_prev_is_zero:
                # ifogActivations += prevOutputActivations . RW[:, 0:4h]
                _recurrent_product(mb, G, h, h_prev_contiguous, mb, packed_rw, recurrent_weights,
                                   ld_recurrent_weights, c'N', z_step, ld_gates)
            h_prev_is_zero = False
            _forward_cells(dims, z_step,
                           NULL if a == NULL else a + mb * s,
                           NULL if mca == NULL else mca + mb * s, ld_gates,
                           bias_contiguous, peep_f, peep_o, peep_g,
                           cs + slot_prev, hs + slot_cur, cs + slot_cur, ld_state,
                           mp + mb * (s - s0), scratch,
                           NULL if output == NULL else output + t * output_strides.time,
                           output_strides, s + 1 < s1)
            _copy_block(hs + slot_cur, ld_state, h_prev_contiguous, mb, mb, h)
        s0 = s1

    slot_cur = mb * T if for_backprop else mb * (T % 2)
    _scatter_state(dims, hs + slot_cur, ld_state, last_h, last_h_strides)
    _scatter_state(dims, cs + slot_cur, ld_state, last_c, last_c_strides)
    free(owned)
    return LSTM_OK


cdef int lstm_step(const lstm_dims* dims,
                   const floating* x, lstm_strides x_strides,
                   const floating* input_weights, Py_ssize_t ld_input_weights,
                   const floating* recurrent_weights, Py_ssize_t ld_recurrent_weights,
                   const floating* bias, Py_ssize_t bias_stride,
                   const floating* h_prev, lstm_strides h_prev_strides,
                   const floating* c_prev, lstm_strides c_prev_strides,
                   floating* h_out, lstm_strides h_out_strides,
                   floating* c_out, lstm_strides c_out_strides,
                   floating* workspace) noexcept nogil:
    """A forward pass of one step. The state is read into the workspace before anything is
    written, so h_prev/c_prev may alias h_out/c_out."""
    if dims == NULL or dims.time_steps != 1:
        return LSTM_ERR_ARGUMENT
    if h_out == NULL:
        return LSTM_ERR_ARGUMENT
    return lstm_forward(dims, x, x_strides, input_weights, ld_input_weights,
                        recurrent_weights, ld_recurrent_weights, bias, bias_stride,
                        h_prev, h_prev_strides, c_prev, c_prev_strides,
                        <const floating*>NULL, x_strides,
                        h_out, h_out_strides, NULL, h_out_strides, c_out, c_out_strides,
                        NULL, workspace)


# ---------------------------------------------------------------------------------------------
# backward

cdef int lstm_backward(const lstm_dims* dims,
                       const floating* input_weights, Py_ssize_t ld_input_weights,
                       const floating* recurrent_weights, Py_ssize_t ld_recurrent_weights,
                       const floating* cache,
                       const floating* epsilon, lstm_strides epsilon_strides,
                       Py_ssize_t tbptt_length,
                       floating* grad_input_weights, Py_ssize_t ld_grad_input_weights,
                       floating* grad_recurrent_weights, Py_ssize_t ld_grad_recurrent_weights,
                       floating* grad_bias, Py_ssize_t grad_bias_stride,
                       floating* grad_input, lstm_strides grad_input_strides,
                       floating* grad_h0, lstm_strides grad_h0_strides,
                       floating* grad_c0, lstm_strides grad_c0_strides,
                       floating* workspace) noexcept nogil:
    return _backward_impl(dims, input_weights, ld_input_weights, recurrent_weights,
                          ld_recurrent_weights, cache, epsilon, epsilon_strides, tbptt_length,
                          grad_input_weights, ld_grad_input_weights, grad_recurrent_weights,
                          ld_grad_recurrent_weights, grad_bias, grad_bias_stride, grad_input,
                          grad_input_strides, grad_h0, grad_h0_strides, grad_c0, grad_c0_strides,
                          workspace, NULL)


cdef int _backward_impl(const lstm_dims* dims,
                       const floating* input_weights, Py_ssize_t ld_input_weights,
                       const floating* recurrent_weights, Py_ssize_t ld_recurrent_weights,
                       const floating* cache,
                       const floating* epsilon, lstm_strides epsilon_strides,
                       Py_ssize_t tbptt_length,
                       floating* grad_input_weights, Py_ssize_t ld_grad_input_weights,
                       floating* grad_recurrent_weights, Py_ssize_t ld_grad_recurrent_weights,
                       floating* grad_bias, Py_ssize_t grad_bias_stride,
                       floating* grad_input, lstm_strides grad_input_strides,
                       floating* grad_h0, lstm_strides grad_h0_strides,
                       floating* grad_c0, lstm_strides grad_c0_strides,
                       floating* workspace, const int* cancel) noexcept nogil:
    """lstm_backward; `cancel` as in _forward_impl."""
    cdef int status = lstm_check_dims(dims)
    if status != LSTM_OK:
        return status
    if (input_weights == NULL or recurrent_weights == NULL or cache == NULL or epsilon == NULL
            or grad_input_weights == NULL or grad_recurrent_weights == NULL or grad_bias == NULL):
        return LSTM_ERR_ARGUMENT
    if (ld_input_weights < dims.n_in or ld_recurrent_weights < dims.hidden
            or ld_grad_input_weights < dims.n_in or ld_grad_recurrent_weights < dims.hidden):
        return LSTM_ERR_ARGUMENT
    if not (fits_blas_int(ld_input_weights) and fits_blas_int(ld_recurrent_weights)
            and fits_blas_int(ld_grad_input_weights) and fits_blas_int(ld_grad_recurrent_weights)):
        return LSTM_ERR_TOO_LARGE

    cdef Py_ssize_t mb = dims.minibatch, n_in = dims.n_in, h = dims.hidden, T = dims.time_steps
    cdef Py_ssize_t G = 4 * h, ld_gates = mb * T, ld_state = mb * (T + 1)
    cdef Py_ssize_t ws_size = lstm_backward_workspace_size(dims)
    cdef floating* owned = NULL
    if ws_size < 0:
        return LSTM_ERR_TOO_LARGE
    if workspace == NULL:
        owned = <floating*>malloc(ws_size * sizeof(floating))
        if owned == NULL:
            return LSTM_ERR_NO_MEMORY
        workspace = owned

    # cache regions (see the module docstring)
    cdef const floating* xp = cache
    cdef const floating* hs = xp + n_in * mb * T
    cdef const floating* cs = hs + h * ld_state
    cdef const floating* z = cs + h * ld_state
    cdef const floating* a = z + G * mb * T
    cdef const floating* mca = a + G * mb * T
    cdef const floating* mp = mca + h * mb * T

    # the seed's endIdx: steps end_index..T-1 (processing order) are back-propagated
    cdef Py_ssize_t end_index = 0
    if tbptt_length > 0 and tbptt_length < T:
        end_index = T - tbptt_length
    cdef Py_ssize_t steps = T - end_index
    cdef Py_ssize_t ld_delta = mb * steps

    cdef floating* delta = workspace                       # [mb*steps, 4h]
    cdef floating* grad_xp = delta + G * mb * T            # [mb*steps, n_in]
    cdef floating* nabla_out = grad_xp + n_in * mb * T     # [mb, h]
    cdef floating* cell_error = nabla_out + h * mb         # [mb, h] this step
    cdef floating* cell_error_next = cell_error + h * mb   # [mb, h] next processed step
    cdef floating* rw_t = cell_error_next + h * mb         # [4h, h] = RW[:, :4h]^T
    cdef floating* sum_f = rw_t + G * h
    cdef floating* sum_o = sum_f + h
    cdef floating* sum_g = sum_o + h
    cdef floating* scratch = sum_g + h                     # 6 mb
    cdef floating* ones = scratch + 6 * mb                 # [mb*T]
    cdef floating* bias_sums = ones + mb * T               # [4h]
    cdef floating* delta_ring = bias_sums + G              # 2 x [mb, 4h], contiguous deltas
    cdef floating* packed_rw_t = NULL                      # RW^T packed for the AVX2 kernel
    cdef floating* swap

    cdef Py_ssize_t s, t, m, k, j, i
    # RW^T once, so that the per-step recurrent product is an N,N GEMM (faster in OpenBLAS for
    # small minibatches than transposing RW inside every call)
    if steps > 1 and _packed_gemm_on():
        packed_rw_t = delta_ring + 2 * mb * G
        _pack_weights(recurrent_weights, ld_recurrent_weights, 1, G, h, packed_rw_t)
    else:
        for k in range(h):
            for j in range(G):
                rw_t[j + k * G] = recurrent_weights[k + j * ld_recurrent_weights]

    cdef const floating* peep_f = NULL
    cdef const floating* peep_o = NULL
    cdef const floating* peep_g = NULL
    if dims.peepholes:
        peep_f = recurrent_weights + G * ld_recurrent_weights
        peep_o = recurrent_weights + (G + 1) * ld_recurrent_weights
        peep_g = recurrent_weights + (G + 2) * ld_recurrent_weights
    for k in range(3 * h):
        sum_f[k] = 0

    cdef floating* delta_step
    cdef floating* delta_next
    cdef const floating* eps_t
    cdef bint masked_step
    for s in range(T - 1, end_index - 1, -1):
        if cancel != NULL and lf_load_flag(cancel):
            free(owned)
            return LSTM_ERR_CANCELLED
        t = _time_of(dims, s)
        delta_step = delta + mb * (s - end_index)
        delta_next = NULL if s == T - 1 else delta_step + mb
        # nablaOut = epsilon slice (+ deltaifogNext . RW[:, 0:4h]^T, the seed's Nd4j.gemm(..., false, true))
        eps_t = epsilon + t * epsilon_strides.time
        for k in range(h):
            for m in range(mb):
                nabla_out[m + k * mb] = eps_t[m * epsilon_strides.minibatch + k * epsilon_strides.feature]
        if delta_next != NULL:
            _recurrent_product(mb, h, G, delta_ring + mb * G * ((s + 1) % 2), mb, packed_rw_t,
                               rw_t, G, c'N', nabla_out, mb)
        masked_step = False
        for m in range(mb):
            if mp[mb * s + m] != 1:
                masked_step = True
        _backward_cells(dims, z + mb * s, a + mb * s, mca + mb * s, ld_gates,
                        cs + mb * s, cs + mb * (s + 1), ld_state,
                        mp + mb * s, masked_step, nabla_out,
                        NULL if delta_next == NULL else a + mb * (s + 1), delta_next,
                        NULL if delta_next == NULL else cell_error_next,
                        peep_f, peep_o, peep_g, delta_step, ld_delta, cell_error,
                        sum_f, sum_o, sum_g, scratch, s > end_index,
                        delta_ring + mb * G * (s % 2))
        swap = cell_error_next
        cell_error_next = cell_error
        cell_error = swap
    # cell_error_next now holds the cell error of step end_index

    # parameter gradients: one GEMM each over all back-propagated steps
    gemm(c'T', c'N', n_in, G, ld_delta, <floating>1, xp + mb * end_index, ld_gates,
         delta, ld_delta, <floating>0, grad_input_weights, ld_grad_input_weights)
    gemm(c'T', c'N', h, G, ld_delta, <floating>1, hs + mb * end_index, ld_state,
         delta, ld_delta, <floating>0, grad_recurrent_weights, ld_grad_recurrent_weights)
    if dims.peepholes:
        for k in range(h):
            grad_recurrent_weights[k + G * ld_grad_recurrent_weights] = sum_f[k]
            grad_recurrent_weights[k + (G + 1) * ld_grad_recurrent_weights] = sum_o[k]
            grad_recurrent_weights[k + (G + 2) * ld_grad_recurrent_weights] = sum_g[k]
    # bias gradient: column sums of the deltas, [1, 4h] = ones^T D
    for i in range(ld_delta):
        ones[i] = 1
    gemm(c'T', c'N', 1, G, ld_delta, <floating>1, ones, ld_delta, delta, ld_delta,
         <floating>0, bias_sums, 1)
    for j in range(G):
        grad_bias[j * grad_bias_stride] = bias_sums[j]

    # dL/dx (the seed's epsilonNext): D W^T, masked at masked steps, zero before end_index
    cdef floating* gx_t
    cdef const floating* gcol
    if grad_input != NULL:
        gemm(c'N', c'T', ld_delta, n_in, G, <floating>1, delta, ld_delta,
             input_weights, ld_input_weights, <floating>0, grad_xp, ld_delta)
        for s in range(T):
            t = _time_of(dims, s)
            gx_t = grad_input + t * grad_input_strides.time
            for i in range(n_in):
                if s < end_index:
                    for m in range(mb):
                        gx_t[m * grad_input_strides.minibatch + i * grad_input_strides.feature] = 0
                else:
                    gcol = grad_xp + mb * (s - end_index) + i * ld_delta
                    for m in range(mb):
                        gx_t[m * grad_input_strides.minibatch + i * grad_input_strides.feature] = (
                            gcol[m] * mp[mb * s + m])

    # gradients with respect to the initial state (beyond the seed)
    cdef floating value
    if end_index == 0:
        if grad_h0 != NULL:
            for i in range(mb * h):
                nabla_out[i] = 0
            _recurrent_product(mb, h, G, delta_ring, mb, packed_rw_t, rw_t, G, c'N', nabla_out, mb)
            _scatter_state(dims, nabla_out, mb, grad_h0, grad_h0_strides)
        if grad_c0 != NULL:
            for k in range(h):
                for m in range(mb):
                    value = mp[m] * a[m + (h + k) * ld_gates] * cell_error_next[m + k * mb]
                    if dims.peepholes:
                        value = value + (delta[m + (h + k) * ld_delta] * peep_f[k]
                                         + delta[m + (3 * h + k) * ld_delta] * peep_g[k])
                    grad_c0[m * grad_c0_strides.minibatch + k * grad_c0_strides.feature] = value
    else:
        for k in range(h):
            for m in range(mb):
                if grad_h0 != NULL:
                    grad_h0[m * grad_h0_strides.minibatch + k * grad_h0_strides.feature] = 0
                if grad_c0 != NULL:
                    grad_c0[m * grad_c0_strides.minibatch + k * grad_c0_strides.feature] = 0
    free(owned)
    return LSTM_OK


# ---------------------------------------------------------------------------------------------
# thin Python entry points (lstmfast.functional validates and converts before calling these)

ACTIVATION_CODES = {
    "tanh": 0, "sigmoid": 1, "hardsigmoid": 2, "softsign": 3, "relu": 4, "leakyrelu": 5,
    "elu": 6, "selu": 7, "softplus": 8, "identity": 9, "hardtanh": 10, "cube": 11,
    "rectifiedtanh": 12, "rationaltanh": 13,
}

ERROR_MESSAGES = {
    LSTM_ERR_ARGUMENT: "invalid argument (a size < 1, a missing buffer or a too small leading dimension)",
    LSTM_ERR_ACTIVATION: "unknown activation code",
    LSTM_ERR_TOO_LARGE: "the problem is too large for the BLAS integer type of this SciPy",
    LSTM_ERR_NO_MEMORY: "could not allocate the work space",
}


cdef inline void* _data(cnp.ndarray array):
    return NULL if array is None else cnp.PyArray_DATA(array)


cdef inline lstm_strides _strides(cnp.ndarray array, int kind):
    """Element strides of a validated array. kind 3: [mb, f, T]; 2: [mb, f] (time 0); 1: mask [mb, T]."""
    cdef lstm_strides st
    st.minibatch = 0
    st.feature = 0
    st.time = 0
    if array is None:
        return st
    cdef Py_ssize_t item = array.itemsize
    st.minibatch = array.strides[0] // item
    if kind == 3:
        st.feature = array.strides[1] // item
        st.time = array.strides[2] // item
    elif kind == 2:
        st.feature = array.strides[1] // item
    else:
        st.time = array.strides[1] // item
    return st


cdef lstm_dims _dims(Py_ssize_t minibatch, Py_ssize_t n_in, Py_ssize_t hidden, Py_ssize_t time_steps,
                     bint peepholes, bint forwards, int activation, int gate_activation):
    cdef lstm_dims d
    d.minibatch = minibatch
    d.n_in = n_in
    d.hidden = hidden
    d.time_steps = time_steps
    d.peepholes = peepholes
    d.forwards = forwards
    d.activation = activation
    d.gate_activation = gate_activation
    return d


def cache_size(Py_ssize_t minibatch, Py_ssize_t n_in, Py_ssize_t hidden, Py_ssize_t time_steps):
    """Elements of the forward cache lstm_backward reads (-1 when too large)."""
    cdef lstm_dims d = _dims(minibatch, n_in, hidden, time_steps, 0, 1, 0, ACT_SIGMOID)
    return lstm_cache_size(&d)


def forward_workspace_size(Py_ssize_t minibatch, Py_ssize_t n_in, Py_ssize_t hidden,
                           Py_ssize_t time_steps, bint for_backprop):
    cdef lstm_dims d = _dims(minibatch, n_in, hidden, time_steps, 0, 1, 0, ACT_SIGMOID)
    return lstm_forward_workspace_size(&d, for_backprop)


def backward_workspace_size(Py_ssize_t minibatch, Py_ssize_t n_in, Py_ssize_t hidden,
                            Py_ssize_t time_steps):
    cdef lstm_dims d = _dims(minibatch, n_in, hidden, time_steps, 0, 1, 0, ACT_SIGMOID)
    return lstm_backward_workspace_size(&d)


def check_dims(Py_ssize_t minibatch, Py_ssize_t n_in, Py_ssize_t hidden, Py_ssize_t time_steps,
               bint peepholes, int activation, int gate_activation):
    """The kernels' own verdict on a problem size: 0 (LSTM_OK) or a negative LSTM_ERR_* code."""
    cdef lstm_dims d = _dims(minibatch, n_in, hidden, time_steps, peepholes, 1, activation,
                             gate_activation)
    return lstm_check_dims(&d)


cdef int _forward_typed(floating* tag, lstm_dims* d, cnp.ndarray x, cnp.ndarray W, cnp.ndarray RW,
                        cnp.ndarray b, cnp.ndarray h0, cnp.ndarray c0, cnp.ndarray mask,
                        cnp.ndarray out, cnp.ndarray last_h, cnp.ndarray last_c,
                        cnp.ndarray cache, cnp.ndarray workspace, cnp.ndarray cancel):
    cdef lstm_strides xs = _strides(x, 3), hs = _strides(h0, 2), cs = _strides(c0, 2)
    cdef lstm_strides ms = _strides(mask, 1), os = _strides(out, 3)
    cdef lstm_strides lhs = _strides(last_h, 2), lcs = _strides(last_c, 2)
    cdef Py_ssize_t ld_w = W.strides[1] // W.itemsize, ld_rw = RW.strides[1] // RW.itemsize
    cdef Py_ssize_t b_stride = b.strides[0] // b.itemsize
    cdef const floating* px = <const floating*>_data(x)
    cdef const floating* pw = <const floating*>_data(W)
    cdef const floating* prw = <const floating*>_data(RW)
    cdef const floating* pb = <const floating*>_data(b)
    cdef const floating* ph0 = <const floating*>_data(h0)
    cdef const floating* pc0 = <const floating*>_data(c0)
    cdef const floating* pm = <const floating*>_data(mask)
    cdef floating* pout = <floating*>_data(out)
    cdef floating* plh = <floating*>_data(last_h)
    cdef floating* plc = <floating*>_data(last_c)
    cdef floating* pcache = <floating*>_data(cache)
    cdef floating* pws = <floating*>_data(workspace)
    cdef const int* pcancel = <const int*>_data(cancel)
    cdef int status
    with nogil:
        status = _forward_impl(d, px, xs, pw, ld_w, prw, ld_rw, pb, b_stride, ph0, hs, pc0, cs,
                               pm, ms, pout, os, plh, lhs, plc, lcs, pcache, pws, pcancel)
    return status


def forward(x, W, RW, b, h0, c0, mask, out, last_h, last_c, cache, workspace,
            bint peepholes, bint forwards, int activation, int gate_activation, cancel=None):
    """Run lstm_forward on validated, aligned arrays of one dtype (float32 or float64).

    x [mb, n_in, T], W [n_in, 4h] and RW [h, 4h(+3)] with unit row stride, b [4h]; h0, c0, mask,
    last_h, last_c, cache may be None; out [mb, h, T] is written. cancel: None or a one-element
    int32 array polled each step (nonzero: stop, raising KeyboardInterrupt). Raises RuntimeError
    on any other kernel error code (the Python layer validates first, so that signals a bug).
    """
    cdef lstm_dims d = _dims(x.shape[0], x.shape[1], RW.shape[0], x.shape[2], peepholes, forwards,
                             activation, gate_activation)
    cdef int status
    if x.dtype == np.float32:
        status = _forward_typed[float](<float*>NULL, &d, x, W, RW, b, h0, c0, mask, out, last_h, last_c,
                                cache, workspace, cancel)
    else:
        status = _forward_typed[double](<double*>NULL, &d, x, W, RW, b, h0, c0, mask, out, last_h, last_c,
                                cache, workspace, cancel)
    if status == LSTM_ERR_CANCELLED:
        raise KeyboardInterrupt("lstm_forward interrupted")
    if status != LSTM_OK:
        raise RuntimeError(f"lstm_forward failed: {ERROR_MESSAGES.get(status, status)}")


cdef int _backward_typed(floating* tag, lstm_dims* d, cnp.ndarray W, cnp.ndarray RW,
                         cnp.ndarray cache, cnp.ndarray eps, Py_ssize_t tbptt,
                         cnp.ndarray gW, cnp.ndarray gRW, cnp.ndarray gb, cnp.ndarray gx,
                         cnp.ndarray gh0, cnp.ndarray gc0, cnp.ndarray workspace,
                         cnp.ndarray cancel):
    cdef lstm_strides es = _strides(eps, 3), gxs = _strides(gx, 3)
    cdef lstm_strides ghs = _strides(gh0, 2), gcs = _strides(gc0, 2)
    cdef Py_ssize_t ld_w = W.strides[1] // W.itemsize, ld_rw = RW.strides[1] // RW.itemsize
    cdef Py_ssize_t ld_gw = gW.strides[1] // gW.itemsize, ld_grw = gRW.strides[1] // gRW.itemsize
    cdef Py_ssize_t gb_stride = gb.strides[0] // gb.itemsize
    cdef const floating* pw = <const floating*>_data(W)
    cdef const floating* prw = <const floating*>_data(RW)
    cdef const floating* pcache = <const floating*>_data(cache)
    cdef const floating* peps = <const floating*>_data(eps)
    cdef floating* pgw = <floating*>_data(gW)
    cdef floating* pgrw = <floating*>_data(gRW)
    cdef floating* pgb = <floating*>_data(gb)
    cdef floating* pgx = <floating*>_data(gx)
    cdef floating* pgh = <floating*>_data(gh0)
    cdef floating* pgc = <floating*>_data(gc0)
    cdef floating* pws = <floating*>_data(workspace)
    cdef const int* pcancel = <const int*>_data(cancel)
    cdef int status
    with nogil:
        status = _backward_impl(d, pw, ld_w, prw, ld_rw, pcache, peps, es, tbptt, pgw, ld_gw,
                                pgrw, ld_grw, pgb, gb_stride, pgx, gxs, pgh, ghs, pgc, gcs, pws,
                                pcancel)
    return status


def backward(W, RW, cache, eps, Py_ssize_t tbptt_length, gW, gRW, gb, gx, gh0, gc0, workspace,
             Py_ssize_t minibatch, Py_ssize_t time_steps,
             bint peepholes, bint forwards, int activation, int gate_activation, cancel=None):
    """Run lstm_backward on validated arrays (see `forward`); gradients are overwritten."""
    cdef lstm_dims d = _dims(minibatch, W.shape[0], RW.shape[0], time_steps, peepholes, forwards,
                             activation, gate_activation)
    cdef int status
    if W.dtype == np.float32:
        status = _backward_typed[float](<float*>NULL, &d, W, RW, cache, eps, tbptt_length, gW, gRW, gb,
                                 gx, gh0, gc0, workspace, cancel)
    else:
        status = _backward_typed[double](<double*>NULL, &d, W, RW, cache, eps, tbptt_length, gW, gRW, gb,
                                 gx, gh0, gc0, workspace, cancel)
    if status == LSTM_ERR_CANCELLED:
        raise KeyboardInterrupt("lstm_backward interrupted")
    if status != LSTM_OK:
        raise RuntimeError(f"lstm_backward failed: {ERROR_MESSAGES.get(status, status)}")


def set_recurrent_gemm(str kind):
    """'packed': per-step recurrent GEMMs on weights packed once per pass (AVX2+FMA CPUs; the
    default); 'blas': always OpenBLAS. Returns the previous setting. For benchmarks and tests."""
    global _use_packed_gemm
    previous = "packed" if _use_packed_gemm else "blas"
    if kind not in ("packed", "blas"):
        raise ValueError(f"kind: expected 'packed' or 'blas', got {kind!r}")
    _use_packed_gemm = 1 if kind == "packed" else 0
    return previous


def simd_variant():
    """The variant of the vectorised exp/tanh/sigmoid in use: 'avx2+fma' or 'portable'."""
    return "avx2+fma" if _AVX2_ACTIVE else "portable"


def vector_math(str function, values):
    """Apply the kernels' vectorised 'exp', 'tanh' or 'sigmoid' to a float32/float64 array
    (for tests and diagnostics); returns a new array."""
    cdef cnp.ndarray x = np.ascontiguousarray(values)
    if x.dtype != np.float32 and x.dtype != np.float64:
        raise TypeError(f"values: expected float32 or float64, got {x.dtype}")
    cdef cnp.ndarray y = np.empty_like(x)
    cdef Py_ssize_t n = x.size
    cdef int kind
    if function == "tanh":
        kind = 0
    elif function == "sigmoid":
        kind = 1
    elif function == "exp":
        kind = 2
    else:
        raise ValueError(f"function: expected 'exp', 'tanh' or 'sigmoid', got {function!r}")
    if x.dtype == np.float32:
        with nogil:
            _vector_math_typed(<const float*>cnp.PyArray_DATA(x), <float*>cnp.PyArray_DATA(y), n, kind)
    else:
        with nogil:
            _vector_math_typed(<const double*>cnp.PyArray_DATA(x), <double*>cnp.PyArray_DATA(y), n, kind)
    return y


cdef void _vector_math_typed(const floating* x, floating* y, Py_ssize_t n, int kind) noexcept nogil:
    if kind == 0:
        activate_array(ACT_TANH, x, y, n)
    elif kind == 1:
        activate_array(ACT_SIGMOID, x, y, n)
    elif floating is float:
        lf_exp_array_f32(x, y, n)
    else:
        lf_exp_array_f64(x, y, n)


def _time_recurrent_product(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, Py_ssize_t repeats,
                            str kind, dtype=np.float32):
    """Seconds per call of the per-step recurrent product C[M, N] += A[M, K] B[K, N] with the
    packed AVX2 kernel ('packed') or OpenBLAS ('blas'): a benchmark helper, no Python in the loop."""
    import time
    cdef cnp.ndarray a = np.asfortranarray(np.random.default_rng(0).standard_normal((M, K)), dtype=dtype)
    cdef cnp.ndarray b = np.asfortranarray(np.random.default_rng(1).standard_normal((K, N)), dtype=dtype)
    cdef cnp.ndarray c = np.zeros((M, N), dtype=dtype, order="F")
    cdef cnp.ndarray packed = np.zeros(((N + 5) // 6) * 6 * K, dtype=dtype)
    cdef Py_ssize_t r
    cdef bint use_packed = kind == "packed" and lf_packed_gemm_available != 0
    start = time.perf_counter()
    if dtype == np.float32:
        with nogil:
            if use_packed:
                _pack_weights(<float*>cnp.PyArray_DATA(b), 1, K, K, N, <float*>cnp.PyArray_DATA(packed))
            for r in range(repeats):
                _recurrent_product(M, N, K, <float*>cnp.PyArray_DATA(a), M,
                                   <float*>cnp.PyArray_DATA(packed) if use_packed else <float*>NULL,
                                   <float*>cnp.PyArray_DATA(b), K, c'N', <float*>cnp.PyArray_DATA(c), M)
    else:
        with nogil:
            if use_packed:
                _pack_weights(<double*>cnp.PyArray_DATA(b), 1, K, K, N, <double*>cnp.PyArray_DATA(packed))
            for r in range(repeats):
                _recurrent_product(M, N, K, <double*>cnp.PyArray_DATA(a), M,
                                   <double*>cnp.PyArray_DATA(packed) if use_packed else <double*>NULL,
                                   <double*>cnp.PyArray_DATA(b), K, c'N', <double*>cnp.PyArray_DATA(c), M)
    return (time.perf_counter() - start) / repeats
