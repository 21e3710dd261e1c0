# The kernels' work-space and cache arithmetic and the copies between the caller's strided
# arrays and the internal layouts (described below): overflow-checked sizes, the
# packed-operand sizes, the one layout function per pass (the size query and the carving both
# read it), and gather / scatter / pack. Inline, for pyx/kernels.pyx only (build-only: it needs
# pyx/lstmfast_simd.h and pyx/lstmfast_team.h on the include path).
from cython cimport floating
from libc.string cimport memcpy

from lstmfast._activations cimport LF_SMALL_M
from lstmfast._blas cimport fits_blas_int
from lstmfast.kernels cimport lstm_dims, lstm_strides, lstm_tuning, lstm_options

# Internal layout. The seed works on [minibatch, features] slices, one time step at a time, with
# `ifogActivations = input . W + prevOutput . RW` as [minibatch, 4h]. This port keeps that
# orientation (example-major, the fastest for OpenBLAS when the minibatch is small) and processes
# steps in *processing order* s = 0..T-1 (time t = s going forwards, t = T-1-s going backwards).
# Two arrangements are used:
#   - step-stacked: a quantity with F features over S steps is a column-major [mb*S, F] matrix
#     whose rows s*mb .. s*mb+mb-1 belong to step s. The input projection of many steps is then one
#     GEMM (seed: `miniBatchData.mmul(inputWeights)` per step), and after the backward loop one GEMM
#     each gives dL/dW, dL/dRW, dL/dx and the bias gradient (the seed accumulates them per step);
#   - per-step blocks: a contiguous [mb, F] block per step (index m + f*mb), so that each gate of
#     a step is one contiguous run of h*mb values for the element-wise code and the recurrent GEMM
#     (seed: `Nd4j.gemm(prevOutputActivations, recurrentWeightsIFOG, ...)` and, backwards,
#     `Nd4j.gemm(deltaifogNext, wIFOG, nablaOut, ...)`) reads and writes contiguous memory.

cdef extern from "lstmfast_team.h" nogil:
    int LF_TEAM_MAX

cdef extern from "lstmfast_transpose.h" nogil:
    void lf_transpose_f32(const float* src, Py_ssize_t ld_src, float* dst, Py_ssize_t ld_dst,
                          Py_ssize_t rows, Py_ssize_t cols)
    void lf_transpose_f64(const double* src, Py_ssize_t ld_src, double* dst, Py_ssize_t ld_dst,
                          Py_ssize_t rows, Py_ssize_t cols)

cdef extern from *:
    """
    /* the largest element count a size may reach: room to multiply by an element size */
    #define LF_SIZE_MAX_ELEMENTS ((Py_ssize_t)(((long long)1 << 62) / 16))
    """
    Py_ssize_t SIZE_MAX_ELEMENTS "LF_SIZE_MAX_ELEMENTS"

# ---------------------------------------------------------------------------------------------
# sizes

cdef inline lstm_dims _dims(Py_ssize_t minibatch, Py_ssize_t n_in, Py_ssize_t hidden,
                            Py_ssize_t time_steps, bint peepholes, bint forwards, int activation,
                            int gate_activation) noexcept nogil:
    """An lstm_dims record of these fields."""
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


# Up to this minibatch the packed kernel (with h_prev / the deltas packed too, lf_gemm_packed_*'s
# a_pack) beats OpenBLAS, which re-packs the recurrent weights at every step. Forward, process
# time, median of 3 alternating runs: float32 1 thread (50, 128, 512, 1024) 1229 -> 1102 ms,
# 2 threads 1427 -> 1197 ms; (30, 256, 256, 512) 374 -> 318 ms; float64 (30, 128, 256, 512)
# 377 -> 330 ms, (30, 256, 256, 512) 692 -> 687 ms. Before A was packed, mb 128 was slower
# packed (3.12 vs 2.61 s at (100, 128, 512, 1024)) and the limit was 64.
cdef enum:
    PACKED_GEMM_MAX_MINIBATCH = 256


cdef inline Py_ssize_t _recurrent_size(const lstm_dims* dims,
                                       const lstm_options* options) noexcept nogil:
    """The size of the h fed back and output: the projection P (LSTMP), else h."""
    return options.projection if options.projection > 0 else dims.hidden


# The cache written by a forward pass for backprop (the seed's FwdPassReturn); hp is h, or P
# with a projection (LSTMP):
#   xh   [mb*(T+1), n_in + hp + 1] step-stacked, three column groups of one matrix, so that one
#        GEMM after the backward loop gives dL/dW, dL/dRW and the bias gradient together:
#     xp   columns 0..n_in-1           packed input (slot s: step s; slot T unused)
#     hs   columns n_in..n_in+hp-1     slot 0: h0 (or zeros); slot s+1: output of step s, masked
#                                      (prevAct, fwdPassOutputAsArrays)
#     ones column n_in+hp              1 (the bias gradient's column sums)
#   cs   T+1 blocks [mb, h]            slot 0: c0 (or zeros); slot s+1: cell state of step s,
#                                      masked (prevMemCell, memCellState)
#   z    T blocks [mb, 4h]             gate pre-activations incl. bias and peepholes (iz, fz, oz, gz)
#   a    T blocks [mb, 4h]             gate activations (ia, fa, oa, ga)
#   mca  T blocks [mb, h]              layer activation of the unmasked cell state
#                                      (memCellActivations)
#   mp   [mb*T]                        mask in processing order (1 where no mask was given)
#   r    [mb*T, h] step-stacked        LSTMP only: o * act(c), masked (dL/dW_proj = r^T dL/dh)
ctypedef struct _cache_layout:
    # offsets in elements of the forward cache's parts (see the layout notes above)
    Py_ssize_t ld_x             # mb*(T+1): the leading dimension of xh = [xp | hs | ones]
    Py_ssize_t xp
    Py_ssize_t hs               # hp columns: h, or the projected h (LSTMP)
    Py_ssize_t ones
    Py_ssize_t cs
    Py_ssize_t z
    Py_ssize_t a
    Py_ssize_t mca
    Py_ssize_t mp
    Py_ssize_t r                # LSTMP: [mb*T, h] step-stacked o * act(c) (masked), else -1
    Py_ssize_t total


cdef inline Py_ssize_t _plan_cache(const lstm_dims* dims, const lstm_options* options,
                                   _cache_layout* layout) noexcept nogil:
    """The cache's layout (the one place that knows it: lstm_cache_size and both passes read
    it); its size in elements, or -1 (too large)."""
    cdef Py_ssize_t mb = dims.minibatch, T = dims.time_steps
    cdef Py_ssize_t block = _mul(mb, dims.hidden), rows = _mul(mb, T)
    cdef Py_ssize_t end = 0
    layout.ld_x = _mul(mb, _add(T, 1))
    layout.xp = _region(&end, _mul(dims.n_in, layout.ld_x))
    layout.hs = _region(&end, _mul(_recurrent_size(dims, options), layout.ld_x))
    layout.ones = _region(&end, layout.ld_x)
    layout.cs = _region(&end, _mul(block, _add(T, 1)))
    layout.z = _region(&end, _mul(_mul(4, block), T))
    layout.a = _region(&end, _mul(_mul(4, block), T))
    layout.mca = _region(&end, _mul(block, T))
    layout.mp = _region(&end, rows)
    layout.r = -1
    if options.projection > 0:
        layout.r = _region(&end, _mul(rows, dims.hidden))
    layout.total = end
    return end


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
# of [mb, nIn]: 512 KB of float, the most input_product_max_bytes was measured to pay at (its
# default is 256 KB, see kernels.pyx); above, the per-step product does not pay and the room
# (8 threads' copies) would be reserved for nothing. A constant, like _a_pack_used (not the
# tunable limits: a work space sized under one setting may be used under another); past it the
# per-step product reads x in place.
cdef enum:
    X_PACK_MAX_ELEMENTS = 131072


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
    Py_ssize_t h_ring           # _h_ring_slots x [mb, hp]
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
    Py_ssize_t r_block          # LSTMP: [mb, h], o * act(c) before the projection
    Py_ssize_t total


cdef inline Py_ssize_t _h_ring_slots(Py_ssize_t mb, Py_ssize_t hp) noexcept nogil:
    """Blocks in the forward's ring of h (the steps' h where the output cannot hold them; step
    s's block is s + 1 modulo this). A block is written by groups of units and then read whole
    by every thread; with two blocks, it is written again two steps later, while its lines are
    still in the other threads' caches, and every line is a round trip to take back: 8 blocks
    cut a (50, 32, 64, 128) float32 forward with a time-major output at 2 threads from 1.245 to
    1.18 ms (1 thread: unchanged). Blocks larger than L1 (32K elements) gain nothing: two."""
    return 8 if mb * hp <= 32768 else 2


cdef inline Py_ssize_t _plan_forward_workspace(const lstm_dims* dims,
                                               const lstm_tuning* tuning,
                                               const lstm_options* options,
                                               _forward_layout* layout) noexcept nogil:
    """The forward work space's layout under `tuning` and `options` (the one place that knows
    it: the size query and the pass's carving both read it); its size in elements, or -1 (too
    large). The h ring holds the h fed back (hp: P with a projection)."""
    cdef Py_ssize_t mb = dims.minibatch, h = dims.hidden, n_in = dims.n_in
    cdef Py_ssize_t hp = _recurrent_size(dims, options)
    cdef Py_ssize_t block = _mul(mb, h), G = _mul(4, h)
    cdef Py_ssize_t chunk = _chunk(dims, tuning)
    cdef Py_ssize_t rows = _mul(mb, chunk)
    cdef Py_ssize_t end = 0
    layout.chunk = chunk
    layout.projection = _region(&end, _mul(rows, G))
    layout.x_chunk = _region(&end, _mul(rows, n_in))
    layout.mask_chunk = _region(&end, rows)
    layout.h_ring = _region(&end, _mul(_h_ring_slots(mb, hp), _mul(mb, hp)))
    layout.c_ring = _region(&end, _mul(2, block))
    layout.z_block = _region(&end, _mul(4, block))
    layout.a_block = _region(&end, _mul(4, block))
    layout.mca_block = _region(&end, block)
    layout.bias_block = _region(&end, G)
    layout.peep_block = _region(&end, _mul(3, block))
    layout.packed_rw = layout.packed_w = layout.a_pack = layout.x_pack = layout.r_block = -1
    if options.projection > 0:
        # (a projected pass runs its products on BLAS, on one thread: no packed weights)
        layout.r_block = _region(&end, block)
    elif dims.time_steps > 1:
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
    Py_ssize_t packed_w_t       # W^T [4h, n_in] packed in panels: dL/dx on the packed kernel
    Py_ssize_t peephole_sums    # 3 x [h]: sum_f, sum_o, sum_g
    Py_ssize_t a_pack           # LF_TEAM_MAX x _a_pack_len(mb, 4h): each thread's packed deltas
    Py_ssize_t grad_partial     # [n_in + h + 1, 4h]: a team's second row group's sums
    Py_ssize_t last_c_grad      # [mb, h]: dL/d(last c) of the examples ending at a step (lengths)
    Py_ssize_t nabla_proj       # LSTMP: [mb, P], dL/d(projected h) of a step
    Py_ssize_t grad_proj        # LSTMP: [mb*T, P] step-stacked dL/d(projected h), for dL/dW_proj
    Py_ssize_t total


cdef inline Py_ssize_t _plan_backward_workspace(const lstm_dims* dims,
                                                const lstm_options* options,
                                                _backward_layout* layout) noexcept nogil:
    """The backward work space's layout (the one place that knows it, as
    _plan_forward_workspace); its size in elements, or -1 (too large)."""
    cdef Py_ssize_t mb = dims.minibatch, h = dims.hidden, n_in = dims.n_in
    cdef Py_ssize_t hp = _recurrent_size(dims, options)
    cdef Py_ssize_t rows = _mul(mb, dims.time_steps)
    cdef Py_ssize_t block = _mul(mb, h), G = _mul(4, h)
    cdef Py_ssize_t stack = _mul(_add(_add(n_in, hp), 1), G)
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
    layout.rw_t = _region(&end, _mul(G, hp))
    layout.packed_rw_t = layout.packed_w_t = layout.nabla_proj = layout.grad_proj = -1
    if options.projection > 0:
        # (one thread, BLAS products: no packed RW^T or W^T)
        layout.nabla_proj = _region(&end, _mul(mb, hp))
        layout.grad_proj = _region(&end, _mul(rows, hp))
    else:
        layout.packed_rw_t = _region(&end, _packed_slices_size(G, h, 1))
        layout.packed_w_t = _region(&end, _packed_size(G, n_in))
    layout.peephole_sums = _region(&end, _mul(3, h))
    layout.a_pack = layout.grad_partial = -1
    if _a_pack_used(mb) and options.projection == 0:
        layout.a_pack = _region(&end, _mul(LF_TEAM_MAX, _a_pack_len(mb, G)))
    if _row_group_room(dims):
        layout.grad_partial = _region(&end, stack)
    layout.last_c_grad = -1
    if options.lengths != NULL:
        layout.last_c_grad = _region(&end, block)
    layout.total = end
    return end


cdef inline bint _row_group_room(const lstm_dims* dims) noexcept nogil:
    """Whether the backward work space holds a second [n_in + h + 1, 4h] block of gradient
    sums: when mb * T >= 4h, the shapes where a team may split the gradient GEMMs by rows."""
    cdef Py_ssize_t T = dims.time_steps
    return T > 1 and dims.minibatch >= (4 * dims.hidden + T - 1) // T    # mb * T >= 4h


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


cdef inline void _transpose(const floating* src, Py_ssize_t ld_src, floating* dst,
                            Py_ssize_t ld_dst, Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    """dst[j + i * ld_dst] = src[i + j * ld_src] for i < rows, j < cols: a block of examples x
    features between the internal layout and a caller's array with each example's features
    contiguous (pyx/lstmfast_transpose.h)."""
    if floating is float:
        lf_transpose_f32(src, ld_src, dst, ld_dst, rows, cols)
    else:
        lf_transpose_f64(src, ld_src, dst, ld_dst, rows, cols)


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
    if src != NULL and st.feature == 1:
        # each example's units contiguous (nn.LSTM's time-major arrays)
        _transpose(src + k0, st.minibatch, dst + k0 * mb, mb, k1 - k0, mb)
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
    _scatter_block(dims, src, dst, st, 0, dims.minibatch, k0, k1)


cdef inline void _scatter_block(const lstm_dims* dims, const floating* src, floating* dst,
                                lstm_strides st, Py_ssize_t m0, Py_ssize_t m1, Py_ssize_t k0,
                                Py_ssize_t k1) noexcept nogil:
    """The examples m0..m1-1 and units k0..k1-1 of a contiguous [mb, *] block src into the
    strided dst (nothing if dst is NULL). Threads that split a step by examples write disjoint
    rows of a time-major output (split by units they wrote parts of the same cache lines)."""
    cdef Py_ssize_t m, k, mb = dims.minibatch
    cdef floating* column
    if dst == NULL or m1 <= m0:
        return
    if _contiguous_steps(st, mb):
        if m0 == 0 and m1 == mb:
            memcpy(dst + k0 * mb, src + k0 * mb, (k1 - k0) * mb * sizeof(floating))
        else:
            for k in range(k0, k1):
                memcpy(dst + k * mb + m0, src + k * mb + m0, (m1 - m0) * sizeof(floating))
        return
    if st.feature == 1:
        # each example's units contiguous (nn.LSTM's time-major arrays)
        _transpose(src + m0 + k0 * mb, mb, dst + m0 * st.minibatch + k0, st.minibatch, m1 - m0,
                   k1 - k0)
        return
    for k in range(k0, k1):
        if st.minibatch == 1:
            column = dst + k * st.feature
            for m in range(m0, m1):
                column[m] = src[m + k * mb]
        else:
            for m in range(m0, m1):
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
    cdef Py_ssize_t count = s_end - s_begin
    if count > 1 and abs_time == 1 and abs_mb > 1 and abs_feature > 1:
        # time contiguous (a C-ordered [mb, n_in, T], NumPy's default): for each feature, its
        # [mb, steps] series is the transpose of its rows of xp, in SSE tiles (the element
        # loop below wrote one element per cache line, 2.2 ns an element: a fifth of a
        # (50, 32, 128, 128) forward pass at 2 threads). Steps in processing order: ascending
        # time forwards; backwards the rows go the other way (a negative leading dimension).
        for i in range(dims.n_in):
            series = x + i * st.feature
            if (st.time == 1) == dims.forwards:
                # the first processed step's time is the lowest
                _transpose(series + _time_of(dims, s_begin) * st.time, st.minibatch,
                           xp + i * ld, mb, count, mb)
            else:
                # the last processed step's time is the lowest: fill the rows from the end
                _transpose(series + _time_of(dims, s_end - 1) * st.time, st.minibatch,
                           xp + i * ld + (count - 1) * mb, -mb, count, mb)
        return
    if count > 1 and 0 < abs_time < abs_mb and abs_time < abs_feature:
        # time varies fastest (a strided [mb, n_in, T]): read each (example, feature) series
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
        if st.feature == 1:
            # each example's features contiguous (nn.LSTM's time-major x)
            _transpose(xt, st.minibatch, xp + mb * (s - s_begin), ld, dims.n_in, mb)
            continue
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
# per-example lengths (lstm_options.lengths): every example's valid steps are the first
# `length` steps of processing order, at times 0..length-1 forwards and length-1..0 backwards
# (so a backward direction starts each example at its own last valid time); the steps after
# are padding, masked as a trailing mask would be

cdef inline Py_ssize_t _length_of(const lstm_options* options, Py_ssize_t m) noexcept nogil:
    return options.lengths[m * options.lengths_stride]


cdef inline Py_ssize_t _example_time(const lstm_dims* dims, Py_ssize_t length,
                                     Py_ssize_t s) noexcept nogil:
    """The time of processing step s of an example of this length, or -1 (padding)."""
    if s >= length:
        return -1
    return s if dims.forwards else length - 1 - s


cdef inline void _pack_input_lengths(const lstm_dims* dims, const lstm_options* options,
                                     const floating* x, lstm_strides st, Py_ssize_t s_begin,
                                     Py_ssize_t s_end, floating* xp, Py_ssize_t ld) noexcept nogil:
    """_pack_input with lengths: each example's own time, zeros in the padding (whatever the
    caller left there, NaN included, never reaches a valid step)."""
    cdef Py_ssize_t s, m, i, t, mb = dims.minibatch
    cdef floating* dst
    for s in range(s_begin, s_end):
        for i in range(dims.n_in):
            # the examples of a feature side by side in xp: one contiguous run per (step, feature)
            dst = xp + mb * (s - s_begin) + i * ld
            for m in range(mb):
                t = _example_time(dims, _length_of(options, m), s)
                dst[m] = 0 if t < 0 else x[m * st.minibatch + i * st.feature + t * st.time]


cdef inline void _pack_mask_lengths(const lstm_dims* dims, const lstm_options* options,
                                    Py_ssize_t s_begin, Py_ssize_t s_end,
                                    floating* mp) noexcept nogil:
    """The mask the lengths imply, steps s_begin..s_end-1 in processing order."""
    cdef Py_ssize_t s, m, mb = dims.minibatch
    for s in range(s_begin, s_end):
        for m in range(mb):
            mp[mb * (s - s_begin) + m] = 1 if s < _length_of(options, m) else 0


cdef inline void _zero_padding(const lstm_dims* dims, const lstm_options* options,
                               floating* out, lstm_strides st, Py_ssize_t features) noexcept nogil:
    """out[m, :, t] = 0 at every time t >= length of example m (nothing if out is NULL)."""
    cdef Py_ssize_t m, t, k
    if out == NULL:
        return
    for m in range(dims.minibatch):
        for t in range(_length_of(options, m), dims.time_steps):
            for k in range(features):
                out[m * st.minibatch + k * st.feature + t * st.time] = 0


cdef inline void _scatter_units_lengths(const lstm_dims* dims, const lstm_options* options,
                                        const floating* src, floating* out, lstm_strides st,
                                        Py_ssize_t s, Py_ssize_t k0, Py_ssize_t k1) noexcept nogil:
    """The units k0..k1-1 of step s's [mb, h] block to each example's own time in out
    [mb, h, T]; nothing for the examples whose padding step s is."""
    cdef Py_ssize_t m, k, t, mb = dims.minibatch
    for m in range(mb):
        t = _example_time(dims, _length_of(options, m), s)
        if t >= 0:
            for k in range(k0, k1):
                out[m * st.minibatch + k * st.feature + t * st.time] = src[m + k * mb]


cdef inline void _gather_units_lengths(const lstm_dims* dims, const lstm_options* options,
                                       const floating* src, lstm_strides st, Py_ssize_t s,
                                       floating* dst, Py_ssize_t k0, Py_ssize_t k1) noexcept nogil:
    """The units k0..k1-1 of step s from [mb, h, T] at each example's own time into the [mb, h]
    block dst; zeros for the examples whose padding step s is."""
    cdef Py_ssize_t m, k, t, mb = dims.minibatch
    for k in range(k0, k1):
        for m in range(mb):
            t = _example_time(dims, _length_of(options, m), s)
            dst[m + k * mb] = 0 if t < 0 else src[m * st.minibatch + k * st.feature + t * st.time]


cdef inline Py_ssize_t _steps_to_run(const lstm_dims* dims,
                                     const lstm_options* options) noexcept nogil:
    """The processed steps a pass runs: T, or with lengths the longest (at least 1); the steps
    after it are padding for every example (outputs zero, nothing to back-propagate)."""
    cdef Py_ssize_t m, longest = 1
    if options.lengths == NULL:
        return dims.time_steps
    for m in range(dims.minibatch):
        if _length_of(options, m) > longest:
            longest = _length_of(options, m)
    return longest


cdef inline bint _lengths_valid(const lstm_dims* dims, const lstm_options* options) noexcept nogil:
    cdef Py_ssize_t m, length
    for m in range(dims.minibatch):
        length = _length_of(options, m)
        if length < 0 or length > dims.time_steps:
            return False
    return True


cdef inline bint _projection_valid(const lstm_dims* dims,
                                   const lstm_options* options) noexcept nogil:
    """Whether an LSTMP pass's weights are given (with leading dimensions of at least h) and
    its sizes fit the BLAS integer; the gradients are the backward pass's to check."""
    if options.projection_weights == NULL or options.ld_projection_weights < dims.hidden:
        return False
    if dims.peepholes and (options.peephole_weights == NULL
                           or options.ld_peephole_weights < dims.hidden):
        return False
    return (fits_blas_int(options.projection) and fits_blas_int(options.ld_projection_weights)
            and fits_blas_int(_mul(dims.minibatch, dims.time_steps)))


cdef inline bint _gate_blocks_valid(const lstm_options* options) noexcept nogil:
    """Whether options.gate_blocks is a permutation of 0..3."""
    cdef int k, seen = 0
    for k in range(4):
        if options.gate_blocks[k] < 0 or options.gate_blocks[k] > 3:
            return False
        seen |= 1 << options.gate_blocks[k]
    return seen == 15


cdef inline bint _gates_in_seed_order(const lstm_options* options) noexcept nogil:
    """Whether the caller's gate blocks are the kernels' own (the seed's) order."""
    return (options.gate_blocks[0] == 0 and options.gate_blocks[1] == 1
            and options.gate_blocks[2] == 2 and options.gate_blocks[3] == 3)


cdef inline Py_ssize_t _gate_column(const int* gate_blocks, Py_ssize_t h,
                                    Py_ssize_t j) noexcept nogil:
    """The caller's column of the kernels' gate column j (0 <= j < 4h)."""
    return gate_blocks[j // h] * h + j % h


cdef inline void _copy_gates_in_order(const floating* src, Py_ssize_t ld_src, Py_ssize_t rows,
                                      Py_ssize_t h, Py_ssize_t extra_columns,
                                      const int* gate_blocks, floating* dst) noexcept nogil:
    """dst [rows, 4h + extra_columns] (leading dimension rows) = the caller's src with its gate
    blocks in the kernels' order; the extra columns (peepholes) as they are."""
    cdef Py_ssize_t j, G = 4 * h
    for j in range(G + extra_columns):
        memcpy(dst + j * rows,
               src + (_gate_column(gate_blocks, h, j) if j < G else j) * ld_src,
               rows * sizeof(floating))


cdef inline lstm_strides _block_strides(Py_ssize_t mb) noexcept nogil:
    """The strides of a contiguous [mb, features] block (index m + k*mb)."""
    cdef lstm_strides st
    st.minibatch = 1
    st.feature = mb
    st.time = 0
    return st


cdef inline bint _any_ends_at(const lstm_dims* dims, const lstm_options* options,
                              Py_ssize_t s) noexcept nogil:
    """Whether some example's last valid step is processing step s."""
    cdef Py_ssize_t m
    for m in range(dims.minibatch):
        if _length_of(options, m) == s + 1:
            return True
    return False


cdef inline void _copy_rows_ending(const lstm_dims* dims, const lstm_options* options,
                                   Py_ssize_t length, const floating* src, lstm_strides src_st,
                                   floating* dst, lstm_strides dst_st, Py_ssize_t k0,
                                   Py_ssize_t k1) noexcept nogil:
    """dst[m, k] = src[m, k] for the units k0..k1-1 of the examples of this length (nothing if
    dst is NULL; src NULL: zeros). Strides as lstm_strides of [mb, features] operands."""
    cdef Py_ssize_t m, k
    if dst == NULL:
        return
    for m in range(dims.minibatch):
        if _length_of(options, m) == length:
            for k in range(k0, k1):
                dst[m * dst_st.minibatch + k * dst_st.feature] = (
                    0 if src == NULL else src[m * src_st.minibatch + k * src_st.feature])
