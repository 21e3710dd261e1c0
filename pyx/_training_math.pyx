# cython: language_level=3, boundscheck=False, wraparound=False
"""lstmfast._training_math: the element-wise work of a training step around the LSTM passes,
in C with the GIL released (pyx/lstmfast_training.inc.h, one variant per element type and
instruction set): the softmax output layer's activations, its cross-entropy (DL4J's MCXENT)
and that loss's gradient, and Adam's update.

NumPy took a pass over memory and a temporary for each operation of these formulas: in a
character model's training step (two LSTM(128) layers, 77 outputs, minibatch 32, 50 steps) they
were a sixth of the time. The callers (lstmfast.layers.dense, lstmfast.updaters) check shapes
and dtypes; these wrappers check again what would otherwise read or write out of bounds."""
from cython cimport floating
from cpython.dict cimport PyDict_Update

cimport numpy as cnp
import numpy as np

from lstmfast._layout cimport _transpose

cnp.import_array()


cdef extern from "lstmfast_training.h" nogil:
    int LF_TRAINING_BLOCK
    int lf_select_training()
    void lf_softmax_rows_f32(Py_ssize_t rows, Py_ssize_t n, const float* z, float* a)
    void lf_softmax_rows_f64(Py_ssize_t rows, Py_ssize_t n, const double* z, double* a)
    double lf_softmax_xent_f32(Py_ssize_t rows, Py_ssize_t n, const float* z, const float* y,
                               const float* row_mask, float* scratch)
    double lf_softmax_xent_f64(Py_ssize_t rows, Py_ssize_t n, const double* z, const double* y,
                               const double* row_mask, double* scratch)
    void lf_softmax_xent_gradient_f32(Py_ssize_t rows, Py_ssize_t n, const float* a,
                                      const float* y, const float* row_mask, float divisor,
                                      float* dz)
    void lf_softmax_xent_gradient_f64(Py_ssize_t rows, Py_ssize_t n, const double* a,
                                      const double* y, const double* row_mask, double divisor,
                                      double* dz)
    void lf_adam_f32(Py_ssize_t n, const float* p, const float* g, const float* m,
                     const float* v, float b1, float b2, float one_minus_b1, float one_minus_b2,
                     float eps, float alpha, float* new_p, float* new_m, float* new_v)
    void lf_adam_f64(Py_ssize_t n, const double* p, const double* g, const double* m,
                     const double* v, double b1, double b2, double one_minus_b1,
                     double one_minus_b2, double eps, double alpha, double* new_p,
                     double* new_m, double* new_v)

# this module's copies of the variants, chosen for the CPU (each compiled module has its own)
lf_select_training()


def _check_shape(name, got, expected):
    if got != expected:
        raise ValueError(f"{name}: expected shape {expected}, got {got}")


cdef const floating* _row_mask(const floating[::1] row_mask, Py_ssize_t rows) except? NULL:
    if row_mask is None:
        return NULL
    _check_shape("row_mask", (row_mask.shape[0],), (rows,))
    return &row_mask[0] if rows > 0 else NULL


def softmax(const floating[:, ::1] z, floating[:, ::1] out):
    """out = softmax(z) over each row of the C-contiguous [rows, n] z (out may be z): exp(z - the
    row's largest) / their sum."""
    cdef Py_ssize_t rows = z.shape[0], n = z.shape[1]
    _check_shape("out", (out.shape[0], out.shape[1]), (rows, n))
    if rows == 0 or n == 0:
        return
    with nogil:
        if floating is float:
            lf_softmax_rows_f32(rows, n, &z[0, 0], &out[0, 0])
        else:
            lf_softmax_rows_f64(rows, n, &z[0, 0], &out[0, 0])


def cross_entropy_of_softmax(const floating[:, ::1] z, const floating[:, ::1] y,
                             const floating[::1] row_mask=None):
    """The sum over rows of -sum_j y[j] log softmax(z)[j] (each row's loss times row_mask[r] if
    given), accumulated in double, as a Python float. log softmax(z) is (z - max) - log(sum
    exp(z - max)): never a log of 0."""
    cdef Py_ssize_t rows = z.shape[0], n = z.shape[1]
    _check_shape("y", (y.shape[0], y.shape[1]), (rows, n))
    cdef const floating* mask = _row_mask(row_mask, rows)
    if rows == 0 or n == 0:
        return 0.0
    cdef floating[::1] scratch = np.empty(max(n, LF_TRAINING_BLOCK),
                                          dtype=np.float32 if floating is float else np.float64)
    cdef double total
    with nogil:
        if floating is float:
            total = lf_softmax_xent_f32(rows, n, &z[0, 0], &y[0, 0], mask, &scratch[0])
        else:
            total = lf_softmax_xent_f64(rows, n, &z[0, 0], &y[0, 0], mask, &scratch[0])
    return total


def cross_entropy_of_softmax_gradient(const floating[:, ::1] a, const floating[:, ::1] y,
                                      const floating[::1] row_mask, double divisor,
                                      floating[:, ::1] out):
    """out = (a sum_j y[j] - y) (times row_mask[r] unless it is None) / divisor: the gradient of
    cross_entropy_of_softmax / divisor with respect to z, from a = softmax(z)."""
    cdef Py_ssize_t rows = a.shape[0], n = a.shape[1]
    _check_shape("y", (y.shape[0], y.shape[1]), (rows, n))
    _check_shape("out", (out.shape[0], out.shape[1]), (rows, n))
    cdef const floating* mask = _row_mask(row_mask, rows)
    if rows == 0 or n == 0:
        return
    with nogil:
        if floating is float:
            lf_softmax_xent_gradient_f32(rows, n, &a[0, 0], &y[0, 0], mask, <float>divisor,
                                         &out[0, 0])
        else:
            lf_softmax_xent_gradient_f64(rows, n, &a[0, 0], &y[0, 0], mask, divisor, &out[0, 0])


def adam(const floating[::1] params, const floating[::1] gradients, const floating[::1] m,
         const floating[::1] v, double beta1, double beta2, double epsilon, double alpha,
         floating[::1] new_params, floating[::1] new_m, floating[::1] new_v):
    """Adam's update (DL4J's AdamUpdater) of params into new_params, new_m, new_v:
    m' = b1 m + (1 - b1) g, v' = b2 v + (1 - b2) g^2, p' = p - alpha m' / (sqrt(v') + eps), each
    operation rounded in that order to the arrays' type, the constants first (the bits of NumPy
    evaluating the formula with Python-float constants). All seven arrays contiguous, of one
    length; new_* must not overlap the others."""
    cdef Py_ssize_t n = params.shape[0]
    _check_shape("gradients", (gradients.shape[0],), (n,))
    _check_shape("m", (m.shape[0],), (n,))
    _check_shape("v", (v.shape[0],), (n,))
    _check_shape("new_params", (new_params.shape[0],), (n,))
    _check_shape("new_m", (new_m.shape[0],), (n,))
    _check_shape("new_v", (new_v.shape[0],), (n,))
    if n == 0:
        return
    with nogil:
        if floating is float:
            lf_adam_f32(n, &params[0], &gradients[0], &m[0], &v[0], <float>beta1, <float>beta2,
                        <float>(1.0 - beta1), <float>(1.0 - beta2), <float>epsilon,
                        <float>alpha, &new_params[0], &new_m[0], &new_v[0])
        else:
            lf_adam_f64(n, &params[0], &gradients[0], &m[0], &v[0], beta1, beta2, 1.0 - beta1,
                        1.0 - beta2, epsilon, alpha, &new_params[0], &new_m[0], &new_v[0])


def sequence_rows(const floating[::1, :, :] x, floating[:, ::1] out, Py_ssize_t first=0,
                  Py_ssize_t stop=-1):
    """out[m * T + t, k] = x[m, k, t] for a Fortran-ordered [mb, n, T] x (a recurrent layer's
    output): the rows of a dense layer applied at every step, each step's [mb, n] block
    transposed in SSE tiles (NumPy's strided copy took 0.76 ns an element). Only the steps
    first..stop-1 (stop -1: T), for a part of the work on another thread."""
    cdef Py_ssize_t mb = x.shape[0], n = x.shape[1], steps = x.shape[2], t
    _check_shape("out", (out.shape[0], out.shape[1]), (mb * steps, n))
    stop = _part_end(first, stop, steps)
    if mb == 0 or n == 0 or first == stop:
        return
    with nogil:
        for t in range(first, stop):
            _transpose(&x[0, 0, t], mb, &out[t, 0], steps * n, mb, n)


def time_contiguous_rows(const floating[:, :, :] x, floating[:, ::1] out,
                         Py_ssize_t first=0, Py_ssize_t stop=-1):
    """out[m * T + t, k] = x[m, k, t] for an [mb, n, T] x whose time axis is contiguous (a
    window of C-ordered labels [mb, n, T_all]): each example's [T, n] block transposed in SSE
    tiles (NumPy's copy of the transposed view took about 1 ns an element). Only the examples
    first..stop-1 (stop -1: mb)."""
    cdef Py_ssize_t mb = x.shape[0], n = x.shape[1], steps = x.shape[2], m
    _check_shape("out", (out.shape[0], out.shape[1]), (mb * steps, n))
    stop = _part_end(first, stop, mb)
    if n == 0 or steps == 0 or first == stop:
        return
    cdef Py_ssize_t ld = x.strides[1] // <Py_ssize_t>sizeof(floating)
    if (x.strides[2] != sizeof(floating) or x.strides[1] % <Py_ssize_t>sizeof(floating)
            or ld < steps):
        raise ValueError(f"x: expected a contiguous time axis, its feature axis stepping over "
                         f"whole time rows; got strides ({x.strides[0]}, {x.strides[1]}, {x.strides[2]})")
    with nogil:
        for m in range(first, stop):
            _transpose(&x[m, 0, 0], ld, &out[m * steps, 0], n, steps, n)


cdef Py_ssize_t _part_end(Py_ssize_t first, Py_ssize_t stop, Py_ssize_t count) except -1:
    """stop (-1: count), checked with first to be a range of 0..count-1."""
    if stop == -1:
        stop = count
    if not 0 <= first <= stop <= count:
        raise ValueError(f"part {first}..{stop} is not a range of 0..{count}")
    return stop


def install(cnp.ndarray params not None, cnp.ndarray new_params not None, dict attributes not None,
            dict state not None):
    """params[...] = new_params, then attributes.update(state): an update's two writes in C
    calls with no Python line between them, where a signal handler (Ctrl-C's
    KeyboardInterrupt) could run, so an update is installed whole or not at all without a
    copy of the parameters to restore (1 MB copied and page-faulted twice per step in a
    character model). The copy is NumPy's (any layout of params); if it fails, nothing has
    been written (same shapes; new_params of params' dtype)."""
    cnp.PyArray_CopyInto(params, new_params)          # (raises, writing nothing, on a mismatch)
    PyDict_Update(attributes, state)
