# C-level API of lstmfast: the port of DL4J's LSTMHelpers (activateHelper, backpropGradientHelper)
# as `noexcept nogil` functions on raw pointers, for float and double (fused type `floating`).
#
# Downstream Cython code:   from lstmfast.kernels cimport lstm_dims, lstm_strides, lstm_forward, ...
# and builds with include_dirs=[lstmfast.get_include()]. See docs/c-api.md for layouts, ownership,
# thread safety and error codes.
from cython cimport floating

# Activation codes (lstm_dims.activation, lstm_dims.gate_activation), DL4J's definitions.
cdef enum:
    ACT_TANH = 0
    ACT_SIGMOID = 1
    ACT_HARDSIGMOID = 2       # min(1, max(0, 0.2 x + 0.5))
    ACT_SOFTSIGN = 3
    ACT_RELU = 4
    ACT_LEAKYRELU = 5         # alpha 0.01
    ACT_ELU = 6               # alpha 1
    ACT_SELU = 7
    ACT_SOFTPLUS = 8
    ACT_IDENTITY = 9
    ACT_HARDTANH = 10
    ACT_CUBE = 11
    ACT_RECTIFIEDTANH = 12    # max(0, tanh x)
    ACT_RATIONALTANH = 13     # 1.7159 t(2x/3), t(y) = sgn(y) (1 - 1/(1 + |y| + y^2 + 1.41645 y^4))
    ACT_COUNT = 14

# Return codes of every kernel (sizes functions return -1 instead).
cdef enum:
    LSTM_OK = 0
    LSTM_ERR_ARGUMENT = -1     # a size < 1, a NULL required pointer, a leading dimension too small
    LSTM_ERR_ACTIVATION = -2   # unknown activation code, or a gate activation not sigmoid/hardsigmoid
    LSTM_ERR_TOO_LARGE = -3    # a dimension or product does not fit the BLAS integer / address space
    LSTM_ERR_NO_MEMORY = -4    # workspace was NULL and allocating it failed
    LSTM_ERR_CANCELLED = -5    # stopped on request (only the Python entry asks for this)
    LSTM_ERR_ABANDONED = -6    # cancelled, and a team thread never left the pass (Python entry only)

# Problem sizes and options; `time_steps` is T (1 for lstm_step).
ctypedef struct lstm_dims:
    Py_ssize_t minibatch
    Py_ssize_t n_in
    Py_ssize_t hidden
    Py_ssize_t time_steps
    int peepholes           # 1: GravesLSTM (recurrent weights [h, 4h+3]); 0: LSTM ([h, 4h])
    int forwards            # 1: time 0..T-1; 0: T-1..0 (the seed's `forwards` flag)
    int activation          # ACT_* code of the layer activation (block input and cell output)
    int gate_activation     # ACT_SIGMOID or ACT_HARDSIGMOID

# Element strides (not bytes) of a strided operand in DL4J's logical layout:
# x/output/epsilon/grad_input [minibatch, feature, time]; h0/c0/last_h/last_c [minibatch, feature];
# mask [minibatch, time] (feature unused). Any strides are accepted, including 0 and negative.
ctypedef struct lstm_strides:
    Py_ssize_t minibatch
    Py_ssize_t feature
    Py_ssize_t time

# How a pass computes, not what: every tuning choice of the kernels, in one record. The plain
# entries (lstm_forward, lstm_backward, lstm_step and the size functions) use
# lstm_default_tuning(); the *_ex entries take a record (NULL: the defaults). A work space must be
# sized with the record the pass then runs with (only projection_chunk_elements changes the size).
ctypedef struct lstm_tuning:
    Py_ssize_t projection_chunk_elements    # elements per input-projection chunk (>= 1)
    Py_ssize_t input_product_max_bytes      # largest step input [mb, nIn] whose x W runs per step
    Py_ssize_t team_min_units               # units per thread below which a pass takes fewer threads
    Py_ssize_t team_min_step_work           # multiply-adds per thread and step, likewise
    Py_ssize_t unit_groups_per_thread       # groups of units per thread in a team's time loop (1-128)
    Py_ssize_t unit_group_min_work          # fewer groups where one would do less work per step
    int groups_all_to_first                 # 1: thread 0 owns every group (others take them over)
    int gradient_split_rows                 # 1: a team may split the gradient GEMMs in row groups
    int packed_gemm                         # 1: the packed AVX2 kernel where it applies; 0: BLAS
    int threads                             # threads of the time loops; 0: set_num_threads's value

# What a pass did (filled when the *_ex entries get a non-NULL report).
ctypedef struct lstm_report:
    int threads                 # threads of its time loop
    int h_in_output             # forward: each step's h written straight into the output
    int x_in_place              # forward: each step's x read where it is
    int epsilon_in_place        # backward: each step's epsilon read where it is
    int gradient_split          # backward: 0 one thread, 1 by columns, 2 in row groups
    Py_ssize_t groups_taken_over    # groups of units run by a thread other than their owner

cdef lstm_tuning lstm_default_tuning() noexcept nogil

# What a pass computes beyond the seed, for the *_ex2 entries (NULL: nothing beyond the seed).
# Start from lstm_default_options() and set the fields you use: a later version may add fields.
ctypedef struct lstm_options:
    # [minibatch] steps per example, 0 <= lengths[m * lengths_stride] <= T (NULL: all T): the
    # steps at times >= length are padding. Outputs there are zero, last_h / last_c are each
    # example's state after its last valid step (h0 / c0 for length 0), a backward direction
    # starts each example at time length-1, and no gradient reaches or leaves the padding
    # (PackedSequence / ONNX sequence_lens). Not with a mask, nor with truncated BPTT.
    const Py_ssize_t* lengths
    Py_ssize_t lengths_stride
    # LSTMP (nn.LSTM's proj_size): projection P >= 1 (0: none). Each step's h is then
    # r . projection_weights with r = o * act(c) [mb, h] and projection_weights [h, P]
    # column-major (leading dimension ld_projection_weights >= h): the h fed back, output and
    # last_h are [mb, P] (recurrent_weights [P, 4h], ld >= P; h0 [mb, P]); c stays [mb, h].
    # The pointers are of the pass's floating type. With dims.peepholes the peephole weights
    # are peephole_weights [h, 3] (columns wFF, wOO, wGG; ld >= h), not recurrent_weights'
    # columns. The backward pass writes dL/d(projection_weights) to grad_projection_weights
    # [h, P] and, with peepholes, dL/d(peephole_weights) to grad_peephole_weights [h, 3].
    # A projected pass runs its time loop on one thread, its products on BLAS.
    Py_ssize_t projection
    const void* projection_weights
    Py_ssize_t ld_projection_weights
    const void* peephole_weights
    Py_ssize_t ld_peephole_weights
    void* grad_projection_weights
    Py_ssize_t ld_grad_projection_weights
    void* grad_peephole_weights
    Py_ssize_t ld_grad_peephole_weights
    # The order of the four gate blocks in the caller's 4h columns of input_weights,
    # recurrent_weights[:, :4h] and bias, and of their gradients: the kernels' gate k (0 block
    # input, 1 forget gate, 2 output gate, 3 input gate: the seed's order) is the caller's
    # block gate_blocks[k], columns gate_blocks[k] * h .. + h - 1. A permutation of 0..3 (else
    # LSTM_ERR_ARGUMENT); {0, 1, 2, 3} by default. nn.LSTM's (i, f, g, o) is {2, 1, 3, 0}: its
    # parameters are then read where they are (the packings take the blocks in place) instead
    # of being copied into the seed's order first. Peephole columns are not reordered.
    int gate_blocks[4]
    # A wavefront of stacked layers: the next layer's forward pass runs beside this one's, on
    # another thread, reading each step of this pass's output as soon as it is complete
    # (forward passes only; the backward pass ignores both). output_steps_done (NULL: none):
    # after each step of a forward-processing pass without lengths, the count of the output's
    # times 0.. that are complete; T when the pass returns LSTM_OK, -1 when it returns an
    # error other than LSTM_ERR_CANCELLED (whoever cancels a pass cancels its reader too, or
    # runs the pass again). input_steps_ready (NULL: x is complete): another pass's output_steps_done, x's
    # times 0 .. *input_steps_ready - 1 complete. This pass reads a step of x only after the
    # count has passed it (a reverse pass or one with lengths waits for all T first), spinning
    # meanwhile; a negative count, or the pass's cancel flag, stops it with LSTM_ERR_CANCELLED.
    # Both are written with release and read with acquire order. The two passes must run on
    # different threads, or the writer first.
    const Py_ssize_t* input_steps_ready
    Py_ssize_t* output_steps_done

cdef lstm_options lstm_default_options() noexcept nogil

# Sizes in elements of the buffers the caller provides; -1 if `dims` is invalid or too large.
cdef Py_ssize_t lstm_cache_size(const lstm_dims* dims) noexcept nogil
cdef Py_ssize_t lstm_forward_workspace_size(const lstm_dims* dims, bint for_backprop) noexcept nogil
cdef Py_ssize_t lstm_backward_workspace_size(const lstm_dims* dims) noexcept nogil
cdef int lstm_check_dims(const lstm_dims* dims) noexcept nogil
# The same under a tuning record (NULL: the defaults).
cdef Py_ssize_t lstm_forward_workspace_size_ex(const lstm_dims* dims, bint for_backprop,
                                               const lstm_tuning* tuning) noexcept nogil
cdef Py_ssize_t lstm_backward_workspace_size_ex(const lstm_dims* dims,
                                                const lstm_tuning* tuning) noexcept nogil
# The same for the *_ex2 entries under `options` (NULL: none; only the fields that change the
# sizes are read, not the arrays they point to).
cdef Py_ssize_t lstm_cache_size_ex2(const lstm_dims* dims,
                                    const lstm_options* options) noexcept nogil
cdef Py_ssize_t lstm_forward_workspace_size_ex2(const lstm_dims* dims, bint for_backprop,
                                                const lstm_tuning* tuning,
                                                const lstm_options* options) noexcept nogil
cdef Py_ssize_t lstm_backward_workspace_size_ex2(const lstm_dims* dims,
                                                 const lstm_tuning* tuning,
                                                 const lstm_options* options) noexcept nogil

# Forward pass. Weights are column-major: input_weights [n_in, 4h] (leading dimension >= n_in),
# recurrent_weights [h, 4h(+3)] (ld >= h), bias [4h] with a stride. h0, c0, mask may be NULL
# (zeros / no mask); last_h, last_c may be NULL (not wanted). `cache` is NULL for inference, or
# lstm_cache_size(dims) elements that lstm_backward will read. `workspace` is NULL (allocated and
# freed inside) or lstm_forward_workspace_size(dims, cache != NULL) elements.
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
                      floating* cache, floating* workspace) noexcept nogil

# Backward pass over a cache filled by lstm_forward with the same dims and weights. The cache is
# only read. Gradients are overwritten (not accumulated): grad_input_weights [n_in, 4h],
# grad_recurrent_weights [h, 4h(+3)] (column-major, with leading dimensions), grad_bias [4h];
# grad_input [minibatch, n_in, T], grad_h0, grad_c0 [minibatch, h] may be NULL (not wanted).
# tbptt_length <= 0 means full BPTT; k > 0 back-propagates the last k steps in processing order.
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
                       floating* workspace) noexcept nogil

# One streaming step (dims.time_steps must be 1): x [minibatch, n_in]; h_prev/c_prev may be NULL
# (zeros) and may alias h_out/c_out. workspace: NULL or lstm_forward_workspace_size(dims, 0).
cdef int lstm_step(const lstm_dims* dims,
                   const floating* x, lstm_strides x_strides,
                   const floating* input_weights, Py_ssize_t ld_input_weights,
                   const floating* recurrent_weights, Py_ssize_t ld_recurrent_weights,
                   const floating* bias, Py_ssize_t bias_stride,
                   const floating* h_prev, lstm_strides h_prev_strides,
                   const floating* c_prev, lstm_strides c_prev_strides,
                   floating* h_out, lstm_strides h_out_strides,
                   floating* c_out, lstm_strides c_out_strides,
                   floating* workspace) noexcept nogil

# lstm_forward with a tuning record (NULL: the defaults; the work space sized under it), a report
# of what the pass did (NULL: none) and a cancel flag (NULL: none; polled once per time step, a
# nonzero value stops the pass with LSTM_ERR_CANCELLED and leaves the outputs undefined).
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
                         const int* cancel) noexcept nogil

# lstm_backward with tuning, report and cancel as lstm_forward_ex, and grad_last_c [minibatch, h]
# (NULL: none): dL/d(last cell state) of the forward pass, for a state handed on to a decoder.
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
                          const floating* grad_last_c,
                          lstm_strides grad_last_c_strides) noexcept nogil

# lstm_forward_ex / lstm_backward_ex with `options` (lstm_options; NULL: none) last. Work space
# and cache sized by the *_ex2 size functions under the same options; lstm_backward_ex2 reads a
# cache that lstm_forward_ex2 filled under the same options. With lengths, dL/d(last_h) belongs
# in epsilon at each example's last valid step (time length-1 forwards, time 0 backwards), and
# for a length 0 it is dL/dh0 itself; grad_last_c reaches each example's last valid step.
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
                          const int* cancel, const lstm_options* options) noexcept nogil

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
                           const lstm_options* options) noexcept nogil
