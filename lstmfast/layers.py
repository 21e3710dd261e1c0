"""DL4J's recurrent layers on top of ``lstm_forward`` / ``lstm_backward``.

GravesLSTM (peepholes), LSTM (no peepholes), GravesBidirectionalLSTM and the
``Bidirectional`` wrapper, with Deeplearning4j's parameter layout, initialisation,
streaming state (``rnnTimeStep``), truncated-BPTT state (``rnnActivateUsingStoredState`` /
``tBpttStateMap``), DropConnect on the input weights and ``getMemoryReport``.

No gate arithmetic lives here: every forward and backward pass is one call of the
compiled kernels through :func:`lstmfast.lstm_forward` / :func:`lstmfast.lstm_backward`.

Parameter layout (DL4J's, so that flat parameter vectors are interchangeable):

* one flat 1-D array ``layer.params``; ``W`` ``[nIn, 4h]``, ``RW`` ``[h, 4h]`` (LSTM) or
  ``[h, 4h+3]`` (GravesLSTM, peephole columns wFF, wOO, wGG last) and ``b`` ``[4h]`` are its
  consecutive slices, the matrices reshaped in Fortran order (``W[i, j] = params[i + j*nIn]``);
* gate blocks within every ``4h``: block input (layer activation), forget, output, input gate;
* ``layer.gradients`` has the same layout;
* GravesBidirectionalLSTM: ``WF, RWF, bF, WB, RWB, bB``; the Bidirectional wrapper: the
  forward layer's parameters, then the backward layer's (DL4J keys ``fW, fRW, fb, bW, bRW, bb``).

Threads. A layer keeps per-call state (the record of the last training pass, the streaming
and truncated-BPTT states, the gradients), so one layer object must not run two calls at once.
Every call that reads or changes that state (``forward``, ``backward``, ``rnn_time_step``,
``rnn_activate_using_stored_state``, ``rnn_set_previous_state``, ``rnn_clear_previous_state``,
``reset_parameters`` and assigning ``params``) holds the layer for its duration, without
waiting: a second thread calling into a layer that is in use gets
:class:`ConcurrentUseError` (a ``RuntimeError``: "layer is in use by another thread") at once,
and the layer is left exactly as the running call leaves it. Nothing is corrupted and nothing
blocks; the caller decides whether to retry, wait on its own lock, or use one layer per thread
(layers are cheap; share the weights by copying ``params``). The guard is per call: a training
step is two calls (``forward(x, training=True)`` then ``backward``), and another thread's
training ``forward`` in between replaces the record the ``backward`` uses, so give each thread
its own layer (or train through a ``Sequential``, whose ``fit_batch`` holds every layer for the
whole step). Writing into ``params`` / ``W`` / ``RW`` / ``b`` in place while a pass runs in
another thread is not detected (the pass may see old or new values). Passes on *different*
layers, or ``lstm_forward``/``lstm_backward`` calls sharing read-only weights, run in parallel
(the kernels release the GIL) and give bit for bit the results of running them one by one.
"""

import abc
import dataclasses
import functools
import math
import numbers
import threading

import numpy as np

from . import kernels as _kernels
from .functional import ACTIVATIONS as LAYER_ACTIVATIONS
from .functional import (GATE_ACTIVATIONS, bind_stream_step, lstm_backward, lstm_forward,
                         problem_size_ok)

__all__ = [
    "GravesLSTM",
    "LSTM",
    "UnidirectionalLSTM",
    "GravesBidirectionalLSTM",
    "Bidirectional",
    "LayerMemoryReport",
    "UnsupportedOperationError",
    "ConcurrentUseError",
    "CACHE_MODES",
    "LAYER_ACTIVATIONS",
    "GATE_ACTIVATIONS",
    "WEIGHT_INITS",
]

#: Weight initialisations (DL4J's ``WeightInit`` names, lower case).
WEIGHT_INITS = (
    "xavier", "xavier_uniform", "xavier_fan_in", "xavier_legacy", "lecun_normal", "normal",
    "relu", "relu_uniform", "sigmoid_uniform", "uniform", "lecun_uniform", "zero", "ones",
)
#: DL4J's cache modes; the memory report gives its per-cache-mode numbers for each.
CACHE_MODES = ("NONE", "SINGLE", "HOST", "DEVICE")


class UnsupportedOperationError(RuntimeError):
    """An operation the layer cannot do by construction (DL4J's UnsupportedOperationException),
    e.g. streaming or truncated BPTT through a bidirectional layer."""


class ConcurrentUseError(RuntimeError):
    """A layer (or network) was called while another thread was inside a call on it. Raised at
    once, before anything is changed; the running call is not disturbed."""


# --------------------------------------------------------------------------------------
# the in-use guard (see "Threads" in the module docstring)

_GUARD_CREATION = threading.Lock()


def _in_use_lock(obj):
    """The object's re-entrant in-use lock, made on first use (so that every constructor,
    copy and unpickled object gets one without having to ask for it)."""
    lock = obj.__dict__.get("_in_use_lock")
    if lock is None:
        with _GUARD_CREATION:
            lock = obj.__dict__.get("_in_use_lock")
            if lock is None:
                lock = threading.RLock()
                obj.__dict__["_in_use_lock"] = lock
    return lock


def _exclusive(method):
    """Run ``method`` holding the object's in-use lock; raise ConcurrentUseError, without
    waiting, if another thread holds it (the same thread may re-enter: containers call their
    layers, layers call their own guarded methods)."""
    what = method.__name__

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        lock = _in_use_lock(self)
        if not lock.acquire(blocking=False):
            raise _busy_error(self, what)
        try:
            return method(self, *args, **kwargs)
        finally:
            lock.release()

    return guarded


def _busy_error(obj, what):
    kind = "network" if getattr(obj, "_guard_noun", "layer") == "network" else "layer"
    return ConcurrentUseError(
        f"{type(obj).__name__}.{what}: {kind} is in use by another thread (a call on it is "
        f"still running). A {kind} keeps per-call state and runs one call at a time: use one "
        f"{kind} per thread, or serialise the calls with your own lock")


class _Guarded:
    """Objects with an in-use lock: the lock is not part of their pickled or copied state."""

    #: per-process attributes, left out of pickles and copies (remade on first use)
    _transient_attributes = ("_in_use_lock",)

    def __getstate__(self):
        state = self.__dict__.copy()
        for name in self._transient_attributes:
            state.pop(name, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)


# --------------------------------------------------------------------------------------
# argument checking and initialisation helpers


def _check_size(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def _check_dtype(dtype):
    try:
        resolved = np.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from err
    if resolved not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64, got {resolved}")
    return resolved


def _check_choice(name, value, choices):
    if not isinstance(value, str) or value.lower() not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value.lower()


def _seed_sequence(seed):
    """``seed`` may be None (fresh entropy), a non-negative int, or a SeedSequence."""
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if seed is None:
        return np.random.SeedSequence()
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise TypeError(f"seed must be None, a non-negative integer or a numpy SeedSequence, got {seed!r}")
    return np.random.SeedSequence(int(seed))


def init_weights(rng, shape, fan_in, fan_out, scheme, dtype):
    """DL4J's ``WeightInitUtil.initWeights`` for one parameter matrix.

    Values are drawn in float64 for the flattened (Fortran-order) parameter slice, then cast,
    so a seed gives the same values in float32 and float64 (up to rounding).
    """
    n = int(np.prod(shape))
    if scheme == "xavier":
        values = rng.standard_normal(n) * math.sqrt(2.0 / (fan_in + fan_out))
    elif scheme == "xavier_uniform":
        s = math.sqrt(6.0) / math.sqrt(fan_in + fan_out)
        values = rng.uniform(-s, s, n)
    elif scheme in ("xavier_fan_in", "lecun_normal", "normal"):
        values = rng.standard_normal(n) / math.sqrt(fan_in)
    elif scheme == "xavier_legacy":
        values = rng.standard_normal(n) / math.sqrt(shape[0] + shape[1])
    elif scheme == "relu":
        values = rng.standard_normal(n) * math.sqrt(2.0 / fan_in)
    elif scheme == "relu_uniform":
        u = math.sqrt(6.0 / fan_in)
        values = rng.uniform(-u, u, n)
    elif scheme == "sigmoid_uniform":
        r = 4.0 * math.sqrt(6.0 / (fan_in + fan_out))
        values = rng.uniform(-r, r, n)
    elif scheme == "uniform":
        a = 1.0 / math.sqrt(fan_in)
        values = rng.uniform(-a, a, n)
    elif scheme == "lecun_uniform":
        b = 3.0 / math.sqrt(fan_in)
        values = rng.uniform(-b, b, n)
    elif scheme == "zero":
        values = np.zeros(n)
    elif scheme == "ones":
        values = np.ones(n)
    else:  # pragma: no cover - schemes are validated by the constructors
        raise ValueError(f"weight_init must be one of {', '.join(WEIGHT_INITS)}; got {scheme!r}")
    return values.astype(dtype)


def _as_state(name, value, minibatch, n_out, dtype):
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a real array, got dtype {arr.dtype}")
    if arr.shape != (minibatch, n_out):
        raise ValueError(f"{name} must have shape [minibatch, nOut] = ({minibatch}, {n_out}); got {arr.shape}")
    return np.array(arr, dtype=dtype, order="F", copy=True)


# --------------------------------------------------------------------------------------
# memory report


@dataclasses.dataclass
class LayerMemoryReport:
    """DL4J's ``LayerMemoryReport`` for an LSTM layer, plus what this implementation allocates.

    DL4J part (the seed's ``getMemoryReport`` arithmetic), in array elements:

    * ``parameter_size``, ``updater_state_size``;
    * ``working_memory_fixed_inference`` (0) and ``working_memory_variable_inference``
      (per example: ``T * 4 * nOut``, the ifog activations);
    * ``working_memory_fixed_train`` / ``working_memory_variable_train``, per cache mode, per
      example: ``4T nOut + 6T nOut + (9 Graves | 6) T nOut`` with cache mode NONE, without the
      ``6T nOut`` forward-pass cache otherwise;
    * ``cache_memory_fixed`` / ``cache_memory_variable`` per cache mode (per example
      ``6 T nOut`` unless NONE);
    * bidirectional layers double every figure, as the seed does.

    ``total_elements`` / ``total_bytes`` add these up the way DL4J's
    ``getMemoryBytes``/``getTotalMemoryBytes`` do (parameters, their gradients when training,
    activations, activation gradients when training, updater state, working and cache memory)
    for ``minibatch`` examples; unlike DL4J, the variable inference working memory is
    multiplied by the minibatch size too (it is a per-example figure).

    Beyond the seed: ``allocated_bytes`` holds what this implementation really allocates (the
    peak of newly allocated memory, excluding the parameters, the gradient vector, the input
    and epsilon) for ``"inference"`` (``forward(x)``) and ``"training"`` (``forward(x,
    training=True)`` then ``backward(epsilon)``, the caller not keeping the output), for
    ``ts_length`` and ``minibatch``. It counts the arrays (sized with the kernels' own
    ``cache_size`` / ``*_workspace_size``); the 1-2 KB of Python objects per pass are not
    counted, so it is exact to within a few percent from a few tens of KB up.
    """

    layer_type: str
    n_in: int
    n_out: int
    ts_length: int
    minibatch: int
    dtype: str
    bytes_per_element: int
    parameter_size: int
    updater_state_size: int
    working_memory_fixed_inference: int
    working_memory_variable_inference: int
    working_memory_fixed_train: dict
    working_memory_variable_train: dict
    cache_memory_fixed: dict
    cache_memory_variable: dict
    input_elements_per_example: int
    output_elements_per_example: int
    allocated_bytes: dict

    def total_elements(self, mode="training", cache_mode="NONE"):
        """Total array elements for ``minibatch`` examples (``mode``: "training" or "inference")."""
        mode = _check_choice("mode", mode, ("training", "inference"))
        cache_mode = _check_choice("cache_mode", cache_mode, tuple(c.lower() for c in CACHE_MODES)).upper()
        mb = self.minibatch
        total = self.parameter_size + mb * self.output_elements_per_example
        if mode == "inference":
            total += self.working_memory_fixed_inference + mb * self.working_memory_variable_inference
            return total
        total += self.parameter_size  # parameter gradients
        total += mb * self.input_elements_per_example  # activation gradients (epsilon to the layer below)
        total += self.updater_state_size
        total += self.working_memory_fixed_train[cache_mode] + mb * self.working_memory_variable_train[cache_mode]
        total += self.cache_memory_fixed[cache_mode] + mb * self.cache_memory_variable[cache_mode]
        return total

    def total_bytes(self, mode="training", cache_mode="NONE"):
        """``total_elements`` in bytes for the layer's dtype."""
        return self.total_elements(mode, cache_mode) * self.bytes_per_element


def _seed_memory_figures(is_graves, n_out, ts_length):
    """The seed's ``getMemoryReport(isGraves, layer, inputType)`` per-example figures."""
    working_inference = ts_length * 4 * n_out
    forward_cache = ts_length * 6 * n_out
    backprop_working = (9 if is_graves else 6) * ts_length * n_out
    train_variable = {}
    cache_variable = {}
    for mode in CACHE_MODES:
        if mode == "NONE":
            train_variable[mode] = working_inference + forward_cache + backprop_working
            cache_variable[mode] = 0
        else:
            train_variable[mode] = working_inference + backprop_working
            cache_variable[mode] = forward_cache
    return working_inference, train_variable, cache_variable


def _updater_state_size(updater, n_params):
    if updater is None:
        return 0
    if hasattr(updater, "state_size"):
        return int(updater.state_size(n_params))
    name = _check_choice("updater", updater, ("sgd", "momentum", "nesterovs", "adam"))
    return {"sgd": 0, "momentum": n_params, "nesterovs": n_params, "adam": 2 * n_params}[name]


# --------------------------------------------------------------------------------------
# base class: flat parameter storage


class _FlatParameterLayer(_Guarded, abc.ABC):
    """A layer whose parameters (and gradients) are one flat array with named views."""

    n_in: int
    n_out: int
    dtype: np.dtype

    def _allocate_storage(self):
        n = self.num_params()
        self._param_array = np.zeros(n, dtype=self.dtype)
        self._gradient_array = np.zeros(n, dtype=self.dtype)
        self._build_views()

    @abc.abstractmethod
    def num_params(self):
        """Number of parameters (the length of ``params``)."""

    @abc.abstractmethod
    def _build_views(self):
        """(Re)create the named views into ``_param_array`` and ``_gradient_array``."""

    def _check_storage_views(self, param_view, gradient_view):
        n = self.num_params()
        for name, view in (("param_view", param_view), ("gradient_view", gradient_view)):
            if view.ndim != 1 or view.shape[0] != n or view.dtype != self.dtype or not view.flags.c_contiguous:
                raise ValueError(f"{name} must be a contiguous 1-D {self.dtype} array of length {n}; "
                                 f"got shape {view.shape}, dtype {view.dtype}")

    def bind_storage(self, param_view, gradient_view):
        """Move the parameters into ``param_view`` (values copied) and the gradients into
        ``gradient_view``, contiguous 1-D arrays of ``num_params()`` elements in the layer's dtype:
        from then on ``params`` and the named arrays are views into them. For containers that
        own one flat vector for many layers (``Sequential``, DL4J graphs)."""
        self._check_storage_views(param_view, gradient_view)
        param_view[...] = self._param_array
        gradient_view[...] = self._gradient_array
        self._param_array = param_view
        self._gradient_array = gradient_view
        self._build_views()

    # a layer's container (Sequential, Bidirectional) is not part of the layer's pickled state:
    # a copy of a contained layer is a standalone layer, and a copied container sets it again
    _transient_attributes = _Guarded._transient_attributes + ("_owner",)

    def __setstate__(self, state):
        super().__setstate__(state)
        # pickling and deep copies store each named view as an array of its own: make them
        # views of the flat arrays again (bidirectional layers re-bind their directions)
        self._build_views()

    @property
    def params(self):
        """The flat parameter array in DL4J's order (writing into it changes the layer)."""
        return self._param_array

    @params.setter
    @_exclusive
    def params(self, values):
        arr = np.asarray(values)
        n = self.num_params()
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"params must be a real array, got dtype {arr.dtype}")
        if arr.size != n or (arr.ndim == 2 and 1 not in arr.shape) or arr.ndim > 2:
            raise ValueError(f"params: expected a flat array of {n} values for {self._describe()}, "
                             f"got shape {arr.shape} ({arr.size} values)")
        self._param_array[...] = arr.reshape(-1)

    @property
    def gradients(self):
        """The flat gradient array (same layout as ``params``), filled by ``backward``."""
        return self._gradient_array

    @abc.abstractmethod
    def param_table(self):
        """DL4J parameter keys → views into ``params`` (in flat order)."""

    @abc.abstractmethod
    def gradient_table(self):
        """DL4J parameter keys → views into ``gradients`` (in flat order)."""

    @abc.abstractmethod
    def weight_param_mask(self):
        """Boolean flat array: True where the parameter is a weight (DL4J applies l1/l2 to
        weights, l1Bias/l2Bias to biases)."""

    def _describe(self):
        return f"{type(self).__name__}(n_in={self.n_in}, n_out={self.n_out})"

    def __repr__(self):
        return self._describe()


# --------------------------------------------------------------------------------------
# one-direction LSTM layers


class _UnidirectionalLSTM(_FlatParameterLayer):
    """Shared implementation of GravesLSTM (peepholes) and LSTM (no peepholes)."""

    peepholes = True

    def __init__(self, n_in, n_out, *, activation="tanh", gate_activation="sigmoid",
                 forget_gate_bias_init=1.0, weight_init="xavier", dtype=np.float32, seed=None,
                 drop_connect=None):
        self.n_in = _check_size("n_in", n_in)
        self.n_out = _check_size("n_out", n_out)
        self.activation = _check_choice("activation", activation, LAYER_ACTIVATIONS)
        self.gate_activation = _check_choice("gate_activation", gate_activation, GATE_ACTIVATIONS)
        if not isinstance(forget_gate_bias_init, numbers.Real) or isinstance(forget_gate_bias_init, bool):
            raise TypeError(f"forget_gate_bias_init must be a real number, got {forget_gate_bias_init!r}")
        self.forget_gate_bias_init = float(forget_gate_bias_init)
        self.weight_init = _check_choice("weight_init", weight_init, WEIGHT_INITS)
        self.dtype = _check_dtype(dtype)
        if drop_connect is not None:
            if not isinstance(drop_connect, numbers.Real) or isinstance(drop_connect, bool) \
                    or not 0.0 < float(drop_connect) <= 1.0:
                raise ValueError(f"drop_connect must be None (off) or the probability of keeping a weight, "
                                 f"in (0, 1]; got {drop_connect!r}")
            drop_connect = float(drop_connect)
        self.drop_connect = drop_connect
        self.seed = seed
        self._seed_sequence = _seed_sequence(seed)
        init_seq, drop_seq = self._seed_sequence.spawn(2)
        self._drop_connect_rng = np.random.default_rng(drop_seq)
        #: direction in which the kernels process time (False only inside bidirectional layers)
        self._process_forwards = True

        self._allocate_storage()
        self.reset_parameters(np.random.default_rng(init_seq))

        self._record = None                 # forward record of the last training pass
        self.drop_connect_mask = None       # keep-mask of the input weights in that pass
        self.state_gradients = None         # (dL/dh0, dL/dc0) of the last backward pass
        self._stream_state = None           # rnnTimeStep state (h, c)
        self._tbptt_state = None            # tBpttStateMap (h, c)

    # ---- layout ----------------------------------------------------------------------
    def _recurrent_columns(self):
        return 4 * self.n_out + (3 if self.peepholes else 0)

    def _sizes(self):
        h = self.n_out
        return self.n_in * 4 * h, h * self._recurrent_columns(), 4 * h

    def num_params(self):
        return sum(self._sizes())

    def _views_of(self, flat):
        n_w, n_rw, n_b = self._sizes()
        h = self.n_out
        w = flat[:n_w].reshape((self.n_in, 4 * h), order="F")
        rw = flat[n_w:n_w + n_rw].reshape((h, self._recurrent_columns()), order="F")
        b = flat[n_w + n_rw:n_w + n_rw + n_b]
        return w, rw, b

    # rnn_time_step's bound step (functional.bind_stream_step over W, RW, b and the stored state):
    # dropped whenever one of those is rebound, so that it never runs on stale arrays
    _transient_attributes = _FlatParameterLayer._transient_attributes + ("_stream_plan",)

    def _drop_stream_plan(self):
        plan = self.__dict__.pop("_stream_plan", None)
        if plan is not None:
            plan.invalidate()

    @property
    def _stream_state(self):
        return self.__dict__.get("_stream_state_arrays")

    @_stream_state.setter
    def _stream_state(self, state):
        self._drop_stream_plan()
        self.__dict__["_stream_state_arrays"] = state

    def __setstate__(self, state):
        state = dict(state)
        # pickles made before the stored state became a property
        if "_stream_state" in state:
            state["_stream_state_arrays"] = state.pop("_stream_state")
        state.pop("_step_workspaces", None)
        super().__setstate__(state)

    def _build_views(self):
        self._drop_stream_plan()
        self.W, self.RW, self.b = self._views_of(self._param_array)
        self.W_gradient, self.RW_gradient, self.b_gradient = self._views_of(self._gradient_array)

    def param_table(self):
        return {"W": self.W, "RW": self.RW, "b": self.b}

    def gradient_table(self):
        return {"W": self.W_gradient, "RW": self.RW_gradient, "b": self.b_gradient}

    def weight_param_mask(self):
        n_w, n_rw, n_b = self._sizes()
        return np.concatenate([np.ones(n_w + n_rw, dtype=bool), np.zeros(n_b, dtype=bool)])

    @_exclusive
    def reset_parameters(self, rng=None):
        """(Re)initialise as DL4J's LSTM parameter initialisers: weights by ``weight_init`` with
        fanIn = nOut and fanOut = nIn + nOut (DL4J's values for LSTM layers), biases zero except
        the forget-gate block = ``forget_gate_bias_init``."""
        if rng is None:
            rng = np.random.default_rng(self._seed_sequence.spawn(1)[0])
        h = self.n_out
        fan_in, fan_out = h, self.n_in + h
        n_w, n_rw, n_b = self._sizes()
        flat = self._param_array
        flat[:n_w] = init_weights(rng, (self.n_in, 4 * h), fan_in, fan_out, self.weight_init, self.dtype)
        flat[n_w:n_w + n_rw] = init_weights(rng, (h, self._recurrent_columns()), fan_in, fan_out,
                                            self.weight_init, self.dtype)
        self.b[...] = 0
        self.b[h:2 * h] = self.forget_gate_bias_init

    # ---- passes ----------------------------------------------------------------------
    def _check_input(self, x, what):
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError) as err:  # e.g. a ragged nested list
            raise type(err)(f"{type(self).__name__}.{what}: x cannot be made into an array ({err})") from None
        if arr.ndim not in (2, 3):
            raise ValueError(f"{type(self).__name__}.{what}: x must be [minibatch, nIn={self.n_in}, T] "
                             f"or [minibatch, nIn={self.n_in}]; got shape {arr.shape}")
        if arr.shape[1] != self.n_in:
            raise ValueError(f"{type(self).__name__}.{what}: x.shape[1] = {arr.shape[1]} does not match the "
                             f"layer's nIn = {self.n_in} (x shape {arr.shape})")
        return arr

    def _input_weights_for_pass(self, training):
        """The input weights for one pass and the DropConnect keep-mask used (None when off):
        with DropConnect while training, DL4J's non-inverted variant (each weight kept with
        probability p, no rescaling)."""
        if not training or self.drop_connect is None or self.drop_connect >= 1.0:
            return self.W, None
        keep = self._drop_connect_rng.random(self.W.size) < self.drop_connect
        mask = keep.astype(self.dtype).reshape(self.W.shape, order="F")
        return self.W * mask, mask

    def _run(self, x, mask, training, h0, c0):
        input_weights, drop_connect_mask = self._input_weights_for_pass(training)
        record = lstm_forward(
            x, input_weights, self.RW, self.b, h0=h0, c0=c0, peepholes=self.peepholes,
            activation=self.activation, gate_activation=self.gate_activation, mask=mask,
            forwards=self._process_forwards, for_backprop=bool(training))
        # only a pass that completed replaces the record and its keep-mask together: a refused
        # or interrupted pass leaves the previous pair for backward
        self._record = record if training else None
        self.drop_connect_mask = drop_connect_mask
        return record

    def _pass_state(self):
        """What a forward pass replaces (for containers that must undo a half-done pass)."""
        return self._record, self.drop_connect_mask

    def _restore_pass_state(self, state):
        self._record, self.drop_connect_mask = state

    @_exclusive
    def forward(self, x, mask=None, training=False):
        """Output ``[minibatch, nOut, T]`` for x ``[minibatch, nIn, T]`` (or ``[minibatch, nIn]``,
        T = 1), starting from a zero state. ``training=True`` keeps what ``backward`` needs and
        applies DropConnect when enabled. ``mask`` ``[minibatch, T]`` of 0/1. Raises
        ConcurrentUseError if another thread is inside a call on this layer."""
        x = self._check_input(x, "forward")
        return self._run(x, mask, training, None, None).output

    @_exclusive
    def backward(self, epsilon, tbptt_length=None):
        """Back-propagate ``epsilon`` = dL/d(output) ``[minibatch, nOut, T]`` through the last
        training forward pass; fills ``gradients`` and returns dL/dx (shaped like x).
        ``tbptt_length=k`` back-propagates only the last k steps (truncated BPTT). Raises
        ConcurrentUseError if another thread is inside a call on this layer; an interrupted
        call (Ctrl-C) leaves ``gradients`` and the training record as they were."""
        if self._record is None:
            raise ValueError(f"{type(self).__name__}.backward: no training forward pass to back-propagate; "
                             f"call forward(x, training=True) (or rnn_activate_using_stored_state(x, "
                             f"training=True)) first")
        grads = lstm_backward(self._record, epsilon, tbptt_length=tbptt_length)
        if self.drop_connect_mask is not None:
            # exact gradient with respect to the stored weights: the dropped ones get none
            np.multiply(grads.input_weights, self.drop_connect_mask, out=self.W_gradient)
        else:
            self.W_gradient[...] = grads.input_weights
        self.RW_gradient[...] = grads.recurrent_weights
        self.b_gradient[...] = np.reshape(grads.bias, -1)
        self.state_gradients = (grads.h0, grads.c0)
        return grads.input

    # ---- streaming (rnnTimeStep) -------------------------------------------------------
    def _check_streamable(self, what):
        if not self._process_forwards:
            raise UnsupportedOperationError(
                f"{what}: this layer is the backward direction of a bidirectional layer; bidirectional "
                f"layers need the whole sequence at once and cannot be stepped through time")

    @staticmethod
    def _check_state_minibatch(state, x, what):
        if state is not None and state[0].shape[0] != x.shape[0]:
            raise ValueError(
                f"{what}: the stored state has minibatch size {state[0].shape[0]} but the input has "
                f"{x.shape[0]} examples. Possible cause: using rnn_time_step() without calling "
                f"rnn_clear_previous_state() between different sequences")

    def rnn_time_step(self, x, mask=None):
        """Continue from the stored state with x ``[minibatch, nIn]`` (one step, returns
        ``[minibatch, nOut]``) or ``[minibatch, nIn, T]`` (returns ``[minibatch, nOut, T]``) and
        store the new state. Inference only (no DropConnect, nothing kept for backward). Raises
        ConcurrentUseError if another thread is inside a call on this layer; an interrupted
        call (Ctrl-C) leaves the stored state as it was."""
        # the steady streaming case: the step bound to this layer's arrays checks x, takes the
        # in-use lock and runs in C (Python overhead is most of a small step); None means "not
        # this case" (no stored state yet, another x, the layer busy), handled below
        plan = self.__dict__.get("_stream_plan")
        if plan is not None and mask is None:
            h = plan(x)
            if h is not None:
                return h
        lock = _in_use_lock(self)
        if not lock.acquire(False):
            raise _busy_error(self, "rnn_time_step")
        try:
            self._check_streamable("rnn_time_step")
            if (mask is None and type(x) is np.ndarray and x.ndim == 2 and x.dtype == self.dtype
                    and x.shape[1] == self.n_in and x.shape[0] > 0):
                return self._stream_one_step(x)
            return self._stream_slow(x, mask)
        finally:
            lock.release()

    def _stream_slow(self, x, mask):
        x = self._check_input(x, "rnn_time_step")
        state = self._stream_state
        self._check_state_minibatch(state, x, f"{type(self).__name__}.rnn_time_step")
        h0, c0 = state if state is not None else (None, None)
        record = lstm_forward(
            x, self.W, self.RW, self.b, h0=h0, c0=c0, peepholes=self.peepholes,
            activation=self.activation, gate_activation=self.gate_activation, mask=mask,
            forwards=True, for_backprop=False)
        self._stream_state = (np.array(record.last_h, order="F", copy=True),
                              np.array(record.last_c, order="F", copy=True))
        output = record.output
        return output[:, :, 0] if x.ndim == 2 else output

    def _stream_one_step(self, x):
        """rnn_time_step for one step [minibatch, nIn] of the layer's dtype: binds the step to
        the layer's arrays (functional.bind_stream_step, which validates every argument at C
        level) and runs it; later steps call the bound step directly."""
        minibatch = x.shape[0]
        if not problem_size_ok(minibatch, self.n_in, self.n_out, 1, peepholes=self.peepholes,
                               activation=self.activation,
                               gate_activation=self.gate_activation):
            # a size the kernels refuse: the validating path raises the clear error, before
            # anything is allocated
            return self._stream_slow(x, None)
        state = self._stream_state
        if state is None:
            state = (np.zeros((minibatch, self.n_out), self.dtype, order="F"),
                     np.zeros((minibatch, self.n_out), self.dtype, order="F"))
        else:
            self._check_state_minibatch(state, x, f"{type(self).__name__}.rnn_time_step")
        if not x.flags.aligned:
            x = np.array(x)
        plan = bind_stream_step(_in_use_lock(self), x, self.W, self.RW, self.b, state[0],
                                state[1], activation=self.activation,
                                gate_activation=self.gate_activation)
        self._stream_state = state
        # the lock is held here (re-entrant): the plan's own acquire succeeds
        h_copy = plan(x)
        if h_copy is None:          # x not plain after all (cannot happen for the checks above)
            return self._stream_slow(x, None)
        self.__dict__["_stream_plan"] = plan
        return h_copy

    @_exclusive
    def rnn_clear_previous_state(self):
        """Forget the streaming state and the truncated-BPTT state."""
        self._stream_state = None
        self._tbptt_state = None

    @_exclusive
    def rnn_get_previous_state(self):
        """The stored streaming state as a pair of copies ``(h, c)`` ``[minibatch, nOut]``,
        or None when there is none. Raises ConcurrentUseError if another thread is inside a
        call on this layer (a streaming step writes the state in place: copied meanwhile, it
        would be half old, half new)."""
        self._check_streamable("rnn_get_previous_state")
        if self._stream_state is None:
            return None
        return tuple(np.array(s, copy=True) for s in self._stream_state)

    @_exclusive
    def rnn_set_previous_state(self, h, c):
        """Set the streaming state (``h``, ``c`` ``[minibatch, nOut]``, copied)."""
        self._check_streamable("rnn_set_previous_state")
        h_arr = np.asarray(h)
        if h_arr.ndim != 2:
            raise ValueError(f"h must have shape [minibatch, nOut={self.n_out}]; got {h_arr.shape}")
        mb = h_arr.shape[0]
        self._stream_state = (_as_state("h", h_arr, mb, self.n_out, self.dtype),
                              _as_state("c", c, mb, self.n_out, self.dtype))

    # ---- truncated BPTT (rnnActivateUsingStoredState / tBpttStateMap) ------------------
    @property
    def tbptt_state(self):
        """The carried truncated-BPTT state ``(h, c)`` (copies), or None."""
        if self._tbptt_state is None:
            return None
        return tuple(np.array(s, copy=True) for s in self._tbptt_state)

    @_exclusive
    def rnn_activate_using_stored_state(self, x, mask=None, training=True, store_last_for_tbptt=True):
        """Forward pass starting from the carried truncated-BPTT state (zeros when there is none)
        and, with ``store_last_for_tbptt``, carrying this pass's last state to the next one. The
        carried state is a constant for ``backward``: no gradient crosses window boundaries."""
        self._check_streamable("rnn_activate_using_stored_state")
        x = self._check_input(x, "rnn_activate_using_stored_state")
        state = self._tbptt_state
        self._check_state_minibatch(state, x, f"{type(self).__name__}.rnn_activate_using_stored_state")
        h0, c0 = state if state is not None else (None, None)
        record = self._run(x, mask, training, h0, c0)
        if store_last_for_tbptt:
            self._tbptt_state = (np.array(record.last_h, order="F", copy=True),
                                 np.array(record.last_c, order="F", copy=True))
        return record.output

    # ---- memory ------------------------------------------------------------------------
    def memory_report(self, ts_length, minibatch=1, updater=None):
        """DL4J's memory report for sequences of ``ts_length`` steps (see LayerMemoryReport),
        with ``allocated_bytes`` for ``minibatch`` examples. ``updater``: None or "sgd"
        (no state), "momentum"/"nesterovs", "adam", or an updater object."""
        ts_length = _check_size("ts_length", ts_length)
        minibatch = _check_size("minibatch", minibatch)
        return _build_memory_report(self, [self], ts_length, minibatch, updater, factor=1)

    def _allocation_parts(self, ts_length, minibatch):
        return _lstm_pass_allocations(self.n_in, self.n_out, ts_length, minibatch, self.peepholes,
                                      self.dtype.itemsize,
                                      drop_connect=self.drop_connect is not None and self.drop_connect < 1.0)

    def _allocated_bytes(self, ts_length, minibatch):
        parts = self._allocation_parts(ts_length, minibatch)
        return {"inference": parts["inference"], "training": parts["training"]}

    def _describe(self):
        return (f"{type(self).__name__}(n_in={self.n_in}, n_out={self.n_out}, activation={self.activation!r}, "
                f"gate_activation={self.gate_activation!r}, dtype={self.dtype.name})")

    def _clone_configuration(self, seed):
        """A new layer of the same configuration (fresh parameters drawn from ``seed``)."""
        return type(self)(self.n_in, self.n_out, activation=self.activation,
                          gate_activation=self.gate_activation,
                          forget_gate_bias_init=self.forget_gate_bias_init, weight_init=self.weight_init,
                          dtype=self.dtype, seed=seed, drop_connect=self.drop_connect)


class GravesLSTM(_UnidirectionalLSTM):
    """DL4J's GravesLSTM: LSTM with peephole connections.

    ``GravesLSTM(n_in, n_out, *, activation="tanh", gate_activation="sigmoid",
    forget_gate_bias_init=1.0, weight_init="xavier", dtype=np.float32, seed=None,
    drop_connect=None)``; ``drop_connect=p`` keeps each input weight with probability p while
    training (DL4J's non-inverted DropConnect). Parameters: ``W`` ``[nIn, 4h]``, ``RW``
    ``[h, 4h+3]``, ``b`` ``[4h]``, views into the flat ``params``.

    Threads: one call at a time per layer object. A call made while another thread is inside a
    call on the same layer raises :class:`ConcurrentUseError` ("layer is in use by another
    thread") at once and changes nothing (see "Threads" in the module docstring).
    """

    peepholes = True


class LSTM(_UnidirectionalLSTM):
    """DL4J's LSTM: as GravesLSTM without peephole connections (``RW`` ``[h, 4h]``).

    Threads: one call at a time per layer object. A call made while another thread is inside a
    call on the same layer raises :class:`ConcurrentUseError` ("layer is in use by another
    thread") at once and changes nothing (see "Threads" in the module docstring).
    """

    peepholes = False


# --------------------------------------------------------------------------------------
# bidirectional layers


_BIDIRECTIONAL_MODES = ("concat", "add", "mul", "average")


class _BidirectionalBase(_FlatParameterLayer):
    """Two directions with separate parameters, the forward direction's first in the flat array."""

    mode = "add"

    def _setup_directions(self, forward_layer, backward_layer):
        self.forward_layer = forward_layer
        self.backward_layer = backward_layer
        backward_layer._process_forwards = False
        self.n_in = forward_layer.n_in
        self.dtype = forward_layer.dtype
        self.n_out = 2 * forward_layer.n_out if self.mode == "concat" else forward_layer.n_out
        n = self.num_params()
        param_array = np.empty(n, dtype=self.dtype)
        gradient_array = np.zeros(n, dtype=self.dtype)
        self._param_array = param_array
        self._gradient_array = gradient_array
        self._split_storage()
        self._outputs = None

    def num_params(self):
        return self.forward_layer.num_params() + self.backward_layer.num_params()

    def _split_storage(self):
        n_forward = self.forward_layer.num_params()
        self.forward_layer.bind_storage(self._param_array[:n_forward], self._gradient_array[:n_forward])
        self.backward_layer.bind_storage(self._param_array[n_forward:], self._gradient_array[n_forward:])

    def _build_views(self):
        self._split_storage()

    def bind_storage(self, param_view, gradient_view):
        # the directions' current values are copied into the new storage by their own bind_storage
        self._check_storage_views(param_view, gradient_view)
        self._param_array = param_view
        self._gradient_array = gradient_view
        self._split_storage()

    def weight_param_mask(self):
        return np.concatenate([self.forward_layer.weight_param_mask(), self.backward_layer.weight_param_mask()])

    @property
    def activation(self):
        return self.forward_layer.activation

    @property
    def gate_activation(self):
        return self.forward_layer.gate_activation

    @property
    def peepholes(self):
        return self.forward_layer.peepholes

    # ---- passes ----------------------------------------------------------------------
    @_exclusive
    def forward(self, x, mask=None, training=False):
        """Both directions over the whole sequence (the backward one from the last step to
        the first, with the same mask), combined by ``mode``."""
        saved = self.forward_layer._pass_state()
        output_forward = self.forward_layer.forward(x, mask=mask, training=training)
        try:
            output_backward = self.backward_layer.forward(x, mask=mask, training=training)
        except BaseException:
            # e.g. Ctrl-C during the second direction: keep the directions' records consistent
            self.forward_layer._restore_pass_state(saved)
            raise
        self._outputs = (output_forward, output_backward) if (training and self.mode == "mul") else None
        # "add"/"average" combine in place into the forward direction's output array: the
        # backward pass reads the kernels' cache, never ForwardResult.output
        if self.mode == "add":
            return np.add(output_forward, output_backward, out=output_forward)
        if self.mode == "average":
            out = np.add(output_forward, output_backward, out=output_forward)
            out *= 0.5
            return out
        if self.mode == "mul":
            return output_forward * output_backward
        return np.concatenate([output_forward, output_backward], axis=1)

    @_exclusive
    def backward(self, epsilon, tbptt_length=None):
        """Split ``epsilon`` between the directions as ``mode`` requires, back-propagate both,
        and return the sum of their dL/dx. Truncated BPTT is not possible (as in DL4J)."""
        if tbptt_length is not None:
            raise UnsupportedOperationError(
                f"{type(self).__name__}.backward: truncated BPTT (tbptt_length={tbptt_length}) is not possible "
                f"with bidirectional layers: the backward direction needs the whole sequence")
        eps = np.asarray(epsilon)
        h = self.forward_layer.n_out
        if self.mode == "concat":
            if eps.ndim < 2 or eps.shape[1] != 2 * h:
                raise ValueError(f"{type(self).__name__}.backward: epsilon must be [minibatch, {2 * h}, T] "
                                 f"(both directions concatenated); got shape {eps.shape}")
            eps_forward, eps_backward = eps[:, :h], eps[:, h:]
        elif self.mode == "add":
            eps_forward = eps_backward = eps
        elif self.mode == "average":
            eps_forward = eps_backward = eps * 0.5
        else:  # mul
            if self._outputs is None:
                raise ValueError(f"{type(self).__name__}.backward: no training forward pass to back-propagate; "
                                 f"call forward(x, training=True) first")
            output_forward, output_backward = self._outputs
            if eps.shape != output_forward.shape:
                raise ValueError(f"{type(self).__name__}.backward: epsilon must have shape "
                                 f"{output_forward.shape}; got {eps.shape}")
            eps_forward = eps * output_backward
            eps_backward = eps * output_forward
        forward_layer = self.forward_layer
        saved = (forward_layer.gradients.copy(), forward_layer.state_gradients)
        dx = forward_layer.backward(eps_forward)
        try:
            dx_backward = self.backward_layer.backward(eps_backward)
        except BaseException:
            # e.g. Ctrl-C during the second direction: leave the gradients as they were
            forward_layer.gradients[...] = saved[0]
            forward_layer.state_gradients = saved[1]
            raise
        return np.add(dx, dx_backward, out=dx)

    # ---- streaming is impossible ---------------------------------------------------------
    def _refuse(self, what):
        raise UnsupportedOperationError(
            f"{type(self).__name__}.{what}: bidirectional layers cannot be stepped through time or "
            f"trained with truncated BPTT; they need the whole sequence at once (use forward)")

    def rnn_time_step(self, x, mask=None):
        self._refuse("rnn_time_step")

    def rnn_get_previous_state(self):
        self._refuse("rnn_get_previous_state")

    def rnn_set_previous_state(self, h, c):
        self._refuse("rnn_set_previous_state")

    def rnn_activate_using_stored_state(self, x, mask=None, training=True, store_last_for_tbptt=True):
        self._refuse("rnn_activate_using_stored_state")

    def rnn_clear_previous_state(self):
        """Nothing to clear (bidirectional layers keep no state), as in DL4J."""

    # ---- memory ------------------------------------------------------------------------
    def memory_report(self, ts_length, minibatch=1, updater=None):
        """The directions' report doubled, as the seed's bidirectional ``getMemoryReport``."""
        ts_length = _check_size("ts_length", ts_length)
        minibatch = _check_size("minibatch", minibatch)
        return _build_memory_report(self, [self.forward_layer, self.backward_layer], ts_length, minibatch,
                                    updater, factor=2)

    def _allocated_bytes(self, ts_length, minibatch):
        one = self.forward_layer._allocation_parts(ts_length, minibatch)
        output = one["output"]
        # inference: the forward direction's output stays alive while the backward direction
        # runs; "add"/"average" combine in place, "mul" makes one new array, "concat" a double one
        combine = {"add": 0, "average": 0, "mul": output, "concat": 2 * output}[self.mode]
        inference = max(output + one["inference"], 2 * output + combine)
        # training: both records live through both backward passes; the combined output of
        # "concat"/"mul" is the caller's (freed after forward when the caller drops it); the
        # forward direction's dL/dx and state gradients live while the backward direction runs
        epsilon_split = {"add": 0, "concat": 0, "average": output, "mul": 2 * output}[self.mode]
        retained_after_backward = one["input_gradient"] + one["state_gradients"]
        training = 2 * (one["dropped_weights"] + one["record"]) \
            + max(combine, epsilon_split + retained_after_backward + one["backward_peak"])
        return {"inference": inference, "training": training}


class GravesBidirectionalLSTM(_BidirectionalBase):
    """DL4J's GravesBidirectionalLSTM: two Graves (peephole) LSTM directions with separate
    parameters; output = forward direction + backward direction.

    Flat order ``WF, RWF, bF, WB, RWB, bB``; ``layer.WF`` etc. are views.

    Threads: one call at a time per layer object. A call made while another thread is inside a
    call on the same layer raises :class:`ConcurrentUseError` ("layer is in use by another
    thread") at once and changes nothing (see "Threads" in the module docstring).
    """

    mode = "add"

    def __init__(self, n_in, n_out, *, activation="tanh", gate_activation="sigmoid",
                 forget_gate_bias_init=1.0, weight_init="xavier", dtype=np.float32, seed=None,
                 drop_connect=None):
        sequence = _seed_sequence(seed)
        forward_seed, backward_seed = sequence.spawn(2)
        options = dict(activation=activation, gate_activation=gate_activation,
                       forget_gate_bias_init=forget_gate_bias_init, weight_init=weight_init, dtype=dtype,
                       drop_connect=drop_connect)
        self.seed = seed
        self._setup_directions(GravesLSTM(n_in, n_out, seed=forward_seed, **options),
                               GravesLSTM(n_in, n_out, seed=backward_seed, **options))

    @property
    def WF(self):
        return self.forward_layer.W

    @property
    def RWF(self):
        return self.forward_layer.RW

    @property
    def bF(self):
        return self.forward_layer.b

    @property
    def WB(self):
        return self.backward_layer.W

    @property
    def RWB(self):
        return self.backward_layer.RW

    @property
    def bB(self):
        return self.backward_layer.b

    def param_table(self):
        f, b = self.forward_layer, self.backward_layer
        return {"WF": f.W, "RWF": f.RW, "bF": f.b, "WB": b.W, "RWB": b.RW, "bB": b.b}

    def gradient_table(self):
        f, b = self.forward_layer, self.backward_layer
        return {"WF": f.W_gradient, "RWF": f.RW_gradient, "bF": f.b_gradient,
                "WB": b.W_gradient, "RWB": b.RW_gradient, "bB": b.b_gradient}

    def _describe(self):
        f = self.forward_layer
        return (f"GravesBidirectionalLSTM(n_in={self.n_in}, n_out={self.n_out}, activation={f.activation!r}, "
                f"gate_activation={f.gate_activation!r}, dtype={self.dtype.name})")


class Bidirectional(_BidirectionalBase):
    """DL4J's ``Bidirectional`` wrapper around an LSTM or GravesLSTM.

    ``Bidirectional(layer, mode="concat", *, seed=None)``: ``layer`` becomes the forward
    direction (it keeps its parameters, which move into the wrapper's flat array); the backward
    direction is a new layer of the same configuration, initialised from ``seed`` (default: a
    seed derived from the wrapped layer's). Modes: "concat" (forward direction first, output
    ``[minibatch, 2h, T]``), "add", "mul", "average".

    Threads: one call at a time per layer object. A call made while another thread is inside a
    call on the same layer raises :class:`ConcurrentUseError` ("layer is in use by another
    thread") at once and changes nothing (see "Threads" in the module docstring).
    """

    def __setstate__(self, state):
        super().__setstate__(state)
        self.forward_layer._owner = self

    def __init__(self, layer, mode="concat", *, seed=None):
        if not isinstance(layer, _UnidirectionalLSTM):
            raise TypeError(f"Bidirectional wraps a GravesLSTM or LSTM layer; got {type(layer).__name__}")
        if getattr(layer, "_owner", None) is not None:
            raise ValueError(f"Bidirectional: the layer {layer!r} already belongs to another container "
                             f"(a Sequential or a bidirectional layer); wrap a new layer")
        layer._owner = self
        self.mode = _check_choice("mode", mode, _BIDIRECTIONAL_MODES)
        if seed is None:
            seed = layer._seed_sequence.spawn(1)[0]
        self.seed = seed
        self._setup_directions(layer, layer._clone_configuration(_seed_sequence(seed)))

    def param_table(self):
        table = {"f" + k: v for k, v in self.forward_layer.param_table().items()}
        table.update({"b" + k: v for k, v in self.backward_layer.param_table().items()})
        return table

    def gradient_table(self):
        table = {"f" + k: v for k, v in self.forward_layer.gradient_table().items()}
        table.update({"b" + k: v for k, v in self.backward_layer.gradient_table().items()})
        return table

    def _describe(self):
        return f"Bidirectional({self.forward_layer._describe()}, mode={self.mode!r})"


# --------------------------------------------------------------------------------------
# memory model


def _lstm_pass_allocations(n_in, n_out, ts_length, minibatch, peepholes, itemsize, drop_connect=False):
    """Bytes a single-direction layer allocates through ``lstm_forward`` / ``lstm_backward``.

    The arrays those functions allocate with NumPy (the kernels allocate nothing when given a
    workspace), sized by the kernels' own size functions:

    * forward: ``output`` ``[mb, h, T]``, ``last_h``, ``last_c``; with ``for_backprop`` the cache
      (``kernels.cache_size``) and private copies of ``W`` and ``RW``, otherwise the inference workspace
      (``kernels.forward_workspace_size``), freed on return;
    * backward: the parameter gradients, dL/dx ``[mb, nIn, T]``, dL/dh0, dL/dc0 and the backward
      workspace (``kernels.backward_workspace_size``, freed on return);
    * the layer itself: with DropConnect, the keep-mask and the masked input weights (plus the
      boolean draw and the float64 uniforms while the mask is made).

    Returns the parts (bytes): ``record`` (what a training forward pass keeps alive until
    ``backward``: output, state and cache), ``backward_peak`` (what ``backward`` allocates at
    its peak), ``inference`` (peak of ``forward(x)``), ``training`` (peak of ``forward(x,
    training=True)`` then ``backward(epsilon)``), and the sizes they are made of."""
    h, mb, steps = n_out, minibatch, ts_length
    output = mb * h * steps * itemsize
    state = 2 * mb * h * itemsize
    cache = _kernels.cache_size(mb, n_in, h, steps) * itemsize
    inference_workspace = _kernels.forward_workspace_size(mb, n_in, h, steps, False) * itemsize
    backward_workspace = _kernels.backward_workspace_size(mb, n_in, h, steps) * itemsize
    parameter_gradients = (n_in * 4 * h + h * (4 * h + (3 if peepholes else 0)) + 4 * h) * itemsize
    input_gradient = mb * n_in * steps * itemsize
    state_gradients = 2 * mb * h * itemsize
    n_w = n_in * 4 * h
    # the keep-mask and the masked weights stay alive; while drawing: float64 uniforms + booleans
    dropped_weights = 2 * n_w * itemsize if drop_connect else 0
    drop_draw_peak = n_w * 8 + n_w if drop_connect else 0
    # lstm_forward(for_backprop=True) keeps private copies of W and RW for lstm_backward
    weight_copies = (n_in * 4 * h + h * (4 * h + (3 if peepholes else 0))) * itemsize
    record = output + state + cache + weight_copies
    backward_peak = parameter_gradients + input_gradient + state_gradients + backward_workspace
    return {
        "output": output,
        "record": record,
        "dropped_weights": dropped_weights,
        "input_gradient": input_gradient,
        "state_gradients": state_gradients,
        "backward_peak": backward_peak,
        "inference": output + state + inference_workspace,
        "training": max(drop_draw_peak, dropped_weights + record + backward_peak),
    }


def _build_memory_report(layer, directions, ts_length, minibatch, updater, factor):
    first = directions[0]
    n_params = layer.num_params()
    inference_variable, train_variable, cache_variable = _seed_memory_figures(first.peepholes, first.n_out,
                                                                             ts_length)
    zeros = {mode: 0 for mode in CACHE_MODES}
    return LayerMemoryReport(
        layer_type=type(layer).__name__,
        n_in=layer.n_in,
        n_out=layer.n_out,
        ts_length=ts_length,
        minibatch=minibatch,
        dtype=layer.dtype.name,
        bytes_per_element=layer.dtype.itemsize,
        parameter_size=n_params,
        updater_state_size=_updater_state_size(updater, n_params),
        working_memory_fixed_inference=0,
        working_memory_variable_inference=factor * inference_variable,
        working_memory_fixed_train=dict(zeros),
        working_memory_variable_train={m: factor * v for m, v in train_variable.items()},
        cache_memory_fixed=dict(zeros),
        cache_memory_variable={m: factor * v for m, v in cache_variable.items()},
        input_elements_per_example=layer.n_in * ts_length,
        output_elements_per_example=layer.n_out * ts_length,
        allocated_bytes=layer._allocated_bytes(ts_length, minibatch),
    )


# The public name of the one-direction base of GravesLSTM and LSTM (for isinstance checks in the
# outer rooms, such as weight conversion).
UnidirectionalLSTM = _UnidirectionalLSTM
