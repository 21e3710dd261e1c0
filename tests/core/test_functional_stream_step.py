"""The functional API's way to the kernels' streaming step (the layers' rnn_time_step uses it):
bind_stream_step advances a bound state in place by one step, giving lstm_forward's numbers to
the bit; problem_size_ok is the kernels' verdict on a size."""
import threading

import numpy as np
import pytest

import lstmfast
from lstmfast import functional


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("peepholes", [False, True])
def test_bound_step_gives_lstm_forward_bits(dtype, peepholes):
    rng = np.random.default_rng(4)
    mb, n_in, h, steps = 3, 5, 7, 6
    W = np.asfortranarray(rng.standard_normal((n_in, 4 * h)) * 0.4, dtype)
    RW = np.asfortranarray(rng.standard_normal((h, 4 * h + (3 if peepholes else 0))) * 0.4,
                           dtype)
    b = (rng.standard_normal(4 * h) * 0.3).astype(dtype)
    xs = rng.standard_normal((steps, mb, n_in)).astype(dtype)
    h_state = np.zeros((mb, h), dtype, order="F")
    c_state = np.zeros((mb, h), dtype, order="F")
    lock = threading.RLock()
    step = functional.bind_stream_step(lock, xs[0], W, RW, b, h_state, c_state,
                                       activation="softsign", gate_activation="hardsigmoid")
    h_ref = c_ref = None
    for x in xs:
        got = step(x)
        ref = lstmfast.lstm_forward(x, W, RW, b, h0=h_ref, c0=c_ref, peepholes=peepholes,
                                    activation="softsign", gate_activation="hardsigmoid")
        h_ref, c_ref = ref.last_h, ref.last_c
        np.testing.assert_array_equal(got, ref.output[:, :, 0])
        np.testing.assert_array_equal(h_state, h_ref)
        np.testing.assert_array_equal(c_state, c_ref)
    # x of another shape: None, nothing changed
    assert step(xs[0][:, :-1].copy()) is None
    np.testing.assert_array_equal(h_state, h_ref)


def test_bind_stream_step_names_a_bad_activation():
    a = np.zeros((1, 4), order="F")
    with pytest.raises(ValueError, match="activation"):
        functional.bind_stream_step(threading.RLock(), np.zeros((1, 1)), np.zeros((1, 4), order="F"),
                                    a, np.zeros(4), np.zeros((1, 1)), np.zeros((1, 1)),
                                    activation="swish")


def test_problem_size_ok_is_the_kernels_verdict():
    assert functional.problem_size_ok(2, 3, 4, 5)
    assert functional.problem_size_ok(1, 1, 1, 1, peepholes=True, gate_activation="hardsigmoid")
    assert not functional.problem_size_ok(2**40, 1, 1, 2**40)
    assert not functional.problem_size_ok(1, 2**62, 2**62, 1)
    with pytest.raises(ValueError, match="gate_activation"):
        functional.problem_size_ok(1, 1, 1, 1, gate_activation="tanh")
