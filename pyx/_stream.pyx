# cython: language_level=3
"""lstmfast._stream: the streaming step (one time step in place on a layer's bound arrays),
lstmfast.kernels' lstm_step behind the checks a Python caller needs. functional.bind_stream_step
binds a StreamStep for the layers' rnn_time_step; step() is the unbound form."""
from libc.string cimport memcpy

cimport numpy as cnp
import numpy as np

from lstmfast._layout cimport _dims
from lstmfast.kernels cimport (lstm_dims, lstm_strides, lstm_step, lstm_check_dims,
                               lstm_forward_workspace_size, LSTM_OK)
from lstmfast.kernels import ERROR_MESSAGES

cnp.import_array()


cdef inline lstm_strides _step_strides(cnp.ndarray a):
    """Element strides of a checked [mb, features] array (one step: no time stride)."""
    cdef lstm_strides st
    st.minibatch = a.strides[0] // cnp.PyArray_ITEMSIZE(a)
    st.feature = a.strides[1] // cnp.PyArray_ITEMSIZE(a)
    st.time = 0
    return st


cdef inline bint _plain(cnp.ndarray a, int typenum, int ndim):
    # native byte order too: a byte-swapped array has the same type number
    return (a is not None and cnp.PyArray_NDIM(a) == ndim and cnp.PyArray_TYPE(a) == typenum
            and cnp.PyArray_ISALIGNED(a) and cnp.PyArray_ISNOTSWAPPED(a))


cdef lstm_dims _step_dims(cnp.ndarray x, cnp.ndarray W, cnp.ndarray RW, cnp.ndarray b,
                          cnp.ndarray h, cnp.ndarray c, int activation, int gate_activation) except *:
    """The checks of step() (all but the workspace); the problem's dims."""
    if W is None or cnp.PyArray_NDIM(W) != 2:
        raise ValueError("W: expected a 2-D array [nIn, 4h]")
    cdef int typenum = cnp.PyArray_TYPE(W)
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        raise ValueError("W: expected float32 or float64")
    if not (_plain(x, typenum, 2) and _plain(W, typenum, 2) and _plain(RW, typenum, 2)
            and _plain(b, typenum, 1) and _plain(h, typenum, 2) and _plain(c, typenum, 2)):
        raise ValueError("step: x, W, RW, b, h, c must be aligned arrays of W's dtype "
                         "with ranks 2, 2, 2, 1, 2, 2")
    cdef Py_ssize_t mb = x.shape[0], n_in = x.shape[1], hidden = RW.shape[0]
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(W)
    if (W.shape[0] != n_in or W.shape[1] != 4 * hidden or b.shape[0] != 4 * hidden
            or (RW.shape[1] != 4 * hidden and RW.shape[1] != 4 * hidden + 3)
            or h.shape[0] != mb or h.shape[1] != hidden or c.shape[0] != mb or c.shape[1] != hidden):
        raise ValueError(f"step: inconsistent shapes x {(<object>x).shape}, W {(<object>W).shape}, "
                         f"RW {(<object>RW).shape}, b {(<object>b).shape}, h {(<object>h).shape}, "
                         f"c {(<object>c).shape}")
    if W.strides[0] != item or RW.strides[0] != item:
        raise ValueError("step: W and RW need unit row stride (Fortran order)")
    if not (cnp.PyArray_ISWRITEABLE(h) and cnp.PyArray_ISWRITEABLE(c)):
        raise ValueError("step: h and c must be writable")
    return _dims(mb, n_in, hidden, 1, RW.shape[1] == 4 * hidden + 3, 1, activation,
                 gate_activation)


cdef int _run_step(const lstm_dims* d, cnp.ndarray x, cnp.ndarray W, cnp.ndarray RW,
                   cnp.ndarray b, cnp.ndarray h, cnp.ndarray c, void* workspace) except -1:
    """lstm_step in place on checked arrays (GIL released while it runs)."""
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(W)
    cdef lstm_strides xs = _step_strides(x), hs = _step_strides(h), cs = _step_strides(c)
    cdef Py_ssize_t ld_w = W.strides[1] // item, ld_rw = RW.strides[1] // item
    cdef Py_ssize_t b_stride = b.strides[0] // item
    cdef int status
    if cnp.PyArray_TYPE(W) == cnp.NPY_FLOAT32:
        with nogil:
            status = lstm_step(d, <const float*>cnp.PyArray_DATA(x), xs,
                               <const float*>cnp.PyArray_DATA(W), ld_w,
                               <const float*>cnp.PyArray_DATA(RW), ld_rw,
                               <const float*>cnp.PyArray_DATA(b), b_stride,
                               <const float*>cnp.PyArray_DATA(h), hs,
                               <const float*>cnp.PyArray_DATA(c), cs,
                               <float*>cnp.PyArray_DATA(h), hs, <float*>cnp.PyArray_DATA(c), cs,
                               <float*>workspace)
    else:
        with nogil:
            status = lstm_step(d, <const double*>cnp.PyArray_DATA(x), xs,
                               <const double*>cnp.PyArray_DATA(W), ld_w,
                               <const double*>cnp.PyArray_DATA(RW), ld_rw,
                               <const double*>cnp.PyArray_DATA(b), b_stride,
                               <const double*>cnp.PyArray_DATA(h), hs,
                               <const double*>cnp.PyArray_DATA(c), cs,
                               <double*>cnp.PyArray_DATA(h), hs, <double*>cnp.PyArray_DATA(c), cs,
                               <double*>workspace)
    if status != LSTM_OK:
        raise ValueError(f"step failed: {ERROR_MESSAGES.get(status, status)}")
    return 0


cdef cnp.ndarray _copy_of(cnp.ndarray a):
    """A new array equal to a, Fortran-ordered (one memcpy when a is Fortran-contiguous)."""
    if not cnp.PyArray_IS_F_CONTIGUOUS(a):
        return cnp.PyArray_NewCopy(a, cnp.NPY_FORTRANORDER)
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(a), cnp.PyArray_DIMS(a),
                                             cnp.PyArray_TYPE(a), 1)
    memcpy(cnp.PyArray_DATA(out), cnp.PyArray_DATA(a), cnp.PyArray_NBYTES(a))
    return out


def step(cnp.ndarray x, cnp.ndarray W, cnp.ndarray RW, cnp.ndarray b, cnp.ndarray h,
         cnp.ndarray c, cnp.ndarray workspace, int activation, int gate_activation):
    """One streaming step in place: (h, c) <- LSTM(x, h, c); returns a copy of the new h.

    Every check is a C-level attribute test. x [mb, nIn], W [nIn, 4h] and RW [h, 4h(+3)] with
    unit row stride, b [4h], h and c [mb, h] writable, workspace 1-D with at least
    forward_workspace_size(mb, nIn, h, 1, False) elements; one dtype (float32 or float64)
    throughout. Raises ValueError when any of that does not hold.
    """
    cdef lstm_dims d = _step_dims(x, W, RW, b, h, c, activation, gate_activation)
    if not _plain(workspace, cnp.PyArray_TYPE(W), 1):
        raise ValueError("step: workspace must be an aligned 1-D array of W's dtype")
    cdef Py_ssize_t needed = lstm_forward_workspace_size(&d, 0)
    if needed < 0 or workspace.shape[0] < needed:
        raise ValueError(f"step: workspace needs {needed} elements, has {workspace.shape[0]}")
    _run_step(&d, x, W, RW, b, h, c, cnp.PyArray_DATA(workspace))
    return _copy_of(h)


cdef class StreamStep:
    """A layer's streaming step with its arrays bound once: ``plan(x)`` advances the bound
    state (h, c) in place by one step of x and returns a copy of the new h, as step() does, but
    checks only x per call (the layers' rnn_time_step calls it; Python overhead is most of a
    step at small sizes).

    The object holds W, RW, b, h and c (the layer's views and state arrays) and its own
    workspace, and the layer's in-use lock: a call takes the lock without waiting. It returns
    None, changing nothing, when x is not a plain aligned array of the bound dtype and shape
    [mb, nIn], when the lock is held elsewhere, or after invalidate() (the owner calls that
    when it rebinds the arrays): the caller then takes its validating path.
    """
    cdef object _acquire, _release
    cdef cnp.ndarray _W, _RW, _b, _h, _c, _workspace
    cdef lstm_dims _d
    cdef int _typenum
    cdef bint _valid

    def __init__(self, lock, cnp.ndarray x, cnp.ndarray W, cnp.ndarray RW, cnp.ndarray b,
                 cnp.ndarray h, cnp.ndarray c, int activation, int gate_activation):
        self._d = _step_dims(x, W, RW, b, h, c, activation, gate_activation)
        cdef int status = lstm_check_dims(&self._d)
        if status != LSTM_OK:
            raise ValueError(f"StreamStep: {ERROR_MESSAGES.get(status, status)}")
        self._typenum = cnp.PyArray_TYPE(W)
        self._workspace = np.empty(lstm_forward_workspace_size(&self._d, 0),
                                   np.float32 if self._typenum == cnp.NPY_FLOAT32 else np.float64)
        self._W, self._RW, self._b, self._h, self._c = W, RW, b, h, c
        self._acquire, self._release = lock.acquire, lock.release
        self._valid = True

    def invalidate(self):
        """Make every later call return None (the owner rebinds its arrays)."""
        self._valid = False

    def __call__(self, x):
        if (not self._valid or type(x) is not np.ndarray
                or not _plain(<cnp.ndarray>x, self._typenum, 2)
                or cnp.PyArray_DIM(<cnp.ndarray>x, 0) != self._d.minibatch
                or cnp.PyArray_DIM(<cnp.ndarray>x, 1) != self._d.n_in):
            return None
        if not self._acquire(False):
            return None
        try:
            if not self._valid:
                return None
            _run_step(&self._d, <cnp.ndarray>x, self._W, self._RW, self._b, self._h, self._c,
                      cnp.PyArray_DATA(self._workspace))
            return _copy_of(self._h)
        finally:
            self._release()
