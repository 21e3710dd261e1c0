"""Sequential with per-example lengths (``lengths=`` instead of a mask): each example's score and
gradients are those of the network run on its own truncated sequence, and central differences
agree."""

import numpy as np
import pytest

import lstmfast

from gradcheck import assert_gradient

F64 = np.float64
LENGTHS = np.array([5, 0, 3, 1])


def build(l2=0.0):
    net = lstmfast.Sequential([
        lstmfast.Bidirectional(lstmfast.GravesLSTM(3, 4, dtype=F64, seed=1), mode="concat"),
        lstmfast.LSTM(8, 4, activation="softsign", dtype=F64, seed=2),
        lstmfast.DenseLayer(4, 5, activation="tanh", dtype=F64, seed=3),
        lstmfast.RnnOutputLayer(5, 3, activation="softmax", loss="mcxent", dtype=F64, seed=4),
    ], l2=l2)
    net.params = np.random.default_rng(6).standard_normal(net.params.size) * 0.5
    return net


def one_hot(rng, mb, n, steps):
    y = np.zeros((mb, n, steps))
    idx = rng.integers(0, n, size=(mb, steps))
    for m in range(mb):
        y[m, idx[m], np.arange(steps)] = 1
    return y


def test_each_example_is_its_own_truncated_sequence():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((4, 3, 5))
    y = one_hot(rng, 4, 3, 5)
    x[2, :, 3:] = np.nan                     # padding is never read
    net = build()
    score = net.compute_gradient_and_score(x, y, lengths=LENGTHS)
    gradients = net.gradients.copy()
    input_gradient = net.input_gradient.copy()
    alone = build()
    total_score, total_gradients = 0.0, np.zeros_like(gradients)
    for m, length in enumerate(LENGTHS):
        if length == 0:
            assert np.all(input_gradient[m] == 0)
            continue
        total_score += alone.compute_gradient_and_score(x[m:m + 1, :, :length], y[m:m + 1, :, :length])
        total_gradients += alone.gradients
        np.testing.assert_allclose(input_gradient[m, :, :length], alone.input_gradient[0] / 4,
                                   rtol=1e-10, atol=1e-13)
        assert np.all(input_gradient[m, :, length:] == 0)
    # DL4J's score: summed over the examples, divided by the minibatch size (4)
    assert score == pytest.approx(total_score / 4, rel=1e-12)
    np.testing.assert_allclose(gradients, total_gradients / 4, rtol=1e-10, atol=1e-13)
    assert net.score(x, y, lengths=LENGTHS) == pytest.approx(score, rel=1e-12)


def test_gradients_by_central_differences():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((4, 3, 5))
    y = one_hot(rng, 4, 3, 5)
    net = build(l2=0.1)
    net.compute_gradient_and_score(x, y, lengths=LENGTHS)
    analytic = net.gradients.copy()
    input_gradient = net.input_gradient.copy()

    def score():
        return net.score(x, y, lengths=LENGTHS)

    assert_gradient(score, net.params, analytic, "parameters")
    assert_gradient(score, x, input_gradient, "input")


def test_fit_batch_with_lengths_and_its_refusals():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((4, 3, 5))
    y = one_hot(rng, 4, 3, 5)
    net = build()
    before = net.score(x, y, lengths=LENGTHS)
    for _ in range(5):
        net.fit_batch(x, y, lengths=LENGTHS)
    assert net.score(x, y, lengths=LENGTHS) < before
    with pytest.raises(ValueError, match="mask and lengths"):
        net.output(x, mask=np.ones((4, 5)), lengths=LENGTHS)
    windows = lstmfast.Sequential([lstmfast.LSTM(3, 4, dtype=F64, seed=1),
                                   lstmfast.RnnOutputLayer(4, 3, dtype=F64, seed=2)],
                                  tbptt_forward_length=2, tbptt_backward_length=2)
    with pytest.raises(ValueError, match="lengths with truncated BPTT"):
        windows.fit_batch(x, y, lengths=LENGTHS)
