"""ONNX export: an lstmfast layer or ``Sequential`` as one ONNX graph (the layout and the
gate, peephole and direction mapping are described in ``lstmfast.onnx``, whose ``export`` calls
:func:`build_model`). The onnx module is passed in: it is imported by ``lstmfast.onnx`` only."""

import numpy as np

from . import convert
from .layers import (Bidirectional, BidirectionalBase, DenseLayer, GravesBidirectionalLSTM,
                     OutputLayer, RnnOutputLayer, UnidirectionalLSTM)
from .network import Sequential

__all__ = ["build_model"]

# lstmfast dense-layer activation -> (ONNX op, attributes)
_DENSE_TO_ONNX = {
    "identity": None,
    "sigmoid": ("Sigmoid", {}),
    "tanh": ("Tanh", {}),
    "relu": ("Relu", {}),
    "leakyrelu": ("LeakyRelu", {"alpha": 0.01}),
    "softsign": ("Softsign", {}),
    "softplus": ("Softplus", {}),
    "elu": ("Elu", {"alpha": 1.0}),
    "hardsigmoid": ("HardSigmoid", {"alpha": 0.2, "beta": 0.5}),
    "softmax": ("Softmax", {"axis": -1}),
}
_COMBINE_TO_ONNX = {"add": "ReduceSum", "average": "ReduceMean", "mul": "ReduceProd"}


class _GraphBuilder:
    """Collects nodes and initializers with unique names; tracks the running tensor's layout:
    "tnc" [T, N, C] (between recurrent layers), "nct" [N, C, T] (lstmfast's), "nc" [N, C]."""

    def __init__(self, onnx, dtype):
        self.onnx = onnx
        self.helper = onnx.helper
        self.numpy_helper = onnx.numpy_helper
        self.dtype = dtype
        self.nodes = []
        self.initializers = []
        self._names = {"y"}

    def name(self, base):
        n, k = base, 1
        while n in self._names:
            k += 1
            n = f"{base}_{k}"
        self._names.add(n)
        return n

    def constant(self, base, array, dtype=None):
        name = self.name(base)
        arr = np.asarray(array, dtype=self.dtype if dtype is None else dtype)
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(self, op, inputs, base, n_outputs=1, **attributes):
        outputs = [self.name(f"{base}_{op}" if n_outputs == 1 else f"{base}_{op}_{k}")
                   for k in range(n_outputs)]
        self.nodes.append(self.helper.make_node(op, inputs, outputs, name=self.name(f"{base}/{op}"),
                                                **attributes))
        return outputs[0] if n_outputs == 1 else outputs

    def to_layout(self, tensor, layout, target, base):
        perms = {("nct", "tnc"): [2, 0, 1], ("tnc", "nct"): [1, 2, 0]}
        if layout == target:
            return tensor
        if (layout, target) not in perms:
            raise ValueError(f"export: {base}: cannot feed a {layout!r} tensor into a layer that "
                             f"needs {target!r} (a dense layer on 2-D data before a recurrent one?)")
        return self.node("Transpose", [tensor], base, perm=perms[(layout, target)])


def _lstm_directions(layer):
    """[(W, RW, b), ...], the node's direction and the combine mode of a recurrent layer."""
    if isinstance(layer, UnidirectionalLSTM):
        direction = "reverse" if layer.reverse else "forward"
        return [(layer.W, layer.RW, layer.b)], layer, direction, None
    f, b = layer.forward_layer, layer.backward_layer
    return [(f.W, f.RW, f.b), (b.W, b.RW, b.b)], f, "bidirectional", layer.mode


def _add_lstm(g, layer, tensor, layout, base, sequence_lens):
    directions, first, direction, mode = _lstm_directions(layer)
    tensor = g.to_layout(tensor, layout, "tnc", base)
    parts = [convert.lstmfast_to_onnx(*d) for d in directions]
    W = g.constant(f"{base}_W", np.concatenate([p[0] for p in parts]))
    R = g.constant(f"{base}_R", np.concatenate([p[1] for p in parts]))
    B = g.constant(f"{base}_B", np.concatenate([p[2] for p in parts]))
    inputs = [tensor, W, R, B, sequence_lens or "", "", ""]
    if parts[0][3] is not None:
        inputs.append(g.constant(f"{base}_P", np.concatenate([p[3] for p in parts])))
    while inputs[-1] == "":
        inputs.pop()
    names = convert.onnx_activation_names(first.gate_activation, first.activation,
                                          f"export: {base}")
    y = g.node("LSTM", inputs, base, hidden_size=first.n_out, direction=direction,
               activations=names * len(directions))
    # Y [T, dirs, N, h]
    if mode is None:
        axis = g.constant(f"{base}_direction_axis", [1], np.int64)
        return g.node("Squeeze", [y, axis], base), "tnc"
    if mode == "concat":
        # [T, 2, N, h] -> [T, N, 2, h] -> [T, N, 2h]: forward units first, as lstmfast's concat
        y = g.node("Transpose", [y], base, perm=[0, 2, 1, 3])
        shape = g.constant(f"{base}_concat_shape", [0, 0, -1], np.int64)
        return g.node("Reshape", [y, shape], base), "tnc"
    axis = g.constant(f"{base}_direction_axis", [1], np.int64)
    return g.node(_COMBINE_TO_ONNX[mode], [y, axis], base, keepdims=0), "tnc"


def _add_dense(g, layer, tensor, layout, base):
    W = g.constant(f"{base}_W", layer.W)
    b = g.constant(f"{base}_b", layer.b)
    if layout == "nc":
        z = g.node("Gemm", [tensor, W, b], base)
    else:
        if layout == "nct":
            tensor = g.to_layout(tensor, layout, "tnc", base)
            layout = "tnc"
        z = g.node("Add", [g.node("MatMul", [tensor, W], base), b], base)
    activation = layer.activation
    if activation == "hardtanh":
        lo = g.constant(f"{base}_clip_min", -1.0)
        hi = g.constant(f"{base}_clip_max", 1.0)
        return g.node("Clip", [z, lo, hi], base), layout
    if activation not in _DENSE_TO_ONNX:
        raise ValueError(f"export: {base}: dense activation {activation!r} has no ONNX operator")
    op = _DENSE_TO_ONNX[activation]
    if op is None:
        return z, layout
    return g.node(op[0], [z], base, **op[1]), layout


_EXPORTABLE = (UnidirectionalLSTM, Bidirectional, GravesBidirectionalLSTM, DenseLayer)


def _layers_of(model):
    if isinstance(model, Sequential):
        return list(model.layers)
    return [model]


def build_model(onnx, model, *, sequence_lens, opset):
    """The ``onnx.ModelProto`` of ``model`` (an lstmfast layer or ``Sequential``), checked with
    ``onnx.checker.check_model(full_check=True)``; ``onnx`` is the onnx module (see
    :func:`lstmfast.onnx.export`)."""
    layers = _layers_of(model)
    for i, layer in enumerate(layers):
        if not isinstance(layer, _EXPORTABLE):
            raise TypeError(f"export: layer {i} is a {type(layer).__name__}; expected an lstmfast "
                            f"LSTM, GravesLSTM, Bidirectional, GravesBidirectionalLSTM, DenseLayer, "
                            f"OutputLayer, RnnOutputLayer or a Sequential of them")
    dtype = np.dtype(layers[0].dtype)
    tensor_type = {np.dtype(np.float32): onnx.TensorProto.FLOAT,
                   np.dtype(np.float64): onnx.TensorProto.DOUBLE}.get(dtype)
    if tensor_type is None:
        raise ValueError(f"export: dtype {dtype} is not float32 or float64")
    g = _GraphBuilder(onnx, dtype)
    recurrent = (UnidirectionalLSTM, BidirectionalBase)
    first = layers[0]
    if isinstance(first, recurrent) or isinstance(first, RnnOutputLayer):
        layout = "nct"
        in_shape = ["batch", first.n_in, "time"]
    else:
        layout = "nc"
        in_shape = ["batch", first.n_in]
    if sequence_lens and layout != "nct":
        raise ValueError("export: sequence_lens=True needs a model whose input is a sequence")
    tensor = g.name("x")
    lens = g.name("sequence_lens") if sequence_lens else None
    for i, layer in enumerate(layers):
        base = f"layer{i}"
        if isinstance(layer, recurrent):
            tensor, layout = _add_lstm(g, layer, tensor, layout, base, lens)
        else:
            if isinstance(layer, OutputLayer) and not isinstance(layer, RnnOutputLayer) \
                    and layout != "nc":
                raise ValueError(f"export: layer {i} ({layer!r}) takes 2-D data but gets a sequence")
            tensor, layout = _add_dense(g, layer, tensor, layout, base)
    if layout == "tnc":
        tensor = g.node("Transpose", [tensor], "output", perm=[1, 2, 0])
        layout = "nct"
    if g.nodes and g.nodes[-1].output[0] == tensor:
        g.nodes[-1].output[0] = "y"     # the last node's output is the graph's output
    else:
        g.nodes.append(g.helper.make_node("Identity", [tensor], ["y"], name=g.name("output/Identity")))
    last = layers[-1]
    out_shape = ["batch", last.n_out, "time"] if layout == "nct" else ["batch", last.n_out]
    inputs = [g.helper.make_tensor_value_info("x", tensor_type, in_shape)]
    if lens:
        inputs.append(g.helper.make_tensor_value_info(lens, onnx.TensorProto.INT32, ["batch"]))
    graph = g.helper.make_graph(g.nodes, "lstmfast", inputs,
                                [g.helper.make_tensor_value_info("y", tensor_type, out_shape)],
                                initializer=g.initializers)
    proto = g.helper.make_model(graph, opset_imports=[g.helper.make_opsetid("", opset)],
                                producer_name="lstmfast")
    proto.ir_version = min(proto.ir_version, 9)   # readable by ONNX Runtime releases of 2023 on
    onnx.checker.check_model(proto, full_check=True)
    return proto
