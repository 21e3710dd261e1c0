"""What a forward pass keeps for the backward pass is its own: editing the caller's arrays
between ``lstm_forward(for_backprop=True)`` and ``lstm_backward`` (an optimizer step on the
weights, a reused input buffer) changes nothing; the gradients are those of the arrays as they
were at the forward call, by the NumPy reference of the seed (tests/reference.py)."""
import numpy as np
import pytest

import lstmfast
import reference as R

SEED = 20250127
TOL = 1e-10

ARRAYS = ("W", "RW", "b", "x", "h0", "c0", "mask")


def _problem(rng, *, peepholes, layout, mb=3, n_in=4, hidden=5, T=6):
    """Arrays in float64; 'fortran': the weights already in the kernels' layout (lstm_forward
    uses them where they are), 'c': C-ordered (converted on the way in)."""
    order = "F" if layout == "fortran" else "C"
    arrays = dict(
        x=np.asfortranarray(rng.standard_normal((mb, n_in, T))) if layout == "fortran"
        else rng.standard_normal((mb, n_in, T)),
        W=np.array(rng.standard_normal((n_in, 4 * hidden)) * 0.4, order=order),
        RW=np.array(rng.standard_normal((hidden, 4 * hidden + (3 if peepholes else 0))) * 0.4, order=order),
        b=rng.standard_normal(4 * hidden) * 0.2,
        h0=rng.standard_normal((mb, hidden)) * 0.5,
        c0=rng.standard_normal((mb, hidden)) * 0.5,
        mask=R.contiguous_mask(rng, mb, T, "trailing"),
    )
    epsilon = rng.standard_normal((mb, hidden, T))
    return arrays, epsilon


def _edit(array, rng):
    """An in-place change of the kind an optimizer step or a reused buffer makes."""
    if array.ndim == 2 and set(np.unique(array)) <= {0.0, 1.0}:   # a mask: flip it
        array[...] = 1.0 - array
        array[:, 0] = 1.0
    else:
        array += rng.standard_normal(array.shape) * 0.5


@pytest.mark.parametrize("layout", ["fortran", "c"])
@pytest.mark.parametrize("peepholes", [True, False])
@pytest.mark.parametrize("edited", ARRAYS)
def test_editing_the_arguments_between_forward_and_backward(edited, peepholes, layout):
    seed = [SEED, ARRAYS.index(edited), int(peepholes), int(layout == "c")]
    rng = np.random.default_rng(seed)
    arrays, epsilon = _problem(rng, peepholes=peepholes, layout=layout)
    original = {k: v.copy() for k, v in arrays.items()}
    fwd = lstmfast.lstm_forward(arrays["x"], arrays["W"], arrays["RW"], arrays["b"], h0=arrays["h0"],
                                c0=arrays["c0"], mask=arrays["mask"], for_backprop=True)
    output = fwd.output.copy()
    _edit(arrays[edited], rng)
    assert not np.array_equal(arrays[edited], original[edited])
    grads = lstmfast.lstm_backward(fwd, epsilon)

    ref = R.ref_forward(original["x"], original["W"], original["RW"], original["b"], h0=original["h0"],
                        c0=original["c0"], mask=original["mask"])
    ref_grads = R.ref_backward(ref, epsilon)
    assert np.array_equal(fwd.output, output), f"seed {seed}: the forward result changed"
    for name in R.GRAD_NAMES:
        err = R.rel_err(getattr(grads, name), getattr(ref_grads, name))
        assert err < TOL, (f"seed {seed}: {edited} edited between forward and backward: "
                           f"gradient {name} differs from the reference on the original arrays "
                           f"by {err:.3g} (relative)")


@pytest.mark.parametrize("layer_class", [lstmfast.GravesLSTM, lstmfast.LSTM])
def test_a_layer_step_between_forward_and_backward(layer_class):
    """layer.params edited in place (what an updater does) after forward(training=True): the
    layer's backward still differentiates the pass that was run."""
    seed = [SEED, 7, int(layer_class.__name__ == "LSTM")]
    rng = np.random.default_rng(seed)
    layer = layer_class(4, 5, seed=3, dtype=np.float64)
    x = rng.standard_normal((3, 4, 6))
    epsilon = rng.standard_normal((3, 5, 6))
    W, RW, b = layer.W.copy(), layer.RW.copy(), layer.b.copy()
    layer.forward(x, training=True)
    layer.params -= 0.3 * rng.standard_normal(layer.params.shape)
    dx = layer.backward(epsilon)

    ref_grads = R.ref_backward(R.ref_forward(x, W, RW, b), epsilon)
    for name, mine in (("input", dx), ("input_weights", layer.W_gradient),
                       ("recurrent_weights", layer.RW_gradient), ("bias", layer.b_gradient)):
        err = R.rel_err(mine, getattr(ref_grads, name))
        assert err < TOL, f"seed {seed}: {name} differs from the reference by {err:.3g}"
