"""ONNX files: :func:`export` lstmfast layers and networks, :func:`load` graphs of LSTM nodes.

Needs the ``onnx`` package (``pip install lstmfast[onnx]``, which also brings ONNX Runtime to run
the files); ``import lstmfast`` does not import it.

Export
------
``export(model, path)`` writes one graph for an LSTM, GravesLSTM, Bidirectional,
GravesBidirectionalLSTM, DenseLayer, OutputLayer, RnnOutputLayer or a :class:`lstmfast.Sequential`
of them. The graph's input ``x`` and output ``y`` keep lstmfast's (DL4J's) layout:
``[minibatch, nIn, T]`` for sequences, ``[minibatch, nIn]`` for a network that starts with a dense
layer; ``minibatch`` and ``T`` are dynamic axes. Inside, every recurrent layer is one ONNX
``LSTM`` node on ``[T, minibatch, n]`` (``layout=0``):

* gates: lstmfast's blocks (block input, forget, output, input gate) become ONNX's i, o, f, c
  rows of ``W`` / ``R`` / ``B`` (the whole bias in ``Wb``, ``Rb`` zero); GravesLSTM's peepholes
  ``wFF, wOO, wGG`` become ``P = [P_i, P_o, P_f] = [wGG, wOO, wFF]``;
* directions: a bidirectional layer is one ``direction="bidirectional"`` node; "concat" moves
  the direction axis next to the units, "add" / "average" / "mul" are ``ReduceSum`` /
  ``ReduceMean`` / ``ReduceProd`` over it;
* activations: ONNX's (``Sigmoid``/``HardSigmoid`` gates; ``HardSigmoid``'s defaults 0.2, 0.5 are
  DL4J's).

With ``sequence_lens=True`` the graph has a second input ``sequence_lens`` ``[minibatch]`` (int32)
fed to every LSTM node: the file then computes what the model computes with ``lengths=`` (the
layers' ``forward(x, lengths=...)``, ``Sequential.output(x, lengths=...)``). lstmfast's mask
``[minibatch, T]`` means the same only when each row is ones then zeros (a prefix of ones):
:func:`mask_to_sequence_lens` converts such masks and refuses any other (a mask with gaps has no
ONNX equivalent).

Import
------
``load(path)`` reads a graph of ``LSTM`` nodes and the operators exporters put around them
(Transpose, Squeeze, Unsqueeze, Reshape, Gemm, MatMul, Add, Sub, Mul, Div, Concat, Slice, Split,
Identity, Cast, Reduce{Sum,Mean,Prod}, activations, Softmax) and returns an :class:`OnnxModel`
whose ``run`` computes the graph's outputs with lstmfast's kernels for every LSTM node and NumPy
for the rest. A graph using something else is refused with a ValueError naming the node.
``sequence_lens`` runs the kernels' per-example lengths: ``Y`` is zero past each length, ``Y_h`` /
``Y_c`` are each example's state after its last valid step (for the reverse direction after time
0, having started at the example's last valid time), and a length of 0 gives zeros in ``Y``,
``Y_h`` and ``Y_c``, as ONNX Runtime does.
"""

from __future__ import annotations

import os

import numpy as np

from . import convert
from ._onnx_export import build_model
from .layers import Bidirectional

__all__ = ["export", "load", "OnnxModel", "layer_from_node", "mask_to_sequence_lens", "OPSET"]

#: The operator set the exported files use (ReduceProd takes its axes as an input from 18 on).
OPSET = 18


def _require_onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("lstmfast.onnx needs the onnx package: pip install 'lstmfast[onnx]' "
                          "(or pip install onnx onnxruntime)") from None
    return onnx


def mask_to_sequence_lens(mask):
    """lstmfast mask ``[minibatch, T]`` -> ONNX ``sequence_lens`` ``[minibatch]`` (int32).

    Exact only for masks whose rows are ones followed by zeros (an all-zero row is length 0): an
    LSTM then computes the same outputs with the mask as ONNX's LSTM with these lengths (zeros
    after each length); the lengths are also what ``lengths=`` takes. Any other mask (a zero
    before a one, values other than 0 and 1) is refused."""
    m = np.asarray(mask)
    if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] == 0:
        raise ValueError(f"mask_to_sequence_lens: expected a mask [minibatch, T], got shape "
                         f"{list(m.shape)}")
    if m.dtype.kind not in "biuf" or not np.all((m == 0) | (m == 1)):
        raise ValueError("mask_to_sequence_lens: the mask must hold only 0 and 1")
    ones = m != 0
    lengths = ones.sum(axis=1)
    prefix = np.arange(m.shape[1])[None, :] < lengths[:, None]
    bad = np.flatnonzero((ones != prefix).any(axis=1))
    if bad.size:
        row = int(bad[0])
        raise ValueError(f"mask_to_sequence_lens: row {row} of the mask ({m[row].tolist()[:20]}) is "
                         f"not a prefix of ones (ones, then zeros); only such masks have an exact "
                         f"ONNX sequence_lens (a mask with gaps has no ONNX equivalent)")
    if m.shape[1] > np.iinfo(np.int32).max:
        raise ValueError("mask_to_sequence_lens: T exceeds the int32 range of sequence_lens")
    return lengths.astype(np.int32)


# ----------------------------------------------------------------------------------------------
# export (the graph is built by lstmfast._onnx_export)


def export(model, path, *, sequence_lens=False, opset=OPSET):
    """Write ``model`` (an lstmfast layer or :class:`~lstmfast.Sequential`) to the ONNX file
    ``path``; returns the ``onnx.ModelProto``. The file's input ``x`` and output ``y`` are in
    lstmfast's layout (see the module docstring); its dtype is the model's (float32 or float64).
    ``sequence_lens=True`` adds the int32 input ``sequence_lens`` ``[minibatch]``: the file then
    gives what the model gives with ``lengths=`` (see :func:`mask_to_sequence_lens` for prefix
    masks). The file passes ``onnx.checker.check_model(full_check=True)``.
    """
    onnx = _require_onnx()
    proto = build_model(onnx, model, sequence_lens=sequence_lens, opset=opset)
    if path is not None:
        onnx.save_model(proto, os.fspath(path))
    return proto


# ----------------------------------------------------------------------------------------------
# import

#: Files larger than this are refused before parsing (protobuf itself stops at 2 GiB).
MAX_FILE_BYTES = 2 ** 31 - 1


class _Refused(ValueError):
    pass


def _node_label(node):
    return f"node {node.name!r} ({node.op_type})" if node.name else f"a {node.op_type} node"


def _attributes(onnx, node):
    out = {}
    for attribute in node.attribute:
        try:
            out[attribute.name] = onnx.helper.get_attribute_value(attribute)
        except Exception as exc:    # a malformed attribute: protobuf and onnx raise various types
            raise ValueError(f"{_node_label(node)}: attribute {attribute.name!r} cannot be read: "
                             f"{exc}") from None
    return out


def _to_array(onnx, tensor, what):
    if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.external_data:
        raise ValueError(f"{what}: tensor {tensor.name!r} keeps its data in an external file, "
                         f"which lstmfast.onnx.load does not read")
    if any(d < 0 for d in tensor.dims):
        raise ValueError(f"{what}: tensor {tensor.name!r} has negative dims {list(tensor.dims)}")
    try:
        return onnx.numpy_helper.to_array(tensor)
    except Exception as exc:
        raise ValueError(f"{what}: tensor {tensor.name!r} (dims {list(tensor.dims)}) cannot be "
                         f"read: {exc}") from None


def _ints(value, what):
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{what}: expected integers, got {arr.dtype}")
    return [int(v) for v in arr.reshape(-1)]


def _softmax(x, axis):
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def _softplus(x):
    return np.logaddexp(0, x).astype(x.dtype, copy=False)


_UNARY = {
    "Identity": lambda x, a: x,
    "Sigmoid": lambda x, a: (0.5 * (1.0 + np.tanh(0.5 * x))).astype(x.dtype, copy=False),
    "Tanh": lambda x, a: np.tanh(x),
    "Relu": lambda x, a: np.maximum(x, 0).astype(x.dtype, copy=False),
    "LeakyRelu": lambda x, a: np.where(x > 0, x, x * np.asarray(a.get("alpha", 0.01), x.dtype)),
    "Elu": lambda x, a: np.where(x > 0, x, np.asarray(a.get("alpha", 1.0), x.dtype)
                                 * np.expm1(np.minimum(x, 0))),
    "HardSigmoid": lambda x, a: np.clip(x * np.asarray(a.get("alpha", 0.2), x.dtype)
                                        + np.asarray(a.get("beta", 0.5), x.dtype), 0, 1),
    "Softsign": lambda x, a: x / (1 + np.abs(x)),
    "Softplus": lambda x, a: _softplus(x),
    "Exp": lambda x, a: np.exp(x),
    "Neg": lambda x, a: -x,
}
_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}
_REDUCE = {"ReduceSum": np.sum, "ReduceMean": np.mean, "ReduceProd": np.prod,
           "ReduceMax": np.max}
_LSTM_INPUTS = ("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P")


class _LstmNode:
    """An ONNX LSTM node prepared once: lstmfast weights per direction, activations."""

    def __init__(self, node, attributes, constants):
        label = _node_label(node)
        known = {"activation_alpha", "activation_beta", "activations", "clip", "direction",
                 "hidden_size", "input_forget", "layout"}
        unknown = sorted(set(attributes) - known)
        if unknown:
            raise _Refused(f"{label}: unknown LSTM attribute(s) {unknown}")
        names = list(node.input) + [""] * (8 - len(node.input))
        if len(node.input) > 8 or len(node.input) < 3 or not names[0]:
            raise _Refused(f"{label}: expected inputs X, W, R[, B, sequence_lens, initial_h, "
                           f"initial_c, P], got {list(node.input)}")
        for slot in ("W", "R", "B", "P"):
            name = names[_LSTM_INPUTS.index(slot)]
            if name and name not in constants:
                raise _Refused(f"{label}: input {slot} ({name!r}) must be an initializer or a "
                               f"Constant: lstmfast prepares the weights once")
        weights = {slot: constants.get(names[_LSTM_INPUTS.index(slot)]) for slot in ("W", "R", "B", "P")}
        for slot, array in weights.items():
            if array is not None and np.asarray(array).dtype.kind != "f":
                raise _Refused(f"{label}: input {slot} has dtype {np.asarray(array).dtype}; "
                               f"ONNX's LSTM takes floating-point weights")
        self.layout = attributes.get("layout", 0)
        try:
            self.direction = convert.onnx_text(attributes.get("direction", "forward"), "direction")
            layer = convert.from_onnx(
                weights["W"], weights["R"], weights["B"], weights["P"],
                direction=self.direction,
                activations=attributes.get("activations"),
                activation_alpha=attributes.get("activation_alpha"),
                activation_beta=attributes.get("activation_beta"),
                clip=attributes.get("clip"), input_forget=attributes.get("input_forget", 0),
                hidden_size=attributes.get("hidden_size"), layout=self.layout)
        except (ValueError, TypeError) as exc:
            raise _Refused(f"{label}: {str(exc).replace('from_onnx: ', '')}") from None
        if isinstance(layer, Bidirectional):
            directions = [layer.forward_layer, layer.backward_layer]
        else:
            directions = [layer]
        self.layer = layer
        self.params = [(d.W, d.RW, d.b) for d in directions]
        self.forwards = [not d.reverse for d in directions]
        self.activation = directions[0].activation
        self.gate_activation = directions[0].gate_activation
        self.hidden = directions[0].n_out
        self.n_in = directions[0].n_in
        self.dtype = directions[0].dtype
        self.label = label
        self.inputs = names

    def run(self, values):
        from .functional import lstm_forward

        values = list(values) + [None] * (8 - len(values))
        X = values[0]
        if X.ndim != 3:
            raise ValueError(f"{self.label}: X must be 3-D, got shape {list(X.shape)}")
        x = X.transpose(1, 2, 0) if self.layout == 0 else X.transpose(0, 2, 1)   # [N, nIn, T]
        mb, n_in, steps = x.shape
        if n_in != self.n_in:
            raise ValueError(f"{self.label}: X has input size {n_in}, W expects {self.n_in}")
        x = np.asarray(x, dtype=self.dtype)
        lens, h0, c0 = values[4], values[5], values[6]
        if lens is not None:
            lens = np.asarray(lens).reshape(-1)
            if lens.shape != (mb,) or lens.dtype.kind not in "iu" or np.any(lens < 0) \
                    or np.any(lens > steps):
                raise ValueError(f"{self.label}: sequence_lens must be {mb} integers in [0, {steps}], "
                                 f"got {lens.tolist()[:10]}")

        def state(value, what, d):
            if value is None:
                return None
            v = value if self.layout == 0 else np.swapaxes(value, 0, 1)
            if v.shape != (len(self.params), mb, self.hidden):
                raise ValueError(f"{self.label}: {what} has shape {list(value.shape)}, expected "
                                 f"[num_directions, minibatch, hidden] = "
                                 f"{[len(self.params), mb, self.hidden]} (layout={self.layout})")
            return np.asarray(v[d], dtype=self.dtype)

        ys, hs, cs = [], [], []
        for d, ((W, RW, b), forwards) in enumerate(zip(self.params, self.forwards)):
            r = lstm_forward(x, W, RW, b, h0=state(h0, "initial_h", d), c0=state(c0, "initial_c", d),
                             activation=self.activation, gate_activation=self.gate_activation,
                             lengths=lens, forwards=forwards)
            # with sequence_lens, last_h / last_c are each example's state after its own last
            # valid step (the reverse direction's after time 0, having started at its last
            # valid time)
            ys.append(r.output)                                   # [N, h, T]
            hs.append(r.last_h)
            cs.append(r.last_c)
        Y = np.stack([y.transpose(2, 0, 1) for y in ys], axis=1)            # [T, dirs, N, h]
        if self.layout == 1:
            Y = Y.transpose(2, 0, 1, 3)                                    # [N, T, dirs, h]
        Y_h = np.stack(hs)
        Y_c = np.stack(cs)
        if lens is not None:
            # ONNX Runtime gives zeros, not the initial state, for a sequence of length 0
            Y_h[:, lens == 0] = 0
            Y_c[:, lens == 0] = 0
        if self.layout == 1:
            Y_h = np.swapaxes(Y_h, 0, 1)
            Y_c = np.swapaxes(Y_c, 0, 1)
        return [Y, Y_h, Y_c]


class OnnxModel:
    """An ONNX graph made runnable by lstmfast (see :func:`load`).

    ``inputs`` / ``outputs``: the graph's input and output names. ``run(*arrays, **named)``
    returns the outputs (a list, or the one array when the graph has one output); ``lstm_layers``
    are the LSTM nodes as lstmfast layers (GravesLSTM with peepholes, LSTM, Bidirectional)."""

    def __init__(self, proto, onnx):
        graph = proto.graph
        self.opset = 1
        for entry in proto.opset_import:
            if entry.domain in ("", "ai.onnx"):
                self.opset = entry.version
        self.constants = {}
        for tensor in graph.initializer:
            self.constants[tensor.name] = _to_array(onnx, tensor, "initializer")
        self.inputs = [v.name for v in graph.input if v.name not in self.constants]
        self.outputs = [v.name for v in graph.output]
        self._steps = []
        self.lstm_layers = []
        known = set(self.constants) | set(self.inputs)
        for node in graph.node:
            label = _node_label(node)
            if node.domain not in ("", "ai.onnx"):
                raise ValueError(f"{label}: operator domain {node.domain!r} is not supported")
            attributes = _attributes(onnx, node)
            for name in node.input:
                if name and name not in known:
                    raise ValueError(f"{label}: input {name!r} is produced by no earlier node, "
                                     f"initializer or graph input (graphs must be in "
                                     f"topological order)")
            if node.op_type == "Constant":
                if "value" not in attributes:
                    raise ValueError(f"{label}: only Constant nodes with a 'value' tensor are "
                                     f"supported, got attributes {sorted(attributes)}")
                value = attributes["value"]
                self.constants[node.output[0]] = _to_array(onnx, value, label) \
                    if hasattr(value, "dims") else np.asarray(value)
                known.add(node.output[0])
                continue
            if node.op_type == "LSTM":
                prepared = _LstmNode(node, attributes, self.constants)
                self.lstm_layers.append(prepared.layer)
                run = prepared.run
            elif node.op_type in _OPS:
                run = _OPS[node.op_type](self, node, attributes, label)
            else:
                raise ValueError(f"{label}: operator {node.op_type!r} is not supported by "
                                 f"lstmfast.onnx.load (supported: LSTM, Constant, "
                                 f"{', '.join(sorted(_OPS))})")
            self._steps.append((node, label, run))
            known.update(o for o in node.output if o)
        for name in self.outputs:
            if name not in known:
                raise ValueError(f"graph output {name!r} is produced by no node")

    def run(self, *args, **named):
        if len(args) > len(self.inputs):
            raise TypeError(f"run: the graph has {len(self.inputs)} input(s) {self.inputs}, got "
                            f"{len(args)} positional arrays")
        values = dict(self.constants)
        values.update(zip(self.inputs, args))
        for name, value in named.items():
            if name not in self.inputs:
                raise TypeError(f"run: {name!r} is not an input of the graph ({self.inputs})")
            values[name] = value
        for name in self.inputs:
            if name not in values:
                raise TypeError(f"run: missing input {name!r}")
            values[name] = np.asarray(values[name])
        for node, label, run in self._steps:
            inputs = [values[n] if n else None for n in node.input]
            try:
                results = run(inputs)
            except (ValueError, TypeError, IndexError) as exc:
                message = str(exc)
                raise ValueError(message if message.startswith(label) else f"{label}: {message}") \
                    from None
            for name, value in zip(node.output, results):
                if name:
                    values[name] = value
        outputs = [values[n] for n in self.outputs]
        return outputs[0] if len(outputs) == 1 else outputs

    __call__ = run

    def __repr__(self):
        return (f"OnnxModel(inputs={self.inputs}, outputs={self.outputs}, "
                f"steps={len(self._steps)}, lstm_layers={len(self.lstm_layers)})")


def _axes_of(model, node, inputs, attributes, index):
    """Axes from the attribute (older opsets) or from input `index` (newer ones)."""
    if len(node.input) > index and node.input[index]:
        return _ints(inputs[index], f"{_node_label(node)}: axes")
    if "axes" in attributes:
        return [int(a) for a in attributes["axes"]]
    return None


def _op_unary(model, node, attributes, label):
    fn = _UNARY[node.op_type]
    return lambda inputs: [fn(inputs[0], attributes)]


def _op_binary(model, node, attributes, label):
    fn = _BINARY[node.op_type]
    return lambda inputs: [fn(inputs[0], inputs[1])]


def _op_transpose(model, node, attributes, label):
    perm = attributes.get("perm")
    return lambda inputs: [np.transpose(inputs[0], perm)]


def _op_squeeze(model, node, attributes, label):
    def run(inputs):
        axes = _axes_of(model, node, inputs, attributes, 1)
        x = inputs[0]
        if axes is None:
            return [np.squeeze(x)]
        return [np.squeeze(x, axis=tuple(a % x.ndim for a in axes))]
    return run


def _op_unsqueeze(model, node, attributes, label):
    def run(inputs):
        axes = _axes_of(model, node, inputs, attributes, 1)
        if not axes:
            raise ValueError("Unsqueeze needs axes")
        rank = inputs[0].ndim + len(axes)
        return [np.expand_dims(inputs[0], tuple(sorted(a % rank for a in axes)))]
    return run


def _op_reshape(model, node, attributes, label):
    allow_zero = attributes.get("allowzero", 0)

    def run(inputs):
        x = inputs[0]
        shape = _ints(inputs[1], "Reshape shape")
        if not allow_zero:
            shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
        return [x.reshape(shape)]
    return run


def _op_flatten(model, node, attributes, label):
    axis = attributes.get("axis", 1)

    def run(inputs):
        x = inputs[0]
        a = axis % x.ndim if x.ndim else 0
        return [x.reshape(int(np.prod(x.shape[:a], dtype=np.int64)), -1)]
    return run


def _op_gemm(model, node, attributes, label):
    alpha, beta = attributes.get("alpha", 1.0), attributes.get("beta", 1.0)
    trans_a, trans_b = attributes.get("transA", 0), attributes.get("transB", 0)

    def run(inputs):
        a, b = inputs[0], inputs[1]
        a = a.T if trans_a else a
        b = b.T if trans_b else b
        y = a @ b
        if alpha != 1.0:
            y = y * np.asarray(alpha, y.dtype)
        if len(inputs) > 2 and inputs[2] is not None:
            c = inputs[2] if beta == 1.0 else inputs[2] * np.asarray(beta, y.dtype)
            y = y + c
        return [y]
    return run


def _op_matmul(model, node, attributes, label):
    return lambda inputs: [np.matmul(inputs[0], inputs[1])]


def _op_concat(model, node, attributes, label):
    if "axis" not in attributes:
        raise _Refused(f"{label}: Concat without an axis attribute")
    axis = attributes["axis"]
    return lambda inputs: [np.concatenate(inputs, axis=axis)]


def _op_slice(model, node, attributes, label):
    def run(inputs):
        x = inputs[0]
        if model.opset < 10:
            starts, ends = attributes["starts"], attributes["ends"]
            axes, steps = attributes.get("axes"), None
        else:
            starts = _ints(inputs[1], "Slice starts")
            ends = _ints(inputs[2], "Slice ends")
            axes = _ints(inputs[3], "Slice axes") if len(inputs) > 3 and inputs[3] is not None else None
            steps = _ints(inputs[4], "Slice steps") if len(inputs) > 4 and inputs[4] is not None else None
        axes = list(range(len(starts))) if axes is None else axes
        steps = [1] * len(starts) if steps is None else steps
        index = [slice(None)] * x.ndim
        for start, end, axis, step in zip(starts, ends, axes, steps):
            if step == 0:
                raise ValueError("Slice step 0")
            size = x.shape[axis]
            start = max(min(start, size), -size - 1)  # clamp the huge sentinels exporters write
            end = max(min(end, size), -size - 1)
            index[axis % x.ndim] = slice(start, end if end >= -size else None, step)
        return [x[tuple(index)]]
    return run


def _op_split(model, node, attributes, label):
    axis = attributes.get("axis", 0)
    n = len(node.output)

    def run(inputs):
        x = inputs[0]
        sizes = None
        if len(inputs) > 1 and inputs[1] is not None:
            sizes = _ints(inputs[1], "Split split")
        elif "split" in attributes:
            sizes = list(attributes["split"])
        if sizes is None:
            if x.shape[axis] % n:
                raise ValueError(f"Split: axis {axis} of size {x.shape[axis]} is not divisible "
                                 f"into {n} outputs")
            return np.split(x, n, axis=axis)
        if len(sizes) != n or sum(sizes) != x.shape[axis] or min(sizes) < 0:
            raise ValueError(f"Split sizes {sizes} do not split axis {axis} of size "
                             f"{x.shape[axis]} into {n} outputs")
        return np.split(x, np.cumsum(sizes)[:-1], axis=axis)
    return run


def _op_reduce(model, node, attributes, label):
    fn = _REDUCE[node.op_type]
    keepdims = bool(attributes.get("keepdims", 1))
    noop = attributes.get("noop_with_empty_axes", 0)

    def run(inputs):
        axes = _axes_of(model, node, inputs, attributes, 1)
        x = inputs[0]
        if not axes:
            if noop:
                return [x]
            axes = list(range(x.ndim))
        return [fn(x, axis=tuple(a % x.ndim for a in axes), keepdims=keepdims).astype(x.dtype)]
    return run


def _op_softmax(model, node, attributes, label):
    if model.opset >= 13:
        axis = attributes.get("axis", -1)
        return lambda inputs: [_softmax(inputs[0], axis)]
    axis = attributes.get("axis", 1)

    def run(inputs):  # before opset 13: softmax over the flattened trailing axes
        x = inputs[0]
        a = axis % x.ndim
        flat = x.reshape(int(np.prod(x.shape[:a], dtype=np.int64)), -1)
        return [_softmax(flat, 1).reshape(x.shape)]
    return run


def _op_clip(model, node, attributes, label):
    def run(inputs):
        x = inputs[0]
        lo = attributes.get("min") if model.opset < 11 else (inputs[1] if len(inputs) > 1 else None)
        hi = attributes.get("max") if model.opset < 11 else (inputs[2] if len(inputs) > 2 else None)
        if lo is not None:
            x = np.maximum(x, np.asarray(lo, x.dtype))
        if hi is not None:
            x = np.minimum(x, np.asarray(hi, x.dtype))
        return [x]
    return run


def _op_cast(model, node, attributes, label):
    import onnx

    to = attributes.get("to")
    targets = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
               onnx.TensorProto.INT32: np.int32, onnx.TensorProto.INT64: np.int64}
    if to not in targets:
        raise _Refused(f"{label}: Cast to type {to} is not supported (float, double, int32, int64)")
    return lambda inputs: [inputs[0].astype(targets[to])]


_OPS = {op: _op_unary for op in _UNARY}
_OPS.update({op: _op_binary for op in _BINARY})
_OPS.update({op: _op_reduce for op in _REDUCE})
_OPS.update({"Transpose": _op_transpose, "Squeeze": _op_squeeze, "Unsqueeze": _op_unsqueeze,
             "Reshape": _op_reshape, "Flatten": _op_flatten, "Gemm": _op_gemm,
             "MatMul": _op_matmul, "Concat": _op_concat, "Slice": _op_slice, "Split": _op_split,
             "Softmax": _op_softmax, "Clip": _op_clip, "Cast": _op_cast})


def layer_from_node(node, initializers):
    """An ONNX ``LSTM`` ``NodeProto`` and its weights -> an lstmfast layer (what
    :func:`lstmfast.convert.from_onnx` returns for arrays). ``initializers``: a dict of names to
    arrays or ``TensorProto``, an iterable of ``TensorProto``, or the ``GraphProto``."""
    onnx = _require_onnx()
    if getattr(node, "op_type", None) != "LSTM":
        raise ValueError(f"from_onnx: expected an LSTM NodeProto, got "
                         f"{getattr(node, 'op_type', type(node).__name__)!r}")
    if hasattr(initializers, "initializer"):
        initializers = initializers.initializer
    if isinstance(initializers, dict):
        items = initializers.items()
    else:
        items = [(t.name, t) for t in initializers]
    constants = {name: _to_array(onnx, v, "initializer") if hasattr(v, "dims") else np.asarray(v)
                 for name, v in items}
    return _LstmNode(node, _attributes(onnx, node), constants).layer


def load(path):
    """Read the ONNX file ``path`` (or an ``onnx.ModelProto``) -> :class:`OnnxModel`.

    Every ``LSTM`` node runs on lstmfast's kernels (its W, R, B, P must be initializers or
    Constants); the operators around it run in NumPy. Refused with a ValueError naming the node:
    unknown operators or domains, ``clip``, ``input_forget=1``, activations lstmfast does not
    have, weights read from external files; a file that is not a readable ONNX model (truncated,
    not protobuf) is a ValueError too."""
    onnx = _require_onnx()
    if isinstance(path, onnx.ModelProto):
        proto = path
    else:
        path = os.fspath(path)
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise ValueError(f"{path}: {size} bytes is more than an ONNX file can hold "
                             f"({MAX_FILE_BYTES})")
        with open(path, "rb") as f:
            data = f.read()
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(data)
        except Exception as exc:   # google.protobuf.message.DecodeError and relatives
            raise ValueError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") \
                from None
        if not proto.HasField("graph"):
            raise ValueError(f"{path}: not an ONNX model (no graph)")
    return OnnxModel(proto, onnx)
