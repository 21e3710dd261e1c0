# The seed's gate math, one time step's element-wise code (DL4J 0.9.1 LSTMHelpers'
# activateHelper / backpropGradientHelper), is C: pyx/lstmfast_cells.inc.h, one template per
# element type and instruction set, every activation and masked steps included; its blocks cite
# the LSTMHelpers.java lines they port. This file declares it for the passes (build-only: it
# needs pyx/lstmfast_cells.h on the include path); each pass picks the element type.

cdef extern from "lstmfast_cells.h" nogil:
    # The cells of one step on contiguous [mb, F] blocks (index m + k*mb for unit k): n values per
    # gate, the gate blocks (i, f, o, g) `stride` apart, offset to a thread's first unit; see
    # lf_forward_cells / lf_backward_cells in pyx/lstmfast_cells.inc.h.
    void lf_forward_cells_f32(Py_ssize_t n, Py_ssize_t stride, Py_ssize_t mb, int act, int gate,
                              float* z, float* a, float* mca, const float* peep,
                              const float* c_prev, float* h_cur, float* c_cur,
                              const float* mask_col)
    void lf_forward_cells_f64(Py_ssize_t n, Py_ssize_t stride, Py_ssize_t mb, int act, int gate,
                              double* z, double* a, double* mca, const double* peep,
                              const double* c_prev, double* h_cur, double* c_cur,
                              const double* mask_col)
    void lf_backward_cells_f32(Py_ssize_t n, Py_ssize_t stride, Py_ssize_t mb, int act, int gate,
                               const float* z, const float* a, const float* mca,
                               const float* c_prev, const float* c_cur, const float* mask_col,
                               int masked_step, const float* nabla_out, const float* a_next,
                               const float* delta_next, const float* cell_error_next,
                               const float* peep, float* delta, float* cell_error, float* sum_f,
                               float* sum_o, float* sum_g, float* scratch,
                               const float* cell_error_extra)
    void lf_backward_cells_f64(Py_ssize_t n, Py_ssize_t stride, Py_ssize_t mb, int act, int gate,
                               const double* z, const double* a, const double* mca,
                               const double* c_prev, const double* c_cur,
                               const double* mask_col, int masked_step,
                               const double* nabla_out, const double* a_next,
                               const double* delta_next, const double* cell_error_next,
                               const double* peep, double* delta, double* cell_error,
                               double* sum_f, double* sum_o, double* sum_g, double* scratch,
                               const double* cell_error_extra)
    # the C side's activation codes (checked against lstmfast.kernels' ACT_* at import)
    int LF_ACT_TANH, LF_ACT_SIGMOID, LF_ACT_HARDSIGMOID, LF_ACT_RATIONALTANH, LF_ACT_COUNT
    # choose every vectorised variant for the CPU (LSTMFAST_ISA may lower it); the level in use
    int lf_select_isa()
    int LF_ISA_BASELINE, LF_ISA_AVX2, LF_ISA_AVX512
    int lf_cpu_isa()
    const char* lf_isa_names[3]
