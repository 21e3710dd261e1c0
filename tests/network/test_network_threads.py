"""A network's calls and the threads: every OpenBLAS copy at one thread inside fit_batch (the
lstmfast team has the cores), the user's settings back afterwards, and the same bits of a trained
network at every team size and every OpenBLAS setting the user may have."""
import numpy as np
import pytest

import lstmfast
from lstmfast import _blas_threads

LIBRARIES = _blas_threads.libraries()


def counts():
    return [lib.get_num_threads() for lib in LIBRARIES]


class _RecordingAdam(lstmfast.Adam):
    """Adam that notes the OpenBLAS thread counts it runs under."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def apply(self, params, gradients):
        self.seen.append(counts())
        super().apply(params, gradients)


def char_model(dtype, seed=3, hidden=48, vocab=11, updater=None):
    """Two LSTM layers and a softmax output, truncated BPTT (the demo's model, small): a shape
    whose passes may use the team (see _shape_uses_team)."""
    seeds = np.random.SeedSequence(seed).generate_state(3)
    layers = [lstmfast.LSTM(vocab, hidden, dtype=dtype, seed=int(seeds[0])),
              lstmfast.LSTM(hidden, hidden, dtype=dtype, seed=int(seeds[1])),
              lstmfast.RnnOutputLayer(hidden, vocab, dtype=dtype, seed=int(seeds[2]))]
    return lstmfast.Sequential(layers, updater=updater or lstmfast.Adam(1e-2),
                               tbptt_forward_length=10)


def char_data(dtype, minibatch=16, vocab=11, steps=25, seed=5):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, vocab, size=(minibatch, steps + 1))
    x = np.zeros((minibatch, vocab, steps), dtype)
    y = np.zeros((minibatch, vocab, steps), dtype)
    for m in range(minibatch):
        x[m, codes[m, :-1], np.arange(steps)] = 1
        y[m, codes[m, 1:], np.arange(steps)] = 1
    return x, y


@pytest.fixture
def threads_restored():
    team = lstmfast.get_num_threads()
    blas = counts()
    yield
    lstmfast.set_num_threads(team)
    for lib, n in zip(LIBRARIES, blas):
        lib.set_num_threads(n)


@pytest.mark.skipif(not LIBRARIES, reason="no OpenBLAS loaded in this process")
def test_fit_batch_runs_with_openblas_at_one_thread_and_restores(threads_restored):
    for lib in LIBRARIES:
        lib.set_num_threads(3)
    lstmfast.set_num_threads(2)
    updater = _RecordingAdam(1e-2)
    net = char_model(np.float32, updater=updater)
    x, y = char_data(np.float32)
    net.fit_batch(x, y)
    assert updater.seen == [[1] * len(LIBRARIES)] * 3        # one update per window
    assert counts() == [3] * len(LIBRARIES)
    net.output(x)
    net.score(x, y)
    assert counts() == [3] * len(LIBRARIES)
    assert _blas_threads.holders() == 0


@pytest.mark.skipif(not LIBRARIES, reason="no OpenBLAS loaded in this process")
def test_a_failing_fit_batch_restores_the_setting(threads_restored):
    for lib in LIBRARIES:
        lib.set_num_threads(3)
    net = char_model(np.float32)
    x, y = char_data(np.float32)
    with pytest.raises(ValueError):
        net.fit_batch(x, y[:, :, :-1])
    assert counts() == [3] * len(LIBRARIES)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_training_gives_the_same_bits_at_every_thread_setting(threads_restored, dtype):
    x, y = char_data(dtype)
    results = {}
    for team in (1, 2):
        for blas in (1, 2):
            lstmfast.set_num_threads(team)
            for lib in LIBRARIES:
                lib.set_num_threads(blas)
            net = char_model(dtype)
            scores = [net.fit_batch(x, y) for _ in range(3)]
            results[team, blas] = (net.params.tobytes(), scores, net.output(x).tobytes())
    first = results[1, 1]
    for key, value in results.items():
        assert value == first, f"team {key[0]}, OpenBLAS {key[1]} differs from team 1, OpenBLAS 1"


def _adam_formula(p, m, v, g, t, lr=0.01, b1=0.9, b2=0.999, eps=1e-8):
    """Adam as written (DL4J's AdamUpdater), in one NumPy expression per quantity."""
    m = b1 * m + (1.0 - b1) * g
    v = b2 * v + (1.0 - b2) * (g * g)
    alpha_t = lr * np.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t)
    return p - float(alpha_t) * m / (np.sqrt(v) + eps), m, v


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("team", [1, 2, 3])
def test_adam_in_parts_gives_the_formulas_bits(threads_restored, dtype, team):
    lstmfast.set_num_threads(team)
    rng = np.random.default_rng(team)
    n = 3 * (1 << 16) + 17                       # parts at 2 and 3 threads, an uneven end
    p = rng.standard_normal(n).astype(dtype)
    expected, m, v = p.copy(), np.zeros(n, dtype), np.zeros(n, dtype)
    adam = lstmfast.Adam(0.01)
    for t in range(1, 4):
        g = rng.standard_normal(n).astype(dtype)
        adam.apply(p, g)
        expected, m, v = _adam_formula(expected, m, v, g, t)
        assert p.tobytes() == expected.tobytes()
        assert adam.m.tobytes() == m.tobytes() and adam.v.tobytes() == v.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows, n_in, n_out", [(1024, 256, 300), (32, 700, 1500)],
                         ids=["parts-of-rows", "parts-of-columns"])
def test_dense_products_in_parts_are_right_and_the_same_at_every_team(threads_restored, dtype, rows,
                                                                      n_in, n_out):
    """A dense layer large enough that its products run in parts on lstmfast's threads (of
    rows, or of columns for a minibatch of 32): the same bits at 1, 2 and 3 threads, and the
    products' values as float64 NumPy gives them."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((rows, n_in)).astype(dtype)
    eps = rng.standard_normal((rows, n_out)).astype(dtype)
    results = []
    for team in (1, 2, 3):
        lstmfast.set_num_threads(team)
        layer = lstmfast.DenseLayer(n_in, n_out, activation="identity", dtype=dtype, seed=4)
        out = layer.forward(x, training=True)
        dx = layer.backward(eps)
        results.append((out.tobytes(), dx.tobytes(), layer.W_gradient.tobytes(),
                        layer.b_gradient.tobytes()))
    assert results[1] == results[0] and results[2] == results[0]
    W = layer.W.astype(np.float64)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out, x.astype(np.float64) @ W + layer.b, **tol)
    np.testing.assert_allclose(dx, eps.astype(np.float64) @ W.T, **tol)
    np.testing.assert_allclose(layer.W_gradient, x.astype(np.float64).T @ eps, **tol)
