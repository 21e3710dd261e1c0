"""The element-wise loops of a training step in C (lstmfast._training_math): the softmax output
layer's activations, its cross-entropy and that loss's gradient, and Adam's update, against
NumPy evaluations of the formulas written here and against finite differences, in float32 and
float64. tests/core/test_isa_paths.py runs this file on every instruction set the CPU has."""
import math

import numpy as np
import pytest

import lstmfast
from lstmfast import _training_math

DTYPES = [np.float32, np.float64]
# relative accuracy of a softmax / a loss in each type (the exp is within a few ulp)
RTOL = {np.float32: 2e-6, np.float64: 1e-14}


def _log_softmax(z):
    """log softmax over rows, in float64 (the reference)."""
    z = np.asarray(z, dtype=np.float64)
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _one_hot(rng, rows, width, dtype):
    y = np.zeros((rows, width), dtype=dtype)
    y[np.arange(rows), rng.integers(0, width, rows)] = 1
    return y


# shapes: one class, few, the character model's 77, a row wider than the C code's block of 1024
# elements, and row counts that leave a partial block
SHAPES = [(1, 1), (5, 1), (3, 7), (1600, 77), (13, 300), (2, 3000), (1025, 2)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, width", SHAPES)
def test_softmax_matches_the_formula(dtype, rows, width):
    rng = np.random.default_rng(rows * 7919 + width)
    z = (rng.standard_normal((rows, width)) * 4).astype(dtype)
    out = np.empty_like(z)
    _training_math.softmax(z, out)
    expected = np.exp(_log_softmax(z))
    np.testing.assert_allclose(out, expected, rtol=RTOL[dtype], atol=0)
    assert out.dtype == dtype
    in_place = z.copy()
    _training_math.softmax(in_place, in_place)
    np.testing.assert_array_equal(in_place, out)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_of_extreme_rows(dtype):
    big = np.finfo(dtype).max / 4
    z = np.array([[1000.0, 999.0, -1000.0],          # would overflow exp without the shift
                  [-big, 0.0, big],                  # one class takes all
                  [-np.inf, 0.0, 0.0],               # exp(-inf) = 0
                  [np.nan, 1.0, 2.0],                # a NaN spoils its row only
                  [np.inf, 1.0, 2.0],                # as NumPy: inf - inf is NaN
                  [3.0, 3.0, 3.0]], dtype=dtype)
    out = np.empty_like(z)
    with np.errstate(invalid="ignore", over="ignore"):
        _training_math.softmax(z, out)
        shifted = z - z.max(axis=1, keepdims=True)
        expected = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out[:3], expected[:3], rtol=RTOL[dtype], atol=1e-30)
    assert np.isnan(out[3]).all() and np.isnan(out[4]).all()
    np.testing.assert_allclose(out[5], 1 / 3, rtol=RTOL[dtype])
    np.testing.assert_allclose(out[:3].sum(axis=1), 1, rtol=4 * RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
def test_non_finite_values_in_vector_lanes_spoil_their_rows_as_in_numpy(dtype, special):
    """Rows of 77 with a NaN or an infinity in every position in turn: the row maximum's
    vector loop (compiled as finite math) and the block's exponentials see them in every lane;
    the rows that come out NaN, and the others' values, are NumPy's."""
    width = 77
    rng = np.random.default_rng(3)
    z = (rng.standard_normal((width + 1, width)) * 3).astype(dtype)
    z[np.arange(width), np.arange(width)] = special       # the last row stays finite
    y = _one_hot(rng, width + 1, width, dtype)
    a = np.empty_like(z)
    _training_math.softmax(z, a)
    losses = [_training_math.cross_entropy_of_softmax(z[r:r + 1], y[r:r + 1]) for r in range(len(z))]
    with np.errstate(invalid="ignore"):
        log_p = _log_softmax(z)
        expected_losses = -(y * log_p).sum(axis=1)
    np.testing.assert_allclose(a, np.exp(log_p), rtol=RTOL[dtype], atol=1e-30)
    np.testing.assert_allclose(losses, expected_losses, rtol=10 * RTOL[dtype])
    assert np.isnan(a[:width]).all(axis=1).tolist() == [special == np.inf or np.isnan(special)] * width


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, width", SHAPES)
@pytest.mark.parametrize("masked", [False, True])
def test_cross_entropy_matches_the_formula(dtype, rows, width, masked):
    rng = np.random.default_rng(rows * 31 + width)
    z = (rng.standard_normal((rows, width)) * 3).astype(dtype)
    # soft labels as well as one-hot rows: the loss is sum_j y_j log p_j for any y
    y = _one_hot(rng, rows, width, dtype)
    y[::3] = rng.random((len(y[::3]), width)).astype(dtype)
    mask = (rng.random(rows) < 0.7).astype(dtype) if masked else None
    got = _training_math.cross_entropy_of_softmax(z, y, mask)
    row_losses = -(y.astype(np.float64) * _log_softmax(z)).sum(axis=1)
    expected = (row_losses * (1 if mask is None else mask)).sum()
    assert got == pytest.approx(expected, rel=10 * RTOL[dtype], abs=1e-300)


def test_cross_entropy_is_finite_where_a_probability_rounds_to_zero():
    # p = exp(-2000) is 0 in any float: log p must still be -2000 - log(1 + ...), not -inf
    z = np.array([[0.0, -2000.0]])
    y = np.array([[0.0, 1.0]])
    assert _training_math.cross_entropy_of_softmax(z, y) == pytest.approx(2000.0, rel=1e-15)
    assert np.isnan(_training_math.cross_entropy_of_softmax(np.array([[np.nan, 0.0]]), y))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("masked", [False, True])
def test_gradient_is_that_of_the_loss(dtype, masked):
    """Against central differences of the float64 loss, and the formula's bits in its order."""
    rng = np.random.default_rng(5)
    rows, width, divisor = 6, 5, 4.0
    z = rng.standard_normal((rows, width))
    y = _one_hot(rng, rows, width, np.float64)
    y[1] = rng.random(width)                    # a soft label row: sum_j y_j != 1
    mask = (np.arange(rows) % 3 != 1).astype(np.float64) if masked else None
    a = np.empty_like(z)
    _training_math.softmax(z, a)
    grad = np.empty_like(z)
    _training_math.cross_entropy_of_softmax_gradient(a, y, mask, divisor, grad)

    def loss(values):
        return _training_math.cross_entropy_of_softmax(values, y, mask) / divisor

    step = 1e-6
    numeric = np.empty_like(z)
    for index in np.ndindex(z.shape):
        plus, minus = z.copy(), z.copy()
        plus[index] += step
        minus[index] -= step
        numeric[index] = (loss(plus) - loss(minus)) / (2 * step)
    np.testing.assert_allclose(grad, numeric, rtol=1e-7, atol=1e-9)

    a32, y32 = a.astype(dtype), y.astype(dtype)
    m32 = None if mask is None else mask.astype(dtype)
    got = np.empty_like(a32)
    _training_math.cross_entropy_of_softmax_gradient(a32, y32, m32, divisor, got)
    # the C loop sums each row's labels in double, then rounds the sum to the type
    label_sums = y32.astype(np.float64).sum(axis=1, keepdims=True).astype(dtype)
    expected = a32 * label_sums - y32
    if m32 is not None:
        expected = expected * m32[:, None]
    np.testing.assert_array_equal(got, (expected / dtype(divisor)).astype(dtype))


def _numpy_adam(p, g, m, v, b1, b2, eps, alpha):
    """The update operation by operation, as NumPy rounds it (Python-float constants)."""
    new_m = m * b1
    new_m += (1.0 - b1) * g
    square = g * g
    square *= 1.0 - b2
    new_v = v * b2
    new_v += square
    denominator = np.sqrt(new_v)
    denominator += eps
    step = new_m * alpha
    step /= denominator
    return p - step, new_m, new_v


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 15, 16, 17, 1000, 70001])
def test_adam_gives_the_bits_of_its_formula(dtype, n):
    rng = np.random.default_rng(n)
    p, g, m = (rng.standard_normal(n).astype(dtype) for _ in range(3))
    v = np.abs(rng.standard_normal(n)).astype(dtype) * dtype(0.01)
    v[: n // 3] = 0                                    # a fresh moment: sqrt(0) + eps
    args = (0.9, 0.999, 1e-8, 0.0123)
    outs = [np.full(n, np.nan, dtype=dtype) for _ in range(3)]
    _training_math.adam(p, g, m, v, *args, *outs)
    for got, expected in zip(outs, _numpy_adam(p, g, m, v, *args)):
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_updater_in_parts_equals_one_part(dtype, monkeypatch):
    """lstmfast.Adam splits long vectors across lstmfast's threads: the bits do not depend on
    the split, and a second step continues from the first's moments."""
    from lstmfast import updaters
    rng = np.random.default_rng(11)
    n = 3 * updaters._PART_MIN + 5
    start = rng.standard_normal(n).astype(dtype)
    grads = [rng.standard_normal(n).astype(dtype) for _ in range(2)]

    def run(threads):
        monkeypatch.setattr(updaters, "get_num_threads", lambda: threads)
        p, adam = start.copy(), lstmfast.Adam(0.01)
        for g in grads:
            adam.apply(p, g)
        return p, adam.m, adam.v

    one, three = run(1), run(3)
    for a, b in zip(one, three):
        np.testing.assert_array_equal(a, b)
    p, m, v = start.copy(), np.zeros(n, dtype), np.zeros(n, dtype)
    for t, g in enumerate(grads, start=1):
        alpha = 0.01 * math.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)   # a Python float
        p, m, v = _numpy_adam(p, g, m, v, 0.9, 0.999, 1e-8, alpha)
    for a, b in zip(one, (p, m, v)):
        np.testing.assert_array_equal(a, b)


def test_adam_updater_converts_what_it_is_given():
    """float32 gradients for float64 parameters, a strided parameter array: converted, as
    NumPy's formula would have broadcast them, and the parameters written in place."""
    rng = np.random.default_rng(2)
    storage = rng.standard_normal(40)
    params = storage[::2]                              # not contiguous
    grads = rng.standard_normal(20).astype(np.float32)
    expected, _, _ = _numpy_adam(params.copy(), grads.astype(np.float64), np.zeros(20), np.zeros(20),
                                 0.9, 0.999, 1e-8, 0.01 * math.sqrt(1 - 0.999) / (1 - 0.9))
    lstmfast.Adam(0.01).apply(params, grads)
    np.testing.assert_array_equal(params, expected)
    np.testing.assert_array_equal(storage[::2], expected)


def test_wrappers_refuse_mismatched_arrays():
    z = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"out: expected shape \(4, 3\), got \(4, 2\)"):
        _training_math.softmax(z, np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"y: expected shape \(4, 3\), got \(3, 3\)"):
        _training_math.cross_entropy_of_softmax(z, np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"row_mask: expected shape \(4,\), got \(5,\)"):
        _training_math.cross_entropy_of_softmax(z, z, np.ones(5))
    with pytest.raises(ValueError, match="C-contiguous|contiguous"):
        _training_math.softmax(np.zeros((3, 4)).T, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="Buffer dtype mismatch"):
        _training_math.softmax(z, np.zeros((4, 3), dtype=np.float32))
    one = np.zeros(5)
    with pytest.raises(ValueError, match=r"new_v: expected shape \(5,\), got \(4,\)"):
        _training_math.adam(one, one, one, one, 0.9, 0.999, 1e-8, 0.1, np.zeros(5), np.zeros(5),
                            np.zeros(4))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(32, 128, 50), (1, 1, 1), (3, 5, 7), (5, 1, 3), (7, 6, 1)])
def test_sequence_rows_are_the_steps_transposed(dtype, shape):
    """A recurrent layer's Fortran-ordered [mb, n, T] output as a dense layer's rows
    [mb * T, n] (row m * T + t), through the SSE tiles, and what the output layer does with it."""
    from lstmfast.layers.dense import _to_rows
    x = np.asfortranarray(np.random.default_rng(sum(shape)).standard_normal(shape).astype(dtype))
    expected = np.ascontiguousarray(x.transpose(0, 2, 1)).reshape(shape[0] * shape[2], shape[1])
    out = np.full_like(expected, np.nan)
    _training_math.sequence_rows(x, out)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(_to_rows(x), expected)
    np.testing.assert_array_equal(_to_rows(np.ascontiguousarray(x)), expected)
    with pytest.raises(ValueError, match="out: expected shape"):
        _training_math.sequence_rows(x, np.empty((expected.shape[0] + 1, shape[1]), dtype))
    # in parts of the steps (what another thread may do), every row written once
    parts = np.full_like(expected, np.nan)
    cut = shape[2] // 2
    _training_math.sequence_rows(x, parts, 0, cut)
    _training_math.sequence_rows(x, parts, cut, -1)
    np.testing.assert_array_equal(parts, expected)
    with pytest.raises(ValueError, match="is not a range"):
        _training_math.sequence_rows(x, out, 0, shape[2] + 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(32, 77, 50), (1, 1, 1), (3, 5, 7), (5, 1, 3), (7, 6, 1)])
def test_time_contiguous_windows_as_rows(dtype, shape):
    """A window of C-ordered [mb, n, T_all] labels (time contiguous, the other axes strided) as
    rows [mb * T, n], through the SSE tiles: the output layer's label rows."""
    from lstmfast.layers.dense import _to_rows
    mb, n, steps = shape
    full = np.random.default_rng(sum(shape)).standard_normal((mb, n, 2 * steps + 3)).astype(dtype)
    for x in (full[:, :, steps:2 * steps], full[::-1, :, 1:steps + 1]):
        expected = np.ascontiguousarray(x.transpose(0, 2, 1)).reshape(mb * steps, n)
        out = np.full_like(expected, np.nan)
        _training_math.time_contiguous_rows(x, out)
        np.testing.assert_array_equal(out, expected)
        np.testing.assert_array_equal(_to_rows(x), expected)
        parts = np.full_like(expected, np.nan)
        _training_math.time_contiguous_rows(x, parts, 0, mb // 2)
        _training_math.time_contiguous_rows(x, parts, mb // 2)
        np.testing.assert_array_equal(parts, expected)
    if steps > 1:
        with pytest.raises(ValueError, match="contiguous time axis"):
            # (every second time step: not contiguous)
            _training_math.time_contiguous_rows(full[:, :, 0:2 * steps:2],
                                                np.empty((mb * steps, n), dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_output_layer_row_parts_give_the_bits_of_one_part(dtype, monkeypatch):
    """The softmax output layer's softmax, its gradient and the rows it makes run in parts of
    the rows on lstmfast's threads (lstmfast.layers.dense._in_row_parts): the bits of one part,
    and the score of the formula."""
    from lstmfast.layers import dense
    rng = np.random.default_rng(4)
    x = np.asfortranarray(rng.standard_normal((32, 80, 30)).astype(dtype))
    labels = np.zeros((32, 77, 61), dtype=dtype)
    labels[np.arange(32)[:, None], rng.integers(0, 77, (32, 30)), np.arange(30)[None, :] + 7] = 1
    window = labels[:, :, 7:37]
    mask = (rng.random((32, 30)) > 0.1).astype(dtype)
    calls = []
    for name in ("softmax", "cross_entropy_of_softmax_gradient", "sequence_rows",
                 "time_contiguous_rows"):
        monkeypatch.setattr(dense._training_math, name,
                            lambda *args, _real=getattr(_training_math, name), _name=name:
                            calls.append(_name) or _real(*args))

    def run(threads):
        monkeypatch.setattr(dense, "get_num_threads", lambda: threads)
        calls.clear()
        layer = lstmfast.RnnOutputLayer(80, 77, activation="softmax", loss="mcxent", dtype=dtype,
                                        seed=3)
        out = layer.forward(x, training=True)
        score, dx = layer.score_and_backward(window, mask)
        return [out, np.array(score), dx, layer.gradients.copy()], sorted(calls)

    one, calls_one = run(1)
    two, calls_two = run(2)
    # the rows of x and of the labels, the softmax and its gradient: in two parts each
    assert len(calls_one) == 4 and calls_two == sorted(calls_one * 2)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(b, a)
    z = np.ascontiguousarray(x.transpose(0, 2, 1)).reshape(-1, 80).astype(np.float64) @ \
        lstmfast.RnnOutputLayer(80, 77, dtype=dtype, seed=3).W.astype(np.float64)
    y = np.ascontiguousarray(window.transpose(0, 2, 1)).reshape(-1, 77)
    want = -(y * _log_softmax(z)).sum(axis=1) @ mask.reshape(-1) / 32
    np.testing.assert_allclose(float(one[1]), want, rtol=RTOL[dtype] * 10)


def test_install_writes_the_parameters_and_the_state():
    storage = np.zeros(10)
    params = storage[::2]                              # any layout: NumPy's copy
    attributes = {"m": None, "iteration": 3}
    _training_math.install(params, np.arange(5.0), attributes, {"m": np.ones(5), "iteration": 4})
    np.testing.assert_array_equal(storage, [0, 0, 1, 0, 2, 0, 3, 0, 4, 0])
    assert attributes["iteration"] == 4 and attributes["m"].sum() == 5
    with pytest.raises(ValueError):
        _training_math.install(params, np.arange(4.0), attributes, {"iteration": 5})
    assert attributes["iteration"] == 4                # a copy that fails installs nothing
    for arguments in [(None, params), (params, None)]:
        with pytest.raises(TypeError, match="NoneType"):
            _training_math.install(*arguments, attributes, {"iteration": 5})
    for dicts in [(None, {"iteration": 5}), (attributes, None)]:
        with pytest.raises(TypeError, match="NoneType"):
            _training_math.install(params, np.arange(5.0) + 1, *dicts)
    np.testing.assert_array_equal(params, np.arange(5.0))
    assert attributes["iteration"] == 4


@pytest.mark.parametrize("updater", [lstmfast.Sgd(0.1), lstmfast.Adam(0.1)])
def test_updaters_refuse_arrays_they_would_truncate(updater):
    """The new values are cast to the parameters' type: into integers they would be truncated,
    from complex gradients lose their imaginary parts."""
    params = np.arange(3, dtype=np.int64)
    with pytest.raises(TypeError, match="params must be a floating-point array; got dtype int64"):
        updater.apply(params, np.ones(3))
    np.testing.assert_array_equal(params, [0, 1, 2])
    params = np.ones(3)
    with pytest.raises(TypeError, match="gradients must be a real array; got dtype complex128"):
        updater.apply(params, np.ones(3) * 1j)
    np.testing.assert_array_equal(params, [1, 1, 1])
    assert updater.iteration == 0
