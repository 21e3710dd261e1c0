# cython: language_level=3
"""lstmfast._isa: the instruction set of the kernels' vectorised math, packed products and cells
(pyx/lstmfast_isa.h): the CPU's best, or lower where LSTMFAST_ISA asks, named for users
(lstmfast.kernels re-exports simd_variant, isa_levels and vector_math)."""
from cython cimport floating

cimport numpy as cnp
import numpy as np

from lstmfast._activations cimport (lf_tanh_array_f32, lf_tanh_array_f64, lf_sigmoid_array_f32,
                                    lf_sigmoid_array_f64, lf_exp_array_f32, lf_exp_array_f64)
from lstmfast._cells cimport lf_select_isa, lf_cpu_isa, lf_isa_names, LF_ISA_AVX512

import os as _os
import warnings as _warnings

cnp.import_array()

# The instruction set of the vectorised math, the packed products and the cells: the CPU's best
# (AVX-512, AVX2+FMA, the baseline); LSTMFAST_ISA may lower it (lstmfast._forward and _backward
# choose their own copies of the variants by the same rule)
_ISA_NAMES = tuple(lf_isa_names[level].decode() for level in range(LF_ISA_AVX512 + 1))
_isa_wanted = _os.environ.get("LSTMFAST_ISA", "")
if _isa_wanted and _isa_wanted not in _ISA_NAMES:
    _warnings.warn(f"LSTMFAST_ISA={_isa_wanted!r} is not an instruction set lstmfast knows; allowed: "
                   f"{', '.join(_ISA_NAMES)} (or unset: the best the CPU has). Using the best the "
                   f"CPU has.", RuntimeWarning, stacklevel=3)
elif _isa_wanted and _ISA_NAMES.index(_isa_wanted) > lf_cpu_isa():
    _warnings.warn(f"LSTMFAST_ISA={_isa_wanted!r}: this CPU (or its OS) supports only up to "
                   f"{_ISA_NAMES[lf_cpu_isa()]!r}; using that.", RuntimeWarning, stacklevel=3)
_ISA = _ISA_NAMES[lf_select_isa()]


def simd_variant():
    """The variant of the vectorised exp/tanh/sigmoid, the packed products and the fused cells
    in use: 'avx512' (AVX-512 F/BW/VL/DQ), 'avx2+fma' or 'portable' (baseline x86-64, BLAS for
    every product). LSTMFAST_ISA=avx2 or baseline lowers it (for a process, read at import)."""
    return {"avx512": "avx512", "avx2": "avx2+fma", "baseline": "portable"}[_ISA]


def isa_levels():
    """The instruction sets this CPU and its OS support, lowest first (names as LSTMFAST_ISA
    takes them): e.g. ('baseline', 'avx2', 'avx512')."""
    return _ISA_NAMES[:lf_cpu_isa() + 1]


def vector_math(str function, values):
    """Apply the kernels' vectorised 'exp', 'tanh' or 'sigmoid' to a float32/float64 array
    (for tests and diagnostics); returns a new array."""
    cdef cnp.ndarray x = np.ascontiguousarray(values)
    if x.dtype != np.float32 and x.dtype != np.float64:
        raise TypeError(f"values: expected float32 or float64, got {x.dtype}")
    cdef cnp.ndarray y = np.empty_like(x)
    cdef Py_ssize_t n = x.size
    cdef int kind
    if function == "tanh":
        kind = 0
    elif function == "sigmoid":
        kind = 1
    elif function == "exp":
        kind = 2
    else:
        raise ValueError(f"function: expected 'exp', 'tanh' or 'sigmoid', got {function!r}")
    if x.dtype == np.float32:
        with nogil:
            _vector_math_typed(<const float*>cnp.PyArray_DATA(x), <float*>cnp.PyArray_DATA(y), n, kind)
    else:
        with nogil:
            _vector_math_typed(<const double*>cnp.PyArray_DATA(x), <double*>cnp.PyArray_DATA(y), n, kind)
    return y


cdef void _vector_math_typed(const floating* x, floating* y, Py_ssize_t n, int kind) noexcept nogil:
    if kind == 0:
        if floating is float:
            lf_tanh_array_f32(x, y, n)
        else:
            lf_tanh_array_f64(x, y, n)
    elif kind == 1:
        if floating is float:
            lf_sigmoid_array_f32(x, y, n)
        else:
            lf_sigmoid_array_f64(x, y, n)
    elif floating is float:
        lf_exp_array_f32(x, y, n)
    else:
        lf_exp_array_f64(x, y, n)
