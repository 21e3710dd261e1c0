# The forward pass (pyx/_forward.pyx), called by lstmfast.kernels' C API.
from cython cimport floating

from lstmfast.kernels cimport lstm_dims, lstm_strides, lstm_tuning, lstm_report, lstm_options

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
                     const int* cancel, const lstm_options* options) noexcept nogil
