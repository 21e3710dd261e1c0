# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""lstm_downstream: a small third-party extension that drives lstmfast's C API.

This file is the complete example of docs/c-api.md, and tests/core/test_c_api.py compiles it at test
time against the *installed* lstmfast: only lstmfast.get_include() is needed to find the .pxd files.

Every buffer is owned by this module (NumPy arrays allocated here), every cache and workspace is
sized by lstmfast's sizing functions, and every kernel call runs inside `with nogil:`.
The C API does not know the extents of the buffers it is given, so the shapes are checked here,
before any pointer is taken.
"""
from cython cimport floating

import numpy as np

from lstmfast.kernels cimport (
    lstm_dims, lstm_strides,
    lstm_check_dims, lstm_cache_size, lstm_forward_workspace_size, lstm_backward_workspace_size,
    lstm_forward, lstm_backward, lstm_step,
    lstm_tuning, lstm_report, lstm_default_tuning, lstm_forward_workspace_size_ex,
    lstm_backward_workspace_size_ex, lstm_forward_ex, lstm_backward_ex,
    lstm_options, lstm_default_options, lstm_forward_workspace_size_ex2, lstm_forward_ex2,
    LSTM_OK, LSTM_ERR_ARGUMENT, LSTM_ERR_ACTIVATION, LSTM_ERR_TOO_LARGE, LSTM_ERR_NO_MEMORY,
    ACT_TANH, ACT_SIGMOID, ACT_HARDSIGMOID, ACT_COUNT)


cdef extern from "Python.h":
    # 1 if the calling thread holds the GIL; used to show that the kernels ran without it.
    int PyGILState_Check() nogil


ERROR_CODES = {"LSTM_OK": LSTM_OK, "LSTM_ERR_ARGUMENT": LSTM_ERR_ARGUMENT,
               "LSTM_ERR_ACTIVATION": LSTM_ERR_ACTIVATION, "LSTM_ERR_TOO_LARGE": LSTM_ERR_TOO_LARGE,
               "LSTM_ERR_NO_MEMORY": LSTM_ERR_NO_MEMORY}
ACTIVATION_CODES = {"tanh": ACT_TANH, "sigmoid": ACT_SIGMOID, "hardsigmoid": ACT_HARDSIGMOID,
                    "count": ACT_COUNT}


class KernelError(RuntimeError):
    """A non-zero return code of an lstmfast function."""

    def __init__(self, where, code):
        super().__init__(f"{where} returned {code}")
        self.code = code


# ---------------------------------------------------------------------------------------------
# helpers: array geometry -> the C API's element strides and leading dimensions

cdef lstm_dims make_dims(Py_ssize_t minibatch, Py_ssize_t n_in, Py_ssize_t hidden,
                         Py_ssize_t time_steps, bint peepholes, bint forwards, int activation,
                         int gate_activation) noexcept nogil:
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


cdef lstm_strides strides3(Py_ssize_t* byte_strides, Py_ssize_t itemsize) noexcept nogil:
    """A [minibatch, feature, time] operand: x, output, epsilon, grad_input."""
    cdef lstm_strides s
    s.minibatch = byte_strides[0] // itemsize
    s.feature = byte_strides[1] // itemsize
    s.time = byte_strides[2] // itemsize
    return s


cdef lstm_strides strides2(Py_ssize_t* byte_strides, Py_ssize_t itemsize) noexcept nogil:
    """A [minibatch, feature] operand: h0, c0, last_h, last_c, grad_h0, grad_c0, a step's x."""
    cdef lstm_strides s
    s.minibatch = byte_strides[0] // itemsize
    s.feature = byte_strides[1] // itemsize
    s.time = 0
    return s


cdef const floating* optional_state(floating[:, :] a, lstm_strides* st) noexcept:
    """An optional [minibatch, feature] operand: NULL (zeros) when absent."""
    st.minibatch = st.feature = st.time = 0
    if a is None:
        return NULL
    st[0] = strides2(a.strides, sizeof(floating))
    return &a[0, 0]


cdef const floating* optional_mask(floating[:, :] a, lstm_strides* st) noexcept:
    """An optional [minibatch, time] mask: the second axis is *time*; NULL means no mask."""
    st.minibatch = st.feature = st.time = 0
    if a is None:
        return NULL
    st.minibatch = a.strides[0] // sizeof(floating)
    st.time = a.strides[1] // sizeof(floating)
    return &a[0, 0]


cdef Py_ssize_t leading_dimension(Py_ssize_t rows, Py_ssize_t* byte_strides,
                                  Py_ssize_t itemsize, str name) except -1:
    """Weights are column-major for BLAS: unit row stride, column stride = leading dimension."""
    if byte_strides[0] != itemsize or byte_strides[1] < rows * itemsize:
        raise ValueError(f"{name} must be column-major (np.asfortranarray, or a row slice of one)")
    return byte_strides[1] // itemsize


cdef int require(bint ok, str message) except -1:
    if not ok:
        raise ValueError(message)
    return 0


cdef int check_operands(lstm_dims* d, Py_ssize_t* w_shape, Py_ssize_t* rw_shape,
                        Py_ssize_t bias_length, object h0, object c0, object mask) except -1:
    """The kernels trust the sizes in `d`: make sure every buffer really has them."""
    cdef int status = lstm_check_dims(d)
    if status != LSTM_OK:
        raise KernelError("lstm_check_dims", status)
    cdef Py_ssize_t h = d.hidden, mb = d.minibatch
    require(w_shape[0] == d.n_in and w_shape[1] == 4 * h, "input_weights must be [n_in, 4h]")
    require(rw_shape[1] == (4 * h + 3 if d.peepholes else 4 * h),
            "recurrent_weights must be [h, 4h+3] with peepholes, [h, 4h] without")
    require(bias_length == 4 * h, "bias must have 4h elements")
    for name, state in (("h0", h0), ("c0", c0)):
        require(state is None or state.shape[:2] == (mb, h), f"{name} must be [minibatch, h]")
    require(mask is None or mask.shape[:2] == (mb, d.time_steps), "mask must be [minibatch, T]")
    return 0


# ---------------------------------------------------------------------------------------------
# the example's API

def sizes(Py_ssize_t minibatch, Py_ssize_t n_in, Py_ssize_t hidden, Py_ssize_t time_steps):
    """What the sizing functions say (in elements), and lstm_check_dims' verdict."""
    cdef lstm_dims d = make_dims(minibatch, n_in, hidden, time_steps, 0, 1, ACT_TANH, ACT_SIGMOID)
    return {"cache": lstm_cache_size(&d),
            "forward_workspace": lstm_forward_workspace_size(&d, 0),
            "forward_workspace_for_backprop": lstm_forward_workspace_size(&d, 1),
            "backward_workspace": lstm_backward_workspace_size(&d),
            "check": lstm_check_dims(&d)}


def forward(floating[:, :, :] x, floating[:, :] input_weights, floating[:, :] recurrent_weights,
            floating[:] bias, floating[:, :] h0=None, floating[:, :] c0=None,
            floating[:, :] mask=None, *, bint peepholes=False, bint forwards=True,
            int activation=ACT_TANH, int gate_activation=ACT_SIGMOID):
    """Inference: x [minibatch, n_in, T] -> (output [minibatch, h, T], last_h, last_c), with a
    caller-provided workspace of lstm_forward_workspace_size(dims, 0) elements and no cache."""
    dtype = np.float32 if floating is float else np.float64
    cdef Py_ssize_t item = sizeof(floating)
    cdef lstm_dims d = make_dims(x.shape[0], x.shape[1], recurrent_weights.shape[0], x.shape[2],
                                 peepholes, forwards, activation, gate_activation)
    check_operands(&d, input_weights.shape, recurrent_weights.shape, bias.shape[0], h0, c0, mask)
    cdef Py_ssize_t ld_w = leading_dimension(d.n_in, input_weights.strides, item, "input_weights")
    cdef Py_ssize_t ld_rw = leading_dimension(d.hidden, recurrent_weights.strides, item,
                                              "recurrent_weights")

    # caller-owned buffers; outputs may have any strides (here: C order)
    cdef floating[:, :, ::1] output = np.empty((d.minibatch, d.hidden, d.time_steps), dtype)
    cdef floating[:, ::1] last_h = np.empty((d.minibatch, d.hidden), dtype)
    cdef floating[:, ::1] last_c = np.empty((d.minibatch, d.hidden), dtype)
    cdef floating[::1] workspace = np.empty(lstm_forward_workspace_size(&d, 0), dtype)

    cdef lstm_strides s_h0, s_c0, s_mask
    cdef const floating* p_h0 = optional_state(h0, &s_h0)
    cdef const floating* p_c0 = optional_state(c0, &s_c0)
    cdef const floating* p_mask = optional_mask(mask, &s_mask)
    cdef int status
    with nogil:
        status = lstm_forward(&d, &x[0, 0, 0], strides3(x.strides, item),
                              &input_weights[0, 0], ld_w, &recurrent_weights[0, 0], ld_rw,
                              &bias[0], bias.strides[0] // item,
                              p_h0, s_h0, p_c0, s_c0, p_mask, s_mask,
                              &output[0, 0, 0], strides3(output.strides, item),
                              &last_h[0, 0], strides2(last_h.strides, item),
                              &last_c[0, 0], strides2(last_c.strides, item),
                              NULL, &workspace[0])          # no cache: inference
    if status != LSTM_OK:
        raise KernelError("lstm_forward", status)
    return np.asarray(output), np.asarray(last_h), np.asarray(last_c)


def forward_lengths(floating[:, :, :] x, floating[:, :] input_weights,
                    floating[:, :] recurrent_weights, floating[:] bias, Py_ssize_t[::1] lengths,
                    *, bint forwards=True, tuple gate_blocks=None):
    """Inference with per-example lengths (lstm_options, lstm_forward_ex2): example m's steps
    are x[m, :, :lengths[m]]; outputs after them are zero and last_h / last_c are its state
    after its last valid step. lengths None: every example has T steps. gate_blocks: None, or
    the caller's block of each of the kernels' gates (lstm_options.gate_blocks)."""
    dtype = np.float32 if floating is float else np.float64
    cdef Py_ssize_t item = sizeof(floating), m
    cdef lstm_dims d = make_dims(x.shape[0], x.shape[1], recurrent_weights.shape[0], x.shape[2],
                                 0, forwards, ACT_TANH, ACT_SIGMOID)
    check_operands(&d, input_weights.shape, recurrent_weights.shape, bias.shape[0], None, None,
                   None)
    cdef Py_ssize_t ld_w = leading_dimension(d.n_in, input_weights.strides, item, "input_weights")
    cdef Py_ssize_t ld_rw = leading_dimension(d.hidden, recurrent_weights.strides, item,
                                              "recurrent_weights")
    cdef lstm_options options = lstm_default_options()     # then set the fields used
    cdef int k
    if lengths is not None:
        require(lengths.shape[0] == d.minibatch, "lengths must be [minibatch]")
        for m in range(d.minibatch):
            require(0 <= lengths[m] <= d.time_steps, "every length must be in 0..T")
        options.lengths = &lengths[0]
        options.lengths_stride = 1
    if gate_blocks is not None:
        require(len(gate_blocks) == 4, "gate_blocks must have 4 entries")
        for k in range(4):
            options.gate_blocks[k] = gate_blocks[k]
    cdef floating[:, :, ::1] output = np.empty((d.minibatch, d.hidden, d.time_steps), dtype)
    cdef floating[:, ::1] last_h = np.empty((d.minibatch, d.hidden), dtype)
    cdef floating[:, ::1] last_c = np.empty((d.minibatch, d.hidden), dtype)
    cdef floating[::1] workspace = np.empty(
        lstm_forward_workspace_size_ex2(&d, 0, NULL, &options), dtype)
    cdef lstm_strides none
    none.minibatch = none.feature = none.time = 0
    cdef int status
    with nogil:
        status = lstm_forward_ex2(&d, &x[0, 0, 0], strides3(x.strides, item),
                                  &input_weights[0, 0], ld_w, &recurrent_weights[0, 0], ld_rw,
                                  &bias[0], bias.strides[0] // item, NULL, none, NULL, none,
                                  NULL, none, &output[0, 0, 0], strides3(output.strides, item),
                                  &last_h[0, 0], strides2(last_h.strides, item),
                                  &last_c[0, 0], strides2(last_c.strides, item),
                                  NULL, &workspace[0], NULL, NULL, NULL, &options)
    if status != LSTM_OK:
        raise KernelError("lstm_forward_ex2", status)
    return np.asarray(output), np.asarray(last_h), np.asarray(last_c)


def train_step(floating[:, :, :] x, floating[:, :] input_weights,
               floating[:, :] recurrent_weights, floating[:] bias, floating[:, :, :] epsilon,
               floating[:, :] h0=None, floating[:, :] c0=None, floating[:, :] mask=None, *,
               bint peepholes=False, bint forwards=True, int activation=ACT_TANH,
               int gate_activation=ACT_SIGMOID, Py_ssize_t tbptt_length=0, Py_ssize_t guard=0,
               dict tuning=None):
    """Forward pass with a cache, then the backward pass, in one `with nogil:` block.

    tuning: None (lstm_forward / lstm_backward, the default tuning) or a dict of lstm_tuning
    fields to change from lstm_default_tuning() (lstm_forward_ex / lstm_backward_ex, the work
    spaces sized under the same record; the result then also holds both passes' reports).

    epsilon is dL/d(output), [minibatch, h, T]. Returns a dict: output, last_h, last_c, the
    gradients input_weights, recurrent_weights, bias, input (dL/dx), h0, c0; `gil_held`
    (PyGILState_Check() inside the nogil block) and `guard_intact`: `guard` sentinel elements
    placed after the cache and the backward workspace were left alone by the kernels.
    """
    dtype = np.float32 if floating is float else np.float64
    cdef Py_ssize_t item = sizeof(floating)
    cdef lstm_dims d = make_dims(x.shape[0], x.shape[1], recurrent_weights.shape[0], x.shape[2],
                                 peepholes, forwards, activation, gate_activation)
    check_operands(&d, input_weights.shape, recurrent_weights.shape, bias.shape[0], h0, c0, mask)
    require(epsilon.shape[0] == d.minibatch and epsilon.shape[1] == d.hidden
            and epsilon.shape[2] == d.time_steps, "epsilon must be [minibatch, h, T]")
    cdef Py_ssize_t ld_w = leading_dimension(d.n_in, input_weights.strides, item, "input_weights")
    cdef Py_ssize_t ld_rw = leading_dimension(d.hidden, recurrent_weights.strides, item,
                                              "recurrent_weights")
    cdef Py_ssize_t n_in = d.n_in, h = d.hidden, mb = d.minibatch, T = d.time_steps

    # the cache lives from the forward pass to the backward pass; a forward pass that fills a
    # cache needs only a small workspace of its own (lstm_forward_workspace_size(&d, 1) elements;
    # NULL where that is 0)
    cdef lstm_tuning tuned = lstm_default_tuning()
    cdef bint use_tuning = tuning is not None
    cdef lstm_report forward_report, backward_report
    if use_tuning:
        fields = <dict>tuned
        fields.update(tuning)
        tuned = fields
    cdef Py_ssize_t n_cache = lstm_cache_size(&d)
    cdef Py_ssize_t n_bwd = lstm_backward_workspace_size_ex(&d, &tuned)
    cdef Py_ssize_t n_fwd = lstm_forward_workspace_size_ex(&d, 1, &tuned)
    sentinel = np.full(guard, -7.25, dtype)
    cache_array = np.concatenate([np.empty(n_cache, dtype), sentinel])
    bwd_array = np.concatenate([np.empty(n_bwd, dtype), sentinel])
    fwd_array = np.concatenate([np.empty(n_fwd, dtype), sentinel])
    cdef floating[::1] cache = cache_array
    cdef floating[::1] bwd_workspace = bwd_array
    cdef floating* fwd_workspace = NULL
    cdef floating[::1] fwd_view
    if n_fwd > 0:
        fwd_view = fwd_array
        fwd_workspace = &fwd_view[0]

    cdef floating[:, :, ::1] output = np.empty((mb, h, T), dtype)
    cdef floating[:, ::1] last_h = np.empty((mb, h), dtype)
    cdef floating[:, ::1] last_c = np.empty((mb, h), dtype)
    # gradients: weights column-major (leading dimension = rows), the rest in C order
    cdef floating[::1, :] g_w = np.empty((n_in, 4 * h), dtype, order="F")
    cdef floating[::1, :] g_rw = np.empty((h, recurrent_weights.shape[1]), dtype, order="F")
    cdef floating[::1] g_b = np.empty(4 * h, dtype)
    cdef floating[:, :, ::1] g_x = np.empty((mb, n_in, T), dtype)
    cdef floating[:, ::1] g_h0 = np.empty((mb, h), dtype)
    cdef floating[:, ::1] g_c0 = np.empty((mb, h), dtype)

    cdef lstm_strides s_h0, s_c0, s_mask
    cdef const floating* p_h0 = optional_state(h0, &s_h0)
    cdef const floating* p_c0 = optional_state(c0, &s_c0)
    cdef const floating* p_mask = optional_mask(mask, &s_mask)
    cdef int status
    cdef int gil_held = -1
    with nogil:
        gil_held = PyGILState_Check()
        if use_tuning:
            status = lstm_forward_ex(&d, &x[0, 0, 0], strides3(x.strides, item),
                                     &input_weights[0, 0], ld_w, &recurrent_weights[0, 0], ld_rw,
                                     &bias[0], bias.strides[0] // item,
                                     p_h0, s_h0, p_c0, s_c0, p_mask, s_mask,
                                     &output[0, 0, 0], strides3(output.strides, item),
                                     &last_h[0, 0], strides2(last_h.strides, item),
                                     &last_c[0, 0], strides2(last_c.strides, item),
                                     &cache[0], fwd_workspace, &tuned, &forward_report, NULL)
        else:
            status = lstm_forward(&d, &x[0, 0, 0], strides3(x.strides, item),
                                  &input_weights[0, 0], ld_w, &recurrent_weights[0, 0], ld_rw,
                                  &bias[0], bias.strides[0] // item,
                                  p_h0, s_h0, p_c0, s_c0, p_mask, s_mask,
                                  &output[0, 0, 0], strides3(output.strides, item),
                                  &last_h[0, 0], strides2(last_h.strides, item),
                                  &last_c[0, 0], strides2(last_c.strides, item),
                                  &cache[0], fwd_workspace)
        if status == LSTM_OK and use_tuning:
            status = lstm_backward_ex(&d, &input_weights[0, 0], ld_w, &recurrent_weights[0, 0],
                                      ld_rw, &cache[0], &epsilon[0, 0, 0],
                                      strides3(epsilon.strides, item), tbptt_length,
                                      &g_w[0, 0], n_in, &g_rw[0, 0], h, &g_b[0], 1,
                                      &g_x[0, 0, 0], strides3(g_x.strides, item),
                                      &g_h0[0, 0], strides2(g_h0.strides, item),
                                      &g_c0[0, 0], strides2(g_c0.strides, item),
                                      &bwd_workspace[0], &tuned, &backward_report, NULL,
                                      NULL, s_h0)
        elif status == LSTM_OK:
            # the same dims and weights as the forward pass; the cache is only read
            status = lstm_backward(&d, &input_weights[0, 0], ld_w, &recurrent_weights[0, 0], ld_rw,
                                   &cache[0], &epsilon[0, 0, 0], strides3(epsilon.strides, item),
                                   tbptt_length,
                                   &g_w[0, 0], n_in, &g_rw[0, 0], h, &g_b[0], 1,
                                   &g_x[0, 0, 0], strides3(g_x.strides, item),
                                   &g_h0[0, 0], strides2(g_h0.strides, item),
                                   &g_c0[0, 0], strides2(g_c0.strides, item),
                                   &bwd_workspace[0])
    if status != LSTM_OK:
        raise KernelError("lstm_forward/lstm_backward", status)
    intact = all(np.array_equal(a[a.shape[0] - guard:], sentinel)
                 for a in (cache_array, bwd_array, fwd_array))
    result = {"output": np.asarray(output), "last_h": np.asarray(last_h),
              "last_c": np.asarray(last_c), "input_weights": np.asarray(g_w),
              "recurrent_weights": np.asarray(g_rw), "bias": np.asarray(g_b),
              "input": np.asarray(g_x), "h0": np.asarray(g_h0), "c0": np.asarray(g_c0),
              "gil_held": gil_held, "guard_intact": intact}
    if use_tuning:
        result["forward_report"] = forward_report
        result["backward_report"] = backward_report
    return result


def stream(floating[:, :, :] xs, floating[:, :] input_weights, floating[:, :] recurrent_weights,
           floating[:] bias, floating[:, :] h, floating[:, :] c, *, bint peepholes=False,
           int activation=ACT_TANH, int gate_activation=ACT_SIGMOID):
    """Streaming inference: one lstm_step per xs[i] ([minibatch, n_in]), updating the state h, c
    ([minibatch, h]) in place (h_prev/c_prev alias h_out/c_out, which lstm_step allows). One
    workspace of lstm_forward_workspace_size(dims, 0) elements serves every step."""
    dtype = np.float32 if floating is float else np.float64
    cdef Py_ssize_t item = sizeof(floating)
    cdef Py_ssize_t steps = xs.shape[0], i
    cdef lstm_dims d = make_dims(xs.shape[1], xs.shape[2], recurrent_weights.shape[0], 1,
                                 peepholes, 1, activation, gate_activation)
    check_operands(&d, input_weights.shape, recurrent_weights.shape, bias.shape[0], h, c, None)
    cdef Py_ssize_t ld_w = leading_dimension(d.n_in, input_weights.strides, item, "input_weights")
    cdef Py_ssize_t ld_rw = leading_dimension(d.hidden, recurrent_weights.strides, item,
                                              "recurrent_weights")
    cdef floating[::1] workspace = np.empty(lstm_forward_workspace_size(&d, 0), dtype)
    cdef lstm_strides s_x = strides2(&xs.strides[1], item)     # each xs[i] is [minibatch, n_in]
    cdef lstm_strides s_h = strides2(h.strides, item)
    cdef lstm_strides s_c = strides2(c.strides, item)
    cdef int status = LSTM_OK
    if steps == 0:
        return
    with nogil:
        for i in range(steps):
            status = lstm_step(&d, &xs[i, 0, 0], s_x,
                               &input_weights[0, 0], ld_w, &recurrent_weights[0, 0], ld_rw,
                               &bias[0], bias.strides[0] // item,
                               &h[0, 0], s_h, &c[0, 0], s_c,      # previous state ...
                               &h[0, 0], s_h, &c[0, 0], s_c,      # ... overwritten in place
                               &workspace[0])
            if status != LSTM_OK:
                break
    if status != LSTM_OK:
        raise KernelError("lstm_step", status)


def error_codes():
    """Bad calls come back as return codes, not crashes: {case: code}. All float64, explicit
    specialisations (`lstm_forward[double]`), since NULL alone does not tell the fused type."""
    cdef double buf[64]      # stands in for every input operand (all sizes here are tiny)
    cdef double out[64]      # output / gradient operand
    cdef Py_ssize_t k
    for k in range(64):
        buf[k] = 0.0
        out[k] = 0.0
    cdef lstm_strides s
    s.minibatch = s.feature = s.time = 0
    # a valid problem: minibatch 1, n_in 2, hidden 2, T 1 (weights [2, 8], leading dimension 2)
    cdef lstm_dims good = make_dims(1, 2, 2, 1, 0, 1, ACT_TANH, ACT_SIGMOID)
    cdef lstm_dims d
    cdef int c_hidden0, c_step_hidden0, c_check_hidden0, c_check_null, c_activation, c_gate
    cdef int c_null_x, c_small_ld, c_step_T2, c_bwd_no_cache, c_check_large, c_ok
    cdef Py_ssize_t n_fwd_hidden0, n_bwd_hidden0, n_cache_hidden0
    with nogil:
        d = good
        d.hidden = 0
        c_hidden0 = lstm_forward[double](&d, buf, s, buf, 2, buf, 2, buf, 1, NULL, s, NULL, s,
                                         NULL, s, out, s, NULL, s, NULL, s, NULL, NULL)
        c_step_hidden0 = lstm_step[double](&d, buf, s, buf, 2, buf, 2, buf, 1, NULL, s, NULL, s,
                                           out, s, NULL, s, NULL)
        n_fwd_hidden0 = lstm_forward_workspace_size(&d, 0)
        n_bwd_hidden0 = lstm_backward_workspace_size(&d)
        n_cache_hidden0 = lstm_cache_size(&d)
        c_check_hidden0 = lstm_check_dims(&d)
        c_check_null = lstm_check_dims(NULL)

        d = good
        d.activation = 99
        c_activation = lstm_forward[double](&d, buf, s, buf, 2, buf, 2, buf, 1, NULL, s, NULL, s,
                                            NULL, s, out, s, NULL, s, NULL, s, NULL, NULL)
        d = good
        d.gate_activation = ACT_TANH
        c_gate = lstm_forward[double](&d, buf, s, buf, 2, buf, 2, buf, 1, NULL, s, NULL, s,
                                      NULL, s, out, s, NULL, s, NULL, s, NULL, NULL)
        d = good
        c_null_x = lstm_forward[double](&d, NULL, s, buf, 2, buf, 2, buf, 1, NULL, s, NULL, s,
                                        NULL, s, out, s, NULL, s, NULL, s, NULL, NULL)
        c_small_ld = lstm_forward[double](&d, buf, s, buf, 1, buf, 2, buf, 1, NULL, s, NULL, s,
                                          NULL, s, out, s, NULL, s, NULL, s, NULL, NULL)
        d.time_steps = 2
        c_step_T2 = lstm_step[double](&d, buf, s, buf, 2, buf, 2, buf, 1, NULL, s, NULL, s,
                                      out, s, NULL, s, NULL)
        d = good
        c_bwd_no_cache = lstm_backward[double](&d, buf, 2, buf, 2, NULL, buf, s, 0,
                                               out, 2, out, 2, out, 1, NULL, s, NULL, s, NULL, s,
                                               NULL)
        d = good
        d.minibatch = <Py_ssize_t>1 << 31
        d.time_steps = <Py_ssize_t>1 << 31
        c_check_large = lstm_check_dims(&d)
        c_ok = lstm_forward[double](&good, buf, s, buf, 2, buf, 2, buf, 1, NULL, s, NULL, s,
                                    NULL, s, out, s, NULL, s, NULL, s, NULL, NULL)
    return {"forward_hidden0": c_hidden0,
            "step_hidden0": c_step_hidden0,
            "forward_workspace_size_hidden0": n_fwd_hidden0,
            "backward_workspace_size_hidden0": n_bwd_hidden0,
            "cache_size_hidden0": n_cache_hidden0,
            "check_dims_hidden0": c_check_hidden0,
            "check_dims_null": c_check_null,
            "forward_unknown_activation": c_activation,
            "forward_tanh_gate_activation": c_gate,
            "forward_null_x": c_null_x,
            "forward_small_leading_dimension": c_small_ld,
            "step_two_time_steps": c_step_T2,
            "backward_null_cache": c_bwd_no_cache,
            "check_dims_too_large": c_check_large,
            "forward_ok": c_ok}
