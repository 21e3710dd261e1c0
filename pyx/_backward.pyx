# cython: language_level=3
"""The backward pass: the port of DL4J 0.9.1 LSTMHelpers.backpropGradientHelper
(deeplearning4j-nn/.../layers/recurrent/LSTMHelpers.java) over BLAS and the thread team, behind
lstmfast.kernels' lstm_backward / lstm_backward_ex. The internal layouts and the cache it reads
are described in lstmfast/_layout.pxd; the gate math of a step is lf_backward_cells
(pyx/lstmfast_cells.inc.h)."""
from libc.stdlib cimport malloc, free
from cython cimport floating

from lstmfast._blas cimport gemm, fits_blas_int
from lstmfast._layout cimport *
from lstmfast._team cimport *
from lstmfast._products cimport *
from lstmfast.kernels cimport (lstm_dims, lstm_strides, lstm_tuning, lstm_report, lstm_options,
                               LSTM_OK,
                               LSTM_ERR_ARGUMENT, LSTM_ERR_TOO_LARGE, LSTM_ERR_NO_MEMORY,
                               LSTM_ERR_CANCELLED, LSTM_ERR_ABANDONED)
from lstmfast._cells cimport lf_backward_cells_f32, lf_backward_cells_f64, lf_select_isa

# this module's copies of the vectorised math, the packed kernel and the cells: the variants
# lstmfast.kernels chose too (the same rule)
lf_select_isa()


cdef inline bint _use_row_groups(const lstm_dims* dims, Py_ssize_t rows,
                                 const lstm_tuning* tuning) noexcept nogil:
    """Whether a team splits the gradient GEMMs over `rows` step-stacked rows into two row
    groups (see _backward_steps). Only when the rows are at least 4h: the groups' partial sums
    cost F x 4h additions, the column split's duplicated packing about F x rows copies, and with
    few rows the row groups were slower (2 threads, float32: (10, 1, 256, 256) 1.33-1.41x,
    (20, 4, 512, 512) 1.15-1.26x the time of the column split; (50, 32, 64, 128) 0.93-0.95x)."""
    return tuning.gradient_split_rows and rows >= 4 * dims.hidden and _row_group_room(dims)


# What the threads of the backward time loop share (void* pointers: one struct for both dtypes).
ctypedef struct _backward_job:
    const lstm_dims* dims
    Py_ssize_t end_index
    Py_ssize_t steps_end           # the steps run: end_index..steps_end-1 (lengths: the longest)
    Py_ssize_t ld_delta
    bint eps_in_place              # epsilon's steps contiguous: read where they are
    const void* epsilon
    lstm_strides epsilon_strides
    const void* z
    const void* a
    const void* mca
    const void* cs
    const void* mp
    void* delta
    void* delta_ring
    void* nabla_out
    void* cell_error
    void* cell_error_next
    void* scratch
    const void* peep_block
    void* sum_f
    void* sum_o
    void* sum_g
    const void* rw_t
    const void* packed
    # LF_TEAM_MAX regions of _a_pack_len(mb, 4h): the packed deltas (each thread's, or the
    # team's two by step parity)
    void* a_pack
    const void* last_c_grad        # dL/d(last c) [mb, h], masked, or NULL: none
    const lstm_options* options    # lengths (NULL: none), see lstm_options
    const void* grad_last_c        # with lengths: the caller's dL/d(last c) (NULL: none) ...
    lstm_strides grad_last_c_strides
    void* last_c_grad_step         # ... and its rows of the examples ending at a step
    Py_ssize_t hp                  # the size of the h fed back and output: P (LSTMP) or h
    const void* projection_weights  # LSTMP: [h, P] (ld_projection_weights), else NULL
    Py_ssize_t ld_projection_weights
    void* nabla_proj               # LSTMP: [mb, P], dL/dh of the step
    void* grad_proj                # LSTMP: [mb*steps, P] step-stacked dL/dh (ld_delta)
    const void* rs                 # LSTMP: the cache's step-stacked r = o * act(c), ld mb*T
    void* grad_projection_weights  # LSTMP: dL/dW_proj [h, P]
    Py_ssize_t ld_grad_projection_weights
    _unit_groups groups            # the groups of units of the time loop (_plan_groups)
    # for the gradient GEMMs after the loop
    const void* xh                 # the cache's [xp | hs | ones], leading dimension ld_xh
    Py_ssize_t ld_xh
    void* grad_stack               # [n_in + h + 1, 4h]: dW, dRW[:, :4h] and bias sums stacked
    void* grad_partial             # [n_in + h + 1, 4h]: the second row group's sums, or NULL
    const void* input_weights
    Py_ssize_t ld_input_weights
    void* grad_input_weights
    Py_ssize_t ld_grad_input_weights
    void* grad_recurrent_weights
    Py_ssize_t ld_grad_recurrent_weights
    void* grad_xp                  # NULL: no dL/dx wanted
    const void* packed_w_t         # W^T packed for dL/dx on the packed kernel (NULL: BLAS)
    bint dx_per_step               # dL/dx of each step in the time loop, on its packed deltas
    void* dx_direct                # ... written straight to the caller's dL/dx at unmasked
    Py_ssize_t dx_direct_time      # steps (_dx_direct_at), or NULL: into grad_xp; its strides
    Py_ssize_t dx_direct_feature
    const int* cancel
    int stop_slots[2]
    int cancelled
    int parts                      # parts of the GEMMs outside the time loop (_split_parts)
    lf_barrier barrier


cdef void _stacked_gradient_product(floating* tag, _backward_job* job, Py_ssize_t k0,
                                    Py_ssize_t k1, Py_ssize_t c0, Py_ssize_t width,
                                    floating* stack) noexcept nogil:
    """[xp | hs | 1]^T D over the step-stacked rows k0..k1-1 and the gate columns c0..c0+width-1,
    into stack [n_in + h + 1, width]: dL/dW, dL/dRW[:, :4h] and the bias sums stacked (the seed
    accumulates them step by step; the cache keeps xp, hs and the ones side by side, so one GEMM
    makes one pass over D instead of three, and the bias sums are no longer a one-row GEMM).
    k1 > k0: the callers' row ranges are never empty (all rows, or half of at least 4h)."""
    cdef Py_ssize_t mb = job.dims.minibatch, ld_delta = job.ld_delta
    cdef Py_ssize_t F = job.dims.n_in + job.hp + 1
    gemm(c'T', c'N', F, width, k1 - k0, <floating>1,
         <const floating*>job.xh + mb * job.end_index + k0, job.ld_xh,
         <const floating*>job.delta + k0 + c0 * ld_delta, ld_delta, <floating>0, stack, F)


cdef void _store_gradients(floating* tag, _backward_job* job, Py_ssize_t c0,
                           Py_ssize_t width) noexcept nogil:
    """The dW and dRW rows of grad_stack's gate columns c0..c0+width-1 copied to the outputs
    (each gate's columns to the caller's block of it, lstm_options.gate_blocks); the bias row
    stays in grad_stack (the caller writes it to the strided bias gradient)."""
    cdef Py_ssize_t n_in = job.dims.n_in, hp = job.hp, F = n_in + hp + 1, h = job.dims.hidden
    cdef Py_ssize_t c, run, target
    c = c0
    while c < c0 + width:
        # the columns up to the end of c's gate block (or of the range)
        run = min(c0 + width, (c // h + 1) * h) - c
        target = _gate_column(job.options.gate_blocks, h, c)
        _copy_block(<floating*>job.grad_stack + c * F, F,
                    <floating*>job.grad_input_weights + target * job.ld_grad_input_weights,
                    job.ld_grad_input_weights, n_in, run)
        _copy_block(<floating*>job.grad_stack + c * F + n_in, F,
                    <floating*>job.grad_recurrent_weights + target * job.ld_grad_recurrent_weights,
                    job.ld_grad_recurrent_weights, hp, run)
        c += run


cdef inline void _delta_times_w_t(floating* tag, _backward_job* job, Py_ssize_t rows,
                                  Py_ssize_t cols, const floating* delta,
                                  const floating* w, floating* out) noexcept nogil:
    """out [rows, cols] (leading dimension ld_delta) = D [rows, 4h] W[cols, 4h]^T, D's
    columns in the kernels' gate order, W's in the caller's (the seed's epsilonNext): one GEMM
    in the seed's order, else one per gate block, each adding its block's product."""
    cdef Py_ssize_t ld_delta = job.ld_delta, h = job.dims.hidden
    cdef int g
    if _gates_in_seed_order(job.options):
        gemm(c'N', c'T', rows, cols, 4 * h, <floating>1, delta, ld_delta, w,
             job.ld_input_weights, <floating>0, out, ld_delta)
        return
    for g in range(4):
        gemm(c'N', c'T', rows, cols, h, <floating>1, delta + g * h * ld_delta, ld_delta,
             w + job.options.gate_blocks[g] * h * job.ld_input_weights, job.ld_input_weights,
             <floating>(0 if g == 0 else 1), out, ld_delta)


# dL/dx on the packed kernel: blocks of D's rows of at most this many bytes. The kernel sweeps
# every panel of W^T against the whole block, which stays in L2 (AMD Zen 4, 1 MB; a C harness
# with D read in place, float32, one thread: (1600 x 512) . (512 x 64) 99.6-112.5 GFLOP/s in
# blocks of 128 rows, 97.7 in one block; (6400 x 1024) . (1024 x 256) 95.9 in blocks of 64 rows,
# 71.1 in blocks of 128, 18.6 in one block; OpenBLAS on the same products 79 and 96).
cdef enum:
    DX_BLOCK_BYTES = 262144


cdef inline void _delta_times_w_t_packed(floating* tag, _backward_job* job, Py_ssize_t rows,
                                         const floating* delta, floating* out) noexcept nogil:
    """out [rows, n_in] (leading dimension ld_delta) = D [rows, 4h] W^T on job.packed_w_t (W's
    columns in the kernels' gate order), D read in place in blocks of rows (DX_BLOCK_BYTES).
    Each element is one chain of multiply-adds over the 4h columns in order, whatever the
    blocks: the same bits for every split of the rows. rows >= LF_SMALL_M; no block is left
    with fewer (the kernel's row path needs weights packed otherwise)."""
    cdef Py_ssize_t G = 4 * job.dims.hidden, ld_delta = job.ld_delta, r = 0, count
    cdef Py_ssize_t block = DX_BLOCK_BYTES // (G * <Py_ssize_t>sizeof(floating))
    block = 32 if block < 64 else block // 32 * 32
    while r < rows:
        count = rows - r if rows - r < block else block
        if rows - r - count < LF_SMALL_M:
            count = rows - r
        _recurrent_product(count, job.dims.n_in, G, delta + r, ld_delta,
                           <const floating*>job.packed_w_t, NULL, 0, c'N', NULL, 0, out + r,
                           ld_delta, NULL, False)
        r += count


cdef inline bint _dx_direct_at(floating* tag, _backward_job* job, Py_ssize_t s) noexcept nogil:
    """Whether step s's dL/dx goes straight to the caller's array (see _dx_of_step)."""
    return (job.dx_direct != NULL and s >= job.end_index
            and not _any_not_one(<const floating*>job.mp + job.dims.minibatch * s,
                                 job.dims.minibatch))


cdef inline void _dx_of_step(floating* tag, _backward_job* job, Py_ssize_t s,
                             const floating* delta_s, Py_ssize_t ld, floating* a_pack,
                             bint a_packed, int tid, int nthreads) noexcept nogil:
    """Thread tid's share of dL/dx of step s [mb, n_in] = D_s [mb, 4h] W^T on job.packed_w_t
    (D_s at delta_s, leading dimension ld; a_pack: where A is packed, or NULL: read in place;
    a_packed: a_pack holds it already): the columns of its share of W^T's panels. An unmasked
    step whose dL/dx block has each feature's examples contiguous (job.dx_direct) is written
    there: the mask would multiply it by one, and the copy after the loop, element by element
    through the strides, was 0.1 ms of a 7.5 ms (50, 32, 64, 128) float32 backward pass. Other
    steps go to the step-stacked grad_xp, which run_backward copies out, masked."""
    cdef Py_ssize_t mb = job.dims.minibatch, n_in = job.dims.n_in, G = 4 * job.dims.hidden
    cdef Py_ssize_t panels = (n_in + LF_NR - 1) // LF_NR
    cdef Py_ssize_t p0 = panels * tid // nthreads, p1 = panels * (tid + 1) // nthreads
    cdef Py_ssize_t c0 = p0 * LF_NR, c1 = min(n_in, p1 * LF_NR)
    if c1 <= c0:
        return
    cdef floating* out = <floating*>job.grad_xp + mb * (s - job.end_index)
    cdef Py_ssize_t ld_out = job.ld_delta
    if _dx_direct_at(tag, job, s):
        out = <floating*>job.dx_direct + _time_of(job.dims, s) * job.dx_direct_time
        ld_out = job.dx_direct_feature
    _recurrent_product(mb, c1 - c0, G, delta_s, ld,
                       <const floating*>job.packed_w_t + p0 * G * LF_NR, NULL, 0, c'N', NULL, 0,
                       out + c0 * ld_out, ld_out, a_pack, a_packed)


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
    """The seed's gate math backwards, lf_backward_cells (pyx/lstmfast_cells.inc.h) of the
    element type: the deltas of one step (scratch: 6 blocks `stride` apart; a_next,
    delta_next, cell_error_next NULL at the last processed step)."""
    if floating is float:
        lf_backward_cells_f32(n, stride, mb, act, gate, z, a, mca, c_prev, c_cur, mask_col,
                              masked_step, nabla_out, a_next, delta_next, cell_error_next,
                              peep_block, delta, cell_error, sum_f, sum_o, sum_g, scratch,
                              cell_error_extra)
    else:
        lf_backward_cells_f64(n, stride, mb, act, gate, z, a, mca, c_prev, c_cur, mask_col,
                              masked_step, nabla_out, a_next, delta_next, cell_error_next,
                              peep_block, delta, cell_error, sum_f, sum_o, sum_g, scratch,
                              cell_error_extra)


# the largest step (units per thread x 4h) whose team shares the packed deltas (_backward_steps)
cdef enum:
    SHARED_DELTA_PACK_MAX = 1 << 16


cdef void _backward_steps(floating* tag, _backward_job* job, int tid, int nthreads) noexcept nogil:
    """The backward time loop for thread tid of nthreads: of each step, the groups of units the
    thread takes (see lstm_tuning.unit_groups_per_thread), their columns of the step's dL/dh product and
    their deltas (one group of all units when nthreads is 1); then its share of the gradient
    GEMMs over all steps."""
    cdef const lstm_dims* dims = job.dims
    cdef Py_ssize_t mb = dims.minibatch, h = dims.hidden, G = 4 * h, n = h * mb
    cdef Py_ssize_t T = dims.time_steps, end_index = job.end_index, ld_delta = job.ld_delta
    cdef Py_ssize_t last = job.steps_end - 1
    cdef int act = dims.activation, gate = dims.gate_activation
    cdef Py_ssize_t u0, u1, width, off, unit_group
    cdef int owner
    cdef bint deltas_packed
    cdef const floating* epsilon = <const floating*>job.epsilon
    cdef const floating* z = <const floating*>job.z
    cdef const floating* a = <const floating*>job.a
    cdef const floating* mca = <const floating*>job.mca
    cdef const floating* cs = <const floating*>job.cs
    cdef const floating* mp = <const floating*>job.mp
    cdef floating* delta = <floating*>job.delta
    cdef floating* delta_ring = <floating*>job.delta_ring
    cdef floating* nabla_out = <floating*>job.nabla_out
    cdef floating* cell_error = <floating*>job.cell_error
    cdef floating* cell_error_next = <floating*>job.cell_error_next
    cdef floating* scratch = <floating*>job.scratch
    cdef const floating* peep_block = <const floating*>job.peep_block
    cdef const floating* rw_t = <const floating*>job.rw_t
    cdef const floating* packed = <const floating*>job.packed
    # A team's products of small steps take the deltas of the step before packed once for the
    # panel kernel, in one of two buffers by step parity that the team shares: each thread packs
    # the units its cells computed. Each thread had packed all of them for its own product, half
    # from the other core's cache: 0.41 ms of CPU time of a (50, 32, 128, 128) float32 pass at
    # 2 threads (0.10 ms at 1). Larger steps keep their own copies (one region per thread):
    # the shared buffers' lines then move between the cores at every write, and a (200, 16,
    # 128, 512) float32 training step at 2 threads took 83 -> 93 ms. (A copy: the same bits.)
    cdef floating* delta_packs = NULL
    cdef Py_ssize_t pack_len = _a_pack_len(mb, G)
    cdef floating* a_pack = NULL
    if (nthreads > 1 and job.a_pack != NULL and packed != NULL and mb >= LF_SMALL_M
            and job.projection_weights == NULL
            and (h + nthreads - 1) // nthreads * G <= SHARED_DELTA_PACK_MAX):
        delta_packs = <floating*>job.a_pack
    elif job.a_pack != NULL:
        a_pack = <floating*>job.a_pack + tid * pack_len
    cdef floating* swap
    cdef floating* delta_step
    cdef const floating* delta_next
    cdef const floating* mask_col
    cdef Py_ssize_t s, t, g
    cdef const floating* a_next
    cdef const floating* delta_next_units
    cdef const floating* cell_error_next_units
    cdef const floating* eps_units
    cdef floating* step_nabla
    cdef const floating* cells_nabla
    cdef const floating* cell_error_extra
    cdef floating* extra
    cdef Py_ssize_t i
    for s in range(last, end_index - 1, -1):
        t = _time_of(dims, s)
        delta_step = delta_ring + 4 * n * (s % 2)
        delta_next = NULL if s == last else delta_ring + 4 * n * ((s + 1) % 2)
        mask_col = mp + mb * s if _any_not_one(mp + mb * s, mb) else NULL
        # (the next processed step is s - 1, of the parity of s + 1: _start_step resets it)
        deltas_packed = False
        owner = _start_step(&job.groups, s, tid)
        while _take_group(&job.groups, s, tid, nthreads, &owner, &unit_group, &u0, &u1):
            width = u1 - u0
            off = u0 * mb
            # nablaOut = epsilon slice (+ deltaifogNext . RW[:, 0:4h]^T, the seed's
            # Nd4j.gemm(..., false, true)). A Fortran-ordered epsilon's step is one contiguous
            # [mb, h] block: the packed product adds it where it is (OpenBLAS's path copies it
            # into nabla_out first), and at the first processed step the cells read it there
            step_nabla = nabla_out + off
            cells_nabla = step_nabla
            if job.projection_weights != NULL:
                _projected_nabla(tag, job, s, t, delta_next)
            elif job.options.lengths != NULL:
                _gather_units_lengths(dims, job.options, epsilon, job.epsilon_strides, s,
                                      nabla_out, u0, u1)
                eps_units = nabla_out + off
            elif job.eps_in_place:
                eps_units = epsilon + t * job.epsilon_strides.time + off
                if delta_next == NULL:
                    cells_nabla = eps_units
            else:
                _gather_units(dims, epsilon + t * job.epsilon_strides.time, job.epsilon_strides,
                              nabla_out, u0, u1)
                eps_units = nabla_out + off
            if delta_next != NULL and job.projection_weights == NULL:
                _recurrent_product(mb, width, G, delta_next, mb,
                                   packed + _group_slice(&job.groups, G, unit_group, 1, 0)
                                   if packed != NULL else NULL,
                                   rw_t + u0 * G, G, c'N', eps_units, mb, step_nabla,
                                   mb, delta_packs + pack_len * ((s + 1) % 2)
                                   if delta_packs != NULL else a_pack,
                                   delta_packs != NULL or deltas_packed)
                deltas_packed = True
            a_next = NULL
            delta_next_units = NULL
            cell_error_next_units = NULL
            cell_error_extra = NULL
            if job.last_c_grad != NULL and s == last:
                cell_error_extra = <const floating*>job.last_c_grad + off
            elif job.grad_last_c != NULL and _any_ends_at(dims, job.options, s):
                # dL/d(last c) joins the cell error at each example's last valid step
                extra = <floating*>job.last_c_grad_step
                for i in range(off, off + width * mb):
                    extra[i] = 0
                _copy_rows_ending(dims, job.options, s + 1,
                                  <const floating*>job.grad_last_c, job.grad_last_c_strides,
                                  extra, _block_strides(mb), u0, u1)
                cell_error_extra = extra + off
            if delta_next != NULL:
                a_next = a + 4 * n * (s + 1) + off
                delta_next_units = delta_next + off
                cell_error_next_units = cell_error_next + off
            _backward_cells(width * mb, n, mb, act, gate, z + 4 * n * s + off,
                            a + 4 * n * s + off, mca + n * s + off, cs + n * s + off,
                            cs + n * (s + 1) + off, mask_col, mask_col != NULL, cells_nabla,
                            a_next, delta_next_units, cell_error_next_units,
                            peep_block + off if peep_block != NULL else NULL,
                            delta_step + off, cell_error + off,
                            <floating*>job.sum_f + u0, <floating*>job.sum_o + u0,
                            <floating*>job.sum_g + u0, scratch + off, cell_error_extra)
            # step-stacked copy of the deltas, for the gradient GEMMs over all steps
            for g in range(4):
                _copy_block(delta_step + g * n + off, mb,
                            delta + mb * (s - end_index) + (g * h + u0) * ld_delta, ld_delta,
                            mb, width)
                if delta_packs != NULL and s > end_index:
                    # (delta_step is [mb, 4h]: column g * h + u at g * n + u * mb)
                    _pack_a_columns(mb, G, delta_step, mb, g * h + u0, width,
                                    delta_packs + pack_len * (s % 2))
        if job.dx_per_step and delta_next != NULL:
            # dL/dx of step s + 1 = its deltas W^T (the seed's epsilonNext), on the deltas the
            # step's products have just packed (unless this thread took no group), while they
            # are in cache
            if delta_packs != NULL:
                _dx_of_step(tag, job, s + 1, delta_next, mb, delta_packs + pack_len * ((s + 1) % 2),
                            True, tid, nthreads)
            else:
                _dx_of_step(tag, job, s + 1, delta_next, mb, a_pack, deltas_packed, tid,
                            nthreads)
        swap = cell_error_next
        cell_error_next = cell_error
        cell_error = swap
        if _team_stop(job.cancel, job.stop_slots, s, &job.barrier, tid, nthreads):
            if tid == 0:
                job.cancelled = 1
            return
    # every thread is past the last step's barrier: all deltas are written. The gradient GEMMs
    # over all steps, in job.parts parts fixed by the shape (see _split_parts: the same BLAS
    # calls and sums at every team size; the threads take parts tid, tid + nthreads, ...).
    # dL/dx = D W^T (the seed's epsilonNext): the parts are rows of D, or columns of W^T when W
    # has more (each part's BLAS call packs all of the other operand, so the split keeps the
    # smaller one whole)
    cdef int parts = job.parts, part
    cdef Py_ssize_t r0, r1, i0, i1
    if job.dx_per_step:
        # the last processed step's, whose deltas no later step packed
        _dx_of_step(tag, job, end_index, delta, ld_delta, a_pack, False, tid, nthreads)
    elif job.grad_xp != NULL:
        part = tid
        while part < parts:
            r0 = ld_delta * part // parts
            r1 = ld_delta * (part + 1) // parts
            i0 = dims.n_in * part // parts
            i1 = dims.n_in * (part + 1) // parts
            if job.packed_w_t != NULL:
                _delta_times_w_t_packed(tag, job, r1 - r0, <const floating*>job.delta + r0,
                                        <floating*>job.grad_xp + r0)
            elif ld_delta >= dims.n_in:
                if r1 > r0:
                    _delta_times_w_t(tag, job, r1 - r0, dims.n_in, <const floating*>job.delta + r0,
                                     <const floating*>job.input_weights,
                                     <floating*>job.grad_xp + r0)
            elif i1 > i0:
                _delta_times_w_t(tag, job, ld_delta, i1 - i0, <const floating*>job.delta,
                                 <const floating*>job.input_weights + i0,
                                 <floating*>job.grad_xp + i0 * ld_delta)
            part += nthreads
    # the parameter gradients: with grad_partial (see _use_row_groups) the two parts are the
    # products over the two halves of the stacked rows, into grad_stack and grad_partial, added
    # after a barrier; otherwise the parts are columns of the product over all rows. Split by
    # columns, every part's BLAS call packed all of [xp | hs | 1]: the second thread's GEMMs
    # took 20% more CPU time at (100, 64, 256, 256) float32.
    cdef Py_ssize_t F = dims.n_in + job.hp + 1
    cdef Py_ssize_t c0, c1
    part = tid
    while part < parts:
        if job.grad_partial != NULL:
            _stacked_gradient_product(tag, job, ld_delta * part // 2, ld_delta * (part + 1) // 2,
                                      0, G, <floating*>(job.grad_stack if part == 0
                                                        else job.grad_partial))
        else:
            c0 = G * part // parts
            c1 = G * (part + 1) // parts
            if c1 > c0:
                _stacked_gradient_product(tag, job, 0, ld_delta, c0, c1 - c0,
                                          <floating*>job.grad_stack + c0 * F)
        part += nthreads
    if job.projection_weights != NULL and tid == 0:
        # dL/dW_proj [h, P] = R^T dL/dH over the steps (an LSTMP pass has one thread)
        gemm(c'T', c'N', h, job.hp, ld_delta, <floating>1,
             <const floating*>job.rs + mb * end_index, mb * T,
             <const floating*>job.grad_proj, ld_delta, <floating>0,
             <floating*>job.grad_projection_weights, job.ld_grad_projection_weights)
    spin_if_asked(tid)
    if nthreads > 1 and lf_barrier_wait(&job.barrier, nthreads):
        return           # given up (see _team_stop)
    # every thread its share of the columns of the sums and of the outputs (the sums in the
    # same order at every team size)
    c0 = G * tid // nthreads
    c1 = G * (tid + 1) // nthreads
    cdef floating* target = <floating*>job.grad_stack + c0 * F
    if job.grad_partial != NULL:
        for i in range((c1 - c0) * F):
            target[i] = target[i] + (<const floating*>job.grad_partial)[c0 * F + i]
    if c1 > c0:
        _store_gradients(tag, job, c0, c1 - c0)


cdef inline void _projected_nabla(floating* tag, _backward_job* job, Py_ssize_t s, Py_ssize_t t,
                                  const floating* delta_next) noexcept nogil:
    """An LSTMP step's dL/dh [mb, P] (epsilon + the next processed step's deltas . RW^T) into
    nabla_proj and its step-stacked copy, then dL/dr = dL/dh W_proj^T [mb, h] into nabla_out,
    what the cells read (all units: an LSTMP pass has one thread)."""
    cdef const lstm_dims* dims = job.dims
    cdef Py_ssize_t mb = dims.minibatch, hp = job.hp, G = 4 * dims.hidden
    cdef floating* proj = <floating*>job.nabla_proj
    if job.options.lengths != NULL:
        _gather_units_lengths(dims, job.options, <const floating*>job.epsilon,
                              job.epsilon_strides, s, proj, 0, hp)
    else:
        _gather_units(dims, <const floating*>job.epsilon + t * job.epsilon_strides.time,
                      job.epsilon_strides, proj, 0, hp)
    if delta_next != NULL:
        _recurrent_product(mb, hp, G, delta_next, mb, NULL, <const floating*>job.rw_t, G, c'N',
                           proj, mb, proj, mb, NULL, False)
    _copy_block(proj, mb, <floating*>job.grad_proj + mb * (s - job.end_index), job.ld_delta,
                mb, hp)
    gemm(c'N', c'T', mb, dims.hidden, hp, <floating>1, proj, mb,
         <const floating*>job.projection_weights, job.ld_projection_weights, <floating>0,
         <floating*>job.nabla_out, mb)


cdef void _backward_steps_f32(void* job, int tid, int nthreads) noexcept nogil:
    _backward_steps(<float*>NULL, <_backward_job*>job, tid, nthreads)


cdef void _backward_steps_f64(void* job, int tid, int nthreads) noexcept nogil:
    _backward_steps(<double*>NULL, <_backward_job*>job, tid, nthreads)


cdef int run_backward(const lstm_dims* dims,
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
                      floating* workspace,
                      const lstm_tuning* tuning, lstm_report* report, const int* cancel,
                      const floating* grad_last_c, lstm_strides grad_last_c_strides,
                      const lstm_options* options) noexcept nogil:
    """lstm_backward_ex2 on dims that passed lstm_check_dims, under a complete tuning record
    and options (not NULL); `report` and `cancel` as in run_forward. grad_last_c [mb, h] (may
    be NULL): dL/d(last cell state), which the seed has no input for (beyond the seed: for
    encoder-decoder use)."""
    if (input_weights == NULL or recurrent_weights == NULL or cache == NULL or epsilon == NULL
            or grad_input_weights == NULL or grad_recurrent_weights == NULL or grad_bias == NULL):
        return LSTM_ERR_ARGUMENT
    cdef bint projected = options.projection > 0
    cdef Py_ssize_t hp = _recurrent_size(dims, options)
    if projected and not (_projection_valid(dims, options)
                          and options.grad_projection_weights != NULL
                          and options.ld_grad_projection_weights >= dims.hidden
                          and fits_blas_int(options.ld_grad_projection_weights)
                          and (not dims.peepholes
                               or (options.grad_peephole_weights != NULL
                                   and options.ld_grad_peephole_weights >= dims.hidden))):
        return LSTM_ERR_ARGUMENT
    if (ld_input_weights < dims.n_in or ld_recurrent_weights < hp
            or ld_grad_input_weights < dims.n_in or ld_grad_recurrent_weights < hp):
        return LSTM_ERR_ARGUMENT
    if not (fits_blas_int(ld_input_weights) and fits_blas_int(ld_recurrent_weights)
            and fits_blas_int(ld_grad_input_weights) and fits_blas_int(ld_grad_recurrent_weights)):
        return LSTM_ERR_TOO_LARGE
    if not _gate_blocks_valid(options):
        return LSTM_ERR_ARGUMENT
    # the caller's gate order (lstm_options.gate_blocks): RW^T is built in the kernels' order,
    # dL/dx takes W's blocks where they are (or packs W^T in the kernels' order), and the
    # gradients go to the caller's columns
    cdef const int* gate_blocks = options.gate_blocks

    cdef Py_ssize_t mb = dims.minibatch, n_in = dims.n_in, h = dims.hidden, T = dims.time_steps
    cdef Py_ssize_t G = 4 * h, n = h * mb
    cdef bint by_length = options.lengths != NULL
    # truncated BPTT counts steps in processing order, which lengths shift per example
    if by_length and ((0 < tbptt_length < T) or not _lengths_valid(dims, options)):
        return LSTM_ERR_ARGUMENT
    cdef _backward_layout layout
    cdef Py_ssize_t ws_size = _plan_backward_workspace(dims, options, &layout)
    cdef floating* owned = NULL
    cdef _cache_layout parts
    if ws_size < 0 or _plan_cache(dims, options, &parts) < 0:
        return LSTM_ERR_TOO_LARGE
    if workspace == NULL:
        owned = <floating*>malloc(ws_size * sizeof(floating))
        if owned == NULL:
            return LSTM_ERR_NO_MEMORY
        workspace = owned

    # the cache (see the module docstring)
    cdef Py_ssize_t ld_xh = parts.ld_x
    cdef const floating* xh = cache + parts.xp             # [xp | hs | ones]
    cdef const floating* cs = cache + parts.cs
    cdef const floating* z = cache + parts.z
    cdef const floating* a = cache + parts.a
    cdef const floating* mca = cache + parts.mca
    cdef const floating* mp = cache + parts.mp

    # the seed's endIdx: steps end_index..T-1 (processing order) are back-propagated
    cdef Py_ssize_t end_index = 0
    if tbptt_length > 0 and tbptt_length < T:
        end_index = T - tbptt_length
    # with lengths, the steps after the longest are padding for every example: not run
    cdef Py_ssize_t steps_end = _steps_to_run(dims, options)
    cdef Py_ssize_t steps = steps_end - end_index
    cdef Py_ssize_t ld_delta = mb * steps

    # the work space's regions (_backward_layout); the deltas and dL/dx use mb*steps rows
    cdef floating* delta = workspace + layout.delta
    cdef floating* grad_xp = workspace + layout.grad_xp
    cdef floating* grad_stack = workspace + layout.grad_stack
    cdef floating* nabla_out = workspace + layout.nabla_out
    cdef floating* cell_error = workspace + layout.cell_error
    cdef floating* cell_error_next = workspace + layout.cell_error_next
    cdef floating* delta_ring = workspace + layout.delta_ring
    cdef floating* peep_block = workspace + layout.peep_block
    cdef floating* scratch = workspace + layout.scratch
    cdef floating* rw_t = workspace + layout.rw_t
    cdef floating* packed_rw_t = NULL
    cdef floating* sum_f = workspace + layout.peephole_sums
    cdef floating* sum_o = sum_f + h
    cdef floating* sum_g = sum_o + h
    cdef floating* a_pack = workspace + layout.a_pack if layout.a_pack >= 0 else NULL
    cdef floating* grad_partial = (workspace + layout.grad_partial if layout.grad_partial >= 0
                                   else NULL)

    cdef Py_ssize_t s, t, m, k, j, i
    cdef int nthreads = 1, status
    cdef Py_ssize_t u0, u1, group
    # on the heap: a job given up with a worker still inside belongs to that worker for good
    cdef _backward_job* job = <_backward_job*>malloc(sizeof(_backward_job))
    if job == NULL:
        free(owned)
        return LSTM_ERR_NO_MEMORY
    # the gradient GEMMs are level-3 BLAS calls in every pass (pass_acquire)
    cdef bint blas_single = _shape_uses_team(dims, steps, tuning)
    # (an LSTMP pass runs on one thread, its products on BLAS)
    cdef bint packed_on = steps > 1 and _packed_gemm_on(tuning, mb) and not projected
    nthreads = pass_acquire(_team_size(dims, steps, tuning) if packed_on else 1, True,
                            blas_single)
    if nthreads == 0:
        free(job)
        free(owned)
        return LSTM_ERR_NO_MEMORY
    cdef const floating* rw_block
    cdef int g
    if packed_on:
        packed_rw_t = workspace + layout.packed_rw_t
        # each group's units' columns of RW^T packed together (one group for one thread)
        _plan_groups(&job.groups, h, nthreads, mb, tuning)
        for group in range(job.groups.first[nthreads]):
            u0 = job.groups.units[group]
            u1 = job.groups.units[group + 1]
            # (in the seed's gate order this packs what _pack_weights would)
            _pack_gate_rows(recurrent_weights + u0, ld_recurrent_weights, u1 - u0, h,
                            gate_blocks, packed_rw_t + _group_slice(&job.groups, G, group, 1, 0),
                            mb)
    else:
        _plan_groups(&job.groups, h, 1, mb, tuning)
        # RW^T once, so that the per-step product is an N,N GEMM (faster in OpenBLAS for small
        # minibatches than transposing RW inside every call); its rows (RW's gate columns) in
        # the kernels' order
        for k in range(hp):
            for g in range(4):
                rw_block = recurrent_weights + k + gate_blocks[g] * h * ld_recurrent_weights
                for j in range(h):
                    rw_t[g * h + j + k * G] = rw_block[j * ld_recurrent_weights]
    cdef const floating* peep_f = NULL
    cdef const floating* peep_g = NULL
    # the peephole columns wFF, wOO, wGG: RW's last three, or an LSTMP pass's own [h, 3]
    cdef const floating* peep_source = recurrent_weights + G * ld_recurrent_weights
    cdef Py_ssize_t ld_peep = ld_recurrent_weights
    cdef floating* grad_peep = grad_recurrent_weights + G * ld_grad_recurrent_weights
    cdef Py_ssize_t ld_grad_peep = ld_grad_recurrent_weights
    if projected:
        peep_source = <const floating*>options.peephole_weights
        ld_peep = options.ld_peephole_weights
        grad_peep = <floating*>options.grad_peephole_weights
        ld_grad_peep = options.ld_grad_peephole_weights
    if dims.peepholes:
        peep_f = peep_source
        peep_g = peep_source + 2 * ld_peep
        _broadcast_columns(peep_f, 1, h, mb, peep_block)
        _broadcast_columns(peep_source + ld_peep, 1, h, mb, peep_block + n)
        _broadcast_columns(peep_g, 1, h, mb, peep_block + 2 * n)
    else:
        peep_block = NULL
    for k in range(3 * h):
        sum_f[k] = 0

    cdef floating* last_c_grad = NULL
    if grad_last_c != NULL and not by_length:
        last_c_grad = delta_ring + 4 * n * (T % 2)
        # dL/d(last c) joins the cell error of the last step; gathered into the half of the
        # delta ring that the last step does not use: the step before writes it first, after
        # the last step's barrier. (Not the start of the step-stacked deltas: there another
        # thread's copy of its last-step deltas could land before this thread's cells read it.)
        _gather_state(dims, grad_last_c, grad_last_c_strides, last_c_grad)
        # last_c is the masked cell state: its gradient reaches the cell only where unmasked
        for k in range(h):
            for m in range(mb):
                last_c_grad[m + k * mb] = last_c_grad[m + k * mb] * mp[mb * (T - 1) + m]

    job.dims = dims
    job.end_index = end_index
    job.steps_end = steps_end
    job.ld_delta = ld_delta
    job.epsilon = epsilon
    job.epsilon_strides = epsilon_strides
    job.eps_in_place = _contiguous_steps(epsilon_strides, mb) and not by_length and not projected
    job.hp = hp
    job.projection_weights = options.projection_weights if projected else NULL
    job.ld_projection_weights = options.ld_projection_weights
    job.nabla_proj = workspace + layout.nabla_proj if projected else NULL
    job.grad_proj = workspace + layout.grad_proj if projected else NULL
    job.rs = cache + parts.r if projected else NULL
    job.grad_projection_weights = options.grad_projection_weights
    job.ld_grad_projection_weights = options.ld_grad_projection_weights
    job.z = z
    job.a = a
    job.mca = mca
    job.cs = cs
    job.mp = mp
    job.delta = delta
    job.delta_ring = delta_ring
    job.nabla_out = nabla_out
    job.cell_error = cell_error
    job.cell_error_next = cell_error_next
    job.scratch = scratch
    job.peep_block = peep_block
    job.sum_f = sum_f
    job.sum_o = sum_o
    job.sum_g = sum_g
    job.rw_t = rw_t
    job.packed = packed_rw_t
    job.a_pack = a_pack
    job.last_c_grad = last_c_grad
    job.options = options
    job.grad_last_c = grad_last_c if by_length else NULL
    job.grad_last_c_strides = grad_last_c_strides
    job.last_c_grad_step = workspace + layout.last_c_grad if by_length else NULL
    job.xh = xh
    job.ld_xh = ld_xh
    job.grad_stack = grad_stack
    # the second row group's sums of the gradient GEMMs (see _backward_steps)
    job.grad_partial = NULL
    job.parts = _split_parts(dims, steps, tuning)
    if job.parts == 2 and _use_row_groups(dims, ld_delta, tuning):
        job.grad_partial = grad_partial
    job.input_weights = input_weights
    job.ld_input_weights = ld_input_weights
    job.grad_input_weights = grad_input_weights
    job.ld_grad_input_weights = ld_grad_input_weights
    job.grad_recurrent_weights = grad_recurrent_weights
    job.ld_grad_recurrent_weights = ld_grad_recurrent_weights
    job.grad_xp = grad_xp if grad_input != NULL else NULL
    # dL/dx on the packed kernel where the parts split D's rows, none below LF_SMALL_M (a rule
    # of the shape and the tuning only, as the parts are: the same bits at every team size);
    # float32 only: against OpenBLAS, backward passes on AMD Zen 4 (alternating processes, 1
    # thread) took float32 (100, 64, 256, 256) 143-157 -> 140-144 ms, (50, 32, 64, 128) and
    # (200, 16, 128, 512) within the noise (7.4-8.1 against 7.5-7.8 ms, 172-176 against
    # 170-174 ms), but float64 (100, 64, 256, 256) 285-297 -> 294-308 ms
    job.packed_w_t = NULL
    if (floating is float and packed_on and grad_input != NULL and ld_delta >= dims.n_in
            and ld_delta // job.parts >= LF_SMALL_M):
        _pack_gate_rows(input_weights, ld_input_weights, n_in, h, gate_blocks,
                        workspace + layout.packed_w_t, LF_SMALL_M)
        job.packed_w_t = workspace + layout.packed_w_t
    # dL/dx per step, each thread a share of W^T's panels: the step's deltas are packed for the
    # recurrent product anyway, and are read again while in cache instead of from the
    # step-stacked copy after the loop (the same bits: each element is one chain over the 4h
    # columns in order either way). float64 keeps OpenBLAS: per step on the packed kernel,
    # AMD Zen 4, 1 thread, (100, 64, 256, 256) backward 285-304 -> 285-305 ms (alternated)
    job.dx_per_step = job.packed_w_t != NULL and a_pack != NULL
    job.dx_direct = NULL
    if (job.dx_per_step and not by_length and grad_input_strides.minibatch == 1
            and grad_input_strides.feature >= mb):
        job.dx_direct = grad_input
        job.dx_direct_time = grad_input_strides.time
        job.dx_direct_feature = grad_input_strides.feature
    job.cancel = cancel
    job.stop_slots[0] = 0
    job.stop_slots[1] = 0
    job.cancelled = 0
    lf_barrier_init(&job.barrier)
    job.barrier.cancel = cancel
    _reset_claims(&job.groups, steps_end - 1, nthreads)
    job.groups.taken_over = 0
    if floating is float:
        status = team_execute(_backward_steps_f32, job, nthreads, &job.barrier)
    else:
        status = team_execute(_backward_steps_f64, job, nthreads, &job.barrier)
    if status == LF_TEAM_ABANDONED:
        return LSTM_ERR_ABANDONED          # job, work space and team stay with the worker
    pass_release(nthreads, True, blas_single)
    if job.barrier.abort:
        job.cancelled = 1
    if report != NULL:
        report.threads = nthreads
        report.h_in_output = 0
        report.x_in_place = 0
        report.epsilon_in_place = job.eps_in_place
        report.gradient_split = 0 if nthreads == 1 else (2 if job.grad_partial != NULL else 1)
        report.groups_taken_over = job.groups.taken_over
    if job.cancelled:
        free(job)
        free(owned)
        return LSTM_ERR_CANCELLED
    # every step swapped the two cell-error blocks once
    if steps % 2 == 1:
        cell_error_next = cell_error
    # cell_error_next now holds the cell error of step end_index

    # (the job computed the parameter gradients and D W^T; see _backward_steps)
    if dims.peepholes:
        for k in range(h):
            grad_peep[k] = sum_f[k]
            grad_peep[k + ld_grad_peep] = sum_o[k]
            grad_peep[k + 2 * ld_grad_peep] = sum_g[k]
    for j in range(G):
        grad_bias[_gate_column(gate_blocks, h, j) * grad_bias_stride] = (
            grad_stack[n_in + hp + j * (n_in + hp + 1)])

    # dL/dx (the seed's epsilonNext): D W^T, masked at masked steps, zero before end_index
    cdef floating* gx_t
    cdef const floating* gcol
    if grad_input != NULL and by_length:
        # each example's own times; zeros in its padding
        _zero_padding(dims, options, grad_input, grad_input_strides, n_in)
        for s in range(T):
            for m in range(mb):
                t = _example_time(dims, _length_of(options, m), s)
                if t >= 0:
                    for i in range(n_in):
                        grad_input[m * grad_input_strides.minibatch
                                   + i * grad_input_strides.feature
                                   + t * grad_input_strides.time] = grad_xp[mb * s + m
                                                                            + i * ld_delta]
    elif grad_input != NULL:
        for s in range(T):
            if _dx_direct_at(<floating*>NULL, job, s):
                continue                   # written by the time loop
            t = _time_of(dims, s)
            gx_t = grad_input + t * grad_input_strides.time
            if (s >= end_index and grad_input_strides.feature == 1
                    and not _any_not_one(mp + mb * s, mb)):
                # an unmasked step into an array with each example's features contiguous
                # (nn.LSTM's time-major dL/dx): the values as they are (times 1 below)
                _transpose(grad_xp + mb * (s - end_index), ld_delta, gx_t,
                           grad_input_strides.minibatch, mb, n_in)
                continue
            for i in range(n_in):
                if s < end_index:
                    for m in range(mb):
                        gx_t[m * grad_input_strides.minibatch + i * grad_input_strides.feature] = 0
                else:
                    gcol = grad_xp + mb * (s - end_index) + i * ld_delta
                    for m in range(mb):
                        gx_t[m * grad_input_strides.minibatch + i * grad_input_strides.feature] = (
                            gcol[m] * mp[mb * s + m])

    # gradients with respect to the initial state (beyond the seed); delta_ring's slot 0 holds
    # the deltas of step 0 when end_index == 0
    cdef floating value
    if end_index == 0:
        if grad_h0 != NULL and projected:
            _recurrent_product(mb, hp, G, delta_ring, mb, <const floating*>NULL, rw_t, G, c'N',
                               <const floating*>NULL, 0, <floating*>job.nabla_proj, mb, NULL,
                               False)
            _scatter_units(dims, <floating*>job.nabla_proj, grad_h0, grad_h0_strides, 0, hp)
        elif grad_h0 != NULL:
            # by the groups' slices of the packed RW^T (one slice of all units for one thread)
            for group in range(job.groups.first[nthreads]):
                u0 = job.groups.units[group]
                u1 = job.groups.units[group + 1]
                _recurrent_product(mb, u1 - u0, G, delta_ring, mb,
                                   NULL if packed_rw_t == NULL
                                   else packed_rw_t + _group_slice(&job.groups, G, group, 1, 0),
                                   rw_t + u0 * G, G, c'N', <const floating*>NULL, 0,
                                   nabla_out + u0 * mb, mb, a_pack, group > 0)
            _scatter_state(dims, nabla_out, grad_h0, grad_h0_strides)
        if grad_c0 != NULL:
            for k in range(h):
                for m in range(mb):
                    i = m + k * mb
                    value = mp[m] * a[n + i] * cell_error_next[i]
                    if dims.peepholes:
                        value = value + (delta_ring[n + i] * peep_f[k]
                                         + delta_ring[3 * n + i] * peep_g[k])
                    grad_c0[m * grad_c0_strides.minibatch + k * grad_c0_strides.feature] = value
            if by_length and grad_last_c != NULL:
                # an example of length 0 hands its c0 on as last_c
                _copy_rows_ending(dims, options, 0, grad_last_c, grad_last_c_strides, grad_c0,
                                  grad_c0_strides, 0, h)
    else:
        for m in range(mb):
            if grad_h0 != NULL:
                for k in range(hp):
                    grad_h0[m * grad_h0_strides.minibatch + k * grad_h0_strides.feature] = 0
            if grad_c0 != NULL:
                for k in range(h):
                    grad_c0[m * grad_c0_strides.minibatch + k * grad_c0_strides.feature] = 0
    free(job)
    free(owned)
    return LSTM_OK
