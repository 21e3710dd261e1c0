# cython: language_level=3
"""The forward pass: the port of DL4J 0.9.1 LSTMHelpers.activateHelper (deeplearning4j-nn/.../
layers/recurrent/LSTMHelpers.java) over BLAS and the thread team, behind lstmfast.kernels'
lstm_forward / lstm_forward_ex / lstm_step. The internal layouts and the cache are described in
lstmfast/_layout.pxd; the gate math of a step is lf_forward_cells (pyx/lstmfast_cells.inc.h)."""
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
from lstmfast._cells cimport lf_forward_cells_f32, lf_forward_cells_f64, lf_select_isa

# this module's copies of the vectorised math, the packed kernel and the cells: the variants
# lstmfast.kernels chose too (the same rule)
lf_select_isa()


# What the threads of a forward time loop share: the steps s0..s1-1 of one projection chunk.
# Pointers are void* so that one struct serves both dtypes.
ctypedef struct _forward_job:
    const lstm_dims* dims
    Py_ssize_t s0
    Py_ssize_t s1
    const void* packed_input       # the chunk's packed input, first row of step s0
    Py_ssize_t ld_packed_input
    const void* x_in_place         # or x itself, each step one contiguous [mb, n_in] block
    Py_ssize_t x_time_stride       # (the step's block at x_in_place + t * x_time_stride)
    Py_ssize_t x_step_stride       # step s's rows at packed_input + (s - s0) * x_step_stride
    const void* x_to_pack          # x [mb, n_in, T] (strides x_strides) that the team packs
    lstm_strides x_strides         # into packed_input first, each thread a share of the steps
    const void* input_weights
    Py_ssize_t ld_input_weights
    Py_ssize_t ld_projection
    Py_ssize_t ld_hs
    void* projection
    void* h_ring
    bint h_in_output               # each step's h written straight into its output block
    bint output_deferred           # else step s-1's h written to the output during step s
    void* c_ring
    void* z_block
    void* a_block
    void* mca_block
    void* z
    void* a
    void* mca
    void* cs
    void* hs
    const void* mp
    const void* mask_chunk
    bint masked
    const void* bias_block
    const void* peep_block
    const void* recurrent_weights
    Py_ssize_t ld_recurrent_weights
    const void* packed
    void* a_pack                   # LF_TEAM_MAX regions of _a_pack_len(mb, K) (K: h forward, 4h backward)
    void* x_pack                   # LF_TEAM_MAX regions of _a_pack_len(mb, n_in): the step's x packed
    const void* packed_input_weights   # W packed like RW (then each step does its own x W)
    bint dot_columns               # one step of one example: W and RW read in place (_dot_columns)
    void* output
    lstm_strides output_strides
    const lstm_options* options    # lengths (NULL: none), see lstm_options
    bint scatter_by_example        # lengths backwards: each example's output at its own time
    void* last_h                   # with lengths: each example's state stored at its last step
    lstm_strides last_h_strides
    void* last_c
    lstm_strides last_c_strides
    Py_ssize_t hp                  # the size of the h fed back and output: P (LSTMP) or h
    const void* projection_weights  # LSTMP: [h, P] (ld_projection_weights), else NULL
    Py_ssize_t ld_projection_weights
    void* r_block                  # LSTMP: [mb, h], the step's o * act(c) before the projection
    void* rs                       # LSTMP with a cache: [mb*T, h] step-stacked r (ld mb*T)
    const int* cancel
    int stop_slots[2]
    int cancelled
    int parts                      # parts of the GEMMs outside the time loop (_split_parts)
    # a wavefront (lstm_options.input_steps_ready / output_steps_done): with steps_ready, one
    # thread waits for each step's x in the time loop, and packs it there when x_each_step is
    # set (else the caller waited for the chunk); steps_done counts the complete output steps
    const Py_ssize_t* steps_ready
    const void* x_each_step
    Py_ssize_t* steps_done
    lf_barrier barrier
    _unit_groups groups            # the team's groups of units (_plan_groups)


cdef inline void _forward_cells(Py_ssize_t n, Py_ssize_t stride, Py_ssize_t mb, int act, int gate,
                                floating* z, floating* a, floating* mca,
                                const floating* peep_block,
                                const floating* c_prev, floating* h_cur, floating* c_cur,
                                const floating* mask_col) noexcept nogil:
    """The seed's gate math of one step, lf_forward_cells (pyx/lstmfast_cells.inc.h) of the
    element type: gates, cell and output (z [mb, 4h] holds x W + b + h_prev RW on entry;
    peep_block: wFF, wOO, wGG broadcast to [mb, 3h], or NULL; mask_col [mb] or NULL)."""
    if floating is float:
        lf_forward_cells_f32(n, stride, mb, act, gate, z, a, mca, peep_block, c_prev, h_cur,
                             c_cur, mask_col)
    else:
        lf_forward_cells_f64(n, stride, mb, act, gate, z, a, mca, peep_block, c_prev, h_cur,
                             c_cur, mask_col)


cdef inline void _forward_step_units(const lstm_dims* dims, floating* z_step, floating* a_step,
                                     floating* mca_step, const floating* peep_block,
                                     floating* c_prev, floating* c_cur, floating* h_cur,
                                     const floating* mask_col, _forward_job* job, Py_ssize_t s,
                                     Py_ssize_t t, Py_ssize_t u0, Py_ssize_t u1) noexcept nogil:
    """A step's element-wise code for the units u0..u1-1 (their gate pre-activations complete
    in z_step), then their h into the cache and the output."""
    cdef Py_ssize_t mb = dims.minibatch, n = dims.hidden * mb, off = u0 * mb, width = u1 - u0
    _forward_cells(width * mb, n, mb, dims.activation, dims.gate_activation, z_step + off,
                   a_step + off, mca_step + off, peep_block + off if peep_block != NULL else NULL,
                   c_prev + off, h_cur + off, c_cur + off, mask_col)
    _store_step(dims, h_cur, c_cur, job, s, t, u0, u1, u0, u1)


cdef inline void _forward_step_projected(const lstm_dims* dims, floating* z_step,
                                         floating* a_step, floating* mca_step,
                                         const floating* peep_block, floating* c_prev,
                                         floating* c_cur, floating* h_cur,
                                         const floating* mask_col, _forward_job* job,
                                         Py_ssize_t s, Py_ssize_t t) noexcept nogil:
    """_forward_step_units of an LSTMP step (all units, one thread): the cells give
    r = o * act(c) (masked), then h = r W_proj [mb, P] (nn.LSTM's h_t = W_hr (o_t * tanh(c_t)))."""
    cdef Py_ssize_t mb = dims.minibatch, h = dims.hidden, n = h * mb
    cdef floating* r = <floating*>job.r_block
    _forward_cells(n, n, mb, dims.activation, dims.gate_activation, z_step, a_step, mca_step,
                   peep_block, c_prev, r, c_cur, mask_col)
    # h [mb, P] = r [mb, h] . W_proj [h, P]
    gemm(c'N', c'N', mb, job.hp, h, <floating>1, r, mb,
         <const floating*>job.projection_weights, job.ld_projection_weights, <floating>0,
         h_cur, mb)
    if job.rs != NULL:
        _copy_block(r, mb, <floating*>job.rs + mb * s, mb * dims.time_steps, mb, h)
    _store_step(dims, h_cur, c_cur, job, s, t, 0, job.hp, 0, h)


cdef inline void _store_step(const lstm_dims* dims, floating* h_cur, floating* c_cur,
                             _forward_job* job, Py_ssize_t s, Py_ssize_t t, Py_ssize_t u0,
                             Py_ssize_t u1, Py_ssize_t c_u0, Py_ssize_t c_u1) noexcept nogil:
    """Step s's h (its units u0..u1-1) into the cache and the output, and with lengths the
    state (c: units c_u0..c_u1-1) of the examples whose last valid step s is."""
    cdef Py_ssize_t mb = dims.minibatch, width = u1 - u0
    if job.z != NULL:
        _copy_block(h_cur + u0 * mb, mb, <floating*>job.hs + mb * (s + 1) + u0 * job.ld_hs,
                    job.ld_hs, mb, width)
    if job.scatter_by_example:
        if job.output != NULL:
            _scatter_units_lengths(dims, job.options, h_cur, <floating*>job.output,
                                   job.output_strides, s, u0, u1)
    elif job.output != NULL and not job.h_in_output and not job.output_deferred:
        _scatter_units(dims, h_cur, <floating*>job.output + t * job.output_strides.time,
                       job.output_strides, u0, u1)
    if job.options.lengths != NULL:
        # the state after each example's last valid step (later steps of it are padding)
        _copy_rows_ending(dims, job.options, s + 1, h_cur, _block_strides(mb),
                          <floating*>job.last_h, job.last_h_strides, u0, u1)
        _copy_rows_ending(dims, job.options, s + 1, c_cur, _block_strides(mb),
                          <floating*>job.last_c, job.last_c_strides, c_u0, c_u1)


cdef inline floating* _h_of_step(_forward_job* job, floating* h_ring, Py_ssize_t s) noexcept nogil:
    """Where processing step s writes its h (s = -1: where h0 is): its output block
    (job.h_in_output), or the ring's block s + 1 modulo its blocks (_h_ring_slots)."""
    if not job.h_in_output:
        return h_ring + job.dims.minibatch * job.hp * (
            (s + 1) % _h_ring_slots(job.dims.minibatch, job.hp))
    if s < 0:
        return h_ring
    return <floating*>job.output + _time_of(job.dims, s) * job.output_strides.time


cdef inline void _scatter_previous_rows(const lstm_dims* dims, _forward_job* job,
                                        const floating* h_block, Py_ssize_t s, int tid,
                                        int nthreads) noexcept nogil:
    """Thread tid's examples (a multiple of 4 per thread, the transposes' tile) of step s's h
    (h_block [mb, hp]) into the output."""
    cdef Py_ssize_t mb = dims.minibatch
    cdef Py_ssize_t share = ((mb + nthreads - 1) // nthreads + 3) // 4 * 4
    cdef Py_ssize_t m0 = share * tid, m1 = m0 + share
    if m1 > mb:
        m1 = mb
    _scatter_block(dims, h_block,
                   <floating*>job.output + _time_of(dims, s) * job.output_strides.time,
                   job.output_strides, m0, m1, 0, job.hp)


cdef inline void _pack_x_steps(const lstm_dims* dims, const floating* x, lstm_strides x_strides,
                               Py_ssize_t s0, Py_ssize_t s_begin, Py_ssize_t s_end,
                               floating* target, Py_ssize_t ld, Py_ssize_t step_stride) noexcept nogil:
    """The steps s_begin..s_end-1 of the chunk starting at step s0 into target: as rows
    (step_stride mb, leading dimension ld) or one [mb, n_in] block per step (ld mb)."""
    cdef Py_ssize_t s, mb = dims.minibatch
    if step_stride == mb:
        if s_end > s_begin:
            _pack_input(dims, x, x_strides, s_begin, s_end, target + mb * (s_begin - s0), ld)
        return
    for s in range(s_begin, s_end):
        _pack_input(dims, x, x_strides, s, s + 1, target + (s - s0) * step_stride, mb)


cdef inline void _pack_input_serial_or_team(const lstm_dims* dims, _forward_job* job,
                                            const floating* x, lstm_strides x_strides,
                                            Py_ssize_t s0, Py_ssize_t s1, floating* target,
                                            Py_ssize_t ld, int nthreads) noexcept nogil:
    """The chunk's x packed into target now (one thread), or by the team at the start of its
    job (x_to_pack): a time-major x is transposed step by step, 0.08 ms of a 1.1 ms
    (50, 32, 64, 128) forward at 2 threads when one thread did it alone; a Fortran-ordered x
    goes into the cache's step-stacked rows one [mb] run per feature and step, 0.16 ms of a
    1.9 ms (50, 32, 128, 128) training forward at 2 threads alone. Only one contiguous block
    per step stays with the calling thread."""
    if nthreads > 1 and not (_contiguous_steps(x_strides, dims.minibatch)
                             and ld == dims.minibatch):
        job.x_to_pack = x
        return
    job.x_to_pack = NULL
    _pack_x_steps(dims, x, x_strides, s0, s0, s1, target, ld, job.x_step_stride)


# lstm_options.gate_blocks of weights in the kernels' own order
cdef int[4] _SEED_GATE_ORDER = [0, 1, 2, 3]


cdef inline void _free_job(_forward_job* job, _forward_job* on_stack) noexcept nogil:
    if job != on_stack:
        free(job)


cdef void _forward_steps(floating* tag, _forward_job* job, int tid, int nthreads) noexcept nogil:
    """The time loop of one chunk for thread tid of nthreads: of each step, the groups of units
    the thread takes (see lstm_tuning.unit_groups_per_thread), their columns of the step's products and
    their element-wise code (all units at once when nthreads is 1)."""
    cdef const lstm_dims* dims = job.dims
    cdef Py_ssize_t mb = dims.minibatch, h = dims.hidden, G = 4 * h, n = h * mb
    cdef Py_ssize_t u0, u1, width, off
    cdef Py_ssize_t n_in = dims.n_in
    cdef Py_ssize_t group
    cdef int owner
    cdef bint h_packed, x_packed
    cdef const floating* packed_w = <const floating*>job.packed_input_weights
    cdef const floating* x_step
    cdef Py_ssize_t ld_x = job.ld_packed_input
    cdef Py_ssize_t ld_projection = job.ld_projection
    cdef Py_ssize_t ld_rw = job.ld_recurrent_weights
    cdef floating* projection = <floating*>job.projection
    cdef const floating* recurrent_weights = <const floating*>job.recurrent_weights
    cdef const floating* packed = <const floating*>job.packed
    # this thread's room for the packed h_prev (none without the packed kernel)
    cdef floating* a_pack = NULL
    cdef floating* x_pack = NULL
    if job.a_pack != NULL:
        a_pack = <floating*>job.a_pack + tid * _a_pack_len(mb, h)
    if job.x_pack != NULL:
        x_pack = <floating*>job.x_pack + tid * _a_pack_len(mb, n_in)
    # bias_block: the bias as a contiguous [4h] vector, added by each step's input product or
    # the chunk's projection (the element-wise code gets the complete x W + b + h_prev RW)
    cdef const floating* bias_block = <const floating*>job.bias_block
    cdef const floating* peep_block = <const floating*>job.peep_block
    cdef floating* h_ring = <floating*>job.h_ring
    cdef bint for_backprop = job.z != NULL
    cdef Py_ssize_t s, t, g, j, r
    cdef floating bias_value
    cdef floating* projection_column
    # the input projection (seed: miniBatchData.mmul(inputWeights) per step). With W packed,
    # each step computes its own x W into its gate pre-activations, each group of units its
    # columns (no projection buffer to write and read back, no barrier). Otherwise the chunk's
    # [mb*S, 4h] = 1 b^T + xp W here, one GEMM per part of the rows, the threads taking whole
    # parts (splitting by columns would make every thread re-pack all of xp); then every thread
    # waits for all rows.
    cdef Py_ssize_t rows = mb * (job.s1 - job.s0), r0, r1
    cdef int part
    if job.x_to_pack != NULL:
        r0 = job.s0 + (job.s1 - job.s0) * tid // nthreads
        r1 = job.s0 + (job.s1 - job.s0) * (tid + 1) // nthreads
        _pack_x_steps(dims, <const floating*>job.x_to_pack, job.x_strides, job.s0, r0, r1,
                      <floating*>job.packed_input, job.ld_packed_input, job.x_step_stride)
        if lf_barrier_wait(&job.barrier, nthreads):
            return       # given up (see _team_stop)
    if job.dot_columns and rows == 1 and job.ld_packed_input == 1:
        # [1, 4h] = b^T + x W, each column a dot product down W's column
        _dot_columns(G, n_in, <const floating*>job.packed_input,
                     <const floating*>job.input_weights, job.ld_input_weights, projection,
                     bias_block)
    elif packed_w == NULL:
        # in job.parts parts of rows, the same at every team size (see _split_parts)
        part = tid
        while part < job.parts:
            r0 = rows * part // job.parts
            r1 = rows * (part + 1) // job.parts
            part += nthreads
            if r1 == r0:
                continue
            # the bias first, and the GEMM adds to it (beta 1): with beta 0 OpenBLAS zeroes C
            # first (a memset of the chunk, 1.7% of a (100, 64, 256, 256) float64 forward), and
            # the step's element-wise code then needed a pass to add the bias
            for j in range(G):
                bias_value = bias_block[j]
                projection_column = projection + r0 + j * ld_projection
                for r in range(r1 - r0):
                    projection_column[r] = bias_value
            gemm(c'N', c'N', r1 - r0, G, n_in, <floating>1,
                 <const floating*>job.packed_input + r0, job.ld_packed_input,
                 <const floating*>job.input_weights, job.ld_input_weights, <floating>1,
                 projection + r0, ld_projection)
        if nthreads > 1 and lf_barrier_wait(&job.barrier, nthreads):
            return       # given up (see _team_stop)
    cdef floating* z_step
    cdef floating* z_block
    cdef const floating* projection_block
    cdef Py_ssize_t ld_addend
    cdef floating* a_step
    cdef floating* mca_step
    cdef floating* c_prev
    cdef floating* c_cur
    cdef floating* h_prev
    cdef floating* h_cur
    cdef const floating* mask_col
    cdef const floating* step_mask
    for s in range(job.s0, job.s1):
        t = _time_of(dims, s)
        h_prev = _h_of_step(job, h_ring, s - 1)
        h_cur = _h_of_step(job, h_ring, s)
        if for_backprop:
            z_step = <floating*>job.z + 4 * n * s
            a_step = <floating*>job.a + 4 * n * s
            mca_step = <floating*>job.mca + n * s
            c_prev = <floating*>job.cs + n * s
            c_cur = c_prev + n
            step_mask = <const floating*>job.mp + mb * s
        else:
            z_step = <floating*>job.z_block
            a_step = <floating*>job.a_block
            mca_step = <floating*>job.mca_block
            c_prev = <floating*>job.c_ring + n * (s % 2)
            c_cur = <floating*>job.c_ring + n * ((s + 1) % 2)
            step_mask = <const floating*>job.mask_chunk + mb * (s - job.s0)
        mask_col = step_mask if (job.masked and _any_not_one(step_mask, mb)) else NULL
        # ifogActivations = input . W (the chunk's projection) + prevOutputActivations . RW[:, 0:4h]
        # (also for a zero h0, as the seed: non-finite recurrent weights then give NaN as IEEE says)
        if job.x_in_place != NULL:
            x_step = <const floating*>job.x_in_place + t * job.x_time_stride
        else:
            x_step = <const floating*>job.packed_input + job.x_step_stride * (s - job.s0)
        # without W packed, the product adds the step's rows of the chunk's projection (read
        # in place; a copy of them into z first cost 11% of a (100, 64, 256, 256) float64 pass)
        if nthreads == 1:
            if job.steps_ready != NULL:
                # the previous layer's pass, on another thread, has written this step's x
                if lf_steps_wait(job.steps_ready, t + 1, job.cancel):
                    job.cancelled = 1
                    return
                if job.x_each_step != NULL:
                    _pack_x_steps(dims, <const floating*>job.x_each_step, job.x_strides, job.s0,
                                  s, s + 1, <floating*>job.packed_input, job.ld_packed_input,
                                  job.x_step_stride)
            if packed_w != NULL:
                _input_product(mb, G, n_in, x_step, ld_x, packed_w, bias_block, z_step, mb,
                               x_pack, False)
                projection_block = z_step
                ld_addend = mb
            else:
                projection_block = projection + mb * (s - job.s0)
                ld_addend = ld_projection
            if job.dot_columns and ld_addend == 1:
                _dot_columns(G, job.hp, h_prev, recurrent_weights, ld_rw, z_step,
                             projection_block)
            else:
                _recurrent_product(mb, G, job.hp, h_prev, mb, packed, recurrent_weights, ld_rw,
                                   c'N', projection_block, ld_addend, z_step, mb, a_pack, False)
            if job.projection_weights != NULL:
                _forward_step_projected(dims, z_step, a_step, mca_step, peep_block, c_prev,
                                        c_cur, h_cur, mask_col, job, s, t)
            else:
                _forward_step_units(dims, z_step, a_step, mca_step, peep_block, c_prev, c_cur,
                                    h_cur, mask_col, job, s, t, 0, h)
        else:
            h_packed = False
            x_packed = False
            owner = _start_step(&job.groups, s, tid)
            while _take_group(&job.groups, s, tid, nthreads, &owner, &group, &u0, &u1):
                width = u1 - u0
                off = u0 * mb
                for g in range(4):
                    z_block = z_step + g * n + off
                    if packed_w != NULL:
                        _input_product(mb, width, n_in, x_step, ld_x,
                                       packed_w + _group_slice(&job.groups, n_in, group, 4, g),
                                       bias_block + g * h + u0, z_block, mb, x_pack, x_packed)
                        x_packed = True
                        projection_block = z_block
                        ld_addend = mb
                    else:
                        projection_block = (projection + mb * (s - job.s0)
                                            + (g * h + u0) * ld_projection)
                        ld_addend = ld_projection
                    _recurrent_product(mb, width, h, h_prev, mb,
                                       packed + _group_slice(&job.groups, h, group, 4, g),
                                       recurrent_weights + (g * h + u0) * ld_rw, ld_rw, c'N',
                                       projection_block, ld_addend, z_block, mb, a_pack, h_packed)
                    h_packed = True
                _forward_step_units(dims, z_step, a_step, mca_step, peep_block, c_prev, c_cur,
                                    h_cur, mask_col, job, s, t, u0, u1)
        if job.output_deferred and s > 0:
            # the previous step's h (complete since the last barrier, and not overwritten
            # before the next) into the output, each thread its share of the examples
            _scatter_previous_rows(dims, job, h_prev, s - 1, tid, nthreads)
        if _team_stop(job.cancel, job.stop_slots, s, &job.barrier, tid, nthreads):
            if tid == 0:
                job.cancelled = 1
            return
        if job.steps_done != NULL and tid == 0:
            # (past the step's barrier: every thread's part of it is written; a deferred h of
            # step s is written during step s + 1)
            lf_steps_publish(job.steps_done, s if job.output_deferred else s + 1)


cdef void _forward_steps_f32(void* job, int tid, int nthreads) noexcept nogil:
    _forward_steps(<float*>NULL, <_forward_job*>job, tid, nthreads)


cdef void _forward_steps_f64(void* job, int tid, int nthreads) noexcept nogil:
    _forward_steps(<double*>NULL, <_forward_job*>job, tid, nthreads)

cdef int run_forward(const lstm_dims* dims,
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
                     floating* cache, floating* workspace,
                     const lstm_tuning* tuning, lstm_report* report,
                     const int* cancel, const lstm_options* options) noexcept nogil:
    """lstm_forward_ex2 on dims that passed lstm_check_dims, under a complete tuning record
    (`threads` resolved) and options (not NULL), filling `report` (may be NULL); `cancel` (may
    be NULL) is polled once per time step: nonzero stops the pass with LSTM_ERR_CANCELLED."""
    if x == NULL or input_weights == NULL or recurrent_weights == NULL or bias == NULL:
        return LSTM_ERR_ARGUMENT
    cdef bint by_length = options.lengths != NULL
    if by_length and (mask != NULL or not _lengths_valid(dims, options)):
        return LSTM_ERR_ARGUMENT
    cdef bint projected = options.projection > 0
    cdef Py_ssize_t hp = _recurrent_size(dims, options)
    if projected and not _projection_valid(dims, options):
        return LSTM_ERR_ARGUMENT
    if ld_recurrent_weights < hp or not fits_blas_int(hp):
        return LSTM_ERR_ARGUMENT if ld_recurrent_weights < hp else LSTM_ERR_TOO_LARGE
    if ld_input_weights < dims.n_in:
        return LSTM_ERR_ARGUMENT
    if not fits_blas_int(ld_input_weights) or not fits_blas_int(ld_recurrent_weights):
        return LSTM_ERR_TOO_LARGE
    if not _gate_blocks_valid(options):
        return LSTM_ERR_ARGUMENT
    if (options.input_steps_ready != NULL
            and <const void*>options.input_steps_ready == <const void*>options.output_steps_done):
        return LSTM_ERR_ARGUMENT     # (it would wait for itself)
    cdef bint reordered = not _gates_in_seed_order(options)
    cdef const int* gate_blocks = options.gate_blocks

    cdef Py_ssize_t mb = dims.minibatch, n_in = dims.n_in, h = dims.hidden, T = dims.time_steps
    cdef Py_ssize_t G = 4 * h, n = h * mb
    cdef bint for_backprop = cache != NULL
    if tuning.projection_chunk_elements < 1:
        return LSTM_ERR_ARGUMENT
    cdef _forward_layout layout
    cdef Py_ssize_t ws_size = _plan_forward_workspace(dims, tuning, options, &layout)
    cdef floating* owned = NULL
    cdef _cache_layout parts
    if ws_size < 0 or _plan_cache(dims, options, &parts) < 0:
        return LSTM_ERR_TOO_LARGE
    if workspace == NULL:
        owned = <floating*>malloc(ws_size * sizeof(floating))
        if owned == NULL:
            return LSTM_ERR_NO_MEMORY
        workspace = owned

    # the work space's regions (_forward_layout)
    cdef Py_ssize_t chunk = layout.chunk
    cdef Py_ssize_t ld_projection = mb * chunk
    cdef floating* projection = workspace + layout.projection
    cdef floating* x_chunk = workspace + layout.x_chunk
    cdef floating* mask_chunk = workspace + layout.mask_chunk
    cdef floating* h_ring = workspace + layout.h_ring
    cdef floating* c_ring = workspace + layout.c_ring
    cdef floating* z_block = workspace + layout.z_block
    cdef floating* a_block = workspace + layout.a_block
    cdef floating* mca_block = workspace + layout.mca_block
    cdef floating* bias_block = workspace + layout.bias_block
    cdef floating* peep_block = workspace + layout.peep_block
    cdef floating* packed_rw = NULL
    cdef floating* packed_w = NULL
    cdef floating* a_pack = NULL
    cdef floating* x_pack = NULL
    cdef int nthreads = 1, g, status = 0
    cdef Py_ssize_t u0, u1, group
    # on the heap when a team may run the pass: a job given up with a worker still inside
    # belongs to that worker for good. A pass that runs alone keeps it on the stack (for a
    # streaming step, malloc and free with the arena's lock were 6% of the time).
    cdef bint team_possible = T > 1 and _packed_gemm_on(tuning, mb) and not projected
    # the caller's gate order (lstm_options.gate_blocks) is read in place by the packings of W
    # and RW when both are packed in panels; every other path reads the weights in place, so
    # they get a copy in the kernels' order first (the bias is reordered below in every case)
    cdef bint packs_gates = (team_possible and mb >= LF_SMALL_M
                             and mb * n_in * <Py_ssize_t>sizeof(floating)
                             <= tuning.input_product_max_bytes)
    cdef floating* reordered_weights = NULL
    cdef Py_ssize_t peephole_columns = 3 if (dims.peepholes and not projected) else 0
    if reordered and not packs_gates:
        reordered_weights = <floating*>malloc((n_in * G + hp * (G + peephole_columns))
                                              * sizeof(floating))
        if reordered_weights == NULL:
            free(owned)
            return LSTM_ERR_NO_MEMORY
        _copy_gates_in_order(input_weights, ld_input_weights, n_in, h, 0, gate_blocks,
                             reordered_weights)
        _copy_gates_in_order(recurrent_weights, ld_recurrent_weights, hp, h, peephole_columns,
                             gate_blocks, reordered_weights + n_in * G)
        input_weights = reordered_weights
        ld_input_weights = n_in
        recurrent_weights = reordered_weights + n_in * G
        ld_recurrent_weights = hp
    cdef _forward_job single_job
    cdef _forward_job* job = &single_job
    if team_possible:
        job = <_forward_job*>malloc(sizeof(_forward_job))
        if job == NULL:
            free(reordered_weights)
            free(owned)
            return LSTM_ERR_NO_MEMORY
    # level-3 BLAS is called unless the packed kernel does every product (pass_acquire)
    cdef bint level3 = True, blas_single = _shape_uses_team(dims, T, tuning)
    # a streaming step (one step of one example): the products read W and RW in place
    # (_dot_columns); BLAS's gemv, or packing them, cost more than the products
    cdef bint dot_columns = T == 1 and mb == 1 and not projected and _packed_gemm_on(tuning, mb)
    if team_possible:
        packed_rw = workspace + layout.packed_rw
        if layout.a_pack >= 0:
            a_pack = workspace + layout.a_pack
        if layout.x_pack >= 0:
            x_pack = workspace + layout.x_pack
        # one limit for every team size: the choice changes the bits
        if mb * n_in * <Py_ssize_t>sizeof(floating) <= tuning.input_product_max_bytes:
            packed_w = workspace + layout.packed_w
            level3 = False
        nthreads = pass_acquire(_team_size(dims, T, tuning), level3, blas_single)
    else:
        # counted unless the pass calls no BLAS at all: a gemv takes a pool buffer too once its
        # vectors outgrow OpenBLAS's 2 KiB stack buffer. Only an inference step with every
        # product in _dot_columns calls none (the cache's x rows are mb*(T+1) apart, so a
        # training step's input product stays a gemv); counting cost two lock round trips
        level3 = not (dot_columns and not for_backprop)
        nthreads = pass_acquire(1, level3, blas_single)
    if nthreads == 0:
        _free_job(job, &single_job)
        free(reordered_weights)
        free(owned)
        return LSTM_ERR_NO_MEMORY
    if reordered_weights != NULL:
        gate_blocks = _SEED_GATE_ORDER      # the copies are in the kernels' order
    if packed_rw != NULL:
        if nthreads == 1 and reordered_weights == NULL and reordered:
            # (packs_gates: panels, and W packed too)
            _pack_gate_panels(recurrent_weights, ld_recurrent_weights, h, h, gate_blocks,
                              packed_rw)
            _pack_gate_panels(input_weights, ld_input_weights, n_in, h, gate_blocks, packed_w)
        elif nthreads == 1:
            _pack_weights(recurrent_weights, 1, ld_recurrent_weights, h, G, packed_rw, mb)
            if packed_w != NULL:
                _pack_weights(input_weights, 1, ld_input_weights, n_in, G, packed_w, mb)
        else:
            # per group of units, per gate block: the group's columns
            _plan_groups(&job.groups, h, nthreads, mb, tuning)
            for group in range(job.groups.first[nthreads]):
                u0 = job.groups.units[group]
                u1 = job.groups.units[group + 1]
                for g in range(4):
                    # (the caller's block of gate g: gate_blocks)
                    _pack_weights(recurrent_weights
                                  + (gate_blocks[g] * h + u0) * ld_recurrent_weights, 1,
                                  ld_recurrent_weights, h, u1 - u0,
                                  packed_rw + _group_slice(&job.groups, h, group, 4, g), mb)
                    if packed_w != NULL:
                        _pack_weights(input_weights + (gate_blocks[g] * h + u0) * ld_input_weights,
                                      1, ld_input_weights, n_in, u1 - u0,
                                      packed_w + _group_slice(&job.groups, n_in, group, 4, g), mb)
    # the bias as a [4h] vector, the peepholes as [mb, 3h] blocks; with one example the caller's
    # contiguous vectors are used in place (a streaming step then copies nothing)
    cdef Py_ssize_t j
    if mb == 1 and bias_stride == 1 and not reordered:
        bias_block = <floating*>bias
    else:
        # a contiguous [4h] vector: the per-step input product adds it, or the chunk's
        # projection starts from it
        for j in range(G):
            bias_block[j] = bias[_gate_column(options.gate_blocks, h, j) * bias_stride]
    cdef const floating* peep_source = recurrent_weights + G * ld_recurrent_weights
    cdef Py_ssize_t ld_peep = ld_recurrent_weights
    if projected:
        peep_source = <const floating*>options.peephole_weights
        ld_peep = options.ld_peephole_weights
    if dims.peepholes and mb == 1 and ld_peep == h:
        peep_block = <floating*>peep_source
    elif dims.peepholes and projected:
        for g in range(3):
            _broadcast_columns(peep_source + g * ld_peep, 1, h, mb, peep_block + g * n)
    elif dims.peepholes and mb == 1 and ld_recurrent_weights == h:
        peep_block = <floating*>(recurrent_weights + G * ld_recurrent_weights)
    elif dims.peepholes:
        # columns 4h, 4h+1, 4h+2 of RW: wFF, wOO, wGG
        _broadcast_columns(recurrent_weights + G * ld_recurrent_weights, 1, h, mb, peep_block)
        _broadcast_columns(recurrent_weights + (G + 1) * ld_recurrent_weights, 1, h, mb,
                           peep_block + n)
        _broadcast_columns(recurrent_weights + (G + 2) * ld_recurrent_weights, 1, h, mb,
                           peep_block + 2 * n)
    else:
        peep_block = NULL

    # the cache (see the module docstring)
    cdef Py_ssize_t ld_x = parts.ld_x, ld_hs = ld_x
    cdef floating* xp = NULL
    cdef floating* hs = NULL
    cdef floating* ones = NULL
    cdef floating* cs = NULL
    cdef floating* z = NULL
    cdef floating* a = NULL
    cdef floating* mca = NULL
    cdef floating* mp = NULL
    if for_backprop:
        xp = cache + parts.xp
        hs = cache + parts.hs
        ones = cache + parts.ones
        cs = cache + parts.cs
        z = cache + parts.z
        a = cache + parts.a
        mca = cache + parts.mca
        mp = cache + parts.mp

    _gather_units(dims, h0, h0_strides, h_ring, 0, hp)
    cdef Py_ssize_t row
    if for_backprop:
        _gather_state(dims, c0, c0_strides, cs)
        _copy_block(h_ring, mb, hs, ld_hs, mb, hp)
        for row in range(ld_x):
            ones[row] = 1
    else:
        _gather_state(dims, c0, c0_strides, c_ring)

    job.dims = dims
    job.input_weights = input_weights
    job.ld_input_weights = ld_input_weights
    job.ld_projection = ld_projection
    job.ld_hs = ld_hs
    job.projection = projection
    job.h_ring = h_ring
    # with each step's output one contiguous [mb, h] block, the blocks apart (a step reads the
    # previous one's block while the team writes its own), the step's h is written there
    # directly and the next step reads it back from there: no copy of h per step (the copy was
    # 3.5% of a (100, 64, 256, 256) float32 forward)
    job.h_in_output = (output != NULL and _contiguous_steps(output_strides, mb)
                       and (output_strides.time >= mb * hp or output_strides.time <= -mb * hp))
    # with lengths backwards, each example's steps go to its own times (0..length-1 reversed)
    job.scatter_by_example = by_length and not dims.forwards
    if job.scatter_by_example:
        job.h_in_output = False
    # a step's h, computed by groups of units, goes to a strided output (nn.LSTM's time-major
    # [T, mb, h]) during the next step, split by examples: threads writing parts of the same
    # cache lines each step cost 0.08 ms of a 1.1 ms (50, 32, 64, 128) forward at 2 threads
    job.output_deferred = output != NULL and not job.h_in_output and not job.scatter_by_example
    if by_length:
        # (also the steps after the longest, which do not run)
        _zero_padding(dims, options, output, output_strides, hp)
    job.c_ring = c_ring
    job.z_block = z_block
    job.a_block = a_block
    job.mca_block = mca_block
    job.z = z
    job.a = a
    job.mca = mca
    job.cs = cs
    job.hs = hs
    job.mp = mp
    job.mask_chunk = mask_chunk
    job.masked = mask != NULL or by_length
    job.bias_block = bias_block
    job.peep_block = peep_block
    job.recurrent_weights = recurrent_weights
    job.ld_recurrent_weights = ld_recurrent_weights
    job.packed = packed_rw
    job.a_pack = a_pack
    job.x_pack = x_pack
    job.packed_input_weights = packed_w
    job.dot_columns = dot_columns
    # inference with the per-step input product reads each step's x where it is when that is
    # one contiguous [mb, n_in] block (a Fortran-ordered x): no copy of x into the chunk first
    # (that copy was 1.7% of a (100, 64, 256, 256) float32 forward)
    if not for_backprop and packed_w != NULL and _contiguous_steps(x_strides, mb) and not by_length:
        job.x_in_place = x
        job.x_time_stride = x_strides.time
    else:
        job.x_in_place = NULL
        job.x_time_stride = 0
    job.x_to_pack = NULL
    job.x_strides = x_strides
    job.x_step_stride = mb
    job.output = output
    job.output_strides = output_strides
    job.options = options
    job.last_h = last_h
    job.last_h_strides = last_h_strides
    job.last_c = last_c
    job.last_c_strides = last_c_strides
    job.hp = hp
    job.projection_weights = options.projection_weights if projected else NULL
    job.ld_projection_weights = options.ld_projection_weights
    job.r_block = workspace + layout.r_block if projected else NULL
    job.rs = cache + parts.r if (projected and for_backprop) else NULL
    if by_length:
        # examples of length 0 keep their initial state
        _copy_rows_ending(dims, options, 0, h_ring, _block_strides(mb), last_h, last_h_strides,
                          0, hp)
        _copy_rows_ending(dims, options, 0, cs if for_backprop else c_ring, _block_strides(mb),
                          last_c, last_c_strides, 0, h)
    job.cancel = cancel
    job.stop_slots[0] = 0
    job.stop_slots[1] = 0
    job.cancelled = 0
    job.parts = _split_parts(dims, T, tuning)
    # the wavefront: a forward pass without lengths counts its output's steps as it goes
    # (otherwise lstm_forward_ex2 stores T at the end); with one thread and the per-step input
    # product, it waits for each step's x in the time loop, else for a chunk's x before the
    # chunk (for all of x when it runs in reverse or with lengths)
    cdef bint in_order = dims.forwards and not by_length
    job.steps_done = options.output_steps_done if in_order else NULL
    job.steps_ready = NULL
    job.x_each_step = NULL
    cdef bint wait_each_step = (options.input_steps_ready != NULL and in_order and nthreads == 1
                                and packed_w != NULL and not dot_columns)
    if wait_each_step:
        job.steps_ready = options.input_steps_ready
        if job.x_in_place == NULL:
            job.x_each_step = x
    lf_barrier_init(&job.barrier)
    job.barrier.cancel = cancel
    job.groups.taken_over = 0

    cdef Py_ssize_t s0, s1
    s0 = 0
    cdef Py_ssize_t steps = _steps_to_run(dims, options)
    while s0 < steps:
        s1 = s0 + chunk if s0 + chunk < steps else steps
        if options.input_steps_ready != NULL and not wait_each_step:
            if lf_steps_wait(options.input_steps_ready, s1 if in_order else T, cancel):
                job.cancelled = 1
                break
        # the chunk's input and mask in processing order; the job projects and runs the steps
        if for_backprop:
            if by_length:
                _pack_input_lengths(dims, options, x, x_strides, s0, s1, xp + mb * s0, ld_x)
                _pack_mask_lengths(dims, options, s0, s1, mp + mb * s0)
            elif job.x_each_step != NULL:
                _pack_mask(dims, mask, mask_strides, s0, s1, mp + mb * s0)
            else:
                _pack_input_serial_or_team(dims, job, x, x_strides, s0, s1, xp + mb * s0, ld_x,
                                           nthreads)
                _pack_mask(dims, mask, mask_strides, s0, s1, mp + mb * s0)
            job.packed_input = xp + mb * s0
            job.ld_packed_input = ld_x
            job.x_step_stride = mb
        else:
            if by_length:
                _pack_mask_lengths(dims, options, s0, s1, mask_chunk)
            else:
                _pack_mask(dims, mask, mask_strides, s0, s1, mask_chunk)
            if job.x_in_place != NULL:
                job.packed_input = NULL
                job.ld_packed_input = mb
            else:
                # for the per-step input product each step's x is one contiguous [mb, n_in]
                # block, as a Fortran-ordered x read in place: read as rows of the chunk (mb *
                # chunk apart) its packing for the product cost 0.03 ms of a (50, 32, 64, 128)
                # forward. (x with time contiguous is transposed a whole chunk at a time.)
                job.x_step_stride = mb
                job.ld_packed_input = ld_projection
                if packed_w != NULL and x_strides.feature == 1 and not by_length:
                    job.x_step_stride = mb * n_in
                    job.ld_packed_input = mb
                job.packed_input = x_chunk
                if by_length:
                    _pack_input_lengths(dims, options, x, x_strides, s0, s1, x_chunk,
                                        ld_projection)
                elif job.x_each_step != NULL:
                    job.x_to_pack = NULL
                else:
                    _pack_input_serial_or_team(dims, job, x, x_strides, s0, s1, x_chunk,
                                               job.ld_packed_input, nthreads)
        job.s0 = s0
        job.s1 = s1
        # the first step's counters (each thread resets those of the step after its current one)
        _reset_claims(&job.groups, s0, nthreads)
        if floating is float:
            status = team_execute(_forward_steps_f32, job, nthreads, &job.barrier)
        else:
            status = team_execute(_forward_steps_f64, job, nthreads, &job.barrier)
        if status == LF_TEAM_ABANDONED:
            return LSTM_ERR_ABANDONED      # job, work space and team stay with the worker
        if job.cancelled or job.barrier.abort:
            job.cancelled = 1
            break
        s0 = s1
    pass_release(nthreads, level3, blas_single)
    if report != NULL:
        report.threads = nthreads
        report.h_in_output = job.h_in_output
        report.x_in_place = job.x_in_place != NULL
        report.epsilon_in_place = 0
        report.gradient_split = 0
        report.groups_taken_over = job.groups.taken_over
    if job.cancelled:
        _free_job(job, &single_job)
        free(reordered_weights)
        free(owned)
        return LSTM_ERR_CANCELLED

    if job.output_deferred and steps > 0:
        _scatter_units(dims, _h_of_step(job, h_ring, steps - 1),
                       <floating*>output + _time_of(dims, steps - 1) * output_strides.time,
                       output_strides, 0, hp)
    if not by_length:
        _scatter_units(dims, _h_of_step(job, h_ring, T - 1), last_h, last_h_strides, 0, hp)
        _scatter_state(dims, cs + n * T if for_backprop else c_ring + n * (T % 2), last_c,
                       last_c_strides)
    _free_job(job, &single_job)
    free(reordered_weights)
    free(owned)
    return LSTM_OK
