"""The same problem gives the same bits at every set_num_threads and under concurrent passes.

A pass whose shape may use the thread team splits its GEMMs outside the time loop into parts
fixed by the shape, chooses its input product by a limit that is the same for every team size,
and holds OpenBLAS at one thread, whether it gets the team, a smaller one, or runs alone because
another pass holds it. Checked on forward outputs, last states and every gradient, for shapes
with the gradient GEMMs in row groups and in columns, dL/dx split by rows and by columns, the
input product per step and per chunk, both dtypes.
"""
import threading

import numpy as np
import pytest

import lstmfast

SHAPES = [
    # (T, mb, n_in, h)
    (20, 32, 16, 64),      # 640 stacked rows >= 4h: gradient GEMMs in two row groups
    (6, 32, 64, 128),      # 192 rows < 4h: by columns
    (3, 16, 200, 64),      # 48 rows < n_in: dL/dx by columns of W^T
    (10, 16, 600, 128),    # float64 step input 75 KiB (float32 38 KiB): per-step input product
    (8, 48, 3000, 64),     # float32 step input 562 KiB, float64 1.1 MiB: per-chunk projection
]


def _problem(shape, dtype, seed):
    T, mb, n_in, h = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((mb, n_in, T)).astype(dtype)
    W = np.asfortranarray(rng.standard_normal((n_in, 4 * h)) * (1.0 / np.sqrt(n_in)), dtype)
    RW = np.asfortranarray(rng.standard_normal((h, 4 * h + 3)) * 0.2, dtype)
    b = (rng.standard_normal(4 * h) * 0.2).astype(dtype)
    h0 = rng.standard_normal((mb, h)).astype(dtype)
    c0 = rng.standard_normal((mb, h)).astype(dtype)
    eps = rng.standard_normal((mb, h, T)).astype(dtype)
    return x, W, RW, b, h0, c0, eps


def _results(problem, report=None):
    """Every result of a training and an inference pass; `report` (a dict) receives the
    backward pass's report."""
    x, W, RW, b, h0, c0, eps = problem
    fwd = lstmfast.lstm_forward(x, W, RW, b, h0=h0, c0=c0, peepholes=True, for_backprop=True)
    grads = lstmfast.lstm_backward(fwd, eps, _report=report)
    inference = lstmfast.lstm_forward(x, W, RW, b, h0=h0, c0=c0, peepholes=True)
    return {"output": fwd.output.copy(), "last_h": fwd.last_h.copy(), "last_c": fwd.last_c.copy(),
            "inference_output": inference.output.copy(),
            "inference_last_c": inference.last_c.copy(),
            "grad_W": grads.input_weights.copy(), "grad_RW": grads.recurrent_weights.copy(),
            "grad_b": grads.bias.copy(), "grad_x": grads.input.copy(),
            "grad_h0": grads.h0.copy(), "grad_c0": grads.c0.copy()}


def _assert_same_bits(got, want, label):
    for name in want:
        differ = np.count_nonzero(got[name].view(np.uint8) != want[name].view(np.uint8))
        assert differ == 0, f"{label}: {name} differs from one thread in {differ} bytes"


@pytest.fixture
def restore_threads():
    previous = lstmfast.set_num_threads(1)
    yield
    lstmfast.set_num_threads(previous)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}-mb{}-in{}-h{}".format(*s))
def test_same_bits_at_every_thread_count(restore_threads, shape, dtype):
    problem = _problem(shape, dtype, 3)
    lstmfast.set_num_threads(1)
    one = _results(problem)
    for threads in (2, 3):
        lstmfast.set_num_threads(threads)
        report = {}
        _assert_same_bits(_results(problem, report), one, f"{threads} threads")
        assert report["threads"] > 1          # the team ran


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_bits_under_concurrent_passes(restore_threads, dtype):
    """Three threads run the shapes at once, so that passes find the team busy and run alone
    (or get it) as timing decides; each result is the one-thread result."""
    problems = [_problem(shape, dtype, 5) for shape in SHAPES[:3]]
    lstmfast.set_num_threads(1)
    serial = [_results(p) for p in problems]
    lstmfast.set_num_threads(2)
    failures = []

    def work(index):
        try:
            for round_ in range(4):
                k = (index + round_) % len(problems)
                _assert_same_bits(_results(problems[k]), serial[k], f"concurrent shape {k}")
        except BaseException as error:       # handed to the test's thread below
            failures.append(error)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
