"""The forward reads x and writes h where they are when each step is one contiguous block (a
Fortran-ordered x [mb, n_in, T] and output [mb, h, T], the Python API's layout), and copies them
otherwise; the backward likewise reads epsilon [mb, h, T]. Both ways must give the same bits,
and the NumPy reference's numbers to rounding: the forward through the kernels' array entry
(kernels.forward, which takes any strides for the output too), the backward through the Python
API; both directions, with and without a mask and peepholes, at 1 and 2 threads."""
import numpy as np
import pytest

import lstmfast
from lstmfast import functional, kernels

from reference import ref_backward, ref_forward

ACT = functional._activation_code("tanh", "activation", functional.ACTIVATIONS)
GATE = functional._activation_code("sigmoid", "gate_activation", functional.GATE_ACTIVATIONS)


@pytest.fixture
def team_for_small_shapes():
    previous = kernels._set_team_limits(1, 0)
    threads = lstmfast.get_num_threads()
    yield
    kernels._set_team_limits(*previous)
    lstmfast.set_num_threads(threads)


def _layout(a, kind):
    """a [mb, F, T] in a given memory layout: 'F' (each step one contiguous [mb, F] block),
    'C' (time fastest), 'reversed' (Fortran-ordered blocks, negative time stride)."""
    if kind == "F":
        return np.asfortranarray(a)
    if kind == "C":
        return np.ascontiguousarray(a)
    return np.asfortranarray(a[:, :, ::-1])[:, :, ::-1]


def _problem(seed, shape, dtype, peepholes, masked):
    """x [mb, n_in, T], W, RW (with the peephole columns if asked), b, h0, c0, epsilon
    [mb, h, T] and a mask (or None) for shape (T, mb, n_in, h)."""
    T, mb, n_in, h = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((mb, n_in, T)).astype(dtype)
    W = np.asfortranarray(rng.standard_normal((n_in, 4 * h)) * 0.4, dtype)
    RW = np.asfortranarray(rng.standard_normal((h, 4 * h + (3 if peepholes else 0))) * 0.4,
                           dtype)
    b = (rng.standard_normal(4 * h) * 0.3).astype(dtype)
    h0 = rng.standard_normal((mb, h)).astype(dtype)
    c0 = rng.standard_normal((mb, h)).astype(dtype)
    eps = rng.standard_normal((mb, h, T)).astype(dtype)
    mask = (rng.random((mb, T)) > 0.3).astype(dtype) if masked else None
    return x, W, RW, b, h0, c0, eps, mask


def _forward(x, W, RW, b, h0, c0, mask, out_kind, peepholes, forwards):
    mb, _, T = x.shape
    h = RW.shape[0]
    out = _layout(np.full((mb, h, T), np.nan, x.dtype), out_kind)
    last_h = np.full((mb, h), np.nan, x.dtype)
    last_c = np.full((mb, h), np.nan, x.dtype)
    size = kernels.forward_workspace_size(mb, x.shape[1], h, T, False)
    workspace = np.empty(size, x.dtype)
    kernels.forward(x, W, RW, b, h0, c0, mask, out, last_h, last_c, None, workspace,
                    peepholes, forwards, ACT, GATE)
    return out, last_h, last_c


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("forwards", [True, False])
@pytest.mark.parametrize("masked,peepholes", [(False, False), (True, True)])
@pytest.mark.parametrize("shape", [(7, 5, 6, 13), (5, 16, 24, 30), (6, 3, 4, 9)])
def test_in_place_and_copied_layouts_agree(team_for_small_shapes, dtype, threads, forwards,
                                           masked, peepholes, shape):
    lstmfast.set_num_threads(threads)
    x0, W, RW, b, h0, c0, _, mask = _problem(5, shape, dtype, peepholes, masked)

    runs = {}
    for x_kind, out_kind in [("F", "F"), ("C", "C"), ("reversed", "reversed"), ("C", "F"),
                             ("F", "C")]:
        x = _layout(x0, x_kind)
        runs[x_kind, out_kind] = _forward(x, W, RW, b, h0, c0, mask, out_kind, peepholes,
                                          forwards)
    reference = ref_forward(x0.astype(np.float64), W.astype(np.float64),
                            RW.astype(np.float64), b.astype(np.float64), h0.astype(np.float64),
                            c0.astype(np.float64), peepholes=peepholes, mask=mask,
                            forwards=forwards)
    in_place = runs["F", "F"]
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    want_all = (reference.output, reference.last_h, reference.last_c)
    for name, got, want in zip(("output", "last_h", "last_c"), in_place, want_all):
        scale = max(float(np.max(np.abs(want))), 1e-30)
        assert np.max(np.abs(got - want)) / scale < tolerance, name
    for key, result in runs.items():
        for name, got, want in zip(("output", "last_h", "last_c"), result, in_place):
            np.testing.assert_array_equal(got, want, err_msg=f"{name} with x, out {key}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("forwards", [True, False])
@pytest.mark.parametrize("masked,peepholes,tbptt", [(False, False, None), (True, True, 3)])
@pytest.mark.parametrize("shape", [(7, 5, 6, 13), (6, 3, 4, 9)])
def test_backward_reads_epsilon_in_place_or_gathered_alike(team_for_small_shapes, dtype, threads,
                                                         forwards, masked, peepholes, tbptt,
                                                         shape):
    """The backward adds a step's dL/d(output) where it is when that is one contiguous
    [mb, h] block (Fortran-ordered epsilon) and gathers it otherwise: the same bits either way,
    and the reference's gradients."""
    lstmfast.set_num_threads(threads)
    x, W, RW, b, _, _, eps0, mask = _problem(9, shape, dtype, peepholes, masked)
    fwd = lstmfast.lstm_forward(x, W, RW, b, peepholes=peepholes, mask=mask, forwards=forwards,
                                for_backprop=True)
    names = ("input_weights", "recurrent_weights", "bias", "input", "h0", "c0")
    results = {}
    for kind in ("F", "C", "reversed"):
        grads = lstmfast.lstm_backward(fwd, _layout(eps0, kind), tbptt_length=tbptt)
        results[kind] = [getattr(grads, name).copy() for name in names]
    forward_reference = ref_forward(x.astype(np.float64), W.astype(np.float64),
                                    RW.astype(np.float64), b.astype(np.float64),
                                    peepholes=peepholes, mask=mask, forwards=forwards)
    reference = ref_backward(forward_reference, eps0.astype(np.float64), tbptt_length=tbptt)
    tolerance = 1e-4 if dtype == np.float32 else 1e-10
    for name, got in zip(names, results["F"]):
        want = getattr(reference, name)
        scale = max(float(np.max(np.abs(want))), 1e-30)
        assert np.max(np.abs(got - want)) / scale < tolerance, name
    for kind, grads in results.items():
        for name, got, want in zip(names, grads, results["F"]):
            np.testing.assert_array_equal(got, want, err_msg=f"{name} with epsilon {kind}")
