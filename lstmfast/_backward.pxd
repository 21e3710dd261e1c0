# The backward pass (pyx/_backward.pyx), called by lstmfast.kernels' C API.
from cython cimport floating

from lstmfast.kernels cimport lstm_dims, lstm_strides, lstm_tuning, lstm_report, lstm_options

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
                      const lstm_options* options) noexcept nogil
