"""Dense and output layers: ``DenseLayer``, ``OutputLayer`` (2-D data) and ``RnnOutputLayer``
(every time step of a sequence), with their activations and losses.

Conventions (DL4J's, where DL4J has one):

* Parameter layout: ``W`` ``[nIn, nOut]`` (Fortran-order view of the flat array) then ``b``
  ``[nOut]``; a container (``lstmfast.Sequential``) may move them into its own flat vector
  (``bind_storage``), the layer's arrays then being views into it; likewise the gradients.
* Initialisation: Xavier with fanIn = nIn, fanOut = nOut (DL4J's DefaultParamInitializer),
  biases ``bias_init`` (0).
* Score (``compute_score``): the sum of the per-example (per example and time step, for
  sequences) losses, label mask applied, divided by the minibatch size (DL4J's
  ``BaseOutputLayer.computeScore``: the sum is divided by ``input.size(0)``, *not* by the number
  of time steps). ``backward_from_labels`` gives its exact gradient (DL4J divides the summed
  loss gradient by the minibatch size in its updater; here the output layer does it).
* Losses: "mcxent" (= "negativeloglikelihood"; -sum y log p per row; with softmax computed
  through log-softmax, so it never takes log 0), "xent" (binary cross-entropy), "mse" (DL4J's
  LossMSE: squared error averaged over the nOut outputs), "l2" (squared error summed).
* Threads: as the recurrent layers (``lstmfast.layers``, "Threads"), one call at a time per
  layer; a call made while another thread is inside a call on the same layer raises
  ``ConcurrentUseError`` at once and changes nothing. A product large enough for OpenBLAS to
  thread holds every OpenBLAS copy in the process at one thread and runs in parts on
  lstmfast's threads (``lstmfast._blas_threads``), the parts fixed by the shape alone.
"""

import numbers

import numpy as np

from .. import _blas_threads, _training_math
from .._checks import check_choice, check_dtype, check_size, seed_sequence
from .._guard import exclusive
from ..kernels import get_num_threads
from ..functional import BLAS_INT_MAX
from ._base import WEIGHT_INITS, FlatParameterLayer, init_weights

__all__ = ["DenseLayer", "OutputLayer", "RnnOutputLayer", "DENSE_ACTIVATIONS", "LOSS_FUNCTIONS"]

# --------------------------------------------------------------------------------------
# activations of dense/output layers (row-wise over the last axis of a 2-D array)


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


# Row-wise element-wise work (softmax, its loss's gradient, the transposes into rows) of at
# least this many elements is done in parts of the rows on lstmfast's threads: each row's
# arithmetic is its own, so the bits do not depend on the split
_ROWS_PART_ELEMENTS = 1 << 15


def _in_row_parts(count, size, work):
    """work(lo, hi) over 0..count (rows, steps or examples of `size` elements in all): in one
    call, or in contiguous parts, one per thread of lstmfast (_blas_threads.run_ranges)."""
    _blas_threads.run_ranges(count, min(get_num_threads(), count, size // _ROWS_PART_ELEMENTS),
                             work)


def _softmax(z):
    """Row-wise softmax of a float32/float64 [rows, n] array (lstmfast._training_math: one
    pass and the exponentials, where NumPy took five passes and four temporaries)."""
    a = np.empty(z.shape, dtype=z.dtype)
    z = np.ascontiguousarray(z)
    _in_row_parts(z.shape[0], z.size,
                  lambda lo, hi: _training_math.softmax(z[lo:hi], a[lo:hi]))
    return a


def _activation_forward(name, z):
    if name == "identity":
        return z.copy()
    if name == "sigmoid":
        return _sigmoid(z)
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0)
    if name == "leakyrelu":
        return np.where(z > 0, z, 0.01 * z)
    if name == "softsign":
        return z / (1.0 + np.abs(z))
    if name == "softplus":
        return np.logaddexp(0, z)
    if name == "elu":
        return np.where(z > 0, z, np.expm1(np.minimum(z, 0)))
    if name == "hardtanh":
        return np.clip(z, -1.0, 1.0)
    if name == "hardsigmoid":
        return np.clip(0.2 * z + 0.5, 0.0, 1.0)
    if name == "softmax":
        return _softmax(z)
    raise ValueError(f"activation must be one of {', '.join(DENSE_ACTIVATIONS)}; got {name!r}")


def _activation_backward(name, z, a, grad):
    """dL/dz from dL/da (``grad``) at pre-activation ``z`` with activation ``a``."""
    if name == "identity":
        return grad.copy()
    if name == "sigmoid":
        return grad * a * (1.0 - a)
    if name == "tanh":
        return grad * (1.0 - a * a)
    if name == "relu":
        return grad * (z > 0)
    if name == "leakyrelu":
        return grad * np.where(z > 0, 1.0, 0.01)
    if name == "softsign":
        return grad / (1.0 + np.abs(z)) ** 2
    if name == "softplus":
        return grad * _sigmoid(z)
    if name == "elu":
        return grad * np.where(z > 0, 1.0, np.exp(np.minimum(z, 0)))
    if name == "hardtanh":
        return grad * ((z > -1.0) & (z < 1.0))
    if name == "hardsigmoid":
        return grad * np.where(np.abs(z) < 2.5, 0.2, 0.0)
    if name == "softmax":
        return a * (grad - (grad * a).sum(axis=1, keepdims=True))
    raise ValueError(f"activation must be one of {', '.join(DENSE_ACTIVATIONS)}; got {name!r}")


#: Activations of DenseLayer / OutputLayer / RnnOutputLayer (DL4J's definitions).
DENSE_ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu", "leakyrelu", "softsign", "softplus", "elu",
                     "hardtanh", "hardsigmoid", "softmax")
#: Loss functions of OutputLayer / RnnOutputLayer.
LOSS_FUNCTIONS = ("mcxent", "negativeloglikelihood", "xent", "mse", "l2")


# --------------------------------------------------------------------------------------
# layers


def _to_rows(x):
    """[mb, n, T] → rows [mb*T, n] (row index = example * T + t); [mb, n] unchanged."""
    if x.ndim == 2:
        return x
    mb, n, t = x.shape
    if x.dtype in (np.float32, np.float64) and x.size > 0:
        rows = np.empty((mb * t, n), dtype=x.dtype)
        if x.flags.f_contiguous:
            # a recurrent layer's output: its step blocks transposed in C
            _in_row_parts(t, x.size, lambda lo, hi: _training_math.sequence_rows(x, rows, lo, hi))
            return rows
        if x.strides[2] == x.itemsize and x.strides[1] >= t * x.itemsize:
            # time contiguous (a window of C-ordered labels): each example's block in C
            _in_row_parts(mb, x.size,
                          lambda lo, hi: _training_math.time_contiguous_rows(x, rows, lo, hi))
            return rows
    return np.ascontiguousarray(x.transpose(0, 2, 1)).reshape(mb * t, n)


def _from_rows(rows, like_shape):
    """Inverse of ``_to_rows`` for an array with ``like_shape`` [mb, *, T] (or 2-D)."""
    if len(like_shape) == 2:
        return rows
    mb, t = like_shape[0], like_shape[2]
    return rows.reshape(mb, t, rows.shape[1]).transpose(0, 2, 1)


# A dense product of at least this many multiply-adds per part is cut into parts of its output's
# rows (at least 64 rows each, at most 8 parts; its columns when it has too few rows), the parts
# fixed by the shape alone and run on lstmfast's threads: OpenBLAS is held at one thread during
# these products, and the bits must not depend on the thread count.
_PRODUCT_PART_WORK = 1 << 21
# Products from this many multiply-adds, which OpenBLAS would thread, hold it at one thread
# (smaller ones, such as a streaming step's, run as they are: a hold costs microseconds)
_PRODUCT_HOLD_WORK = 1 << 16


def _product(a, b, out=None):
    """a @ b for 2-D a [m, k] and b [k, n], into `out` (C-contiguous [m, n]) if given."""
    m, k = a.shape
    n = b.shape[1]
    if out is None:
        out = np.empty((m, n), dtype=np.result_type(a, b))
    if m * n * k < _PRODUCT_HOLD_WORK:
        np.matmul(a, b, out=out)
        return out
    by_rows = m >= 128 or n < 128
    parts = max(1, min(8, (m if by_rows else n) // 64, m * n * k // _PRODUCT_PART_WORK))

    def part(lo, hi):
        if by_rows:
            np.matmul(a[lo:hi], b, out=out[lo:hi])
        else:                  # a block of columns: BLAS takes it with the whole row's stride
            np.matmul(a, b[:, lo:hi], out=out[:, lo:hi])

    with _blas_threads.held():
        _blas_threads.run_ranges(m if by_rows else n, parts, part)
    return out


class DenseLayer(FlatParameterLayer):
    """Fully connected layer ``a = activation(x W + b)``.

    ``DenseLayer(n_in, n_out, *, activation="sigmoid", weight_init="xavier", bias_init=0.0,
    dtype=np.float32, seed=None)`` (DL4J's default activation is sigmoid). Input ``[minibatch,
    nIn]``, or ``[minibatch, nIn, T]`` for which it is applied at every time step (DL4J inserts
    RnnToFeedForward / FeedForwardToRnn preprocessors for this).
    """

    def __init__(self, n_in, n_out, *, activation="sigmoid", weight_init="xavier", bias_init=0.0,
                 dtype=np.float32, seed=None):
        self.n_in = check_size("n_in", n_in)
        self.n_out = check_size("n_out", n_out)
        self.activation = check_choice("activation", activation, DENSE_ACTIVATIONS)
        self.weight_init = check_choice("weight_init", weight_init, WEIGHT_INITS)
        if not isinstance(bias_init, numbers.Real) or isinstance(bias_init, bool):
            raise TypeError(f"bias_init must be a real number, got {bias_init!r}")
        self.bias_init = float(bias_init)
        self.dtype = check_dtype(dtype)
        self.seed = seed
        self._seed_sequence = seed_sequence(seed)
        self._allocate_storage()
        self.reset_parameters(np.random.default_rng(self._seed_sequence.spawn(1)[0]))
        self._cache = None

    def num_params(self):
        return self.n_in * self.n_out + self.n_out

    def _views_of(self, flat):
        n_w = self.n_in * self.n_out
        return flat[:n_w].reshape((self.n_in, self.n_out), order="F"), flat[n_w:n_w + self.n_out]

    def _build_views(self):
        self.W, self.b = self._views_of(self._param_array)
        self.W_gradient, self.b_gradient = self._views_of(self._gradient_array)

    def param_table(self):
        return {"W": self.W, "b": self.b}

    def gradient_table(self):
        return {"W": self.W_gradient, "b": self.b_gradient}

    def weight_param_mask(self):
        n_w = self.n_in * self.n_out
        return np.concatenate([np.ones(n_w, dtype=bool), np.zeros(self.n_out, dtype=bool)])

    @exclusive
    def reset_parameters(self, rng=None):
        """Weights by ``weight_init`` with fanIn = nIn, fanOut = nOut; biases ``bias_init``."""
        if rng is None:
            rng = np.random.default_rng(self._seed_sequence.spawn(1)[0])
        n_w = self.n_in * self.n_out
        self._param_array[:n_w] = init_weights(rng, (self.n_in, self.n_out), self.n_in, self.n_out,
                                               self.weight_init, self.dtype)
        self.b[...] = self.bias_init

    def _check_input(self, x, what):
        arr = np.asarray(x)
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"{type(self).__name__}.{what}: x must be a real array, got dtype {arr.dtype}")
        if arr.ndim not in (2, 3) or arr.shape[1] != self.n_in or arr.shape[0] == 0 \
                or (arr.ndim == 3 and arr.shape[2] == 0):
            raise ValueError(f"{type(self).__name__}.{what}: x must be [minibatch, nIn={self.n_in}] or "
                             f"[minibatch, nIn={self.n_in}, T] (non-empty); got shape {arr.shape}")
        self._check_problem_size(arr, what)
        return arr.astype(self.dtype, copy=False)

    def _check_problem_size(self, x, what):
        """Refuse, before anything is allocated (x may be a broadcast view of a huge shape), a
        pass whose rows (minibatch * T) or widths the BLAS integer of this build cannot
        address: the limit the recurrent layers have, so a network refuses one size for all."""
        minibatch = x.shape[0]
        steps = x.shape[2] if x.ndim == 3 else 1
        if max(minibatch * steps, self.n_in, self.n_out) > BLAS_INT_MAX:
            raise ValueError(
                f"{type(self).__name__}.{what}: problem too large: minibatch={minibatch}, "
                f"nIn={self.n_in}, nOut={self.n_out}, T={steps}; a BLAS dimension (minibatch*T, "
                f"nIn or nOut) exceeds what the BLAS integer of this SciPy build can address "
                f"({BLAS_INT_MAX})")

    @exclusive
    def forward(self, x, mask=None, training=False):
        """``activation(x W + b)``, per time step for 3-D input. ``mask`` is accepted for a
        uniform layer interface and not used (DL4J's dense layers ignore it too)."""
        x = self._check_input(x, "forward")
        rows = _to_rows(x)
        z = _product(rows, self.W)
        z += self.b
        a = _activation_forward(self.activation, z)
        self._cache = (x.shape, rows, z, a) if training else None
        return _from_rows(a, x.shape)

    def _backward_from_preactivation_gradient(self, dz, input_shape, rows):
        # W's gradient rows^T dz, as its transpose dz^T rows: [nOut, nIn] row-major is the
        # gradient's own (Fortran) storage, whose rows the parts can write
        _product(dz.T, rows, out=self.W_gradient.T)
        self.b_gradient[...] = dz.sum(axis=0)
        return _from_rows(_product(dz, self.W.T), input_shape)

    @exclusive
    def backward(self, epsilon, tbptt_length=None):
        """dL/dx from ``epsilon`` = dL/d(output); fills ``gradients``. (``tbptt_length`` has no
        meaning for a feed-forward layer and is ignored.)"""
        if self._cache is None:
            raise ValueError(f"{type(self).__name__}.backward: no training forward pass to back-propagate; "
                             f"call forward(x, training=True) first")
        input_shape, rows, z, a = self._cache
        eps = np.asarray(epsilon)
        expected = (input_shape[0], self.n_out) + tuple(input_shape[2:])
        if eps.shape != expected:
            raise ValueError(f"{type(self).__name__}.backward: epsilon must have shape {expected}; got {eps.shape}")
        dz = _activation_backward(self.activation, z, a, _to_rows(eps.astype(self.dtype, copy=False)))
        return self._backward_from_preactivation_gradient(dz, input_shape, rows)

    def rnn_clear_previous_state(self):
        """Feed-forward layers keep no state."""

    def _describe(self):
        return (f"{type(self).__name__}(n_in={self.n_in}, n_out={self.n_out}, activation={self.activation!r}, "
                f"dtype={self.dtype.name})")


class OutputLayer(DenseLayer):
    """Dense layer with a loss, for 2-D data: labels ``[minibatch, nOut]``, label mask
    ``[minibatch]`` (or ``[minibatch, 1]``).

    ``OutputLayer(n_in, n_out, *, activation="softmax", loss="mcxent", ...)``.
    ``compute_score(labels)`` and ``backward_from_labels(labels)`` use the last forward pass.
    """

    sequence_output = False

    def __init__(self, n_in, n_out, *, activation="softmax", loss="mcxent", weight_init="xavier",
                 bias_init=0.0, dtype=np.float32, seed=None):
        super().__init__(n_in, n_out, activation=activation, weight_init=weight_init, bias_init=bias_init,
                         dtype=dtype, seed=seed)
        self.loss = check_choice("loss", loss, LOSS_FUNCTIONS)
        if self.loss == "negativeloglikelihood":
            self.loss = "mcxent"
        if self.loss == "mcxent" and self.activation not in ("softmax", "sigmoid"):
            raise ValueError(f"loss 'mcxent' needs outputs in (0, 1]: activation must be softmax or sigmoid, "
                             f"got {self.activation!r}")
        if self.loss == "xent" and self.activation not in ("sigmoid", "softmax"):
            raise ValueError(f"loss 'xent' needs outputs in (0, 1): activation must be sigmoid or softmax, "
                             f"got {self.activation!r}")

    @exclusive
    def forward(self, x, mask=None, training=False):
        """Activations; the pass is kept for ``compute_score`` / ``backward_from_labels``."""
        x = self._check_input(x, "forward")
        self._check_data_rank(x)
        rows = _to_rows(x)
        z = _product(rows, self.W)
        z += self.b
        a = _activation_forward(self.activation, z)
        self._cache = (x.shape, rows, z, a)
        return _from_rows(a, x.shape)

    def _check_data_rank(self, x):
        if x.ndim != 2:
            raise ValueError(f"OutputLayer takes 2-D data [minibatch, nIn]; got shape {x.shape} "
                             f"(use RnnOutputLayer for sequences)")

    def _label_rows(self, labels, label_mask, what):
        if self._cache is None:
            raise ValueError(f"{type(self).__name__}.{what}: call forward(x) first")
        input_shape, rows, z, a = self._cache
        y = np.asarray(labels)
        expected = (input_shape[0], self.n_out) + tuple(input_shape[2:])
        if y.dtype.kind not in "fiub":
            raise TypeError(f"labels must be a real array, got dtype {y.dtype}")
        if y.shape != expected:
            raise ValueError(f"{type(self).__name__}.{what}: labels must have shape {expected}; got {y.shape}")
        y_rows = np.ascontiguousarray(_to_rows(y.astype(self.dtype, copy=False)))
        row_mask = None
        if label_mask is not None:
            m = np.asarray(label_mask)
            if len(input_shape) == 3:
                mask_shape = (input_shape[0], input_shape[2])
                ok = m.shape == mask_shape
            else:
                mask_shape = (input_shape[0],)
                ok = m.shape in ((input_shape[0],), (input_shape[0], 1))
            if not ok:
                raise ValueError(f"{type(self).__name__}.{what}: label_mask must have shape {mask_shape}; "
                                 f"got {m.shape}")
            row_mask = m.astype(self.dtype).reshape(-1, 1)
        return input_shape, rows, z, a, y_rows, row_mask

    def _row_losses(self, z, a, y):
        if self.loss == "mcxent":     # with sigmoid (softmax's loss: _summed_loss)
            log_p = -np.logaddexp(0, -z)        # log a = -softplus(-z)
            return -(y * log_p).sum(axis=1)
        if self.loss == "xent":
            if self.activation == "sigmoid":
                log_a, log_1ma = -np.logaddexp(0, -z), -np.logaddexp(0, z)
            else:
                log_a, log_1ma = np.log(a), np.log1p(-a)
            return -(y * log_a + (1.0 - y) * log_1ma).sum(axis=1)
        diff = a - y
        if self.loss == "mse":
            return (diff * diff).mean(axis=1)
        return (diff * diff).sum(axis=1)  # l2

    def _summed_loss(self, z, a, y, row_mask):
        """The sum of the (masked) row losses, in double."""
        if self.loss == "mcxent" and self.activation == "softmax":
            # log softmax(z) = (z - max) - log(sum exp(z - max)), never a log of 0
            return _training_math.cross_entropy_of_softmax(
                z, y, None if row_mask is None else np.ascontiguousarray(row_mask[:, 0]))
        losses = self._row_losses(z, a, y)
        if row_mask is not None:
            losses = losses * row_mask[:, 0]
        return float(losses.sum(dtype=np.float64))

    def _preactivation_gradient(self, z, a, y):
        """d(row loss)/dz (softmax with mcxent: in backward_from_labels)."""
        if self.loss in ("mcxent", "xent") and self.activation == "sigmoid":
            if self.loss == "xent":
                return a - y
            return -y * (1.0 - a)
        if self.loss == "mcxent":
            grad_a = -y / a
        elif self.loss == "xent":
            grad_a = (a - y) / (a * (1.0 - a))
        elif self.loss == "mse":
            grad_a = 2.0 * (a - y) / a.shape[1]
        else:
            grad_a = 2.0 * (a - y)
        return _activation_backward(self.activation, z, a, grad_a)

    @exclusive
    def compute_score(self, labels, label_mask=None):
        """Sum of the (masked) per-example losses of the last forward pass / minibatch size."""
        input_shape, rows, z, a, y, row_mask = self._label_rows(labels, label_mask, "compute_score")
        return self._summed_loss(z, a, y, row_mask) / input_shape[0]

    @exclusive
    def backward_from_labels(self, labels, label_mask=None):
        """Gradient of ``compute_score`` for the last forward pass: fills ``gradients`` and
        returns dL/dx."""
        return self._backward_from_rows(*self._label_rows(labels, label_mask, "backward_from_labels"))

    @exclusive
    def score_and_backward(self, labels, label_mask=None):
        """``(compute_score(labels, label_mask), backward_from_labels(labels, label_mask))``,
        the labels checked and laid out as rows once (a subclass that defines either method
        gets its own two called)."""
        cls = type(self)
        if (cls.compute_score is not OutputLayer.compute_score
                or cls.backward_from_labels is not OutputLayer.backward_from_labels):
            return (self.compute_score(labels, label_mask),
                    self.backward_from_labels(labels, label_mask))
        label_rows = self._label_rows(labels, label_mask, "score_and_backward")
        input_shape, rows, z, a, y, row_mask = label_rows
        score = self._summed_loss(z, a, y, row_mask) / input_shape[0]
        return score, self._backward_from_rows(*label_rows)

    def _backward_from_rows(self, input_shape, rows, z, a, y, row_mask):
        if self.loss == "mcxent" and self.activation == "softmax":
            # (a sum(y) - y) * mask / minibatch in one pass
            dz = np.empty(a.shape, dtype=self.dtype)
            mask = None if row_mask is None else np.ascontiguousarray(row_mask[:, 0])
            _in_row_parts(a.shape[0], a.size, lambda lo, hi: (
                _training_math.cross_entropy_of_softmax_gradient(
                    a[lo:hi], y[lo:hi], None if mask is None else mask[lo:hi], input_shape[0],
                    dz[lo:hi])))
        else:
            dz = self._preactivation_gradient(z, a, y)
            if row_mask is not None:
                dz = dz * row_mask
            dz = (dz / input_shape[0]).astype(self.dtype, copy=False)
        return self._backward_from_preactivation_gradient(dz, input_shape, rows)

    def _describe(self):
        return (f"{type(self).__name__}(n_in={self.n_in}, n_out={self.n_out}, activation={self.activation!r}, "
                f"loss={self.loss!r}, dtype={self.dtype.name})")


class RnnOutputLayer(OutputLayer):
    """Output layer applied at every time step: input ``[minibatch, nIn, T]``, labels
    ``[minibatch, nOut, T]``, label mask ``[minibatch, T]``.

    ``RnnOutputLayer(n_in, n_out, *, activation="softmax", loss="mcxent", ...)`` (also
    ``activation="identity", loss="mse"``); DL4J layout ``W`` ``[nIn, nOut]``, ``b`` ``[nOut]``.
    """

    sequence_output = True

    def _check_data_rank(self, x):
        if x.ndim != 3:
            raise ValueError(f"RnnOutputLayer takes sequences [minibatch, nIn, T]; got shape {x.shape} "
                             f"(use OutputLayer for 2-D data)")


