# Declarations of the vector math and the packed products (pyx/lstmfast_simd.h; build-only: it
# needs pyx/ on the include path). The activations themselves, every ACT_* code with its
# derivative, are C too: lf_activate_array / lf_derivative_array in pyx/lstmfast_cells.inc.h.

# Vectorised exp/tanh/sigmoid array functions (pyx/lstmfast_simd.h), the instruction set chosen
# at run time (lf_select_isa in lstmfast/_cells.pxd).
cdef extern from "lstmfast_simd.h" nogil:
    void lf_tanh_array_f64(const double* x, double* y, Py_ssize_t n)
    void lf_sigmoid_array_f64(const double* x, double* y, Py_ssize_t n)
    void lf_exp_array_f64(const double* x, double* y, Py_ssize_t n)
    void lf_tanh_array_f32(const float* x, float* y, Py_ssize_t n)
    void lf_sigmoid_array_f32(const float* x, float* y, Py_ssize_t n)
    void lf_exp_array_f32(const float* x, float* y, Py_ssize_t n)
    int lf_load_flag(const int* flag)
    # the recurrent GEMM on weights packed once per pass (vector instruction sets only)
    int lf_packed_gemm_available
    # below LF_SMALL_M rows of A the weights are packed as rows padded to 8 (lf_pack_rows_*)
    Py_ssize_t LF_SMALL_M
    # columns per panel of weights packed for LF_SMALL_M rows or more (lf_pack_b_*)
    Py_ssize_t LF_NR
    # rows of weights packed for fewer rows are padded to a multiple of LF_ROW_PAD
    Py_ssize_t LF_ROW_PAD
    void lf_pack_rows_f32(const float* B, Py_ssize_t sk, Py_ssize_t sn, Py_ssize_t K, Py_ssize_t N, float* Bp)
    void lf_pack_rows_f64(const double* B, Py_ssize_t sk, Py_ssize_t sn, Py_ssize_t K, Py_ssize_t N, double* Bp)
    void lf_pack_b_f32(const float* B, Py_ssize_t sk, Py_ssize_t sn, Py_ssize_t K, Py_ssize_t N, float* Bp)
    void lf_pack_b_f64(const double* B, Py_ssize_t sk, Py_ssize_t sn, Py_ssize_t K, Py_ssize_t N, double* Bp)
    # one contiguous row times a column-major B read in place (a single step of one example)
    void lf_dot_columns_f32(Py_ssize_t N, Py_ssize_t K, const float* a, const float* B,
                            Py_ssize_t ldb, float* c, const float* addend)
    void lf_dot_columns_f64(Py_ssize_t N, Py_ssize_t K, const double* a, const double* B,
                            Py_ssize_t ldb, double* c, const double* addend)
    void lf_gemm_packed_f32(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float* A, Py_ssize_t lda,
                            const float* Bp, float* C, Py_ssize_t ldc, const float* addend,
                            Py_ssize_t ld_addend, const float* bias, float* a_pack,
                            int a_packed)
    void lf_gemm_packed_f64(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double* A, Py_ssize_t lda,
                            const double* Bp, double* C, Py_ssize_t ldc, const double* addend,
                            Py_ssize_t ld_addend, const double* bias, double* a_pack,
                            int a_packed)
    # columns k0 .. k0 + count - 1 of A [M, K] into a_pack as lf_gemm_packed packs A
    void lf_pack_a_columns_f32(Py_ssize_t M, Py_ssize_t K, const float* A, Py_ssize_t lda,
                               Py_ssize_t k0, Py_ssize_t count, float* a_pack)
    void lf_pack_a_columns_f64(Py_ssize_t M, Py_ssize_t K, const double* A, Py_ssize_t lda,
                               Py_ssize_t k0, Py_ssize_t count, double* a_pack)
