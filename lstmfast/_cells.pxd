# The seed's gate math: the element-wise code of one time step (DL4J 0.9.1 LSTMHelpers'
# activateHelper / backpropGradientHelper), on contiguous per-step blocks. "LSTMHelpers N-M"
# cites the lines of deeplearning4j-nn/.../layers/recurrent/LSTMHelpers.java (0.9.1) a block
# ports; z holds ifogActivations (LSTMHelpers 184-189) on entry to the forward cells. Inline, for
# pyx/kernels.pyx only (build-only: it needs pyx/lstmfast_cells.h on the include path).
from cython cimport floating

from lstmfast._activations cimport activate_array, derivative_array
from lstmfast.kernels cimport ACT_TANH, ACT_SIGMOID

# The element-wise code of a step in one pass for tanh / sigmoid (pyx/lstmfast_cells.h)
cdef extern from "lstmfast_cells.h" nogil:
    void lf_forward_cells_f32(Py_ssize_t n, Py_ssize_t stride, float* z, float* a, float* mca,
                              const float* peep, const float* c_prev, float* h_cur, float* c_cur)
    void lf_forward_cells_f64(Py_ssize_t n, Py_ssize_t stride, double* z, double* a, double* mca,
                              const double* peep, const double* c_prev, double* h_cur,
                              double* c_cur)
    void lf_backward_cells_f32(Py_ssize_t n, Py_ssize_t stride, const float* a, const float* mca,
                               const float* c_prev, const float* nabla_out, const float* a_next,
                               const float* delta_next, const float* cell_error_next,
                               const float* peep, const float* cell_error_extra, float* delta,
                               float* cell_error)
    void lf_backward_cells_f64(Py_ssize_t n, Py_ssize_t stride, const double* a, const double* mca,
                               const double* c_prev, const double* nabla_out, const double* a_next,
                               const double* delta_next, const double* cell_error_next,
                               const double* peep, const double* cell_error_extra, double* delta,
                               double* cell_error)
    # choose every vectorised variant for the CPU (LSTMFAST_ISA may lower it); the level in use
    int lf_select_isa()
    int LF_ISA_BASELINE, LF_ISA_AVX2, LF_ISA_AVX512
    int lf_cpu_isa()
    const char* lf_isa_names[3]


# ---------------------------------------------------------------------------------------------
# element-wise step code, on contiguous [mb, F] blocks of one step: index m + k*mb for unit k, so
# that each gate is one contiguous run of h*mb values (gate g of unit k at g*h*mb + m + k*mb).
# A thread of the team handles the units u0..u1-1: runs of n = (u1-u0)*mb values at offset u0*mb
# of each gate block, the gate blocks `stride` = h*mb apart.

cdef inline void _forward_cells(Py_ssize_t n, Py_ssize_t stride, Py_ssize_t mb, int act, int gate,
                                floating* z, floating* a, floating* mca,
                                const floating* peep_block,
                                const floating* c_prev, floating* h_cur, floating* c_cur,
                                const floating* mask_col) noexcept nogil:
    """Gates, cell and output of one step: seed lines 'inputActivations' .. 'prevMemCellState = ...'.

    z [mb, 4h] holds x W + b + h_prev RW on entry; on exit the complete pre-activations
    (peepholes added). a [mb, 4h] and mca [mb, h] receive the activations; c_prev, h_cur, c_cur
    are [mb, h]. peep_block (NULL: no peepholes) wFF, wOO, wGG broadcast to [mb, 3h]. mask_col [mb] or NULL
    (no mask). All of them offset to this thread's first unit; n values per gate, gate blocks
    `stride` apart.
    """
    cdef Py_ssize_t i
    cdef floating* zi = z
    cdef floating* zf = z + stride
    cdef floating* zo = z + 2 * stride
    cdef floating* zg = z + 3 * stride
    cdef floating* ai = a
    cdef floating* af = a + stride
    cdef floating* ao = a + 2 * stride
    cdef floating* ag = a + 3 * stride
    if act == ACT_TANH and gate == ACT_SIGMOID:
        # the usual activations: one pass (pyx/lstmfast_cells.h)
        if floating is float:
            lf_forward_cells_f32(n, stride, z, a, mca, peep_block, c_prev, h_cur, c_cur)
        else:
            lf_forward_cells_f64(n, stride, z, a, mca, peep_block, c_prev, h_cur, c_cur)
        _mask_cells(n, mb, mask_col, h_cur, c_cur)
        return
    if peep_block != NULL:
        # forget and input-gate peepholes on the previous cell state (wFF, wGG): LSTMHelpers
        # 207-208, 226-227
        for i in range(n):
            zf[i] = zf[i] + c_prev[i] * peep_block[i]
            zg[i] = zg[i] + c_prev[i] * peep_block[2 * stride + i]
    activate_array(act, zi, ai, n)          # block input: LSTMHelpers 190-203
    activate_array(gate, zf, af, n)         # forget gate: LSTMHelpers 204-222
    activate_array(gate, zg, ag, n)         # input gate: LSTMHelpers 223-240
    # c = fa * c_prev + ga * ia (LSTMHelpers 248-256); the output-gate peephole on the current,
    # unmasked c (wOO, LSTMHelpers 259-263)
    for i in range(n):
        c_cur[i] = af[i] * c_prev[i] + ag[i] * ai[i]
    if peep_block != NULL:
        # (a loop of its own: one output per loop keeps it vectorised)
        for i in range(n):
            zo[i] = zo[i] + c_cur[i] * peep_block[stride + i]
    activate_array(gate, zo, ao, n)         # output gate: LSTMHelpers 264-276
    activate_array(act, c_cur, mca, n)      # memCellActivations (unmasked c): LSTMHelpers 282
    for i in range(n):                      # h = mca * oa: LSTMHelpers 287-297
        h_cur[i] = mca[i] * ao[i]
    _mask_cells(n, mb, mask_col, h_cur, c_cur)


cdef inline void _mask_cells(Py_ssize_t n, Py_ssize_t mb, const floating* mask_col,
                             floating* h_cur, floating* c_cur) noexcept nogil:
    """The mask zeroes h and c (the seed's muliColumnVector(timeStepMaskColumn), LSTMHelpers
    299-307); mask_col NULL: no mask."""
    cdef Py_ssize_t k, m
    cdef floating msk
    if mask_col != NULL:
        for k in range(n // mb):
            for m in range(mb):
                msk = mask_col[m]
                h_cur[m + k * mb] = h_cur[m + k * mb] * msk
                c_cur[m + k * mb] = c_cur[m + k * mb] * msk


cdef inline void _backward_cells(Py_ssize_t n, Py_ssize_t stride, Py_ssize_t mb, int act, int gate,
                                 const floating* z, const floating* a, const floating* mca,
                                 const floating* c_prev, const floating* c_cur,
                                 const floating* mask_col, bint masked_step,
                                 const floating* nabla_out,
                                 const floating* a_next, const floating* delta_next,
                                 const floating* cell_error_next, const floating* peep_block,
                                 floating* delta, floating* cell_error,
                                 floating* sum_f, floating* sum_o, floating* sum_g,
                                 floating* scratch, const floating* cell_error_extra) noexcept nogil:
    """Deltas of one step: seed lines 'nablaCellState' .. 'deltaifogNext.muliColumnVector'.

    Blocks as in _forward_cells. nabla_out [mb, h] is dL/dh of this step (epsilon plus the
    recurrent term). a_next, delta_next, cell_error_next belong to the next processed step, or
    are NULL at the last one. Writes the masked deltas [i, f, o, g] ([mb, 4h]) and this step's
    cell error (nablaCellState: not masked, as in the seed); accumulates the peephole sums.
    mask_col NULL: no mask; masked_step: some entry of mask_col is not 1. scratch: 6 blocks of
    [mb, h]. cell_error_extra (NULL: none) is added to the cell error: dL/d(last c) at the last
    step. Offsets and `stride` as in _forward_cells (scratch's blocks also `stride` apart).
    """
    cdef Py_ssize_t i, k, m
    cdef const floating* zi = z
    cdef const floating* zf = z + stride
    cdef const floating* zo = z + 2 * stride
    cdef const floating* zg = z + 3 * stride
    cdef const floating* ai = a
    cdef const floating* af = a + stride
    cdef const floating* ao = a + 2 * stride
    cdef const floating* ag = a + 3 * stride
    cdef floating* di = delta
    cdef floating* df = delta + stride
    cdef floating* do_ = delta + 2 * stride
    cdef floating* dg = delta + 3 * stride
    cdef floating* grad_o = scratch
    cdef floating* grad_cell = scratch + stride
    cdef floating* grad_f = scratch + 2 * stride
    cdef floating* grad_g = scratch + 3 * stride
    cdef floating* grad_i = scratch + 4 * stride
    cdef floating* cell_act = scratch + 5 * stride
    if act == ACT_TANH and gate == ACT_SIGMOID and not masked_step:
        # the usual activations: one pass (pyx/lstmfast_cells.h); masking and the peephole sums
        # below as on the general path
        if floating is float:
            lf_backward_cells_f32(n, stride, a, mca, c_prev, nabla_out, a_next, delta_next,
                                  cell_error_next, peep_block, cell_error_extra, delta,
                                  cell_error)
        else:
            lf_backward_cells_f64(n, stride, a, mca, c_prev, nabla_out, a_next, delta_next,
                                  cell_error_next, peep_block, cell_error_extra, delta,
                                  cell_error)
        _mask_and_peephole_sums(n, mb, mask_col, c_prev, c_cur, delta, stride, peep_block,
                                sum_f, sum_o, sum_g)
        return
    # the output gate's delta: LSTMHelpers 438-447
    derivative_array(gate, zo, ao, grad_o, n)
    # the layer activation's derivative at the stored (masked) cell state, as the seed's
    # afn.backprop(currMemCellState, ...); where unmasked that is memCellActivations' point
    if masked_step:
        activate_array(act, c_cur, cell_act, n)
        for k in range(n // mb):
            for m in range(mb):
                if mask_col[m] == 1:
                    cell_act[m + k * mb] = mca[m + k * mb]
        derivative_array(act, c_cur, cell_act, grad_cell, n)
    else:
        derivative_array(act, c_cur, mca, grad_cell, n)
    # output-gate delta (masked at the end, as the seed) and the cell error (nablaCellState:
    # LSTMHelpers 451-452, + deltao wOO 454-455, + the next step's wFF / wGG terms 417-424 and
    # fa_next nablaCellStateNext 459-460); one output per loop
    # (with several, GCC gives up its run-time alias checks and the loop stays scalar)
    for i in range(n):
        do_[i] = (nabla_out[i] * mca[i]) * grad_o[i]
    for i in range(n):
        cell_error[i] = grad_cell[i] * (ao[i] * nabla_out[i])
    if peep_block != NULL:
        for i in range(n):
            cell_error[i] = cell_error[i] + do_[i] * peep_block[stride + i]
    if delta_next != NULL:
        if peep_block != NULL:
            for i in range(n):
                cell_error[i] = ((delta_next[stride + i] * peep_block[i]
                                  + delta_next[3 * stride + i] * peep_block[2 * stride + i])
                                 + cell_error[i])
        for i in range(n):
            cell_error[i] = cell_error[i] + a_next[stride + i] * cell_error_next[i]
    if cell_error_extra != NULL:
        for i in range(n):
            cell_error[i] = cell_error[i] + cell_error_extra[i]
    # the forget, input-gate and block-input deltas: LSTMHelpers 466-476, 482-494, 497-501
    derivative_array(gate, zf, af, grad_f, n)
    derivative_array(gate, zg, ag, grad_g, n)
    derivative_array(act, zi, ai, grad_i, n)
    for i in range(n):
        df[i] = (grad_f[i] * cell_error[i]) * c_prev[i]
    for i in range(n):
        dg[i] = grad_g[i] * (ai[i] * cell_error[i])
    for i in range(n):
        di[i] = grad_i[i] * (ag[i] * cell_error[i])
    _mask_and_peephole_sums(n, mb, mask_col, c_prev, c_cur, delta, stride, peep_block,
                            sum_f, sum_o, sum_g)


cdef inline void _mask_and_peephole_sums(Py_ssize_t n, Py_ssize_t mb, const floating* mask_col,
                                         const floating* c_prev, const floating* c_cur,
                                         floating* delta, Py_ssize_t stride,
                                         const floating* peep_block, floating* sum_f,
                                         floating* sum_o, floating* sum_g) noexcept nogil:
    """The end of _backward_cells: the mask on the deltas (LSTMHelpers 505-511), then (with
    peepholes) each unit's sums over the minibatch for the peephole gradients."""
    cdef Py_ssize_t i, k, m
    cdef floating msk, s_f, s_o, s_g
    cdef floating* di = delta
    cdef floating* df = delta + stride
    cdef floating* do_ = delta + 2 * stride
    cdef floating* dg = delta + 3 * stride
    if mask_col != NULL:
        for k in range(n // mb):
            for m in range(mb):
                msk = mask_col[m]
                i = m + k * mb
                di[i] = di[i] * msk
                df[i] = df[i] * msk
                do_[i] = do_[i] * msk
                dg[i] = dg[i] * msk
    if peep_block != NULL:
        for k in range(n // mb):
            s_f = 0
            s_o = 0
            s_g = 0
            for m in range(mb):
                i = m + k * mb
                s_f = s_f + df[i] * c_prev[i]
                s_g = s_g + dg[i] * c_prev[i]
                s_o = s_o + do_[i] * c_cur[i]
            sum_f[k] += s_f
            sum_o[k] += s_o
            sum_g[k] += s_g
