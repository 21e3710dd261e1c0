"""Layers: GravesLSTM, LSTM, GravesBidirectionalLSTM, Bidirectional.

Every numeric assertion is against an independent computation: the float64 NumPy port of the
seed in tests/reference.py, central differences, or plain NumPy; facts about DL4J (parameter
counts, key order, regularised keys) come from a file DL4J wrote
(tests/data/080_ModelSerializer_Regression_LSTM_1.zip).
"""

import json
import math
import struct
import zipfile

import numpy as np
import pytest

import lstmfast
from lstmfast.layers import UnsupportedOperationError

from gradcheck import assert_gradient
from memory_support import traced_peak
from reference import ref_backward, ref_forward
from testdata import data_file

F64 = np.float64
F32 = np.float32


def random_input(rng, mb, n_in, steps, dtype=F64):
    return rng.standard_normal((mb, n_in, steps)).astype(dtype)


def randomize(layer, rng, scale=0.5):
    """Give every parameter (biases too) a random value, so no test leans on the init."""
    layer.params = rng.standard_normal(layer.params.size) * scale


def single_layer_reference(layer, x, **kwargs):
    return ref_forward(x, layer.W, layer.RW, layer.b, activation=layer.activation,
                       gate_activation=layer.gate_activation, **kwargs)


# ----------------------------------------------------------------------------------------------
# parameter layout


@pytest.mark.parametrize("cls, extra_columns", [(lstmfast.GravesLSTM, 3), (lstmfast.LSTM, 0)])
def test_flat_layout_is_dl4j_fortran_order(cls, extra_columns):
    n_in, h = 5, 3
    layer = cls(n_in, h, dtype=F64, seed=1)
    n_w, n_rw, n_b = n_in * 4 * h, h * (4 * h + extra_columns), 4 * h
    assert layer.num_params() == layer.params.size == n_w + n_rw + n_b
    assert layer.params.ndim == 1 and layer.gradients.shape == layer.params.shape
    assert layer.W.shape == (n_in, 4 * h) and layer.RW.shape == (h, 4 * h + extra_columns)
    assert layer.b.shape == (4 * h,)
    layer.params = np.arange(layer.params.size, dtype=F64)
    for i in range(n_in):
        for j in range(4 * h):
            assert layer.W[i, j] == i + j * n_in
    for i in range(h):
        for j in range(4 * h + extra_columns):
            assert layer.RW[i, j] == n_w + i + j * h
    np.testing.assert_array_equal(layer.b, n_w + n_rw + np.arange(n_b))
    # gradients: same layout
    for view, grad_view in zip((layer.W, layer.RW, layer.b),
                               (layer.W_gradient, layer.RW_gradient, layer.b_gradient)):
        assert grad_view.shape == view.shape
        assert np.shares_memory(grad_view, layer.gradients)
    assert list(layer.param_table()) == ["W", "RW", "b"]


def test_parameter_views_stay_views():
    layer = lstmfast.GravesLSTM(4, 3, dtype=F64, seed=2)
    flat = layer.params
    W, RW, b = layer.W, layer.RW, layer.b
    for view in (W, RW, b):
        assert np.shares_memory(view, flat)
    W[1, 2] = 123.0
    assert flat[1 + 2 * 4] == 123.0
    RW[0, -1] = -7.0  # wGG of unit 0
    assert flat[4 * 12 + 0 + (4 * 3 + 2) * 3] == -7.0
    b[5] = 0.25
    assert flat[-12 + 5] == 0.25
    # setting params copies into the same storage: the views see it
    new_values = np.linspace(-1, 1, flat.size)
    layer.params = new_values
    assert layer.params is flat
    np.testing.assert_array_equal(W, new_values[:48].reshape(4, 12, order="F"))
    np.testing.assert_array_equal(b, new_values[-12:])
    # a DL4J row vector [1, n] is accepted too
    layer.params = new_values[np.newaxis, :] * 2
    np.testing.assert_array_equal(flat, new_values * 2)
    # the forward pass uses the views' current values
    x = random_input(np.random.default_rng(0), 2, 4, 3)
    np.testing.assert_allclose(layer.forward(x), single_layer_reference(layer, x).output, rtol=1e-10, atol=1e-12)


def test_params_setter_checks_length_and_type():
    layer = lstmfast.LSTM(3, 2, dtype=F32, seed=0)
    n = layer.num_params()
    with pytest.raises(ValueError, match=f"expected a flat array of {n} values.*{n + 1} values"):
        layer.params = np.zeros(n + 1)
    with pytest.raises(ValueError, match=str(n)):
        layer.params = np.zeros((2, n // 2 + 1))
    with pytest.raises(TypeError, match="real array"):
        layer.params = np.zeros(n, dtype=complex)
    before = layer.params.copy()
    with pytest.raises(ValueError):
        layer.params = np.ones(n - 1)
    np.testing.assert_array_equal(layer.params, before)  # unchanged after a refused set


def test_bidirectional_layouts():
    graves = lstmfast.GravesBidirectionalLSTM(3, 2, dtype=F64, seed=3)
    one = 3 * 8 + 2 * 11 + 8
    assert graves.num_params() == 2 * one
    assert list(graves.param_table()) == ["WF", "RWF", "bF", "WB", "RWB", "bB"]
    graves.params = np.arange(2 * one, dtype=F64)
    assert graves.WF[0, 0] == 0 and graves.RWF[0, 0] == 24 and graves.bF[0] == 46
    assert graves.WB[0, 0] == one and graves.RWB[0, 0] == one + 24 and graves.bB[0] == one + 46
    assert graves.WB[2, 1] == one + 2 + 1 * 3
    for view in graves.param_table().values():
        assert np.shares_memory(view, graves.params)
    for view in graves.gradient_table().values():
        assert np.shares_memory(view, graves.gradients)

    inner = lstmfast.LSTM(3, 2, dtype=F64, seed=4)
    inner_values = inner.params.copy()
    wrapped = lstmfast.Bidirectional(inner, mode="concat")
    assert list(wrapped.param_table()) == ["fW", "fRW", "fb", "bW", "bRW", "bb"]
    assert wrapped.num_params() == 2 * inner_values.size
    # the wrapped layer keeps its values and becomes the forward direction, inside the flat array
    np.testing.assert_array_equal(wrapped.params[:inner_values.size], inner_values)
    assert wrapped.forward_layer is inner and np.shares_memory(inner.W, wrapped.params)
    assert wrapped.n_out == 4
    assert lstmfast.Bidirectional(lstmfast.LSTM(3, 2, seed=0), mode="add").n_out == 2


def _read_nd4j_array(data):
    """Minimal reader for a legacy ND4J binary array (Nd4j.write, big-endian): shape buffer then
    data buffer, each 'UTF mode string, int32 count, UTF type string, values'."""
    offset = 0

    def utf():
        nonlocal offset
        (n,) = struct.unpack_from(">H", data, offset)
        offset += 2
        s = data[offset:offset + n].decode()
        offset += n
        return s

    def buffer():
        nonlocal offset
        utf()
        (count,) = struct.unpack_from(">i", data, offset)
        offset += 4
        kind = utf()
        fmt = {"INT": "i", "FLOAT": "f", "DOUBLE": "d"}[kind]
        values = struct.unpack_from(f">{count}{fmt}", data, offset)
        offset += count * struct.calcsize(fmt)
        return values

    shape_info = buffer()
    rank = shape_info[0]
    shape = shape_info[1:1 + rank]
    values = np.array(buffer(), dtype=F64)
    return shape, values


def test_parameter_counts_keys_and_regularised_keys_match_a_dl4j_file():
    """DL4J 0.8.0 wrote this GravesLSTM(3->4) -> GravesBidirectionalLSTM(4->4) -> RnnOutputLayer(4->5)
    network with parameters 1..477 in flat order. Same count, same key order, and DL4J's
    l2ByParam puts L2 on exactly the keys this implementation treats as weights."""
    with zipfile.ZipFile(data_file("080_ModelSerializer_Regression_LSTM_1.zip")) as archive:
        config = json.loads(archive.read("configuration.json"))
        shape, coefficients = _read_nd4j_array(archive.read("coefficients.bin"))
    confs = config["confs"]
    kinds = [next(iter(c["layer"])) for c in confs]
    assert kinds == ["gravesLSTM", "gravesBidirectionalLSTM", "rnnoutput"]
    sizes = [(c["layer"][k]["nin"], c["layer"][k]["nout"]) for c, k in zip(confs, kinds)]
    net = lstmfast.Sequential([
        lstmfast.GravesLSTM(*sizes[0], activation="tanh", dtype=F64, seed=0),
        lstmfast.GravesBidirectionalLSTM(*sizes[1], activation="softsign", dtype=F64, seed=0),
        lstmfast.RnnOutputLayer(*sizes[2], activation="softmax", loss="mcxent", dtype=F64, seed=0),
    ])
    assert tuple(shape) == (1, 477) and net.num_params() == 477 == coefficients.size
    net.params = coefficients
    np.testing.assert_array_equal(net.params, np.arange(1, 478))
    offset = 0
    for conf, layer in zip(confs, net.layers):
        assert list(layer.param_table()) == conf["variables"]
        mask = layer.weight_param_mask()
        position = 0
        for key, view in layer.param_table().items():
            assert np.shares_memory(view, net.params)
            # the view's first element is the flat vector's element at its offset (Fortran order)
            assert view.reshape(-1, order="F")[0] == 1 + offset + position
            regularised = conf["l2ByParam"][key] > 0
            assert np.all(mask[position:position + view.size] == regularised), key
            position += view.size
        offset += position


# ----------------------------------------------------------------------------------------------
# initialisation


def test_xavier_uses_dl4j_fan_values_for_lstm():
    """DL4J's LSTM param initialisers use fanIn = nOut, fanOut = nIn + nOut: std sqrt(2 / (nIn + 2 nOut))."""
    n_in, h = 200, 100
    layer = lstmfast.GravesLSTM(n_in, h, dtype=F64, seed=11)
    expected = math.sqrt(2.0 / (n_in + 2 * h))
    for values in (layer.W, layer.RW):
        assert abs(values.std() / expected - 1) < 0.02
        assert abs(values.mean()) < 0.05 * expected
    h_small = 4
    plain = lstmfast.LSTM(3, h_small, forget_gate_bias_init=5.0, seed=0)
    expected_bias = np.zeros(4 * h_small, dtype=F32)
    expected_bias[h_small:2 * h_small] = 5.0
    np.testing.assert_array_equal(plain.b, expected_bias)
    dense = lstmfast.DenseLayer(300, 200, dtype=F64, seed=5)
    assert abs(dense.W.std() / math.sqrt(2.0 / 500) - 1) < 0.02
    assert np.all(dense.b == 0)


def test_forget_gate_bias_in_both_directions_and_zero_init():
    layer = lstmfast.GravesBidirectionalLSTM(3, 4, forget_gate_bias_init=2.5, weight_init="zero", seed=0)
    for b in (layer.bF, layer.bB):
        np.testing.assert_array_equal(b[4:8], 2.5)
        np.testing.assert_array_equal(np.delete(b, range(4, 8)), 0.0)
    assert np.all(layer.WF == 0) and np.all(layer.RWB == 0)


def test_seed_reproducibility():
    for cls in (lstmfast.GravesLSTM, lstmfast.LSTM, lstmfast.GravesBidirectionalLSTM):
        a, b, c = cls(6, 5, seed=42), cls(6, 5, seed=42), cls(6, 5, seed=43)
        np.testing.assert_array_equal(a.params, b.params)
        assert not np.array_equal(a.params, c.params)
        wide = cls(6, 5, seed=42, dtype=F64)
        np.testing.assert_allclose(wide.params, a.params, rtol=1e-6)
    bi1 = lstmfast.Bidirectional(lstmfast.LSTM(3, 2, seed=9))
    bi2 = lstmfast.Bidirectional(lstmfast.LSTM(3, 2, seed=9))
    np.testing.assert_array_equal(bi1.params, bi2.params)
    assert not np.array_equal(bi1.forward_layer.params, bi1.backward_layer.params)
    unseeded = lstmfast.LSTM(3, 2), lstmfast.LSTM(3, 2)
    assert not np.array_equal(unseeded[0].params, unseeded[1].params)


# ----------------------------------------------------------------------------------------------
# forward and backward against the reference


@pytest.mark.parametrize("cls", [lstmfast.GravesLSTM, lstmfast.LSTM])
@pytest.mark.parametrize("dtype, rtol", [(F64, 1e-10), (F32, 1e-4)])
def test_single_layer_matches_reference(cls, dtype, rtol):
    rng = np.random.default_rng(7)
    layer = cls(4, 5, activation="softsign", gate_activation="hardsigmoid", dtype=dtype, seed=1)
    randomize(layer, rng)
    x = random_input(rng, 3, 4, 6, dtype)
    mask = np.ones((3, 6))
    mask[1, 4:] = 0
    out = layer.forward(x, mask=mask, training=True)
    assert out.shape == (3, 5, 6) and out.dtype == dtype
    ref = single_layer_reference(layer, x, mask=mask)
    np.testing.assert_allclose(out, ref.output, rtol=rtol, atol=rtol)
    eps = rng.standard_normal(out.shape).astype(dtype) * mask[:, None, :]
    dx = layer.backward(eps)
    ref_grads = ref_backward(ref, eps)
    np.testing.assert_allclose(dx, ref_grads.input, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(layer.W_gradient, ref_grads.input_weights, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(layer.RW_gradient, ref_grads.recurrent_weights, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(layer.b_gradient, ref_grads.bias.reshape(-1), rtol=rtol, atol=rtol)


def test_two_dimensional_input_is_one_step():
    rng = np.random.default_rng(1)
    layer = lstmfast.GravesLSTM(3, 4, dtype=F64, seed=0)
    x2 = rng.standard_normal((5, 3))
    out = layer.forward(x2, training=True)
    assert out.shape == (5, 4, 1)
    np.testing.assert_allclose(out, layer.forward(x2[:, :, None]), rtol=1e-12)
    layer.forward(x2, training=True)
    dx = layer.backward(np.ones((5, 4, 1)))
    assert dx.shape == (5, 3)
    ref = single_layer_reference(layer, x2)
    np.testing.assert_allclose(dx, ref_backward(ref, np.ones((5, 4, 1))).input, rtol=1e-10, atol=1e-12)


def _combine(mode, out_forward, out_backward):
    return {"concat": lambda: np.concatenate([out_forward, out_backward], axis=1),
            "add": lambda: out_forward + out_backward,
            "mul": lambda: out_forward * out_backward,
            "average": lambda: 0.5 * (out_forward + out_backward)}[mode]()


@pytest.mark.parametrize("mode", ["concat", "add", "mul", "average"])
def test_bidirectional_wrapper_forward_and_gradients(mode):
    rng = np.random.default_rng(21)
    layer = lstmfast.Bidirectional(lstmfast.GravesLSTM(3, 4, dtype=F64, seed=5), mode=mode)
    randomize(layer, rng)
    x = random_input(rng, 2, 3, 5)
    mask = np.array([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]], dtype=F64)
    out = layer.forward(x, mask=mask, training=True)
    f, b = layer.forward_layer, layer.backward_layer
    ref_f = ref_forward(x, f.W, f.RW, f.b, mask=mask)
    ref_b = ref_forward(x, b.W, b.RW, b.b, mask=mask, forwards=False)
    np.testing.assert_allclose(out, _combine(mode, ref_f.output, ref_b.output), rtol=1e-10, atol=1e-12)

    # loss = sum(out * R) with R zero at masked steps; check params and dL/dx by central differences
    weights = rng.standard_normal(out.shape) * mask[:, None, :]
    dx = layer.backward(weights)
    analytic = layer.gradients.copy()

    def score():
        return float(np.sum(layer.forward(x, mask=mask) * weights))

    assert_gradient(score, layer.params, analytic, f"Bidirectional({mode}) parameters")
    assert_gradient(score, x, dx, f"Bidirectional({mode}) input")


def test_graves_bidirectional_is_sum_of_directions_and_shares_epsilon():
    rng = np.random.default_rng(3)
    layer = lstmfast.GravesBidirectionalLSTM(3, 4, activation="softsign", dtype=F64, seed=1)
    randomize(layer, rng)
    x = random_input(rng, 2, 3, 5)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=F64)
    out = layer.forward(x, mask=mask, training=True)
    ref_f = ref_forward(x, layer.WF, layer.RWF, layer.bF, activation="softsign", mask=mask)
    ref_b = ref_forward(x, layer.WB, layer.RWB, layer.bB, activation="softsign", mask=mask, forwards=False)
    np.testing.assert_allclose(out, ref_f.output + ref_b.output, rtol=1e-10, atol=1e-12)
    eps = rng.standard_normal(out.shape) * mask[:, None, :]
    dx = layer.backward(eps)
    g_f, g_b = ref_backward(ref_f, eps), ref_backward(ref_b, eps)
    np.testing.assert_allclose(dx, g_f.input + g_b.input, rtol=1e-10, atol=1e-12)
    table = layer.gradient_table()
    np.testing.assert_allclose(table["WF"], g_f.input_weights, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(table["RWB"], g_b.recurrent_weights, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(table["bB"], g_b.bias.reshape(-1), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["graves", "concat", "add", "average"])
def test_bidirectional_with_one_direction_zeroed_equals_plain_layer(mode):
    """All-zero parameters give a zero output (tanh(0) = 0, so c = 0 and h = 0.5 * tanh(0) = 0)."""
    rng = np.random.default_rng(8)
    plain = lstmfast.GravesLSTM(3, 4, dtype=F64, seed=2)
    randomize(plain, rng)
    x = random_input(rng, 2, 3, 6)
    mask = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], dtype=F64)
    expected_forward = plain.forward(x, mask=mask)
    # the plain layer on the reversed input (and reversed mask), reversed back
    expected_backward = plain.forward(x[:, :, ::-1], mask=mask[:, ::-1])[:, :, ::-1]

    def make():
        if mode == "graves":
            return lstmfast.GravesBidirectionalLSTM(3, 4, dtype=F64, seed=0)
        return lstmfast.Bidirectional(lstmfast.GravesLSTM(3, 4, dtype=F64, seed=0), mode=mode)

    scale = 0.5 if mode == "average" else 1.0
    only_forward = make()
    only_forward.forward_layer.params = plain.params
    only_forward.backward_layer.params = np.zeros(plain.params.size)
    out = only_forward.forward(x, mask=mask)
    if mode == "concat":
        np.testing.assert_allclose(out[:, :4], expected_forward, rtol=1e-12, atol=1e-14)
        assert np.all(out[:, 4:] == 0)
    else:
        np.testing.assert_allclose(out, scale * expected_forward, rtol=1e-12, atol=1e-14)

    only_backward = make()
    only_backward.forward_layer.params = np.zeros(plain.params.size)
    only_backward.backward_layer.params = plain.params
    out = only_backward.forward(x, mask=mask)
    if mode == "concat":
        assert np.all(out[:, :4] == 0)
        np.testing.assert_allclose(out[:, 4:], expected_backward, rtol=1e-12, atol=1e-14)
    else:
        np.testing.assert_allclose(out, scale * expected_backward, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------------------------
# streaming


@pytest.mark.parametrize("cls", [lstmfast.GravesLSTM, lstmfast.LSTM])
@pytest.mark.parametrize("step", [1, 2, 3, 4, 6, 12])
def test_rnn_time_step_in_pieces_equals_whole_sequence(cls, step):
    """DL4J's testRnnTimeStepGravesLSTM: a length-12 series fed in pieces of every size."""
    rng = np.random.default_rng(100 + step)
    layer = cls(5, 7, dtype=F64, seed=3)
    randomize(layer, rng)
    x = random_input(rng, 3, 5, 12)
    whole = layer.forward(x)
    np.testing.assert_allclose(whole, single_layer_reference(layer, x).output, rtol=1e-10, atol=1e-12)
    pieces = []
    for start in range(0, 12, step):
        if step == 1:
            out = layer.rnn_time_step(x[:, :, start])  # [mb, nIn] -> [mb, nOut]
            assert out.shape == (3, 7)
            out = out[:, :, None]
        else:
            out = layer.rnn_time_step(x[:, :, start:start + step])
        pieces.append(out)
    np.testing.assert_allclose(np.concatenate(pieces, axis=2), whole, rtol=1e-10, atol=1e-12)
    # the stored state is the whole sequence's last state
    h, c = layer.rnn_get_previous_state()
    ref = single_layer_reference(layer, x)
    np.testing.assert_allclose(h, ref.last_h, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c, ref.last_c, rtol=1e-10, atol=1e-12)


def test_streaming_state_get_set_clear_and_minibatch_check():
    rng = np.random.default_rng(5)
    layer = lstmfast.GravesLSTM(4, 3, dtype=F64, seed=0)
    x = random_input(rng, 2, 4, 8)
    whole = layer.forward(x)
    assert layer.rnn_get_previous_state() is None
    layer.rnn_time_step(x[:, :, :5])
    h, c = layer.rnn_get_previous_state()
    h[...] = 99  # a copy: editing it does not change the layer
    layer.rnn_clear_previous_state()
    assert layer.rnn_get_previous_state() is None
    # a fresh sequence after clearing starts from zeros
    np.testing.assert_allclose(layer.rnn_time_step(x[:, :, :5]), whole[:, :, :5], rtol=1e-12)
    saved = layer.rnn_get_previous_state()
    layer.rnn_clear_previous_state()
    layer.rnn_set_previous_state(*saved)
    np.testing.assert_allclose(layer.rnn_time_step(x[:, :, 5:]), whole[:, :, 5:], rtol=1e-10, atol=1e-12)
    # the state from another minibatch size is refused with the hint to clear
    with pytest.raises(ValueError, match="rnn_clear_previous_state"):
        layer.rnn_time_step(random_input(rng, 3, 4, 2))
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        layer.rnn_set_previous_state(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="minibatch, nOut"):
        layer.rnn_set_previous_state(np.zeros(3), np.zeros(3))
    # state given by the user equals the reference with that initial state
    h0, c0 = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    layer.rnn_set_previous_state(h0, c0)
    np.testing.assert_allclose(layer.rnn_time_step(x), single_layer_reference(layer, x, h0=h0, c0=c0).output,
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls", [lstmfast.GravesLSTM, lstmfast.LSTM])
@pytest.mark.parametrize("dtype, rtol", [(F64, 1e-12), (F32, 2e-5)])
def test_rnn_time_step_bound_step_follows_every_rebinding(cls, dtype, rtol):
    """rnn_time_step binds its step to the layer's arrays after the first call: new parameter
    values, a new state, storage moved into a network, a pickle round trip and an input the
    bound step does not take must all give the reference's numbers, never stale arrays."""
    import pickle

    rng = np.random.default_rng(21)
    layer = cls(5, 4, dtype=dtype, seed=1)
    randomize(layer, rng)
    xs = [rng.standard_normal((3, 5)).astype(dtype) for _ in range(8)]
    h = np.zeros((3, 4))
    c = np.zeros((3, 4))

    def expect(x):
        nonlocal h, c
        ref = single_layer_reference(layer, x[:, :, None].astype(F64), h0=h, c0=c)
        h, c = ref.last_h, ref.last_c
        return ref.last_h

    def check(x):
        out = layer.rnn_time_step(x)
        assert out.shape == (3, 4) and out.dtype == dtype
        np.testing.assert_allclose(out, expect(x), rtol=rtol, atol=rtol)

    check(xs[0])
    assert "_stream_plan" in layer.__dict__          # the bound step exists from here on
    check(xs[1])
    layer.params = rng.standard_normal(layer.params.size) * 0.5   # values written in place
    check(xs[2])
    h_new, c_new = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    layer.rnn_set_previous_state(h_new, c_new)
    h, c = h_new, c_new
    check(xs[3])
    # moved into a network's flat storage: W, RW, b are new views, the bound step is dropped
    lstmfast.Sequential([layer, lstmfast.RnnOutputLayer(4, 2, dtype=dtype, seed=0)])
    assert "_stream_plan" not in layer.__dict__
    layer.params[:] = rng.standard_normal(layer.params.size) * 0.5
    check(xs[4])
    # a copy through pickle continues the same stream; the original is untouched by it
    clone = pickle.loads(pickle.dumps(layer))
    h_saved, c_saved = h, c
    np.testing.assert_allclose(clone.rnn_time_step(xs[5]), expect(xs[5]), rtol=rtol, atol=rtol)
    h, c = h_saved, c_saved
    check(xs[5])
    # another dtype and a non-contiguous view go through the validating path
    other = (F32 if dtype == F64 else F64)
    x_other = xs[6].astype(other)
    out = layer.rnn_time_step(x_other)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, expect(x_other), rtol=rtol, atol=rtol)
    wide = np.zeros((3, 10), dtype)
    wide[:, ::2] = xs[7]
    check(wide[:, ::2])
    # a wrong width is still refused with the validating path's message
    with pytest.raises(ValueError, match="nIn"):
        layer.rnn_time_step(np.zeros((3, 6), dtype))


def test_bound_step_refuses_byte_swapped_input():
    """A big-endian x has the layer's type number but not its byte order: the bound step must
    leave it to the validating path, which refuses it as it refuses it on a first call (it
    read the bytes as native floats and returned wrong numbers), and the state stays."""
    for dtype in (F32, F64):
        native = lstmfast.LSTM(3, 2, dtype=dtype, seed=0)
        x0 = np.full((1, 3), 0.5, dtype)
        native.rnn_time_step(x0)                  # the layer now has a bound step
        before = native.rnn_get_previous_state()
        big = np.array([[0.3, -1.2, 2.0]], dtype).astype(np.dtype(dtype).newbyteorder(">"))
        with pytest.raises(TypeError, match=">f"):
            native.rnn_time_step(big)
        for got, want in zip(native.rnn_get_previous_state(), before):
            np.testing.assert_array_equal(got, want)
        state = np.zeros((1, 2), dtype)
        with pytest.raises(ValueError):
            lstmfast.kernels.step(big, native.W, native.RW, native.b, state, state.copy(),
                                  np.zeros(4096, dtype), 0, 1)


@pytest.mark.parametrize("make", [
    lambda: lstmfast.LSTM(3, 4, dtype=F64, seed=0),
    lambda: lstmfast.GravesBidirectionalLSTM(3, 4, dtype=F64, seed=0),
    lambda: lstmfast.Sequential([lstmfast.GravesLSTM(3, 4, dtype=F64, seed=0),
                                 lstmfast.RnnOutputLayer(4, 2, dtype=F64, seed=1)]),
], ids=["LSTM", "GravesBidirectionalLSTM", "Sequential"])
def test_unpickled_and_deep_copied_objects_keep_their_views(make):
    """After pickling or deepcopy, the named weight views (and a network's layers) are views of
    the flat parameter vector again: writing params changes what forward computes."""
    import copy
    import pickle

    rng = np.random.default_rng(8)
    original = make()
    x = rng.standard_normal((2, 3, 5))
    new_params = rng.standard_normal(original.params.size) * 0.5
    fresh = make()
    fresh.params = new_params
    expected = fresh.forward(x) if not isinstance(fresh, lstmfast.Sequential) else fresh.output(x)
    for clone in (pickle.loads(pickle.dumps(original)), copy.deepcopy(original)):
        clone.params = new_params
        layers = clone.layers if isinstance(clone, lstmfast.Sequential) else [clone]
        for layer in layers:
            for view in layer.param_table().values():
                assert np.shares_memory(view, clone.params)
        got = clone.forward(x) if not isinstance(clone, lstmfast.Sequential) else clone.output(x)
        np.testing.assert_array_equal(got, expected)
        if isinstance(clone, lstmfast.Sequential):
            # the copied network owns its copied layers: they cannot join another network
            with pytest.raises(ValueError, match="already belongs"):
                lstmfast.Sequential([clone.layers[0]])
    if isinstance(original, lstmfast.Sequential):
        # a copy of one contained layer is a standalone layer
        lstmfast.Sequential([pickle.loads(pickle.dumps(original.layers[0]))])


def test_pickles_from_before_the_stream_state_property_still_load():
    import pickle

    rng = np.random.default_rng(4)
    layer = lstmfast.LSTM(3, 2, dtype=F64, seed=0)
    x = rng.standard_normal((1, 3))
    layer.rnn_time_step(x)
    state = pickle.loads(pickle.dumps(layer.__getstate__()))    # a copy, as unpickling makes
    state["_stream_state"] = state.pop("_stream_state_arrays")   # the old attribute names
    state["_step_workspaces"] = {1: np.zeros(10)}
    old = object.__new__(lstmfast.LSTM)
    old.__setstate__(state)
    for got, want in zip(old.rnn_get_previous_state(), layer.rnn_get_previous_state()):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(old.rnn_time_step(x), layer.rnn_time_step(x))
    assert "_step_workspaces" not in old.__dict__


@pytest.mark.parametrize("make", [
    lambda: lstmfast.GravesBidirectionalLSTM(3, 2, seed=0),
    lambda: lstmfast.Bidirectional(lstmfast.LSTM(3, 2, seed=0), mode="concat"),
])
def test_bidirectional_layers_refuse_streaming_and_truncated_bptt(make):
    layer = make()
    x = np.ones((2, 3, 4), dtype=F32)
    with pytest.raises(UnsupportedOperationError, match="bidirectional"):
        layer.rnn_time_step(x)
    with pytest.raises(UnsupportedOperationError, match="bidirectional"):
        layer.rnn_get_previous_state()
    with pytest.raises(UnsupportedOperationError, match="bidirectional"):
        layer.rnn_set_previous_state(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(UnsupportedOperationError, match="bidirectional"):
        layer.rnn_activate_using_stored_state(x)
    out = layer.forward(x, training=True)
    with pytest.raises(UnsupportedOperationError, match="truncated BPTT"):
        layer.backward(np.ones_like(out), tbptt_length=2)
    layer.rnn_clear_previous_state()  # nothing to clear, not an error
    with pytest.raises(UnsupportedOperationError):
        layer.backward_layer.rnn_time_step(x)


# ----------------------------------------------------------------------------------------------
# truncated BPTT state


def test_stored_state_windows_chain_like_the_whole_sequence():
    rng = np.random.default_rng(12)
    layer = lstmfast.LSTM(3, 4, dtype=F64, seed=1)
    randomize(layer, rng)
    x = random_input(rng, 2, 3, 10)
    ref = single_layer_reference(layer, x)
    outs = [layer.rnn_activate_using_stored_state(x[:, :, s:s + 4], training=False) for s in (0, 4, 8)]
    np.testing.assert_allclose(np.concatenate(outs, axis=2), ref.output, rtol=1e-10, atol=1e-12)
    h, c = layer.tbptt_state
    np.testing.assert_allclose(h, ref.last_h, rtol=1e-10)
    np.testing.assert_allclose(c, ref.last_c, rtol=1e-10)
    # the streaming state is separate and untouched
    assert layer.rnn_get_previous_state() is None
    layer.rnn_clear_previous_state()
    assert layer.tbptt_state is None


def test_window_gradient_treats_carried_state_as_constant():
    """Second window: gradients of loss = sum(out * R) by central differences through the
    reference forward pass started from the carried state (held fixed)."""
    rng = np.random.default_rng(13)
    layer = lstmfast.GravesLSTM(3, 4, dtype=F64, seed=2)
    randomize(layer, rng)
    x = random_input(rng, 2, 3, 9)
    layer.rnn_activate_using_stored_state(x[:, :, :5], training=True)
    h_carried, c_carried = layer.tbptt_state
    out = layer.rnn_activate_using_stored_state(x[:, :, 5:], training=True)
    weights = rng.standard_normal(out.shape)
    layer.backward(weights)
    W, RW, b = layer.W.copy(), layer.RW.copy(), layer.b.copy()
    flat = np.concatenate([W.reshape(-1, order="F"), RW.reshape(-1, order="F"), b])
    np.testing.assert_array_equal(flat, layer.params)

    def score():
        n_w, n_rw = W.size, RW.size
        w = flat[:n_w].reshape(W.shape, order="F")
        rw = flat[n_w:n_w + n_rw].reshape(RW.shape, order="F")
        return float(np.sum(ref_forward(x[:, :, 5:], w, rw, flat[n_w + n_rw:], h0=h_carried,
                                        c0=c_carried).output * weights))

    assert_gradient(score, flat, layer.gradients.copy(), "second truncated-BPTT window")
    # truncated to k = window length: the same gradient; shorter: the reference's truncation
    full = layer.gradients.copy()
    layer.backward(weights, tbptt_length=4)
    np.testing.assert_allclose(layer.gradients, full, rtol=1e-12, atol=1e-14)
    layer.backward(weights, tbptt_length=2)
    ref = ref_forward(x[:, :, 5:], W, RW, b, h0=h_carried, c0=c_carried)
    truncated = ref_backward(ref, weights, tbptt_length=2)
    np.testing.assert_allclose(layer.RW_gradient, truncated.recurrent_weights, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# DropConnect


def test_drop_connect_is_off_by_default():
    rng = np.random.default_rng(0)
    layer = lstmfast.GravesLSTM(3, 4, dtype=F64, seed=0)
    x = random_input(rng, 2, 3, 4)
    np.testing.assert_array_equal(layer.forward(x, training=True), layer.forward(x))
    assert layer.drop_connect_mask is None


def test_drop_connect_keeps_weights_with_probability_p_without_rescaling():
    rng = np.random.default_rng(1)
    p = 0.7
    layer = lstmfast.GravesLSTM(40, 25, dtype=F64, seed=17, drop_connect=p)
    randomize(layer, rng, scale=0.1)
    x = random_input(rng, 3, 40, 5)
    out = layer.forward(x, training=True)
    keep = layer.drop_connect_mask
    assert keep.shape == layer.W.shape and set(np.unique(keep)) <= {0.0, 1.0}
    assert abs(keep.mean() - p) < 0.02  # 4000 weights
    # non-inverted: the kept weights are used as they are
    ref = ref_forward(x, layer.W * keep, layer.RW, layer.b)
    np.testing.assert_allclose(out, ref.output, rtol=1e-10, atol=1e-12)
    # the gradient is the exact one with respect to the stored weights (zero where dropped)
    eps = rng.standard_normal(out.shape)
    dx = layer.backward(eps)
    ref_grads = ref_backward(ref, eps)
    np.testing.assert_allclose(layer.W_gradient, ref_grads.input_weights * keep, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, ref_grads.input, rtol=1e-10, atol=1e-12)
    assert np.all(layer.W_gradient[keep == 0] == 0)
    # inference is unaffected; a new training pass draws a new mask
    np.testing.assert_allclose(layer.forward(x), single_layer_reference(layer, x).output, rtol=1e-10)
    layer.forward(x, training=True)
    assert not np.array_equal(layer.drop_connect_mask, keep)
    # reproducible with the seed
    twin = lstmfast.GravesLSTM(40, 25, dtype=F64, seed=17, drop_connect=p)
    twin.params = layer.params
    np.testing.assert_array_equal(twin.forward(x, training=True), out)
    np.testing.assert_array_equal(twin.drop_connect_mask, keep)


# ----------------------------------------------------------------------------------------------
# memory report


@pytest.mark.parametrize("cls, graves, factor", [
    (lstmfast.GravesLSTM, True, 1), (lstmfast.LSTM, False, 1), (lstmfast.GravesBidirectionalLSTM, True, 2)])
def test_memory_report_follows_the_seed_arithmetic(cls, graves, factor):
    n_in, h, steps, mb = 7, 9, 13, 5
    layer = cls(n_in, h, dtype=F32, seed=0)
    report = layer.memory_report(steps, minibatch=mb, updater="adam")
    inference = steps * 4 * h
    cache = steps * 6 * h
    backprop = (9 if graves else 6) * steps * h
    assert report.parameter_size == layer.num_params()
    assert report.updater_state_size == 2 * layer.num_params()
    assert report.working_memory_fixed_inference == 0
    assert report.working_memory_variable_inference == factor * inference
    assert report.working_memory_variable_train["NONE"] == factor * (inference + cache + backprop)
    for mode in ("SINGLE", "HOST", "DEVICE"):
        assert report.working_memory_variable_train[mode] == factor * (inference + backprop)
        assert report.cache_memory_variable[mode] == factor * cache
    assert report.cache_memory_variable["NONE"] == 0
    assert all(v == 0 for v in report.working_memory_fixed_train.values())
    # totals as DL4J's getMemoryBytes adds them up (for mb examples), in bytes of the dtype
    n = layer.num_params()
    n_out = layer.n_out
    expected_train = (n + n + mb * n_out * steps + mb * n_in * steps + 2 * n
                      + mb * factor * (inference + cache + backprop))
    assert report.total_elements("training", "NONE") == expected_train
    assert report.total_bytes("training", "NONE") == 4 * expected_train
    expected_inference = n + mb * n_out * steps + mb * factor * inference
    assert report.total_elements("inference") == expected_inference
    assert report.bytes_per_element == 4
    assert lstmfast.LSTM(3, 4, dtype=F64).memory_report(2).bytes_per_element == 8
    assert layer.memory_report(steps, updater=None).updater_state_size == 0
    assert layer.memory_report(steps, updater=lstmfast.Sgd(0.1, momentum=0.9)).updater_state_size == n


@pytest.mark.parametrize("make, mb, steps", [
    (lambda: lstmfast.GravesLSTM(32, 48, dtype=F32, seed=0), 16, 40),
    (lambda: lstmfast.LSTM(20, 64, dtype=F64, seed=0), 8, 25),
    (lambda: lstmfast.GravesLSTM(64, 32, dtype=F64, seed=0, drop_connect=0.5), 4, 30),
    (lambda: lstmfast.GravesLSTM(300, 16, dtype=F32, seed=0), 2, 50),
    # a wide input and few units: the training forward pass's workspace is the peak
    (lambda: lstmfast.GravesLSTM(1000, 8, dtype=F32, seed=0), 2, 10),
    (lambda: lstmfast.GravesBidirectionalLSTM(24, 32, dtype=F32, seed=0), 8, 30),
    (lambda: lstmfast.Bidirectional(lstmfast.LSTM(16, 40, dtype=F64, seed=0), "concat"), 6, 20),
    (lambda: lstmfast.Bidirectional(lstmfast.LSTM(16, 40, dtype=F32, seed=0), "mul"), 6, 20),
    # large weights, few examples: the copy of the gradients backward may put back counts
    (lambda: lstmfast.GravesBidirectionalLSTM(16, 128, dtype=F64, seed=0), 2, 8),
])
def test_memory_report_allocations_match_tracemalloc(make, mb, steps):
    layer = make()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((mb, layer.n_in, steps)).astype(layer.dtype)
    eps = rng.standard_normal((mb, layer.n_out, steps)).astype(layer.dtype)
    report = layer.memory_report(steps, minibatch=mb)

    def training_pass():
        layer.forward(x, training=True)
        layer.backward(eps)

    training_pass()  # warm up (first-call allocations of NumPy and the module)
    layer._record = None
    fresh = make()
    fresh.params = layer.params

    def fresh_training_pass():
        fresh.forward(x, training=True)
        fresh.backward(eps)

    measured = traced_peak(fresh_training_pass)
    expected = report.allocated_bytes["training"]
    assert abs(measured - expected) <= 0.1 * expected, (measured, expected)
    inference_layer = make()
    measured_inference = traced_peak(lambda: inference_layer.forward(x))
    expected_inference = report.allocated_bytes["inference"]
    assert abs(measured_inference - expected_inference) <= 0.1 * expected_inference, \
        (measured_inference, expected_inference)


# ----------------------------------------------------------------------------------------------
# bad input


def test_constructor_errors_name_the_argument():
    with pytest.raises(ValueError, match="n_in must be a positive integer, got 0"):
        lstmfast.GravesLSTM(0, 3)
    with pytest.raises(TypeError, match="n_out"):
        lstmfast.LSTM(3, 2.5)
    with pytest.raises(TypeError, match="dtype must be float32 or float64, got int32"):
        lstmfast.LSTM(3, 2, dtype=np.int32)
    with pytest.raises(ValueError, match="activation must be one of tanh.*got 'swish'"):
        lstmfast.GravesLSTM(3, 2, activation="swish")
    with pytest.raises(ValueError, match="gate_activation must be one of sigmoid, hardsigmoid; got 'tanh'"):
        lstmfast.GravesLSTM(3, 2, gate_activation="tanh")
    with pytest.raises(ValueError, match="weight_init"):
        lstmfast.GravesLSTM(3, 2, weight_init="orthogonal")
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="drop_connect"):
            lstmfast.GravesLSTM(3, 2, drop_connect=bad)
    with pytest.raises(TypeError, match="seed"):
        lstmfast.LSTM(3, 2, seed="abc")
    with pytest.raises(TypeError, match="GravesLSTM or LSTM"):
        lstmfast.Bidirectional(lstmfast.DenseLayer(3, 2))
    with pytest.raises(ValueError, match="mode must be one of concat, add, mul, average; got 'max'"):
        lstmfast.Bidirectional(lstmfast.LSTM(3, 2), mode="max")
    inner = lstmfast.LSTM(3, 2)
    lstmfast.Bidirectional(inner)
    with pytest.raises(ValueError, match="already belongs"):
        lstmfast.Bidirectional(inner)


def test_pass_errors():
    layer = lstmfast.GravesLSTM(3, 2, dtype=F64, seed=0)
    with pytest.raises(ValueError, match=r"x.shape\[1\] = 4 does not match the layer's nIn = 3"):
        layer.forward(np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match=r"\[minibatch, nIn=3, T\]"):
        layer.forward(np.zeros(3))
    with pytest.raises(ValueError, match="no training forward pass"):
        layer.backward(np.zeros((2, 2, 5)))
    layer.forward(np.zeros((2, 3, 5)))  # inference pass: nothing kept for backward
    with pytest.raises(ValueError, match="no training forward pass"):
        layer.backward(np.zeros((2, 2, 5)))
    layer.forward(np.zeros((2, 3, 5)), training=True)
    with pytest.raises(ValueError, match="epsilon"):
        layer.backward(np.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match="tbptt_length"):
        layer.backward(np.zeros((2, 2, 5)), tbptt_length=0)
    with pytest.raises(ValueError, match="mask"):
        layer.forward(np.zeros((2, 3, 5)), mask=np.ones((2, 4)))
    with pytest.raises(ValueError, match="ts_length"):
        layer.memory_report(0)
