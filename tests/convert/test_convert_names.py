"""from_keras and from_onnx take the names and attributes as Keras and ONNX hand them over;
lstmfast.convert / .onnx / .keras are reachable after `import lstmfast` without importing
their optional dependencies.

References: the Keras and ONNX LSTM equations written independently in test_convert.py's
style (keras_lstm / onnx_lstm below), with each Keras generation's hard_sigmoid.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import lstmfast
from lstmfast import convert


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def keras2_hard_sigmoid(z):      # Keras 2 (and tf.keras): clip(0.2 x + 0.5, 0, 1)
    return np.clip(0.2 * z + 0.5, 0.0, 1.0)


def keras3_hard_sigmoid(z):      # Keras 3: relu6(x + 3) / 6
    return np.minimum(np.maximum(z + 3.0, 0.0), 6.0) / 6.0


def keras_lstm(x, kernel, recurrent_kernel, bias, activation=np.tanh, recurrent_activation=sigmoid):
    """Keras LSTM, return_sequences=True, for x [mb, T, nIn]; gates i, f, c, o."""
    mb, T, _ = x.shape
    units = recurrent_kernel.shape[0]
    h = np.zeros((mb, units))
    c = np.zeros((mb, units))
    seq = np.zeros((mb, T, units))
    for t in range(T):
        z = x[:, t] @ kernel + h @ recurrent_kernel + bias
        zi, zf, zc, zo = np.split(z, 4, axis=1)
        c = recurrent_activation(zf) * c + recurrent_activation(zi) * activation(zc)
        h = recurrent_activation(zo) * activation(c)
        seq[:, t] = h
    return seq


def keras_weights(rng, n_in, h, scale=1.5):
    # large enough that many gate pre-activations fall where the two hard_sigmoids differ
    return [scale * rng.standard_normal((n_in, 4 * h)), scale * rng.standard_normal((h, 4 * h)),
            scale * rng.standard_normal(4 * h)]


def run_keras_layout(layer, x):
    return layer.forward(x.transpose(0, 2, 1)).transpose(0, 2, 1)


@pytest.mark.parametrize("version, reference", [(2, keras2_hard_sigmoid), (3, keras3_hard_sigmoid)])
def test_hard_sigmoid_as_each_keras_defines_it(version, reference):
    rng = np.random.default_rng(40 + version)
    weights = keras_weights(rng, 3, 4)
    x = rng.standard_normal((2, 6, 3))
    layer = convert.from_keras(*weights, recurrent_activation="hard_sigmoid", keras_version=version)
    assert layer.gate_activation == "hardsigmoid"
    expected = keras_lstm(x, *weights, recurrent_activation=reference)
    np.testing.assert_allclose(run_keras_layout(layer, x), expected, rtol=1e-12, atol=1e-13)
    other = keras3_hard_sigmoid if version == 2 else keras2_hard_sigmoid
    # the two definitions give different outputs on these weights: the test tells them apart
    assert np.abs(keras_lstm(x, *weights, recurrent_activation=other) - expected).max() > 1e-2


def test_hard_sigmoid_needs_the_keras_version_only_when_unknown():
    weights = keras_weights(np.random.default_rng(1), 2, 3)
    with pytest.raises(ValueError, match="keras_version=2 or keras_version=3"):
        convert.from_keras(*weights, recurrent_activation="hard_sigmoid")
    with pytest.raises(ValueError, match="keras_version must be 2, 3 or None"):
        convert.from_keras(*weights, recurrent_activation="hard_sigmoid", keras_version=4)
    # lstmfast's own name needs no version
    assert convert.from_keras(*weights, recurrent_activation="hardsigmoid").gate_activation == "hardsigmoid"


class FakeKerasLSTM:
    """A Keras layer as from_keras reads it (get_weights, get_config)."""

    def __init__(self, weights, **config):
        self.weights = weights
        self.config = {"activation": "tanh", "recurrent_activation": "sigmoid", "go_backwards": False}
        self.config.update(config)

    def get_weights(self):
        return self.weights

    def get_config(self):
        return dict(self.config)


def test_keywords_override_the_layer_configuration():
    rng = np.random.default_rng(5)
    weights = keras_weights(rng, 3, 2, scale=0.7)
    x = rng.standard_normal((2, 4, 3))
    fake = FakeKerasLSTM(weights, activation="relu", recurrent_activation="hard_sigmoid")
    # the configuration's hard_sigmoid with the version given as a keyword
    layer = convert.from_keras(fake, keras_version=2)
    assert (layer.activation, layer.gate_activation) == ("relu", "hardsigmoid")
    np.testing.assert_allclose(run_keras_layout(layer, x),
                               keras_lstm(x, *weights, activation=lambda z: np.maximum(z, 0),
                                          recurrent_activation=keras2_hard_sigmoid),
                               rtol=1e-12, atol=1e-13)
    # keywords win over the configuration
    layer = convert.from_keras(fake, activation="tanh", recurrent_activation="sigmoid")
    assert (layer.activation, layer.gate_activation) == ("tanh", "sigmoid")
    np.testing.assert_allclose(run_keras_layout(layer, x), keras_lstm(x, *weights),
                               rtol=1e-12, atol=1e-13)


def test_keras_version_of_a_real_keras_layer():
    os.environ.setdefault("KERAS_BACKEND", "numpy")     # Keras 3 without TensorFlow
    keras = pytest.importorskip("keras")
    layer = keras.layers.LSTM(3, recurrent_activation="hard_sigmoid")
    layer.build((None, 5, 2))
    major = int(keras.__version__.split(".")[0])
    assert convert.keras_major_version(layer) == major
    rng = np.random.default_rng(6)
    weights = [w.astype(np.float32) for w in keras_weights(rng, 2, 3)]   # what Keras keeps
    layer.set_weights(weights)
    x = rng.standard_normal((2, 5, 2))
    ours = convert.from_keras(layer)
    reference = keras3_hard_sigmoid if major == 3 else keras2_hard_sigmoid
    np.testing.assert_allclose(run_keras_layout(ours, x),
                               keras_lstm(x, *weights, recurrent_activation=reference),
                               rtol=0, atol=1e-6)       # float32 layer, float64 reference


def random_onnx(rng, dirs, n_in, hidden):
    return dict(W=rng.standard_normal((dirs, 4 * hidden, n_in)),
                R=rng.standard_normal((dirs, 4 * hidden, hidden)),
                B=rng.standard_normal((dirs, 8 * hidden)))


def test_from_onnx_takes_attributes_as_onnx_stores_them():
    rng = np.random.default_rng(7)
    p = random_onnx(rng, 1, 3, 2)
    as_text = convert.from_onnx(**p, direction="forward", activations=["HardSigmoid", "Tanh", "Tanh"])
    as_bytes = convert.from_onnx(**p, direction=b"forward", hidden_size=2, layout=1,
                                 activations=[b"HardSigmoid", b"Tanh", b"Tanh"],
                                 activation_alpha=[0.2], activation_beta=[0.5])
    assert as_bytes.gate_activation == "hardsigmoid"
    x = rng.standard_normal((2, 3, 5))
    np.testing.assert_array_equal(as_bytes.forward(x), as_text.forward(x))
    bi = convert.from_onnx(**random_onnx(rng, 2, 3, 2), direction=b"bidirectional", hidden_size=2,
                           activations=[b"Sigmoid", b"Tanh", b"Tanh"] * 2)
    assert isinstance(bi, lstmfast.Bidirectional) and bi.mode == "concat"
    with pytest.raises(ValueError, match="hidden_size=3 does not match R"):
        convert.from_onnx(**p, hidden_size=3)
    with pytest.raises(ValueError, match="layout must be 0 or 1"):
        convert.from_onnx(**p, layout=2)
    with pytest.raises(ValueError, match="unknown direction 'sideways'"):
        convert.from_onnx(**p, direction=b"sideways")
    with pytest.raises(ValueError, match="not UTF-8"):
        convert.from_onnx(**p, direction=b"\xff\xfe")
    with pytest.raises(ValueError, match="activation 'Swish' is not supported"):
        convert.from_onnx(**p, activations=[b"Swish", b"Tanh", b"Tanh"])


def run_python(code, tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.dirname(os.path.dirname(lstmfast.__file__)), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=str(tmp_path), timeout=120)


def test_submodules_are_attributes_without_their_dependencies(tmp_path):
    """`import lstmfast` then lstmfast.convert etc. work; onnx, keras, h5py and torch stay
    unimported until a function needs them."""
    code = ("import sys\n"
            "import lstmfast\n"
            "names = lstmfast._LAZY_SUBMODULES\n"
            "assert set(names) == {'convert', 'onnx', 'keras'}, names\n"
            "for name in names:\n"
            "    module = getattr(lstmfast, name)\n"
            "    assert module.__name__ == 'lstmfast.' + name\n"
            "heavy = [m for m in ('onnx', 'onnxruntime', 'keras', 'h5py', 'torch') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "try:\n    lstmfast.no_such_module\nexcept AttributeError as e:\n    print('ok', e)\n")
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok") and "no_such_module" in result.stdout
