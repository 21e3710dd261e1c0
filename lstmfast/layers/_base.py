"""What the layers share: errors, weight initialisation, the flat-parameter base class and the
memory report (DL4J's getMemoryReport). The one-call-at-a-time guard is ``lstmfast._guard``, the
argument checks ``lstmfast._checks``."""

import abc
import dataclasses
import math

import numpy as np

from .._checks import check_choice
from .._guard import Guarded, exclusive
from ..functional import pass_buffer_sizes

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


# --------------------------------------------------------------------------------------
# initialisation and argument helpers


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


def _check_mask_or_lengths(layer, what, mask, lengths):
    """Refuse a mask and lengths together, naming the layer and the call."""
    if mask is not None and lengths is not None:
        raise ValueError(f"{type(layer).__name__}.{what}: mask and lengths: pass one of them, not "
                         f"both (lengths [minibatch] is the alternative to a mask [minibatch, T])")


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
    ``ts_length`` and ``minibatch``. It counts the arrays (the kernels' buffers as
    ``lstmfast.functional.pass_buffer_sizes`` gives them); the 1-2 KB of Python objects per pass are not
    counted, so it is exact to within a few percent from a few tens of KB up. Work buffers of
    4 MiB or more are kept after a pass for the next one of the same size (up to 512 MiB in
    all; ``lstmfast.release_buffers()`` frees them): a later pass may reuse them instead of
    allocating, and while kept they add to the process's memory beyond these figures. A
    bidirectional layer whose directions run side by side (at two threads, on large enough
    passes) counts both passes' arrays at once: the most it allocates, since a partner pass
    that starts late overlaps less.
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
        mode = check_choice("mode", mode, ("training", "inference"))
        cache_mode = check_choice("cache_mode", cache_mode, tuple(c.lower() for c in CACHE_MODES)).upper()
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
    name = check_choice("updater", updater, ("sgd", "momentum", "nesterovs", "adam"))
    return {"sgd": 0, "momentum": n_params, "nesterovs": n_params, "adam": 2 * n_params}[name]


# --------------------------------------------------------------------------------------
# base class: flat parameter storage


class FlatParameterLayer(Guarded, abc.ABC):
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

    def bind_storage(self, param_view, gradient_view, owner=None):
        """Move the parameters into ``param_view`` (values copied) and the gradients into
        ``gradient_view``, contiguous 1-D arrays of ``num_params()`` elements in the layer's dtype:
        from then on ``params`` and the named arrays are views into them. For containers that
        own one flat vector for many layers (``Sequential``, DL4J graphs); ``owner``, when given,
        becomes the layer's :attr:`owner`."""
        self._check_storage_views(param_view, gradient_view)
        self._move_storage(param_view, gradient_view)
        if owner is not None:
            self._owner = owner

    def _move_storage(self, param_view, gradient_view):
        param_view[...] = self._param_array
        gradient_view[...] = self._gradient_array
        self._param_array = param_view
        self._gradient_array = gradient_view
        self._build_views()

    @property
    def owner(self):
        """The container (a ``Sequential`` or a bidirectional layer) this layer belongs to, or
        None: a layer joins one container only."""
        return self.__dict__.get("_owner")

    # a layer's container (Sequential, Bidirectional) is not part of the layer's pickled state:
    # a copy of a contained layer is a standalone layer, and a copied container sets it again
    _transient_attributes = Guarded._transient_attributes + ("_owner",)

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
    @exclusive
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
# memory model


def _lstm_pass_allocations(n_in, n_out, ts_length, minibatch, peepholes, dtype, drop_connect=False):
    """Bytes a single-direction layer allocates through ``lstm_forward`` / ``lstm_backward``.

    The arrays those functions allocate with NumPy (the kernels allocate nothing when given a
    workspace), the kernels' buffers sized by ``functional.pass_buffer_sizes``:

    * forward: ``output`` ``[mb, h, T]``, ``last_h``, ``last_c``, the workspace (freed on
      return); with ``for_backprop`` also the cache and private copies of ``W`` and ``RW``;
    * backward: the parameter gradients, dL/dx ``[mb, nIn, T]``, dL/dh0, dL/dc0 and the backward
      workspace (freed on return);
    * the layer itself: with DropConnect, the keep-mask and the masked input weights (plus the
      boolean draw and the float64 uniforms while the mask is made).

    Returns the parts (bytes): ``record`` (what a training forward pass keeps alive until
    ``backward``: output, state and cache), ``backward_peak`` (what ``backward`` allocates at
    its peak), ``inference`` (peak of ``forward(x)``), ``training`` (peak of ``forward(x,
    training=True)`` then ``backward(epsilon)``), and the sizes they are made of."""
    h, mb, steps = n_out, minibatch, ts_length
    itemsize = np.dtype(dtype).itemsize
    output = mb * h * steps * itemsize
    state = 2 * mb * h * itemsize
    buffers = pass_buffer_sizes(mb, n_in, h, steps, peepholes=peepholes,
                                dtype=dtype)
    cache = buffers.cache
    inference_workspace = buffers.forward_workspace_inference
    training_workspace = buffers.forward_workspace_training
    backward_workspace = buffers.backward_workspace
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
        "parameter_gradients": parameter_gradients,
        "training_workspace": training_workspace,
        "inference": output + state + inference_workspace,
        # the training forward pass holds its workspace next to the record it builds; with a
        # wide input and few units that can be more than backward's peak
        "training": max(drop_draw_peak,
                        dropped_weights + record + max(training_workspace, backward_peak)),
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
