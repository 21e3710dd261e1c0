"""lstm_forward's out= and lstm_backward's grad_input_out=: results written into the caller's
arrays, whatever their (non-overlapping) strides, are the same bits as the arrays the passes
allocate; arrays that do not fit are refused by name."""
import numpy as np
import pytest

import lstmfast
from lstmfast import lstm_backward, lstm_forward


def _problem(dtype, mb=3, n_in=5, h=4, steps=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((mb, n_in, steps)).astype(dtype)
    W = (rng.standard_normal((n_in, 4 * h)) * 0.4).astype(dtype)
    RW = (rng.standard_normal((h, 4 * h + 3)) * 0.4).astype(dtype)
    b = (rng.standard_normal(4 * h) * 0.1).astype(dtype)
    eps = rng.standard_normal((mb, h, steps)).astype(dtype)
    return x, W, RW, b, eps


def _layouts(shape, dtype):
    """Arrays of `shape` [a, b, c] with other memory orders: C order, the [a, b, c] view of a
    [c, a, b] (time-major) array, and a view with gaps between elements."""
    a, b, c = shape
    yield "C", np.empty(shape, dtype)
    yield "time-major", np.empty((c, a, b), dtype).transpose(1, 2, 0)
    yield "gaps", np.empty((a, 2 * b, c), dtype, order="F")[:, ::2, :]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("forwards", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_results_written_into_caller_arrays_are_the_same_bits(dtype, forwards, threads):
    x, W, RW, b, eps = _problem(dtype)
    previous = lstmfast.set_num_threads(threads)
    try:
        plain = lstm_forward(x, W, RW, b, peepholes=True, forwards=forwards, for_backprop=True)
        want = lstm_backward(plain, eps)
        for name, out in _layouts(plain.output.shape, dtype):
            fwd = lstm_forward(x, W, RW, b, peepholes=True, forwards=forwards, for_backprop=True,
                               out=out)
            assert fwd.output is out, name
            np.testing.assert_array_equal(out, plain.output, err_msg=name)
            np.testing.assert_array_equal(fwd.last_h, plain.last_h, err_msg=name)
            for gname, gx in _layouts(x.shape, dtype):
                grads = lstm_backward(fwd, eps, grad_input_out=gx)
                assert grads.input is gx
                np.testing.assert_array_equal(gx, want.input, err_msg=f"{name}, {gname}")
                np.testing.assert_array_equal(grads.recurrent_weights, want.recurrent_weights)
    finally:
        lstmfast.set_num_threads(previous)


def test_two_dimensional_input_takes_a_two_dimensional_gradient_array():
    x, W, RW, b, eps = _problem(np.float64, steps=1)
    x2 = x[:, :, 0]
    fwd = lstm_forward(x2, W, RW, b, peepholes=True, for_backprop=True)
    want = lstm_backward(fwd, eps[:, :, 0])
    gx = np.empty((x2.shape[1], x2.shape[0])).T
    got = lstm_backward(fwd, eps[:, :, 0], grad_input_out=gx)
    assert got.input is gx
    np.testing.assert_array_equal(gx, want.input)


def test_arrays_that_do_not_fit_are_refused_by_name():
    x, W, RW, b, eps = _problem(np.float64)
    shape = (3, 4, 6)
    read_only = np.empty(shape)
    read_only.flags.writeable = False
    overlapping = np.lib.stride_tricks.as_strided(np.empty(40), shape, (8, 8, 8))
    backwards = np.empty(shape)[:, ::-1, :]
    cases = [(np.empty((3, 4, 5)), ValueError, r"out: expected shape \[3, 4, 6\]"),
             (np.empty(shape, np.float32), ValueError, "out: expected dtype float64"),
             (read_only, ValueError, "out: the array is read-only"),
             (overlapping, ValueError, "out: strides .* overlap"),
             (backwards, ValueError, "out: strides"),
             ([[0.0]], TypeError, "out: expected a NumPy array")]
    for out, error, message in cases:
        with pytest.raises(error, match=message):
            lstm_forward(x, W, RW, b, peepholes=True, out=out)
    # the kernels read x while they write out
    xs = np.zeros((3, 6, 6))
    with pytest.raises(ValueError, match="out: shares memory with x"):
        lstm_forward(xs[:, :5, :], W, RW, b, peepholes=True, out=xs[:, 1:5, :])
    fwd = lstm_forward(x, W, RW, b, peepholes=True, for_backprop=True)
    with pytest.raises(ValueError, match=r"grad_input_out: expected shape \[3, 5, 6\]"):
        lstm_backward(fwd, eps, grad_input_out=np.empty(shape))
    # epsilon shaped like x (h = nIn): dL/dx may not be written over it
    x, W, RW, b, eps = _problem(np.float64, h=5)
    fwd = lstm_forward(x, W, RW, b, peepholes=True, for_backprop=True)
    e = np.array(eps, order="F")
    with pytest.raises(ValueError, match="grad_input_out: shares memory with epsilon"):
        lstm_backward(fwd, e, grad_input_out=e)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("extra", ["none", "lengths", "projection", "two-dimensional"])
def test_backward_without_the_input_gradient_keeps_every_other_gradient(dtype, threads, extra):
    """input_gradient=False skips dL/dx (None) and leaves the other gradients the same bits."""
    x, W, RW, b, eps = _problem(dtype, mb=4, steps=1 if extra == "two-dimensional" else 6)
    kwargs = {"peepholes": True}
    if extra == "lengths":
        kwargs["lengths"] = [6, 0, 3, 5]
    elif extra == "projection":
        rng = np.random.default_rng(3)
        kwargs = {"projection_weights": (rng.standard_normal((4, 2)) * 0.4).astype(dtype),
                  "peephole_weights": (rng.standard_normal((4, 3)) * 0.4).astype(dtype)}
        RW = RW[:2, :16]
        eps = eps[:, :2, :]
    if extra == "two-dimensional":
        x, eps = x[:, :, 0], eps[:, :, 0]
    previous = lstmfast.set_num_threads(threads)
    try:
        fwd = lstm_forward(x, W, RW, b, for_backprop=True, **kwargs)
        full = lstm_backward(fwd, eps)
        part = lstm_backward(fwd, eps, input_gradient=False)
    finally:
        lstmfast.set_num_threads(previous)
    assert part.input is None and full.input.shape == x.shape
    for name in ("input_weights", "recurrent_weights", "bias", "h0", "c0", "projection_weights",
                 "peephole_weights"):
        want, got = getattr(full, name), getattr(part, name)
        if want is None:
            assert got is None, name
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)
    with pytest.raises(ValueError, match="grad_input_out: given with input_gradient=False"):
        lstm_backward(fwd, eps, input_gradient=False, grad_input_out=np.empty(x.shape, dtype))
