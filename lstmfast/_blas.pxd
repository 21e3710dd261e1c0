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
    if floating is float:
        cython_blas.sgemm(&transa, &transb, &m_, &n_, &k_, &alpha, <float*>a, &lda_,
                          <float*>b, &ldb_, &beta, c, &ldc_)
    else:
        cython_blas.dgemm(&transa, &transb, &m_, &n_, &k_, &alpha, <double*>a, &lda_,
                          <double*>b, &ldb_, &beta, c, &ldc_)


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
