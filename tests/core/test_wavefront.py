"""The wavefront of stacked layers in the kernels (lstm_options.output_steps_done /
input_steps_ready, reached through lstm_forward's _steps_done / _steps_ready): one layer's pass
counts the steps of its output as it writes them, the next layer's pass, on another thread,
reads each step of its input once it is counted. The two passes side by side give the bits of
one after the other, in every way a pass can read x (in place, packed step by step for the
cache, packed a chunk at a time, in reverse); a failed or stopped first pass stops the second
instead of leaving it waiting."""
import threading
import time

import numpy as np
import pytest

import lstmfast
from lstmfast import _team, functional
from lstmfast.functional import _side_by_side, lstm_backward, lstm_forward
from lstmfast.kernels import PassStopped


def _weights(rng, n_in, hidden, dtype, peepholes=False):
    return (rng.standard_normal((n_in, 4 * hidden)).astype(dtype) * 0.2,
            rng.standard_normal((hidden, 4 * hidden + (3 if peepholes else 0))).astype(dtype) * 0.2,
            rng.standard_normal(4 * hidden).astype(dtype) * 0.1)


def _stack(dtype, minibatch=16, n_in=24, hidden=40, steps=12, peepholes=False, seed=3):
    rng = np.random.default_rng(seed)
    x = np.asfortranarray(rng.standard_normal((minibatch, n_in, steps)).astype(dtype))
    return x, _weights(rng, n_in, hidden, dtype), _weights(rng, hidden, hidden, dtype, peepholes)


def _one_after_the_other(x, first, second, kwargs_first, kwargs_second):
    a = lstm_forward(x, *first, **kwargs_first)
    return a, lstm_forward(a.output, *second, **kwargs_second)


def _wavefront(x, first, second, kwargs_first, kwargs_second, out=None):
    if out is None:
        out = np.empty((x.shape[0], first[1].shape[0], x.shape[2]), dtype=x.dtype, order="F")
    counter = np.zeros(1, dtype=np.intp)
    a, b = _side_by_side(_team.call_pair,
                         (lstm_forward, (x, *first), dict(kwargs_first, out=out,
                                                          _steps_done=counter)),
                         (lstm_forward, (out, *second), dict(kwargs_second,
                                                             _steps_ready=counter)))
    return a, b, counter


def _assert_same(expected, got):
    for name in ("output", "last_h", "last_c"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["inference", "training", "peepholes_mask", "reverse_second",
                                  "chunked_input", "time_major_between"])
def test_wavefront_gives_the_bits_of_one_pass_after_the_other(case, dtype):
    kwargs = {"for_backprop": case in ("training", "peepholes_mask", "chunked_input")}
    shape = {}
    if case == "chunked_input":
        # the second pass's step of x ([128, 136]) over the per-step input product's limit
        # (64 KiB in float32): its input projected a chunk of steps at a time, the pass
        # waiting for each chunk
        shape = {"minibatch": 128, "n_in": 24, "hidden": 136}
    x, first, second = _stack(dtype, peepholes=case == "peepholes_mask", **shape)
    if case == "peepholes_mask":
        mask = np.ones((x.shape[0], x.shape[2]), dtype=dtype)
        mask[2, 7:] = 0
        mask[5, 1:] = 0
        kwargs["mask"] = mask
    kwargs_second = dict(kwargs)
    if case == "reverse_second":
        kwargs_second["forwards"] = False          # waits for all of x first
    out = None
    if case == "time_major_between":
        # the first pass's output strided (nn.LSTM's [T, mb, h]): each step's h is written
        # during the next step, and counted then
        out = np.empty((x.shape[2], x.shape[0], first[1].shape[0]), dtype=dtype).transpose(1, 2, 0)
    previous = lstmfast.set_num_threads(1)
    try:
        expected = _one_after_the_other(x, first, second, kwargs, kwargs_second)
    finally:
        lstmfast.set_num_threads(previous)
    a, b, counter = _wavefront(x, first, second, kwargs, kwargs_second, out)
    _assert_same(expected[0], a)
    _assert_same(expected[1], b)
    assert counter[0] == x.shape[2]
    if kwargs["for_backprop"]:
        eps = np.random.default_rng(9).standard_normal(b.output.shape).astype(dtype)
        want = lstm_backward(expected[1], eps)
        got = lstm_backward(b, eps)
        for name in ("input_weights", "recurrent_weights", "bias", "input"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)


def test_second_pass_reads_only_counted_steps():
    """A pass whose input count is held back by hand runs only as far as the count: its output
    stays unwritten past it until the count moves on (the pass would otherwise read x before
    it exists)."""
    x, _, second = _stack(np.float64, steps=6)
    x_second = np.asfortranarray(np.random.default_rng(1).standard_normal((16, 40, 6)))
    counter = np.array([2], dtype=np.intp)
    out = np.full((16, 40, 6), np.nan, order="F")
    result = []
    worker = threading.Thread(target=lambda: result.append(
        lstm_forward(x_second, *second, out=out, _steps_ready=counter)))
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while np.isnan(out[:, :, 1]).any() and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(0.05)
        assert not np.isnan(out[:, :, :2]).any()
        assert np.isnan(out[:, :, 2:]).all()          # step 2's x is not counted yet
    finally:
        counter[0] = 6
        worker.join(10)
    assert not worker.is_alive()
    np.testing.assert_array_equal(result[0].output, lstm_forward(x_second, *second).output)


def test_failed_first_call_stops_the_second():
    """The first layer's call raises before its pass (a wrong h0): the second, waiting for its
    input, stops at once and the first call's error is raised."""
    x, first, second = _stack(np.float32, steps=30)
    started = time.monotonic()
    with pytest.raises(ValueError, match="h0"):
        _wavefront(x, first, second, {"h0": np.zeros((3, 3), np.float32)}, {})
    assert time.monotonic() - started < 5


def test_negative_count_stops_the_pass():
    x, _, second = _stack(np.float32)
    x_second = np.zeros((16, 40, 12), dtype=np.float32, order="F")
    with pytest.raises(PassStopped):
        lstm_forward(x_second, *second, _steps_ready=np.array([-1], dtype=np.intp))


def test_cancel_flag_stops_a_waiting_pass():
    """No count arrives (its writer is gone): the pass's cancel flag still stops it."""
    _, _, second = _stack(np.float32)
    x_second = np.zeros((16, 40, 12), dtype=np.float32, order="F")
    stop = np.zeros(1, dtype=np.intc)
    outcome = []

    def waiting_pass():
        functional._partner.cancel = stop        # (the flag a pass beside another polls)
        try:
            lstm_forward(x_second, *second, _steps_ready=np.zeros(1, dtype=np.intp))
        except BaseException as error:
            outcome.append(error)

    worker = threading.Thread(target=waiting_pass)
    worker.start()
    time.sleep(0.2)
    assert worker.is_alive()                      # still waiting for step 0
    stop[0] = 1
    worker.join(5)
    assert not worker.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], PassStopped)


def test_count_arguments_are_checked():
    x, first, _ = _stack(np.float32)
    counter = np.zeros(1, dtype=np.intp)
    with pytest.raises(RuntimeError, match="argument"):
        # (a pass waiting for its own count would wait for ever)
        lstm_forward(x, *first, _steps_ready=counter, _steps_done=counter)
    for bad in (np.zeros(1, dtype=np.int32), np.zeros(2, dtype=np.intp), [0]):
        with pytest.raises(TypeError, match="steps_done"):
            lstm_forward(x, *first, _steps_done=bad)


def test_a_pass_counts_every_step_when_it_returns():
    x, first, _ = _stack(np.float64)
    for forwards in (True, False):
        counter = np.zeros(1, dtype=np.intp)
        lstm_forward(x, *first, forwards=forwards, _steps_done=counter)
        assert counter[0] == x.shape[2]
