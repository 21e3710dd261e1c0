"""rnn_get_previous_state while another thread streams.

A streaming step writes the layer's state arrays in place; rnn_get_previous_state took no lock
and copied them meanwhile, returning states half from one step and half from the next (about
15 in 7,400 reads). It now takes the layer's in-use lock like the other calls: it returns a
consistent state or raises ConcurrentUseError at once.
"""
import threading
import time

import numpy as np
import pytest

import lstmfast
from lstmfast.layers import ConcurrentUseError
from reliability_support import record


class _BlockingInput:
    """An input whose conversion to an array waits until released: a streaming call given it
    is held inside the layer (with the layer's in-use lock) for as long as the test wants."""

    def __init__(self, array):
        self.array = array
        self.inside = threading.Event()
        self.release = threading.Event()

    def __array__(self, dtype=None, copy=None):
        self.inside.set()
        assert self.release.wait(10)
        return self.array if dtype is None else self.array.astype(dtype)


@pytest.mark.parametrize("kind", [lstmfast.LSTM, lstmfast.GravesLSTM])
def test_reading_the_state_while_another_thread_streams_is_refused(kind):
    layer = kind(3, 5, seed=0)
    rng = np.random.default_rng(0)
    layer.rnn_time_step(rng.standard_normal((2, 3)).astype(np.float32))
    state = layer.rnn_get_previous_state()
    blocking = _BlockingInput(rng.standard_normal((2, 3)).astype(np.float32))
    streamer = threading.Thread(target=layer.rnn_time_step, args=(blocking,))
    streamer.start()
    try:
        assert blocking.inside.wait(10)
        start = time.perf_counter()
        with pytest.raises(ConcurrentUseError, match="in use by another thread"):
            layer.rnn_get_previous_state()
        assert time.perf_counter() - start < 0.5           # at once, without waiting
    finally:
        blocking.release.set()
        streamer.join(10)
    after = layer.rnn_get_previous_state()
    assert not any(np.array_equal(a, b) for a, b in zip(after, state))


def test_states_read_during_streaming_are_whole():
    """Statistical companion of the test above: one thread streams steps, another reads the
    state as fast as it can; every read is a state after some whole number of steps."""
    layer = lstmfast.LSTM(8, 64, seed=1)
    rng = np.random.default_rng(1)
    steps = [rng.standard_normal((16, 8)).astype(np.float32) for _ in range(400)]
    twin = lstmfast.LSTM(8, 64, seed=1)
    serial = {}
    for k, x in enumerate(steps):
        twin.rnn_time_step(x)
        h, c = twin.rnn_get_previous_state()
        serial[h.tobytes()] = (k, c.tobytes())
    layer.rnn_time_step(steps[0])
    stop = threading.Event()

    def retrying(call, *args):            # the reader may hold the layer for a moment
        while True:
            try:
                return call(*args)
            except ConcurrentUseError:
                pass

    def stream():
        while not stop.is_set():
            retrying(layer.rnn_clear_previous_state)
            for k, x in enumerate(steps):
                retrying(layer.rnn_time_step, x)
                if k % 8 == 0:
                    time.sleep(0.0001)          # let the reader in between steps too

    reads = {"whole": 0, "refused": 0}
    streamer = threading.Thread(target=stream)
    streamer.start()
    deadline = time.perf_counter() + 1.0
    try:
        while time.perf_counter() < deadline:
            try:
                state = layer.rnn_get_previous_state()
            except ConcurrentUseError:
                reads["refused"] += 1
                continue
            if state is None:
                continue
            h, c = state
            assert h.tobytes() in serial, "a state from no step: half-written"
            assert serial[h.tobytes()][1] == c.tobytes(), "h and c from different steps"
            reads["whole"] += 1
    finally:
        stop.set()
        streamer.join(10)
    assert reads["whole"] > 0
    record("threads: rnn_get_previous_state during streaming (whole states, refused)",
           (reads["whole"], reads["refused"]))
