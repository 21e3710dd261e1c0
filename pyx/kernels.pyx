# cython: language_level=3
"""The port of DL4J's LSTMHelpers (../shared/seed/LSTMHelpers.java) to typed Cython over BLAS.

Internal layout. The seed works on [minibatch, features] slices of [minibatch, features, T]
arrays, one time step at a time. This port keeps every per-step quantity feature-major (a
column of 4h gate values per example) and in *processing order* s = 0..T-1 (time t = s going
forwards, t = T-1-s going backwards), so that
  - the input projection of all steps is one GEMM (seed: `miniBatchData.mmul(inputWeights)` per step),
  - inside the time loop only the recurrent GEMM remains (seed: `Nd4j.gemm(prevOutputActivations,
    recurrentWeightsIFOG, ...)` and, backwards, `Nd4j.gemm(deltaifogNext, wIFOG, nablaOut, ...)`),
  - after the backward loop one GEMM each gives dL/dW, dL/dRW and dL/dx,
  - the element-wise gate code is one pass per step over contiguous memory.

Cache written by a forward pass for backprop (the seed's FwdPassReturn), column (s, m) = s*mb + m:
  xp   [n_in, mb*T]     packed input
  hs   [h, mb*(T+1)]    slot 0: h0 (or zeros); slot s+1: output at step s (masked)   (prevAct, fwdPassOutputAsArrays)
  cs   [h, mb*(T+1)]    slot 0: c0 (or zeros); slot s+1: cell state at step s (masked) (prevMemCell, memCellState)
  z    [4h, mb*T]       gate pre-activations incl. bias and peepholes                  (iz, fz, oz, gz)
  a    [4h, mb*T]       gate activations                                              (ia, fa, oa, ga)
  mca  [h, mb*T]        layer activation of the unmasked cell state                   (memCellActivations)
  mp   [mb*T]           mask in processing order (1 where no mask was given)
"""
from libc.stdlib cimport malloc, free
from libc.string cimport memset, memcpy
from cython cimport floating

cimport numpy as cnp
import numpy as np

from lstmfast._blas cimport gemm, fits_blas_int
from lstmfast._activations cimport activate, derivative
from lstmfast.kernels cimport (lstm_dims, lstm_strides, LSTM_OK, LSTM_ERR_ARGUMENT,
                               LSTM_ERR_ACTIVATION, LSTM_ERR_TOO_LARGE, LSTM_ERR_NO_MEMORY,
                               ACT_SIGMOID, ACT_HARDSIGMOID, ACT_COUNT)

cnp.import_array()

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
    cdef Py_ssize_t columns = _mul(dims.minibatch, dims.time_steps)
    cdef Py_ssize_t gates = _mul(4, dims.hidden)
    # BLAS sees: m/n/k in {4h(+3), h, n_in, mb, mb*T} and the same as leading dimensions.
    if columns < 0 or gates < 0 or not fits_blas_int(columns) or not fits_blas_int(gates + 3):
        return LSTM_ERR_TOO_LARGE
    if not fits_blas_int(dims.n_in) or not fits_blas_int(dims.hidden):
        return LSTM_ERR_TOO_LARGE
    if lstm_cache_size(dims) < 0:
        return LSTM_ERR_TOO_LARGE
    return LSTM_OK


cdef Py_ssize_t lstm_cache_size(const lstm_dims* dims) noexcept nogil:
    cdef Py_ssize_t mb = dims.minibatch, n_in = dims.n_in, h = dims.hidden, T = dims.time_steps
    # per column (s, m): xp n_in, z 4h, a 4h, mca h, mask 1; plus hs and cs with T+1 slots
    cdef Py_ssize_t per_column = _add(_add(n_in, _mul(9, h)), 1)
    cdef Py_ssize_t state = _mul(2, _mul(h, _mul(mb, _add(T, 1))))
    return _add(_mul(per_column, _mul(mb, T)), state)


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
    if for_backprop:
        return 0 if lstm_cache_size(dims) >= 0 else -1
    cdef Py_ssize_t chunk = _inference_chunk(dims)
    cdef Py_ssize_t per_step = _add(_add(dims.n_in, _mul(4, dims.hidden)), 1)
    # chunk of packed input, pre-activations and mask; two slots each of h and c
    return _add(_mul(_mul(per_step, dims.minibatch), chunk),
                _mul(4, _mul(dims.hidden, dims.minibatch)))


cdef Py_ssize_t lstm_backward_workspace_size(const lstm_dims* dims) noexcept nogil:
    if dims == NULL or dims.minibatch < 1 or dims.n_in < 1 or dims.hidden < 1 or dims.time_steps < 1:
        return -1
    cdef Py_ssize_t mb = dims.minibatch, h = dims.hidden, T = dims.time_steps
    # deltas [4h, mb*T], dL/dx packed [n_in, mb*T], nablaOut + 2 cell errors [h, mb], peephole sums 3h
    cdef Py_ssize_t columns = _mul(mb, T)
    return _add(_add(_mul(_add(_mul(4, h), dims.n_in), columns), _mul(3, _mul(h, mb))), _mul(3, h))


# ---------------------------------------------------------------------------------------------
# element-wise step code (one pass per time step over the [4h, mb] gate block)

cdef inline void _forward_cells(const lstm_dims* dims, floating* z, floating* a, floating* mca,
                                const floating* bias, Py_ssize_t bias_stride,
                                const floating* peep_f, const floating* peep_o, const floating* peep_g,
                                const floating* c_prev, floating* h_cur, floating* c_cur,
                                const floating* mask_col,
                                floating* out, lstm_strides out_strides) noexcept nogil:
    """Gates, cell and output for one step, seed lines 'inputActivations' .. 'prevMemCellState = ...'.

    z holds x W + h_prev RW on entry (column m at z + 4h m, blocks [i, f, o, g]); on exit it holds
    the complete pre-activations (bias and peepholes added). a (4h x mb) and mca (h x mb) are
    written when not NULL. out (strided, may be NULL) receives the step's output.
    """
    cdef Py_ssize_t h = dims.hidden, mb = dims.minibatch, m, k
    cdef int act = dims.activation, gate = dims.gate_activation
    cdef floating zi, zf, zo, zg, ia, fa, oa, ga, cp, c, cell_act, hv, msk
    cdef floating* zc
    cdef floating* ac
    for m in range(mb):
        zc = z + 4 * h * m
        msk = mask_col[m]
        for k in range(h):
            cp = c_prev[h * m + k]
            zi = zc[k] + bias[k * bias_stride]
            zf = zc[h + k] + bias[(h + k) * bias_stride]
            zg = zc[3 * h + k] + bias[(3 * h + k) * bias_stride]
            if peep_f != NULL:
                # forget and input-gate peepholes on the previous cell state (wFF, wGG)
                zf = zf + cp * peep_f[k]
                zg = zg + cp * peep_g[k]
            ia = activate(act, zi)
            fa = activate(gate, zf)
            ga = activate(gate, zg)
            c = fa * cp + ga * ia
            zo = zc[2 * h + k] + bias[(2 * h + k) * bias_stride]
            if peep_o != NULL:
                # output-gate peephole on the current (unmasked) cell state (wOO)
                zo = zo + c * peep_o[k]
            oa = activate(gate, zo)
            cell_act = activate(act, c)
            hv = cell_act * oa
            # masking: h and c both zeroed, as the seed's muliColumnVector(timeStepMaskColumn)
            hv = hv * msk
            c = c * msk
            h_cur[h * m + k] = hv
            c_cur[h * m + k] = c
            if a != NULL:
                zc[k] = zi
                zc[h + k] = zf
                zc[2 * h + k] = zo
                zc[3 * h + k] = zg
                ac = a + 4 * h * m
                ac[k] = ia
                ac[h + k] = fa
                ac[2 * h + k] = oa
                ac[3 * h + k] = ga
                mca[h * m + k] = cell_act
            if out != NULL:
                out[m * out_strides.minibatch + k * out_strides.feature] = hv


cdef inline void _backward_cells(const lstm_dims* dims, const floating* z, const floating* a,
                                 const floating* mca, const floating* c_prev, const floating* c_cur,
                                 const floating* mask_col, const floating* nabla_out,
                                 const floating* a_next, const floating* delta_next,
                                 const floating* cell_error_next,
                                 const floating* peep_f, const floating* peep_o, const floating* peep_g,
                                 floating* delta, floating* cell_error,
                                 floating* sum_f, floating* sum_o, floating* sum_g) noexcept nogil:
    """Deltas of one step, seed lines 'nablaCellState' .. 'deltaifogNext.muliColumnVector'.

    nabla_out (h x mb) is dL/dh for this step (epsilon plus the recurrent term). a_next,
    delta_next and cell_error_next are the next processed step's forget activations, masked
    deltas and cell error, or NULL at the last step. Writes the masked deltas [i, f, o, g]
    (4h x mb) and this step's cell error; accumulates the peephole gradient sums.
    """
    cdef Py_ssize_t h = dims.hidden, mb = dims.minibatch, m, k
    cdef int act = dims.activation, gate = dims.gate_activation
    cdef floating zi, zf, zo, zg, ia, fa, oa, ga, cp, cc, cell_act_stored, nout, msk
    cdef floating d_o, d_f, d_g, d_i, nabla_c
    cdef const floating* zc
    cdef const floating* ac
    cdef floating* dc
    for m in range(mb):
        zc = z + 4 * h * m
        ac = a + 4 * h * m
        dc = delta + 4 * h * m
        msk = mask_col[m]
        for k in range(h):
            zi = zc[k]
            zf = zc[h + k]
            zo = zc[2 * h + k]
            zg = zc[3 * h + k]
            ia = ac[k]
            fa = ac[h + k]
            oa = ac[2 * h + k]
            ga = ac[3 * h + k]
            cp = c_prev[h * m + k]
            cc = c_cur[h * m + k]
            nout = nabla_out[h * m + k]
            # output gate delta: nablaOut * sigmah(s) * gate'(zo)
            d_o = (nout * mca[h * m + k]) * derivative(gate, zo, oa)
            # cell error; the layer activation's derivative is taken at the stored (masked) cell
            # state, as the seed's afn.backprop(currMemCellState, ...)
            if msk == 1:
                cell_act_stored = mca[h * m + k]
            else:
                cell_act_stored = activate(act, cc)
            nabla_c = derivative(act, cc, cell_act_stored) * (oa * nout)
            if delta_next != NULL and peep_f != NULL:
                nabla_c = (delta_next[4 * h * m + h + k] * peep_f[k]
                           + delta_next[4 * h * m + 3 * h + k] * peep_g[k]) + nabla_c
            if peep_o != NULL:
                nabla_c = nabla_c + d_o * peep_o[k]
            if delta_next != NULL:
                nabla_c = nabla_c + a_next[4 * h * m + h + k] * cell_error_next[h * m + k]
            cell_error[h * m + k] = nabla_c
            d_f = derivative(gate, zf, fa) * nabla_c * cp
            d_g = derivative(gate, zg, ga) * (ia * nabla_c)
            d_i = derivative(act, zi, ia) * (ga * nabla_c)
            d_i = d_i * msk
            d_f = d_f * msk
            d_o = d_o * msk
            d_g = d_g * msk
            dc[k] = d_i
            dc[h + k] = d_f
            dc[2 * h + k] = d_o
            dc[3 * h + k] = d_g
            if peep_f != NULL:
                sum_f[k] += d_f * cp
                sum_g[k] += d_g * cp
                sum_o[k] += d_o * cc


# ---------------------------------------------------------------------------------------------
# forward

cdef inline Py_ssize_t _time_of(const lstm_dims* dims, Py_ssize_t s) noexcept nogil:
    return s if dims.forwards else dims.time_steps - 1 - s


cdef inline void _gather_state(const lstm_dims* dims, const floating* src, lstm_strides st,
                               floating* dst) noexcept nogil:
    """[minibatch, h] strided -> feature-major [h, minibatch]; zeros if src is NULL."""
    cdef Py_ssize_t m, k, h = dims.hidden
    if src == NULL:
        memset(dst, 0, h * dims.minibatch * sizeof(floating))
        return
    for m in range(dims.minibatch):
        for k in range(h):
            dst[h * m + k] = src[m * st.minibatch + k * st.feature]


cdef inline void _scatter_state(const lstm_dims* dims, const floating* src, floating* dst,
                                lstm_strides st) noexcept nogil:
    cdef Py_ssize_t m, k, h = dims.hidden
    if dst == NULL:
        return
    for m in range(dims.minibatch):
        for k in range(h):
            dst[m * st.minibatch + k * st.feature] = src[h * m + k]


cdef inline void _pack_input(const lstm_dims* dims, const floating* x, lstm_strides st,
                             Py_ssize_t s_begin, Py_ssize_t s_end, floating* xp) noexcept nogil:
    """x [mb, n_in, T] strided -> xp [n_in, mb*(s_end-s_begin)] in processing order."""
    cdef Py_ssize_t s, m, i, n_in = dims.n_in, mb = dims.minibatch
    cdef const floating* xt
    cdef floating* col
    for s in range(s_begin, s_end):
        xt = x + _time_of(dims, s) * st.time
        for m in range(mb):
            col = xp + n_in * (mb * (s - s_begin) + m)
            for i in range(n_in):
                col[i] = xt[m * st.minibatch + i * st.feature]


cdef inline void _pack_mask(const lstm_dims* dims, const floating* mask, lstm_strides st,
                            Py_ssize_t s_begin, Py_ssize_t s_end, floating* mp) noexcept nogil:
    cdef Py_ssize_t s, m, mb = dims.minibatch, t
    for s in range(s_begin, s_end):
        t = _time_of(dims, s)
        for m in range(mb):
            mp[mb * (s - s_begin) + m] = 1 if mask == NULL else mask[m * st.minibatch + t * st.time]


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
    cdef Py_ssize_t G = 4 * h, state = h * mb
    cdef bint for_backprop = cache != NULL
    cdef Py_ssize_t ws_size = lstm_forward_workspace_size(dims, for_backprop)
    cdef floating* owned = NULL
    if ws_size < 0:
        return LSTM_ERR_TOO_LARGE
    if workspace == NULL and ws_size > 0:
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
    cdef Py_ssize_t chunk
    if for_backprop:
        chunk = T
        xp = cache
        hs = xp + n_in * mb * T
        cs = hs + state * (T + 1)
        z = cs + state * (T + 1)
        a = z + G * mb * T
        mca = a + G * mb * T
        mp = mca + state * T
    else:
        chunk = _inference_chunk(dims)
        xp = workspace
        z = xp + n_in * mb * chunk
        mp = z + G * mb * chunk
        hs = mp + mb * chunk        # two slots, used alternately
        cs = hs + 2 * state

    _gather_state(dims, h0, h0_strides, hs)
    _gather_state(dims, c0, c0_strides, cs)

    cdef Py_ssize_t s0, s1, s, t
    cdef floating* z_step
    cdef floating* h_prev
    cdef floating* c_prev
    cdef floating* h_cur
    cdef floating* c_cur
    cdef floating* out_step
    cdef bint h_prev_is_zero = h0 == NULL
    s0 = 0
    while s0 < T:
        s1 = s0 + chunk if s0 + chunk < T else T
        if for_backprop:
            # one GEMM for the input projection of every step, [4h, mb*T] = W^T xp
            _pack_input(dims, x, x_strides, 0, T, xp)
            _pack_mask(dims, mask, mask_strides, 0, T, mp)
            gemm(c'T', c'N', G, mb * T, n_in, <floating>1, input_weights, ld_input_weights,
                 xp, n_in, <floating>0, z, G)
        else:
            _pack_input(dims, x, x_strides, s0, s1, xp)
            _pack_mask(dims, mask, mask_strides, s0, s1, mp)
            gemm(c'T', c'N', G, mb * (s1 - s0), n_in, <floating>1, input_weights, ld_input_weights,
                 xp, n_in, <floating>0, z, G)
        for s in range(s0, s1):
            t = _time_of(dims, s)
            if for_backprop:
                z_step = z + G * mb * s
                h_prev = hs + state * s
                c_prev = cs + state * s
                h_cur = h_prev + state
                c_cur = c_prev + state
            else:
                z_step = z + G * mb * (s - s0)
                h_prev = hs + state * (s % 2)
                c_prev = cs + state * (s % 2)
                h_cur = hs + state * ((s + 1) % 2)
                c_cur = cs + state * ((s + 1) % 2)
            if not h_prev_is_zero:
                # ifogActivations += prevOutputActivations . RW[:, 0:4h]
                gemm(c'T', c'N', G, mb, h, <floating>1, recurrent_weights, ld_recurrent_weights,
                     h_prev, h, <floating>1, z_step, G)
            h_prev_is_zero = False
            out_step = NULL if output == NULL else output + t * output_strides.time
            _forward_cells(dims, z_step,
                           NULL if a == NULL else a + G * mb * s,
                           NULL if mca == NULL else mca + state * s,
                           bias, bias_stride, peep_f, peep_o, peep_g,
                           c_prev, h_cur, c_cur,
                           mp + mb * (s if for_backprop else s - s0),
                           out_step, output_strides)
        s0 = s1

    if for_backprop:
        h_cur = hs + state * T
        c_cur = cs + state * T
    else:
        h_cur = hs + state * (T % 2)
        c_cur = cs + state * (T % 2)
    _scatter_state(dims, h_cur, last_h, last_h_strides)
    _scatter_state(dims, c_cur, last_c, last_c_strides)
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
    """A forward pass of one step: the state is read into the workspace before anything is
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
    cdef Py_ssize_t G = 4 * h, state = h * mb
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
    cdef const floating* cs = hs + state * (T + 1)
    cdef const floating* z = cs + state * (T + 1)
    cdef const floating* a = z + G * mb * T
    cdef const floating* mca = a + G * mb * T
    cdef const floating* mp = mca + state * T

    # the seed's endIdx: steps end_index..T-1 (processing order) are back-propagated
    cdef Py_ssize_t end_index = 0
    if tbptt_length > 0 and tbptt_length < T:
        end_index = T - tbptt_length
    cdef Py_ssize_t steps = T - end_index

    cdef floating* delta = workspace                      # [4h, mb*steps], step s at column block s-end_index
    cdef floating* grad_xp = delta + G * mb * T           # [n_in, mb*steps]
    cdef floating* nabla_out = grad_xp + n_in * mb * T    # [h, mb]
    cdef floating* cell_error = nabla_out + state         # [h, mb] this step
    cdef floating* cell_error_next = cell_error + state   # [h, mb] next processed step
    cdef floating* sum_f = cell_error_next + state
    cdef floating* sum_o = sum_f + h
    cdef floating* sum_g = sum_o + h
    cdef floating* swap

    cdef const floating* peep_f = NULL
    cdef const floating* peep_o = NULL
    cdef const floating* peep_g = NULL
    if dims.peepholes:
        peep_f = recurrent_weights + G * ld_recurrent_weights
        peep_o = recurrent_weights + (G + 1) * ld_recurrent_weights
        peep_g = recurrent_weights + (G + 2) * ld_recurrent_weights
        memset(sum_f, 0, 3 * h * sizeof(floating))

    cdef Py_ssize_t s, t, m, k, j, col
    cdef floating* delta_step
    cdef floating* delta_next
    cdef const floating* eps_t
    for s in range(T - 1, end_index - 1, -1):
        t = _time_of(dims, s)
        delta_step = delta + G * mb * (s - end_index)
        delta_next = NULL if s == T - 1 else delta_step + G * mb
        # nablaOut = epsilon slice (+ deltaifogNext . RW[:, 0:4h]^T, seed's Nd4j.gemm(..., false, true))
        eps_t = epsilon + t * epsilon_strides.time
        for m in range(mb):
            for k in range(h):
                nabla_out[h * m + k] = eps_t[m * epsilon_strides.minibatch + k * epsilon_strides.feature]
        if delta_next != NULL:
            gemm(c'N', c'N', h, mb, G, <floating>1, recurrent_weights, ld_recurrent_weights,
                 delta_next, G, <floating>1, nabla_out, h)
        _backward_cells(dims, z + G * mb * s, a + G * mb * s, mca + state * s,
                        cs + state * s, cs + state * (s + 1), mp + mb * s, nabla_out,
                        NULL if delta_next == NULL else a + G * mb * (s + 1), delta_next,
                        NULL if delta_next == NULL else cell_error_next,
                        peep_f, peep_o, peep_g, delta_step, cell_error, sum_f, sum_o, sum_g)
        swap = cell_error_next
        cell_error_next = cell_error
        cell_error = swap
    # cell_error_next now holds the cell error of step end_index

    # parameter gradients: one GEMM each over all back-propagated steps
    cdef Py_ssize_t columns = mb * steps
    gemm(c'N', c'T', n_in, G, columns, <floating>1, xp + n_in * mb * end_index, n_in,
         delta, G, <floating>0, grad_input_weights, ld_grad_input_weights)
    gemm(c'N', c'T', h, G, columns, <floating>1, hs + state * end_index, h,
         delta, G, <floating>0, grad_recurrent_weights, ld_grad_recurrent_weights)
    if dims.peepholes:
        for k in range(h):
            grad_recurrent_weights[k + G * ld_grad_recurrent_weights] = sum_f[k]
            grad_recurrent_weights[k + (G + 1) * ld_grad_recurrent_weights] = sum_o[k]
            grad_recurrent_weights[k + (G + 2) * ld_grad_recurrent_weights] = sum_g[k]
    for j in range(G):
        grad_bias[j * grad_bias_stride] = 0
    for col in range(columns):
        for j in range(G):
            grad_bias[j * grad_bias_stride] += delta[G * col + j]

    # dL/dx (the seed's epsilonNext), masked at masked steps, zero before end_index
    cdef floating* gx_t
    cdef const floating* gcol
    cdef floating msk
    if grad_input != NULL:
        gemm(c'N', c'N', n_in, columns, G, <floating>1, input_weights, ld_input_weights,
             delta, G, <floating>0, grad_xp, n_in)
        for s in range(T):
            t = _time_of(dims, s)
            gx_t = grad_input + t * grad_input_strides.time
            for m in range(mb):
                if s < end_index:
                    for k in range(n_in):
                        gx_t[m * grad_input_strides.minibatch + k * grad_input_strides.feature] = 0
                else:
                    gcol = grad_xp + n_in * (mb * (s - end_index) + m)
                    msk = mp[mb * s + m]
                    for k in range(n_in):
                        gx_t[m * grad_input_strides.minibatch + k * grad_input_strides.feature] = gcol[k] * msk

    # gradients with respect to the initial state (beyond the seed)
    cdef floating value
    if end_index == 0:
        if grad_h0 != NULL:
            gemm(c'N', c'N', h, mb, G, <floating>1, recurrent_weights, ld_recurrent_weights,
                 delta, G, <floating>0, nabla_out, h)
            _scatter_state(dims, nabla_out, grad_h0, grad_h0_strides)
        if grad_c0 != NULL:
            for m in range(mb):
                for k in range(h):
                    value = mp[m] * a[G * m + h + k] * cell_error_next[h * m + k]
                    if dims.peepholes:
                        value = value + (delta[G * m + h + k] * peep_f[k] + delta[G * m + 3 * h + k] * peep_g[k])
                    grad_c0[m * grad_c0_strides.minibatch + k * grad_c0_strides.feature] = value
    else:
        for m in range(mb):
            for k in range(h):
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
                        cnp.ndarray cache, cnp.ndarray workspace):
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
    cdef int status
    with nogil:
        status = lstm_forward(d, px, xs, pw, ld_w, prw, ld_rw, pb, b_stride, ph0, hs, pc0, cs,
                              pm, ms, pout, os, plh, lhs, plc, lcs, pcache, pws)
    return status


def forward(x, W, RW, b, h0, c0, mask, out, last_h, last_c, cache, workspace,
            bint peepholes, bint forwards, int activation, int gate_activation):
    """Run lstm_forward on validated, aligned arrays of one dtype (float32 or float64).

    x [mb, n_in, T], W [n_in, 4h] and RW [h, 4h(+3)] with unit row stride, b [4h]; h0, c0, mask,
    last_h, last_c, cache may be None; out [mb, h, T] is written. Raises RuntimeError on a kernel
    error code (the Python layer validates first, so this signals a bug or an impossible size).
    """
    cdef lstm_dims d = _dims(x.shape[0], x.shape[1], RW.shape[0], x.shape[2], peepholes, forwards,
                             activation, gate_activation)
    cdef int status
    if x.dtype == np.float32:
        status = _forward_typed[float](<float*>NULL, &d, x, W, RW, b, h0, c0, mask, out, last_h, last_c,
                                cache, workspace)
    else:
        status = _forward_typed[double](<double*>NULL, &d, x, W, RW, b, h0, c0, mask, out, last_h, last_c,
                                cache, workspace)
    if status != LSTM_OK:
        raise RuntimeError(f"lstm_forward failed: {ERROR_MESSAGES.get(status, status)}")


cdef int _backward_typed(floating* tag, lstm_dims* d, cnp.ndarray W, cnp.ndarray RW,
                         cnp.ndarray cache, cnp.ndarray eps, Py_ssize_t tbptt,
                         cnp.ndarray gW, cnp.ndarray gRW, cnp.ndarray gb, cnp.ndarray gx,
                         cnp.ndarray gh0, cnp.ndarray gc0, cnp.ndarray workspace):
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
    cdef int status
    with nogil:
        status = lstm_backward(d, pw, ld_w, prw, ld_rw, pcache, peps, es, tbptt, pgw, ld_gw,
                               pgrw, ld_grw, pgb, gb_stride, pgx, gxs, pgh, ghs, pgc, gcs, pws)
    return status


def backward(W, RW, cache, eps, Py_ssize_t tbptt_length, gW, gRW, gb, gx, gh0, gc0, workspace,
             Py_ssize_t minibatch, Py_ssize_t time_steps,
             bint peepholes, bint forwards, int activation, int gate_activation):
    """Run lstm_backward on validated arrays (see `forward`); gradients are overwritten."""
    cdef lstm_dims d = _dims(minibatch, W.shape[0], RW.shape[0], time_steps, peepholes, forwards,
                             activation, gate_activation)
    cdef int status
    if W.dtype == np.float32:
        status = _backward_typed[float](<float*>NULL, &d, W, RW, cache, eps, tbptt_length, gW, gRW, gb,
                                 gx, gh0, gc0, workspace)
    else:
        status = _backward_typed[double](<double*>NULL, &d, W, RW, cache, eps, tbptt_length, gW, gRW, gb,
                                 gx, gh0, gc0, workspace)
    if status != LSTM_OK:
        raise RuntimeError(f"lstm_backward failed: {ERROR_MESSAGES.get(status, status)}")
