# The per-step matrix products of the time loops: the packed AVX2 kernel on weights packed once
# per pass (pyx/lstmfast_simd.h), or BLAS. Inline, for the passes only (build-only: it needs
# pyx/lstmfast_simd.h on the include path).
from cython cimport floating

from lstmfast._activations cimport (lf_packed_gemm_available, LF_SMALL_M, LF_NR, LF_ROW_PAD,
                                    lf_pack_rows_f32,
                                    lf_pack_rows_f64, lf_pack_b_f32, lf_pack_b_f64,
                                    lf_gemm_packed_f32, lf_gemm_packed_f64, lf_dot_columns_f32,
                                    lf_dot_columns_f64, lf_pack_a_columns_f32,
                                    lf_pack_a_columns_f64)
from lstmfast._blas cimport gemm
from lstmfast._layout cimport PACKED_GEMM_MAX_MINIBATCH, _packed_len, _copy_block, _gate_column
from lstmfast.kernels cimport lstm_tuning


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


cdef inline void _pack_a_columns(Py_ssize_t M, Py_ssize_t K, const floating* a, Py_ssize_t lda,
                                 Py_ssize_t k0, Py_ssize_t count,
                                 floating* a_pack) noexcept nogil:
    """Columns k0..k0+count-1 of A [M, K] into a_pack [_a_pack_len(M, K)] as _recurrent_product
    packs A (M >= LF_SMALL_M): the product then takes a_pack with a_packed set."""
    if floating is float:
        lf_pack_a_columns_f32(M, K, a, lda, k0, count, a_pack)
    else:
        lf_pack_a_columns_f64(M, K, a, lda, k0, count, a_pack)


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


cdef inline void _pack_gate_panels(const floating* b, Py_ssize_t sn, Py_ssize_t K, Py_ssize_t h,
                                   const int* gate_blocks, floating* packed) noexcept nogil:
    """lf_pack_b's panels (sk 1, N = 4h, LF_SMALL_M rows or more) of the caller's columns taken
    in the kernels' gate order: packed column j is b's column gate_blocks[j / h] * h + j % h
    (lstm_options.gate_blocks). The reordering rides on the packing, which reads every element
    anyway: a reordered copy first moved the weights once more (0.07 ms of a 1.9 ms pass)."""
    cdef Py_ssize_t N = 4 * h, n0, j, k, n
    cdef floating* panel
    cdef const floating* column
    n0 = 0
    while n0 < N:
        panel = packed + (n0 // LF_NR) * K * LF_NR
        for j in range(LF_NR):
            n = n0 + j
            if n < N:
                column = b + _gate_column(gate_blocks, h, n) * sn
                for k in range(K):
                    panel[k * LF_NR + j] = column[k]
            else:
                for k in range(K):
                    panel[k * LF_NR + j] = 0
        n0 += LF_NR


cdef inline void _pack_gate_rows(const floating* b, Py_ssize_t sk, Py_ssize_t N, Py_ssize_t h,
                                 const int* gate_blocks, floating* packed,
                                 Py_ssize_t rows) noexcept nogil:
    """_pack_weights of B [4h, N] (sn 1, for products with `rows`-row A) whose row k is the
    caller's row gate_blocks[k / h] * h + k % h (sk apart): the backward pass's RW^T with RW's
    columns in the caller's gate order (lstm_options.gate_blocks)."""
    cdef Py_ssize_t K = 4 * h, Np, n0, j, k, kk
    cdef int g
    cdef floating* panel
    cdef const floating* row
    if rows < LF_SMALL_M:
        # rows of N padded: each gate's rows are one run of the packed rows
        Np = ((N + LF_ROW_PAD - 1) // LF_ROW_PAD) * LF_ROW_PAD
        for g in range(4):
            _pack_weights(b + gate_blocks[g] * h * sk, sk, 1, h, N, packed + g * h * Np, rows)
        return
    n0 = 0
    while n0 < N:
        panel = packed + (n0 // LF_NR) * K * LF_NR
        for g in range(4):
            for kk in range(h):
                k = g * h + kk
                row = b + (gate_blocks[g] * h + kk) * sk + n0
                for j in range(LF_NR):
                    panel[k * LF_NR + j] = row[j] if n0 + j < N else 0
        n0 += LF_NR


cdef inline void _dot_columns(Py_ssize_t N, Py_ssize_t K, const floating* a, const floating* b,
                              Py_ssize_t ldb, floating* c, const floating* addend) noexcept nogil:
    """c[N] = addend + a[K] B[K, N] for one contiguous row a, column-major B read in place and
    contiguous c and addend (NULL: none); only while lf_packed_gemm_available (the vector
    kernel, lf_dot_columns in pyx/lstmfast_gemm.inc.h)."""
    if floating is float:
        lf_dot_columns_f32(N, K, a, b, ldb, c, addend)
    else:
        lf_dot_columns_f64(N, K, a, b, ldb, c, addend)
