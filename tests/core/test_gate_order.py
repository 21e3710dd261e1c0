"""lstm_forward's gate_order: weights whose four gate blocks come in another library's order
(PyTorch's and Keras's "ifgo", ONNX's "iofc") give the same pass as the same weights put in the
seed's order ("gfoi") first.

The kernels read such weights where they are: the packings of the time loops take the blocks
in place, every other path copies them into the seed's order first, the backward pass builds
RW^T in the seed's order and writes the gradients to the caller's blocks. So every output, the
weights' gradients (moved back to the seed's order) and the state gradients are the same bits
as the seed-order pass; dL/dx, whose product is then one GEMM per gate block, agrees to
rounding."""

import numpy as np
import pytest

import lstmfast
from lstmfast import kernels
from lstmfast.functional import gate_blocks_of

DTYPES = [np.float32, np.float64]
SEED = "gfoi"


def _reordered(a, axis, h, source, target):
    """a's four gate blocks (of size h along axis, the first 4h) from the order `source` into
    the order `target`; anything after the 4h (peephole columns) stays."""
    source, target = source.replace("c", "g"), target.replace("c", "g")
    main = np.take(a, np.arange(4 * h), axis=axis)
    rest = np.take(a, np.arange(4 * h, a.shape[axis]), axis=axis)
    blocks = np.split(main, 4, axis=axis)
    return np.concatenate([blocks[source.index(gate)] for gate in target] + [rest], axis=axis)


def to_order(a, order, axis, h):
    """The seed-order array a with its gate blocks rearranged into `order`."""
    return _reordered(a, axis, h, SEED, order)


def from_order(a, order, axis, h):
    """The inverse of to_order."""
    return _reordered(a, axis, h, order, SEED)


# (minibatch, nIn, h, T, threads, extra keywords, what the case reaches)
CASES = [
    (32, 20, 64, 6, 1, {}, "weights packed in panels, one thread"),
    (32, 20, 64, 6, 2, {}, "weights packed by groups of units, two threads"),
    (32, 20, 64, 6, 2, {"peepholes": True}, "peephole columns after the gate blocks"),
    (32, 20, 64, 6, 1, {"forwards": False}, "backwards in time"),
    (8, 7, 13, 5, 1, {}, "h not a whole number of panels"),
    (2, 5, 16, 4, 1, {}, "weights packed as rows (two examples)"),
    (1, 5, 16, 1, 1, {}, "one step of one example (products read the weights in place)"),
    (32, 600, 64, 5, 1, {}, "input product through BLAS on the whole chunk"),
    (32, 20, 64, 6, 1, {"_tuning": {"packed_gemm": 0}}, "BLAS for every product"),
    (6, 9, 12, 5, 1, {"projection": 5}, "LSTMP"),
    (6, 9, 12, 5, 1, {"projection": 5, "peepholes": True}, "LSTMP with peepholes"),
    (6, 9, 12, 5, 1, {"lengths": [5, 0, 3, 1, 5, 2]}, "per-example lengths"),
    (6, 9, 12, 5, 1, {"mask": True}, "a mask"),
]


def _problem(rng, mb, n_in, h, T, dtype, extra):
    peepholes = extra.get("peepholes", False)
    projection = extra.get("projection", 0)
    size = projection or h
    arrays = {
        "x": rng.standard_normal((mb, n_in, T)),
        "W": rng.standard_normal((n_in, 4 * h)) * 0.3,
        "RW": rng.standard_normal((size, 4 * h + (3 if peepholes and not projection else 0)))
        * 0.3,
        "b": rng.standard_normal(4 * h),
        "h0": rng.standard_normal((mb, size)),
        "c0": rng.standard_normal((mb, h)),
    }
    arrays = {k: v.astype(dtype) for k, v in arrays.items()}
    keywords = {}
    if projection:
        keywords["projection_weights"] = (rng.standard_normal((h, projection)) * 0.3).astype(dtype)
        if peepholes:
            keywords["peephole_weights"] = (rng.standard_normal((h, 3)) * 0.3).astype(dtype)
    if "lengths" in extra:
        keywords["lengths"] = np.array(extra["lengths"])
    if extra.get("mask"):
        mask = np.ones((mb, T), dtype=dtype)
        mask[1, 2:] = 0
        mask[3, :] = 0
        keywords["mask"] = mask
    for key in ("forwards", "_tuning"):
        if key in extra:
            keywords[key] = extra[key]
    if peepholes and not projection:
        keywords["peepholes"] = True
    return arrays, keywords


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("order", ["ifgo", "iofc"])
@pytest.mark.parametrize("case", CASES, ids=[c[-1] for c in CASES])
def test_reordered_weights_give_the_seed_order_pass(case, order, dtype):
    mb, n_in, h, T, threads, extra, _ = case
    rng = np.random.default_rng(7)
    arrays, keywords = _problem(rng, mb, n_in, h, T, dtype, extra)
    x, W, RW, b, h0, c0 = (arrays[k] for k in ("x", "W", "RW", "b", "h0", "c0"))
    previous = lstmfast.set_num_threads(threads)
    try:
        report_seed, report = {}, {}
        seed = lstmfast.lstm_forward(x, W, RW, b, h0=h0, c0=c0, for_backprop=True,
                                     _report=report_seed, **keywords)
        other = lstmfast.lstm_forward(x, to_order(W, order, 1, h), to_order(RW, order, 1, h),
                                      to_order(b, order, 0, h), h0=h0, c0=c0, for_backprop=True,
                                      gate_order=order, _report=report, **keywords)
        eps = rng.standard_normal(seed.output.shape).astype(dtype)
        g_seed = lstmfast.lstm_backward(seed, eps)
        g_other = lstmfast.lstm_backward(other, eps)
    finally:
        lstmfast.set_num_threads(previous)
    assert report["threads"] == report_seed["threads"]
    if threads > 1:
        assert report["threads"] == threads
    np.testing.assert_array_equal(other.output, seed.output)
    np.testing.assert_array_equal(other.last_h, seed.last_h)
    np.testing.assert_array_equal(other.last_c, seed.last_c)
    np.testing.assert_array_equal(from_order(g_other.input_weights, order, 1, h),
                                  g_seed.input_weights)
    np.testing.assert_array_equal(from_order(g_other.recurrent_weights, order, 1, h),
                                  g_seed.recurrent_weights)
    np.testing.assert_array_equal(from_order(g_other.bias, order, 0, h), g_seed.bias)
    np.testing.assert_array_equal(g_other.h0, g_seed.h0)
    np.testing.assert_array_equal(g_other.c0, g_seed.c0)
    if "projection_weights" in keywords:
        np.testing.assert_array_equal(g_other.projection_weights, g_seed.projection_weights)
    # one GEMM per gate block against one over all 4h: the same sums in another order
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    scale = np.abs(g_seed.input).max()
    np.testing.assert_allclose(g_other.input, g_seed.input, rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_gradients_come_in_the_weights_order(dtype):
    """Against finite differences of the loss in the caller's own layout (PyTorch's order)."""
    rng = np.random.default_rng(3)
    mb, n_in, h, T = 3, 4, 5, 4
    W = rng.standard_normal((n_in, 4 * h)) * 0.5
    RW = rng.standard_normal((h, 4 * h)) * 0.5
    b = rng.standard_normal(4 * h) * 0.5
    x = rng.standard_normal((mb, n_in, T))
    eps = rng.standard_normal((mb, h, T))

    def loss(W, RW, b):
        out = lstmfast.lstm_forward(x, W, RW, b, gate_order="ifgo").output
        return float(np.sum(out * eps))

    fwd = lstmfast.lstm_forward(x.astype(dtype), W.astype(dtype), RW.astype(dtype),
                                b.astype(dtype), gate_order="ifgo", for_backprop=True)
    grads = lstmfast.lstm_backward(fwd, eps.astype(dtype))
    step = 1e-6
    tol = 2e-3 if dtype == np.float32 else 1e-7
    for name, array, grad in (("W", W, grads.input_weights), ("RW", RW, grads.recurrent_weights),
                              ("b", b, grads.bias)):
        for index in [(0, 0), (1, h), (2, 2 * h + 1), (0, 3 * h + 4)] if array.ndim == 2 \
                else [(0,), (h + 1,), (2 * h + 2,), (3 * h + 3,)]:
            args = {"W": W, "RW": RW, "b": b}
            plus = {k: v.copy() for k, v in args.items()}
            minus = {k: v.copy() for k, v in args.items()}
            plus[name][index] += step
            minus[name][index] -= step
            numeric = (loss(**plus) - loss(**minus)) / (2 * step)
            assert abs(grad[index] - numeric) <= tol * max(1.0, abs(numeric)), (name, index)


@pytest.mark.parametrize("order", ["gfoi", "GFOI", None])
def test_the_seed_order_is_no_reordering(order):
    assert gate_blocks_of(order) is None


def test_orders_map_to_the_callers_blocks():
    # nn.LSTM's (i, f, g, o): the kernels' block input g is its block 2, forget 1, output 3,
    # input gate 0
    assert gate_blocks_of("ifgo") == (2, 1, 3, 0)
    assert gate_blocks_of("IFCO") == (2, 1, 3, 0)
    assert gate_blocks_of("iofc") == (3, 2, 1, 0)


@pytest.mark.parametrize("bad, error", [("ifg", ValueError), ("iffo", ValueError),
                                        ("ifgx", ValueError), ("ifgoo", ValueError),
                                        (1230, TypeError), (("i", "f", "g", "o"), TypeError)])
def test_bad_gate_orders_are_refused(bad, error):
    rng = np.random.default_rng(0)
    with pytest.raises(error, match="gate_order"):
        lstmfast.lstm_forward(rng.standard_normal((2, 3, 4)), np.zeros((3, 8)), np.zeros((2, 8)),
                              np.zeros(8), gate_order=bad)


@pytest.mark.parametrize("blocks", [(0, 0, 1, 2), (0, 1, 2, 4), (-1, 1, 2, 3)])
def test_the_kernels_refuse_a_gate_map_that_is_not_a_permutation(blocks):
    rng = np.random.default_rng(0)
    mb, n_in, h, T = 2, 3, 4, 3
    x = np.asfortranarray(rng.standard_normal((mb, n_in, T)))
    W = np.asfortranarray(rng.standard_normal((n_in, 4 * h)))
    RW = np.asfortranarray(rng.standard_normal((h, 4 * h)))
    b = np.zeros(4 * h)
    out = np.empty((mb, h, T), order="F")
    with pytest.raises(RuntimeError, match="lstm_forward failed"):
        kernels.forward(x, W, RW, b, None, None, None, out, None, None, None, None, False, True,
                        0, 1, gate_blocks=blocks)
