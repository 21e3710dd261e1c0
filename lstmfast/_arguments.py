"""Argument checks and conversion of the functional API (lstmfast.functional).

Each check names the argument in its error (which shape, expected against got). Arrays are read
first (``as_float_array``: a view where possible) and converted to the pass's dtype and a layout
the kernels take only after every size is known to be acceptable (``ready_for_kernels``,
``column_major``), so that a refused problem never allocates a converted copy.
"""
import operator

import numpy as np

from . import kernels as _kernels

__all__ = ["FLOAT_DTYPES", "shape_text", "decide_dtype", "as_float_array", "ready_for_kernels",
           "column_major", "as_integer", "as_flag", "activation_code", "check_state",
           "check_finite", "check_last_state_gradient", "check_lengths", "check_projection",
           "check_output_array"]

#: The dtypes lstmfast computes in
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def shape_text(a):
    """An array's shape as errors print it: "[2, 3, 4]"."""
    return "[" + ", ".join(str(n) for n in a.shape) + "]"


def decide_dtype(input_weights):
    """The pass's dtype: input_weights' (float32 or float64; anything else is refused)."""
    dtype = getattr(input_weights, "dtype", None)
    if dtype is not None:
        try:
            dtype = np.dtype(dtype)
        except TypeError:       # not a NumPy dtype (a torch tensor's): read the array below
            dtype = None
    if dtype is None:
        try:
            dtype = np.asarray(input_weights).dtype
        except (ValueError, TypeError, RuntimeError) as error:
            raise ValueError(f"input_weights: cannot be read as an array ({error})") from None
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"input_weights: dtype {dtype} is not supported; lstmfast computes in "
                        f"float32 or float64 (the dtype of input_weights decides)")
    return dtype


def as_float_array(value, name, dtype, *, allow_exact_ints=False):
    """`value` as a NumPy array (a view where possible), checked to be float32/float64 (or a 0/1
    integer/boolean mask). Not yet converted to `dtype`: that happens in `ready_for_kernels`, after the
    sizes are known to be acceptable, so that a refused problem never allocates a converted copy."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, RuntimeError) as error:
        raise ValueError(f"{name}: cannot be read as an array ({error})") from None
    kind = array.dtype.kind
    if array.dtype in FLOAT_DTYPES:
        pass
    elif allow_exact_ints and kind in "biu":
        pass
    else:
        raise TypeError(f"{name}: dtype {array.dtype} is not supported; expected float32 or float64"
                        + (" (or a 0/1 integer or boolean mask)" if allow_exact_ints else ""))
    return array


def ready_for_kernels(array, dtype):
    """`array` in `dtype`, aligned, with strides the kernels can express in elements."""
    if array is None:
        return None
    if array.dtype is not dtype and array.dtype != dtype:
        array = array.astype(dtype)
    item = array.itemsize
    whole = array.flags.aligned
    for stride in array.strides:         # a plain loop: any() over a generator cost ~1 us a call,
        if stride % item:                # which a streaming step pays for five arrays
            whole = False
    if not whole:
        array = np.array(array, dtype=dtype, order="A", copy=True)
    return array


def column_major(array):
    """Weights for BLAS: unit row stride and a leading dimension >= rows that the BLAS integer
    can hold (copy if needed)."""
    item = array.itemsize
    rows = array.shape[0]
    if (array.strides[0] == item and max(rows, 1) * item <= array.strides[1]
            and array.strides[1] // item <= _kernels.BLAS_INT_MAX):
        return array
    return np.asfortranarray(array)


def as_integer(value, name, expected):
    """`value` as a Python int: any integer type, but not a bool, a float or a string."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected {expected}, got a bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name}: expected {expected}, got {type(value).__name__}") from None


def as_flag(value, name):
    """A boolean option: True/False (or NumPy bools, or the integers 0/1)."""
    if value is True or value is False:
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{name}: expected True or False, got {type(value).__name__} {value!r:.60}")


def activation_code(value, name, allowed):
    # names as written in ACTIVATION_CODES (lower case) first, without str.lower()
    code = _kernels.ACTIVATION_CODES.get(value) if type(value) is str else None
    if code is not None and value in allowed:
        return code
    if not isinstance(value, str) or value.lower() not in allowed:
        raise ValueError(f"{name}: unknown activation {value!r}; valid: {', '.join(allowed)}")
    return _kernels.ACTIVATION_CODES[value.lower()]


def check_state(value, name, dtype, minibatch, hidden):
    if value is None:
        return None
    state = as_float_array(value, name, dtype)
    if state.ndim != 2:
        raise ValueError(f"{name}: expected shape [minibatch, h] = [{minibatch}, {hidden}], "
                         f"got {shape_text(state)}")
    if state.shape[0] != minibatch:
        raise ValueError(
            f"{name}: previous state number of examples = {state.shape[0]} but input array number "
            f"of examples = {minibatch}. Possible cause: using rnn_time_step() without calling "
            f"rnn_clear_previous_state() between different sequences?")
    if state.shape[1] != hidden:
        raise ValueError(f"{name}: expected shape [minibatch, h] = [{minibatch}, {hidden}], "
                         f"got {shape_text(state)}")
    return state


def check_finite(arrays):
    for name, array in arrays:
        if array is not None and not np.isfinite(array).all():
            raise ValueError(f"{name}: contains NaN or Inf (check_finite=True)")


def check_last_state_gradient(value, name, state, dtype, minibatch, hidden):
    if value is None:
        return None
    array = as_float_array(value, name, dtype)
    if array.shape != (minibatch, hidden):
        raise ValueError(f"{name}: expected shape [minibatch, h] = [{minibatch}, {hidden}] "
                         f"(the shape of fwd.{state}), got {shape_text(array)}")
    return ready_for_kernels(array, dtype)


def check_lengths(lengths, minibatch, time_steps, mask):
    """`lengths` as a contiguous np.intp array [minibatch] of values 0..T, or None."""
    if lengths is None:
        return None
    if mask is not None:
        raise ValueError("mask and lengths: pass one of them, not both (lengths [minibatch] "
                         "is the alternative to a mask [minibatch, T])")
    try:
        array = np.asarray(lengths)
    except (ValueError, TypeError, RuntimeError) as error:
        raise ValueError(f"lengths: cannot be read as an array ({error})") from None
    if array.dtype.kind not in "iu":
        raise TypeError(f"lengths: expected integers (steps per example), got dtype {array.dtype}")
    if array.shape != (minibatch,):
        raise ValueError(f"lengths: expected shape [minibatch] = [{minibatch}], "
                         f"got {shape_text(array)}")
    bad = np.flatnonzero((array < 0) | (array > time_steps))
    if bad.size:
        raise ValueError(f"lengths: every length must be in 0..T = 0..{time_steps}; "
                         f"lengths[{bad[0]}] = {array[bad[0]]}")
    return np.ascontiguousarray(array, dtype=np.intp)


def check_projection(projection_weights, peephole_weights, peepholes, dtype):
    """(W_proj [h, P] or None, peephole weights [h, 3] or None, peepholes) checked."""
    if projection_weights is None:
        if peephole_weights is not None:
            raise ValueError("peephole_weights: only with projection_weights (without a "
                             "projection the peepholes are recurrent_weights' last 3 columns)")
        return None, None, peepholes
    proj = as_float_array(projection_weights, "projection_weights", dtype)
    if proj.ndim != 2 or min(proj.shape) < 1:
        raise ValueError(f"projection_weights: expected a 2-D array [h, P] with h, P >= 1, "
                         f"got {shape_text(proj)}")
    if peepholes is None:
        peepholes = peephole_weights is not None
    peepholes = as_flag(peepholes, "peepholes")
    peep = None
    if peepholes != (peephole_weights is not None):
        raise ValueError(f"peephole_weights: with projection_weights the peepholes are "
                         f"peephole_weights [h, 3]; peepholes={peepholes} but peephole_weights "
                         f"is {'None' if peephole_weights is None else 'given'}")
    if peepholes:
        peep = as_float_array(peephole_weights, "peephole_weights", dtype)
        if peep.shape != (proj.shape[0], 3):
            raise ValueError(f"peephole_weights: expected shape [h, 3] = [{proj.shape[0]}, 3] "
                             f"(h = projection_weights.shape[0]), got {shape_text(peep)}")
    return proj, peep, peepholes


def check_output_array(out, name, shape, dtype, inputs):
    """An array the caller gives a pass to write a result into: of the pass's dtype and `shape`,
    writable, aligned, native byte order, positive strides that do not make two elements share
    memory (any order of the axes: a view of a time-major array is fine), and sharing no memory
    with the pass's `inputs` (the kernels read those while writing it). Returns `out`."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name}: expected a NumPy array, got {type(out).__name__}")
    if out.dtype != dtype:
        raise ValueError(f"{name}: expected dtype {dtype} (the pass's), got {out.dtype}")
    if out.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape [{', '.join(map(str, shape))}], "
                         f"got {shape_text(out)}")
    if not out.flags.writeable:
        raise ValueError(f"{name}: the array is read-only")
    if not out.flags.aligned or not out.dtype.isnative:
        raise ValueError(f"{name}: expected an aligned array in native byte order")
    axes = sorted((s, n) for s, n in zip(out.strides, out.shape) if n > 1)
    extent = out.itemsize
    for stride, n in axes:
        if stride < extent or stride % out.itemsize:
            raise ValueError(f"{name}: strides {out.strides} make elements overlap or are not "
                             f"whole elements; expected positive, non-overlapping strides")
        if stride // out.itemsize > _kernels.BLAS_INT_MAX:
            raise ValueError(f"{name}: stride {stride} bytes is past the BLAS integer's limit")
        extent = stride * n
    for other_name, other in inputs:
        if other is not None and np.may_share_memory(out, other):
            raise ValueError(f"{name}: shares memory with {other_name}, which the pass reads "
                             f"while it writes {name}")
    return out
