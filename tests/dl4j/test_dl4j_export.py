"""lstmfast.dl4j.save checked against files DL4J itself wrote: every repository model that
lstmfast can load is saved again, and the saved configuration.json and coefficients.bin are
compared with the original's field by field. Each field that may differ is listed here with the
reason; any other difference fails.

The ND4J data-type bits of the shape buffer's "extras" slot are taken from libnd4j's
``array/ArrayOptions.h`` (``ARRAY_HALF 4096``, ``ARRAY_FLOAT 8192``, ``ARRAY_DOUBLE 16384``, ...),
not from lstmfast; the stream layout is parsed here with ``struct`` (tests/data/README.md and
lstmfast/dl4j.py's docstring describe it).
"""
import json
import struct
import zipfile

import numpy as np
import pytest

from lstmfast import dl4j
from testdata import data_file

# libnd4j array/ArrayOptions.h
ARRAY_EMPTY = 8
ND4J_TYPE_BITS = {"BFLOAT16": 2048, "HALF": 4096, "FLOAT": 8192, "DOUBLE": 16384, "BYTE": 32768,
                  "SHORT": 65536, "INT": 131072, "LONG": 262144, "BOOL": 524288}
ALL_TYPE_BITS = sum(ND4J_TYPE_BITS.values())
BIG_ENDIAN = {"FLOAT": ">f4", "DOUBLE": ">f8", "INT": ">i4", "LONG": ">i8"}

CHAR_MODEL = "LSTMCharModelingExample_100b6.zip"
MODELS_080 = ("080_ModelSerializer_Regression_LSTM_1.zip", "080_ModelSerializer_Regression_CG_LSTM_1.zip")


# ---------------------------------------------------------------------------------------------
# reading the two files field by field, independently of lstmfast.dl4j

def _utf(raw, pos):
    (n,) = struct.unpack_from(">H", raw, pos)
    return raw[pos + 2:pos + 2 + n].decode("ascii"), pos + 2 + n


def _buffer(raw, pos):
    mode, pos = _utf(raw, pos)
    wide = mode in ("LONG_SHAPE", "MIXED_DATA_TYPES")
    (count,) = struct.unpack_from(">q" if wide else ">i", raw, pos)
    pos += 8 if wide else 4
    kind, pos = _utf(raw, pos)
    size = np.dtype(BIG_ENDIAN[kind]).itemsize * count
    values = np.frombuffer(raw[pos:pos + size], BIG_ENDIAN[kind])
    return dict(mode=mode, count=count, type=kind), values, pos + size


def nd4j_fields(raw):
    """Every field of an ND4J binary array, and its elements (big-endian, as stored)."""
    shape_header, info, pos = _buffer(raw, 0)
    data_header, values, pos = _buffer(raw, pos)
    assert pos == len(raw), "trailing bytes"
    rank = int(info[0])
    fields = {"shape buffer mode": shape_header["mode"], "shape buffer count": shape_header["count"],
              "shape buffer type": shape_header["type"], "rank": rank,
              "shape": tuple(int(v) for v in info[1:1 + rank]),
              "strides": tuple(int(v) for v in info[1 + rank:1 + 2 * rank]),
              "extras": int(info[1 + 2 * rank]), "element-wise stride": int(info[2 + 2 * rank]),
              "order": chr(int(info[3 + 2 * rank])), "data buffer mode": data_header["mode"],
              "data buffer count": data_header["count"], "data type": data_header["type"]}
    return fields, values


def _zip(path):
    with zipfile.ZipFile(path) as z:
        return {name: z.read(name) for name in z.namelist()}


def _flatten(node, prefix=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _flatten(value, f"{prefix}/{key}")
    elif isinstance(node, list) and node:
        for i, value in enumerate(node):
            yield from _flatten(value, f"{prefix}[{i}]")
    else:
        yield prefix, node


def _saved(tmp_path, name, dtype):
    path = tmp_path / f"saved-{np.dtype(dtype).name}-{name}"
    dl4j.save(dl4j.load(data_file(name), dtype=dtype), path)
    return _zip(data_file(name)), _zip(path)


# ---------------------------------------------------------------------------------------------
# the 1.0.0-beta6 MultiLayerNetwork: same JSON style, so every field must match

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_char_model_saved_again_matches_dl4j_field_by_field(tmp_path, dtype):
    original, saved = _saved(tmp_path, CHAR_MODEL, dtype)
    type_name = "FLOAT" if dtype == np.float32 else "DOUBLE"

    # entries: updaterState.bin is not written (lstmfast keeps no updater state of DL4J's;
    # DL4J restores a network without it and starts its updater afresh)
    assert set(original) == {"configuration.json", "coefficients.bin", "updaterState.bin"}
    assert set(saved) == {"configuration.json", "coefficients.bin"}

    # configuration.json: every field; only the network's data type may differ, and it must be
    # the type of the arrays written
    mine = dict(_flatten(json.loads(saved["configuration.json"])))
    theirs = dict(_flatten(json.loads(original["configuration.json"])))
    assert set(mine) == set(theirs), sorted(set(mine) ^ set(theirs))
    for field, value in theirs.items():
        if field.endswith("/dataType"):
            assert value == "FLOAT" and mine[field] == type_name, field
        else:
            assert mine[field] == value, f"{field}: saved {mine[field]!r}, DL4J wrote {value!r}"

    # coefficients.bin: every header field; the data type (and its bit in extras) follows dtype
    mine, my_values = nd4j_fields(saved["coefficients.bin"])
    theirs, their_values = nd4j_fields(original["coefficients.bin"])
    assert theirs["data type"] == "FLOAT" and theirs["extras"] & ALL_TYPE_BITS == ND4J_TYPE_BITS["FLOAT"]
    for field, value in theirs.items():
        if field == "data type":
            assert mine[field] == type_name
        elif field == "strides":
            # DL4J writes stride 1 for the row vector's dimension of size 1, lstmfast the C-order
            # product; a dimension of size 1 is never stepped along, so its stride carries nothing
            assert all(m == t for m, t, n in zip(mine[field], value, theirs["shape"]) if n > 1)
        elif field == "extras":
            assert mine[field] & ALL_TYPE_BITS == ND4J_TYPE_BITS[type_name], hex(mine[field])
            assert mine[field] & ~ALL_TYPE_BITS == value & ~ALL_TYPE_BITS, (hex(mine[field]), hex(value))
        else:
            assert mine[field] == value, f"coefficients.bin {field}: saved {mine[field]!r}, DL4J wrote {value!r}"
    assert mine["shape"] == (1, 558_677) and not mine["extras"] & ARRAY_EMPTY
    if dtype == np.float32:
        assert my_values.tobytes() == their_values.tobytes()             # the same bits
    else:
        assert np.array_equal(my_values, their_values.astype(np.float64))  # widened exactly


# ---------------------------------------------------------------------------------------------
# the 0.8.0 files: another JSON style, so each field is mapped to its 1.0.0-beta6 form

_LAYER_CLASS = {"gravesLSTM": "org.deeplearning4j.nn.conf.layers.GravesLSTM",
                "gravesBidirectionalLSTM": "org.deeplearning4j.nn.conf.layers.GravesBidirectionalLSTM",
                "rnnoutput": "org.deeplearning4j.nn.conf.layers.RnnOutputLayer"}
_ACTIVATION_CLASS = {"TanH": "ActivationTanH", "SoftSign": "ActivationSoftSign", "Softmax": "ActivationSoftmax",
                     "Sigmoid": "ActivationSigmoid"}
_L2 = "org.nd4j.linalg.learning.regularization.L2Regularization"

# fields of the 0.8.0 layers that lstmfast does not import: each is named in the loaded model's
# not_imported list (checked below) or describes how parameters were initialised or trained
# before they were written, which a loaded model's function does not depend on
NOT_CARRIED = {
    "l1": "L1 regularisation", "dropOut": "dropout 0.6", "updater": "updater RMSPROP",
    "gradientNormalization": "gradient normalisation ClipElementWiseAbsoluteValue",
    "gradientNormalizationThreshold": "gradient normalisation ClipElementWiseAbsoluteValue",
    "learningRate": "updater RMSPROP", "biasLearningRate": "updater RMSPROP", "rmsDecay": "updater RMSPROP",
    "learningRateSchedule": None, "momentum": None, "momentumSchedule": None, "rho": None,
    "epsilon": None, "adamMeanDecay": None, "adamVarDecay": None,     # other updaters' settings
    "weightInit": None, "dist": None,                                 # initialisation only
    "lossFunction": None,                                             # the old duplicate of lossFn
}


def _layers_080(configuration):
    if "confs" in configuration:
        confs = [c["layer"] for c in configuration["confs"]]
    else:  # ComputationGraph: its vertices in order
        vertices = configuration["vertices"]
        confs = [vertices[k]["LayerVertex"]["layerConf"]["layer"] for k in sorted(vertices, key=int)]
    return [next(iter(c.items())) for c in confs]


@pytest.mark.parametrize("name", MODELS_080)
def test_080_models_saved_again_keep_every_field_dl4j_wrote(tmp_path, name):
    original, saved = _saved(tmp_path, name, np.float32)
    theirs = json.loads(original["configuration.json"])
    mine = json.loads(saved["configuration.json"])
    not_imported = set(dl4j.read_model(data_file(name))[0].not_imported)
    assert not_imported == {"updater RMSPROP", "L1 regularisation", "dropout 0.6",
                            "gradient normalisation ClipElementWiseAbsoluteValue"}

    their_layers = _layers_080(theirs)
    assert len(mine["confs"]) == len(their_layers) == 3
    for index, ((kind, old), new_conf) in enumerate(zip(their_layers, mine["confs"])):
        new = new_conf["layer"]
        where = f"{name} layer {index} ({kind})"
        for field, value in old.items():
            if field in NOT_CARRIED:
                reason = NOT_CARRIED[field]
                assert reason is None or reason in not_imported, (where, field)
            elif field in ("nin", "nout", "biasInit", "forgetGateBiasInit"):
                assert new[field] == value, (where, field, new[field], value)
            elif field in ("activationFn", "gateActivationFn"):
                (short,) = value
                assert new[field]["@class"] == "org.nd4j.linalg.activations.impl." + _ACTIVATION_CLASS[short]
            elif field == "lossFn":
                (short,) = value
                assert new[field]["@class"] == "org.nd4j.linalg.lossfunctions.impl.Loss" + short, where
            elif field == "l2":
                assert new["regularization"] == [
                    {"@class": _L2, "l2": {"@class": "org.nd4j.linalg.schedule.FixedSchedule", "value": value}}], where
            elif field in ("l1Bias", "l2Bias"):
                assert value == 0.0 and new["regularizationBias"] == [], (where, field, new["regularizationBias"])
            elif field == "layerName":
                # a graph's layers are named after their vertices ("0", "1", "2"); saved as a
                # MultiLayerNetwork they take the names DL4J gives its layers ("layer0", ...)
                assert new[field] == (value if "confs" in theirs else f"layer{index}"), (where, new[field])
            else:
                raise AssertionError(f"{where}: field {field!r} of DL4J's file is neither compared "
                                     f"nor explained")
        assert new["@class"] == _LAYER_CLASS[kind]
    for field in ("tbpttFwdLength", "tbpttBackLength", "backpropType"):
        assert mine[field] == theirs[field], field

    # the parameters: DL4J set them to 1, 2, ..., 477 in flat order; the saved array has the same
    # values in the same order. Its header is the modern format DL4J 1.0 writes, where the 0.8.0
    # file has the older one (allocation mode, 32-bit counts, an offset where extras now are)
    mine_fields, my_values = nd4j_fields(saved["coefficients.bin"])
    their_fields, their_values = nd4j_fields(original["coefficients.bin"])
    assert np.array_equal(their_values, np.arange(1, 478)) and np.array_equal(my_values, their_values)
    for field in ("rank", "shape", "element-wise stride", "order", "data type"):
        assert mine_fields[field] == their_fields[field], (field, mine_fields[field], their_fields[field])
    assert mine_fields["strides"][1] == their_fields["strides"][1] == 1   # the size-1 row: see above
    assert mine_fields["shape buffer mode"] == mine_fields["data buffer mode"] == "MIXED_DATA_TYPES"
    assert mine_fields["extras"] & ALL_TYPE_BITS == ND4J_TYPE_BITS["FLOAT"]
