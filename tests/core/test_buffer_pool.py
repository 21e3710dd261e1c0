"""The reuse of large work buffers between calls (functional._BufferPool): which buffers are kept,
which are dropped when the pool is full, and that a reused buffer gives the same numbers as a
fresh one."""

import copy
import gc

import numpy as np
import pytest

import lstmfast
from lstmfast import functional

KB = 1024


def _buffer(kib, dtype=np.float64):
    return np.empty(kib * KB // np.dtype(dtype).itemsize, dtype=dtype)


def test_a_given_buffer_comes_back_for_the_same_size_and_dtype():
    pool = functional._BufferPool(min_bytes=4 * KB, max_bytes=64 * KB)
    array = _buffer(8)
    pool.give(array)
    assert pool.pooled_bytes == 8 * KB
    assert pool.take(array.size, np.float32) is not array       # same size, other dtype
    assert pool.take(array.size + 1, np.float64) is not array   # other size
    assert pool.take(array.size, np.float64) is array
    assert pool.pooled_bytes == 0
    assert pool.take(array.size, np.float64) is not array       # taken once only


def test_buffers_outside_the_size_range_are_not_kept():
    pool = functional._BufferPool(min_bytes=4 * KB, max_bytes=64 * KB)
    kept = _buffer(8)
    pool.give(kept)
    pool.give(_buffer(2))      # below min_bytes
    pool.give(_buffer(128))    # above max_bytes: would evict everything else and still not fit
    pool.give(None)
    assert pool.pooled_bytes == 8 * KB
    assert pool.take(kept.size, np.float64) is kept


def test_a_full_pool_drops_the_buffers_given_longest_ago():
    # a training step gives back its forward work space, then the backward's, then the forward
    # cache (the largest): the cache must be kept, the oldest buffer dropped
    pool = functional._BufferPool(min_bytes=4 * KB, max_bytes=40 * KB)
    forward_ws, backward_ws, cache = _buffer(5), _buffer(13), _buffer(24)
    pool.give(forward_ws)
    pool.give(backward_ws)
    assert pool.pooled_bytes == 18 * KB
    pool.give(cache)           # 42 KB > 40 KB: forward_ws, given first, goes
    assert pool.pooled_bytes == 37 * KB
    newer = _buffer(6)
    pool.give(newer)           # 43 KB > 40 KB: then backward_ws
    assert pool.pooled_bytes == 30 * KB
    assert pool.take(forward_ws.size, np.float64) is not forward_ws
    assert pool.take(backward_ws.size, np.float64) is not backward_ws
    assert pool.take(cache.size, np.float64) is cache
    assert pool.take(newer.size, np.float64) is newer
    assert pool.pooled_bytes == 0


def test_the_most_recently_given_of_equal_buffers_is_taken_first():
    pool = functional._BufferPool(min_bytes=4 * KB, max_bytes=64 * KB)
    first, second = _buffer(8), _buffer(8)
    pool.give(first)
    pool.give(second)
    assert pool.take(first.size, np.float64) is second
    assert pool.take(first.size, np.float64) is first


def test_clear_drops_everything():
    pool = functional._BufferPool(min_bytes=4 * KB, max_bytes=64 * KB)
    given = [_buffer(8), _buffer(16), _buffer(12)]
    pool.give(given[0])
    pool.give(given[1])
    pool.give_later(given[2])
    pool.clear()
    assert pool.pooled_bytes == 0
    for array in given:
        assert pool.take(array.size, np.float64) is not array


def test_a_buffer_given_by_a_finalizer_is_pooled_at_the_next_take():
    # finalizers hand buffers over through a queue (they may run inside the pool's locked code)
    pool = functional._BufferPool(min_bytes=4 * KB, max_bytes=64 * KB)
    array = _buffer(8)
    pool.give_later(array)
    assert pool.take(array.size, np.float64) is array
    pool.give_later(_buffer(2))            # below min_bytes: dropped when pooled
    assert pool.pooled_bytes == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_training_step_reuses_its_forward_cache_with_the_same_results(dtype):
    # (50, 32, 64, 128): the cache and both work spaces are above the pool's minimum (4 MiB) in
    # both dtypes. Between steps every pooled buffer is filled with NaN, so that a value the
    # kernels read before writing it would show.
    T, mb, n_in, h = 50, 32, 64, 128
    rng = np.random.default_rng(5)
    x = rng.standard_normal((mb, n_in, T)).astype(dtype)
    W = (rng.standard_normal((n_in, 4 * h)) * 0.1).astype(dtype)
    RW = (rng.standard_normal((h, 4 * h)) * 0.1).astype(dtype)
    b = (rng.standard_normal(4 * h) * 0.1).astype(dtype)
    eps = rng.standard_normal((mb, h, T)).astype(dtype)

    gc.collect()
    lstmfast.release_buffers()
    runs = []
    caches = []
    for _ in range(3):
        fwd = lstmfast.lstm_forward(x, W, RW, b, for_backprop=True)
        caches.append(fwd._cache)
        grads = lstmfast.lstm_backward(fwd, eps)
        runs.append((fwd.output, grads.input_weights, grads.recurrent_weights, grads.bias,
                     grads.input))
        del fwd                 # the cache goes back to the pool
        functional._POOL.pooled_bytes            # (pools what finalizers handed over)
        for _, _, array in functional._POOL._pooled:
            array.fill(np.nan)
    assert caches[0].nbytes >= functional._POOL.min_bytes
    assert caches[1] is caches[0] and caches[2] is caches[0]
    for later in runs[1:]:
        for first, again in zip(runs[0], later):
            np.testing.assert_array_equal(first, again)
    lstmfast.release_buffers()
    assert functional._POOL.pooled_bytes == 0


def test_a_copied_forward_result_keeps_its_cache():
    # copy.copy returns the result itself: a shallow copy sharing the cache without the
    # finalizer would let the next call take the cache over while the copy still needs it
    T, mb, n_in, h = 50, 32, 64, 128
    rng = np.random.default_rng(6)
    x = rng.standard_normal((mb, n_in, T))
    W = rng.standard_normal((n_in, 4 * h)) * 0.1
    RW = rng.standard_normal((h, 4 * h)) * 0.1
    b = rng.standard_normal(4 * h) * 0.1
    eps = rng.standard_normal((mb, h, T))
    fwd = lstmfast.lstm_forward(x, W, RW, b, for_backprop=True)
    expected = lstmfast.lstm_backward(fwd, eps)
    duplicate = copy.copy(fwd)
    del fwd
    lstmfast.lstm_forward(x * 0.5, W, RW, b, for_backprop=True)   # takes a pooled cache, if any
    again = lstmfast.lstm_backward(duplicate, eps)
    np.testing.assert_array_equal(again.recurrent_weights, expected.recurrent_weights)
    np.testing.assert_array_equal(again.input, expected.input)
