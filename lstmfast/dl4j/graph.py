"""ComputationGraphs beyond chains: an inference-only evaluator (:func:`load_graph`)."""

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ._json import _decode_json
from .config import (LayerSpec, _check_variables, _check_vertex_count, _layer_spec, _norm, _polymorphic,
                     _preprocessor)
from .model import _make_layer, _modules, read_zip


# ---------------------------------------------------------------------------------------
# ComputationGraphs beyond chains: an inference-only evaluator
# ---------------------------------------------------------------------------------------

@dataclass
class VertexSpec:
    """One vertex of a ComputationGraph: a layer (``layer`` set) or a merge/element-wise op."""

    name: str
    kind: str  # "layer", "merge", "elementwise"
    inputs: list
    layer: Optional[LayerSpec] = None
    op: Optional[str] = None  # element-wise: add, subtract, product, average, max


@dataclass
class GraphSpec:
    inputs: list
    outputs: list
    vertices: list  # in DL4J's topological order (= parameter order)

    @property
    def n_params(self) -> int:
        return sum(v.layer.n_params for v in self.vertices if v.layer is not None)


_ELEMENTWISE_OPS = ("add", "subtract", "product", "average", "max")



def _topological_order(config, names, inputs, net_in):
    stored = config.get("topologicalOrderStr")
    if isinstance(stored, list) and all(isinstance(v, str) for v in stored):
        order = [v for v in stored if v not in net_in]
        if sorted(order) != sorted(names):
            raise ValueError("ComputationGraph: topologicalOrderStr does not list the vertices")
    else:
        # no stored order (DL4J before 1.0): accept only when the order is unique, i.e. when
        # exactly one vertex becomes ready at each step (Kahn's algorithm: each input edge is
        # looked at once)
        waiting = {v: sum(1 for i in inputs[v] if i not in net_in) for v in names}
        consumers_of = {}
        for v in names:
            for i in inputs[v]:
                consumers_of.setdefault(i, []).append(v)
        ready = [v for v in names if waiting[v] == 0]
        order = []
        while ready:
            if len(ready) != 1:
                break
            v = ready.pop()
            order.append(v)
            for consumer in consumers_of.get(v, ()):
                waiting[consumer] -= 1
                if waiting[consumer] == 0:
                    ready.append(consumer)
        if len(order) != len(names):
            raise ValueError("ComputationGraph without a stored topological order whose "
                             "parameter order is ambiguous (or cyclic): not supported")
    seen = set(net_in)
    for v in order:
        missing = [i for i in inputs[v] if i not in seen]
        if missing:
            raise ValueError(f"ComputationGraph: vertex {v!r} comes before its inputs {missing}")
        seen.add(v)
    return order


def parse_graph(config) -> GraphSpec:
    """Parse a ComputationGraph ``configuration.json`` into a :class:`GraphSpec` (any DAG of
    supported layers, MergeVertex and ElementWiseVertex; SimpleRnn and GlobalPoolingLayer
    included)."""
    config = _decode_json(config)
    if not isinstance(config, dict) or not isinstance(config.get("vertices"), dict):
        raise ValueError("configuration.json is not a ComputationGraph configuration")
    try:
        return _parse_dag(config)
    except (TypeError, KeyError, AttributeError, IndexError, RecursionError, OverflowError) as e:
        raise ValueError(f"malformed configuration.json: {type(e).__name__}: {e}") from None


def _parse_dag(config) -> GraphSpec:
    vertices = config["vertices"]
    inputs = config.get("vertexInputs")
    net_in = config.get("networkInputs")
    net_out = config.get("networkOutputs")
    if not isinstance(inputs, dict) or not isinstance(net_in, list) \
            or not isinstance(net_out, list) or not net_in or not net_out:
        raise ValueError("ComputationGraph without vertexInputs/networkInputs/networkOutputs")
    _check_vertex_count(vertices)
    names = list(vertices)
    net_in_set = set(net_in)
    for v in names:
        ins = inputs.get(v)
        if not isinstance(ins, list) or not ins or not all(isinstance(i, str) for i in ins):
            raise ValueError(f"vertex {v!r}: missing or malformed inputs")
        for i in ins:
            if i not in vertices and i not in net_in_set:
                raise ValueError(f"vertex {v!r}: unknown input {i!r}")
    for o in net_out:
        if o not in vertices:
            raise ValueError(f"ComputationGraph: unknown output {o!r}")
    order = _topological_order(config, names, inputs, net_in_set)
    specs = []
    for v in order:
        raw, body = _polymorphic(vertices[v], "vertex", f"vertex {v!r}")
        key = _norm(raw)
        ctx = f"vertex {v!r}"
        if key == "layervertex":
            lconf = body.get("layerConf")
            if not isinstance(lconf, dict) or lconf.get("layer") is None:
                raise ValueError(f"{ctx}: missing layerConf")
            layer = _layer_spec(lconf["layer"], ctx, extended=True)
            _check_variables(layer, lconf.get("variables"), ctx)
            layer.preprocessor = _preprocessor(body.get("preProcessor"), ctx)
            if layer.preprocessor == "rnn_to_ff" and layer.kind != "DenseLayer" or \
                    layer.preprocessor == "ff_to_rnn" and layer.kind in ("DenseLayer",
                                                                         "OutputLayer"):
                raise ValueError(f"{ctx}: unsupported preprocessor before a {layer.kind}")
            if len(inputs[v]) != 1:
                raise ValueError(f"{ctx}: a layer with {len(inputs[v])} inputs")
            specs.append(VertexSpec(v, "layer", list(inputs[v]), layer=layer))
        elif key == "mergevertex":
            specs.append(VertexSpec(v, "merge", list(inputs[v])))
        elif key == "elementwisevertex":
            op = body.get("op")
            if not isinstance(op, str) or _norm(op) not in _ELEMENTWISE_OPS:
                raise ValueError(f"{ctx}: unsupported element-wise operation {op!r}")
            specs.append(VertexSpec(v, "elementwise", list(inputs[v]), op=_norm(op)))
        else:
            raise ValueError(f"{ctx}: unsupported graph vertex {raw!r}")
    spec = GraphSpec(inputs=list(net_in), outputs=list(net_out), vertices=specs)
    default = config.get("defaultConfiguration")
    all_vars = default.get("variables") if isinstance(default, dict) else None
    if all_vars:
        expected = [f"{vs.name}_{k}" for vs in specs if vs.layer is not None
                    for k, _ in vs.layer.params]
        if all_vars != expected:
            raise ValueError(f"ComputationGraph parameter keys {all_vars} differ from the "
                             f"expected {expected}")
    return spec


class Graph:
    """An inference-only DL4J ComputationGraph (see :func:`load_graph`).

    ``graph.output(x)`` (or ``graph.output(x1, x2, ...)`` for several network inputs) returns
    the network output (a tuple for several outputs); ``graph.layers`` maps vertex names to
    their layer objects (lstmfast layers where lstmfast has them); ``graph.params`` is the flat
    parameter vector in DL4J's order.
    """

    def __init__(self, spec: GraphSpec, params, dtype=np.float32):
        L, N = _modules()
        self.spec = spec
        self.dtype = np.dtype(dtype)
        flat = np.asarray(params, dtype=self.dtype).reshape(-1)
        if flat.size != spec.n_params:
            raise ValueError(f"the graph has {spec.n_params} parameters but the coefficients "
                             f"hold {flat.size}")
        self.params = flat.copy()
        self.layers = {}
        offset = 0
        for vs in spec.vertices:
            if vs.layer is None:
                continue
            ls = vs.layer
            piece = self.params[offset:offset + ls.n_params]
            offset += ls.n_params
            what = f"vertex {vs.name!r} ({ls.kind})"
            if ls.kind == "GlobalPoolingLayer":
                kind, p = ls.mode.split(":")
                layer = N.GlobalPooling(kind, int(p))
            elif ls.kind == "SimpleRnn" or (ls.kind == "Bidirectional"
                                            and ls.inner.kind == "SimpleRnn"):
                rnn, mode = (ls.inner, ls.mode) if ls.kind == "Bidirectional" else (ls, None)
                try:
                    layer = N.SimpleRnn(rnn.n_in, rnn.n_out, rnn.activation, params=piece,
                                        mode=mode)
                except (ValueError, TypeError) as e:
                    raise ValueError(f"{what}: lstmfast cannot represent it: {e}") from None
            else:
                try:
                    layer = _make_layer(ls, self.dtype, L, N)
                except (ValueError, TypeError) as e:
                    raise ValueError(f"{what}: lstmfast cannot represent it: {e}") from None
                if layer.num_params() != ls.n_params:
                    raise ValueError(f"{what}: lstmfast's layer has {layer.num_params()} "
                                     f"parameters, DL4J's {ls.n_params}")
                layer.params = piece
                # keep one storage: the layer's parameters are views into graph.params
                layer.bind_storage(piece, np.zeros_like(piece))
            self.layers[vs.name] = layer

    def num_params(self):
        return self.params.size

    def output(self, *inputs):
        if len(inputs) != len(self.spec.inputs):
            raise ValueError(f"the graph takes {len(self.spec.inputs)} input(s) "
                             f"{self.spec.inputs}; got {len(inputs)}")
        values = {name: np.asarray(x, dtype=self.dtype)
                  for name, x in zip(self.spec.inputs, inputs)}
        for vs in self.spec.vertices:
            args = [values[i] for i in vs.inputs]
            if vs.kind == "layer":
                values[vs.name] = self.layers[vs.name].forward(args[0])
            elif vs.kind == "merge":
                values[vs.name] = args[0] if len(args) == 1 else np.concatenate(args, axis=1)
            else:
                values[vs.name] = _elementwise(vs.op, args)
        outs = tuple(values[o] for o in self.spec.outputs)
        return outs[0] if len(outs) == 1 else outs

    def __repr__(self):
        inner = ",\n  ".join(f"{vs.name} <- {vs.inputs}: "
                             f"{self.layers.get(vs.name, vs.op or vs.kind)!r}"
                             for vs in self.spec.vertices)
        return f"Graph([\n  {inner}\n], {self.num_params()} parameters)"


def _elementwise(op, args):
    out = np.array(args[0], copy=True)
    if op == "subtract":
        if len(args) != 2:
            raise ValueError("element-wise subtract takes exactly 2 inputs")
        return out - args[1]
    for a in args[1:]:
        if op in ("add", "average"):
            out += a
        elif op == "product":
            out *= a
        else:
            np.maximum(out, a, out=out)
    if op == "average":
        out /= len(args)
    return out


def load_graph(path, *, dtype=None) -> Graph:
    """Load a DL4J ``ComputationGraph`` zip that is not a plain chain, for inference.

    Supports LayerVertex (the layers :func:`load` supports, plus SimpleRnn, Bidirectional
    around SimpleRnn and GlobalPoolingLayer over time), MergeVertex (concatenation along the
    feature axis) and ElementWiseVertex (add, subtract, product, average, max).  No masks, no
    training: use :func:`load` (a trainable :class:`lstmfast.Sequential`) for chains.
    """
    spec, coeffs = read_zip(path, parse_graph)
    if dtype is None:
        dtype = np.float64 if coeffs.dtype == np.float64 else np.float32
    return Graph(spec, coeffs.reshape(-1), dtype=dtype)
