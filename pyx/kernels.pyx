# cython: language_level=3
"""The port of DL4J's LSTMHelpers (../shared/seed/LSTMHelpers.java) to typed Cython over BLAS.

Internal layout. The seed works on [minibatch, features] slices, one time step at a time, with
`ifogActivations = input . W + prevOutput . RW` as [minibatch, 4h]. This port keeps that
orientation (example-major, the fastest for OpenBLAS when the minibatch is small) and processes
steps in *processing order* s = 0..T-1 (time t = s going forwards, t = T-1-s going backwards).
Two arrangements are used:
  - step-stacked: a quantity with F features over S steps is a column-major [mb*S, F] matrix
    whose rows s*mb .. s*mb+mb-1 belong to step s. The input projection of many steps is then one
    GEMM (seed: `miniBatchData.mmul(inputWeights)` per step), and after the backward loop one GEMM
    each gives dL/dW, dL/dRW, dL/dx and the bias gradient (the seed accumulates them per step);
  - per-step blocks: a contiguous [mb, F] block per step (index m + f*mb), so that each gate of
    a step is one contiguous run of h*mb values for the element-wise code and the recurrent GEMM
    (seed: `Nd4j.gemm(prevOutputActivations, recurrentWeightsIFOG, ...)` and, backwards,
    `Nd4j.gemm(deltaifogNext, wIFOG, nablaOut, ...)`) reads and writes contiguous memory.

Cache written by a forward pass for backprop (the seed's FwdPassReturn):
  xh   [mb*(T+1), n_in + h + 1] step-stacked, three column groups of one matrix, so that one
       GEMM after the backward loop gives dL/dW, dL/dRW and the bias gradient together:
    xp   columns 0..n_in-1             packed input (slot s: step s; slot T unused)
    hs   columns n_in..n_in+h-1        slot 0: h0 (or zeros); slot s+1: output of step s, masked
                                       (prevAct, fwdPassOutputAsArrays)
    ones column n_in+h                 1 (the bias gradient's column sums)
  cs   T+1 blocks [mb, h]              slot 0: c0 (or zeros); slot s+1: cell state of step s, masked
                                       (prevMemCell, memCellState)
  z    T blocks [mb, 4h]               gate pre-activations incl. bias and peepholes (iz, fz, oz, gz)
  a    T blocks [mb, 4h]               gate activations (ia, fa, oa, ga)
  mca  T blocks [mb, h]                layer activation of the unmasked cell state (memCellActivations)
  mp   [mb*T]                          mask in processing order (1 where no mask was given)
Gate blocks in every 4h: [block input i, forget f, output o, input gate g], the seed's [I, F, O, G].
"""
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset
from cython cimport floating

cimport numpy as cnp
import numpy as np

from lstmfast._blas cimport gemm, fits_blas_int
from lstmfast._blas_int cimport BLAS_INT_MAX as _BLAS_INT_MAX
from lstmfast._activations cimport (activate_array, derivative_array, lf_select_variant,
                                    lf_exp_array_f32, lf_exp_array_f64, lf_load_flag,
                                    lf_packed_gemm_available, LF_SMALL_M,
                                    lf_pack_rows_f32, lf_pack_rows_f64,
                                    lf_pack_b_f32, lf_pack_b_f64, lf_gemm_packed_f32,
                                    lf_gemm_packed_f64)
from lstmfast.kernels cimport (lstm_dims, lstm_strides, lstm_tuning, lstm_report,
                               LSTM_OK, LSTM_ERR_ARGUMENT,
                               LSTM_ERR_ACTIVATION, LSTM_ERR_TOO_LARGE, LSTM_ERR_NO_MEMORY,
                               LSTM_ERR_CANCELLED,
                               ACT_TANH, ACT_SIGMOID, ACT_HARDSIGMOID, ACT_COUNT)

cnp.import_array()

# The thread team of the time loops (pyx/lstmfast_team.h): each step's recurrent product and
# element-wise code split across threads by hidden units, one barrier per step.
cdef extern from "lstmfast_team.h" nogil:
    ctypedef struct lf_barrier:
        int count
    ctypedef void (*lf_team_fn)(void* job, int tid, int nthreads) noexcept nogil
    int LF_TEAM_MAX
    int lf_team_acquire(int nthreads)
    void lf_team_release(int nthreads)
    void lf_team_execute(lf_team_fn fn, void* job, int nthreads)
    void lf_barrier_init(lf_barrier* b)
    void lf_barrier_wait(lf_barrier* b, int nthreads)
    Py_ssize_t lf_claim_next(Py_ssize_t* counter)
    void lf_claims_reset(Py_ssize_t* counter)
    void lf_count_add(Py_ssize_t* counter, Py_ssize_t value)
    int lf_blas_threads_init(const void* blas_function)

# A forced schedule for the team's job publication (tests): worker 2 is held after it has seen
# one job's sequence, before it reads the job, until the next job has been published.
cdef extern from *:
    """
    #include <time.h>
    static int lf_schedule_armed = 0, lf_schedule_paused = 0;
    static unsigned long lf_schedule_idle_after = 0;
    static int lf_schedule_runs[2][LF_TEAM_MAX];

    static void lf_schedule_hook(int tid, int event, unsigned long sequence)
    {
        if (tid != 2)
            return;
        if (event == LF_TEAM_IDLE) {
            __atomic_store_n(&lf_schedule_idle_after, sequence, __ATOMIC_RELEASE);
            return;
        }
        /* (an odd sequence: job A still being written; the pause waits for A complete) */
        if ((sequence & 1u) || !__atomic_exchange_n(&lf_schedule_armed, 0, __ATOMIC_ACQ_REL))
            return;
        __atomic_store_n(&lf_schedule_paused, 1, __ATOMIC_RELEASE);
        while (__atomic_load_n(&lf_team.sequence, __ATOMIC_ACQUIRE) != sequence + 2)
            LF_PAUSE();
    }

    static void lf_schedule_job_a(void* job, int tid, int nthreads)
    {
        (void)job; (void)nthreads;
        __atomic_add_fetch(&lf_schedule_runs[0][tid], 1, __ATOMIC_RELAXED);
    }

    static void lf_schedule_job_b(void* job, int tid, int nthreads)
    {
        (void)job; (void)nthreads;
        __atomic_add_fetch(&lf_schedule_runs[1][tid], 1, __ATOMIC_RELAXED);
    }

    /* Sleeps in 1 ms ticks until *flag == value, at most 10 s; 1 if it got there. */
    static int lf_schedule_wait(const void* flag, int is_long, unsigned long value)
    {
        struct timespec tick = {0, 1000000};
        for (int i = 0; i < 10000; i++) {
            unsigned long now = is_long ? __atomic_load_n((const unsigned long*)flag, __ATOMIC_ACQUIRE)
                                        : (unsigned long)__atomic_load_n((const int*)flag, __ATOMIC_ACQUIRE);
            if (now == value)
                return 1;
            nanosleep(&tick, NULL);
        }
        return 0;
    }

    /* Job A on threads 0-1 with worker 2 held as it reads it until job B (threads 0-2) has been
     * published; then waits for worker 2 to be idle after job B, so that lf_schedule_runs holds
     * every run of each job by each thread. 0: done; -1: no team of 3; -2: worker 2 never
     * reached the pause or never went idle (after 10 s each). */
    static int lf_schedule_run(void)
    {
        int n = lf_team_acquire(3), status = 0;
        if (n < 3) {
            lf_team_release(n);
            return -1;
        }
        memset(lf_schedule_runs, 0, sizeof(lf_schedule_runs));
        __atomic_store_n(&lf_schedule_paused, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&lf_schedule_armed, 1, __ATOMIC_RELEASE);
        __atomic_store_n(&lf_team_test_hook, lf_schedule_hook, __ATOMIC_RELEASE);
        lf_team_execute(lf_schedule_job_a, NULL, 2);
        lf_schedule_wait(&lf_schedule_paused, 0, 1);
        if (__atomic_exchange_n(&lf_schedule_armed, 0, __ATOMIC_ACQ_REL))
            status = -2;                       /* never held: job B runs unforced */
        lf_team_execute(lf_schedule_job_b, NULL, 3);
        unsigned long after_b = __atomic_load_n(&lf_team.sequence, __ATOMIC_ACQUIRE);
        if (!lf_schedule_wait(&lf_schedule_idle_after, 1, after_b))
            status = -2;
        __atomic_store_n(&lf_team_test_hook, NULL, __ATOMIC_RELEASE);
        lf_team_release(n);
        return status;
    }
    """
    int lf_schedule_run() nogil
    int lf_schedule_runs[2][8]


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
    void lf_cells_select(int avx2)

from scipy.linalg cimport cython_blas as _cython_blas
# OpenBLAS's thread setters, found through the library SciPy's cython_blas calls
_BLAS_THREAD_CONTROL = lf_blas_threads_init(<const void*>_cython_blas.sgemm) != 0

import os as _os
import operator
# AVX2+FMA variants of the vectorised math when the CPU has them (LSTMFAST_DISABLE_AVX2=1: portable)
_AVX2_ACTIVE = lf_select_variant(0 if _os.environ.get("LSTMFAST_DISABLE_AVX2", "") not in ("", "0") else 1)
lf_cells_select(_AVX2_ACTIVE)

cdef Py_ssize_t SIZE_MAX_ELEMENTS = (<Py_ssize_t>1 << 62) // 16


# ---------------------------------------------------------------------------------------------
# the tuning record (lstm_tuning): every choice of how a pass computes, with its measured default

cdef lstm_tuning lstm_default_tuning() noexcept nogil:
    cdef lstm_tuning t
    # The input projection runs in chunks of time steps so that its work space stays bounded
    # for long sequences; about this many elements per chunk (at least one step).
    t.projection_chunk_elements = 1 << 21
    # With the packed kernel on, each step computes its own input product x_s W (W packed too)
    # when one step's input [mb, nIn] takes at most this many bytes; above, one OpenBLAS GEMM
    # per chunk of steps is faster. Measured (1 thread, forward, process time, median of 3-5
    # alternating runs): per step (50, 32, 64, 128) 7.4 -> 6.5 ms float32, 15.6 -> 14.2 ms
    # float64; (200, 16, 128, 512) 130 -> 113 ms float32; (100, 64, 256, 256) 117 -> 109 ms
    # float32 (64 KB per step) but 239 -> 259 ms float64 (128 KB per step: the step's input no
    # longer stays in L1/L2 while the kernel sweeps W's panels). Those were with x read in
    # place; with x packed (x_pack) per step at 128-256 KB was still no faster at one thread:
    # (60, 128, 512, 1024) float32 1357 vs 1351 ms, float64 (100, 64, 256, 256) 226 vs 219 ms.
    t.input_product_max_bytes = 65536
    # The same limit for a pass split across the thread team, where the chunk's GEMM also costs
    # a barrier (every thread waits for all rows) and has each thread re-pack all of W; the
    # step's x is packed for the kernel (x_pack), so the limit is about L2 (512 KB here).
    # Forward, 2 threads, wall time, per step vs chunk GEMM, same process: (60, 128, 512, 1024)
    # float32 740 vs 790 ms, float64 (100, 64, 256, 256) 153 vs 158 ms, (30, 128, 512, 512)
    # float64 (512 KB per step) 295 vs 314 ms; 1 MB per step loses: (30, 128, 2048, 512)
    # float32 388 vs 354 ms.
    t.input_product_team_max_bytes = 524288
    # A thread's share of a step must outweigh the barrier at the step's end (a few hundred ns
    # between cores) and the unit split must leave the packed product whole 6-column panels:
    # at least this many units per thread and this many multiply-adds per thread and step.
    t.team_min_units = 24
    t.team_min_step_work = 1 << 16
    # The time loops of a team split each step into groups of units (about this many per
    # thread, each a whole number of packed panels). Each thread owns a run of groups and takes
    # them in order; a thread that has finished its own takes the groups its partners have not
    # started. Why: with a fixed share each, a step waits for the slower thread, and on this
    # shared machine either thread's share often ran late, by turns (counted in an instrumented
    # build: each thread spent 8-18% of a (100, 64, 256, 256) float32 forward waiting at the
    # step's barrier). Measured against one group per thread (the fixed shares) at 2 threads,
    # settings interleaved in one process, 11 medians of 10-30 samples per dtype: forwards
    # float32 0.87-1.02x the time (median 0.94x), float64 0.75-1.10x (0.91x); training
    # 0.90-1.04x (1.00x).
    t.unit_groups_per_thread = 8
    # ... but fewer where a group's recurrent product would fall below this many multiply-adds
    # per step (each group costs its own kernel calls and element-wise passes)
    t.unit_group_min_work = 1 << 18
    # 1 gives thread 0 every group, so that the others run only groups they take over (tests)
    t.groups_all_to_first = 0
    # a team may split the gradient GEMMs after the backward loop by rows (_use_row_groups)
    t.gradient_split_rows = 1
    # the packed-weights AVX2 kernel for the per-step products when the CPU has it (0: BLAS)
    t.packed_gemm = 1
    # the time loops' threads: set_num_threads's value
    t.threads = 0
    return t


cdef inline const lstm_tuning* _tuning_or_defaults(const lstm_tuning* tuning,
                                                   lstm_tuning* defaults) noexcept nogil:
    """tuning, or the defaults written into *defaults when tuning is NULL."""
    if tuning != NULL:
        return tuning
    defaults[0] = lstm_default_tuning()
    return defaults


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
    if (lstm_cache_size(dims) < 0 or lstm_backward_workspace_size(dims) < 0
            or lstm_forward_workspace_size(dims, 0) < 0):
        return LSTM_ERR_TOO_LARGE
    return LSTM_OK


cdef Py_ssize_t lstm_cache_size(const lstm_dims* dims) noexcept nogil:
    if dims == NULL or dims.minibatch < 1 or dims.n_in < 1 or dims.hidden < 1 or dims.time_steps < 1:
        return -1
    cdef Py_ssize_t mb = dims.minibatch, n_in = dims.n_in, h = dims.hidden, T = dims.time_steps
    # per (step, example): z 4h, a 4h, mca h, mask 1; with T+1 slots: xh (n_in + h + 1) and cs h
    cdef Py_ssize_t per_row = _add(_mul(9, h), 1)
    cdef Py_ssize_t slots = _mul(mb, _add(T, 1))
    cdef Py_ssize_t per_slot = _add(_add(n_in, _mul(2, h)), 1)
    return _add(_mul(per_row, _mul(mb, T)), _mul(per_slot, slots))


cdef inline Py_ssize_t _chunk(const lstm_dims* dims, const lstm_tuning* tuning) noexcept nogil:
    """Steps per input-projection GEMM: a bounded work space for long sequences."""
    cdef Py_ssize_t per_step = (dims.n_in + 4 * dims.hidden + 1) * dims.minibatch
    cdef Py_ssize_t chunk = tuning.projection_chunk_elements // per_step
    if chunk < 1:
        chunk = 1
    if chunk > dims.time_steps:
        chunk = dims.time_steps
    return chunk


cdef inline Py_ssize_t _packed_size(Py_ssize_t K, Py_ssize_t N) noexcept nogil:
    """Elements of B [K, N] packed in 6-column panels (the layout for minibatches of 4 or more)."""
    return _mul(_mul((N + 5) // 6, 6), K)


cdef inline Py_ssize_t _packed_len(Py_ssize_t K, Py_ssize_t N, Py_ssize_t rows) noexcept nogil:
    """Elements of B [K, N] packed for products with `rows`-row A: rows of N padded to 8 below
    LF_SMALL_M rows, 6-column panels otherwise (see lstmfast_simd.h)."""
    if rows < LF_SMALL_M:
        return _mul(_mul((N + 7) // 8, 8), K)
    return _packed_size(K, N)


cdef inline Py_ssize_t _a_pack_len(Py_ssize_t M, Py_ssize_t K) noexcept nogil:
    """Elements of A [M, K] packed by the kernel (lf_gemm_packed_*'s a_pack): blocks of 16 rows
    (float; double uses 8-row blocks, so this is an upper bound), K columns each."""
    return _mul(_mul((M + 15) // 16, 16), K)


cdef inline bint _a_pack_used(Py_ssize_t mb) noexcept nogil:
    """Whether a pass at this minibatch may pack A for the kernel (the panel kernel's range:
    the row kernel below LF_SMALL_M reads A in place, OpenBLAS above PACKED_GEMM_MAX_MINIBATCH);
    the work spaces reserve the room only then. Constant for a process (not _use_packed_gemm,
    which may change between sizing a work space and using it)."""
    return LF_SMALL_M <= mb <= PACKED_GEMM_MAX_MINIBATCH


# The step's x is packed for the per-step input product (x_pack) only up to this many elements
# of [mb, nIn]: 512 KB of float, input_product_team_max_bytes's default; above, the per-step
# product is not used by default and the room (8 threads' copies) would be reserved for
# nothing. A constant, like _a_pack_used (not the tunable limits: a work space sized under one
# setting may be used under another); past it the per-step product reads x in place.
cdef Py_ssize_t X_PACK_MAX_ELEMENTS = 131072


cdef inline bint _x_pack_used(Py_ssize_t mb, Py_ssize_t n_in) noexcept nogil:
    return _a_pack_used(mb) and mb * n_in <= X_PACK_MAX_ELEMENTS


cdef inline Py_ssize_t _packed_slices_size(Py_ssize_t K, Py_ssize_t N, Py_ssize_t blocks) noexcept nogil:
    """Room for N columns packed whole, or cut into `blocks` gate blocks of N / blocks columns,
    each cut into up to LF_TEAM_MAX thread slices and each slice into groups of whole panels
    but its last (_plan_groups: the forward's W and RW per gate block, the backward's RW^T as
    one block), in either packed layout (every slice padded to at most 5 more columns as
    panels, 7 more as rows)."""
    cdef Py_ssize_t whole = _packed_len(K, N, LF_SMALL_M)     # panels
    cdef Py_ssize_t whole_rows = _packed_len(K, N, 1)        # rows
    cdef Py_ssize_t sliced = _mul(_add(N, 7 * blocks * <Py_ssize_t>LF_TEAM_MAX), K)
    if whole_rows > whole:
        whole = whole_rows
    return whole if whole > sliced else sliced


cdef Py_ssize_t lstm_forward_workspace_size(const lstm_dims* dims, bint for_backprop) noexcept nogil:
    return lstm_forward_workspace_size_ex(dims, for_backprop, NULL)


cdef inline Py_ssize_t _region(Py_ssize_t* end, Py_ssize_t size) noexcept nogil:
    """Reserve `size` elements at *end (a layout's running size): the region's offset; -1 and
    *end -1 once any size was -1 (too large) or the sum overflows."""
    cdef Py_ssize_t offset = end[0]
    end[0] = _add(end[0], size)
    return offset if end[0] >= 0 else -1


ctypedef struct _forward_layout:
    # offsets in elements of a forward work space's regions (-1: not reserved), and its size
    Py_ssize_t chunk            # steps per input-projection chunk
    Py_ssize_t projection       # [mb*chunk, 4h]: the chunk's input projection
    Py_ssize_t x_chunk          # [mb*chunk, n_in]: the chunk's packed input (inference)
    Py_ssize_t mask_chunk       # [mb*chunk]: the chunk's mask (inference)
    Py_ssize_t h_ring           # 2 x [mb, h]
    Py_ssize_t c_ring           # 2 x [mb, h] (inference)
    Py_ssize_t z_block          # [mb, 4h] (inference)
    Py_ssize_t a_block          # [mb, 4h] (inference)
    Py_ssize_t mca_block        # [mb, h] (inference)
    Py_ssize_t bias_block       # [4h]
    Py_ssize_t peep_block       # [mb, 3h]: wFF, wOO, wGG broadcast
    Py_ssize_t packed_rw        # RW packed (T > 1)
    Py_ssize_t packed_w         # W packed (T > 1)
    Py_ssize_t a_pack           # LF_TEAM_MAX x _a_pack_len(mb, h): each thread's packed h
    Py_ssize_t x_pack           # LF_TEAM_MAX x _a_pack_len(mb, n_in): each thread's packed x
    Py_ssize_t total


cdef Py_ssize_t _plan_forward_workspace(const lstm_dims* dims, const lstm_tuning* tuning,
                                        _forward_layout* layout) noexcept nogil:
    """The forward work space's layout under `tuning` (the one place that knows it: the size
    query and the pass's carving both read it); its size in elements, or -1 (too large)."""
    cdef Py_ssize_t mb = dims.minibatch, h = dims.hidden, n_in = dims.n_in
    cdef Py_ssize_t block = _mul(mb, h), G = _mul(4, h)
    cdef Py_ssize_t chunk = _chunk(dims, tuning)
    cdef Py_ssize_t rows = _mul(mb, chunk)
    cdef Py_ssize_t end = 0
    layout.chunk = chunk
    layout.projection = _region(&end, _mul(rows, G))
    layout.x_chunk = _region(&end, _mul(rows, n_in))
    layout.mask_chunk = _region(&end, rows)
    layout.h_ring = _region(&end, _mul(2, block))
    layout.c_ring = _region(&end, _mul(2, block))
    layout.z_block = _region(&end, _mul(4, block))
    layout.a_block = _region(&end, _mul(4, block))
    layout.mca_block = _region(&end, block)
    layout.bias_block = _region(&end, G)
    layout.peep_block = _region(&end, _mul(3, block))
    layout.packed_rw = layout.packed_w = layout.a_pack = layout.x_pack = -1
    if dims.time_steps > 1:
        # the packed recurrent and input weights, and each thread's copies of the step's h and
        # x packed for the kernel (lf_gemm_packed_*'s a_pack; x for the per-step input product)
        layout.packed_rw = _region(&end, _packed_slices_size(h, G, 4))
        layout.packed_w = _region(&end, _packed_slices_size(n_in, G, 4))
        if _a_pack_used(mb):
            layout.a_pack = _region(&end, _mul(LF_TEAM_MAX, _a_pack_len(mb, h)))
        if _x_pack_used(mb, n_in):
            layout.x_pack = _region(&end, _mul(LF_TEAM_MAX, _a_pack_len(mb, n_in)))
    layout.total = end
    return end


cdef Py_ssize_t lstm_forward_workspace_size_ex(const lstm_dims* dims, bint for_backprop,
                                               const lstm_tuning* tuning) noexcept nogil:
    if dims == NULL or dims.minibatch < 1 or dims.n_in < 1 or dims.hidden < 1 or dims.time_steps < 1:
        return -1
    cdef lstm_tuning defaults
    tuning = _tuning_or_defaults(tuning, &defaults)
    if tuning.projection_chunk_elements < 1:
        return -1
    cdef _forward_layout layout
    return _plan_forward_workspace(dims, tuning, &layout)


cdef Py_ssize_t lstm_backward_workspace_size(const lstm_dims* dims) noexcept nogil:
    return lstm_backward_workspace_size_ex(dims, NULL)


ctypedef struct _backward_layout:
    # offsets in elements of a backward work space's regions (-1: not reserved), and its size
    Py_ssize_t delta            # [mb*T, 4h]: the deltas, step-stacked
    Py_ssize_t grad_xp          # [mb*T, n_in]: dL/dx, step-stacked
    Py_ssize_t grad_stack       # [n_in + h + 1, 4h]: dW, dRW[:, :4h] and the bias sums
    Py_ssize_t nabla_out        # [mb, h]
    Py_ssize_t cell_error       # [mb, h], this step
    Py_ssize_t cell_error_next  # [mb, h], the next processed step
    Py_ssize_t delta_ring       # 2 x [mb, 4h]: contiguous deltas
    Py_ssize_t peep_block       # [mb, 3h]: wFF, wOO, wGG broadcast
    Py_ssize_t scratch          # 6 x [mb, h]
    Py_ssize_t rw_t             # [4h, h] = RW[:, :4h]^T
    Py_ssize_t packed_rw_t      # RW^T packed
    Py_ssize_t peephole_sums    # 3 x [h]: sum_f, sum_o, sum_g
    Py_ssize_t a_pack           # LF_TEAM_MAX x _a_pack_len(mb, 4h): each thread's packed deltas
    Py_ssize_t grad_partial     # [n_in + h + 1, 4h]: a team's second row group's sums
    Py_ssize_t total


cdef Py_ssize_t _plan_backward_workspace(const lstm_dims* dims,
                                         _backward_layout* layout) noexcept nogil:
    """The backward work space's layout (the one place that knows it, as
    _plan_forward_workspace); its size in elements, or -1 (too large)."""
    cdef Py_ssize_t mb = dims.minibatch, h = dims.hidden, n_in = dims.n_in
    cdef Py_ssize_t rows = _mul(mb, dims.time_steps)
    cdef Py_ssize_t block = _mul(mb, h), G = _mul(4, h)
    cdef Py_ssize_t stack = _mul(_add(_add(n_in, h), 1), G)
    cdef Py_ssize_t end = 0
    layout.delta = _region(&end, _mul(rows, G))
    layout.grad_xp = _region(&end, _mul(rows, n_in))
    layout.grad_stack = _region(&end, stack)
    layout.nabla_out = _region(&end, block)
    layout.cell_error = _region(&end, block)
    layout.cell_error_next = _region(&end, block)
    layout.delta_ring = _region(&end, _mul(8, block))
    layout.peep_block = _region(&end, _mul(3, block))
    layout.scratch = _region(&end, _mul(6, block))
    layout.rw_t = _region(&end, _mul(G, h))
    layout.packed_rw_t = _region(&end, _packed_slices_size(G, h, 1))
    layout.peephole_sums = _region(&end, _mul(3, h))
    layout.a_pack = layout.grad_partial = -1
    if _a_pack_used(mb):
        layout.a_pack = _region(&end, _mul(LF_TEAM_MAX, _a_pack_len(mb, G)))
    if _row_group_room(dims):
        layout.grad_partial = _region(&end, stack)
    layout.total = end
    return end


cdef Py_ssize_t lstm_backward_workspace_size_ex(const lstm_dims* dims,
                                                const lstm_tuning* tuning) noexcept nogil:
    """(No tuning choice changes the backward work space: `tuning` is for symmetry.)"""
    if dims == NULL or dims.minibatch < 1 or dims.n_in < 1 or dims.hidden < 1 or dims.time_steps < 1:
        return -1
    cdef _backward_layout layout
    return _plan_backward_workspace(dims, &layout)


cdef inline bint _row_group_room(const lstm_dims* dims) noexcept nogil:
    """Whether the backward work space holds a second [n_in + h + 1, 4h] block of gradient
    sums: when mb * T >= 4h, the shapes where a team may split the gradient GEMMs by rows."""
    cdef Py_ssize_t T = dims.time_steps
    return T > 1 and dims.minibatch >= (4 * dims.hidden + T - 1) // T    # mb * T >= 4h


cdef inline bint _use_row_groups(const lstm_dims* dims, Py_ssize_t rows,
                                 const lstm_tuning* tuning) noexcept nogil:
    """Whether a team splits the gradient GEMMs over `rows` step-stacked rows into two row
    groups (see _backward_steps). Only when the rows are at least 4h: the groups' partial sums
    cost F x 4h additions, the column split's duplicated packing about F x rows copies, and with
    few rows the row groups were slower (2 threads, float32: (10, 1, 256, 256) 1.33-1.41x,
    (20, 4, 512, 512) 1.15-1.26x the time of the column split; (50, 32, 64, 128) 0.93-0.95x)."""
    return tuning.gradient_split_rows and rows >= 4 * dims.hidden and _row_group_room(dims)


# ---------------------------------------------------------------------------------------------
# the per-step recurrent product

# Up to this minibatch the packed kernel (with h_prev / the deltas packed too, lf_gemm_packed_*'s
# a_pack) beats OpenBLAS, which re-packs the recurrent weights at every step. Forward, process
# time, median of 3 alternating runs: float32 1 thread (50, 128, 512, 1024) 1229 -> 1102 ms,
# 2 threads 1427 -> 1197 ms; (30, 256, 256, 512) 374 -> 318 ms; float64 (30, 128, 256, 512)
# 377 -> 330 ms, (30, 256, 256, 512) 692 -> 687 ms. Before A was packed, mb 128 was slower
# packed (3.12 vs 2.61 s at (100, 128, 512, 1024)) and the limit was 64.
cdef Py_ssize_t PACKED_GEMM_MAX_MINIBATCH = 256




cdef inline bint _packed_gemm_on(const lstm_tuning* tuning, Py_ssize_t minibatch) noexcept nogil:
    return (tuning.packed_gemm != 0 and lf_packed_gemm_available != 0
            and minibatch <= PACKED_GEMM_MAX_MINIBATCH)


cdef inline void _recurrent_product(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                                    const floating* a, Py_ssize_t lda,
                                    const floating* packed_b, const floating* b, Py_ssize_t ldb,
                                    char transb, const floating* addend, Py_ssize_t ld_addend,
                                    floating* c, Py_ssize_t ldc, floating* a_pack,
                                    bint a_packed) noexcept nogil:
    """C[M, N] = addend + A[M, K] op(B) (addend NULL: none; c: accumulate): with the packed
    weights when they were packed (the addend read in the kernel's final pass, so that a step's
    input projection is not first copied into C; A copied into a_pack [_a_pack_len(M, K)]
    first, unless a_packed: the previous call packed this A there), else BLAS."""
    if packed_b != NULL:
        if floating is float:
            lf_gemm_packed_f32(M, N, K, a, lda, packed_b, c, ldc, addend, ld_addend, NULL, a_pack,
                               a_packed)
        else:
            lf_gemm_packed_f64(M, N, K, a, lda, packed_b, c, ldc, addend, ld_addend, NULL, a_pack,
                               a_packed)
        return
    if addend != NULL and addend != c:
        _copy_block(addend, ld_addend, c, ldc, M, N)
    gemm(c'N', transb, M, N, K, <floating>1, a, lda, b, ldb,
         <floating>(0 if addend == NULL else 1), c, ldc)


cdef inline void _input_product(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* a,
                                Py_ssize_t lda, const floating* packed_b, const floating* bias,
                                floating* c, Py_ssize_t ldc, floating* a_pack,
                                bint a_packed) noexcept nogil:
    """C[M, N] = A[M, K] B + 1 bias^T with B packed: one step's input product and bias (seed:
    input.mmul(inputWeights).addiRowVector(biases)) when it is done per step. a_pack, a_packed
    as in _recurrent_product."""
    if floating is float:
        lf_gemm_packed_f32(M, N, K, a, lda, packed_b, c, ldc, NULL, 0, bias, a_pack, a_packed)
    else:
        lf_gemm_packed_f64(M, N, K, a, lda, packed_b, c, ldc, NULL, 0, bias, a_pack, a_packed)


cdef inline void _pack_weights(const floating* b, Py_ssize_t sk, Py_ssize_t sn, Py_ssize_t K,
                               Py_ssize_t N, floating* packed, Py_ssize_t rows) noexcept nogil:
    """Pack B (element (k, n) at b[k*sk + n*sn]) for products with `rows`-row A (_packed_len)."""
    if rows < LF_SMALL_M:
        if floating is float:
            lf_pack_rows_f32(b, sk, sn, K, N, packed)
        else:
            lf_pack_rows_f64(b, sk, sn, K, N, packed)
    elif floating is float:
        lf_pack_b_f32(b, sk, sn, K, N, packed)
    else:
        lf_pack_b_f64(b, sk, sn, K, N, packed)


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
        # forget and input-gate peepholes on the previous cell state (wFF, wGG)
        for i in range(n):
            zf[i] = zf[i] + c_prev[i] * peep_block[i]
            zg[i] = zg[i] + c_prev[i] * peep_block[2 * stride + i]
    activate_array(act, zi, ai, n)          # block input
    activate_array(gate, zf, af, n)         # forget gate
    activate_array(gate, zg, ag, n)         # input gate
    # c = fa * c_prev + ga * ia; the output-gate peephole on the current, unmasked c (wOO)
    for i in range(n):
        c_cur[i] = af[i] * c_prev[i] + ag[i] * ai[i]
    if peep_block != NULL:
        # (a loop of its own: one output per loop keeps it vectorised)
        for i in range(n):
            zo[i] = zo[i] + c_cur[i] * peep_block[stride + i]
    activate_array(gate, zo, ao, n)         # output gate
    activate_array(act, c_cur, mca, n)      # memCellActivations (unmasked c)
    for i in range(n):
        h_cur[i] = mca[i] * ao[i]
    _mask_cells(n, mb, mask_col, h_cur, c_cur)


cdef inline void _mask_cells(Py_ssize_t n, Py_ssize_t mb, const floating* mask_col,
                             floating* h_cur, floating* c_cur) noexcept nogil:
    """The mask zeroes h and c (the seed's muliColumnVector(timeStepMaskColumn)); mask_col NULL:
    no mask."""
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
    # output-gate delta (masked at the end, as the seed) and the cell error; one output per loop
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
    """The end of _backward_cells: the mask on the deltas, then (with peepholes) each unit's
    sums over the minibatch for the peephole gradients."""
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


# ---------------------------------------------------------------------------------------------
# packing between the caller's strided arrays and the internal layouts

cdef inline Py_ssize_t _time_of(const lstm_dims* dims, Py_ssize_t s) noexcept nogil:
    return s if dims.forwards else dims.time_steps - 1 - s


cdef inline bint _contiguous_steps(lstm_strides st, Py_ssize_t mb) noexcept nogil:
    """Whether a [minibatch, feature, time] operand holds each step as one contiguous
    [mb, features] block (Fortran order): unit k's examples at k * mb onwards."""
    return st.minibatch == 1 and st.feature == mb


cdef inline void _copy_block(const floating* src, Py_ssize_t ld_src, floating* dst,
                             Py_ssize_t ld_dst, Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    """dst[rows, cols] = src[rows, cols], both column-major with their leading dimensions."""
    cdef Py_ssize_t i, j
    if ld_src == rows and ld_dst == rows:
        # one block (minibatch 1 at T 1, a projection chunk of one step): the per-column loop
        # costs ~15 instructions per element at one row
        memcpy(dst, src, rows * cols * sizeof(floating))
        return
    if rows == 1:
        for j in range(cols):
            dst[j * ld_dst] = src[j * ld_src]
        return
    for j in range(cols):
        for i in range(rows):
            dst[i + j * ld_dst] = src[i + j * ld_src]


cdef inline void _gather_state(const lstm_dims* dims, const floating* src, lstm_strides st,
                               floating* dst) noexcept nogil:
    """[mb, h] strided -> contiguous [mb, h] block; zeros if src is NULL."""
    _gather_units(dims, src, st, dst, 0, dims.hidden)


cdef inline void _gather_units(const lstm_dims* dims, const floating* src, lstm_strides st,
                               floating* dst, Py_ssize_t k0, Py_ssize_t k1) noexcept nogil:
    """_gather_state for the units k0..k1-1 only (dst is the whole block)."""
    cdef Py_ssize_t m, k, mb = dims.minibatch
    cdef const floating* column
    if src != NULL and _contiguous_steps(st, mb):
        # a Fortran-ordered [mb, h] state: the units k0..k1-1 are one contiguous run
        memcpy(dst + k0 * mb, src + k0 * mb, (k1 - k0) * mb * sizeof(floating))
        return
    for k in range(k0, k1):
        if src == NULL:
            for m in range(mb):
                dst[m + k * mb] = 0
        elif st.minibatch == 1:
            # the examples of a unit contiguous (Fortran order): a loop GCC vectorises
            column = src + k * st.feature
            for m in range(mb):
                dst[m + k * mb] = column[m]
        else:
            for m in range(mb):
                dst[m + k * mb] = src[m * st.minibatch + k * st.feature]


cdef inline void _scatter_state(const lstm_dims* dims, const floating* src, floating* dst,
                                lstm_strides st) noexcept nogil:
    """Contiguous [mb, h] block -> [mb, h] strided (nothing if dst is NULL)."""
    _scatter_units(dims, src, dst, st, 0, dims.hidden)


cdef inline void _scatter_units(const lstm_dims* dims, const floating* src, floating* dst,
                                lstm_strides st, Py_ssize_t k0, Py_ssize_t k1) noexcept nogil:
    """_scatter_state for the units k0..k1-1 only."""
    cdef Py_ssize_t m, k, mb = dims.minibatch
    cdef floating* column
    if dst == NULL:
        return
    if _contiguous_steps(st, mb):
        memcpy(dst + k0 * mb, src + k0 * mb, (k1 - k0) * mb * sizeof(floating))
        return
    for k in range(k0, k1):
        if st.minibatch == 1:
            column = dst + k * st.feature
            for m in range(mb):
                column[m] = src[m + k * mb]
        else:
            for m in range(mb):
                dst[m * st.minibatch + k * st.feature] = src[m + k * mb]


cdef inline void _pack_input(const lstm_dims* dims, const floating* x, lstm_strides st,
                             Py_ssize_t s_begin, Py_ssize_t s_end, floating* xp,
                             Py_ssize_t ld) noexcept nogil:
    """x [mb, n_in, T] strided -> rows (s - s_begin)*mb + m of xp [*, n_in] (leading dim ld)."""
    cdef Py_ssize_t s, m, i, i0, i1, mb = dims.minibatch
    cdef const floating* xt
    cdef floating* dst
    cdef Py_ssize_t abs_time = st.time if st.time >= 0 else -st.time
    cdef Py_ssize_t abs_mb = st.minibatch if st.minibatch >= 0 else -st.minibatch
    cdef Py_ssize_t abs_feature = st.feature if st.feature >= 0 else -st.feature
    cdef const floating* series
    if s_end - s_begin == 1 and _contiguous_steps(st, mb) and ld == mb:
        # one step of a Fortran-ordered x into a one-step block: a single contiguous copy
        memcpy(xp, x + _time_of(dims, s_begin) * st.time, mb * dims.n_in * sizeof(floating))
        return
    if s_end - s_begin > 1 and 0 < abs_time < abs_mb and abs_time < abs_feature:
        # time varies fastest (a C-ordered [mb, n_in, T]): read each (example, feature) series
        # along time, instead of one element per cache line per step; 16 features at a time,
        # so that the xp columns being filled stay in cache while the examples go by
        for i0 in range(0, dims.n_in, 16):
            i1 = i0 + 16 if i0 + 16 < dims.n_in else dims.n_in
            for m in range(mb):
                for i in range(i0, i1):
                    series = x + m * st.minibatch + i * st.feature
                    dst = xp + m + i * ld
                    for s in range(s_begin, s_end):
                        dst[(s - s_begin) * mb] = series[_time_of(dims, s) * st.time]
        return
    for s in range(s_begin, s_end):
        xt = x + _time_of(dims, s) * st.time
        for i in range(dims.n_in):
            dst = xp + mb * (s - s_begin) + i * ld
            for m in range(mb):
                dst[m] = xt[m * st.minibatch + i * st.feature]


cdef inline void _pack_mask(const lstm_dims* dims, const floating* mask, lstm_strides st,
                            Py_ssize_t s_begin, Py_ssize_t s_end, floating* mp) noexcept nogil:
    """Mask of steps s_begin..s_end-1 in processing order (1 where there is no mask)."""
    cdef Py_ssize_t s, m, mb = dims.minibatch, t
    for s in range(s_begin, s_end):
        t = _time_of(dims, s)
        for m in range(mb):
            mp[mb * (s - s_begin) + m] = 1 if mask == NULL else mask[m * st.minibatch + t * st.time]


cdef inline bint _any_not_one(const floating* values, Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(count):
        if values[i] != 1:
            return True
    return False


cdef inline void _broadcast_columns(const floating* values, Py_ssize_t stride, Py_ssize_t count,
                                    Py_ssize_t mb, floating* block) noexcept nogil:
    """block[m + j*mb] = values[j*stride] for j < count: a per-unit vector as an [mb, count] block."""
    cdef Py_ssize_t j, m
    cdef floating v
    for j in range(count):
        v = values[j * stride]
        for m in range(mb):
            block[m + j * mb] = v


# ---------------------------------------------------------------------------------------------
# the thread team (pyx/lstmfast_team.h)

# threads a pass may use for its time loop (set_num_threads); 1 until the module sets it below
cdef int _team_threads = 1



cdef inline int _team_size(const lstm_dims* dims, Py_ssize_t steps,
                           const lstm_tuning* tuning) noexcept nogil:
    """How many threads the time loop of a pass of `steps` steps should use."""
    cdef Py_ssize_t threads = tuning.threads if tuning.threads > 0 else _team_threads
    if steps < 2 or threads <= 1:
        return 1
    if threads > LF_TEAM_MAX:
        threads = LF_TEAM_MAX
    # recurrent product of one step: mb x 4h x h multiply-adds, element-wise work aside
    cdef Py_ssize_t work = 4 * dims.minibatch * dims.hidden * dims.hidden
    while threads > 1 and (dims.hidden < tuning.team_min_units * threads
                           or work < tuning.team_min_step_work * threads):
        threads -= 1
    return <int>threads


# room in _unit_groups: at most this many groups in all
cdef Py_ssize_t UNIT_GROUPS_MAX = 128

ctypedef struct _unit_groups:
    # thread t owns groups first[t] .. first[t+1]-1; group g is units units[g] .. units[g+1]-1,
    # and cols[g] packed (padded) columns precede it
    Py_ssize_t first[9]
    Py_ssize_t units[129]
    Py_ssize_t cols[129]
    # per step parity and thread: how many of its groups have been taken, 64 bytes apart and
    # 64 bytes from the fields around them (see _claim_slot)
    Py_ssize_t claims[144]
    Py_ssize_t taken_over          # groups run by a thread other than their owner, in all


cdef inline Py_ssize_t _claim_slot(Py_ssize_t step, int tid) noexcept nogil:
    """Index in _unit_groups.claims of thread tid's counter for a step: one per step parity, 8
    Py_ssize_t (64 bytes) apart and from the array's ends, so that a counter shares its cache
    line with no other counter and no other field."""
    return 8 + ((step % 2) * 8 + tid) * 8


cdef inline void _plan_groups(_unit_groups* groups, Py_ssize_t h, int nthreads,
                              Py_ssize_t mb, const lstm_tuning* tuning) noexcept nogil:
    """Thread t's units (h t / nthreads to h (t + 1) / nthreads, as even as they come) cut into
    up to tuning.unit_groups_per_thread groups (one for a single thread), each a whole number of
    packed panels (6 columns, 8 below LF_SMALL_M rows) but the thread's last, the panels
    spread evenly (no sliver of a group at the end)."""
    cdef Py_ssize_t panel = 8 if mb < LF_SMALL_M else 6
    cdef Py_ssize_t per_thread = tuning.unit_groups_per_thread if nthreads > 1 else 1
    cdef Py_ssize_t first, last, panels, count, i, u, n = 0
    cdef Py_ssize_t share_work = (h + nthreads - 1) // nthreads * 4 * mb * h
    cdef int t
    if tuning.unit_group_min_work > 0 and per_thread > share_work // tuning.unit_group_min_work:
        per_thread = share_work // tuning.unit_group_min_work
    if per_thread < 1:
        per_thread = 1
    if per_thread > UNIT_GROUPS_MAX // nthreads:
        per_thread = UNIT_GROUPS_MAX // nthreads
    groups.units[0] = 0
    groups.cols[0] = 0
    for t in range(nthreads):
        groups.first[t] = n
        first = h * t // nthreads
        last = h * (t + 1) // nthreads
        panels = (last - first + panel - 1) // panel
        count = per_thread if per_thread < panels else panels
        for i in range(1, count + 1):
            u = first + panels * i // count * panel
            u = u if u < last else last
            n += 1
            groups.units[n] = u
            groups.cols[n] = (groups.cols[n - 1]
                              + (u - groups.units[n - 1] + panel - 1) // panel * panel)
    groups.first[nthreads] = n
    if tuning.groups_all_to_first:
        for t in range(1, nthreads):
            groups.first[t] = n


cdef inline void _reset_claims(_unit_groups* groups, Py_ssize_t step, int nthreads) noexcept nogil:
    """Every thread's counter for `step` (before the threads start on it)."""
    cdef int t
    for t in range(nthreads):
        groups.claims[_claim_slot(step, t)] = 0


cdef inline int _start_step(_unit_groups* groups, Py_ssize_t step, int tid) noexcept nogil:
    """Thread tid's start of a step: it resets its counter of the next step (the same parity as
    the step before this one, which every thread has left: the barrier at its end), and takes
    its own groups first (the owner _take_group starts from, returned)."""
    lf_claims_reset(&groups.claims[_claim_slot(step + 1, tid)])
    return tid


cdef inline bint _take_group(_unit_groups* groups, Py_ssize_t step, int tid, int nthreads,
                             int* owner, Py_ssize_t* taken_group, Py_ssize_t* u0,
                             Py_ssize_t* u1) noexcept nogil:
    """The next group of `step` for thread tid (*taken_group, its units *u0..*u1-1): its own, in
    order, then those its partners have not taken (*owner: whose run it takes from); False
    when none is left."""
    cdef Py_ssize_t taken, group
    while True:
        taken = lf_claim_next(&groups.claims[_claim_slot(step, owner[0])])
        group = groups.first[owner[0]] + taken
        if group < groups.first[owner[0] + 1]:
            if owner[0] != tid:
                lf_count_add(&groups.taken_over, 1)
            taken_group[0] = group
            u0[0] = groups.units[group]
            u1[0] = groups.units[group + 1]
            return True
        owner[0] = owner[0] + 1 if owner[0] + 1 < nthreads else 0
        if owner[0] == tid:
            return False


cdef inline Py_ssize_t _group_slice(const _unit_groups* groups, Py_ssize_t K, Py_ssize_t group,
                                    int blocks, int block) noexcept nogil:
    """Offset of the packed slice (group, block) in weights packed by groups, `blocks` blocks
    (the forward's 4 gate blocks of RW or W, K = h or n_in rows; the backward's one of RW^T,
    K = 4h): per group, per block, the group's columns padded to panels."""
    return K * (blocks * groups.cols[group]
                + block * (groups.cols[group + 1] - groups.cols[group]))


cdef inline bint _team_stop(const int* cancel, int* stop_slots, Py_ssize_t s, lf_barrier* barrier,
                            int tid, int nthreads) noexcept nogil:
    """End of a step: wait for every thread, and agree on whether to stop (cancel set).

    Thread 0 reads the cancel flag into a slot of the step's parity before the barrier and all
    read it after; the slot is written again two steps later, after the next barrier, when every
    thread has read it."""
    if nthreads == 1:
        return cancel != NULL and lf_load_flag(cancel) != 0
    if tid == 0:
        stop_slots[s % 2] = 1 if (cancel != NULL and lf_load_flag(cancel) != 0) else 0
    lf_barrier_wait(barrier, nthreads)
    return stop_slots[s % 2] != 0


# ---------------------------------------------------------------------------------------------
# forward

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
    const void* input_weights
    Py_ssize_t ld_input_weights
    Py_ssize_t ld_projection
    Py_ssize_t ld_hs
    void* projection
    void* h_ring
    bint h_in_output               # each step's h written straight into its output block
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
    void* output
    lstm_strides output_strides
    const int* cancel
    int stop_slots[2]
    int cancelled
    lf_barrier barrier
    _unit_groups groups            # the team's groups of units (_plan_groups)


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
    if job.z != NULL:
        _copy_block(h_cur + off, mb, <floating*>job.hs + mb * (s + 1) + u0 * job.ld_hs,
                    job.ld_hs, mb, width)
    if job.output != NULL and not job.h_in_output:
        _scatter_units(dims, h_cur, <floating*>job.output + t * job.output_strides.time,
                       job.output_strides, u0, u1)


cdef inline floating* _h_of_step(_forward_job* job, floating* h_ring, Py_ssize_t s) noexcept nogil:
    """Where processing step s writes its h (s = -1: where h0 is): its output block
    (job.h_in_output), or the ring's block of its parity."""
    if not job.h_in_output:
        return h_ring + job.dims.minibatch * job.dims.hidden * ((s + 1) % 2)
    if s < 0:
        return h_ring
    return <floating*>job.output + _time_of(job.dims, s) * job.output_strides.time


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
    # [mb*S, 4h] = 1 b^T + xp W here, one GEMM per thread on its share of the rows (splitting by
    # columns would make every thread re-pack all of xp); then every thread waits for all rows.
    cdef Py_ssize_t rows = mb * (job.s1 - job.s0)
    cdef Py_ssize_t r0 = rows * tid // nthreads, r1 = rows * (tid + 1) // nthreads
    if packed_w == NULL:
        if r1 > r0:
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
        if nthreads > 1:
            lf_barrier_wait(&job.barrier, nthreads)
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
            x_step = <const floating*>job.packed_input + mb * (s - job.s0)
        # without W packed, the product adds the step's rows of the chunk's projection (read
        # in place; a copy of them into z first cost 11% of a (100, 64, 256, 256) float64 pass)
        if nthreads == 1:
            if packed_w != NULL:
                _input_product(mb, G, n_in, x_step, ld_x, packed_w, bias_block, z_step, mb,
                               x_pack, False)
                projection_block = z_step
                ld_addend = mb
            else:
                projection_block = projection + mb * (s - job.s0)
                ld_addend = ld_projection
            _recurrent_product(mb, G, h, h_prev, mb, packed, recurrent_weights, ld_rw, c'N',
                               projection_block, ld_addend, z_step, mb, a_pack, False)
            _forward_step_units(dims, z_step, a_step, mca_step, peep_block, c_prev, c_cur, h_cur,
                                mask_col, job, s, t, 0, h)
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
        if _team_stop(job.cancel, job.stop_slots, s, &job.barrier, tid, nthreads):
            if tid == 0:
                job.cancelled = 1
            return


cdef void _forward_steps_f32(void* job, int tid, int nthreads) noexcept nogil:
    _forward_steps(<float*>NULL, <_forward_job*>job, tid, nthreads)


cdef void _forward_steps_f64(void* job, int tid, int nthreads) noexcept nogil:
    _forward_steps(<double*>NULL, <_forward_job*>job, tid, nthreads)

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
    return lstm_forward_ex(dims, x, x_strides, input_weights, ld_input_weights, recurrent_weights,
                           ld_recurrent_weights, bias, bias_stride, h0, h0_strides, c0, c0_strides,
                           mask, mask_strides, output, output_strides, last_h, last_h_strides,
                           last_c, last_c_strides, cache, workspace, NULL, NULL, NULL)


cdef int lstm_forward_ex(const lstm_dims* dims,
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
                       const int* cancel) noexcept nogil:
    """lstm_forward under a tuning record (NULL: the defaults), filling `report` (may be NULL);
    `cancel` (may be NULL) is polled once per time step: nonzero stops the pass with
    LSTM_ERR_CANCELLED (used by the Python entry to honour Ctrl-C)."""
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
    cdef Py_ssize_t G = 4 * h, n = h * mb
    cdef int act = dims.activation, gate = dims.gate_activation
    cdef bint for_backprop = cache != NULL
    cdef lstm_tuning defaults
    tuning = _tuning_or_defaults(tuning, &defaults)
    if tuning.projection_chunk_elements < 1:
        return LSTM_ERR_ARGUMENT
    cdef _forward_layout layout
    cdef Py_ssize_t ws_size = _plan_forward_workspace(dims, tuning, &layout)
    cdef floating* owned = NULL
    if ws_size < 0:
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
    cdef int nthreads = 1, g
    cdef Py_ssize_t u0, u1, group
    cdef _forward_job job
    if T > 1 and _packed_gemm_on(tuning, mb):
        packed_rw = workspace + layout.packed_rw
        if layout.a_pack >= 0:
            a_pack = workspace + layout.a_pack
        if layout.x_pack >= 0:
            x_pack = workspace + layout.x_pack
        nthreads = lf_team_acquire(_team_size(dims, T, tuning))
        if mb * n_in * <Py_ssize_t>sizeof(floating) <= (
                tuning.input_product_max_bytes if nthreads == 1
                else tuning.input_product_team_max_bytes):
            packed_w = workspace + layout.packed_w
        if nthreads == 1:
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
                    _pack_weights(recurrent_weights + (g * h + u0) * ld_recurrent_weights, 1,
                                  ld_recurrent_weights, h, u1 - u0,
                                  packed_rw + _group_slice(&job.groups, h, group, 4, g), mb)
                    if packed_w != NULL:
                        _pack_weights(input_weights + (g * h + u0) * ld_input_weights, 1,
                                      ld_input_weights, n_in, u1 - u0,
                                      packed_w + _group_slice(&job.groups, n_in, group, 4, g), mb)
    # the bias as a [4h] vector, the peepholes as [mb, 3h] blocks; with one example the caller's
    # contiguous vectors are used in place (a streaming step then copies nothing)
    cdef Py_ssize_t j
    if mb == 1 and bias_stride == 1:
        bias_block = <floating*>bias
    else:
        # a contiguous [4h] vector: the per-step input product adds it, or the chunk's
        # projection starts from it
        for j in range(G):
            bias_block[j] = bias[j * bias_stride]
    if dims.peepholes and mb == 1 and ld_recurrent_weights == h:
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
    cdef Py_ssize_t ld_x = mb * (T + 1), ld_hs = ld_x
    cdef floating* xp = NULL
    cdef floating* hs = NULL
    cdef floating* ones = NULL
    cdef floating* cs = NULL
    cdef floating* z = NULL
    cdef floating* a = NULL
    cdef floating* mca = NULL
    cdef floating* mp = NULL
    if for_backprop:
        xp = cache
        hs = xp + n_in * ld_x
        ones = hs + h * ld_x
        cs = ones + ld_x
        z = cs + n * (T + 1)
        a = z + 4 * n * T
        mca = a + 4 * n * T
        mp = mca + n * T

    _gather_state(dims, h0, h0_strides, h_ring)
    cdef Py_ssize_t row
    if for_backprop:
        _gather_state(dims, c0, c0_strides, cs)
        _copy_block(h_ring, mb, hs, ld_hs, mb, h)
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
                       and (output_strides.time >= n or output_strides.time <= -n))
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
    job.masked = mask != NULL
    job.bias_block = bias_block
    job.peep_block = peep_block
    job.recurrent_weights = recurrent_weights
    job.ld_recurrent_weights = ld_recurrent_weights
    job.packed = packed_rw
    job.a_pack = a_pack
    job.x_pack = x_pack
    job.packed_input_weights = packed_w
    # inference with the per-step input product reads each step's x where it is when that is
    # one contiguous [mb, n_in] block (a Fortran-ordered x): no copy of x into the chunk first
    # (that copy was 1.7% of a (100, 64, 256, 256) float32 forward)
    if not for_backprop and packed_w != NULL and _contiguous_steps(x_strides, mb):
        job.x_in_place = x
        job.x_time_stride = x_strides.time
    else:
        job.x_in_place = NULL
        job.x_time_stride = 0
    job.output = output
    job.output_strides = output_strides
    job.cancel = cancel
    job.stop_slots[0] = 0
    job.stop_slots[1] = 0
    job.cancelled = 0
    lf_barrier_init(&job.barrier)
    job.groups.taken_over = 0

    cdef Py_ssize_t s0, s1
    s0 = 0
    while s0 < T:
        s1 = s0 + chunk if s0 + chunk < T else T
        # the chunk's input and mask in processing order; the job projects and runs the steps
        if for_backprop:
            _pack_input(dims, x, x_strides, s0, s1, xp + mb * s0, ld_x)
            _pack_mask(dims, mask, mask_strides, s0, s1, mp + mb * s0)
            job.packed_input = xp + mb * s0
            job.ld_packed_input = ld_x
        else:
            _pack_mask(dims, mask, mask_strides, s0, s1, mask_chunk)
            if job.x_in_place != NULL:
                job.packed_input = NULL
                job.ld_packed_input = mb
            else:
                _pack_input(dims, x, x_strides, s0, s1, x_chunk, ld_projection)
                job.packed_input = x_chunk
                job.ld_packed_input = ld_projection
        job.s0 = s0
        job.s1 = s1
        # the first step's counters (each thread resets those of the step after its current one)
        _reset_claims(&job.groups, s0, nthreads)
        if floating is float:
            lf_team_execute(_forward_steps_f32, &job, nthreads)
        else:
            lf_team_execute(_forward_steps_f64, &job, nthreads)
        if job.cancelled:
            break
        s0 = s1
    lf_team_release(nthreads)
    if report != NULL:
        report.threads = nthreads
        report.h_in_output = job.h_in_output
        report.x_in_place = job.x_in_place != NULL
        report.epsilon_in_place = 0
        report.gradient_split = 0
        report.groups_taken_over = job.groups.taken_over
    if job.cancelled:
        free(owned)
        return LSTM_ERR_CANCELLED

    _scatter_state(dims, _h_of_step(&job, h_ring, T - 1), last_h, last_h_strides)
    _scatter_state(dims, cs + n * T if for_backprop else c_ring + n * (T % 2), last_c,
                   last_c_strides)
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

# What the threads of the backward time loop share (void* pointers: one struct for both dtypes).
ctypedef struct _backward_job:
    const lstm_dims* dims
    Py_ssize_t end_index
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
    void* a_pack                   # LF_TEAM_MAX regions of _a_pack_len(mb, K) (K: h forward, 4h backward)
    const void* last_c_grad        # dL/d(last c) [mb, h], masked, or NULL: none
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
    const int* cancel
    int stop_slots[2]
    int cancelled
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
    cdef Py_ssize_t F = job.dims.n_in + job.dims.hidden + 1
    gemm(c'T', c'N', F, width, k1 - k0, <floating>1,
         <const floating*>job.xh + mb * job.end_index + k0, job.ld_xh,
         <const floating*>job.delta + k0 + c0 * ld_delta, ld_delta, <floating>0, stack, F)


cdef void _store_gradients(floating* tag, _backward_job* job, Py_ssize_t c0,
                           Py_ssize_t width) noexcept nogil:
    """The dW and dRW rows of grad_stack's gate columns c0..c0+width-1 copied to the outputs; the
    bias row stays in grad_stack (the caller writes it to the strided bias gradient)."""
    cdef Py_ssize_t n_in = job.dims.n_in, h = job.dims.hidden, F = n_in + h + 1
    cdef floating* stack = <floating*>job.grad_stack + c0 * F
    _copy_block(stack, F, <floating*>job.grad_input_weights + c0 * job.ld_grad_input_weights,
                job.ld_grad_input_weights, n_in, width)
    _copy_block(stack + n_in, F,
                <floating*>job.grad_recurrent_weights + c0 * job.ld_grad_recurrent_weights,
                job.ld_grad_recurrent_weights, h, width)


cdef void _backward_steps(floating* tag, _backward_job* job, int tid, int nthreads) noexcept nogil:
    """The backward time loop for thread tid of nthreads: of each step, the groups of units the
    thread takes (see lstm_tuning.unit_groups_per_thread), their columns of the step's dL/dh product and
    their deltas (one group of all units when nthreads is 1); then its share of the gradient
    GEMMs over all steps."""
    cdef const lstm_dims* dims = job.dims
    cdef Py_ssize_t mb = dims.minibatch, h = dims.hidden, G = 4 * h, n = h * mb
    cdef Py_ssize_t T = dims.time_steps, end_index = job.end_index, ld_delta = job.ld_delta
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
    # this thread's room for the packed deltas of the next processed step
    cdef floating* a_pack = NULL
    if job.a_pack != NULL:
        a_pack = <floating*>job.a_pack + tid * _a_pack_len(mb, G)
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
    for s in range(T - 1, end_index - 1, -1):
        t = _time_of(dims, s)
        delta_step = delta_ring + 4 * n * (s % 2)
        delta_next = NULL if s == T - 1 else delta_ring + 4 * n * ((s + 1) % 2)
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
            if job.eps_in_place:
                eps_units = epsilon + t * job.epsilon_strides.time + off
                if delta_next == NULL:
                    cells_nabla = eps_units
            else:
                _gather_units(dims, epsilon + t * job.epsilon_strides.time, job.epsilon_strides,
                              nabla_out, u0, u1)
                eps_units = nabla_out + off
            if delta_next != NULL:
                _recurrent_product(mb, width, G, delta_next, mb,
                                   packed + _group_slice(&job.groups, G, unit_group, 1, 0)
                                   if packed != NULL else NULL,
                                   rw_t + u0 * G, G, c'N', eps_units, mb, step_nabla,
                                   mb, a_pack, deltas_packed)
                deltas_packed = True
            a_next = NULL
            delta_next_units = NULL
            cell_error_next_units = NULL
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
                            <floating*>job.sum_g + u0, scratch + off,
                            (<const floating*>job.last_c_grad + off
                             if (job.last_c_grad != NULL and s == T - 1) else <floating*>NULL))
            # step-stacked copy of the deltas, for the gradient GEMMs over all steps
            for g in range(4):
                _copy_block(delta_step + g * n + off, mb,
                            delta + mb * (s - end_index) + (g * h + u0) * ld_delta, ld_delta,
                            mb, width)
        swap = cell_error_next
        cell_error_next = cell_error
        cell_error = swap
        if _team_stop(job.cancel, job.stop_slots, s, &job.barrier, tid, nthreads):
            if tid == 0:
                job.cancelled = 1
            return
    # every thread is past the last step's barrier: all deltas are written. The gradient GEMMs
    # over all steps. dL/dx = D W^T (the seed's epsilonNext): each thread its share of the rows
    # of D, or of the columns of W^T when W has more (each thread's BLAS packs all of the other
    # operand, so the split keeps the smaller one whole)
    cdef Py_ssize_t r0 = ld_delta * tid // nthreads, r1 = ld_delta * (tid + 1) // nthreads
    cdef Py_ssize_t i0 = dims.n_in * tid // nthreads, i1 = dims.n_in * (tid + 1) // nthreads
    if job.grad_xp != NULL:
        if ld_delta >= dims.n_in:
            if r1 > r0:
                gemm(c'N', c'T', r1 - r0, dims.n_in, G, <floating>1,
                     <const floating*>job.delta + r0, ld_delta,
                     <const floating*>job.input_weights, job.ld_input_weights, <floating>0,
                     <floating*>job.grad_xp + r0, ld_delta)
        elif i1 > i0:
            gemm(c'N', c'T', ld_delta, i1 - i0, G, <floating>1, <const floating*>job.delta,
                 ld_delta, <const floating*>job.input_weights + i0, job.ld_input_weights,
                 <floating>0, <floating*>job.grad_xp + i0 * ld_delta, ld_delta)
    # the parameter gradients: with grad_partial (see _use_row_groups) the threads form two
    # groups, each the product over half of the stacked rows (split among its members by
    # columns), into grad_stack and grad_partial, added after a barrier; otherwise all threads
    # split the product over all rows by columns. Split by columns only, every thread's BLAS
    # packed all of [xp | hs | 1]: the second thread's GEMMs took 20% more CPU time at
    # (100, 64, 256, 256) float32.
    cdef Py_ssize_t F = dims.n_in + h + 1, i
    cdef int group = 0, members = nthreads, member = tid
    cdef floating* target = <floating*>job.grad_stack
    cdef Py_ssize_t k0 = 0, k1 = ld_delta
    if job.grad_partial != NULL:
        group = 1 if tid >= nthreads // 2 else 0
        members = nthreads // 2 if group == 0 else nthreads - nthreads // 2
        member = tid if group == 0 else tid - nthreads // 2
        k0 = ld_delta * group // 2
        k1 = ld_delta * (group + 1) // 2
        if group == 1:
            target = <floating*>job.grad_partial
    cdef Py_ssize_t c0 = G * member // members, c1 = G * (member + 1) // members
    if c1 > c0:
        _stacked_gradient_product(tag, job, k0, k1, c0, c1 - c0, target + c0 * F)
    if job.grad_partial != NULL:
        lf_barrier_wait(&job.barrier, nthreads)
        # every thread its share of the columns of the sum (the same order in every run)
        c0 = G * tid // nthreads
        c1 = G * (tid + 1) // nthreads
        target = <floating*>job.grad_stack + c0 * F
        for i in range((c1 - c0) * F):
            target[i] = target[i] + (<const floating*>job.grad_partial)[c0 * F + i]
    if c1 > c0:
        _store_gradients(tag, job, c0, c1 - c0)


cdef void _backward_steps_f32(void* job, int tid, int nthreads) noexcept nogil:
    _backward_steps(<float*>NULL, <_backward_job*>job, tid, nthreads)


cdef void _backward_steps_f64(void* job, int tid, int nthreads) noexcept nogil:
    _backward_steps(<double*>NULL, <_backward_job*>job, tid, nthreads)


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
    return lstm_backward_ex(dims, input_weights, ld_input_weights, recurrent_weights,
                            ld_recurrent_weights, cache, epsilon, epsilon_strides, tbptt_length,
                            grad_input_weights, ld_grad_input_weights, grad_recurrent_weights,
                            ld_grad_recurrent_weights, grad_bias, grad_bias_stride, grad_input,
                            grad_input_strides, grad_h0, grad_h0_strides, grad_c0,
                            grad_c0_strides, workspace, NULL, NULL, NULL, NULL, grad_c0_strides)


cdef int lstm_backward_ex(const lstm_dims* dims,
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
                        const floating* grad_last_c, lstm_strides grad_last_c_strides) noexcept nogil:
    """lstm_backward; `tuning`, `report` and `cancel` as in lstm_forward_ex. grad_last_c [mb, h] (may be NULL): dL/d(last
    cell state), which the seed has no input for (beyond the seed: for encoder-decoder use)."""
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
    cdef Py_ssize_t G = 4 * h, n = h * mb
    cdef int act = dims.activation, gate = dims.gate_activation
    cdef lstm_tuning defaults
    tuning = _tuning_or_defaults(tuning, &defaults)
    cdef _backward_layout layout
    cdef Py_ssize_t ws_size = _plan_backward_workspace(dims, &layout)
    cdef floating* owned = NULL
    if ws_size < 0:
        return LSTM_ERR_TOO_LARGE
    if workspace == NULL:
        owned = <floating*>malloc(ws_size * sizeof(floating))
        if owned == NULL:
            return LSTM_ERR_NO_MEMORY
        workspace = owned

    # the cache (see the module docstring)
    cdef Py_ssize_t ld_xh = mb * (T + 1)
    cdef const floating* xh = cache                        # [xp | hs | ones]
    cdef const floating* cs = xh + (n_in + h + 1) * ld_xh
    cdef const floating* z = cs + n * (T + 1)
    cdef const floating* a = z + 4 * n * T
    cdef const floating* mca = a + 4 * n * T
    cdef const floating* mp = mca + n * T

    # the seed's endIdx: steps end_index..T-1 (processing order) are back-propagated
    cdef Py_ssize_t end_index = 0
    if tbptt_length > 0 and tbptt_length < T:
        end_index = T - tbptt_length
    cdef Py_ssize_t steps = T - end_index
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
    cdef int nthreads = 1
    cdef Py_ssize_t u0, u1, group
    cdef _backward_job job
    if steps > 1 and _packed_gemm_on(tuning, mb):
        packed_rw_t = workspace + layout.packed_rw_t
        nthreads = lf_team_acquire(_team_size(dims, steps, tuning))
        # each group's units' columns of RW^T packed together (one group for one thread)
        _plan_groups(&job.groups, h, nthreads, mb, tuning)
        for group in range(job.groups.first[nthreads]):
            u0 = job.groups.units[group]
            u1 = job.groups.units[group + 1]
            _pack_weights(recurrent_weights + u0, ld_recurrent_weights, 1, G, u1 - u0,
                          packed_rw_t + _group_slice(&job.groups, G, group, 1, 0), mb)
    else:
        _plan_groups(&job.groups, h, 1, mb, tuning)
        # RW^T once, so that the per-step product is an N,N GEMM (faster in OpenBLAS for small
        # minibatches than transposing RW inside every call)
        for k in range(h):
            for j in range(G):
                rw_t[j + k * G] = recurrent_weights[k + j * ld_recurrent_weights]
    cdef const floating* peep_f = NULL
    cdef const floating* peep_g = NULL
    if dims.peepholes:
        peep_f = recurrent_weights + G * ld_recurrent_weights
        peep_g = recurrent_weights + (G + 2) * ld_recurrent_weights
        _broadcast_columns(peep_f, 1, h, mb, peep_block)
        _broadcast_columns(recurrent_weights + (G + 1) * ld_recurrent_weights, 1, h, mb,
                           peep_block + n)
        _broadcast_columns(peep_g, 1, h, mb, peep_block + 2 * n)
    else:
        peep_block = NULL
    for k in range(3 * h):
        sum_f[k] = 0

    cdef floating* last_c_grad = NULL
    if grad_last_c != NULL:
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
    job.ld_delta = ld_delta
    job.epsilon = epsilon
    job.epsilon_strides = epsilon_strides
    job.eps_in_place = _contiguous_steps(epsilon_strides, mb)
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
    job.xh = xh
    job.ld_xh = ld_xh
    job.grad_stack = grad_stack
    # the second row group's sums of the gradient GEMMs (see _backward_steps)
    job.grad_partial = NULL
    if nthreads > 1 and _use_row_groups(dims, ld_delta, tuning):
        job.grad_partial = grad_partial
    job.input_weights = input_weights
    job.ld_input_weights = ld_input_weights
    job.grad_input_weights = grad_input_weights
    job.ld_grad_input_weights = ld_grad_input_weights
    job.grad_recurrent_weights = grad_recurrent_weights
    job.ld_grad_recurrent_weights = ld_grad_recurrent_weights
    job.grad_xp = grad_xp if grad_input != NULL else NULL
    job.cancel = cancel
    job.stop_slots[0] = 0
    job.stop_slots[1] = 0
    job.cancelled = 0
    lf_barrier_init(&job.barrier)
    _reset_claims(&job.groups, T - 1, nthreads)
    job.groups.taken_over = 0
    if floating is float:
        lf_team_execute(_backward_steps_f32, &job, nthreads)
    else:
        lf_team_execute(_backward_steps_f64, &job, nthreads)
    lf_team_release(nthreads)
    if report != NULL:
        report.threads = nthreads
        report.h_in_output = 0
        report.x_in_place = 0
        report.epsilon_in_place = job.eps_in_place
        report.gradient_split = 0 if nthreads == 1 else (2 if job.grad_partial != NULL else 1)
        report.groups_taken_over = job.groups.taken_over
    if job.cancelled:
        free(owned)
        return LSTM_ERR_CANCELLED
    # every step swapped the two cell-error blocks once
    if steps % 2 == 1:
        cell_error_next = cell_error
    # cell_error_next now holds the cell error of step end_index

    # (the job computed the parameter gradients and D W^T; see _backward_steps)
    if dims.peepholes:
        for k in range(h):
            grad_recurrent_weights[k + G * ld_grad_recurrent_weights] = sum_f[k]
            grad_recurrent_weights[k + (G + 1) * ld_grad_recurrent_weights] = sum_o[k]
            grad_recurrent_weights[k + (G + 2) * ld_grad_recurrent_weights] = sum_g[k]
    for j in range(G):
        grad_bias[j * grad_bias_stride] = grad_stack[n_in + h + j * (n_in + h + 1)]

    # dL/dx (the seed's epsilonNext): D W^T, masked at masked steps, zero before end_index
    cdef floating* gx_t
    cdef const floating* gcol
    if grad_input != NULL:
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

    # gradients with respect to the initial state (beyond the seed); delta_ring's slot 0 holds
    # the deltas of step 0 when end_index == 0
    cdef floating value
    if end_index == 0:
        if grad_h0 != NULL:
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

# the largest size, stride or leading dimension the BLAS of this SciPy build takes
BLAS_INT_MAX = <long long>_BLAS_INT_MAX

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
                           Py_ssize_t time_steps, bint for_backprop, tuning=None):
    """Elements of the forward work space (-1 when too large); `tuning` as in `forward`."""
    cdef lstm_dims d = _dims(minibatch, n_in, hidden, time_steps, 0, 1, 0, ACT_SIGMOID)
    cdef lstm_tuning t = _tuning_record(tuning)
    return lstm_forward_workspace_size_ex(&d, for_backprop, &t)


def backward_workspace_size(Py_ssize_t minibatch, Py_ssize_t n_in, Py_ssize_t hidden,
                            Py_ssize_t time_steps, tuning=None):
    """Elements of the backward work space (-1 when too large); `tuning` as in `forward`."""
    cdef lstm_dims d = _dims(minibatch, n_in, hidden, time_steps, 0, 1, 0, ACT_SIGMOID)
    cdef lstm_tuning t = _tuning_record(tuning)
    return lstm_backward_workspace_size_ex(&d, &t)


def default_tuning():
    """The kernels' tuning record (lstm_tuning) as a dict of its fields and default values."""
    return <dict>lstm_default_tuning()


cdef lstm_tuning _tuning_record(object overrides) except *:
    """The default tuning record with `overrides` (None, or a mapping of some lstm_tuning field
    names to values) applied; ValueError names an unknown field or a value out of range."""
    fields = default_tuning()
    if overrides is not None:
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            raise ValueError(f"tuning: unknown fields {unknown}; known: {sorted(fields)}")
        for name, value in overrides.items():
            fields[name] = operator.index(value)
    low = {"projection_chunk_elements": 1, "unit_groups_per_thread": 1}
    high = {"unit_groups_per_thread": UNIT_GROUPS_MAX, "threads": LF_TEAM_MAX,
            "groups_all_to_first": 1, "gradient_split_rows": 1, "packed_gemm": 1}
    for name, value in fields.items():
        if value < low.get(name, 0) or value > high.get(name, value):
            raise ValueError(f"tuning: {name} must be in {low.get(name, 0)}.."
                             f"{high.get(name, 'any')}, got {value}")
    return fields


cdef inline void _fill_report(object report, lstm_report* record):
    """Copy a pass's report into the caller's dict (None: not wanted)."""
    if report is not None:
        report.update(<dict>record[0])


def check_dims(Py_ssize_t minibatch, Py_ssize_t n_in, Py_ssize_t hidden, Py_ssize_t time_steps,
               bint peepholes, int activation, int gate_activation):
    """The kernels' own verdict on a problem size: 0 (LSTM_OK) or a negative LSTM_ERR_* code."""
    cdef lstm_dims d = _dims(minibatch, n_in, hidden, time_steps, peepholes, 1, activation,
                             gate_activation)
    return lstm_check_dims(&d)


cdef int _forward_typed(floating* tag, lstm_dims* d, cnp.ndarray x, cnp.ndarray W, cnp.ndarray RW,
                        cnp.ndarray b, cnp.ndarray h0, cnp.ndarray c0, cnp.ndarray mask,
                        cnp.ndarray out, cnp.ndarray last_h, cnp.ndarray last_c,
                        cnp.ndarray cache, cnp.ndarray workspace, cnp.ndarray cancel,
                        const lstm_tuning* tuning, lstm_report* report):
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
        status = lstm_forward_ex(d, px, xs, pw, ld_w, prw, ld_rw, pb, b_stride, ph0, hs, pc0,
                                 cs, pm, ms, pout, os, plh, lhs, plc, lcs, pcache, pws, tuning,
                                 report, pcancel)
    return status


def forward(x, W, RW, b, h0, c0, mask, out, last_h, last_c, cache, workspace,
            bint peepholes, bint forwards, int activation, int gate_activation, cancel=None,
            tuning=None, report=None):
    """Run lstm_forward on validated, aligned arrays of one dtype (float32 or float64).

    x [mb, n_in, T], W [n_in, 4h] and RW [h, 4h(+3)] with unit row stride, b [4h]; h0, c0, mask,
    last_h, last_c, cache may be None; out [mb, h, T] is written. cancel: None or a one-element
    int32 array polled each step (nonzero: stop, raising KeyboardInterrupt). tuning: None (the
    defaults) or a dict of lstm_tuning fields to change (the workspace sized with the same);
    report: None or a dict that receives the pass's lstm_report fields. Raises RuntimeError on
    any other kernel error code (the Python layer validates first, so that signals a bug).
    """
    cdef lstm_dims d = _dims(x.shape[0], x.shape[1], RW.shape[0], x.shape[2], peepholes, forwards,
                             activation, gate_activation)
    cdef lstm_tuning t = _tuning_record(tuning)
    cdef lstm_report r
    cdef int status
    if x.dtype == np.float32:
        status = _forward_typed[float](<float*>NULL, &d, x, W, RW, b, h0, c0, mask, out, last_h,
                                       last_c, cache, workspace, cancel, &t, &r)
    else:
        status = _forward_typed[double](<double*>NULL, &d, x, W, RW, b, h0, c0, mask, out, last_h,
                                        last_c, cache, workspace, cancel, &t, &r)
    if status == LSTM_OK or status == LSTM_ERR_CANCELLED:
        _fill_report(report, &r)
    if status == LSTM_ERR_CANCELLED:
        raise KeyboardInterrupt("lstm_forward interrupted")
    if status != LSTM_OK:
        raise RuntimeError(f"lstm_forward failed: {ERROR_MESSAGES.get(status, status)}")


cdef int _backward_typed(floating* tag, lstm_dims* d, cnp.ndarray W, cnp.ndarray RW,
                         cnp.ndarray cache, cnp.ndarray eps, Py_ssize_t tbptt,
                         cnp.ndarray gW, cnp.ndarray gRW, cnp.ndarray gb, cnp.ndarray gx,
                         cnp.ndarray gh0, cnp.ndarray gc0, cnp.ndarray workspace,
                         cnp.ndarray cancel, cnp.ndarray glc, const lstm_tuning* tuning,
                         lstm_report* report):
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
    cdef const floating* pglc = <const floating*>_data(glc)
    cdef lstm_strides glcs = _strides(glc, 2)
    cdef int status
    with nogil:
        status = lstm_backward_ex(d, pw, ld_w, prw, ld_rw, pcache, peps, es, tbptt, pgw, ld_gw,
                                  pgrw, ld_grw, pgb, gb_stride, pgx, gxs, pgh, ghs, pgc, gcs, pws,
                                  tuning, report, pcancel, pglc, glcs)
    return status


def backward(W, RW, cache, eps, Py_ssize_t tbptt_length, gW, gRW, gb, gx, gh0, gc0, workspace,
             Py_ssize_t minibatch, Py_ssize_t time_steps,
             bint peepholes, bint forwards, int activation, int gate_activation, cancel=None,
             grad_last_c=None, tuning=None, report=None):
    """Run lstm_backward on validated arrays (see `forward`, also for tuning and report);
    gradients are overwritten. grad_last_c: None or dL/d(last cell state) [mb, h]."""
    cdef lstm_dims d = _dims(minibatch, W.shape[0], RW.shape[0], time_steps, peepholes, forwards,
                             activation, gate_activation)
    cdef lstm_tuning t = _tuning_record(tuning)
    cdef lstm_report r
    cdef int status
    if W.dtype == np.float32:
        status = _backward_typed[float](<float*>NULL, &d, W, RW, cache, eps, tbptt_length, gW,
                                        gRW, gb, gx, gh0, gc0, workspace, cancel, grad_last_c,
                                        &t, &r)
    else:
        status = _backward_typed[double](<double*>NULL, &d, W, RW, cache, eps, tbptt_length, gW,
                                         gRW, gb, gx, gh0, gc0, workspace, cancel, grad_last_c,
                                         &t, &r)
    if status == LSTM_OK or status == LSTM_ERR_CANCELLED:
        _fill_report(report, &r)
    if status == LSTM_ERR_CANCELLED:
        raise KeyboardInterrupt("lstm_backward interrupted")
    if status != LSTM_OK:
        raise RuntimeError(f"lstm_backward failed: {ERROR_MESSAGES.get(status, status)}")


def set_num_threads(int threads):
    """Threads each pass's time loop may use (1 to LF_TEAM_MAX = 8); returns the previous value.

    Each time step's recurrent product and element-wise code are split across the threads by
    hidden units. A pass uses fewer threads when its steps are too small to gain (under 24 units
    or about 65k multiply-adds per thread and step), when the minibatch is above 256 (OpenBLAS,
    threaded by its own settings, then does the per-step products), and runs alone when another
    pass holds the team. The GEMMs outside the time loop use OpenBLAS's threads (threadpoolctl).
    """
    global _team_threads
    if threads < 1 or threads > LF_TEAM_MAX:
        raise ValueError(f"threads: expected 1 to {LF_TEAM_MAX}, got {threads}")
    previous = _team_threads
    _team_threads = threads
    return previous


def _plan_unit_groups(Py_ssize_t h, int nthreads, Py_ssize_t mb, tuning=None):
    """The groups of units a team of nthreads would use at hidden size h and minibatch mb under
    `tuning` (as in `forward`), as (first, units, cols): thread t owns groups
    first[t]..first[t+1]-1, group g is units units[g]..units[g+1]-1 after cols[g] packed
    columns. For tests."""
    cdef _unit_groups groups
    cdef lstm_tuning t = _tuning_record(tuning)
    if h < 1 or mb < 1 or nthreads < 1 or nthreads > LF_TEAM_MAX:
        raise ValueError(f"need h >= 1, mb >= 1 and 1 <= nthreads <= {LF_TEAM_MAX}")
    _plan_groups(&groups, h, nthreads, mb, &t)
    n = groups.first[nthreads]
    return ([groups.first[i] for i in range(nthreads + 1)],
            [groups.units[g] for g in range(n + 1)], [groups.cols[g] for g in range(n + 1)])


def _team_publication_under_forced_schedule():
    """Run the forced schedule of lf_schedule_run (a team of 3 threads; worker 2 held between
    seeing job A and reading it, until job B has been published) and return how often each of
    threads 0-2 ran job A and job B, as two lists. For tests: a worker that took job B's
    fields for job A would run B twice."""
    cdef int status
    with nogil:
        status = lf_schedule_run()
    if status == -1:
        raise RuntimeError("the thread team could not provide 3 threads")
    if status == -2:
        raise RuntimeError("worker 2 never reached the forced pause or never went idle")
    return ([lf_schedule_runs[0][t] for t in range(3)], [lf_schedule_runs[1][t] for t in range(3)])


def get_num_threads():
    """The thread count set by set_num_threads (at import: LSTMFAST_NUM_THREADS, else
    OMP_NUM_THREADS, else the usable CPUs, at most 8)."""
    return _team_threads


def _default_threads():
    """LSTMFAST_NUM_THREADS; else OMP_NUM_THREADS when it is a plain positive integer (torchrun
    and most job launchers set it to give each process its share of the cores); else the CPUs
    this process may run on. At most LF_TEAM_MAX."""
    value = _os.environ.get("LSTMFAST_NUM_THREADS", "").strip()
    omp = _os.environ.get("OMP_NUM_THREADS", "").strip()
    if value:
        try:
            threads = int(value)
        except ValueError:
            raise ValueError(f"LSTMFAST_NUM_THREADS: expected an integer, got {value!r}") from None
        if threads < 1:
            raise ValueError(f"LSTMFAST_NUM_THREADS: expected at least 1, got {threads}")
    elif omp.isdigit() and int(omp) >= 1:
        threads = int(omp)
    else:
        try:
            threads = len(_os.sched_getaffinity(0))
        except (AttributeError, OSError):
            threads = _os.cpu_count() or 1
    return max(1, min(threads, LF_TEAM_MAX))


set_num_threads(_default_threads())


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
    cdef cnp.ndarray packed = np.zeros(_packed_len(K, N, M), dtype=dtype)
    cdef cnp.ndarray a_pack = np.zeros(_a_pack_len(M, K), dtype=dtype)
    cdef Py_ssize_t r
    cdef bint use_packed = kind == "packed" and lf_packed_gemm_available != 0
    start = time.perf_counter()
    if dtype == np.float32:
        with nogil:
            if use_packed:
                _pack_weights(<float*>cnp.PyArray_DATA(b), 1, K, K, N, <float*>cnp.PyArray_DATA(packed), M)
            for r in range(repeats):
                _recurrent_product(M, N, K, <float*>cnp.PyArray_DATA(a), M,
                                   <float*>cnp.PyArray_DATA(packed) if use_packed else <float*>NULL,
                                   <float*>cnp.PyArray_DATA(b), K, c'N', <float*>cnp.PyArray_DATA(c), M,
                                   <float*>cnp.PyArray_DATA(c), M, <float*>cnp.PyArray_DATA(a_pack), False)
    else:
        with nogil:
            if use_packed:
                _pack_weights(<double*>cnp.PyArray_DATA(b), 1, K, K, N, <double*>cnp.PyArray_DATA(packed), M)
            for r in range(repeats):
                _recurrent_product(M, N, K, <double*>cnp.PyArray_DATA(a), M,
                                   <double*>cnp.PyArray_DATA(packed) if use_packed else <double*>NULL,
                                   <double*>cnp.PyArray_DATA(b), K, c'N', <double*>cnp.PyArray_DATA(c), M,
                                   <double*>cnp.PyArray_DATA(c), M, <double*>cnp.PyArray_DATA(a_pack), False)
    return (time.perf_counter() - start) / repeats


cdef inline bint _plain(cnp.ndarray a, int typenum, int ndim):
    # native byte order too: a byte-swapped array has the same type number
    return (a is not None and cnp.PyArray_NDIM(a) == ndim and cnp.PyArray_TYPE(a) == typenum
            and cnp.PyArray_ISALIGNED(a) and cnp.PyArray_ISNOTSWAPPED(a))


cdef lstm_dims _step_dims(cnp.ndarray x, cnp.ndarray W, cnp.ndarray RW, cnp.ndarray b,
                          cnp.ndarray h, cnp.ndarray c, int activation, int gate_activation) except *:
    """The checks of step() (all but the workspace); the problem's dims."""
    if W is None or cnp.PyArray_NDIM(W) != 2:
        raise ValueError("W: expected a 2-D array [nIn, 4h]")
    cdef int typenum = cnp.PyArray_TYPE(W)
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        raise ValueError("W: expected float32 or float64")
    if not (_plain(x, typenum, 2) and _plain(W, typenum, 2) and _plain(RW, typenum, 2)
            and _plain(b, typenum, 1) and _plain(h, typenum, 2) and _plain(c, typenum, 2)):
        raise ValueError("step: x, W, RW, b, h, c must be aligned arrays of W's dtype "
                         "with ranks 2, 2, 2, 1, 2, 2")
    cdef Py_ssize_t mb = x.shape[0], n_in = x.shape[1], hidden = RW.shape[0]
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(W)
    if (W.shape[0] != n_in or W.shape[1] != 4 * hidden or b.shape[0] != 4 * hidden
            or (RW.shape[1] != 4 * hidden and RW.shape[1] != 4 * hidden + 3)
            or h.shape[0] != mb or h.shape[1] != hidden or c.shape[0] != mb or c.shape[1] != hidden):
        raise ValueError(f"step: inconsistent shapes x {(<object>x).shape}, W {(<object>W).shape}, "
                         f"RW {(<object>RW).shape}, b {(<object>b).shape}, h {(<object>h).shape}, "
                         f"c {(<object>c).shape}")
    if W.strides[0] != item or RW.strides[0] != item:
        raise ValueError("step: W and RW need unit row stride (Fortran order)")
    if not (cnp.PyArray_ISWRITEABLE(h) and cnp.PyArray_ISWRITEABLE(c)):
        raise ValueError("step: h and c must be writable")
    return _dims(mb, n_in, hidden, 1, RW.shape[1] == 4 * hidden + 3, 1, activation,
                 gate_activation)


cdef int _run_step(const lstm_dims* d, cnp.ndarray x, cnp.ndarray W, cnp.ndarray RW,
                   cnp.ndarray b, cnp.ndarray h, cnp.ndarray c, void* workspace) except -1:
    """lstm_step in place on checked arrays (GIL released while it runs)."""
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(W)
    cdef lstm_strides xs = _strides(x, 2), hs = _strides(h, 2), cs = _strides(c, 2)
    cdef Py_ssize_t ld_w = W.strides[1] // item, ld_rw = RW.strides[1] // item
    cdef Py_ssize_t b_stride = b.strides[0] // item
    cdef int status
    if cnp.PyArray_TYPE(W) == cnp.NPY_FLOAT32:
        with nogil:
            status = lstm_step(d, <const float*>cnp.PyArray_DATA(x), xs,
                               <const float*>cnp.PyArray_DATA(W), ld_w,
                               <const float*>cnp.PyArray_DATA(RW), ld_rw,
                               <const float*>cnp.PyArray_DATA(b), b_stride,
                               <const float*>cnp.PyArray_DATA(h), hs,
                               <const float*>cnp.PyArray_DATA(c), cs,
                               <float*>cnp.PyArray_DATA(h), hs, <float*>cnp.PyArray_DATA(c), cs,
                               <float*>workspace)
    else:
        with nogil:
            status = lstm_step(d, <const double*>cnp.PyArray_DATA(x), xs,
                               <const double*>cnp.PyArray_DATA(W), ld_w,
                               <const double*>cnp.PyArray_DATA(RW), ld_rw,
                               <const double*>cnp.PyArray_DATA(b), b_stride,
                               <const double*>cnp.PyArray_DATA(h), hs,
                               <const double*>cnp.PyArray_DATA(c), cs,
                               <double*>cnp.PyArray_DATA(h), hs, <double*>cnp.PyArray_DATA(c), cs,
                               <double*>workspace)
    if status != LSTM_OK:
        raise ValueError(f"step failed: {ERROR_MESSAGES.get(status, status)}")
    return 0


cdef cnp.ndarray _copy_of(cnp.ndarray a):
    """A new array equal to a, Fortran-ordered (one memcpy when a is Fortran-contiguous)."""
    if not cnp.PyArray_IS_F_CONTIGUOUS(a):
        return cnp.PyArray_NewCopy(a, cnp.NPY_FORTRANORDER)
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(a), cnp.PyArray_DIMS(a),
                                             cnp.PyArray_TYPE(a), 1)
    memcpy(cnp.PyArray_DATA(out), cnp.PyArray_DATA(a), cnp.PyArray_NBYTES(a))
    return out


def step(cnp.ndarray x, cnp.ndarray W, cnp.ndarray RW, cnp.ndarray b, cnp.ndarray h,
         cnp.ndarray c, cnp.ndarray workspace, int activation, int gate_activation):
    """One streaming step in place: (h, c) <- LSTM(x, h, c); returns a copy of the new h.

    Every check is a C-level attribute test. x [mb, nIn], W [nIn, 4h] and RW [h, 4h(+3)] with
    unit row stride, b [4h], h and c [mb, h] writable, workspace 1-D with at least
    forward_workspace_size(mb, nIn, h, 1, False) elements; one dtype (float32 or float64)
    throughout. Raises ValueError when any of that does not hold.
    """
    cdef lstm_dims d = _step_dims(x, W, RW, b, h, c, activation, gate_activation)
    if not _plain(workspace, cnp.PyArray_TYPE(W), 1):
        raise ValueError("step: workspace must be an aligned 1-D array of W's dtype")
    cdef Py_ssize_t needed = lstm_forward_workspace_size(&d, 0)
    if needed < 0 or workspace.shape[0] < needed:
        raise ValueError(f"step: workspace needs {needed} elements, has {workspace.shape[0]}")
    _run_step(&d, x, W, RW, b, h, c, cnp.PyArray_DATA(workspace))
    return _copy_of(h)


cdef class StreamStep:
    """A layer's streaming step with its arrays bound once: ``plan(x)`` advances the bound
    state (h, c) in place by one step of x and returns a copy of the new h, as step() does, but
    checks only x per call (the layers' rnn_time_step calls it; Python overhead is most of a
    step at small sizes).

    The object holds W, RW, b, h and c (the layer's views and state arrays) and its own
    workspace, and the layer's in-use lock: a call takes the lock without waiting. It returns
    None, changing nothing, when x is not a plain aligned array of the bound dtype and shape
    [mb, nIn], when the lock is held elsewhere, or after invalidate() (the owner calls that
    when it rebinds the arrays): the caller then takes its validating path.
    """
    cdef object _acquire, _release
    cdef cnp.ndarray _W, _RW, _b, _h, _c, _workspace
    cdef lstm_dims _d
    cdef int _typenum
    cdef bint _valid

    def __init__(self, lock, cnp.ndarray x, cnp.ndarray W, cnp.ndarray RW, cnp.ndarray b,
                 cnp.ndarray h, cnp.ndarray c, int activation, int gate_activation):
        self._d = _step_dims(x, W, RW, b, h, c, activation, gate_activation)
        cdef int status = lstm_check_dims(&self._d)
        if status != LSTM_OK:
            raise ValueError(f"StreamStep: {ERROR_MESSAGES.get(status, status)}")
        self._typenum = cnp.PyArray_TYPE(W)
        self._workspace = np.empty(lstm_forward_workspace_size(&self._d, 0),
                                   np.float32 if self._typenum == cnp.NPY_FLOAT32 else np.float64)
        self._W, self._RW, self._b, self._h, self._c = W, RW, b, h, c
        self._acquire, self._release = lock.acquire, lock.release
        self._valid = True

    def invalidate(self):
        """Make every later call return None (the owner rebinds its arrays)."""
        self._valid = False

    def __call__(self, x):
        if (not self._valid or type(x) is not np.ndarray
                or not _plain(<cnp.ndarray>x, self._typenum, 2)
                or cnp.PyArray_DIM(<cnp.ndarray>x, 0) != self._d.minibatch
                or cnp.PyArray_DIM(<cnp.ndarray>x, 1) != self._d.n_in):
            return None
        if not self._acquire(False):
            return None
        try:
            if not self._valid:
                return None
            _run_step(&self._d, <cnp.ndarray>x, self._W, self._RW, self._b, self._h, self._c,
                      cnp.PyArray_DATA(self._workspace))
            return _copy_of(self._h)
        finally:
            self._release()
