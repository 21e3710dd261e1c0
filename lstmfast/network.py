"""A small training stack around the recurrent layers: dense and output layers, a
``Sequential`` container with full or truncated BPTT, and the SGD/Adam updaters.

Conventions (DL4J's, where DL4J has one):

* Parameter layout: ``DenseLayer`` / ``OutputLayer`` / ``RnnOutputLayer`` have ``W`` ``[nIn, nOut]``
  (Fortran-order view of the flat array) then ``b`` ``[nOut]``; a ``Sequential`` owns one flat
  vector holding every layer's parameters in layer order (DL4J's ``MultiLayerNetwork.params()``),
  and the layers' arrays are views into it; likewise the gradients.
* Initialisation: Xavier with fanIn = nIn, fanOut = nOut (DL4J's DefaultParamInitializer),
  biases ``bias_init`` (0).
* Score: the sum of the per-example (per example and time step, for sequences) losses, label
  mask applied, divided by the minibatch size (DL4J's ``BaseOutputLayer.computeScore``: the
  sum is divided by ``input.size(0)``, *not* by the number of time steps), plus the L2 term
  ``0.5 * l2 * sum(w**2)`` over weights (``l2_bias`` for biases), as DL4J's ``calcL2``. The L2
  term is added after the division (DL4J 1.0's order; 0.9.x divided it by the minibatch size too,
  which makes the score inconsistent with the gradient it reports).
* Gradients: ``gradients`` is the exact gradient of that score (DL4J divides the summed loss
  gradient by the minibatch size in its updater; here the output layer does it), L2 included.
* Losses: "mcxent" (= "negativeloglikelihood"; -sum y log p per row; with softmax computed
  through log-softmax, so it never takes log 0), "xent" (binary cross-entropy), "mse" (DL4J's
  LossMSE: squared error averaged over the nOut outputs), "l2" (squared error summed).
* Masks: the feature mask goes to the recurrent layers; when no label mask is given for
  sequence labels, the feature mask is used (DL4J propagates the feature mask to the output
  layer).
* Threads: as the recurrent layers (``lstmfast.layers``, "Threads"), every layer and every
  ``Sequential`` runs one call at a time; a call made while another thread is inside a call on
  the same object raises ``lstmfast.layers.ConcurrentUseError`` (a ``RuntimeError``) at once and
  changes nothing. A ``Sequential`` call holds the whole network (and so each of its layers)
  for its duration: ``fit_batch`` is one unit for other threads. While a network call (``output``,
  ``score``, ``compute_gradient_and_score``, ``fit_batch``) or a dense or output layer's product
  runs, every OpenBLAS copy in the process is held at one thread (``lstmfast._blas_threads``):
  the recurrent layers' passes split across ``lstmfast.set_num_threads`` threads, and an OpenBLAS
  helper thread woken by a dense layer's product would keep polling on a core they need. Each
  copy gets its own thread count back when the last such call ends.
"""

import numbers

import numpy as np

from . import _blas_threads
from . import kernels as _kernels
from ._checks import check_choice, check_dtype, check_non_negative, check_size, seed_sequence
from ._guard import Guarded, exclusive
from .layers import (WEIGHT_INITS, BidirectionalBase, FlatParameterLayer, UnidirectionalLSTM,
                     UnsupportedOperationError, init_weights)
from .layers.bidirectional import BIDIRECTIONAL_MODES, combine_directions
from .updaters import Adam, Rollback, Sgd

__all__ = [
    "DenseLayer",
    "OutputLayer",
    "RnnOutputLayer",
    "SimpleRnn",
    "GlobalPooling",
    "Sequential",
    "Sgd",
    "Adam",
    "DENSE_ACTIVATIONS",
    "LOSS_FUNCTIONS",
]

# --------------------------------------------------------------------------------------
# activations of dense/output layers (row-wise over the last axis of a 2-D array)


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _softmax(z):
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


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
    edge = m if by_rows else n
    bounds = [edge * i // parts for i in range(parts + 1)]

    def part(i):
        lo, hi = bounds[i], bounds[i + 1]
        if by_rows:
            np.matmul(a[lo:hi], b, out=out[lo:hi])
        else:                  # a block of columns: BLAS takes it with the whole row's stride
            np.matmul(a, b[:, lo:hi], out=out[:, lo:hi])

    with _blas_threads.held():
        _blas_threads.run_parts(parts, part)
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
        if max(minibatch * steps, self.n_in, self.n_out) > _kernels.BLAS_INT_MAX:
            raise ValueError(
                f"{type(self).__name__}.{what}: problem too large: minibatch={minibatch}, "
                f"nIn={self.n_in}, nOut={self.n_out}, T={steps}; a BLAS dimension (minibatch*T, "
                f"nIn or nOut) exceeds what the BLAS integer of this SciPy build can address "
                f"({_kernels.BLAS_INT_MAX})")

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
        y_rows = _to_rows(y.astype(self.dtype, copy=False))
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
        if self.loss == "mcxent":
            if self.activation == "softmax":
                log_p = z - z.max(axis=1, keepdims=True)
                log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
            else:  # sigmoid: log a = -softplus(-z)
                log_p = -np.logaddexp(0, -z)
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

    def _preactivation_gradient(self, z, a, y):
        """d(row loss)/dz."""
        if self.loss == "mcxent" and self.activation == "softmax":
            return a * y.sum(axis=1, keepdims=True) - y
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
        losses = self._row_losses(z, a, y)
        if row_mask is not None:
            losses = losses * row_mask[:, 0]
        return float(losses.sum(dtype=np.float64)) / input_shape[0]

    @exclusive
    def backward_from_labels(self, labels, label_mask=None):
        """Gradient of ``compute_score`` for the last forward pass: fills ``gradients`` and
        returns dL/dx."""
        input_shape, rows, z, a, y, row_mask = self._label_rows(labels, label_mask, "backward_from_labels")
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


# --------------------------------------------------------------------------------------
# inference-only layers of DL4J ComputationGraphs (see lstmfast.dl4j.load_graph)

class SimpleRnn:
    """DL4J's SimpleRnn for inference: ``out_t = act(x_t W + out_{t-1} RW + b)`` over
    ``x`` ``[minibatch, n_in, T]``, no state before the first step.

    ``params`` is DL4J's flat layout: ``W`` ``[n_in, n_out]`` then ``RW`` ``[n_out, n_out]`` (both
    Fortran order) then ``b`` ``[n_out]``; with ``mode`` (one of ``BIDIRECTIONAL_MODES``) the layer
    is DL4J's ``Bidirectional`` around a SimpleRnn: the forward direction's parameters, then the
    backward one's, combined by ``mode``. The layer's arrays are views into ``params``.
    """

    def __init__(self, n_in, n_out, activation="tanh", *, params, mode=None):
        n_in, n_out = check_size("n_in", n_in), check_size("n_out", n_out)
        self.n_in, self.n_out = n_in, n_out
        self.activation = check_choice("activation", activation, DENSE_ACTIVATIONS)
        self.mode = None if mode is None else check_choice("mode", mode, BIDIRECTIONAL_MODES)
        flat = np.asarray(params).reshape(-1)
        per_direction = n_in * n_out + n_out * n_out + n_out
        directions = 1 if self.mode is None else 2
        if flat.size != directions * per_direction:
            raise ValueError(f"params: expected {directions * per_direction} values for "
                             f"{directions} direction(s) of SimpleRnn({n_in}, {n_out}); "
                             f"got {flat.size}")
        self.params = flat
        self.directions = []
        for d in range(directions):
            piece = flat[d * per_direction:(d + 1) * per_direction]
            w = piece[:n_in * n_out].reshape((n_in, n_out), order="F")
            rw = piece[n_in * n_out:n_in * n_out + n_out * n_out].reshape((n_out, n_out), order="F")
            b = piece[n_in * n_out + n_out * n_out:]
            self.directions.append((w, rw, b))

    def num_params(self):
        return self.params.size

    def _direction(self, x, w, rw, b, forwards):
        minibatch, _, steps = x.shape
        out = np.empty((minibatch, self.n_out, steps), dtype=np.result_type(x, w))
        previous = None
        for t in (range(steps) if forwards else range(steps - 1, -1, -1)):
            z = x[:, :, t] @ w + b
            if previous is not None:
                z += previous @ rw
            previous = _activation_forward(self.activation, z)
            out[:, :, t] = previous
        return out

    def forward(self, x, mask=None, training=False):
        """The layer's output ``[minibatch, n_out, T]`` (``2 n_out`` for a concat)."""
        if mask is not None:
            raise ValueError("SimpleRnn does not take masks")
        if np.ndim(x) != 3 or np.shape(x)[1] != self.n_in:
            raise ValueError(f"x: expected [minibatch, {self.n_in}, T]; got shape {np.shape(x)}")
        outs = [self._direction(x, *arrays, forwards=(d == 0))
                for d, arrays in enumerate(self.directions)]
        return outs[0] if self.mode is None else combine_directions(self.mode, *outs)

    def __repr__(self):
        inner = f"SimpleRnn(n_in={self.n_in}, n_out={self.n_out}, activation={self.activation!r})"
        return inner if self.mode is None else f"Bidirectional({inner}, mode={self.mode!r})"


class GlobalPooling:
    """DL4J's GlobalPoolingLayer over time for inference: ``[minibatch, n, T]`` to ``[minibatch, n]``
    by ``kind`` "max", "avg", "sum" or "pnorm" (``(sum |x|^p)^(1/p)``)."""

    KINDS = ("max", "avg", "sum", "pnorm")

    def __init__(self, kind="max", p=2):
        self.kind = check_choice("kind", kind, self.KINDS)
        self.p = check_size("p", p)

    def num_params(self):
        return 0

    def forward(self, x, mask=None, training=False):
        if mask is not None:
            raise ValueError("GlobalPooling does not take masks")
        if np.ndim(x) != 3:
            raise ValueError(f"x: global pooling over time takes [minibatch, n, T]; got shape "
                             f"{np.shape(x)}")
        if self.kind == "max":
            return x.max(axis=2)
        if self.kind == "avg":
            return x.mean(axis=2)
        if self.kind == "sum":
            return x.sum(axis=2)
        return (np.abs(x) ** self.p).sum(axis=2) ** (1.0 / self.p)

    def __repr__(self):
        return f"GlobalPooling({self.kind}{', p=%d' % self.p if self.kind == 'pnorm' else ''})"


# --------------------------------------------------------------------------------------
# the container


_RECURRENT_TYPES = (UnidirectionalLSTM, BidirectionalBase)


class Sequential(Guarded):
    """A stack of layers with one flat parameter vector, like DL4J's MultiLayerNetwork.

    ``Sequential(layers, *, updater=None, l2=0.0, l2_bias=0.0, tbptt_forward_length=None,
    tbptt_backward_length=None)``. ``updater``: an ``Sgd`` or ``Adam`` (default ``Sgd(0.1)``).
    With ``tbptt_forward_length`` set, ``fit_batch`` trains with truncated BPTT as DL4J's
    ``doTruncatedBPTT``: windows of that many steps, each a forward pass from the state carried
    from the previous window, a backward pass of ``tbptt_backward_length`` steps (default: the
    forward length) and an update; the state is cleared before and after each minibatch.

    The layers' parameters and gradients move into the container's flat vectors (values kept);
    ``layer.params``, ``layer.W`` etc. are views into ``net.params`` from then on.

    Threads: one call at a time. A call made while another thread is inside a call on the
    network raises ``lstmfast.layers.ConcurrentUseError`` ("network is in use by another
    thread") at once and changes nothing; ``fit_batch`` holds the network for the whole step
    (forward, backward and update). Calling one of its layers directly from another thread
    while the network runs makes whichever of the two reaches that layer second fail with the
    same error (a network call may then stop part-way: don't do this).
    """

    guard_noun = "network"

    def __init__(self, layers, *, updater=None, l2=0.0, l2_bias=0.0, tbptt_forward_length=None,
                 tbptt_backward_length=None):
        layers = list(layers)
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, FlatParameterLayer):
                raise TypeError(f"layer {i} is not an lstmfast layer: {type(layer).__name__}")
            if layer.owner is not None:
                raise ValueError(f"layer {i} ({layer!r}) already belongs to another Sequential; create a new layer")
        for i in range(1, len(layers)):
            if layers[i].n_in != layers[i - 1].n_out:
                raise ValueError(f"layer {i} ({layers[i]!r}) has n_in = {layers[i].n_in} but layer {i - 1} "
                                 f"({layers[i - 1]!r}) has n_out = {layers[i - 1].n_out}")
        dtypes = {layer.dtype for layer in layers}
        if len(dtypes) != 1:
            raise TypeError(f"all layers must have the same dtype; got {', '.join(sorted(d.name for d in dtypes))}")
        for i, layer in enumerate(layers[:-1]):
            if isinstance(layer, OutputLayer):
                raise ValueError(f"layer {i} is an output layer; output layers must come last")
        self.layers = layers
        self.dtype = layers[0].dtype
        self.updater = updater if updater is not None else Sgd(0.1)
        if not hasattr(self.updater, "apply"):
            raise TypeError(f"updater must be an Sgd or Adam instance; got {type(updater).__name__}")
        self.l2 = check_non_negative("l2", l2)
        self.l2_bias = check_non_negative("l2_bias", l2_bias)
        if tbptt_forward_length is None and tbptt_backward_length is not None:
            raise ValueError("tbptt_backward_length needs tbptt_forward_length (truncated BPTT is off)")
        self.tbptt_forward_length = (None if tbptt_forward_length is None
                                     else check_size("tbptt_forward_length", tbptt_forward_length))
        self.tbptt_backward_length = (self.tbptt_forward_length if tbptt_backward_length is None
                                      else check_size("tbptt_backward_length", tbptt_backward_length))

        total = sum(layer.num_params() for layer in layers)
        self._param_array = np.zeros(total, dtype=self.dtype)
        self._gradient_array = np.zeros(total, dtype=self.dtype)
        self._bind_layers()
        weight_mask = np.concatenate([layer.weight_param_mask() for layer in layers])
        self._l2_coefficients = np.where(weight_mask, self.l2, self.l2_bias).astype(self.dtype)
        self.last_window_scores = []
        #: dL/dx of the network input from the last backward pass (the score's gradient)
        self.input_gradient = None

    def _bind_layers(self):
        """Move each layer's parameters and gradients into its slice of this network's flat
        vectors and make the network their owner."""
        offset = 0
        for layer in self.layers:
            n = layer.num_params()
            layer.bind_storage(self._param_array[offset:offset + n],
                                self._gradient_array[offset:offset + n], owner=self)
            offset += n

    def __setstate__(self, state):
        super().__setstate__(state)
        # pickling and deep copies give each layer flat arrays of its own: bind them to this
        # network's vectors again, as the constructor did
        self._bind_layers()

    # ---- parameters --------------------------------------------------------------------
    def num_params(self):
        return self._param_array.shape[0]

    @property
    def params(self):
        """Every layer's parameters, one flat vector in DL4J order (layers' arrays are views)."""
        return self._param_array

    @params.setter
    @exclusive
    def params(self, values):
        arr = np.asarray(values)
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"params must be a real array, got dtype {arr.dtype}")
        if arr.size != self.num_params() or arr.ndim > 2 or (arr.ndim == 2 and 1 not in arr.shape):
            raise ValueError(f"params: expected a flat array of {self.num_params()} values, got shape {arr.shape}")
        self._param_array[...] = arr.reshape(-1)

    @property
    def gradients(self):
        """Gradient of the score with respect to ``params`` (same layout), from the last
        ``compute_gradient_and_score`` / ``fit_batch`` (last window, with truncated BPTT)."""
        return self._gradient_array

    def param_table(self):
        """DL4J keys (``"0_W"``, ``"0_RW"``, ...) → views into ``params``."""
        return {f"{i}_{key}": view for i, layer in enumerate(self.layers) for key, view in layer.param_table().items()}

    # ---- passes ------------------------------------------------------------------------
    @property
    def output_layer(self):
        last = self.layers[-1]
        if not isinstance(last, OutputLayer):
            raise ValueError(f"the last layer ({last!r}) is not an OutputLayer/RnnOutputLayer: "
                             f"the network has no loss to score or fit")
        return last

    def _check_features(self, x):
        arr = np.asarray(x)
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"x must be a real array, got dtype {arr.dtype}")
        return arr

    def _feed_forward(self, x, mask, training, using_stored_state=False, lengths=None):
        a = self._check_features(x)
        for layer in self.layers:
            if using_stored_state and isinstance(layer, _RECURRENT_TYPES):
                a = layer.rnn_activate_using_stored_state(a, mask=mask, training=training,
                                                          store_last_for_tbptt=True)
            elif lengths is not None and isinstance(layer, _RECURRENT_TYPES):
                a = layer.forward(a, mask=mask, training=training, lengths=lengths)
            else:
                a = layer.forward(a, mask=mask, training=training)
        return a

    @exclusive
    @_blas_threads.holding
    def output(self, x, mask=None, *, lengths=None):
        """Inference pass: the last layer's activations. ``lengths`` ``[minibatch]`` (instead
        of a mask) goes to every recurrent layer: each example's steps are its first
        ``lengths[m]``, and a recurrent layer's output is zero after them (the layers after it
        see those zeros, as ONNX's ``sequence_lens`` gives them)."""
        return self._feed_forward(x, mask, training=False, lengths=lengths)

    def _regularisation_score(self):
        if self.l2 == 0.0 and self.l2_bias == 0.0:
            return 0.0
        p = self._param_array.astype(np.float64)
        return 0.5 * float(np.dot(self._l2_coefficients.astype(np.float64) * p, p))

    def _effective_label_mask(self, labels, mask, label_mask, lengths=None):
        if label_mask is None and mask is not None and np.ndim(labels) == 3:
            return mask
        if label_mask is None and lengths is not None and np.ndim(labels) == 3:
            # the steps past each length carry no label (as a prefix mask would say)
            steps = np.shape(labels)[2]
            return (np.arange(steps)[None, :] < np.asarray(lengths)[:, None]).astype(np.float64)
        return label_mask

    @exclusive
    @_blas_threads.holding
    def score(self, x, y, mask=None, label_mask=None, *, lengths=None):
        """Loss of the (inference) output, DL4J's convention: sum over examples (and time
        steps) / minibatch + L2 term. ``lengths`` as in ``output``; without a label mask, the
        steps past each length carry no label."""
        out_layer = self.output_layer
        self._feed_forward(x, mask, training=False, lengths=lengths)
        return out_layer.compute_score(y, self._effective_label_mask(y, mask, label_mask, lengths)) \
            + self._regularisation_score()

    def _backpropagate(self, y, mask, label_mask, tbptt_length, lengths=None):
        out_layer = self.output_layer
        label_mask = self._effective_label_mask(y, mask, label_mask, lengths)
        score = out_layer.compute_score(y, label_mask) + self._regularisation_score()
        epsilon = out_layer.backward_from_labels(y, label_mask)
        for layer in reversed(self.layers[:-1]):
            epsilon = layer.backward(epsilon, tbptt_length=tbptt_length)
        self.input_gradient = epsilon
        if self.l2 != 0.0 or self.l2_bias != 0.0:
            self._gradient_array += self._l2_coefficients * self._param_array
        return score

    @exclusive
    @_blas_threads.holding
    def compute_gradient_and_score(self, x, y, mask=None, label_mask=None, *, lengths=None):
        """Full BPTT: fills ``gradients`` with the gradient of ``score`` and returns the score."""
        self._feed_forward(x, mask, training=True, lengths=lengths)
        return self._backpropagate(y, mask, label_mask, None, lengths)

    @exclusive
    @_blas_threads.holding
    def fit_batch(self, x, y, mask=None, label_mask=None, *, lengths=None):
        """One training step on a minibatch (or, with truncated BPTT, one step per window).
        Returns the score (DL4J's: with truncated BPTT, the last window's score; all window
        scores are in ``last_window_scores``). ``lengths`` as in ``output`` (full BPTT only)."""
        if lengths is not None and self.tbptt_forward_length is not None:
            raise ValueError("fit_batch: lengths with truncated BPTT is not available (the "
                             "windows' steps would differ per example); pass a mask instead")
        if self.tbptt_forward_length is None:
            score = self.compute_gradient_and_score(x, y, mask, label_mask, lengths=lengths)
            self.updater.apply(self._param_array, self._gradient_array)
            self.last_window_scores = [score]
            return score
        return self._fit_truncated_bptt(x, y, mask, label_mask)

    def _fit_truncated_bptt(self, x, y, mask, label_mask):
        for i, layer in enumerate(self.layers):
            if isinstance(layer, BidirectionalBase):
                raise UnsupportedOperationError(
                    f"truncated BPTT is not possible with bidirectional layers (layer {i}: {layer!r})")
        x = self._check_features(x)
        y_arr = np.asarray(y)
        if x.ndim != 3 or y_arr.ndim != 3:
            raise ValueError(f"truncated BPTT needs sequences: x [minibatch, nIn, T] and labels "
                             f"[minibatch, nOut, T]; got shapes {x.shape} and {y_arr.shape}")
        if y_arr.shape[2] != x.shape[2]:
            raise ValueError(f"labels have {y_arr.shape[2]} time steps but x has {x.shape[2]}")
        length = x.shape[2]
        window = self.tbptt_forward_length
        n_windows = -(-length // window)
        label_mask = self._effective_label_mask(y_arr, mask, label_mask)
        self.rnn_clear_previous_state()
        scores = []
        # a minibatch is one step for the caller: interrupted (or failing) in a later window,
        # it leaves the parameters and the updater as they were before the first
        rollback = Rollback(self._param_array, self.updater, deep=True)
        try:
            for k in range(n_windows):
                start, stop = k * window, min((k + 1) * window, length)
                window_mask = None if mask is None else np.asarray(mask)[:, start:stop]
                window_label_mask = None if label_mask is None else np.asarray(label_mask)[:, start:stop]
                self._feed_forward(x[:, :, start:stop], window_mask, training=True, using_stored_state=True)
                score = self._backpropagate(y_arr[:, :, start:stop], window_mask, window_label_mask,
                                            self.tbptt_backward_length)
                self.updater.apply(self._param_array, self._gradient_array)
                scores.append(score)
        except BaseException:
            rollback.restore()
            raise
        finally:
            self.rnn_clear_previous_state()
        self.last_window_scores = scores
        return scores[-1]

    # ---- streaming ---------------------------------------------------------------------
    @exclusive
    def rnn_time_step(self, x, mask=None):
        """Stream through the network from the stored states (DL4J's ``rnnTimeStep``): x
        ``[minibatch, nIn]`` → ``[minibatch, nOut]``, ``[minibatch, nIn, T]`` → ``[..., T]``."""
        a = self._check_features(x)
        if not any(isinstance(layer, _RECURRENT_TYPES) for layer in self.layers):
            raise ValueError("rnn_time_step: the network has no recurrent layer (use output)")
        one_step = a.ndim == 2
        if one_step:  # as DL4J: a single step [minibatch, nIn] is the sequence [minibatch, nIn, 1]
            a = a[:, :, np.newaxis]
        for layer in self.layers:
            if isinstance(layer, _RECURRENT_TYPES):
                a = layer.rnn_time_step(a, mask=mask)
            else:
                a = layer.forward(a, mask=mask, training=False)
        return a[:, :, 0] if one_step else a

    @exclusive
    def rnn_clear_previous_state(self):
        """Clear every layer's streaming and truncated-BPTT state."""
        for layer in self.layers:
            layer.rnn_clear_previous_state()

    def __repr__(self):
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Sequential([\n  {inner}\n], {self.num_params()} parameters)"

