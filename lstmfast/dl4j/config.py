"""DL4J configuration JSON (every style from 0.8 to 1.0.0-beta7) parsed into a neutral
description (:class:`ModelSpec`) that says what lstmfast builds, or refused naming what it
cannot represent exactly."""

import math
import re
from dataclasses import dataclass, field
from typing import Optional

from ._json import _decode_json


@dataclass
class LayerSpec:
    """One DL4J layer, described independently of lstmfast's classes.

    ``kind`` is one of ``GravesLSTM``, ``LSTM``, ``GravesBidirectionalLSTM``,
    ``Bidirectional``, ``RnnOutputLayer``, ``DenseLayer``, ``OutputLayer``.
    ``params`` lists ``(key, shape)`` in DL4J's flat order; each parameter is its slice of
    the flat vector reshaped in Fortran order.  For ``Bidirectional``, ``inner`` describes
    the wrapped (forward) layer and ``mode`` is ``concat``/``add``/``mul``/``average``.
    """

    kind: str
    name: str
    n_in: int
    n_out: int
    activation: Optional[str] = None
    gate_activation: Optional[str] = None
    forget_gate_bias_init: Optional[float] = None
    loss: Optional[str] = None
    has_bias: bool = True
    mode: Optional[str] = None
    inner: Optional["LayerSpec"] = None
    params: list = field(default_factory=list)
    weight_init: str = "xavier"
    bias_init: float = 0.0
    preprocessor: Optional[str] = None  # "rnn_to_ff" / "ff_to_rnn" before this layer
    training: dict = field(default_factory=dict)  # updater / l2 settings found (see _training)

    @property
    def n_params(self) -> int:
        return sum(math.prod(shape) for _, shape in self.params)


@dataclass
class ModelSpec:
    """A DL4J network as a chain of :class:`LayerSpec` (in parameter order)."""

    source: str  # "MultiLayerNetwork" or "ComputationGraph"
    layers: list
    data_type: Optional[str] = None  # "FLOAT", "DOUBLE", "HALF" when the JSON says
    backprop_type: str = "Standard"
    tbptt_fwd_length: Optional[int] = None
    tbptt_back_length: Optional[int] = None
    #: training settings that could not be carried over exactly (for information)
    not_imported: list = field(default_factory=list)

    @property
    def n_params(self) -> int:
        return sum(layer.n_params for layer in self.layers)


_RECURRENT = ("GravesLSTM", "LSTM")

# lower-cased DL4J layer names (0.8 wrapper names and @class simple names) -> kind
_LAYER_KINDS = {
    "graveslstm": "GravesLSTM",
    "lstm": "LSTM",
    "gravesbidirectionallstm": "GravesBidirectionalLSTM",
    "bidirectional": "Bidirectional",
    "rnnoutput": "RnnOutputLayer",
    "rnnoutputlayer": "RnnOutputLayer",
    "dense": "DenseLayer",
    "denselayer": "DenseLayer",
    "output": "OutputLayer",
    "outputlayer": "OutputLayer",
}
_FROZEN = ("frozenlayer", "frozenlayerwithbackprop")

# lower-cased DL4J activation names (0.8 wrapper names, @class simple names without the
# "Activation" prefix, pre-0.8 strings) -> lstmfast names
_ACTIVATIONS = {
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "hardsigmoid": "hardsigmoid",
    "softsign": "softsign",
    "relu": "relu",
    "lrelu": "leakyrelu",
    "leakyrelu": "leakyrelu",
    "elu": "elu",
    "selu": "selu",
    "softplus": "softplus",
    "identity": "identity",
    "linear": "identity",
    "hardtanh": "hardtanh",
    "cube": "cube",
    "rectifiedtanh": "rectifiedtanh",
    "rationaltanh": "rationaltanh",
    "softmax": "softmax",
}

# lower-cased DL4J loss names -> lstmfast names (NLL is MCXENT in DL4J: a subclass of it)
_LOSSES = {
    "mcxent": "mcxent",
    "negativeloglikelihood": "mcxent",
    "mse": "mse",
    "binaryxent": "xent",
    "xent": "xent",
    "l2": "l2",
}

_MODES = {"concat": "concat", "add": "add", "mul": "mul", "average": "average"}


def _simple(name: str) -> str:
    return name.rsplit(".", 1)[-1].rsplit("$", 1)[-1]


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _polymorphic(value, what: str, ctx: str):
    """Split a DL4J polymorphic JSON value into (type name, body dict).

    Accepts the ``@class`` style and the single-key wrapper style of DL4J 0.8."""
    if not isinstance(value, dict):
        raise ValueError(f"{ctx}: {what} must be a JSON object, got {type(value).__name__}")
    if "@class" in value:
        cls = value["@class"]
        if not isinstance(cls, str):
            raise ValueError(f"{ctx}: {what} has a non-string @class")
        return _simple(cls), value
    if len(value) == 1:
        (key, body), = value.items()
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise ValueError(f"{ctx}: {what} {key!r} must hold a JSON object")
        return key, body
    raise ValueError(f"{ctx}: cannot tell the type of {what} (no @class, not a wrapper object)")


def _get(body, names, ctx, what=None, default=...):
    for n in names:
        if n in body:
            return body[n]
    if default is not ...:
        return default
    raise ValueError(f"{ctx}: missing field {what or names[0]!r}")


def _int_field(body, names, ctx, minimum=0):
    v = _get(body, names, ctx)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (
        isinstance(v, float) and (not math.isfinite(v) or v != int(v))
    ):
        raise ValueError(f"{ctx}: field {names[0]!r} must be an integer, got {v!r}")
    v = int(v)
    if v < minimum:
        raise ValueError(f"{ctx}: field {names[0]!r} must be >= {minimum}, got {v}")
    if v > 2**31 - 1:
        raise ValueError(f"{ctx}: field {names[0]!r} = {v} is implausibly large")
    return v


def _float_field(body, names, ctx, default):
    """A finite number (an initial value the layers keep and save again: NaN or Infinity there
    would load and then make the model impossible to save)."""
    v = _get(body, names, ctx, default=default)
    if v is None:
        return default
    if isinstance(v, str) and v in ("NaN", "Infinity", "-Infinity"):
        v = float(v.replace("Infinity", "inf"))
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{ctx}: field {names[0]!r} must be a number, got {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{ctx}: field {names[0]!r} must be a finite number, got {v}")
    return v


def _check_param(body, key, expected, ctx, what):
    """A numeric parameter of an activation/loss that lstmfast only has at one value."""
    if key not in body or body[key] is None:
        return
    v = body[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{ctx}: {what} field {key!r} must be a number, got {v!r}")
    if not math.isclose(float(v), expected, rel_tol=1e-12, abs_tol=1e-15):
        raise ValueError(
            f"{ctx}: unsupported {what} with {key}={v} (lstmfast's {what} has {key}={expected})"
        )


def _activation(body, ctx, names=("activationFn", "activationFunction"), what="activation"):
    value = _get(body, names, ctx, what=names[0], default=None)
    if value is None:
        return None
    if isinstance(value, str):
        raw, params = value, {}
    else:
        raw, params = _polymorphic(value, what, ctx)
    key = _norm(raw)
    if key.startswith("activation"):
        key = key[len("activation"):]
    act = _ACTIVATIONS.get(key)
    if act is None:
        raise ValueError(f"{ctx}: unsupported {what} {raw!r} (lstmfast supports "
                         f"{', '.join(sorted(set(_ACTIVATIONS.values())))})")
    if act == "leakyrelu":
        _check_param(params, "alpha", 0.01, ctx, f"{what} LReLU")
    elif act == "elu":
        _check_param(params, "alpha", 1.0, ctx, f"{what} ELU")
    elif act == "relu":
        for k in ("max", "maxValue"):
            if params.get(k) is not None:
                raise ValueError(f"{ctx}: unsupported {what} ReLU with {k}={params[k]!r}")
        _check_param(params, "threshold", 0.0, ctx, f"{what} ReLU")
        _check_param(params, "negativeSlope", 0.0, ctx, f"{what} ReLU")
    return act


def _loss(body, ctx):
    value = body.get("lossFn")
    if value is None:
        value = body.get("lossFunction")
    if value is None:
        raise ValueError(f"{ctx}: output layer without a loss function (lossFn)")
    if isinstance(value, str):
        raw, params = value, {}
    else:
        raw, params = _polymorphic(value, "loss function", ctx)
    key = _norm(raw)
    if key.startswith("loss"):
        key = key[len("loss"):]
    loss = _LOSSES.get(key)
    if loss is None:
        raise ValueError(f"{ctx}: unsupported loss function {raw!r} (lstmfast supports MCXENT, "
                         "NegativeLogLikelihood, BinaryXENT, MSE and L2)")
    if params.get("weights") is not None:
        raise ValueError(f"{ctx}: unsupported loss function {raw!r} with per-output weights")
    return loss


def _recurrent_params(kind, n_in, h, prefix=""):
    rw = (h, 4 * h + 3) if kind == "GravesLSTM" else (h, 4 * h)
    return [(prefix + "W", (n_in, 4 * h)), (prefix + "RW", rw), (prefix + "b", (1, 4 * h))]


def _check_rnn_format(body, ctx):
    fmt = body.get("rnnDataFormat")
    if fmt is not None and fmt != "NCW":
        raise ValueError(f"{ctx}: unsupported rnnDataFormat {fmt!r} (lstmfast layers take NCW: "
                         "[minibatch, features, time])")


_GRAPH_ONLY_KINDS = {
    "simplernn": "SimpleRnn",
    "globalpooling": "GlobalPoolingLayer",
    "globalpoolinglayer": "GlobalPoolingLayer",
}
_POOLING = ("max", "avg", "sum", "pnorm")


def _layer_spec(value, ctx, extended=False) -> LayerSpec:
    """``extended``: also accept the layers that only :func:`load_graph` evaluates
    (SimpleRnn, GlobalPoolingLayer, and Bidirectional around SimpleRnn)."""
    raw, body = _polymorphic(value, "layer", ctx)
    key = _norm(raw)
    if key in _FROZEN:
        inner = body.get("layer")
        if inner is None:
            raise ValueError(f"{ctx}: {raw} without an inner layer")
        return _layer_spec(inner, ctx + f" ({raw})", extended)
    kind = _LAYER_KINDS.get(key)
    if kind is None and extended:
        kind = _GRAPH_ONLY_KINDS.get(key)
    if kind is None:
        hint = (" ; lstmfast.dl4j.load_graph evaluates SimpleRnn and GlobalPoolingLayer too"
                if key in _GRAPH_ONLY_KINDS else "")
        raise ValueError(
            f"{ctx}: unsupported layer type {raw!r} (lstmfast imports GravesLSTM, LSTM, "
            f"GravesBidirectionalLSTM, Bidirectional, RnnOutputLayer, DenseLayer, OutputLayer"
            f"{hint})"
        )
    if kind == "GlobalPoolingLayer":
        return _pooling_spec(body, ctx)
    name = body.get("layerName")
    if name is not None and not isinstance(name, str):
        raise ValueError(f"{ctx}: layerName must be a string, got {name!r}")
    name = name or ""
    lctx = f"{ctx} ({kind}{' ' + repr(name) if name else ''})"
    _check_rnn_format(body, lctx)

    if kind == "Bidirectional":
        fwd = body.get("fwd")
        bwd = body.get("bwd")
        if fwd is None:
            raise ValueError(f"{lctx}: missing the wrapped layer (fwd)")
        inner = _layer_spec(fwd, lctx + " forward layer", extended)
        if inner.kind not in _RECURRENT + (("SimpleRnn",) if extended else ()):
            raise ValueError(
                f"{lctx}: unsupported wrapped layer {inner.kind} (lstmfast's Bidirectional "
                "wraps LSTM or GravesLSTM)"
            )
        if bwd is not None:
            back = _layer_spec(bwd, lctx + " backward layer", extended)
            same = (back.kind, back.n_in, back.n_out, back.activation, back.gate_activation)
            if same != (inner.kind, inner.n_in, inner.n_out, inner.activation,
                        inner.gate_activation):
                raise ValueError(
                    f"{lctx}: forward and backward layers differ ({inner.kind} "
                    f"{inner.n_in}->{inner.n_out} {inner.activation} vs {back.kind} "
                    f"{back.n_in}->{back.n_out} {back.activation}); lstmfast's Bidirectional "
                    "uses one configuration for both"
                )
        mode_raw = body.get("mode", "CONCAT")
        if not isinstance(mode_raw, str) or _norm(mode_raw) not in _MODES:
            raise ValueError(f"{lctx}: unsupported Bidirectional mode {mode_raw!r}")
        mode = _MODES[_norm(mode_raw)]
        params = ([("f" + k, s) for k, s in inner.params]
                  + [("b" + k, s) for k, s in inner.params])
        n_out = inner.n_out * (2 if mode == "concat" else 1)
        return LayerSpec(kind=kind, name=name or inner.name, n_in=inner.n_in, n_out=n_out,
                         activation=inner.activation, gate_activation=inner.gate_activation,
                         forget_gate_bias_init=inner.forget_gate_bias_init, mode=mode,
                         inner=inner, params=params, weight_init=inner.weight_init,
                         training=inner.training)

    n_in = _int_field(body, ("nin", "nIn"), lctx, minimum=1)
    n_out = _int_field(body, ("nout", "nOut"), lctx, minimum=1)
    activation = _activation(body, lctx)
    if activation is None:
        raise ValueError(f"{lctx}: missing activation function (activationFn)")
    if body.get("hasLayerNorm"):
        raise ValueError(f"{lctx}: unsupported layer normalisation (hasLayerNorm)")
    spec = LayerSpec(kind=kind, name=name, n_in=n_in, n_out=n_out, activation=activation,
                     weight_init=_weight_init(body),
                     bias_init=_float_field(body, ("biasInit",), lctx, 0.0),
                     training=_training(body))
    if kind in ("GravesLSTM", "LSTM", "GravesBidirectionalLSTM"):
        spec.gate_activation = _activation(body, lctx, names=("gateActivationFn",),
                                           what="gate activation") or "sigmoid"
        spec.forget_gate_bias_init = _float_field(body, ("forgetGateBiasInit",), lctx, 1.0)
        if kind == "GravesBidirectionalLSTM":
            one = _recurrent_params("GravesLSTM", n_in, n_out)
            spec.params = [(k + "F", s) for k, s in one] + [(k + "B", s) for k, s in one]
        else:
            spec.params = _recurrent_params(kind, n_in, n_out)
        return spec
    if kind == "SimpleRnn":
        spec.params = [("W", (n_in, n_out)), ("RW", (n_out, n_out)), ("b", (1, n_out))]
        return spec
    has_bias = body.get("hasBias", True)
    if not isinstance(has_bias, bool):
        raise ValueError(f"{lctx}: hasBias must be true or false, got {has_bias!r}")
    if not has_bias:
        raise ValueError(f"{lctx}: unsupported layer without bias (hasBias=false)")
    spec.has_bias = has_bias
    if kind in ("RnnOutputLayer", "OutputLayer"):
        spec.loss = _loss(body, lctx)
    spec.params = [("W", (n_in, n_out))] + ([("b", (1, n_out))] if has_bias else [])
    return spec


def _pooling_spec(body, ctx):
    name = body.get("layerName") if isinstance(body.get("layerName"), str) else ""
    lctx = f"{ctx} (GlobalPoolingLayer{' ' + repr(name) if name else ''})"
    ptype = body.get("poolingType", "MAX")
    if not isinstance(ptype, str) or _norm(ptype) not in _POOLING:
        raise ValueError(f"{lctx}: unsupported pooling type {ptype!r}")
    dims = body.get("poolingDimensions")
    if dims not in (None, [2]):
        raise ValueError(f"{lctx}: unsupported pooling dimensions {dims!r} (only time, [2])")
    if body.get("collapseDimensions", True) is not True:
        raise ValueError(f"{lctx}: unsupported collapseDimensions=false")
    pnorm = 2
    if _norm(ptype) == "pnorm":
        pnorm = _int_field(body, ("pnorm",), lctx, minimum=1)
    return LayerSpec(kind="GlobalPoolingLayer", name=name, n_in=0, n_out=0,
                     mode=f"{_norm(ptype)}:{pnorm}", params=[])


def _check_variables(spec: LayerSpec, variables, ctx, prefix=""):
    """Compare the parameter keys DL4J recorded (when it did) with the expected layout."""
    if not variables:
        return
    if not isinstance(variables, list) or not all(isinstance(v, str) for v in variables):
        raise ValueError(f"{ctx}: 'variables' must be a list of strings")
    expected = [prefix + k for k, _ in spec.params]
    if list(variables) != expected:
        raise ValueError(
            f"{ctx}: parameter keys {variables} differ from the expected {expected} "
            "(unsupported layer variant)"
        )


_PREPROCESSORS = {
    "rnntofeedforward": "rnn_to_ff",
    "rnntofeedforwardpreprocessor": "rnn_to_ff",
    "feedforwardtornn": "ff_to_rnn",
    "feedforwardtornnpreprocessor": "ff_to_rnn",
}


def _preprocessor(pp, ctx):
    """The tag of a supported input preprocessor (None when there is none)."""
    if pp is None or pp == {}:
        return None
    raw, body = _polymorphic(pp, "input preprocessor", ctx)
    tag = _PREPROCESSORS.get(_norm(raw))
    if tag is None:
        raise ValueError(f"{ctx}: unsupported input preprocessor {raw!r}")
    _check_rnn_format(body, ctx + f" ({raw})")
    return tag


def _check_data_flow(layers, ctx_of):
    """Check that preprocessors sit where lstmfast's layers do the same thing implicitly.

    lstmfast's dense layers apply per time step to ``[mb, n, T]`` input, which is what DL4J
    does with RnnToFeedForward before and FeedForwardToRnn after them; anything else that
    changes the shape of the data (an OutputLayer on time-series rows, a network ending on
    rows) has no lstmfast equivalent."""
    rows = False  # True between RnnToFeedForward and FeedForwardToRnn
    for i, spec in enumerate(layers):
        if spec.preprocessor == "rnn_to_ff":
            if spec.kind != "DenseLayer" or rows:
                raise ValueError(f"{ctx_of(i)}: unsupported RnnToFeedForwardPreProcessor before a "
                                 f"{spec.kind} (only before DenseLayers that a "
                                 "FeedForwardToRnnPreProcessor closes)")
            rows = True
        elif spec.preprocessor == "ff_to_rnn":
            if spec.kind == "DenseLayer" or spec.kind == "OutputLayer":
                raise ValueError(f"{ctx_of(i)}: unsupported FeedForwardToRnnPreProcessor before a "
                                 f"{spec.kind}")
            rows = False
        elif rows and spec.kind != "DenseLayer":
            raise ValueError(f"{ctx_of(i)}: a {spec.kind} on time-series rows "
                             "(RnnToFeedForwardPreProcessor without FeedForwardToRnn) is not "
                             "supported")
    if rows:
        raise ValueError("the network ends on time-series rows (RnnToFeedForwardPreProcessor "
                         "without FeedForwardToRnn): not supported")


_WEIGHT_INIT_CLASSES = {
    "xavier": "WeightInitXavier",
    "xavier_uniform": "WeightInitXavierUniform",
    "xavier_legacy": "WeightInitXavierLegacy",
    "xavier_fan_in": "WeightInitNormal",  # DL4J: XAVIER_FAN_IN, NORMAL, LECUN_NORMAL are one
    "lecun_normal": "WeightInitNormal",
    "normal": "WeightInitNormal",
    "relu": "WeightInitRelu",
    "relu_uniform": "WeightInitReluUniform",
    "sigmoid_uniform": "WeightInitSigmoidUniform",
    "uniform": "WeightInitUniform",
    "lecun_uniform": "WeightInitLecunUniform",
}
_WEIGHT_INIT_NAMES = {
    "xavier": "xavier", "xavieruniform": "xavier_uniform", "xavierlegacy": "xavier_legacy",
    "xavierfanin": "xavier_fan_in", "lecunnormal": "lecun_normal", "normal": "normal",
    "relu": "relu", "reluuniform": "relu_uniform", "sigmoiduniform": "sigmoid_uniform",
    "uniform": "uniform", "lecununiform": "lecun_uniform", "zero": "zero", "ones": "ones",
}


def _weight_init(body):
    """lstmfast's name of the layer's weight initialisation (only used for re-initialising:
    the loaded parameters are the file's).  Unknown schemes fall back to xavier."""
    value = body.get("weightInitFn")
    if isinstance(value, dict) and isinstance(value.get("@class"), str):
        key = _norm(_simple(value["@class"]))
        key = key[len("weightinit"):] if key.startswith("weightinit") else key
        if key == "constant":
            v = value.get("value")
            return {0: "zero", 1: "ones"}.get(v if isinstance(v, (int, float)) else None, "xavier")
        return _WEIGHT_INIT_NAMES.get(key, "xavier")
    value = body.get("weightInit")
    if isinstance(value, str):
        return _WEIGHT_INIT_NAMES.get(_norm(value), "xavier")
    return "xavier"


def _number(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _training(body):
    """The layer's updater and L2 settings as far as lstmfast has them exactly.

    Returns a dict with ``updater`` (a tuple, or None when not representable), ``l2``,
    ``l2_bias`` (floats, or None), and ``notes`` (what was not representable)."""
    notes = []
    updater = None
    iup = body.get("iupdater")
    if isinstance(iup, dict) and isinstance(iup.get("@class"), str):  # 1.0.0-beta style
        cls = _simple(iup["@class"])
        sched = [k for k, v in iup.items() if "chedule" in k and v is not None]
        lr = _number(iup.get("learningRate"))
        if sched or lr is None:
            notes.append(f"updater {cls} with a schedule")
        elif cls == "Sgd":
            updater = ("sgd", lr, 0.0, False)
        elif cls == "Nesterovs" and _number(iup.get("momentum")) is not None:
            updater = ("sgd", lr, _number(iup.get("momentum")), True)
        elif cls == "Adam" and None not in (_number(iup.get("beta1")), _number(iup.get("beta2")),
                                            _number(iup.get("epsilon"))):
            updater = ("adam", lr, _number(iup["beta1"]), _number(iup["beta2"]),
                       _number(iup["epsilon"]))
        else:
            notes.append(f"updater {cls}")
    elif isinstance(body.get("updater"), str):  # 0.8 style
        name = body["updater"].upper()
        lr = _number(body.get("learningRate"))
        blr = _number(body.get("biasLearningRate"))
        if lr is None or (blr is not None and blr != lr):
            notes.append(f"updater {name} with a separate bias learning rate")
        elif body.get("learningRateSchedule") is not None:
            notes.append(f"updater {name} with a learning-rate schedule")
        elif name == "SGD":
            updater = ("sgd", lr, 0.0, False)
        elif name == "NESTEROVS" and _number(body.get("momentum")) is not None:
            updater = ("sgd", lr, _number(body["momentum"]), True)
        elif name == "ADAM" and None not in (_number(body.get("adamMeanDecay")),
                                             _number(body.get("adamVarDecay")),
                                             _number(body.get("epsilon"))):
            updater = ("adam", lr, _number(body["adamMeanDecay"]), _number(body["adamVarDecay"]),
                       _number(body["epsilon"]))
        else:
            notes.append(f"updater {name}")
    l2 = l2_bias = None
    if "regularization" in body:  # 1.0.0-beta style
        l2 = _l2_of(body.get("regularization"), notes, "weights")
        l2_bias = _l2_of(body.get("regularizationBias"), notes, "biases")
    elif "l2" in body:  # 0.8 style (applied when the configuration's useRegularization is set)
        l2, l2_bias = _number(body.get("l2")) or 0.0, _number(body.get("l2Bias")) or 0.0
        if (_number(body.get("l1")) or 0.0) != 0.0 or (_number(body.get("l1Bias")) or 0.0) != 0.0:
            notes.append("L1 regularisation")
    for k in ("dropOut",):
        v = _number(body.get(k))
        if v is not None and v not in (0.0, 1.0):
            notes.append(f"dropout {v}")
    if body.get("idropout") is not None:
        notes.append("dropout")
    if body.get("weightNoise") is not None:
        notes.append("weight noise")
    gn = body.get("gradientNormalization")
    if isinstance(gn, str) and gn != "None":
        notes.append(f"gradient normalisation {gn}")
    return {"updater": updater, "l2": l2, "l2_bias": l2_bias, "notes": notes}


def _l2_of(regs, notes, what):
    if regs is None or regs == []:
        return 0.0
    if not isinstance(regs, list):
        notes.append(f"regularisation of {what}")
        return None
    l2 = 0.0
    for r in regs:
        if not isinstance(r, dict) or not isinstance(r.get("@class"), str):
            notes.append(f"regularisation of {what}")
            return None
        cls = _simple(r["@class"])
        sched = r.get("l2")
        value = None
        if cls == "L2Regularization" and isinstance(sched, dict) \
                and _simple(str(sched.get("@class", ""))) == "FixedSchedule":
            value = _number(sched.get("value"))
        if value is None:
            notes.append(f"{cls} on {what}")
            return None
        l2 += value
    return l2


def _tbptt(conf):
    out = []
    for k in ("tbpttFwdLength", "tbpttBackLength"):
        v = conf.get(k)
        out.append(int(v) if isinstance(v, (int, float)) and not isinstance(v, bool)
                   and math.isfinite(v) and v >= 1 else None)
    return out


def _data_type(conf):
    dt = conf.get("dataType")
    return dt if isinstance(dt, str) else None


# ComputationGraph vertices (and MultiLayerNetwork layers) accepted: far more than any network
# lstmfast can run in reasonable time, few enough that checking a graph stays instant
_MAX_VERTICES = 10000

def _check_vertex_count(vertices):
    if len(vertices) > _MAX_VERTICES:
        raise ValueError(f"ComputationGraph with {len(vertices)} vertices (at most "
                         f"{_MAX_VERTICES})")


def parse_configuration(config) -> ModelSpec:
    """Parse a DL4J ``configuration.json`` (text, bytes or already-decoded dict).

    Returns a :class:`ModelSpec`; raises ``ValueError`` naming whatever lstmfast cannot
    represent exactly."""
    config = _decode_json(config)
    if not isinstance(config, dict):
        raise ValueError("configuration.json must hold a JSON object")
    try:
        if "confs" in config:
            return _parse_multilayer(config)
        if "vertices" in config:
            return _parse_graph(config)
    except (TypeError, KeyError, AttributeError, IndexError, RecursionError, OverflowError) as e:
        # a field of an unexpected JSON type somewhere the checks above did not look
        raise ValueError(f"malformed configuration.json: {type(e).__name__}: {e}") from None
    raise ValueError("configuration.json is neither a MultiLayerNetwork (confs) nor a "
                     "ComputationGraph (vertices) configuration")


def _common(spec: ModelSpec, config):
    bp = config.get("backpropType", "Standard")
    spec.backprop_type = bp if isinstance(bp, str) else "Standard"
    spec.tbptt_fwd_length, spec.tbptt_back_length = _tbptt(config)
    spec.data_type = _data_type(config)
    for i in range(1, len(spec.layers)):
        prev, cur = spec.layers[i - 1], spec.layers[i]
        if cur.n_in != prev.n_out:
            raise ValueError(f"layer {i} ({cur.kind}) has nIn {cur.n_in} but layer {i - 1} "
                             f"({prev.kind}) gives {prev.n_out} outputs")
    notes = []
    for layer in spec.layers:
        notes += [n for n in layer.training.get("notes", []) if n not in notes]
    spec.not_imported = notes


def _parse_multilayer(config) -> ModelSpec:
    confs = config["confs"]
    if not isinstance(confs, list) or not confs:
        raise ValueError("configuration.json: 'confs' must be a non-empty list of layers")
    if len(confs) > _MAX_VERTICES:
        raise ValueError(f"configuration.json: {len(confs)} layers (at most {_MAX_VERTICES})")
    pps = config.get("inputPreProcessors") or {}
    if not isinstance(pps, dict):
        raise ValueError("configuration.json: inputPreProcessors must be an object")
    tags = {}
    for idx, pp in pps.items():
        if not (isinstance(idx, str) and idx.isdigit() and int(idx) < len(confs)):
            raise ValueError(f"configuration.json: input preprocessor for unknown layer {idx!r}")
        tags[int(idx)] = _preprocessor(pp, f"layer {idx}")
    layers = []
    for i, conf in enumerate(confs):
        ctx = f"layer {i}"
        if not isinstance(conf, dict) or conf.get("layer") is None:
            raise ValueError(f"{ctx}: missing layer configuration")
        spec = _layer_spec(conf["layer"], ctx)
        _check_variables(spec, conf.get("variables"), ctx)
        spec.preprocessor = tags.get(i)
        if conf.get("useRegularization") is False:  # 0.8: l2 fields present but switched off
            spec.training = dict(spec.training, l2=0.0, l2_bias=0.0)
        layers.append(spec)
    _check_data_flow(layers, lambda i: f"layer {i}")
    spec = ModelSpec(source="MultiLayerNetwork", layers=layers)
    _common(spec, config)
    if spec.data_type is None:
        spec.data_type = _data_type(confs[0])
    return spec


def _vertex_type(value, name):
    raw, body = _polymorphic(value, "vertex", f"vertex {name!r}")
    return raw, body


def _parse_graph(config) -> ModelSpec:
    vertices = config.get("vertices")
    inputs = config.get("vertexInputs")
    net_in = config.get("networkInputs")
    net_out = config.get("networkOutputs")
    if not isinstance(vertices, dict) or not isinstance(inputs, dict):
        raise ValueError("configuration.json: ComputationGraph without vertices/vertexInputs")
    if not isinstance(net_in, list) or not isinstance(net_out, list):
        raise ValueError("configuration.json: ComputationGraph without networkInputs/Outputs")
    _check_vertex_count(vertices)
    layer_bodies = {}
    for name, value in vertices.items():
        raw, body = _vertex_type(value, name)
        if _norm(raw) != "layervertex":
            raise ValueError(f"vertex {name!r}: unsupported graph vertex {raw!r} (lstmfast "
                             "imports ComputationGraphs that are chains of layers as a "
                             "Sequential; lstmfast.dl4j.load_graph evaluates other graphs for "
                             "inference)")
        layer_bodies[name] = body
    if len(net_in) != 1 or len(net_out) != 1:
        raise ValueError(f"ComputationGraph with inputs {net_in} and outputs {net_out}: only "
                         "a single-input, single-output chain can be imported")
    # walk the chain from the input to the output (with each vertex's consumers listed once:
    # searching every input list at every step made this quadratic)
    consumers_of = {}
    for v, ins in inputs.items():
        if isinstance(ins, list):
            for i in dict.fromkeys(i for i in ins if isinstance(i, str)):
                consumers_of.setdefault(i, []).append(v)
    order = []
    current = net_in[0]
    seen = {current}
    while current != net_out[0]:
        consumers = consumers_of.get(current, [])
        if len(consumers) != 1:
            raise ValueError(f"ComputationGraph is not a chain: {current!r} feeds "
                             f"{consumers or 'nothing'}")
        nxt = consumers[0]
        if inputs[nxt] != [current]:
            raise ValueError(f"ComputationGraph is not a chain: vertex {nxt!r} has inputs "
                             f"{inputs[nxt]}")
        if nxt in seen or nxt not in layer_bodies:
            raise ValueError(f"ComputationGraph is not a chain at vertex {nxt!r}")
        seen.add(nxt)
        order.append(nxt)
        current = nxt
    if set(order) != set(layer_bodies):
        raise ValueError("ComputationGraph is not a chain: vertices "
                         f"{sorted(set(layer_bodies) - set(order))} are off the path")
    topo = config.get("topologicalOrderStr")
    if isinstance(topo, list) and [v for v in topo if v in layer_bodies] != order:
        raise ValueError(f"ComputationGraph: topological order {topo} differs from the chain")
    default = config.get("defaultConfiguration") or {}
    all_vars = default.get("variables") if isinstance(default, dict) else None
    layers = []
    for name in order:
        body = layer_bodies[name]
        ctx = f"vertex {name!r}"
        tag = _preprocessor(body.get("preProcessor"), ctx)
        lconf = body.get("layerConf")
        if not isinstance(lconf, dict) or lconf.get("layer") is None:
            raise ValueError(f"{ctx}: missing layerConf")
        spec = _layer_spec(lconf["layer"], ctx)
        _check_variables(spec, lconf.get("variables"), ctx)
        spec.preprocessor = tag
        if lconf.get("useRegularization") is False:
            spec.training = dict(spec.training, l2=0.0, l2_bias=0.0)
        layers.append(spec)
    _check_data_flow(layers, lambda i: f"vertex {order[i]!r}")
    if all_vars:
        expected = [f"{n}_{k}" for n, s in zip(order, layers) for k, _ in s.params]
        if all_vars != expected:
            raise ValueError(f"ComputationGraph parameter keys {all_vars} differ from the "
                             f"expected {expected}")
    spec = ModelSpec(source="ComputationGraph", layers=layers)
    _common(spec, config)
    if spec.data_type is None and isinstance(default, dict):
        spec.data_type = _data_type(default)
    return spec


# ---------------------------------------------------------------------------------------
# building an lstmfast Sequential, load and save
# ---------------------------------------------------------------------------------------
