"""Layers with per-example lengths (``lengths=`` instead of a mask).

Checked against tests/reference.py run example by example on the truncated sequences
(ref_forward_lengths / ref_backward_lengths) and by central differences.
"""

import numpy as np
import pytest

import lstmfast
from lstmfast.convert import from_onnx, lstmfast_to_onnx, to_keras
from lstmfast.layers import UnsupportedOperationError

from gradcheck import assert_gradient
from reference import ref_backward_lengths, ref_forward_lengths

F64 = np.float64
F32 = np.float32
LENGTHS = np.array([5, 0, 3, 1])


def _randomize(layer, rng, scale=0.5):
    layer.params = rng.standard_normal(layer.params.size) * scale


def _reference(direction, x, lengths, forwards):
    return ref_forward_lengths(x, direction.W, direction.RW, direction.b, lengths,
                               activation=direction.activation,
                               gate_activation=direction.gate_activation, forwards=forwards)


def _combine(mode, forward, backward):
    return {"concat": lambda: np.concatenate([forward, backward], axis=1),
            "add": lambda: forward + backward,
            "mul": lambda: forward * backward,
            "average": lambda: 0.5 * (forward + backward)}[mode]()


def _valid(lengths, steps):
    """[mb, 1, T] of 1 at each example's valid steps."""
    return (np.arange(steps)[None, :] < np.asarray(lengths)[:, None])[:, None, :].astype(F64)


def _reverse_layer(cls, n_in, h, rng, dtype=F64):
    """A standalone layer processing time in reverse (as an ONNX 'reverse' node imports)."""
    donor = cls(n_in, h, dtype=dtype, seed=3)
    _randomize(donor, rng)
    W, R, B, P = lstmfast_to_onnx(donor.W, donor.RW, donor.b)
    layer = from_onnx(W, R, B, P, direction="reverse")
    assert layer.reverse and type(layer) is cls
    return layer


@pytest.mark.parametrize("cls", [lstmfast.GravesLSTM, lstmfast.LSTM])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype, rtol", [(F64, 1e-10), (F32, 1e-4)])
def test_one_direction_layer_matches_the_reference_example_by_example(cls, reverse, dtype, rtol):
    rng = np.random.default_rng(41)
    if reverse:
        layer = _reverse_layer(cls, 3, 4, rng, dtype)
    else:
        layer = cls(3, 4, dtype=dtype, seed=2)
        _randomize(layer, rng)
    x = rng.standard_normal((4, 3, 5)).astype(dtype)
    x[1, :, :] = np.nan          # length 0: never read
    x[2, :, 3:] = np.nan         # padding
    out = layer.forward(x, lengths=LENGTHS, training=True)
    ref = _reference(layer, x, LENGTHS, forwards=not reverse)
    np.testing.assert_allclose(out, ref.output, rtol=rtol, atol=rtol)
    assert np.all(out[2, :, 3:] == 0) and np.all(out[1] == 0)

    eps = rng.standard_normal(out.shape)
    eps[:, :, :] *= _valid(LENGTHS, 5)
    dx = layer.backward(eps.astype(dtype))
    grads = ref_backward_lengths(ref, eps)
    table = layer.gradient_table()
    np.testing.assert_allclose(table["W"], grads.input_weights, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(table["RW"], grads.recurrent_weights, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(table["b"], grads.bias.reshape(-1), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(dx, grads.input, rtol=rtol, atol=rtol)
    assert np.all(dx[2, :, 3:] == 0)


@pytest.mark.parametrize("mode", ["concat", "add", "mul", "average"])
def test_bidirectional_wrapper_with_lengths(mode):
    rng = np.random.default_rng(17)
    layer = lstmfast.Bidirectional(lstmfast.GravesLSTM(3, 4, dtype=F64, seed=5), mode=mode)
    _randomize(layer, rng)
    x = rng.standard_normal((4, 3, 5))
    out = layer.forward(x, lengths=LENGTHS, training=True)
    ref_f = _reference(layer.forward_layer, x, LENGTHS, forwards=True)
    ref_b = _reference(layer.backward_layer, x, LENGTHS, forwards=False)
    np.testing.assert_allclose(out, _combine(mode, ref_f.output, ref_b.output),
                               rtol=1e-10, atol=1e-12)
    # the backward direction starts at each example's last valid step: its output there is the
    # first step of the reversed truncated sequence, not a step carried in from the padding
    assert np.all(out[:, :, 4][LENGTHS < 5] == 0)

    weights = rng.standard_normal(out.shape) * _valid(LENGTHS, 5)
    dx = layer.backward(weights)
    analytic = layer.gradients.copy()

    def score():
        return float(np.sum(layer.forward(x, lengths=LENGTHS) * weights))

    assert_gradient(score, layer.params, analytic, f"Bidirectional({mode}) parameters")
    assert_gradient(score, x, dx, f"Bidirectional({mode}) input")


def test_graves_bidirectional_with_lengths_sums_the_directions():
    rng = np.random.default_rng(5)
    layer = lstmfast.GravesBidirectionalLSTM(3, 4, activation="softsign", dtype=F64, seed=1)
    _randomize(layer, rng)
    x = rng.standard_normal((4, 3, 5))
    out = layer.forward(x, lengths=LENGTHS, training=True)
    ref_f = _reference(layer.forward_layer, x, LENGTHS, forwards=True)
    ref_b = _reference(layer.backward_layer, x, LENGTHS, forwards=False)
    np.testing.assert_allclose(out, ref_f.output + ref_b.output, rtol=1e-10, atol=1e-12)
    eps = rng.standard_normal(out.shape) * _valid(LENGTHS, 5)
    dx = layer.backward(eps)
    g_f, g_b = ref_backward_lengths(ref_f, eps), ref_backward_lengths(ref_b, eps)
    np.testing.assert_allclose(dx, g_f.input + g_b.input, rtol=1e-10, atol=1e-12)
    table = layer.gradient_table()
    np.testing.assert_allclose(table["WF"], g_f.input_weights, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(table["RWB"], g_b.recurrent_weights, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(table["bB"], g_b.bias.reshape(-1), rtol=1e-10, atol=1e-12)


def test_one_direction_gradient_by_central_differences():
    rng = np.random.default_rng(9)
    layer = lstmfast.LSTM(3, 4, dtype=F64, seed=1)
    _randomize(layer, rng)
    x = rng.standard_normal((4, 3, 5))
    out = layer.forward(x, lengths=LENGTHS, training=True)
    weights = rng.standard_normal(out.shape)      # padding weighted too: its output is zero
    dx = layer.backward(weights)
    analytic = layer.gradients.copy()

    def score():
        return float(np.sum(layer.forward(x, lengths=LENGTHS) * weights))

    assert_gradient(score, layer.params, analytic, "LSTM parameters")
    assert_gradient(score, x, dx, "LSTM input")


@pytest.mark.parametrize("make", [
    lambda: lstmfast.LSTM(3, 4, seed=0),
    lambda: lstmfast.GravesBidirectionalLSTM(3, 4, seed=0),
    lambda: lstmfast.Bidirectional(lstmfast.LSTM(3, 4, seed=0), mode="concat"),
])
def test_mask_and_lengths_together_are_refused(make):
    layer = make()
    x = np.ones((2, 3, 4), dtype=F32)
    with pytest.raises(ValueError, match=f"{type(layer).__name__}.forward: mask and lengths"):
        layer.forward(x, mask=np.ones((2, 4)), lengths=[4, 2])
    with pytest.raises(ValueError, match=r"lengths\[1\] = 5"):
        layer.forward(x, lengths=[4, 5])


def test_streaming_with_lengths_keeps_each_example_at_its_last_valid_step():
    rng = np.random.default_rng(2)
    layer = lstmfast.GravesLSTM(3, 4, dtype=F64, seed=1)
    _randomize(layer, rng)
    first = rng.standard_normal((4, 3, 5))
    second = rng.standard_normal((4, 3))
    layer.rnn_time_step(first, lengths=LENGTHS)
    h, c = layer.rnn_get_previous_state()
    ref = _reference(layer, first, LENGTHS, forwards=True)
    np.testing.assert_allclose(h, ref.last_h, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c, ref.last_c, rtol=1e-10, atol=1e-12)
    stepped = layer.rnn_time_step(second)
    # each example's whole sequence: its valid steps, then the next step
    for m, length in enumerate(LENGTHS):
        whole = np.concatenate([first[m:m + 1, :, :length], second[m:m + 1, :, None]], axis=2)
        expected = _reference(layer, whole, [whole.shape[2]], forwards=True).output[0, :, -1]
        np.testing.assert_allclose(stepped[m], expected, rtol=1e-10, atol=1e-12)


def test_reverse_is_a_read_only_property_and_streaming_says_why():
    rng = np.random.default_rng(0)
    plain = lstmfast.LSTM(3, 4, seed=0)
    assert plain.reverse is False
    with pytest.raises(AttributeError):
        plain.reverse = True
    standalone = _reverse_layer(lstmfast.LSTM, 3, 4, rng)
    with pytest.raises(UnsupportedOperationError, match="processes time in reverse") as info:
        standalone.rnn_time_step(np.ones((2, 3)))
    assert "bidirectional" not in str(info.value)
    with pytest.raises(UnsupportedOperationError, match="processes time in reverse"):
        standalone.rnn_activate_using_stored_state(np.ones((2, 3, 4)))
    pair = lstmfast.Bidirectional(lstmfast.LSTM(3, 4, seed=0))
    assert pair.backward_layer.reverse and not pair.forward_layer.reverse
    with pytest.raises(UnsupportedOperationError, match="backward direction of a bidirectional"):
        pair.backward_layer.rnn_time_step(np.ones((2, 3)))


@pytest.mark.parametrize("cls", [lstmfast.GravesLSTM, lstmfast.LSTM])
def test_reverse_constructor_argument_runs_time_backwards_and_survives_a_copy(cls):
    """reverse=True gives the output of a forward layer on the time-flipped input, flipped
    back (the reference's own reverse pass checks the kernels; this checks the argument); the
    direction survives a configuration clone, and containers that would lose it refuse."""
    rng = np.random.default_rng(5)
    layer = cls(3, 4, dtype=F64, seed=1, reverse=True)
    forward = cls(3, 4, dtype=F64, seed=1)
    _randomize(layer, rng)
    forward.params[...] = layer.params
    x = rng.standard_normal((2, 3, 6))
    assert layer.reverse and not forward.reverse
    np.testing.assert_allclose(layer.forward(x), forward.forward(x[:, :, ::-1])[:, :, ::-1],
                               rtol=1e-12, atol=1e-14)
    assert layer._clone_configuration(7).reverse
    assert "reverse=True" in repr(layer._describe())
    assert cls(3, 4, reverse=np.True_).reverse is True
    for bad in (1, "True", None):
        with pytest.raises(TypeError, match="reverse"):
            cls(3, 4, reverse=bad)
    # wrapped, it would become a forward direction that runs backwards
    with pytest.raises(ValueError, match="wrap a forward layer"):
        lstmfast.Bidirectional(cls(3, 4, reverse=True))
    if cls is lstmfast.LSTM:
        with pytest.raises(ValueError, match="go_backwards"):
            to_keras(layer)
