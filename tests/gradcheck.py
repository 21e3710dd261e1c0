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
