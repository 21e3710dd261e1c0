"""At two threads a Sequential runs two consecutive one-direction LSTM layers as a wavefront:
each layer's pass on one thread, the second layer a step behind the first (network._wavefront).
Training and inference give the bits of one thread; an error in either layer is raised, and the
network computes the same bits on its next call."""
import sys
import threading

import numpy as np
import pytest

import lstmfast
from lstmfast import network


@pytest.fixture
def wavefronts(monkeypatch):
    """Counts the wavefronts run (which still run)."""
    calls = []
    real = network._wavefront
    monkeypatch.setattr(network, "_wavefront", lambda *args: calls.append(1) or real(*args))
    return calls


def _net(dtype, kinds=("lstm", "lstm"), tbptt=None):
    # (passes of at least functional.SIDE_BY_SIDE_FLOPS each: (16, 24 or 64, 64, 20))
    layers, n_in = [], 24
    for i, kind in enumerate(kinds):
        cls = lstmfast.GravesLSTM if kind == "graves" else lstmfast.LSTM
        layers.append(cls(n_in, 64, dtype=dtype, seed=10 + i))
        n_in = 64
    layers.append(lstmfast.RnnOutputLayer(n_in, 12, activation="softmax", loss="mcxent",
                                          dtype=dtype, seed=30))
    return lstmfast.Sequential(layers, updater=lstmfast.Adam(learning_rate=0.01),
                               tbptt_forward_length=tbptt, tbptt_backward_length=tbptt)


def _data(dtype, steps=40, seed=5):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((16, 24, steps)).astype(dtype)
    y = np.zeros((16, 12, steps), dtype=dtype)
    y[np.arange(16)[:, None], rng.integers(0, 12, (16, steps)), np.arange(steps)[None, :]] = 1
    mask = np.ones((16, steps), dtype=dtype)
    mask[3, 25:] = 0
    mask[9, 4:] = 0
    return x, y, mask


def _run(net, x, y, mask):
    """Two truncated-BPTT training steps (windows of 20), then inference and a full gradient."""
    scores = [net.fit_batch(x, y, mask) for _ in range(2)]
    out = net.output(x, mask)
    net.tbptt_forward_length = net.tbptt_backward_length = None
    score = net.compute_gradient_and_score(x, y, mask)
    return scores + [score], [net.params.copy(), out, net.gradients.copy()]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kinds", [("lstm", "lstm"), ("graves", "lstm", "graves")])
def test_wavefront_gives_the_bits_of_one_thread(two_threads, wavefronts, dtype, kinds):
    x, y, mask = _data(dtype)
    previous = lstmfast.set_num_threads(1)
    try:
        want_scores, want = _run(_net(dtype, kinds, tbptt=20), x, y, mask)
    finally:
        lstmfast.set_num_threads(previous)
    assert not wavefronts
    got_scores, got = _run(_net(dtype, kinds, tbptt=20), x, y, mask)
    # two windows in each of two training steps, inference, one full pass: 6 wavefronts
    assert len(wavefronts) == 6
    assert got_scores == want_scores
    for expected, actual in zip(want, got):
        np.testing.assert_array_equal(actual, expected)


def test_small_passes_and_reverse_layers_run_one_after_the_other(two_threads, wavefronts):
    x, y, mask = _data(np.float32, steps=4)           # under SIDE_BY_SIDE_FLOPS
    net = _net(np.float32)
    net.output(x, mask)
    assert not wavefronts
    net = lstmfast.Sequential([lstmfast.LSTM(24, 64, seed=1), lstmfast.LSTM(64, 64, seed=2, reverse=True),
                               lstmfast.RnnOutputLayer(64, 12, seed=3)])
    net.output(_data(np.float32)[0])
    assert not wavefronts


def test_error_in_the_second_layer_is_raised_and_the_next_call_is_right(two_threads, wavefronts):
    """The second layer is held by another thread: its call is refused (ConcurrentUseError)
    while the first layer's pass completes beside it. Then the network works as before."""
    x, _, mask = _data(np.float32)
    net = _net(np.float32)
    want = net.output(x, mask)
    held, release = threading.Event(), threading.Event()

    def hold():
        with lstmfast._guard.in_use_lock(net.layers[1]):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    try:
        with pytest.raises(lstmfast.layers.ConcurrentUseError):
            net.output(x, mask)
    finally:
        release.set()
        holder.join(10)
    np.testing.assert_array_equal(net.output(x, mask), want)
    assert len(wavefronts) == 3


def test_interrupt_as_the_first_layer_starts_stops_the_second(two_threads, wavefronts):
    """Ctrl-C can raise as the first layer's call begins, before any of its lines has run (a
    signal handled on entry to a Python function): the second layer's pass, waiting for the
    first's steps, must stop too, and the interrupt reach the caller."""
    x, _, mask = _data(np.float32)
    net = _net(np.float32)
    want = net.output(x, mask)
    outcome = []

    def interrupt_on_entry(frame, event, arg):
        # the first call a pair of calls starts on this thread
        if event == "call" and frame.f_back is not None \
                and frame.f_back.f_code.co_name == "_side_by_side":
            sys.setprofile(None)
            raise KeyboardInterrupt

    def run():
        sys.setprofile(interrupt_on_entry)
        try:
            net.output(x, mask)
            outcome.append("returned")
        except KeyboardInterrupt:
            outcome.append("interrupted")
        finally:
            sys.setprofile(None)

    caller = threading.Thread(target=run, daemon=True)
    caller.start()
    caller.join(30)
    assert not caller.is_alive(), "the second layer's pass waits for ever"
    assert outcome == ["interrupted"]
    np.testing.assert_array_equal(net.output(x, mask), want)
    assert len(wavefronts) == 3
