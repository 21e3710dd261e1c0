"""Regenerate the Keras model files of this folder with the real Keras.

    KERAS_BACKEND=numpy python tests/convert/keras_files/make_keras_files.py

(Keras 3 runs inference on its NumPy backend, which imports jax for a few functions: pip install
keras jax h5py.) For every model it writes keras_<name>.keras, keras_<name>.h5 (Keras 3's legacy
HDF5 format) and keras_<name>.npz holding the input `x` and Keras's `predict(x)` as `y`, which the tests
compare lstmfast.keras.load's outputs with. Weights are random with a fixed seed and scaled up so
that gates reach hard_sigmoid's clipped range.

Models with stateful layers or several outputs are run as a sequence of `predict` calls: their
.npz holds `x` [calls, minibatch, T, features], `resets` (whether the layers' states were reset
before each call) and one array `y<k>` [calls, ...] per model output k.
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "numpy")

import keras  # noqa: E402
import numpy as np  # noqa: E402

L = keras.layers
HERE = os.path.dirname(os.path.abspath(__file__))


def models():
    yield "lstm_hard_sigmoid", keras.Sequential([
        keras.Input((6, 3)),
        L.LSTM(4, recurrent_activation="hard_sigmoid", return_sequences=True),
        L.LSTM(3, recurrent_activation="hard_sigmoid"),
        L.Dense(2, activation="softmax"),
    ]), False
    yield "bidirectional_modes", keras.Sequential([
        keras.Input((5, 3)),
        L.Bidirectional(L.LSTM(4, return_sequences=True), merge_mode="concat"),
        L.Bidirectional(L.LSTM(3, return_sequences=True, use_bias=False), merge_mode="sum"),
        L.Bidirectional(L.LSTM(3, return_sequences=True), merge_mode="mul"),
        L.Dropout(0.3),
        L.Bidirectional(L.LSTM(2), merge_mode="ave"),
    ]), False
    yield "backwards_time_distributed", keras.Sequential([
        keras.Input((7, 2)),
        L.LSTM(4, go_backwards=True, return_sequences=True, activation="relu"),
        L.TimeDistributed(L.Dense(3, activation="tanh")),
        L.LSTM(3, go_backwards=True),
        L.Dense(2),
    ]), False
    inputs = keras.Input((6, 3))
    masked = L.Masking(0.0)(inputs)
    seq = L.LSTM(4, return_sequences=True)(masked)
    seq = L.Bidirectional(L.LSTM(3, return_sequences=True))(seq)
    seq = L.Dense(3, activation="relu")(seq)
    last = L.LSTM(2, go_backwards=True)(seq)
    yield "functional_masking", keras.Model(inputs, last), True
    yield from stateful_models()


def stateful_models():
    """Stateful layers carry their state from one predict to the next; return_state adds h, c."""
    inputs = keras.Input(batch_shape=(4, 6, 3))
    masked = L.Masking(0.0)(inputs)
    seq, h, c = L.LSTM(4, return_sequences=True, return_state=True, stateful=True)(masked)
    both = L.Bidirectional(L.LSTM(3, return_sequences=True, stateful=True), merge_mode="concat")(seq)
    last, h2, c2 = L.LSTM(3, go_backwards=True, stateful=True, return_state=True)(both)
    from_state = L.Dense(2, activation="tanh")(h)
    # the sequences show masked steps: the previous output (before the first step, the state
    # carried from the previous call), zeros inside Bidirectional
    yield "stateful_return_state", keras.Model(inputs, [last, from_state, c, h2, c2, seq, both]), True
    inputs = keras.Input((5, 3))
    both = L.Bidirectional(L.LSTM(3, return_state=True), merge_mode="sum")(inputs)
    yield "bidirectional_return_state", keras.Model(inputs, list(both)), False
    yield "sequential_stateful", keras.Sequential([
        keras.Input(batch_shape=(4, 5, 2)),
        L.LSTM(4, stateful=True, return_sequences=True, recurrent_activation="hard_sigmoid"),
        L.LSTM(3, stateful=True, return_state=True),
    ]), False


RESETS = [False, False, True, False]       # predict, predict, reset_states + predict, predict


def pad(x):
    """Trailing, inner and leading padding steps (whole-row padding in the last example)."""
    x[1, 4:] = 0.0
    x[2, 2] = 0.0
    x[3, :] = 0.0
    x[3, 0] = 1.0
    x[0, :2] = 0.0


def main():
    rng = np.random.default_rng(2024)
    for name, model, padded in models():
        model.set_weights([1.5 * rng.standard_normal(w.shape).astype(np.float32)
                           for w in model.get_weights()])
        shape = (4,) + tuple(model.inputs[0].shape[1:])
        sequence = len(model.outputs) > 1 or any(getattr(layer, "stateful", False)
                                                 for layer in model.layers)
        if not sequence:
            x = rng.standard_normal(shape).astype(np.float32)
            if padded:                                  # trailing and inner padding steps
                x[1, 4:] = 0.0
                x[2, 2] = 0.0
                x[3, :] = 0.0
                x[3, 0] = 1.0
            y = model.predict(x, verbose=0)
            arrays = {"x": x, "y": y}
        else:
            xs, ys = [], []
            for reset in RESETS:
                if reset:
                    for layer in model.layers:
                        if getattr(layer, "stateful", False):
                            layer.reset_states()
                x = rng.standard_normal(shape).astype(np.float32)
                if padded:
                    pad(x)
                xs.append(x)
                ys.append(list(model.predict(x, verbose=0)))
            arrays = {"x": np.stack(xs), "resets": np.array(RESETS)}
            arrays.update({f"y{k}": np.stack([y[k] for y in ys]) for k in range(len(ys[0]))})
        model.save(os.path.join(HERE, f"keras_{name}.keras"))
        model.save(os.path.join(HERE, f"keras_{name}.h5"))
        np.savez(os.path.join(HERE, f"keras_{name}.npz"), keras_version=keras.__version__, **arrays)
        print(name, sorted(arrays), file=sys.stderr)


if __name__ == "__main__":
    main()
