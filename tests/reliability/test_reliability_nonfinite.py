"""Non-finite values.

By default NaN and Inf propagate as IEEE arithmetic says: a NaN in one example's input makes
that example's outputs NaN from that step on and leaves every other example bit for bit as it
would be; Inf inputs and weights saturate the gates exactly as the reference (NumPy float64)
does. Nothing hangs (every loop has a fixed trip count). With check_finite=True a non-finite
argument is refused with a ValueError naming it.
"""
import time

import numpy as np
import pytest

import lstmfast
import reference as R
from reliability_support import add_count, names_argument, record

MB, NIN, H, T = 3, 4, 5, 6


def _problem(dtype=np.float64, peepholes=True, seed=0):
    rng = np.random.default_rng(seed)
    return dict(
        x=rng.standard_normal((MB, NIN, T)).astype(dtype),
        W=(0.5 * rng.standard_normal((NIN, 4 * H))).astype(dtype),
        RW=(0.5 * rng.standard_normal((H, 4 * H + (3 if peepholes else 0)))).astype(dtype),
        b=(0.3 * rng.standard_normal(4 * H)).astype(dtype),
        eps=rng.standard_normal((MB, H, T)).astype(dtype),
    )


def _run(p, **kw):
    fwd = lstmfast.lstm_forward(p["x"], p["W"], p["RW"], p["b"], for_backprop=True, **kw)
    return fwd, lstmfast.lstm_backward(fwd, p["eps"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("forwards", [True, False])
@pytest.mark.parametrize("peepholes", [True, False])
@pytest.mark.parametrize("step", [0, 2, T - 1])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_input_stays_in_its_example(dtype, forwards, peepholes, step, bad):
    p = _problem(dtype, peepholes)
    example = 1
    finite = dict(p)
    poisoned = dict(p, x=p["x"].copy())
    poisoned["x"][example, 2, step] = bad
    f_fwd, f_grads = _run(finite, forwards=forwards)
    with np.errstate(all="ignore"):
        p_fwd, p_grads = _run(poisoned, forwards=forwards)
    others = [m for m in range(MB) if m != example]
    # every other example: bit for bit as without the bad value
    for name in ("output", "last_h", "last_c"):
        a, b = getattr(p_fwd, name), getattr(f_fwd, name)
        assert a[others].tobytes() == b[others].tobytes(), name
    for name in ("input", "h0", "c0"):
        a, b = getattr(p_grads, name), getattr(f_grads, name)
        assert a[others].tobytes() == b[others].tobytes(), name
    # the example itself: unchanged before the step (in processing order), then as IEEE says
    order = list(range(T)) if forwards else list(range(T - 1, -1, -1))
    before = order[:order.index(step)]
    out_p, out_f = p_fwd.output[example], f_fwd.output[example]
    assert out_p[:, before].tobytes() == out_f[:, before].tobytes()
    if np.isnan(bad):
        assert np.isnan(out_p[:, step]).all()
        assert np.isnan(p_fwd.last_h[example]).all() and np.isnan(p_fwd.last_c[example]).all()
        # the parameter gradients sum over the examples: NaN
        assert np.isnan(p_grads.bias).all() and np.isnan(p_grads.input_weights).any()
    if dtype == np.float64:
        with np.errstate(all="ignore"):
            ref = R.ref_forward(poisoned["x"], p["W"], p["RW"], p["b"], forwards=forwards)
        np.testing.assert_array_equal(np.isnan(p_fwd.output), np.isnan(ref.output))
        ok = np.isfinite(ref.output)
        np.testing.assert_allclose(p_fwd.output[ok], ref.output[ok], rtol=1e-9, atol=1e-12)
    add_count("non-finite: single-example propagation cases")


def _compare_ieee(got, want, label):
    got, want = np.asarray(got), np.asarray(want)
    assert np.array_equal(np.isnan(got), np.isnan(want)), \
        f"{label}: NaN at {np.argwhere(np.isnan(got) != np.isnan(want))[:5].tolist()}"
    inf = np.isinf(want)
    assert np.array_equal(np.isinf(got), inf), f"{label}: Inf positions differ"
    assert np.array_equal(got[inf], want[inf]), f"{label}: Inf signs differ"
    ok = np.isfinite(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-8, atol=1e-10, err_msg=label)


def _poison(p, what):
    p = {k: v.copy() for k, v in p.items()}
    kw = {}
    if what == "x +Inf":
        p["x"][1, 2, 3] = np.inf
    elif what == "x -Inf at the first step":
        p["x"][1, 2, 0] = -np.inf
    elif what == "x 1e300":
        p["x"][0, 1, 2] = 1e300
    elif what == "W Inf":
        p["W"][1, 7] = np.inf
    elif what == "W NaN":
        p["W"][2, 0] = np.nan
    elif what == "RW Inf, h0 given":
        p["RW"][2, 3] = np.inf
        kw["h0"] = np.zeros((MB, H))
    elif what == "RW Inf, no h0":
        p["RW"][2, 3] = np.inf
    elif what == "bias +Inf everywhere":
        p["b"][:] = np.inf
    elif what == "forget bias -Inf":
        p["b"][H:2 * H] = -np.inf
    elif what == "peephole Inf":
        p["RW"][:, 4 * H] = np.inf
    elif what == "h0 Inf":
        kw["h0"] = np.zeros((MB, H))
        kw["h0"][0, 0] = np.inf
    elif what == "c0 Inf":
        kw["c0"] = np.zeros((MB, H))
        kw["c0"][0, 0] = np.inf
    elif what == "c0 NaN":
        kw["c0"] = np.zeros((MB, H))
        kw["c0"][2, 1] = np.nan
    elif what == "mask NaN":
        kw["mask"] = np.ones((MB, T))
        kw["mask"][0, 2] = np.nan
    elif what == "epsilon NaN":
        p["eps"][0, 0, 2] = np.nan
    elif what == "epsilon Inf":
        p["eps"][2, 1, 5] = -np.inf
    else:
        raise ValueError(what)
    return p, kw


CASES = ["x +Inf", "x -Inf at the first step", "x 1e300", "W Inf", "W NaN", "RW Inf, h0 given",
         "bias +Inf everywhere", "forget bias -Inf", "peephole Inf", "h0 Inf", "c0 Inf", "c0 NaN",
         "mask NaN", "epsilon NaN", "epsilon Inf"]


@pytest.mark.parametrize("what", CASES + ["RW Inf, no h0"])
@pytest.mark.parametrize("forwards", [True, False])
def test_non_finite_values_follow_ieee_like_the_reference(what, forwards):
    p, kw = _poison(_problem(), what)
    with np.errstate(all="ignore"):
        fwd, grads = _run(p, forwards=forwards, **kw)
        ref = R.ref_forward(p["x"], p["W"], p["RW"], p["b"], forwards=forwards, **kw)
        ref_grads = R.ref_backward(ref, p["eps"])
    for name in ("output", "last_h", "last_c"):
        _compare_ieee(getattr(fwd, name), getattr(ref, name), f"{what}: {name}")
    for name in R.GRAD_NAMES:
        _compare_ieee(getattr(grads, name), getattr(ref_grads, name), f"{what}: d{name}")
    add_count("non-finite: IEEE cases compared with the reference")


def test_all_nan_long_sequences_do_not_hang():
    rng = np.random.default_rng(1)
    mb, n_in, h, steps = 8, 16, 32, 2000
    x = np.full((mb, n_in, steps), np.nan, np.float32)
    W = rng.standard_normal((n_in, 4 * h)).astype(np.float32)
    RW = np.full((h, 4 * h + 3), np.nan, np.float32)
    b = np.full(4 * h, np.inf, np.float32)
    start = time.perf_counter()
    with np.errstate(all="ignore"):
        fwd = lstmfast.lstm_forward(x, W, RW, b, for_backprop=True)
        grads = lstmfast.lstm_backward(fwd, np.full((mb, h, steps), np.nan, np.float32))
    elapsed = time.perf_counter() - start
    assert np.isnan(fwd.output).all() and np.isnan(grads.input_weights).all()
    # the same problem with finite values, for scale
    start = time.perf_counter()
    fwd = lstmfast.lstm_forward(np.zeros_like(x), W, np.zeros_like(RW), np.zeros_like(b),
                                for_backprop=True)
    lstmfast.lstm_backward(fwd, np.zeros((mb, h, steps), np.float32))
    finite = time.perf_counter() - start
    record("non-finite: all-NaN pass time / finite pass time", round(elapsed / max(finite, 1e-9), 2))
    assert elapsed < 10 * finite + 1.0


# ---------------------------------------------------------------------------------------------
# check_finite=True

ARGS = ("x", "input_weights", "recurrent_weights", "bias", "h0", "c0", "mask")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("which", ARGS)
def test_check_finite_names_the_argument(which, bad, dtype):
    p = _problem(dtype)
    args = dict(x=p["x"], input_weights=p["W"], recurrent_weights=p["RW"], bias=p["b"],
                h0=np.zeros((MB, H), dtype), c0=np.zeros((MB, H), dtype),
                mask=np.ones((MB, T), dtype))
    args[which] = args[which].copy()
    args[which].reshape(-1)[min(5, args[which].size - 1)] = bad
    saved = {k: v.tobytes() for k, v in args.items()}
    positional = [args.pop(k) for k in ("x", "input_weights", "recurrent_weights", "bias")]
    with pytest.raises(ValueError) as info:
        lstmfast.lstm_forward(*positional, check_finite=True, **args)
    assert names_argument(str(info.value), which), str(info.value)
    assert "NaN or Inf" in str(info.value)
    # refused without touching anything; and by default the same call runs
    args.update(zip(("x", "input_weights", "recurrent_weights", "bias"), positional))
    assert {k: v.tobytes() for k, v in args.items()} == saved
    with np.errstate(all="ignore"):
        lstmfast.lstm_forward(*positional, **{k: args[k] for k in ("h0", "c0", "mask")})
    add_count("non-finite: check_finite refusals")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_check_finite_epsilon(bad):
    p = _problem()
    fwd = lstmfast.lstm_forward(p["x"], p["W"], p["RW"], p["b"], for_backprop=True)
    eps = p["eps"].copy()
    eps[2, 4, 5] = bad
    with pytest.raises(ValueError) as info:
        lstmfast.lstm_backward(fwd, eps, check_finite=True)
    assert names_argument(str(info.value), "epsilon"), str(info.value)
    with np.errstate(all="ignore"):
        lstmfast.lstm_backward(fwd, eps)


def test_check_finite_changes_nothing_for_finite_input():
    p = _problem(np.float32)
    a = lstmfast.lstm_forward(p["x"], p["W"], p["RW"], p["b"], for_backprop=True)
    b = lstmfast.lstm_forward(p["x"], p["W"], p["RW"], p["b"], for_backprop=True,
                              check_finite=True)
    assert a.output.tobytes() == b.output.tobytes()
    ga = lstmfast.lstm_backward(a, p["eps"])
    gb = lstmfast.lstm_backward(b, p["eps"], check_finite=True)
    for name in R.GRAD_NAMES:
        assert getattr(ga, name).tobytes() == getattr(gb, name).tobytes()
