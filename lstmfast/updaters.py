"""The updaters of a ``Sequential``: SGD (plain, momentum, Nesterov) and Adam, in place on one
flat parameter vector, each update all or nothing (an interrupt leaves the parameters and the
updater's state exactly as before the step, or exactly as after it)."""

import copy
import math
import numbers

import numpy as np

from . import _training_math
from ._blas_threads import run_ranges
from ._checks import check_non_negative, check_positive
from .kernels import get_num_threads

__all__ = ["Sgd", "Adam", "Rollback"]


class Sgd:
    """Stochastic gradient descent, optionally with momentum, in place on a flat vector.

    ``momentum=0``: ``p -= lr * g``. Classical momentum: ``v = mu v - lr g; p += v``.
    ``nesterov=True``: DL4J's Nesterovs update (``v' = mu v - lr g; p += (1 + mu) v' - mu v``).
    """

    def __init__(self, learning_rate=0.1, momentum=0.0, nesterov=False):
        self.learning_rate = check_non_negative("learning_rate", learning_rate)
        if not isinstance(momentum, numbers.Real) or isinstance(momentum, bool) or not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be a number in [0, 1); got {momentum!r}")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.iteration = 0
        self.velocity = None

    def state_size(self, n_params):
        """Number of state elements for ``n_params`` parameters (DL4J's ``stateSize``)."""
        return n_params if self.momentum > 0 else 0

    def apply(self, params, gradients):
        """Update ``params`` in place from ``gradients``, all or nothing (see ``_commit``)."""
        _check_update_arrays(params, gradients)
        if self.momentum == 0.0:
            _commit(self, params, params - self.learning_rate * gradients,
                    {"iteration": self.iteration + 1})
            return
        previous = self.velocity
        if previous is None or previous.shape != params.shape:
            previous = np.zeros_like(params)
        v = self.momentum * previous - self.learning_rate * gradients
        if self.nesterov:
            step = (1.0 + self.momentum) * v - self.momentum * previous
        else:
            step = v
        _commit(self, params, params + step, {"velocity": v, "iteration": self.iteration + 1})


class Adam:
    """Adam as DL4J's AdamUpdater, in place on a flat vector:
    ``m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    p -= lr sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps)``."""

    def __init__(self, learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8):
        self.learning_rate = check_positive("learning_rate", learning_rate)
        for name, value in (("beta1", beta1), ("beta2", beta2)):
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be a number in [0, 1); got {value!r}")
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.epsilon = check_positive("epsilon", epsilon)
        self.iteration = 0
        self.m = None
        self.v = None

    def state_size(self, n_params):
        return 2 * n_params

    def apply(self, params, gradients):
        """Update ``params`` in place from ``gradients``, all or nothing (see ``_commit``).
        The formula runs in params' type (float32 or float64; float64 for another float type,
        rounded back into params): gradients of another type are rounded to it first, and the
        moments ``m``, ``v`` are kept in it."""
        _check_update_arrays(params, gradients)
        # the update's C loop (lstmfast._training_math.adam) takes contiguous arrays of one
        # float type: that of params (float64 for any other), the others converted to it
        dtype = params.dtype if params.dtype in (np.float32, np.float64) else np.dtype(np.float64)
        p = np.ascontiguousarray(params, dtype=dtype).reshape(-1)
        g = np.ascontiguousarray(gradients, dtype=dtype).reshape(-1)
        m, v = self.m, self.v
        if m is None or m.shape != params.shape:
            m = v = np.zeros_like(p)
        m = np.ascontiguousarray(m, dtype=dtype).reshape(-1)
        v = np.ascontiguousarray(v, dtype=dtype).reshape(-1)
        t = self.iteration + 1
        alpha_t = self.learning_rate * math.sqrt(1.0 - self.beta2 ** t) / (1.0 - self.beta1 ** t)
        new_m, new_v, new_params = (np.empty_like(p) for _ in range(3))
        b1, b2, eps = self.beta1, self.beta2, self.epsilon

        def update(lo, hi):
            _training_math.adam(p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], b1, b2, eps, alpha_t,
                                new_params[lo:hi], new_m[lo:hi], new_v[lo:hi])

        _in_parts(p.shape[0], update)
        _commit(self, params, new_params.reshape(params.shape),
                {"m": new_m.reshape(params.shape), "v": new_v.reshape(params.shape), "iteration": t})


# Element-wise updates of at least this many parameters per thread are split across
# lstmfast's threads (lstmfast.get_num_threads())
_PART_MIN = 1 << 16


def _in_parts(n, update):
    """update(lo, hi) over 0..n in contiguous parts, one per thread, each a multiple of 64
    elements; returns when every part is done. The parts' results do not depend on the split:
    each element's arithmetic is its own."""
    run_ranges(n, min(get_num_threads(), n // _PART_MIN), update, 64)


class Rollback:
    """What updates change, saved so that an interrupted step of several updates can be
    undone: a copy of the parameters and of the updater's attributes (a deep copy, unless the
    updater is one of lstmfast's, which replace their arrays: another may change its arrays in
    place). ``restore()`` puts both back. A container whose one step
    is several updates (``Sequential``'s truncated BPTT) saves before the first; one update is
    all or nothing by itself (``_commit``)."""

    def __init__(self, params, updater):
        self.params = params
        self.saved_params = params.copy()
        self.updater = updater
        attributes = getattr(updater, "__dict__", None)
        if attributes is None:
            self.saved = None
        elif type(updater) in (Adam, Sgd):
            # their updates install new state arrays (_commit) and never write into one: the
            # arrays themselves are what to put back (a deep copy of Adam's moments was 2 MB
            # per step of a character model)
            self.saved = dict(attributes)
        else:
            self.saved = copy.deepcopy(attributes)

    def restore(self):
        np.copyto(self.params, self.saved_params)
        if self.saved is not None:
            attributes = vars(self.updater)
            attributes.update(self.saved)
            for name in set(attributes) - set(self.saved):
                del attributes[name]


def _commit(updater, params, new_params, state):
    """Install one update: ``new_params`` into ``params`` and ``state`` (new arrays, the
    iteration count) as the updater's attributes, all or nothing. The updates compute into new
    arrays first: changing the state in place step by step, a Ctrl-C between two steps left
    Adam's moments advanced and the parameters and iteration count not. The two writes are one
    call into C (lstmfast._training_math.install), between which no signal handler runs."""
    _training_math.install(params, np.asarray(new_params, dtype=params.dtype), vars(updater),
                           state)


def _check_update_arrays(params, gradients):
    if not isinstance(params, np.ndarray) or not isinstance(gradients, np.ndarray):
        raise TypeError("params and gradients must be numpy arrays")
    # the update is computed aside and cast to params' type: a float into an integer array
    # would be truncated, a complex gradient lose its imaginary part, without a word
    if params.dtype.kind != "f":
        raise TypeError(f"params must be a floating-point array; got dtype {params.dtype}")
    if gradients.dtype.kind not in "fiu":
        raise TypeError(f"gradients must be a real array; got dtype {gradients.dtype}")
    if params.shape != gradients.shape:
        raise ValueError(f"params and gradients must have the same shape; got {params.shape} and {gradients.shape}")
