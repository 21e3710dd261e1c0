"""Regenerate the Keras 2 model files of this folder (keras2_*) with the real Keras 2.

Made with TensorFlow 2.15.1, whose tf.keras is Keras 2.15.0 (h5py 3.16, NumPy 1.26), in a
virtual environment of its own, since TensorFlow pins its own NumPy:

    python -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install tensorflow-cpu==2.15.1 h5py
    /tmp/tfvenv/bin/python tests/convert/keras_files/make_keras2_files.py

For every model it writes keras2_<name>.h5 (``model.save`` in Keras 2's HDF5 format, with its
``model_config``) and keras2_<name>.npz holding the input ``x`` and Keras's ``predict(x)`` as
``y``; for two models also keras2_<name>.json (``model.to_json()``) with the weights of
``model.save_weights`` in both of the formats Keras 2.15 writes: keras2_<name>.weights.h5
(Keras 3's layout) and keras2_<name>_weights.h5 (the older HDF5 layout); for two models
also keras2_<name>.keras (the zip archive of Keras 3, as Keras 2.15 writes it). The tests
(test_keras2_files.py) compare lstmfast.keras.load's outputs with ``y``. Weights are random
with a fixed seed and scaled up so that gates reach hard_sigmoid's clipped range (Keras 2's
hard_sigmoid is clip(0.2 x + 0.5, 0, 1); its default recurrent activation before Keras 2.3,
set here explicitly since later Keras 2 defaults to sigmoid).
"""

import os
import sys
from importlib.metadata import version

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

keras = tf.keras
L = keras.layers
HERE = os.path.dirname(os.path.abspath(__file__))
#: the models also saved as a JSON configuration plus weights-only .h5 files
JSON_MODELS = ("stacked_hard_sigmoid", "bidirectional_time_distributed")
#: the models also saved as a .keras archive (Keras 2.13+ writes them with its version inside)
ARCHIVE_MODELS = ("stacked_hard_sigmoid", "functional_masking")


def models():
    """(name, model, padded input)."""
    yield "stacked_hard_sigmoid", keras.Sequential([
        keras.Input((6, 3)),
        L.LSTM(5, recurrent_activation="hard_sigmoid", return_sequences=True),
        L.LSTM(4, recurrent_activation="hard_sigmoid"),
        L.Dense(3, activation="tanh"),
    ]), False
    yield "backwards_softmax", keras.Sequential([
        keras.Input((7, 2)),
        L.LSTM(4, go_backwards=True, return_sequences=True),
        L.Dropout(0.4),
        L.LSTM(3, go_backwards=True, recurrent_activation="hard_sigmoid"),
        L.Dense(3, activation="softmax"),
    ]), False
    # named layers: a .weights.h5 file keys its arrays by class name, not by layer name
    yield "bidirectional_time_distributed", keras.Sequential([
        keras.Input((5, 3)),
        L.Bidirectional(L.LSTM(4, return_sequences=True), merge_mode="sum", name="encoder"),
        L.Bidirectional(L.LSTM(3, return_sequences=True, recurrent_activation="hard_sigmoid"),
                        merge_mode="concat", name="decoder"),
        L.TimeDistributed(L.Dense(2, activation="relu"), name="per_step"),
    ]), False
    yield "masking", keras.Sequential([
        keras.Input((6, 3)),
        L.Masking(0.0),
        L.LSTM(4, recurrent_activation="hard_sigmoid"),
    ]), True
    # a functional chain under a mask: Keras 2 writes its inbound_nodes as nested lists
    inputs = keras.Input((6, 3))
    seq = L.Masking(0.0)(inputs)
    seq = L.LSTM(4, return_sequences=True)(seq)
    seq = L.Bidirectional(L.LSTM(3, return_sequences=True), merge_mode="concat")(seq)
    last = L.LSTM(2, go_backwards=True, recurrent_activation="hard_sigmoid")(seq)
    yield "functional_masking", keras.Model(inputs, L.Dense(2)(last)), True


def pad(x):
    """Trailing, inner and leading padding steps, and an example with one step."""
    x[1, 4:] = 0.0
    x[2, 2] = 0.0
    x[3, :] = 0.0
    x[3, 0] = 1.0
    x[0, :2] = 0.0


def main():
    rng = np.random.default_rng(2025)
    for name, model, padded in models():
        model.set_weights([1.5 * rng.standard_normal(w.shape).astype(np.float32)
                           for w in model.get_weights()])
        x = rng.standard_normal((4,) + tuple(model.inputs[0].shape[1:])).astype(np.float32)
        if padded:
            pad(x)
        y = model.predict(x, verbose=0)
        stem = os.path.join(HERE, f"keras2_{name}")
        model.save(stem + ".h5", save_format="h5")
        if name in ARCHIVE_MODELS:
            model.save(stem + ".keras")
        if name in JSON_MODELS:
            with open(stem + ".json", "w") as fh:
                fh.write(model.to_json())
            # Keras 2.13+ picks the format from the name: a .weights.h5 file gets the layout
            # of Keras 3 (layers/<name>/.../vars/<k>), any other .h5 the HDF5 one of model.save
            model.save_weights(stem + ".weights.h5")
            model.save_weights(stem + "_weights.h5")
        np.savez(stem + ".npz", x=x, y=y, keras_version=version("keras"),
                 tensorflow_version=tf.__version__)
        print(name, x.shape, y.shape, file=sys.stderr)


if __name__ == "__main__":
    main()
