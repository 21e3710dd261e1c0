# cython: language_level=3
"""lstmfast.kernels: the C API and the Python entry of the port of DL4J 0.9.1's LSTMHelpers
(deeplearning4j-nn/.../layers/recurrent/LSTMHelpers.java) to typed Cython over BLAS. The passes
are lstmfast._forward (activateHelper) and lstmfast._backward (backpropGradientHelper); one
step's gate math is pyx/lstmfast_cells.inc.h, the work-space layouts and copies
lstmfast/_layout.pxd, the thread team lstmfast._team, the streaming step lstmfast._stream.

The internal layouts (processing order, step-stacked matrices, per-step blocks) and the cache:
lstmfast/_layout.pxd.
Gate blocks in every 4h: [block input i, forget f, output o, input gate g], the seed's [I, F, O, G].
"""
from cython cimport floating

cimport numpy as cnp
import numpy as np

from lstmfast._blas cimport fits_blas_int
from lstmfast._blas_int cimport BLAS_INT_MAX as _BLAS_INT_MAX
from lstmfast._cells cimport (lf_select_isa, LF_ACT_TANH,
                              LF_ACT_SIGMOID, LF_ACT_HARDSIGMOID, LF_ACT_RATIONALTANH, LF_ACT_COUNT)
from lstmfast._layout cimport *
from lstmfast._team cimport *
from lstmfast._forward cimport run_forward
from lstmfast._backward cimport run_backward
from lstmfast.kernels cimport (lstm_dims, lstm_strides, lstm_tuning, lstm_report, lstm_options,
                               LSTM_OK, LSTM_ERR_ARGUMENT,
                               LSTM_ERR_ACTIVATION, LSTM_ERR_TOO_LARGE, LSTM_ERR_NO_MEMORY,
                               LSTM_ERR_CANCELLED, LSTM_ERR_ABANDONED,
                               ACT_TANH, ACT_SIGMOID, ACT_HARDSIGMOID, ACT_RATIONALTANH,
                               ACT_COUNT)

cnp.import_array()

# whether the team steers OpenBLAS's threads, and checks OpenBLAS's buffer pool before level-3
# calls (pyx/_team.pyx)
from lstmfast import _team as _team_module
_BLAS_THREAD_CONTROL = _team_module.BLAS_THREAD_CONTROL
_BLAS_BUFFER_CHECK = _team_module.BLAS_BUFFER_CHECK

import operator

from lstmfast._blas_threads import default_team_threads as _default_threads
from lstmfast._interrupt import PassAbandoned, PassStopped

# The instruction set of the vectorised math, the packed products and the cells (lstmfast._isa
# chooses it and names it; every compiled module selects its own copies of the variants by the
# same rule)
from lstmfast._isa import isa_levels, simd_variant, vector_math  # no-cython-lint (public here)
lf_select_isa()
# the C cells (pyx/lstmfast_cells.h) number the activations as ACT_* does
if (LF_ACT_TANH, LF_ACT_SIGMOID, LF_ACT_HARDSIGMOID, LF_ACT_RATIONALTANH, LF_ACT_COUNT) != (
        ACT_TANH, ACT_SIGMOID, ACT_HARDSIGMOID, ACT_RATIONALTANH, ACT_COUNT):
    raise ImportError("lstmfast: the activation codes of pyx/lstmfast_cells.h and "
                      "lstmfast/kernels.pxd differ")


# ---------------------------------------------------------------------------------------------
# the tuning record (lstm_tuning): every choice of how a pass computes, with its measured default

cdef lstm_tuning lstm_default_tuning() noexcept nogil:
    cdef lstm_tuning t
    # The input projection runs in chunks of time steps so that its work space stays bounded
    # for long sequences; about this many elements per chunk (at least one step).
    t.projection_chunk_elements = 1 << 21
    # With the packed kernel on, each step computes its own input product x_s W (W packed too)
    # straight into the step's gate pre-activations when one step's input [mb, nIn] takes at
    # most this many bytes; above, one OpenBLAS GEMM per chunk of steps, which packs W again
    # for every chunk. One limit serves every team size and instruction set: the choice changes
    # the bits, and neither may. Measured on AMD Zen 4 (1 MB L2; alternating settings in one
    # process, forward, medians of 5-15): at 128 KB per step, float64 (100, 64, 256, 256)
    # 148-149 -> 139-141 ms at 1 thread (AVX2 path 150 -> 143), 89 -> 75 ms at 2 threads; at
    # 256 KB, float32 (60, 128, 512, 1024) 1046 -> 945 ms at 1 thread (AVX2 path 1165 -> 1154),
    # 537 -> 497 ms at 2 threads. Earlier, on an Intel Xeon with the AVX2 kernel, the per-step
    # product had lost at 128 KB float64 (153-173 against 202-203 ms), which is why the limit
    # had been 64 KB (that run predates the AVX-512 variants, which run that pass in about
    # half the time there). Larger steps were not measured on Zen 4; on the Xeon, 1 MB per step
    # lost to the chunk GEMM ((30, 128, 2048, 512) float32, 2 threads: 388 against 354 ms).
    t.input_product_max_bytes = 1 << 18
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


cdef lstm_options lstm_default_options() noexcept nogil:
    """Nothing beyond the seed: no lengths, no projection."""
    cdef lstm_options o
    o.lengths = NULL
    o.lengths_stride = 1
    o.projection = 0
    o.projection_weights = o.peephole_weights = NULL
    o.grad_projection_weights = o.grad_peephole_weights = NULL
    o.ld_projection_weights = o.ld_peephole_weights = 0
    o.ld_grad_projection_weights = o.ld_grad_peephole_weights = 0
    cdef int k
    for k in range(4):
        o.gate_blocks[k] = k
    o.input_steps_ready = NULL
    o.output_steps_done = NULL
    return o


cdef inline const lstm_options* _options_or_defaults(const lstm_options* options,
                                                     lstm_options* defaults) noexcept nogil:
    """options, or the defaults written into *defaults when options is NULL."""
    if options != NULL:
        return options
    defaults[0] = lstm_default_options()
    return defaults


# ---------------------------------------------------------------------------------------------
# sizes and checks

cdef enum:
    _SIZES_SAFE = 1 << 15


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
    # Each buffer size is a sum of a few dozen terms, each a product of at most three of mb,
    # T + 1, n_in, h and 4h (padded by up to 64) times a constant of at most 128: with every
    # dimension under 2^15 the sums stay under 2^60, so only larger problems compute them (a
    # streaming step spent a fifth of its instructions here)
    if (dims.minibatch < _SIZES_SAFE and dims.time_steps < _SIZES_SAFE
            and dims.n_in < _SIZES_SAFE and dims.hidden < _SIZES_SAFE):
        return LSTM_OK
    if (lstm_cache_size(dims) < 0 or lstm_backward_workspace_size(dims) < 0
            or lstm_forward_workspace_size(dims, 0) < 0):
        return LSTM_ERR_TOO_LARGE
    return LSTM_OK


cdef Py_ssize_t lstm_cache_size(const lstm_dims* dims) noexcept nogil:
    return lstm_cache_size_ex2(dims, NULL)


cdef Py_ssize_t lstm_cache_size_ex2(const lstm_dims* dims,
                                    const lstm_options* options) noexcept nogil:
    """(Lengths do not change the cache; a projection does.)"""
    if dims == NULL or dims.minibatch < 1 or dims.n_in < 1 or dims.hidden < 1 or dims.time_steps < 1:
        return -1
    cdef lstm_options defaults
    options = _options_or_defaults(options, &defaults)
    if options.projection < 0:
        return -1
    cdef _cache_layout layout
    return _plan_cache(dims, options, &layout)


cdef Py_ssize_t lstm_forward_workspace_size(const lstm_dims* dims, bint for_backprop) noexcept nogil:
    return lstm_forward_workspace_size_ex(dims, for_backprop, NULL)


cdef Py_ssize_t lstm_forward_workspace_size_ex(const lstm_dims* dims, bint for_backprop,
                                               const lstm_tuning* tuning) noexcept nogil:
    return lstm_forward_workspace_size_ex2(dims, for_backprop, tuning, NULL)


cdef Py_ssize_t lstm_forward_workspace_size_ex2(const lstm_dims* dims, bint for_backprop,
                                                const lstm_tuning* tuning,
                                                const lstm_options* options) noexcept nogil:
    """(Lengths do not change the forward work space; a projection does.)"""
    if dims == NULL or dims.minibatch < 1 or dims.n_in < 1 or dims.hidden < 1 or dims.time_steps < 1:
        return -1
    cdef lstm_tuning defaults
    cdef lstm_options no_options
    tuning = _tuning_or_defaults(tuning, &defaults)
    options = _options_or_defaults(options, &no_options)
    if tuning.projection_chunk_elements < 1 or options.projection < 0:
        return -1
    cdef _forward_layout layout
    return _plan_forward_workspace(dims, tuning, options, &layout)


cdef Py_ssize_t lstm_backward_workspace_size(const lstm_dims* dims) noexcept nogil:
    return lstm_backward_workspace_size_ex(dims, NULL)


cdef Py_ssize_t lstm_backward_workspace_size_ex(const lstm_dims* dims,
                                                const lstm_tuning* tuning) noexcept nogil:
    return lstm_backward_workspace_size_ex2(dims, tuning, NULL)


cdef Py_ssize_t lstm_backward_workspace_size_ex2(const lstm_dims* dims,
                                                 const lstm_tuning* tuning,
                                                 const lstm_options* options) noexcept nogil:
    """(No tuning choice changes the backward work space: `tuning` is for symmetry.)"""
    if dims == NULL or dims.minibatch < 1 or dims.n_in < 1 or dims.hidden < 1 or dims.time_steps < 1:
        return -1
    cdef lstm_options defaults
    options = _options_or_defaults(options, &defaults)
    if options.projection < 0:
        return -1
    cdef _backward_layout layout
    return _plan_backward_workspace(dims, options, &layout)


# ---------------------------------------------------------------------------------------------
# the thread team (pyx/lstmfast_team.h)

# threads a pass may use for its time loop (set_num_threads); 1 until the module sets it below
cdef int _team_threads = 1


# ---------------------------------------------------------------------------------------------
# the passes (lstmfast._forward, lstmfast._backward) behind the C API

cdef inline lstm_tuning _resolved_tuning(const lstm_tuning* tuning) noexcept nogil:
    """A pass's complete tuning record: `tuning` (NULL: the defaults) with threads 0 replaced
    by set_num_threads's value."""
    cdef lstm_tuning resolved = tuning[0] if tuning != NULL else lstm_default_tuning()
    if resolved.threads <= 0:
        resolved.threads = _team_threads
    return resolved


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
    return lstm_forward_ex2(dims, x, x_strides, input_weights, ld_input_weights,
                            recurrent_weights, ld_recurrent_weights, bias, bias_stride, h0,
                            h0_strides, c0, c0_strides, mask, mask_strides, output,
                            output_strides, last_h, last_h_strides, last_c, last_c_strides, cache,
                            workspace, tuning, report, cancel, NULL)


cdef int lstm_forward_ex2(const lstm_dims* dims,
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
    """lstm_forward_ex under `options` (NULL: none). The pass: lstmfast._forward."""
    cdef int status = lstm_check_dims(dims)
    cdef lstm_tuning resolved = _resolved_tuning(tuning)
    cdef lstm_options defaults
    if status == LSTM_OK:
        status = run_forward(dims, x, x_strides, input_weights, ld_input_weights,
                             recurrent_weights, ld_recurrent_weights, bias, bias_stride, h0,
                             h0_strides, c0, c0_strides, mask, mask_strides, output,
                             output_strides, last_h, last_h_strides, last_c, last_c_strides,
                             cache, workspace, &resolved, report, cancel,
                             _options_or_defaults(options, &defaults))
    if options != NULL and options.output_steps_done != NULL and status != LSTM_ERR_CANCELLED:
        # the whole output, or a failure the next layer's pass stops on (a cancelled pass
        # leaves the count: whoever cancelled it cancels the reader, or runs the pass again)
        lf_steps_publish(options.output_steps_done,
                         dims.time_steps if status == LSTM_OK else -1)
    return status


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
    """lstm_backward; `tuning`, `report` and `cancel` as in lstm_forward_ex. grad_last_c [mb, h]
    (may be NULL): dL/d(last cell state), which the seed has no input for (beyond the seed: for
    encoder-decoder use)."""
    return lstm_backward_ex2(dims, input_weights, ld_input_weights, recurrent_weights,
                             ld_recurrent_weights, cache, epsilon, epsilon_strides, tbptt_length,
                             grad_input_weights, ld_grad_input_weights, grad_recurrent_weights,
                             ld_grad_recurrent_weights, grad_bias, grad_bias_stride, grad_input,
                             grad_input_strides, grad_h0, grad_h0_strides, grad_c0,
                             grad_c0_strides, workspace, tuning, report, cancel, grad_last_c,
                             grad_last_c_strides, NULL)


cdef int lstm_backward_ex2(const lstm_dims* dims,
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
    """lstm_backward_ex under `options` (NULL: none). The pass: lstmfast._backward."""
    cdef int status = lstm_check_dims(dims)
    if status != LSTM_OK:
        return status
    cdef lstm_tuning resolved = _resolved_tuning(tuning)
    cdef lstm_options defaults
    return run_backward(dims, input_weights, ld_input_weights, recurrent_weights, ld_recurrent_weights,
                        cache, epsilon, epsilon_strides, tbptt_length, grad_input_weights,
                        ld_grad_input_weights, grad_recurrent_weights, ld_grad_recurrent_weights,
                        grad_bias, grad_bias_stride, grad_input, grad_input_strides, grad_h0,
                        grad_h0_strides, grad_c0, grad_c0_strides, workspace, &resolved, report,
                        cancel, grad_last_c, grad_last_c_strides,
                        _options_or_defaults(options, &defaults))


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
    LSTM_ERR_NO_MEMORY: "no memory for the work space or for the BLAS work buffers",
    LSTM_ERR_ABANDONED: "interrupted, and a thread of the team did not stop",
}

_ABANDONED_MESSAGE = ("a thread of the team did not stop within 2 s: the pass's arrays are kept "
                      "for it (never reused) and later passes run on one thread")

# The arrays of passes whose team thread never stopped (LSTM_ERR_ABANDONED): that thread may
# still write to them, so they are kept alive here and never handed out again (_is_stranded).
_STRANDED = []
_STRANDED_IDS = set()


def _strand(arrays):
    """Keep `arrays` (None entries skipped) for good; _is_stranded tells the buffer pool."""
    for array in arrays:
        if array is not None and id(array) not in _STRANDED_IDS:
            _STRANDED.append(array)
            _STRANDED_IDS.add(id(array))


def _is_stranded(array):
    return id(array) in _STRANDED_IDS


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


cdef lstm_options _size_options(Py_ssize_t projection, object lengths=None) except *:
    cdef lstm_options o = _options_record(lengths)
    o.projection = projection
    return o


def cache_size(Py_ssize_t minibatch, Py_ssize_t n_in, Py_ssize_t hidden, Py_ssize_t time_steps,
               Py_ssize_t projection=0):
    """Elements of the forward cache lstm_backward reads (-1 when too large); projection: P
    of an LSTMP pass (0: none)."""
    cdef lstm_dims d = _dims(minibatch, n_in, hidden, time_steps, 0, 1, 0, ACT_SIGMOID)
    cdef lstm_options o = _size_options(projection)
    return lstm_cache_size_ex2(&d, &o)


def forward_workspace_size(Py_ssize_t minibatch, Py_ssize_t n_in, Py_ssize_t hidden,
                           Py_ssize_t time_steps, bint for_backprop, tuning=None,
                           Py_ssize_t projection=0):
    """Elements of the forward work space (-1 when too large); `tuning` as in `forward`."""
    cdef lstm_dims d = _dims(minibatch, n_in, hidden, time_steps, 0, 1, 0, ACT_SIGMOID)
    cdef lstm_tuning t = _tuning_record(tuning)
    cdef lstm_options o = _size_options(projection)
    return lstm_forward_workspace_size_ex2(&d, for_backprop, &t, &o)


def backward_workspace_size(Py_ssize_t minibatch, Py_ssize_t n_in, Py_ssize_t hidden,
                            Py_ssize_t time_steps, tuning=None, lengths=None,
                            Py_ssize_t projection=0):
    """Elements of the backward work space (-1 when too large); `tuning`, `lengths` as in
    `forward`."""
    cdef lstm_dims d = _dims(minibatch, n_in, hidden, time_steps, 0, 1, 0, ACT_SIGMOID)
    cdef lstm_tuning t = _tuning_record(tuning)
    cdef lstm_options o = _size_options(projection, lengths)
    return lstm_backward_workspace_size_ex2(&d, &t, &o)


def default_tuning():
    """The kernels' tuning record (lstm_tuning) as a dict of its fields and default values."""
    return <dict>lstm_default_tuning()


cdef lstm_tuning _tuning_record(object overrides) except *:
    """The default tuning record with `overrides` (None, or a mapping of some lstm_tuning field
    names to values) applied; ValueError names an unknown field or a value out of range."""
    if overrides is None:
        return lstm_default_tuning()     # (no dict: a per-call cost at small sizes)
    fields = default_tuning()
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
                        const lstm_tuning* tuning, lstm_report* report,
                        const lstm_options* options):
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
        status = lstm_forward_ex2(d, px, xs, pw, ld_w, prw, ld_rw, pb, b_stride, ph0, hs, pc0,
                                  cs, pm, ms, pout, os, plh, lhs, plc, lcs, pcache, pws, tuning,
                                  report, pcancel, options)
    return status


cdef inline Py_ssize_t _ld(cnp.ndarray a):
    """The leading dimension of a validated array with unit row stride (0 for None)."""
    return 0 if a is None else a.strides[1] // a.itemsize


cdef lstm_options _options_record(object lengths, tuple projection=None,
                                  object gate_blocks=None, object steps_ready=None,
                                  object steps_done=None) except *:
    """The options of a pass: lengths None, or a validated 1-D np.intp array [mb]; projection
    None, or validated arrays (W_proj [h, P], peepholes [h, 3] or None, and for the backward
    pass their gradients) of the pass's dtype with unit row stride; gate_blocks None (the
    seed's order) or four ints (lstm_options.gate_blocks); steps_ready, steps_done None or
    one-element np.intp arrays (lstm_options.input_steps_ready / output_steps_done)."""
    cdef lstm_options o = lstm_default_options()
    o.input_steps_ready = _step_counter(steps_ready, "steps_ready")
    o.output_steps_done = _step_counter(steps_done, "steps_done")
    cdef int k
    if gate_blocks is not None:
        for k in range(4):
            o.gate_blocks[k] = gate_blocks[k]
    cdef cnp.ndarray wp, peep, gwp = None, gpeep = None
    if lengths is not None:
        o.lengths = <const Py_ssize_t*>cnp.PyArray_DATA(<cnp.ndarray>lengths)
        o.lengths_stride = (<cnp.ndarray>lengths).strides[0] // sizeof(Py_ssize_t)
    if projection is not None:
        wp, peep = projection[0], projection[1]
        if len(projection) > 2:
            gwp, gpeep = projection[2], projection[3]
        o.projection = wp.shape[1]
        o.projection_weights, o.ld_projection_weights = _data(wp), _ld(wp)
        o.peephole_weights, o.ld_peephole_weights = _data(peep), _ld(peep)
        o.grad_projection_weights, o.ld_grad_projection_weights = _data(gwp), _ld(gwp)
        o.grad_peephole_weights, o.ld_grad_peephole_weights = _data(gpeep), _ld(gpeep)
    return o


cdef Py_ssize_t* _step_counter(object counter, str name) except? NULL:
    """The address of a wavefront's step counter: None, or a writeable aligned one-element
    np.intp array (the passes read and write it atomically)."""
    if counter is None:
        return NULL
    if (type(counter) is not np.ndarray or counter.dtype != np.intp or counter.shape != (1,)
            or not counter.flags.writeable or not counter.flags.aligned):
        raise TypeError(f"{name}: expected a writeable one-element np.intp array; got {counter!r}")
    return <Py_ssize_t*>cnp.PyArray_DATA(<cnp.ndarray>counter)


def forward(x, W, RW, b, h0, c0, mask, out, last_h, last_c, cache, workspace,
            bint peepholes, bint forwards, int activation, int gate_activation, cancel=None,
            tuning=None, report=None, lengths=None, projection=None, gate_blocks=None,
            steps_ready=None, steps_done=None):
    """Run lstm_forward on validated, aligned arrays of one dtype (float32 or float64).

    x [mb, n_in, T], W [n_in, 4h] and RW [h, 4h(+3)] with unit row stride, b [4h]; h0, c0, mask,
    last_h, last_c, cache may be None; out [mb, h, T] is written. cancel: None or a one-element
    int32 array polled each step (nonzero: stop, raising KeyboardInterrupt). tuning: None (the
    defaults) or a dict of lstm_tuning fields to change (the workspace sized with the same);
    report: None or a dict that receives the pass's lstm_report fields. lengths: None or a 1-D
    np.intp array [mb] of steps per example (lstm_options.lengths). projection: None, or
    (W_proj [h, P], peepholes [h, 3] or None) for LSTMP (RW then [P, 4h]). gate_blocks: None or
    four ints, the caller's block of each of the kernels' gates in W, RW and b
    (lstm_options.gate_blocks). steps_ready, steps_done: None, or one-element np.intp arrays,
    lstm_options.input_steps_ready and output_steps_done (a wavefront of stacked layers: this
    pass waits for the steps of x that another pass, on another thread, counts in steps_ready;
    it counts its own output's steps in steps_done). Raises RuntimeError on any other kernel
    error code (the Python layer validates first, so that signals a bug).
    """
    cdef lstm_dims d = _dims(x.shape[0], x.shape[1], W.shape[1] // 4, x.shape[2], peepholes,
                             forwards, activation, gate_activation)
    cdef lstm_tuning t = _tuning_record(tuning)
    cdef lstm_options o = _options_record(lengths, projection, gate_blocks, steps_ready,
                                          steps_done)
    cdef lstm_report r
    cdef int status
    if x.dtype == np.float32:
        status = _forward_typed[float](<float*>NULL, &d, x, W, RW, b, h0, c0, mask, out, last_h,
                                       last_c, cache, workspace, cancel, &t, &r, &o)
    else:
        status = _forward_typed[double](<double*>NULL, &d, x, W, RW, b, h0, c0, mask, out, last_h,
                                        last_c, cache, workspace, cancel, &t, &r, &o)
    if status == LSTM_OK or status == LSTM_ERR_CANCELLED:
        _fill_report(report, &r)
    if status == LSTM_ERR_ABANDONED:
        _strand((x, W, RW, b, h0, c0, mask, out, last_h, last_c, cache, workspace, cancel,
                 lengths, steps_ready, steps_done) + (projection or ()))
        raise PassAbandoned(f"lstm_forward interrupted; {_ABANDONED_MESSAGE}")
    if status == LSTM_ERR_CANCELLED:
        raise PassStopped("lstm_forward interrupted")
    if status == LSTM_ERR_NO_MEMORY:
        raise MemoryError(f"lstm_forward: {ERROR_MESSAGES[status]}")
    if status != LSTM_OK:
        raise RuntimeError(f"lstm_forward failed: {ERROR_MESSAGES.get(status, status)}")


cdef int _backward_typed(floating* tag, lstm_dims* d, cnp.ndarray W, cnp.ndarray RW,
                         cnp.ndarray cache, cnp.ndarray eps, Py_ssize_t tbptt,
                         cnp.ndarray gW, cnp.ndarray gRW, cnp.ndarray gb, cnp.ndarray gx,
                         cnp.ndarray gh0, cnp.ndarray gc0, cnp.ndarray workspace,
                         cnp.ndarray cancel, cnp.ndarray glc, const lstm_tuning* tuning,
                         lstm_report* report, const lstm_options* options):
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
        status = lstm_backward_ex2(d, pw, ld_w, prw, ld_rw, pcache, peps, es, tbptt, pgw, ld_gw,
                                   pgrw, ld_grw, pgb, gb_stride, pgx, gxs, pgh, ghs, pgc, gcs,
                                   pws, tuning, report, pcancel, pglc, glcs, options)
    return status


def backward(W, RW, cache, eps, Py_ssize_t tbptt_length, gW, gRW, gb, gx, gh0, gc0, workspace,
             Py_ssize_t minibatch, Py_ssize_t time_steps,
             bint peepholes, bint forwards, int activation, int gate_activation, cancel=None,
             grad_last_c=None, tuning=None, report=None, lengths=None, projection=None,
             gate_blocks=None):
    """Run lstm_backward on validated arrays (see `forward`, also for tuning, report, lengths
    and gate_blocks: the gradients' blocks then in the same order as W's); gradients are
    overwritten. grad_last_c: None or dL/d(last cell state) [mb, h]. projection: None, or
    (W_proj, peepholes, their gradients' arrays) as in `forward`."""
    cdef lstm_dims d = _dims(minibatch, W.shape[0], W.shape[1] // 4, time_steps, peepholes,
                             forwards, activation, gate_activation)
    cdef lstm_tuning t = _tuning_record(tuning)
    cdef lstm_options o = _options_record(lengths, projection, gate_blocks)
    cdef lstm_report r
    cdef int status
    if W.dtype == np.float32:
        status = _backward_typed[float](<float*>NULL, &d, W, RW, cache, eps, tbptt_length, gW,
                                        gRW, gb, gx, gh0, gc0, workspace, cancel, grad_last_c,
                                        &t, &r, &o)
    else:
        status = _backward_typed[double](<double*>NULL, &d, W, RW, cache, eps, tbptt_length, gW,
                                         gRW, gb, gx, gh0, gc0, workspace, cancel, grad_last_c,
                                         &t, &r, &o)
    if status == LSTM_OK or status == LSTM_ERR_CANCELLED:
        _fill_report(report, &r)
    if status == LSTM_ERR_ABANDONED:
        _strand((W, RW, cache, eps, gW, gRW, gb, gx, gh0, gc0, workspace, cancel,
                 grad_last_c, lengths) + (projection or ()))
        raise PassAbandoned(f"lstm_backward interrupted; {_ABANDONED_MESSAGE}")
    if status == LSTM_ERR_CANCELLED:
        raise PassStopped("lstm_backward interrupted")
    if status == LSTM_ERR_NO_MEMORY:
        raise MemoryError(f"lstm_backward: {ERROR_MESSAGES[status]}")
    if status != LSTM_OK:
        raise RuntimeError(f"lstm_backward failed: {ERROR_MESSAGES.get(status, status)}")


def set_num_threads(int threads):
    """Threads each pass's time loop may use (1 to LF_TEAM_MAX = 8); returns the previous value.

    Each time step's recurrent product and element-wise code are split across the threads by
    hidden units. A pass uses fewer threads when its steps are too small to gain (under 24 units
    or about 65k multiply-adds per thread and step), when the minibatch is above 256 (OpenBLAS,
    threaded by its own settings, then does the per-step products), and runs alone when another
    pass holds the team. A pass whose shape may use the team (at any setting) runs OpenBLAS on
    one thread and splits its GEMMs outside the time loop in parts fixed by the shape, so that
    its results are the same bits at every setting and whatever else runs; other passes' GEMMs
    use OpenBLAS's threads (threadpoolctl).
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
    """lstmfast._team.publication_under_forced_schedule (for tests)."""
    from lstmfast._team import publication_under_forced_schedule
    return publication_under_forced_schedule()


def get_num_threads():
    """The thread count set by set_num_threads (at import: LSTMFAST_NUM_THREADS, else
    OMP_NUM_THREADS, else the usable CPUs, at most 8)."""
    return _team_threads


# at import: LSTMFAST_NUM_THREADS, else OMP_NUM_THREADS, else the usable CPUs
set_num_threads(_default_threads(LF_TEAM_MAX))

# the streaming step (lstmfast._stream: it reads ERROR_MESSAGES above, so it is imported last)
from lstmfast._stream import StreamStep, step  # no-cython-lint (public here)
