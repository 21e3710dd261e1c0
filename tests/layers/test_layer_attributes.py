"""The values of every public attribute a layer's backward pass fills - ``gradients`` and its
views, ``W_gradient``, ``RW_gradient``, ``b_gradient``, ``state_gradients`` = (dL/dh0, dL/dc0)
and the returned dL/dx - against the NumPy reference of the seed and against central
differences of the forward pass (tests/gradcheck.py)."""
import numpy as np
import pytest

import lstmfast
import reference as R
from gradcheck import assert_gradient

SEED = 20250128
TOL = 1e-10


def _loss_of_state(x, W, RW, b, epsilon, h0, c0, forwards=True):
    """L = sum(epsilon * output) of the pass from (h0, c0), evaluated by lstmfast's forward."""
    def score():
        out = lstmfast.lstm_forward(x, W, RW, b, h0=h0, c0=c0, forwards=forwards).output
        return float(np.sum(epsilon * out))
    return score


def _check_state_gradients(state_gradients, x, W, RW, b, epsilon, h0, c0, seed, forwards=True):
    assert isinstance(state_gradients, tuple) and len(state_gradients) == 2
    dh0, dc0 = state_gradients
    ref = R.ref_backward(R.ref_forward(x, W, RW, b, h0=h0, c0=c0, forwards=forwards), epsilon)
    assert R.rel_err(dh0, ref.h0) < TOL, f"seed {seed}: state_gradients[0] is not dL/dh0"
    assert R.rel_err(dc0, ref.c0) < TOL, f"seed {seed}: state_gradients[1] is not dL/dc0"
    h0, c0 = np.array(h0, order="C"), np.array(c0, order="C")
    score = _loss_of_state(x, W, RW, b, epsilon, h0, c0, forwards)
    assert_gradient(score, h0, dh0, what=f"seed {seed}: dL/dh0")
    assert_gradient(score, c0, dc0, what=f"seed {seed}: dL/dc0")


@pytest.mark.parametrize("layer_class", [lstmfast.GravesLSTM, lstmfast.LSTM])
def test_unidirectional_layer_attributes_after_backward(layer_class):
    """A second truncated-BPTT window starts from the state the first one left: its backward
    pass fills state_gradients with the gradient with respect to that (non-zero) state."""
    seed = [SEED, int(layer_class is lstmfast.LSTM)]
    rng = np.random.default_rng(seed)
    layer = layer_class(3, 4, seed=5, dtype=np.float64, activation="tanh")
    layer.params = rng.standard_normal(layer.num_params()) * 0.5
    x1, x2 = rng.standard_normal((2, 3, 5)), rng.standard_normal((2, 3, 4))
    epsilon = rng.standard_normal((2, 4, 4))
    layer.rnn_activate_using_stored_state(x1, training=True)
    h0, c0 = layer.tbptt_state
    assert np.abs(h0).min() > 0 and np.abs(c0).min() > 0  # a state that tells h from c
    layer.rnn_activate_using_stored_state(x2, training=True)
    dx = layer.backward(epsilon)
    W, RW, b = layer.W.copy(), layer.RW.copy(), layer.b.copy()

    ref = R.ref_backward(R.ref_forward(x2, W, RW, b, h0=h0, c0=c0), epsilon)
    for name, mine in (("input", dx), ("input_weights", layer.W_gradient),
                       ("recurrent_weights", layer.RW_gradient), ("bias", layer.b_gradient)):
        assert R.rel_err(mine, getattr(ref, name)) < TOL, f"seed {seed}: {name}"
    # the flat gradient and its table are the same numbers, in DL4J's key order
    table = layer.gradient_table()
    assert list(table) == ["W", "RW", "b"]
    expected_flat = np.concatenate([np.ravel(ref.input_weights, order="F"),
                                    np.ravel(ref.recurrent_weights, order="F"), np.ravel(ref.bias)])
    assert R.rel_err(layer.gradients, expected_flat) < TOL, f"seed {seed}: gradients"
    for key, view in table.items():
        assert np.shares_memory(view, layer.gradients), key
    _check_state_gradients(layer.state_gradients, x2, W, RW, b, epsilon, h0, c0, seed)

    # from a zero state (a plain training forward) the state gradients are still the gradient
    # with respect to that zero state
    layer.forward(x2, training=True)
    layer.backward(epsilon)
    zeros = np.zeros_like(h0)
    _check_state_gradients(layer.state_gradients, x2, W, RW, b, epsilon, zeros, zeros, seed)


@pytest.mark.parametrize("make", [
    lambda: lstmfast.GravesBidirectionalLSTM(3, 4, seed=6, dtype=np.float64),
    lambda: lstmfast.Bidirectional(lstmfast.LSTM(3, 4, seed=7, dtype=np.float64), mode="concat"),
], ids=["GravesBidirectionalLSTM", "Bidirectional-concat"])
def test_bidirectional_directions_state_gradients(make):
    seed = [SEED, 2]
    rng = np.random.default_rng(seed)
    layer = make()
    layer.params = rng.standard_normal(layer.num_params()) * 0.5
    x = rng.standard_normal((2, 3, 5))
    out = layer.forward(x, training=True)
    epsilon = rng.standard_normal(out.shape)
    layer.backward(epsilon)
    h = 4
    if out.shape[1] == 2 * h:
        eps_f, eps_b = epsilon[:, :h], epsilon[:, h:]
    else:
        eps_f = eps_b = epsilon
    zeros = np.zeros((2, h))
    for direction, eps, forwards in ((layer.forward_layer, eps_f, True), (layer.backward_layer, eps_b, False)):
        _check_state_gradients(direction.state_gradients, x, direction.W.copy(), direction.RW.copy(),
                               direction.b.copy(), eps, zeros, zeros, seed, forwards=forwards)
