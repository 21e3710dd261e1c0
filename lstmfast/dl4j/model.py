"""DL4J ModelSerializer zips of a MultiLayerNetwork (or a chain ComputationGraph) loaded as an
:class:`lstmfast.Sequential`, and a Sequential saved as one."""

import json
import os
import zipfile
import zlib

import numpy as np

from ._files import _MAX_JSON_BYTES, _ZIP_ERRORS, _atomic_write, _open_zip, _read_entry
from .config import _WEIGHT_INIT_CLASSES, LayerSpec, ModelSpec, parse_configuration
from .nd4j import _TooManyElements, read_array, write_array


def _modules():
    from .. import layers as L
    from .. import network as N
    return L, N


def _make_layer(spec: LayerSpec, dtype, L, N):
    common = dict(dtype=dtype, seed=0)  # parameters are overwritten from the file
    if spec.kind in ("GravesLSTM", "LSTM", "GravesBidirectionalLSTM"):
        cls = {"GravesLSTM": L.GravesLSTM, "LSTM": L.LSTM,
               "GravesBidirectionalLSTM": L.GravesBidirectionalLSTM}[spec.kind]
        return cls(spec.n_in, spec.n_out, activation=spec.activation,
                   gate_activation=spec.gate_activation,
                   forget_gate_bias_init=spec.forget_gate_bias_init,
                   weight_init=spec.weight_init, **common)
    if spec.kind == "Bidirectional":
        return L.Bidirectional(_make_layer(spec.inner, dtype, L, N), mode=spec.mode, seed=0)
    if spec.kind == "DenseLayer":
        return N.DenseLayer(spec.n_in, spec.n_out, activation=spec.activation,
                            weight_init=spec.weight_init, bias_init=spec.bias_init, **common)
    cls = N.RnnOutputLayer if spec.kind == "RnnOutputLayer" else N.OutputLayer
    return cls(spec.n_in, spec.n_out, activation=spec.activation, loss=spec.loss,
               weight_init=spec.weight_init, bias_init=spec.bias_init, **common)


def _training_options(spec: ModelSpec, dtype, N):
    """Sequential keyword arguments for the training settings that map exactly."""
    opts = {}
    if spec.backprop_type == "TruncatedBPTT" and spec.tbptt_fwd_length:
        opts["tbptt_forward_length"] = spec.tbptt_fwd_length
        opts["tbptt_backward_length"] = spec.tbptt_back_length or spec.tbptt_fwd_length
    trained = [layer.training for layer in spec.layers if layer.n_params]
    updaters = {t.get("updater") for t in trained}
    if len(updaters) == 1 and None not in updaters:
        u = updaters.pop()
        if u[0] == "sgd":
            opts["updater"] = N.Sgd(u[1], momentum=u[2], nesterov=u[3])
        else:
            opts["updater"] = N.Adam(u[1], beta1=u[2], beta2=u[3], epsilon=u[4])
    elif len(updaters) > 1 and "updaters differing between layers" not in spec.not_imported:
        spec.not_imported.append("updaters differing between layers")
    for key in ("l2", "l2_bias"):
        values = {t.get(key) for t in trained}
        if len(values) == 1 and None not in values:
            opts[key] = values.pop()
        elif len(values) > 1 and f"{key} differing between layers" not in spec.not_imported:
            spec.not_imported.append(f"{key} differing between layers")
    return opts


def build(spec: ModelSpec, params=None, *, dtype=np.float32):
    """An lstmfast ``Sequential`` from a :class:`ModelSpec`, with ``params`` (DL4J's flat
    parameter vector) when given."""
    L, N = _modules()
    dtype = np.dtype(dtype)
    built = []
    for i, layer_spec in enumerate(spec.layers):
        label = f" {layer_spec.name!r}" if layer_spec.name else ""
        what = f"layer {i} ({layer_spec.kind}{label})"
        try:
            layer = _make_layer(layer_spec, dtype, L, N)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{what}: lstmfast cannot represent it: {e}") from None
        if layer.num_params() != layer_spec.n_params:  # a layout disagreement: never load it
            raise ValueError(f"{what}: lstmfast's layer has {layer.num_params()} parameters, "
                             f"DL4J's {layer_spec.n_params}")
        built.append(layer)
    try:
        model = N.Sequential(built, **_training_options(spec, dtype, N))
    except (ValueError, TypeError) as e:
        raise ValueError(f"lstmfast cannot represent this network: {e}") from None
    if params is not None:
        flat = np.asarray(params).reshape(-1)
        if flat.size != spec.n_params:
            raise ValueError(f"the network has {spec.n_params} parameters but the coefficients "
                             f"hold {flat.size}")
        offset = 0
        for layer, layer_spec in zip(built, spec.layers):
            n = layer_spec.n_params
            layer.params = flat[offset:offset + n]
            offset += n
    return model


def read_model(path):
    """``(ModelSpec, flat parameter vector)`` of a DL4J ModelSerializer zip, without building
    anything (the parameters in the file's dtype)."""
    return read_zip(path, parse_configuration)


def read_zip(path, parse):
    """``(parse(configuration.json), flat parameter vector)`` of a ModelSerializer zip (a
    MultiLayerNetwork or a ComputationGraph, as ``parse`` reads it; the result must have
    ``n_params``), reading each entry with bounded memory. Every problem is a ValueError
    naming the file."""
    where = os.path.basename(os.fspath(path))
    zf = _open_zip(path, where)
    try:
        with zf:
            raw = _read_entry(zf, "configuration.json", _MAX_JSON_BYTES, where)
            try:
                spec = parse(raw)
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
            n = spec.n_params
            if n == 0 and "coefficients.bin" not in zf.namelist():
                return spec, np.zeros(0, np.float32)
            # the entry may hold n elements of at most 8 bytes plus two small headers
            limit = 8 * n + 4096
            if "coefficients.bin" not in zf.namelist():
                raise ValueError(f"{where}: not a DL4J model: no coefficients.bin in the zip")
            info = zf.getinfo("coefficients.bin")
            if info.file_size > limit:
                raise ValueError(f"{where}: coefficients.bin is {info.file_size} bytes, too large "
                                 f"for the {n} parameters of the configuration")
            with zf.open(info) as f:
                try:
                    coeffs = read_array(f, max_elements=n)
                except _TooManyElements as e:
                    raise ValueError(f"{where}: the configuration has {n} parameters but "
                                     f"coefficients.bin holds more ({e})") from None
                except ValueError as e:
                    raise ValueError(f"{where}: {e}") from None
                if f.read(1):
                    raise ValueError(f"{where}: coefficients.bin: unexpected bytes after the array")
    except _ZIP_ERRORS + (zlib.error,) as e:
        raise ValueError(f"{where}: corrupted zip ({type(e).__name__}: {e})") from None
    if coeffs.size != n or sum(d > 1 for d in coeffs.shape) > 1:
        raise ValueError(f"{where}: the configuration has {n} parameters but coefficients.bin "
                         f"holds an array of shape {coeffs.shape}")
    if coeffs.dtype.kind != "f":
        raise ValueError(f"{where}: coefficients.bin holds {coeffs.dtype} values, not floats")
    return spec, coeffs.reshape(-1)


def load(path, *, dtype=None):
    """Load a DL4J ``ModelSerializer`` zip as an :class:`lstmfast.Sequential`.

    ``dtype``: float32 or float64; default: float64 for a DOUBLE model, else float32 (DL4J's
    FLOAT, and HALF/BFLOAT16 parameters widened).  The training settings that map exactly
    (truncated BPTT lengths; an Sgd, Nesterovs or Adam updater with a fixed learning rate
    shared by all layers; L2 shared by all layers) are carried over; the updater state is not.
    Raises ``ValueError`` naming whatever lstmfast cannot represent exactly.
    """
    spec, flat = read_model(path)
    if dtype is None:
        dtype = np.float64 if flat.dtype == np.float64 else np.float32
    model = build(spec, flat, dtype=dtype)
    return model


# ---- saving ---------------------------------------------------------------------------

_ACTIVATION_CLASSES = {
    "tanh": "ActivationTanH", "sigmoid": "ActivationSigmoid",
    "hardsigmoid": "ActivationHardSigmoid", "softsign": "ActivationSoftSign",
    "relu": "ActivationReLU", "leakyrelu": "ActivationLReLU", "elu": "ActivationELU",
    "selu": "ActivationSELU", "softplus": "ActivationSoftPlus",
    "identity": "ActivationIdentity", "hardtanh": "ActivationHardTanH", "cube": "ActivationCube",
    "rectifiedtanh": "ActivationRectifiedTanh", "rationaltanh": "ActivationRationalTanh",
    "softmax": "ActivationSoftmax",
}
_LOSS_JSON = {
    "mcxent": {"@class": "org.nd4j.linalg.lossfunctions.impl.LossMCXENT",
               "softmaxClipEps": 1e-10},
    "negativeloglikelihood": {"@class": "org.nd4j.linalg.lossfunctions.impl.LossMCXENT",
                              "softmaxClipEps": 1e-10},
    "xent": {"@class": "org.nd4j.linalg.lossfunctions.impl.LossBinaryXENT", "clipEps": 1e-5},
    "mse": {"@class": "org.nd4j.linalg.lossfunctions.impl.LossMSE"},
    "l2": {"@class": "org.nd4j.linalg.lossfunctions.impl.LossL2"},
}


def _activation_json(name):
    cls = _ACTIVATION_CLASSES.get(name)
    if cls is None:
        raise ValueError(f"activation {name!r} has no DL4J equivalent")
    out = {"@class": "org.nd4j.linalg.activations.impl." + cls}
    if name == "leakyrelu":
        out["alpha"] = 0.01
    elif name == "elu":
        out["alpha"] = 1.0
    return out


def _weight_init_json(name):
    if name in ("zero", "ones"):
        return {"@class": "org.deeplearning4j.nn.weights.WeightInitConstant",
                "value": 0.0 if name == "zero" else 1.0}
    return {"@class": "org.deeplearning4j.nn.weights." + _WEIGHT_INIT_CLASSES.get(
        name, "WeightInitXavier")}


def _updater_json(updater):
    cls = type(updater).__name__
    if cls == "Adam":
        return {"@class": "org.nd4j.linalg.learning.config.Adam", "beta1": updater.beta1,
                "beta2": updater.beta2, "epsilon": updater.epsilon,
                "learningRate": updater.learning_rate}
    if cls == "Sgd" and getattr(updater, "momentum", 0.0) > 0 and getattr(updater, "nesterov",
                                                                          False):
        return {"@class": "org.nd4j.linalg.learning.config.Nesterovs",
                "learningRate": updater.learning_rate, "momentum": updater.momentum}
    # plain SGD (classical momentum has no DL4J updater: written as Sgd)
    lr = getattr(updater, "learning_rate", 0.1)
    return {"@class": "org.nd4j.linalg.learning.config.Sgd", "learningRate": lr}


def _regularization_json(value):
    if not value:
        return []
    return [{"@class": "org.nd4j.linalg.learning.regularization.L2Regularization",
             "l2": {"@class": "org.nd4j.linalg.schedule.FixedSchedule", "value": value}}]


def _base_layer_json(cls, layer, name, model):
    return {
        "@class": cls,
        "activationFn": _activation_json(layer.activation),
        "biasInit": float(getattr(layer, "bias_init", 0.0)),
        "biasUpdater": None,
        "constraints": None,
        "gainInit": 1.0,
        "gradientNormalization": "None",
        "gradientNormalizationThreshold": 1.0,
        "idropout": None,
        "iupdater": _updater_json(model.updater),
        "layerName": name,
        "nin": int(layer.n_in),
        "nout": int(layer.n_out),
        "regularization": _regularization_json(getattr(model, "l2", 0.0)),
        "regularizationBias": _regularization_json(getattr(model, "l2_bias", 0.0)),
        "weightInitFn": _weight_init_json(getattr(layer, "weight_init", "xavier")),
        "weightNoise": None,
    }


def _recurrent_json(cls, layer, name, model):
    out = _base_layer_json("org.deeplearning4j.nn.conf.layers." + cls, layer, name, model)
    out.update({
        "forgetGateBiasInit": float(layer.forget_gate_bias_init),
        "gateActivationFn": _activation_json(layer.gate_activation),
        "helperAllowFallback": True,
        "weightInitFnRecurrent": None,
    })
    return dict(sorted(out.items()))


def _layer_json(layer, name, model):
    """(DL4J layer JSON, parameter keys, kind) of an lstmfast layer."""
    L, N = _modules()
    if isinstance(layer, L.Bidirectional):
        inner_layer = layer.forward_layer
        cls = "GravesLSTM" if isinstance(inner_layer, L.GravesLSTM) else "LSTM"
        inner = _recurrent_json(cls, inner_layer, name, model)
        out = {
            "@class": "org.deeplearning4j.nn.conf.layers.recurrent.Bidirectional",
            "bwd": inner, "constraints": None, "fwd": inner, "gradientNormalization": "None",
            "gradientNormalizationThreshold": 1.0, "idropout": None, "layerName": name,
            "mode": layer.mode.upper(), "nin": int(inner_layer.n_in),
            "nout": int(inner_layer.n_out),
        }
        keys = ["fW", "fRW", "fb", "bW", "bRW", "bb"]
        return out, keys, "Bidirectional"
    if isinstance(layer, L.GravesBidirectionalLSTM):
        f = layer.forward_layer
        out = _recurrent_json("GravesBidirectionalLSTM", f, name, model)
        return out, ["WF", "RWF", "bF", "WB", "RWB", "bB"], "GravesBidirectionalLSTM"
    if isinstance(layer, (L.GravesLSTM, L.LSTM)):
        cls = "GravesLSTM" if isinstance(layer, L.GravesLSTM) else "LSTM"
        if layer.reverse:
            # e.g. from an ONNX 'reverse' node: saved as DL4J's layer it would run forwards
            raise ValueError(f"layer {name!r}: {cls} processing time in reverse has no DL4J "
                             f"equivalent (DL4J runs a one-direction LSTM forwards)")
        return _recurrent_json(cls, layer, name, model), ["W", "RW", "b"], cls
    if isinstance(layer, N.DenseLayer):
        if isinstance(layer, N.RnnOutputLayer):
            cls = "RnnOutputLayer"
        elif isinstance(layer, N.OutputLayer):
            cls = "OutputLayer"
        else:
            cls = "DenseLayer"
        out = _base_layer_json("org.deeplearning4j.nn.conf.layers." + cls, layer, name, model)
        out["hasBias"] = True
        if cls == "DenseLayer":
            out["hasLayerNorm"] = False
        else:
            out["lossFn"] = dict(_LOSS_JSON[layer.loss])
        return dict(sorted(out.items())), ["W", "b"], cls
    raise ValueError(f"cannot save a {type(layer).__name__} layer in DL4J's format")


_PREPROCESSOR_JSON = {
    "rnn_to_ff": {"@class": "org.deeplearning4j.nn.conf.preprocessor."
                            "RnnToFeedForwardPreProcessor", "rnnDataFormat": "NCW"},
    "ff_to_rnn": {"@class": "org.deeplearning4j.nn.conf.preprocessor."
                            "FeedForwardToRnnPreProcessor", "rnnDataFormat": "NCW"},
}


def configuration_json(model) -> str:
    """The DL4J (1.0.0-beta6 style) ``MultiLayerConfiguration`` JSON of a Sequential."""
    layers = list(model.layers)
    dtype = np.dtype(model.dtype)
    data_type = {np.dtype(np.float32): "FLOAT", np.dtype(np.float64): "DOUBLE"}.get(dtype)
    if data_type is None:
        raise ValueError(f"cannot save a {dtype} model in DL4J's format")
    confs = []
    preprocessors = {}
    kinds = []
    for i, layer in enumerate(layers):
        out, keys, kind = _layer_json(layer, f"layer{i}", model)
        kinds.append(kind)
        confs.append({
            "cacheMode": "NONE", "dataType": data_type, "epochCount": 0, "iterationCount": 0,
            "layer": out, "maxNumLineSearchIterations": 5, "miniBatch": True, "minimize": True,
            "optimizationAlgo": "STOCHASTIC_GRADIENT_DESCENT", "seed": 12345,
            "stepFunction": None, "variables": keys,
        })
    # DL4J needs explicit preprocessors where lstmfast's dense layers run on sequences: in
    # a network with any sequence layer, the data are sequences throughout
    sequences = any(kind not in ("DenseLayer", "OutputLayer") for kind in kinds)
    rows = False
    for i, kind in enumerate(kinds):
        if not sequences:
            break
        if kind == "OutputLayer":
            raise ValueError(f"cannot save layer {i}: an OutputLayer in a network of sequences "
                             "(use RnnOutputLayer)")
        if kind == "DenseLayer" and not rows:
            preprocessors[str(i)] = _PREPROCESSOR_JSON["rnn_to_ff"]
            rows = True
        elif kind != "DenseLayer" and rows:
            preprocessors[str(i)] = _PREPROCESSOR_JSON["ff_to_rnn"]
            rows = False
    if rows:  # a network ending on dense layers over sequences: close the time axis again
        raise ValueError("cannot save a network whose last layers are DenseLayers on sequences: "
                         "DL4J would return time-series rows, lstmfast returns [mb, n, T]")
    fwd = getattr(model, "tbptt_forward_length", None)
    back = getattr(model, "tbptt_backward_length", None)
    config = {
        "backpropType": "TruncatedBPTT" if fwd else "Standard",
        "cacheMode": "NONE",
        "confs": confs,
        "dataType": data_type,
        "epochCount": 0,
        "inferenceWorkspaceMode": "ENABLED",
        "inputPreProcessors": preprocessors,
        "iterationCount": 0,
        "tbpttBackLength": int(back or fwd or 20),
        "tbpttFwdLength": int(fwd or 20),
        "trainingWorkspaceMode": "ENABLED",
        "validateOutputLayerConfig": True,
    }
    return json.dumps(config, indent=2, allow_nan=False)


def save(model, path):
    """Write ``model`` (an lstmfast ``Sequential``) as a DL4J ``ModelSerializer`` zip.

    Entries: ``configuration.json`` (a ``MultiLayerNetwork`` in the 1.0.0-beta6 JSON style)
    and ``coefficients.bin`` (all parameters, ``[1, nParams]``, in the model's dtype).  No
    ``updaterState.bin`` is written: DL4J restores such a model with a fresh updater state.
    The file is written to a temporary file in the same directory and renamed over ``path``
    (``os.replace``), so an interrupted save leaves any previous file intact.  A symbolic link
    at ``path`` is followed to the regular file it leads to; a directory, FIFO, device or a
    link to nothing there is refused (``ValueError``).  The new file keeps the replaced file's
    permission bits, or gets ``0o666`` less the umask.
    """
    path = os.fspath(path)          # TypeError for what is not a path, before any work
    _, N = _modules()
    if not isinstance(model, N.Sequential):
        hint = (" (a single layer: save lstmfast.Sequential([layer]))"
                if hasattr(model, "params") and hasattr(model, "n_in") else "")
        raise TypeError(f"save: model must be an lstmfast.Sequential, got "
                        f"{type(model).__name__}{hint}")
    conf = configuration_json(model)
    flat = np.concatenate([np.asarray(layer.params, dtype=model.dtype).reshape(-1)
                           for layer in model.layers])
    coefficients = write_array(flat.reshape(1, -1))

    def writer(f):
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr("configuration.json", conf)
            z.writestr("coefficients.bin", coefficients)

    _atomic_write(path, writer)
