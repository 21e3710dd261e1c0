"""Keras model files run on lstmfast: :func:`load` reads a Keras 3 ``.keras`` file, a Keras 2
(or Keras 3 legacy) ``.h5`` file with its ``model_config``, or a JSON configuration plus a
weights ``.h5``, and returns a :class:`KerasModel` whose :meth:`~KerasModel.predict` gives
Keras's ``predict`` for inputs ``[minibatch, T, features]`` (Keras's layout).

Layers: InputLayer, LSTM (``return_sequences``, ``return_state``, ``stateful``,
``go_backwards``, ``use_bias``, any ``recurrent_activation`` of sigmoid / hard_sigmoid as the
saving Keras defines it: Keras 2's ``clip(0.2 x + 0.5)``, Keras 3's ``clip(x / 6 + 0.5)``),
Bidirectional (concat, sum, mul, ave), Dense, TimeDistributed(Dense), Dropout and SpatialDropout
(no-ops at inference), Masking. Models: Sequential, and functional models of one input whose
layers each read one tensor (a chain, or branches such as a Dense on an LSTM's returned state)
with any of those tensors as outputs. Anything else is a ValueError naming the layer.

``return_state=True`` gives Keras's outputs: the layer's output, then h and c (a Bidirectional
one: forward h, c, then backward h, c), the state after each example's last unmasked step.
``stateful=True`` layers carry their state from one :meth:`KerasModel.predict` to the next as
Keras's do (each example continues where the same row of the previous call stopped);
:meth:`KerasModel.reset_states` clears it, like calling ``reset_states()`` on Keras's layers.

``.h5`` files need ``h5py`` (``pip install 'lstmfast[keras]'``); ``.keras``
files are zip archives with an HDF5 weights file inside, so they need it too.

Masking follows Keras: a masked step leaves the LSTM state unchanged and repeats the previous
output (zeros when the layer's ``zero_output_for_mask`` is set; before the first unmasked step,
the starting h); lstmfast runs each distinct mask row's unmasked steps as one sequence, which is
exactly that. When every row is a prefix of unmasked steps (padding at the end, or at the start
with ``go_backwards``), one pass with per-example lengths does the same.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile

import numpy as np

from . import convert
from .functional import lstm_forward

__all__ = ["load", "KerasModel", "MAX_CONFIG_BYTES", "MAX_WEIGHTS_BYTES"]

#: Largest JSON configuration read (bytes).
MAX_CONFIG_BYTES = 64 * 2 ** 20
#: Largest weights file read out of a ``.keras`` archive, and largest single weight array.
MAX_WEIGHTS_BYTES = 2 ** 31

_DROPOUTS = ("Dropout", "SpatialDropout1D", "GaussianDropout", "GaussianNoise", "AlphaDropout",
             "ActivityRegularization")


def _require_h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError("lstmfast.keras needs h5py: pip install 'lstmfast[keras]' "
                          "(or pip install h5py)") from None
    return h5py


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _dense_activation(name, version, label):
    """Keras activation name -> a NumPy function (Keras's definitions)."""
    key = "linear" if name is None else str(name).lower()
    hard = (lambda z: np.clip(z / 6.0 + 0.5, 0, 1)) if version == 3 else \
        (lambda z: np.clip(0.2 * z + 0.5, 0, 1))
    table = {
        "linear": lambda z: z, "relu": lambda z: np.maximum(z, 0), "tanh": np.tanh,
        "sigmoid": _sigmoid, "softmax": _softmax, "softsign": lambda z: z / (1 + np.abs(z)),
        "softplus": lambda z: np.logaddexp(0, z), "elu": lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0))),
        "selu": lambda z: 1.0507009873554805 * np.where(z > 0, z, 1.6732632423543772
                                                        * np.expm1(np.minimum(z, 0))),
        "exponential": np.exp, "hard_sigmoid": hard,
    }
    if key not in table:
        raise ValueError(f"{label}: activation {name!r} is not supported (supported: "
                         f"{', '.join(sorted(table))})")
    return table[key]


def _activation_name(value):
    if isinstance(value, dict):        # Keras 3 may serialise activations as objects
        inner = value.get("config")
        name = inner.get("name") if isinstance(inner, dict) else inner
        name = name if isinstance(name, str) else value.get("class_name")
        # an object naming nothing stays as it is: the activation tables refuse it by layer
        return name if isinstance(name, str) else str(value)
    return value


def _flag(config, key, default, label):
    """A boolean setting of a layer's configuration (a string "false" must not read as True)."""
    value = config.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{label}: {key} must be true or false, got {value!r}")
    return value


# ----------------------------------------------------------------------------------------------
# one LSTM direction with Keras's masking


def _lstm_keras(x, params, activation, gate, mask, go_backwards, zero_output_for_mask,
                state=None, unroll=False):
    """x [N, T, C] -> (sequence outputs [N, T, h] in the order Keras returns them, (h, c) after
    each example's last unmasked step: Keras's returned and carried state). ``state``: the
    (h, c) [N, h] to start from (None: zeros). A masked step repeats the previous output; before
    the first unmasked one that is the start state h (zeros when ``unroll``: Keras's two loops
    differ there)."""
    W, RW, b = params
    if go_backwards:
        x = x[:, ::-1]
        mask = None if mask is None else mask[:, ::-1]
    N, T, _ = x.shape
    hidden = RW.shape[0]
    h0, c0 = (None, None) if state is None else state

    def run(xs, members, lengths=None):
        r = lstm_forward(np.ascontiguousarray(xs.transpose(0, 2, 1)), W, RW, b,
                         h0=None if h0 is None else h0[members],
                         c0=None if c0 is None else c0[members],
                         activation=activation, gate_activation=gate, lengths=lengths)
        return r.output.transpose(0, 2, 1), r.last_h, r.last_c

    if mask is None or mask.all():
        seq, h, c = run(x, slice(None))
        return seq, (h, c)
    lengths = np.count_nonzero(mask, axis=1)
    if np.array_equal(mask, np.arange(T)[None, :] < lengths[:, None]):
        # every row a prefix (pre-padding seen from go_backwards, post-padding otherwise): one
        # pass with per-example lengths; its state is each example's after its last valid step
        seq, h, c = run(x, slice(None), lengths)
        if not zero_output_for_mask:
            # a masked step after the valid ones repeats the last output; a row masked at
            # every step repeats the start h (zeros without one, or in Keras's unrolled loop)
            repeated = h.copy()
            if unroll:
                repeated[lengths == 0] = 0
            past = np.arange(T)[None, :] >= lengths[:, None]
            seq = np.where(past[:, :, None], repeated[:, None, :], seq)
        return seq, (h, c)
    seq = np.zeros((N, T, hidden), dtype=W.dtype)
    # rows masked at every step keep the state they started with
    h = np.zeros((N, hidden), dtype=W.dtype) if h0 is None else h0.copy()
    c = np.zeros((N, hidden), dtype=W.dtype) if c0 is None else c0.copy()
    rows, inverse = np.unique(mask, axis=0, return_inverse=True)
    for k, row in enumerate(rows):
        members = np.flatnonzero(inverse.reshape(-1) == k)
        steps = np.flatnonzero(row)
        if steps.size == 0:
            if not zero_output_for_mask and not unroll and h0 is not None:
                seq[members] = h0[members][:, None, :]
            continue
        ys, h[members], c[members] = run(x[members][:, steps], members)   # ys [n, len, h]
        position = np.cumsum(row) - 1                      # output index at each step
        valid = position >= 0
        filled = np.zeros((members.size, T, hidden), dtype=W.dtype)
        filled[:, valid] = ys[:, position[valid]]
        if not zero_output_for_mask and not unroll and h0 is not None:
            filled[:, ~valid] = h0[members][:, None, :]
        if zero_output_for_mask:
            filled[:, ~row.astype(bool)] = 0
        seq[members] = filled
    return seq, (h, c)


# ----------------------------------------------------------------------------------------------
# layers


class _Step:
    """One layer: ``step(x, mask)`` -> its output tensors (a list); ``output_masks(mask, n)``
    the Keras mask of each (None: no mask)."""
    n_outputs = 1

    def __init__(self, name, kind):
        self.name, self.kind = name, kind

    def output_masks(self, mask):
        return [mask]

    def __repr__(self):
        return f"{self.kind}({self.name!r})"


class _Lstm(_Step):
    def __init__(self, name, config, weights, version, label, wrapper=None):
        super().__init__(name, "Bidirectional" if wrapper else "LSTM")
        self.config = config
        self.return_sequences = _flag(config, "return_sequences", False, label)
        self.return_state = _flag(config, "return_state", False, label)
        self.stateful = _flag(config, "stateful", False, label)
        self.go_backwards = _flag(config, "go_backwards", False, label)
        self.zero_output_for_mask = _flag(config, "zero_output_for_mask", False, label)
        self.unroll = _flag(config, "unroll", False, label)
        use_bias = _flag(config, "use_bias", True, label)
        activation = _activation_name(config.get("activation", "tanh"))
        gate_name = _activation_name(config.get("recurrent_activation", "sigmoid"))
        per_direction = len(weights) // (2 if wrapper else 1)
        if per_direction != (3 if use_bias else 2) or len(weights) % per_direction:
            raise ValueError(f"{label}: expected {3 if use_bias else 2} weight arrays per direction "
                             f"(kernel, recurrent_kernel{', bias' if use_bias else ''}), got "
                             f"{len(weights)}")
        self.directions = []
        for d in range(len(weights) // per_direction):
            arrays = weights[d * per_direction:(d + 1) * per_direction]
            try:
                layer = convert.from_keras(arrays[0], arrays[1], arrays[2] if use_bias else None,
                                           activation=activation, recurrent_activation=gate_name,
                                           keras_version=version)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{label}: {str(exc).replace('from_keras: ', '')}") from None
            self.activation, self.gate = layer.activation, layer.gate_activation
            self.directions.append((layer.W, layer.RW, layer.b))
        self.units = self.directions[0][1].shape[0]
        self.n_in = self.directions[0][0].shape[0]
        self.merge_mode = wrapper
        self.label = label
        # Keras's outputs: the output, then (h, c) of each direction when return_state is set
        self.n_outputs = 1 + (2 * len(self.directions) if self.return_state else 0)
        #: per direction, the (h, c) a stateful layer carries to the next call (None: zeros)
        self.states = None

    def reset_states(self):
        """Forget the carried state: the next call starts from zeros (Keras's reset_states)."""
        self.states = None

    def output_masks(self, mask):
        # the sequence output keeps the mask; a last step or a state has none
        return [mask if self.return_sequences else None] + [None] * (self.n_outputs - 1)

    def __call__(self, x, mask):
        if x.ndim != 3 or x.shape[2] != self.n_in:
            raise ValueError(f"{self.label}: expected input [minibatch, T, {self.n_in}], got "
                             f"{list(x.shape)}")
        x = x.astype(self.directions[0][0].dtype, copy=False)
        start = self.states if self.stateful else None
        if start is not None and start[0][0].shape[0] != x.shape[0]:
            raise ValueError(f"{self.label}: this stateful layer carries the state of "
                             f"{start[0][0].shape[0]} examples but the input has {x.shape[0]}; "
                             f"call reset_states() before a batch of another size")
        outputs, states = [], []
        for d, params in enumerate(self.directions):
            # Keras's Bidirectional runs its backward layer with go_backwards flipped
            backwards = self.go_backwards if d == 0 else not self.go_backwards
            seq, state = _lstm_keras(x, params, self.activation, self.gate, mask, backwards,
                                     self.zero_output_for_mask, None if start is None else start[d],
                                     self.unroll)
            if self.return_sequences:
                outputs.append(seq[:, ::-1] if d == 1 else seq)
            else:
                outputs.append(seq[:, -1])
            states.append(state)
        if self.stateful:
            self.states = states
        if self.merge_mode is None:
            out = outputs[0]
        elif self.merge_mode == "concat":
            out = np.concatenate(outputs, axis=-1)
        else:
            out = {"sum": np.add, "mul": np.multiply,
                   "ave": lambda p, q: (p + q) / 2}[self.merge_mode](*outputs)
        if not self.return_state:
            return [out]
        return [out] + [array for state in states for array in state]


class _Dense(_Step):
    def __init__(self, name, config, weights, version, label, kind="Dense"):
        super().__init__(name, kind)
        use_bias = _flag(config, "use_bias", True, label)
        if len(weights) != (2 if use_bias else 1):
            raise ValueError(f"{label}: expected {2 if use_bias else 1} weight arrays (kernel"
                             f"{', bias' if use_bias else ''}), got {len(weights)}")
        self.kernel = np.asarray(weights[0])
        if self.kernel.ndim != 2:
            raise ValueError(f"{label}: kernel must be 2-D, got shape {list(self.kernel.shape)}")
        self.bias = np.asarray(weights[1]) if use_bias else None
        if self.bias is not None and self.bias.shape != (self.kernel.shape[1],):
            raise ValueError(f"{label}: bias shape {list(self.bias.shape)} does not match kernel "
                             f"{list(self.kernel.shape)}")
        self.activation = _dense_activation(_activation_name(config.get("activation", "linear")),
                                            version, label)
        self.label = label

    def __call__(self, x, mask):
        if x.shape[-1] != self.kernel.shape[0]:
            raise ValueError(f"{self.label}: input has {x.shape[-1]} features, kernel expects "
                             f"{self.kernel.shape[0]}")
        z = x @ self.kernel.astype(x.dtype, copy=False)
        if self.bias is not None:
            z = z + self.bias.astype(x.dtype, copy=False)
        return [self.activation(z).astype(x.dtype, copy=False)]


class _Masking(_Step):
    def __init__(self, name, config, label):
        super().__init__(name, "Masking")
        value = config.get("mask_value", 0.0)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"{label}: mask_value must be a number, got {value!r}")
        self.mask_value = float(value)

    def keep(self, x):
        return np.any(x != self.mask_value, axis=-1)

    def __call__(self, x, mask):
        return [x * self.keep(x)[..., None].astype(x.dtype)]


class _Identity(_Step):
    def __call__(self, x, mask):
        return [x]


class KerasModel:
    """A Keras model made runnable by lstmfast (see :func:`load`). ``predict(x)`` for x
    ``[minibatch, T, features]`` (or ``[minibatch, features]`` for models without recurrent
    layers) gives what Keras's ``predict`` gives: one array, or a list when the model has several
    outputs (an LSTM's ``return_state=True`` adds its h and c, per direction). ``steps`` lists
    the layers; ``keras_version`` the saving Keras.

    Stateful layers (``stateful=True``) keep their state from one ``predict`` to the next, as
    Keras's do: each call continues every example from where the previous call left it (so the
    minibatch size stays the same: the one the input's ``batch_shape`` declares, as in Keras).
    :meth:`reset_states` starts them from zeros again."""

    def __init__(self, steps, keras_version, dtype, wiring, batch_size=None):
        self.steps = steps
        self.keras_version = keras_version
        self.dtype = dtype
        #: the minibatch size the model's input declares (``batch_shape``), or None
        self.batch_size = batch_size
        # ([(layer, the tensor it reads)], the model's output tensors); a tensor is
        # (layer name, output index), None the model's input
        self._wiring = wiring

    @property
    def stateful(self):
        """Whether a layer carries its state from one ``predict`` to the next."""
        return any(getattr(step, "stateful", False) for step in self.steps)

    def reset_states(self):
        """Clear the state the stateful layers carry (Keras's ``reset_states``)."""
        for step in self.steps:
            if hasattr(step, "reset_states"):
                step.reset_states()

    def predict(self, x):
        a = np.asarray(x)
        if a.dtype.kind not in "fiu":
            raise TypeError(f"predict: x must be a real array, got dtype {a.dtype}")
        a = a.astype(self.dtype, copy=False)
        if self.batch_size is not None and self.stateful and a.shape[:1] != (self.batch_size,):
            # Keras refuses this too: each row of a stateful layer's state is one example's
            raise ValueError(f"predict: the model's stateful layers are built for minibatches of "
                             f"{self.batch_size} (its input's batch_shape), got x of shape "
                             f"{list(a.shape)}")
        wiring, outputs = self._wiring
        tensors = {None: (a, None)}          # (layer name, index) -> (value, Keras mask)
        for step, inbound in wiring:
            value, mask = tensors[inbound]
            if isinstance(step, _Masking):
                mask = step.keep(value)
            for i, pair in enumerate(zip(step(value, mask), step.output_masks(mask))):
                tensors[(step.name, i)] = pair
        values = [tensors[t][0] for t in outputs]
        return values[0] if len(values) == 1 else values

    __call__ = predict

    def __repr__(self):
        return f"KerasModel(keras_version={self.keras_version}, steps={self.steps})"


# ----------------------------------------------------------------------------------------------
# configuration


def _layers_of(config, label="model"):
    """The layer list of a Sequential or functional model configuration, and for a functional
    model its wiring: (layers, graph) with graph None for a Sequential, else a dict with
    ``inbound`` (per layer, the (layer, tensor index) it reads; [] for InputLayer), ``inputs``
    and ``outputs`` (lists of (layer, tensor index))."""
    if not isinstance(config, dict):
        raise ValueError(f"{label}: the configuration must be a JSON object, got "
                         f"{type(config).__name__}")
    cls = config.get("class_name")
    inner = config.get("config")
    if cls not in ("Sequential", "Model", "Functional"):
        raise ValueError(f"{label}: model class {cls!r} is not supported (Sequential or a "
                         f"functional Model)")
    if not isinstance(inner, (list, dict)):
        raise ValueError(f"{label}: the model's config must be an object or a layer list, got "
                         f"{type(inner).__name__}")
    layers = inner if isinstance(inner, list) else inner.get("layers")   # Keras 2.0: a list
    if not isinstance(layers, list) or not layers:
        raise ValueError(f"{label}: the configuration has no layer list")
    if len(layers) > 10000:
        raise ValueError(f"{label}: {len(layers)} layers is more than lstmfast.keras.load reads")
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict) or not isinstance(layer.get("config"), dict) \
                or not isinstance(layer.get("class_name"), str):
            raise ValueError(f"{label}: layer {i} is not a {{class_name, config}} object")
    if cls == "Sequential":
        return layers, None
    if not isinstance(inner, dict):
        raise ValueError(f"{label}: a functional model's config must be an object with "
                         f"input_layers and output_layers")
    if any(layer["class_name"] == "Masking" for layer in layers):
        # Keras 3 records the mask's computation (not_equal, any) as operation layers
        layers = [layer for layer in layers if layer["class_name"] not in _MASK_OPERATIONS]
    graph = {"inbound": [_inbound_tensors(layer) for layer in layers],
             "inputs": _tensor_list(inner.get("input_layers"), f"{label}: input_layers"),
             "outputs": _tensor_list(inner.get("output_layers"), f"{label}: output_layers")}
    if len(graph["inputs"]) != 1:
        raise ValueError(f"{label}: the model has {len(graph['inputs'])} inputs; "
                         f"lstmfast.keras.load runs models of one input")
    if not graph["outputs"]:
        raise ValueError(f"{label}: the configuration names no output_layers")
    return layers, graph


_MASK_OPERATIONS = ("NotEqual", "Any")


def _tensor_ref(value):
    """(layer name, tensor index) of a Keras 2 [name, node, tensor, {...}] or Keras 3
    [name, node, tensor] reference, else None."""
    if isinstance(value, list) and len(value) >= 3 and isinstance(value[0], str) \
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value[1:3]):
        return value[0], value[2]
    return None


def _tensor_list(value, label):
    single = _tensor_ref(value)
    if single is not None:                       # Keras 3 writes one tensor unnested
        return [single]
    refs = [_tensor_ref(v) for v in value] if isinstance(value, list) else [None]
    if None in refs:
        raise ValueError(f"{label}: expected [layer name, node index, tensor index] entries, "
                         f"got {str(value)[:200]}")
    return refs


def _inbound_tensors(layer):
    """The (layer, tensor index) a functional model's layer reads its data from."""
    tensors = []

    def walk(value):
        if isinstance(value, dict):
            inner = value.get("config")
            history = inner.get("keras_history") if isinstance(inner, dict) else None
            if history:
                tensors.append(_tensor_ref(history) or (str(history[0]), 0))
                return
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            ref = _tensor_ref(value)
            if ref is not None:                  # Keras 2: [name, node_index, tensor_index, {}]
                tensors.append(ref)
                return
            for v in value:
                walk(v)

    for node in layer.get("inbound_nodes", []) or []:
        # Keras 3 nodes are {"args": [...], "kwargs": {...}}: the data comes in through args;
        # kwargs carry the mask Masking computed, which predict tracks itself
        walk(node.get("args", []) if isinstance(node, dict) else node)
    return tensors


def _wire(steps, graph):
    """Check a functional model's wiring against its layers -> ([(step, tensor)], outputs):
    each layer reads one tensor that an earlier layer (or the input, tensor None) produces."""
    (input_name, _), = graph["inputs"]
    produced = {input_name: 1}
    wiring = []
    for step, inbound in zip(steps, graph["inbound"]):
        if step is None:                         # the InputLayer
            continue
        label = f"layer {step.name!r} ({step.kind})"
        if len(inbound) != 1:
            raise ValueError(f"{label}: takes {len(inbound)} inputs {inbound}; lstmfast.keras.load "
                             f"runs layers of one input")
        source, index = inbound[0]
        if source not in produced or not 0 <= index < produced[source]:
            raise ValueError(f"{label}: reads output {index} of {source!r}, which no earlier "
                             f"layer produces")
        wiring.append((step, (source, index) if source != input_name else None))
        produced[step.name] = step.n_outputs
    outputs = []
    for source, index in graph["outputs"]:
        if source not in produced or not 0 <= index < produced[source] or source == input_name:
            raise ValueError(f"model output {index} of {source!r} is not produced by a layer")
        outputs.append((source, index))
    return wiring, outputs


def _snake(class_name):
    """Keras's snake case of a class name: LSTM -> lstm, TimeDistributed -> time_distributed."""
    text = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", class_name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text).lower()


# ----------------------------------------------------------------------------------------------
# weights


def _read_dataset(h5py, dataset, label):
    if not isinstance(dataset, h5py.Dataset):
        raise ValueError(f"{label}: {dataset.name!r} is not a dataset")
    if dataset.dtype.kind != "f":
        raise ValueError(f"{label}: weight {dataset.name!r} has dtype {dataset.dtype}, expected "
                         f"floating point")
    if dataset.size * dataset.dtype.itemsize > MAX_WEIGHTS_BYTES:
        raise ValueError(f"{label}: weight {dataset.name!r} of shape {list(dataset.shape)} is "
                         f"larger than {MAX_WEIGHTS_BYTES} bytes")
    try:
        return dataset[()]
    except Exception as exc:     # truncated or corrupt files: h5py raises OSError and others
        raise ValueError(f"{label}: weight {dataset.name!r} cannot be read: {exc}") from None


def _h5_layer_weights(h5py, root, name, label):
    """Keras 2 / legacy .h5: the layer group's ``weight_names`` attribute lists its arrays in
    order (kernel, recurrent_kernel, bias; forward direction first)."""
    if name not in root:
        return []
    group = root[name]
    names = group.attrs.get("weight_names", [])
    out = []
    for n in names:
        n = n.decode("utf-8") if isinstance(n, bytes) else str(n)
        if n not in group:
            raise ValueError(f"{label}: weight {n!r} listed in the file is missing")
        out.append(_read_dataset(h5py, group[n], label))
    return out


def _keras3_layer_weights(h5py, root, key, label):
    """Keras 3 .keras: ``layers/<key>/.../vars/<k>`` in the order of the paths Keras writes."""
    if key not in root:
        return []
    found = []

    def visit(path, obj):
        if isinstance(obj, h5py.Dataset):
            parts = path.split("/")
            if len(parts) >= 2 and parts[-2] == "vars":
                found.append((parts[:-2], int(parts[-1]) if parts[-1].isdigit() else 0, path))

    root[key].visititems(visit)
    order = {"forward_layer": 0, "backward_layer": 1}
    found.sort(key=lambda item: ([order.get(p, 2) for p in item[0]], item[0], item[1]))
    return [_read_dataset(h5py, root[key][path], label) for _, _, path in found]


# ----------------------------------------------------------------------------------------------
# building


def _build(model, weights_of, version, dtype):
    layers, graph = model
    steps = []                  # one per layer; None for an InputLayer
    counters = {}
    for i, spec in enumerate(layers):
        cls = spec["class_name"]
        config = spec["config"]
        name = config.get("name", spec.get("name", f"layer{i}"))
        label = f"layer {name!r} ({cls})"
        snake = _snake(cls)
        index = counters.get(snake, 0)
        counters[snake] = index + 1
        key = snake if index == 0 else f"{snake}_{index}"
        if cls == "InputLayer":
            steps.append(None)
            continue
        if cls in _DROPOUTS:
            steps.append(_Identity(name, cls))
            continue
        if cls == "Masking":
            steps.append(_Masking(name, config, label))
            continue
        weights = [np.asarray(w, dtype=dtype) for w in weights_of(name, key, label)]
        if cls == "LSTM":
            steps.append(_Lstm(name, config, weights, version, label))
        elif cls == "Bidirectional":
            inner = config.get("layer", {})
            if not isinstance(inner, dict) or inner.get("class_name") != "LSTM":
                raise ValueError(f"{label}: only Bidirectional(LSTM) is supported, got "
                                 f"{inner.get('class_name') if isinstance(inner, dict) else inner!r}")
            if not isinstance(inner.get("config", {}), dict):
                raise ValueError(f"{label}: the wrapped LSTM's config is not an object")
            mode = config.get("merge_mode", "concat")
            if mode not in ("concat", "sum", "mul", "ave"):
                raise ValueError(f"{label}: merge_mode={mode!r} is not supported (concat, sum, "
                                 f"mul, ave)")
            steps.append(_Lstm(name, inner.get("config", {}), weights, version, label, wrapper=mode))
        elif cls == "Dense":
            steps.append(_Dense(name, config, weights, version, label))
        elif cls == "TimeDistributed":
            inner = config.get("layer", {})
            if not isinstance(inner, dict) or inner.get("class_name") != "Dense" \
                    or not isinstance(inner.get("config", {}), dict):
                raise ValueError(f"{label}: only TimeDistributed(Dense) is supported")
            steps.append(_Dense(name, inner.get("config", {}), weights, version, label,
                                kind="TimeDistributed"))
        else:
            raise ValueError(f"{label}: layer class {cls!r} is not supported by "
                             f"lstmfast.keras.load")
    if graph is not None:
        wiring = _wire(steps, graph)
    steps = [step for step in steps if step is not None]
    if not steps:
        raise ValueError("the model has no layers lstmfast can run")
    if graph is None:           # a Sequential: each layer reads all of the one before
        for step in steps[:-1]:
            if step.n_outputs != 1:
                raise ValueError(f"layer {step.name!r} ({step.kind}): return_state=True inside a "
                                 f"Sequential hands the next layer a list; use a functional model")
        wiring = ([(step, None if k == 0 else (steps[k - 1].name, 0))
                   for k, step in enumerate(steps)],
                  [(steps[-1].name, i) for i in range(steps[-1].n_outputs)])
    return KerasModel(steps, version, dtype, wiring, _declared_batch_size(layers))


def _declared_batch_size(layers):
    """The minibatch size fixed by the input's ``batch_shape`` (Keras 3) or the first layer's
    ``batch_input_shape`` (Keras 2), or None."""
    for spec in layers[:2]:
        config = spec["config"]
        shape = config.get("batch_shape", config.get("batch_input_shape"))
        if isinstance(shape, list) and shape:
            size = shape[0]
            return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 \
                else None
    return None


def _version_of(text):
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if isinstance(text, str) and text[:1] in ("1", "2", "3"):
        return 3 if text[0] == "3" else 2
    return None


def _decode_json(text, label):
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str):
        raise ValueError(f"{label}: expected JSON text, got {type(text).__name__}")
    if len(text) > MAX_CONFIG_BYTES:
        raise ValueError(f"{label}: {len(text)} bytes of JSON is more than {MAX_CONFIG_BYTES}")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{label}: not valid JSON ({exc})") from None


def _open_h5(h5py, source, label):
    try:
        return h5py.File(source, "r")
    except Exception as exc:       # OSError for truncated or non-HDF5 files
        raise ValueError(f"{label}: not a readable HDF5 file ({exc})") from None


def _load_keras3(path, dtype):
    label = os.fspath(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"{label}: not a .keras archive ({exc})") from None
    with archive:
        info = {i.filename: i for i in archive.infolist()}
        for needed in ("config.json", "model.weights.h5"):
            if needed not in info:
                raise ValueError(f"{label}: the archive has no {needed}")
        if info["config.json"].file_size > MAX_CONFIG_BYTES or \
                info["model.weights.h5"].file_size > MAX_WEIGHTS_BYTES:
            raise ValueError(f"{label}: the archive's members are larger than lstmfast reads")
        try:
            config = _decode_json(archive.read("config.json"), f"{label}: config.json")
            metadata = (_decode_json(archive.read("metadata.json"), f"{label}: metadata.json")
                        if "metadata.json" in info else {})
            weights_bytes = archive.read("model.weights.h5")
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ValueError(f"{label}: the archive cannot be read ({exc})") from None
    version = _version_of(metadata.get("keras_version", "3")) if isinstance(metadata, dict) else 3
    h5py = _require_h5py()
    with _open_h5(h5py, io.BytesIO(weights_bytes), f"{label}: model.weights.h5") as f:
        root = f["layers"] if "layers" in f else f
        return _build(_layers_of(config, label),
                      lambda name, key, lab: _keras3_layer_weights(h5py, root, key, lab),
                      version or 3, dtype)


def _load_h5(path, weights, dtype):
    h5py = _require_h5py()
    label = os.fspath(path)
    with _open_h5(h5py, path, label) as f:
        if "model_config" not in f.attrs:
            raise ValueError(f"{label}: the .h5 file holds no model_config (a weights-only file? "
                             f"pass the JSON configuration as path and this file as weights=)")
        config = _decode_json(f.attrs["model_config"], f"{label}: model_config")
        version = _version_of(f.attrs.get("keras_version", "2")) or 2
        root = f["model_weights"] if "model_weights" in f else f
        return _build(_layers_of(config, label),
                      lambda name, key, lab: _h5_layer_weights(h5py, root, name, lab),
                      version, dtype)


def _load_json_and_weights(path, weights, dtype, keras_version):
    h5py = _require_h5py()
    label = os.fspath(path)
    if os.path.getsize(path) > MAX_CONFIG_BYTES:
        raise ValueError(f"{label}: larger than {MAX_CONFIG_BYTES} bytes")
    with open(path, "rb") as fh:
        config = _decode_json(fh.read(), label)
    wlabel = os.fspath(weights)
    with _open_h5(h5py, weights, wlabel) as f:
        version = keras_version or _version_of(f.attrs.get("keras_version")) or \
            _version_of(config.get("keras_version") if isinstance(config, dict) else None)
        if version is None:
            raise ValueError(f"{wlabel}: the files do not say which Keras saved them: pass "
                             f"keras_version=2 or 3")
        if "layer_names" not in f.attrs and "model_weights" not in f \
                and isinstance(f.get("layers"), h5py.Group):
            # Keras 3's save_weights, and Keras 2.13+'s for a name ending in .weights.h5:
            # arrays under layers/<snake-case class name>[_k]/.../vars/<k>
            root = f["layers"]

            def weights_of(name, key, lab):
                return _keras3_layer_weights(h5py, root, key, lab)
        else:
            root = f["model_weights"] if "model_weights" in f else f

            def weights_of(name, key, lab):
                return _h5_layer_weights(h5py, root, name, lab)
        return _build(_layers_of(config, label), weights_of, version, dtype)


def load(path, weights=None, *, dtype=None, keras_version=None):
    """Read a Keras model -> :class:`KerasModel`.

    ``path``: a Keras 3 ``.keras`` archive, an ``.h5`` file saved by ``model.save`` (Keras 2, or
    Keras 3's legacy format), or a JSON configuration (``model.to_json()``) with ``weights`` the
    ``.h5`` of ``model.save_weights`` (either layout: the HDF5 one of ``model.save``, or Keras
    3's, which Keras 2.13+ also writes for a name ending in ``.weights.h5``). ``dtype``: the
    computation's (default: the weights', float32 for Keras). ``keras_version`` (2 or 3) is
    needed only when a JSON configuration and its weights file do not say it. Problems are ValueErrors naming the layer.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    dtype = np.dtype(np.float32 if dtype is None else dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(b"PK"):
        return _load_keras3(path, dtype)
    if head.startswith(b"\x89HDF"):
        if weights is not None:
            raise ValueError(f"{path}: an .h5 model file holds its weights; weights= is for a "
                             f"JSON configuration")
        return _load_h5(path, weights, dtype)
    if weights is None:
        raise ValueError(f"{path}: neither a .keras archive nor an HDF5 file; a JSON "
                         f"configuration needs weights= (the weights .h5)")
    return _load_json_and_weights(path, weights, dtype, keras_version)
