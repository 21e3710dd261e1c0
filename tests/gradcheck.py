"""Central-difference gradient checks the way DL4J's ``GradientCheckUtil`` does them.

For every parameter: numeric = (f(p + eps) - f(p - eps)) / (2 eps); relative error
|analytic - numeric| / (|analytic| + |numeric|) (0 when both are 0); a parameter fails when the
relative error exceeds ``max_rel_error`` *and* the absolute error exceeds ``min_abs_error``, or
when either value is not finite. DL4J's defaults for LSTM networks: eps 1e-6, max relative error
1e-3, min absolute error 1e-8.

The one checker of the test suite; tests/core/test_gradcheck.py holds its negative controls.
"""

import numpy as np

EPS = 1e-6
MAX_REL_ERROR = 1e-3
MIN_ABS_ERROR = 1e-8


def check_gradient(score, values, analytic, *, eps=EPS, max_rel_error=MAX_REL_ERROR,
                   min_abs_error=MIN_ABS_ERROR, indices=None):
    """Perturb ``values`` (a float64 array, changed in place and restored) entry by entry and
    compare ``analytic`` (same shape) with central differences of ``score()``.

    Returns a list of failures ``(index, analytic, numeric, relative error)``.
    """
    assert values.dtype == np.float64, "gradient checks run in float64"
    flat_values = values.reshape(-1)
    assert np.shares_memory(flat_values, values), "values must be contiguous so that edits reach them"
    flat_analytic = np.asarray(analytic, dtype=np.float64).reshape(-1)
    assert flat_analytic.shape == flat_values.shape
    failures = []
    for i in range(flat_values.size) if indices is None else indices:
        original = flat_values[i]
        flat_values[i] = original + eps
        plus = score()
        flat_values[i] = original - eps
        minus = score()
        flat_values[i] = original
        numeric = (plus - minus) / (2 * eps)
        a = flat_analytic[i]
        if not (np.isfinite(a) and np.isfinite(numeric)):
            failures.append((i, a, numeric, float("nan")))
            continue
        abs_error = abs(a - numeric)
        rel_error = 0.0 if (a == 0 and numeric == 0) else abs_error / (abs(a) + abs(numeric))
        if rel_error > max_rel_error and abs_error > min_abs_error:
            failures.append((i, a, numeric, rel_error))
    return failures


def assert_gradient(score, values, analytic, what="", **options):
    failures = check_gradient(score, values, analytic, **options)
    assert not failures, (f"{what}: {len(failures)} of {values.size} gradient entries fail the check "
                          f"(index, analytic, numeric, rel error): {failures[:8]}")


def assert_lstm_gradients(arrays, R_out, Q_h, Q_c, *, extra=(), **options):
    """Check lstm_backward's gradients of L = sum(R_out * output) + sum(Q_h * last_h) +
    sum(Q_c * last_c) by central differences, for arrays = (x, W, RW, b, h0, c0) (float64) and
    `extra` (keyword name of lstm_forward, array, name of the Gradients field); `options` go to
    lstm_forward."""
    import lstmfast

    x, W, RW, b, h0, c0 = arrays
    keywords = dict(options, **{name: array for name, array, _ in extra})

    def score():
        fwd = lstmfast.lstm_forward(x, W, RW, b, h0=h0, c0=c0, **keywords)
        return float((fwd.output * R_out).sum() + (fwd.last_h * Q_h).sum()
                     + (fwd.last_c * Q_c).sum())

    fwd = lstmfast.lstm_forward(x, W, RW, b, h0=h0, c0=c0, for_backprop=True, **keywords)
    grads = lstmfast.lstm_backward(fwd, R_out, grad_last_h=Q_h, grad_last_c=Q_c)
    checks = [("x", x, "input"), ("W", W, "input_weights"), ("RW", RW, "recurrent_weights"),
              ("b", b, "bias"), ("h0", h0, "h0"), ("c0", c0, "c0")] + list(extra)
    for name, values, field in checks:
        assert_gradient(score, values, getattr(grads, field), what=name)
