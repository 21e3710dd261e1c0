"""The training stack: RnnOutputLayer, DenseLayer, OutputLayer, Sequential, updaters.

Gradient checks of whole networks by central differences in float64 on DL4J's grid
(GradientCheckTests / GradientCheckTestsMasking: T = 8, nIn 7, h 9, nOut 4, minibatch 6; tanh
and softsign; MCXENT + softmax and MSE + identity; edge cases; bidirectional with masks), scores
against NumPy, truncated BPTT against full BPTT and against the streaming path, updaters against
their formulas.
"""

import numpy as np
import pytest

import lstmfast
from lstmfast.layers import UnsupportedOperationError

from gradcheck import assert_gradient
from reference import ref_backward, ref_forward, stable_seed

F64 = np.float64
N_IN, LAYER_SIZE, N_OUT, MINIBATCH, STEPS = 7, 9, 4, 6, 8  # DL4J's grid


def one_hot_labels(rng, mb, n_out, steps):
    labels = np.zeros((mb, n_out, steps))
    idx = rng.integers(0, n_out, size=(mb, steps))
    for m in range(mb):
        labels[m, idx[m], np.arange(steps)] = 1.0
    return labels


def labels_for(loss, rng, mb, n_out, steps):
    if loss == "mcxent":
        return one_hot_labels(rng, mb, n_out, steps)
    return rng.standard_normal((mb, n_out, steps))


def randomize_net(net, rng, scale=0.5):
    net.params = rng.standard_normal(net.num_params()) * scale


def check_network(net, x, y, mask=None, label_mask=None, what="", check_input=True):
    """Gradients of all parameters and of the input against central differences."""
    net.compute_gradient_and_score(x, y, mask, label_mask)
    analytic = net.gradients.copy()
    input_gradient = net.input_gradient.copy()

    def score():
        return net.score(x, y, mask, label_mask)

    assert_gradient(score, net.params, analytic, f"{what} parameters")
    if check_input:
        assert_gradient(score, x, input_gradient, f"{what} input")


# ----------------------------------------------------------------------------------------------
# gradient checks


@pytest.mark.parametrize("layer_cls", [lstmfast.GravesLSTM, lstmfast.LSTM])
@pytest.mark.parametrize("activation", ["tanh", "softsign"])
@pytest.mark.parametrize("output_activation, loss", [("softmax", "mcxent"), ("identity", "mse")])
def test_gradient_check_dl4j_grid(layer_cls, activation, output_activation, loss):
    seed = stable_seed(layer_cls.__name__, activation, loss)
    rng = np.random.default_rng(seed)
    l2 = 0.4 if activation == "softsign" else 0.0
    net = lstmfast.Sequential([
        layer_cls(N_IN, LAYER_SIZE, activation=activation, dtype=F64, seed=1),
        lstmfast.RnnOutputLayer(LAYER_SIZE, N_OUT, activation=output_activation, loss=loss, dtype=F64, seed=2),
    ], l2=l2, l2_bias=0.1 * l2)
    randomize_net(net, rng)
    x = rng.standard_normal((MINIBATCH, N_IN, STEPS))
    y = labels_for(loss, rng, MINIBATCH, N_OUT, STEPS)
    check_network(net, x, y, what=f"{layer_cls.__name__}/{activation}/{loss}/l2={l2} (seed {seed})")


@pytest.mark.parametrize("layer_cls", [lstmfast.GravesLSTM, lstmfast.LSTM])
@pytest.mark.parametrize("steps, minibatch", [(1, 7), (5, 1), (1, 1)])
def test_gradient_check_edge_cases(layer_cls, steps, minibatch):
    rng = np.random.default_rng(steps * 10 + minibatch)
    net = lstmfast.Sequential([
        layer_cls(N_IN, LAYER_SIZE, dtype=F64, seed=3),
        lstmfast.RnnOutputLayer(LAYER_SIZE, N_OUT, dtype=F64, seed=4),
    ])
    randomize_net(net, rng)
    x = rng.standard_normal((minibatch, N_IN, steps))
    y = one_hot_labels(rng, minibatch, N_OUT, steps)
    check_network(net, x, y, what=f"{layer_cls.__name__} T={steps} mb={minibatch}")


MASKS = {
    "trailing": np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=F64),
    "leading": np.array([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]], dtype=F64),
}


@pytest.mark.parametrize("mask_name", sorted(MASKS))
@pytest.mark.parametrize("kind", ["graves", "concat", "add", "mul", "average"])
def test_gradient_check_bidirectional_with_masks(kind, mask_name):
    rng = np.random.default_rng(len(kind) * 7 + len(mask_name))
    mask = MASKS[mask_name]
    n_in, size, n_out = 3, 3, 2
    if kind == "graves":
        layers = [lstmfast.GravesBidirectionalLSTM(n_in, size, dtype=F64, seed=5),
                  lstmfast.GravesBidirectionalLSTM(size, size, activation="softsign", dtype=F64, seed=6)]
    else:
        layers = [lstmfast.Bidirectional(lstmfast.LSTM(n_in, size, dtype=F64, seed=5), mode=kind)]
    layers.append(lstmfast.RnnOutputLayer(layers[-1].n_out, n_out, dtype=F64, seed=7))
    net = lstmfast.Sequential(layers)
    randomize_net(net, rng)
    x = rng.standard_normal((2, n_in, 5))
    y = one_hot_labels(rng, 2, n_out, 5)
    check_network(net, x, y, mask=mask, what=f"{kind} mask {mask_name}")
    # masked steps get no input gradient
    assert np.all(net.input_gradient.transpose(0, 2, 1)[mask == 0] == 0)


def test_gradient_check_deeper_network_with_dense_layer_mask_and_l2():
    rng = np.random.default_rng(31)
    net = lstmfast.Sequential([
        lstmfast.GravesLSTM(4, 5, gate_activation="hardsigmoid", dtype=F64, seed=1),
        lstmfast.LSTM(5, 4, activation="softsign", dtype=F64, seed=2),
        lstmfast.DenseLayer(4, 6, activation="tanh", dtype=F64, seed=3),
        lstmfast.RnnOutputLayer(6, 3, activation="sigmoid", loss="xent", dtype=F64, seed=4),
    ], l2=0.3, l2_bias=0.05)
    randomize_net(net, rng)
    x = rng.standard_normal((3, 4, 6))
    y = (rng.random((3, 3, 6)) < 0.5).astype(F64)
    mask = np.ones((3, 6))
    mask[0, 4:] = 0
    mask[2, :2] = 0
    check_network(net, x, y, mask=mask, what="deep network")


@pytest.mark.parametrize("activation, loss", [("softmax", "mcxent"), ("identity", "mse"),
                                              ("tanh", "l2"), ("sigmoid", "mcxent")])
def test_gradient_check_feed_forward_network(activation, loss):
    rng = np.random.default_rng(41)
    net = lstmfast.Sequential([
        lstmfast.DenseLayer(5, 6, activation="elu", dtype=F64, seed=1),
        lstmfast.DenseLayer(6, 4, activation="softplus", dtype=F64, seed=2),
        lstmfast.OutputLayer(4, 3, activation=activation, loss=loss, dtype=F64, seed=3),
    ], l2=0.2)
    randomize_net(net, rng)
    x = rng.standard_normal((7, 5))
    if loss == "mcxent" and activation == "softmax":
        y = np.eye(3)[rng.integers(0, 3, size=7)]
    elif activation == "sigmoid":
        y = (rng.random((7, 3)) < 0.5).astype(F64)
    else:
        y = rng.standard_normal((7, 3))
    label_mask = np.array([1, 1, 0, 1, 1, 1, 0], dtype=F64)
    check_network(net, x, y, label_mask=label_mask, what=f"feed-forward {activation}/{loss}")
    assert np.all(net.input_gradient[label_mask == 0] == 0)


# ----------------------------------------------------------------------------------------------
# scores (DL4J's conventions) against NumPy


def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def test_scores_follow_dl4j_conventions():
    rng = np.random.default_rng(2)
    lstm = lstmfast.GravesLSTM(3, 4, dtype=F64, seed=1)
    out = lstmfast.RnnOutputLayer(4, 5, dtype=F64, seed=2)
    net = lstmfast.Sequential([lstm, out], l2=0.3, l2_bias=0.1)
    randomize_net(net, rng)
    x = rng.standard_normal((2, 3, 6))
    y = one_hot_labels(rng, 2, 5, 6)
    label_mask = np.ones((2, 6))
    label_mask[1, 3:] = 0
    hidden = ref_forward(x, lstm.W, lstm.RW, lstm.b).output
    z = np.einsum("mit,io->mot", hidden, out.W) + out.b[None, :, None]
    log_p = _log_softmax(z)
    data_loss = -(y * log_p).sum(axis=1) * label_mask  # [mb, T]
    weights = [lstm.W, lstm.RW, out.W]
    biases = [lstm.b, out.b]
    l2_term = 0.5 * 0.3 * sum((w ** 2).sum() for w in weights) + 0.5 * 0.1 * sum((b ** 2).sum() for b in biases)
    # MCXENT: sum over examples and time steps, divided by the minibatch size (not by T)
    expected = data_loss.sum() / 2 + l2_term
    assert net.score(x, y, label_mask=label_mask) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(net.output(x), np.exp(log_p), rtol=1e-12)

    # MSE: squared error averaged over the outputs, summed over steps, / minibatch
    mse_out = lstmfast.RnnOutputLayer(4, 5, activation="identity", loss="mse", dtype=F64, seed=3)
    mse_net = lstmfast.Sequential([lstmfast.GravesLSTM(3, 4, dtype=F64, seed=1), mse_out])
    mse_net.params = np.concatenate([lstm.params, rng.standard_normal(mse_out.num_params())])
    targets = rng.standard_normal((2, 5, 6))
    prediction = np.einsum("mit,io->mot", hidden, mse_out.W) + mse_out.b[None, :, None]
    expected_mse = (((prediction - targets) ** 2).mean(axis=1) * label_mask).sum() / 2
    assert mse_net.score(x, targets, label_mask=label_mask) == pytest.approx(expected_mse, rel=1e-12)
    # the feature mask serves as label mask when no label mask is given
    assert mse_net.score(x, targets, mask=label_mask) == pytest.approx(
        mse_net.score(x, targets, mask=label_mask, label_mask=label_mask), rel=1e-15)


@pytest.mark.parametrize("activation, loss", [("softmax", "mcxent"), ("identity", "mse"),
                                              ("sigmoid", "xent")])
@pytest.mark.parametrize("masked", [False, True])
def test_score_and_backward_is_the_two_calls_in_one(activation, loss, masked):
    """What a training step asks of the output layer (Sequential), the labels laid out once:
    the same score, dL/dx and gradients, bit for bit, as compute_score then
    backward_from_labels."""
    rng = np.random.default_rng(4)
    layer = lstmfast.RnnOutputLayer(4, 5, activation=activation, loss=loss, dtype=np.float32, seed=3)
    x = rng.standard_normal((3, 4, 6)).astype(np.float32)
    y = one_hot_labels(rng, 3, 5, 6).astype(np.float32)
    mask = (rng.random((3, 6)) > 0.3).astype(np.float32) if masked else None
    layer.forward(x, training=True)
    score, epsilon = layer.score_and_backward(y, mask)
    gradients = layer.gradients.copy()
    layer.gradients[:] = np.nan
    assert score == layer.compute_score(y, mask)
    np.testing.assert_array_equal(epsilon, layer.backward_from_labels(y, mask))
    np.testing.assert_array_equal(gradients, layer.gradients)
    with pytest.raises(ValueError, match=r"score_and_backward: labels must have shape \(3, 5, 6\)"):
        layer.score_and_backward(y[:, :, :5])


def test_an_output_layer_with_its_own_loss_is_trained_on_it():
    """A subclass that defines compute_score and backward_from_labels (a loss of its own) is
    scored and back-propagated through them by Sequential, not through the softmax path."""
    calls = []

    class HalfScore(lstmfast.RnnOutputLayer):
        def compute_score(self, labels, label_mask=None):
            calls.append("score")
            return 0.5 * super().compute_score(labels, label_mask)

        def backward_from_labels(self, labels, label_mask=None):
            calls.append("backward")
            return super().backward_from_labels(labels, label_mask)

    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 4))
    y = one_hot_labels(rng, 2, 5, 4)
    plain = lstmfast.Sequential([lstmfast.LSTM(3, 4, dtype=F64, seed=1),
                                 lstmfast.RnnOutputLayer(4, 5, dtype=F64, seed=2)])
    half = lstmfast.Sequential([lstmfast.LSTM(3, 4, dtype=F64, seed=1),
                                HalfScore(4, 5, dtype=F64, seed=2)])
    full_score = plain.compute_gradient_and_score(x, y)
    assert half.compute_gradient_and_score(x, y) == pytest.approx(0.5 * full_score, rel=1e-15)
    assert calls == ["score", "backward"]
    np.testing.assert_array_equal(half.gradients, plain.gradients)


@pytest.mark.parametrize("two_layers", [False, True])
def test_masked_length_five_equals_length_four_prefix(two_layers):
    rng = np.random.default_rng(17)

    def build():
        layers = [lstmfast.GravesLSTM(3, 4, dtype=F64, seed=1)]
        if two_layers:
            layers.append(lstmfast.LSTM(4, 4, activation="softsign", dtype=F64, seed=2))
        layers.append(lstmfast.RnnOutputLayer(4, 3, dtype=F64, seed=3))
        return lstmfast.Sequential(layers, l2=0.1)

    padded, prefix = build(), build()
    randomize_net(padded, rng)
    prefix.params = padded.params
    x = rng.standard_normal((4, 3, 5))
    y = one_hot_labels(rng, 4, 3, 5)
    mask = np.ones((4, 5))
    mask[:, 4] = 0
    score_padded = padded.compute_gradient_and_score(x, y, mask=mask, label_mask=mask)
    score_prefix = prefix.compute_gradient_and_score(x[:, :, :4], y[:, :, :4])
    assert score_padded == pytest.approx(score_prefix, rel=1e-12)
    assert padded.score(x, y, mask=mask, label_mask=mask) == pytest.approx(score_prefix, rel=1e-12)
    np.testing.assert_allclose(padded.gradients, prefix.gradients, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(padded.input_gradient[:, :, :4], prefix.input_gradient, rtol=1e-10, atol=1e-13)
    assert np.all(padded.input_gradient[:, :, 4] == 0)


# ----------------------------------------------------------------------------------------------
# truncated BPTT


def _tbptt_pair(window_forward, window_backward, layer_cls=lstmfast.GravesLSTM, learning_rate=0.1):
    def build(**tbptt):
        return lstmfast.Sequential([
            layer_cls(3, 5, dtype=F64, seed=1),
            lstmfast.LSTM(5, 4, dtype=F64, seed=2),
            lstmfast.RnnOutputLayer(4, 3, dtype=F64, seed=3),
        ], updater=lstmfast.Sgd(learning_rate), l2=0.05, **tbptt)

    full = build()
    truncated = build(tbptt_forward_length=window_forward, tbptt_backward_length=window_backward)
    return full, truncated


@pytest.mark.parametrize("forward_length, backward_length", [(10, 10), (10, 25), (12, 12)])
def test_tbptt_covering_the_series_equals_full_bptt(forward_length, backward_length):
    rng = np.random.default_rng(5)
    full, truncated = _tbptt_pair(forward_length, backward_length)
    randomize_net(full, rng)
    truncated.params = full.params
    x = rng.standard_normal((3, 3, 10))
    y = one_hot_labels(rng, 3, 3, 10)
    mask = np.ones((3, 10))
    mask[1, 7:] = 0
    score_full = full.fit_batch(x, y, mask=mask)
    score_truncated = truncated.fit_batch(x, y, mask=mask)
    assert score_truncated == pytest.approx(score_full, rel=1e-12)
    np.testing.assert_allclose(truncated.gradients, full.gradients, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(truncated.params, full.params, rtol=1e-12, atol=1e-14)
    assert truncated.last_window_scores == [score_truncated]
    # state is cleared after the minibatch
    for layer in truncated.layers[:2]:
        assert layer.tbptt_state is None and layer.rnn_get_previous_state() is None


def test_tbptt_windows_carry_state_and_stop_gradients_at_window_boundaries():
    """With learning rate 0 the parameters stay put, so each window's score and the last
    window's gradient can be recomputed independently: the state carried into a window is the
    streaming state after the steps before it, and the gradient is that of the window's score
    with that state held fixed (central differences through the streaming path)."""
    rng = np.random.default_rng(6)
    _, net = _tbptt_pair(4, 4, learning_rate=0.0)
    randomize_net(net, rng)
    x = rng.standard_normal((2, 3, 11))
    y = one_hot_labels(rng, 2, 3, 11)
    params_before = net.params.copy()
    last_score = net.fit_batch(x, y)
    np.testing.assert_array_equal(net.params, params_before)
    analytic = net.gradients.copy()
    scores = net.last_window_scores
    assert len(scores) == 3 and last_score == scores[-1]

    recurrent = net.layers[:2]
    out_layer = net.layers[2]

    def window_score(start, stop, states):
        net.rnn_clear_previous_state()
        if states is not None:
            for layer, (h, c) in zip(recurrent, states):
                layer.rnn_set_previous_state(h, c)
        probabilities = net.rnn_time_step(x[:, :, start:stop])
        data = -(y[:, :, start:stop] * np.log(probabilities)).sum() / 2
        weights = [recurrent[0].W, recurrent[0].RW, recurrent[1].W, recurrent[1].RW, out_layer.W]
        return data + 0.5 * 0.05 * sum((w ** 2).sum() for w in weights)

    def states_after(steps):
        net.rnn_clear_previous_state()
        net.rnn_time_step(x[:, :, :steps])
        return [layer.rnn_get_previous_state() for layer in recurrent]

    for k, (start, stop) in enumerate([(0, 4), (4, 8), (8, 11)]):
        states = None if start == 0 else states_after(start)
        assert scores[k] == pytest.approx(window_score(start, stop, states), rel=1e-10)
    carried = states_after(8)
    assert_gradient(lambda: window_score(8, 11, carried), net.params, analytic, "last TBPTT window")


def test_tbptt_backward_length_shorter_than_window():
    """A one-layer network: the LSTM's gradient in the last window is the reference's truncated
    backward pass (tbptt_length = 2) from the carried state, with the output layer's epsilon."""
    rng = np.random.default_rng(8)
    lstm = lstmfast.GravesLSTM(3, 4, dtype=F64, seed=1)
    out = lstmfast.RnnOutputLayer(4, 2, dtype=F64, seed=2)
    net = lstmfast.Sequential([lstm, out], updater=lstmfast.Sgd(0.0), tbptt_forward_length=5,
                              tbptt_backward_length=2)
    randomize_net(net, rng)
    x = rng.standard_normal((2, 3, 10))
    y = one_hot_labels(rng, 2, 2, 10)
    net.fit_batch(x, y)
    first = ref_forward(x[:, :, :5], lstm.W, lstm.RW, lstm.b)
    second = ref_forward(x[:, :, 5:], lstm.W, lstm.RW, lstm.b, h0=first.last_h, c0=first.last_c)
    z = np.einsum("mit,io->mot", second.output, out.W) + out.b[None, :, None]
    probabilities = np.exp(_log_softmax(z))
    epsilon = np.einsum("mot,io->mit", (probabilities - y[:, :, 5:]) / 2, out.W)
    expected = ref_backward(second, epsilon, tbptt_length=2)
    np.testing.assert_allclose(lstm.W_gradient, expected.input_weights, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(lstm.RW_gradient, expected.recurrent_weights, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(lstm.b_gradient, expected.bias.reshape(-1), rtol=1e-10, atol=1e-13)


def test_tbptt_refuses_bidirectional_layers():
    net = lstmfast.Sequential([lstmfast.GravesBidirectionalLSTM(3, 4, seed=0), lstmfast.RnnOutputLayer(4, 2, seed=0)],
                              tbptt_forward_length=3)
    with pytest.raises(UnsupportedOperationError, match="bidirectional"):
        net.fit_batch(np.zeros((2, 3, 6)), np.zeros((2, 2, 6)))


# ----------------------------------------------------------------------------------------------
# flat vectors, streaming, updaters, training


def test_flat_parameter_vector_in_dl4j_order_with_views():
    layers = [lstmfast.GravesLSTM(3, 4, seed=1), lstmfast.DenseLayer(4, 5, seed=2),
              lstmfast.RnnOutputLayer(5, 2, seed=3)]
    values = [layer.params.copy() for layer in layers]
    net = lstmfast.Sequential(layers)
    np.testing.assert_array_equal(net.params, np.concatenate(values))
    assert list(net.param_table()) == ["0_W", "0_RW", "0_b", "1_W", "1_b", "2_W", "2_b"]
    for layer in layers:
        assert np.shares_memory(layer.params, net.params)
        assert np.shares_memory(layer.gradients, net.gradients)
    assert layers[2].W.shape == (5, 2) and layers[2].b.shape == (2,)
    offset = layers[0].num_params() + layers[1].num_params()
    assert layers[2].W[3, 1] == net.params[offset + 3 + 1 * 5]
    net.params = np.arange(net.num_params())
    assert layers[0].W[0, 0] == 0 and layers[2].b[-1] == net.num_params() - 1
    with pytest.raises(ValueError, match=f"{net.num_params()} values"):
        net.params = np.zeros(3)
    # the updater works in place: the layers see the update
    net.params = np.random.default_rng(2).standard_normal(net.num_params()) * 0.3
    params, W_before = net.params, layers[0].W.copy()
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    net.fit_batch(x, one_hot_labels(np.random.default_rng(1), 2, 2, 4))
    assert net.params is params
    np.testing.assert_allclose(layers[0].W, W_before - 0.1 * layers[0].W_gradient, rtol=1e-6)
    assert not np.array_equal(layers[0].W, W_before)


def test_network_streaming_equals_output():
    rng = np.random.default_rng(9)
    net = lstmfast.Sequential([lstmfast.GravesLSTM(3, 5, dtype=F64, seed=1), lstmfast.LSTM(5, 4, dtype=F64, seed=2),
                               lstmfast.DenseLayer(4, 4, activation="relu", dtype=F64, seed=3),
                               lstmfast.RnnOutputLayer(4, 2, dtype=F64, seed=4)])
    x = rng.standard_normal((3, 3, 12))
    whole = net.output(x)
    for step in (1, 2, 3, 4, 6, 12):
        net.rnn_clear_previous_state()
        if step == 1:
            parts = [net.rnn_time_step(x[:, :, t])[:, :, None] for t in range(12)]
        else:
            parts = [net.rnn_time_step(x[:, :, s:s + step]) for s in range(0, 12, step)]
        np.testing.assert_allclose(np.concatenate(parts, axis=2), whole, rtol=1e-10, atol=1e-13)
    assert net.rnn_time_step(x[:, :, 0]).shape == (3, 2)
    with pytest.raises(ValueError, match="rnn_clear_previous_state"):
        net.rnn_time_step(x[:2, :, 0])


def test_updaters_follow_their_formulas():
    rng = np.random.default_rng(3)
    start = rng.standard_normal(20)
    grads = [rng.standard_normal(20) for _ in range(4)]

    def run(updater):
        p = start.copy()
        for g in grads:
            updater.apply(p, g.copy())
        return p

    np.testing.assert_allclose(run(lstmfast.Sgd(0.1)), start - 0.1 * sum(grads), rtol=1e-12)
    v = np.zeros(20)
    p = start.copy()
    for g in grads:
        v = 0.9 * v - 0.05 * g
        p = p + v
    np.testing.assert_allclose(run(lstmfast.Sgd(0.05, momentum=0.9)), p, rtol=1e-12)
    v = np.zeros(20)
    p = start.copy()
    for g in grads:  # DL4J's Nesterovs
        v_prev = v
        v = 0.9 * v - 0.05 * g
        p = p - (0.9 * v_prev - (1 + 0.9) * v)
    np.testing.assert_allclose(run(lstmfast.Sgd(0.05, momentum=0.9, nesterov=True)), p, rtol=1e-12)
    m = np.zeros(20)
    s = np.zeros(20)
    p = start.copy()
    for t, g in enumerate(grads, start=1):
        m = 0.9 * m + 0.1 * g
        s = 0.999 * s + 0.001 * g * g
        alpha = 0.01 * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        p = p - alpha * m / (np.sqrt(s) + 1e-8)
    np.testing.assert_allclose(run(lstmfast.Adam(0.01)), p, rtol=1e-12)
    with pytest.raises(ValueError, match="learning_rate"):
        lstmfast.Adam(0)
    with pytest.raises(ValueError, match="momentum"):
        lstmfast.Sgd(0.1, momentum=1.5)


@pytest.mark.parametrize("updater", [lstmfast.Adam(0.02), lstmfast.Sgd(0.5, momentum=0.9)])
def test_training_learns_a_sequence_task(updater):
    """Predict the sign of the input two steps back: needs memory, learnable in a few dozen steps."""
    rng = np.random.default_rng(0)
    net = lstmfast.Sequential([lstmfast.LSTM(1, 8, seed=1), lstmfast.RnnOutputLayer(8, 2, seed=2)],
                              updater=updater, tbptt_forward_length=6)
    x = rng.standard_normal((32, 1, 12)).astype(np.float32)
    target = np.zeros((32, 2, 12), dtype=np.float32)
    positive = np.zeros((32, 12), dtype=bool)
    positive[:, 2:] = x[:, 0, :-2] > 0
    target[:, 1] = positive
    target[:, 0] = ~positive
    initial = net.score(x, target)
    for _ in range(150):
        net.fit_batch(x, target)
    assert net.score(x, target) < 0.5 * initial


# ----------------------------------------------------------------------------------------------
# bad input


def test_network_errors():
    with pytest.raises(ValueError, match=r"layer 1 .* has n_in = 5 but layer 0 .* has n_out = 4"):
        lstmfast.Sequential([lstmfast.LSTM(3, 4), lstmfast.RnnOutputLayer(5, 2)])
    with pytest.raises(TypeError, match="same dtype"):
        lstmfast.Sequential([lstmfast.LSTM(3, 4, dtype=np.float32), lstmfast.RnnOutputLayer(4, 2, dtype=F64)])
    with pytest.raises(ValueError, match="output layers must come last"):
        lstmfast.Sequential([lstmfast.OutputLayer(3, 3), lstmfast.DenseLayer(3, 2)])
    with pytest.raises(ValueError, match="at least one layer"):
        lstmfast.Sequential([])
    with pytest.raises(ValueError, match="tbptt_backward_length needs tbptt_forward_length"):
        lstmfast.Sequential([lstmfast.LSTM(3, 4)], tbptt_backward_length=3)
    with pytest.raises(ValueError, match="mcxent"):
        lstmfast.RnnOutputLayer(3, 2, activation="identity", loss="mcxent")
    with pytest.raises(ValueError, match="loss must be one of"):
        lstmfast.RnnOutputLayer(3, 2, loss="hinge")
    shared = lstmfast.LSTM(3, 4)
    lstmfast.Sequential([shared])
    with pytest.raises(ValueError, match="already belongs"):
        lstmfast.Sequential([shared])
    twice = lstmfast.LSTM(4, 4)
    with pytest.raises(ValueError, match=r"layer 2 is layer 1 again .*one place in a Sequential"):
        lstmfast.Sequential([lstmfast.LSTM(3, 4), twice, twice, lstmfast.RnnOutputLayer(4, 2)])
    assert twice.owner is None            # refused before any layer was bound
    no_loss = lstmfast.Sequential([lstmfast.LSTM(3, 4)])
    with pytest.raises(ValueError, match="no loss"):
        no_loss.score(np.zeros((1, 3, 2)), np.zeros((1, 4, 2)))
    net = lstmfast.Sequential([lstmfast.LSTM(3, 4), lstmfast.RnnOutputLayer(4, 2)])
    with pytest.raises(ValueError, match=r"labels must have shape \(2, 2, 5\); got \(2, 3, 5\)"):
        net.score(np.zeros((2, 3, 5)), np.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match=r"label_mask must have shape \(2, 5\)"):
        net.score(np.zeros((2, 3, 5)), np.zeros((2, 2, 5)), label_mask=np.ones((2, 4)))
    with pytest.raises(ValueError, match="RnnOutputLayer takes sequences"):
        lstmfast.Sequential([lstmfast.DenseLayer(3, 4), lstmfast.RnnOutputLayer(4, 2)]).output(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="OutputLayer takes 2-D data"):
        lstmfast.Sequential([lstmfast.OutputLayer(3, 2)]).output(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="truncated BPTT needs sequences"):
        lstmfast.Sequential([lstmfast.DenseLayer(3, 4), lstmfast.OutputLayer(4, 2)],
                            tbptt_forward_length=2).fit_batch(np.zeros((2, 3)), np.zeros((2, 2)))
