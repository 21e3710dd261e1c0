# The BLAS facade: the two level-3/level-1 routines the port needs (the seed's Nd4j.gemm and
# l1BLAS.axpy), typed once over float and double, called on raw pointers into column-major
# (Fortran-ordered) buffers through scipy.linalg.cython_blas.
#
# Sizes are Py_ssize_t at this level; callers check them against BLAS_INT_MAX once per pass
# (see kernels.pyx, `_fits_blas`) before any call, so the narrowing casts below cannot overflow.
from cython cimport floating
from scipy.linalg cimport cython_blas
from lstmfast._blas_int cimport blas_int, BLAS_INT_MAX


cdef inline void gemm(char transa, char transb, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                      floating alpha, const floating* a, Py_ssize_t lda,
                      const floating* b, Py_ssize_t ldb,
                      floating beta, floating* c, Py_ssize_t ldc) noexcept nogil:
    """C[m, n] = alpha * op(A) op(B) + beta * C, all column-major."""
    cdef blas_int m_ = <blas_int>m, n_ = <blas_int>n, k_ = <blas_int>k
    cdef blas_int lda_ = <blas_int>lda, ldb_ = <blas_int>ldb, ldc_ = <blas_int>ldc
    if m <= 0 or n <= 0:
        return
    # a single column or row is a matrix-vector product: ?gemv costs a fraction of ?gemm's call
    # overhead there (one streaming step at minibatch 1)
    if n == 1 and k > 0:
        if transa == c'N':
            gemv(c'N', m, k, alpha, a, lda, b, 1 if transb == c'N' else ldb, beta, c, 1)
        else:
            gemv(c'T', k, m, alpha, a, lda, b, 1 if transb == c'N' else ldb, beta, c, 1)
        return
    if m == 1 and k > 0:
        if transb == c'N':
            gemv(c'T', k, n, alpha, b, ldb, a, lda if transa == c'N' else 1, beta, c, ldc)
        else:
            gemv(c'N', n, k, alpha, b, ldb, a, lda if transa == c'N' else 1, beta, c, ldc)
        return
    if floating is float:
        cython_blas.sgemm(&transa, &transb, &m_, &n_, &k_, &alpha, <float*>a, &lda_,
                          <float*>b, &ldb_, &beta, c, &ldc_)
    else:
        cython_blas.dgemm(&transa, &transb, &m_, &n_, &k_, &alpha, <double*>a, &lda_,
                          <double*>b, &ldb_, &beta, c, &ldc_)


cdef inline void gemv(char trans, Py_ssize_t m, Py_ssize_t n, floating alpha, const floating* a,
                      Py_ssize_t lda, const floating* x, Py_ssize_t incx, floating beta,
                      floating* y, Py_ssize_t incy) noexcept nogil:
    """y = alpha * op(A) x + beta * y, A [m, n] column-major."""
    cdef blas_int m_ = <blas_int>m, n_ = <blas_int>n, lda_ = <blas_int>lda
    cdef blas_int incx_ = <blas_int>incx, incy_ = <blas_int>incy
    if floating is float:
        cython_blas.sgemv(&trans, &m_, &n_, &alpha, <float*>a, &lda_, <float*>x, &incx_, &beta, y,
                          &incy_)
    else:
        cython_blas.dgemv(&trans, &m_, &n_, &alpha, <double*>a, &lda_, <double*>x, &incx_, &beta,
                          y, &incy_)


cdef inline void axpy(Py_ssize_t n, floating alpha, const floating* x, Py_ssize_t incx,
                      floating* y, Py_ssize_t incy) noexcept nogil:
    """y += alpha * x."""
    cdef blas_int n_ = <blas_int>n, incx_ = <blas_int>incx, incy_ = <blas_int>incy
    if n <= 0:
        return
    if floating is float:
        cython_blas.saxpy(&n_, &alpha, <float*>x, &incx_, y, &incy_)
    else:
        cython_blas.daxpy(&n_, &alpha, <double*>x, &incx_, y, &incy_)


cdef inline bint fits_blas_int(Py_ssize_t value) noexcept nogil:
    return 0 <= value <= BLAS_INT_MAX
