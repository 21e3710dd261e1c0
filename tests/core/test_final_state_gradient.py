"""dL/d(last c) through lstm_backward(grad_last_c=...) (beyond the seed), checked by central
differences in float64: L = sum(R * output) + sum(Q * last_c), for every option that changes
the last step (peepholes, direction, mask, truncated BPTT, initial state)."""
import numpy as np
import pytest

import lstmfast


def _loss(args, kw, R, Q):
    fwd = lstmfast.lstm_forward(*args, **kw)
    return float((fwd.output * R).sum() + (fwd.last_c * Q).sum())


@pytest.mark.parametrize("peepholes", [False, True])
@pytest.mark.parametrize("forwards", [True, False])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("gate", ["sigmoid", "hardsigmoid"])
def test_grad_last_c_matches_finite_differences(peepholes, forwards, masked, gate):
    rng = np.random.default_rng(7)
    mb, n_in, h, T = 3, 4, 5, 6
    x = rng.standard_normal((mb, n_in, T))
    W = rng.standard_normal((n_in, 4 * h)) * 0.4
    RW = rng.standard_normal((h, 4 * h + (3 if peepholes else 0))) * 0.4
    b = rng.standard_normal(4 * h) * 0.4
    h0 = rng.standard_normal((mb, h))
    c0 = rng.standard_normal((mb, h))
    kw = dict(h0=h0, c0=c0, forwards=forwards, gate_activation=gate)
    R = rng.standard_normal((mb, h, T))
    if masked:
        mask = np.ones((mb, T))
        mask[0, 4:] = 0          # trailing zeros in time
        mask[1, :2] = 0          # leading zeros in time
        kw["mask"] = mask
        R = R * mask[:, None, :]
    Q = rng.standard_normal((mb, h))
    fwd = lstmfast.lstm_forward(x, W, RW, b, for_backprop=True, **kw)
    grads = lstmfast.lstm_backward(fwd, R, grad_last_c=Q)
    analytic = {"W": grads.input_weights, "RW": grads.recurrent_weights, "b": grads.bias,
                "x": grads.input, "h0": grads.h0, "c0": grads.c0}
    arrays = {"W": W, "RW": RW, "b": b, "x": x, "h0": h0, "c0": c0}
    step = 1e-6
    for name, array in arrays.items():
        numeric = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            keep = array[index]
            array[index] = keep + step
            plus = _loss((x, W, RW, b), kw, R, Q)
            array[index] = keep - step
            minus = _loss((x, W, RW, b), kw, R, Q)
            array[index] = keep
            numeric[index] = (plus - minus) / (2 * step)
        scale = max(np.abs(numeric).max(), 1e-8)
        if gate == "hardsigmoid":
            # entries whose pre-activation sits within the step of a kink are not comparable
            assert np.abs(numeric - analytic[name]).max() / scale < 1e-3, name
        else:
            assert np.abs(numeric - analytic[name]).max() / scale < 1e-6, name


def test_grad_last_c_zero_is_the_plain_backward():
    rng = np.random.default_rng(1)
    x, W = rng.standard_normal((2, 3, 4)), rng.standard_normal((3, 8))
    RW, b = rng.standard_normal((2, 11)), rng.standard_normal(8)
    fwd = lstmfast.lstm_forward(x, W, RW, b, for_backprop=True)
    eps = rng.standard_normal((2, 2, 4))
    plain = lstmfast.lstm_backward(fwd, eps)
    zero = lstmfast.lstm_backward(fwd, eps, grad_last_c=np.zeros((2, 2)))
    for name in ("input_weights", "recurrent_weights", "bias", "input", "h0", "c0"):
        np.testing.assert_array_equal(getattr(plain, name), getattr(zero, name))


def test_grad_last_c_shape_is_checked():
    x, W, RW, b = np.ones((2, 3, 4)), np.ones((3, 8)), np.ones((2, 8)), np.zeros(8)
    fwd = lstmfast.lstm_forward(x, W, RW, b, for_backprop=True)
    with pytest.raises(ValueError, match="grad_last_c"):
        lstmfast.lstm_backward(fwd, np.ones((2, 2, 4)), grad_last_c=np.ones((3, 2)))
    with pytest.raises(TypeError, match="grad_last_c"):
        lstmfast.lstm_backward(fwd, np.ones((2, 2, 4)), grad_last_c=np.ones((2, 2), int))
