"""The kernels' fast code paths: vectorised exp/tanh/sigmoid (accuracy stated in
pyx/lstmfast_simd.h), the packed-weights recurrent GEMM, and the portable fallback."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import lstmfast
from lstmfast import kernels

# Maximum error stated in pyx/lstmfast_simd.h, in units of the dtype's machine epsilon (relative)
ULP_BOUND = {np.float32: 4.0, np.float64: 8.0}


def _relative_error(values, reference, dtype):
    tiny = np.finfo(dtype).tiny
    return np.abs(values.astype(np.float64) - reference) / np.maximum(np.abs(reference), tiny)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("function", ["tanh", "sigmoid", "exp"])
def test_vector_math_accuracy(function, dtype):
    if function == "exp":
        limit = 700.0 if dtype == np.float64 else 85.0
        x = np.linspace(-limit, limit, 400_001)
    else:
        x = np.concatenate([np.linspace(-40, 40, 400_001), np.linspace(-1e-3, 1e-3, 20_001),
                            np.geomspace(1e-30, 1, 2_000), -np.geomspace(1e-30, 1, 2_000)])
    x = x.astype(dtype)
    xd = x.astype(np.float64)   # references in float64 (float32) or as NumPy has them (float64)
    reference = {"tanh": np.tanh, "exp": np.exp,
                 "sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v))}[function](xd)
    got = kernels.vector_math(function, x)
    assert got.dtype == dtype
    worst = _relative_error(got, reference, dtype).max() / np.finfo(dtype).eps
    assert worst <= ULP_BOUND[dtype], f"{function} {dtype.__name__}: {worst:.2f} eps"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_math_special_values(dtype):
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30], dtype=dtype)
    tanh = kernels.vector_math("tanh", x)
    assert np.isnan(tanh[0]) and list(tanh[1:3]) == [1.0, -1.0]
    assert tanh[3] == 0 and tanh[5] == 1 and tanh[6] == -1
    assert not np.signbit(tanh[3]) and np.signbit(tanh[4])        # tanh(-0) = -0
    sigmoid = kernels.vector_math("sigmoid", x)
    assert np.isnan(sigmoid[0]) and list(sigmoid[1:3]) == [1.0, 0.0] and sigmoid[3] == 0.5
    exp = kernels.vector_math("exp", x)
    assert np.isnan(exp[0]) and exp[1] == np.inf and exp[2] == 0.0 and exp[3] == 1.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_across_its_exp_clamps(dtype):
    """The sigmoid clamps its exp argument -x to [-86, 89] (float) / [-708, 710] (double) and
    selects nothing after (pyx/lstmfast_simd.h): checked on both sides of the clamps and of where
    e^-x overflows, against 1 / (1 + e^-x) in float64; where the reference is below the smallest
    normal number (the sigmoid of large negative x) the error is at most that number."""
    limit = 120.0 if dtype == np.float32 else 760.0
    edges = [86.0, -86.0, 88.72, 88.73, 89.0, -89.0, 90.0, -90.0, 708.0, -708.0, 709.78, -709.78,
             709.79, -709.79, 710.0, -710.0, 711.0, -711.0]
    x = np.concatenate([np.linspace(-limit, limit, 400_001), np.linspace(-1.0, 1.0, 2_001),
                        np.array(edges)]).astype(dtype)
    with np.errstate(over="ignore"):
        reference = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    got = kernels.vector_math("sigmoid", x)
    tiny = np.finfo(dtype).tiny
    normal = reference >= tiny
    worst = _relative_error(got[normal], reference[normal], dtype).max() / np.finfo(dtype).eps
    assert worst <= ULP_BOUND[dtype], f"sigmoid {dtype.__name__}: {worst:.2f} eps"
    assert np.abs(got[~normal].astype(np.float64) - reference[~normal]).max() <= tiny
    assert np.all(got[x >= 40] == 1.0) and np.all(got[x <= -750 if dtype == np.float64 else
                                                      x <= -110] == 0.0)


def _problem(dtype, seed=0, T=7, mb=19, n_in=5, h=13, peepholes=True):
    rng = np.random.default_rng(seed)
    columns = 4 * h + (3 if peepholes else 0)
    return dict(
        x=rng.standard_normal((mb, n_in, T)).astype(dtype),
        input_weights=(rng.standard_normal((n_in, 4 * h)) * 0.5).astype(dtype),
        recurrent_weights=(rng.standard_normal((h, columns)) * 0.5).astype(dtype),
        bias=(rng.standard_normal(4 * h) * 0.5).astype(dtype),
        h0=rng.standard_normal((mb, h)).astype(dtype),
        c0=rng.standard_normal((mb, h)).astype(dtype),
    ), rng.standard_normal((mb, h, T)).astype(dtype)


def _run(problem, epsilon, tuning=None):
    fwd = lstmfast.lstm_forward(**problem, for_backprop=True, _tuning=tuning)
    grads = lstmfast.lstm_backward(fwd, epsilon, _tuning=tuning)
    return [fwd.output, grads.input_weights, grads.recurrent_weights, grads.bias, grads.input,
            grads.h0, grads.c0]


# (minibatch, n_in, hidden): full and partial row blocks of the panel kernel; below 4 rows the
# weights are packed as rows, a column-major W / RW through 8 x 8 (float) / 4 x 4 (double)
# register transposes: whole blocks only (16, 8), whole blocks and a partial block of k and of
# columns (17, 33; 5, 13), partial blocks only (3, 2)
# (32, 6, 12), (40, 5, 14): the AVX-512 tile's two panels whole, and its second panel partial
PACKED_CASES = ([(m, 5, 13) for m in (1, 3, 16, 19, 40, 70, 130)] + [(32, 6, 12), (40, 5, 14)]
                + [(m, n_in, h) for m in (1, 2, 3) for n_in, h in ((16, 8), (17, 33), (3, 2))])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("minibatch, n_in, hidden", PACKED_CASES)
def test_packed_recurrent_gemm_matches_blas(dtype, minibatch, n_in, hidden):
    """The packed kernel (AVX2 or AVX-512) and OpenBLAS give the same passes to rounding."""
    problem, epsilon = _problem(dtype, mb=minibatch, n_in=n_in, h=hidden)
    with_blas = _run(problem, epsilon, {"packed_gemm": 0})
    with_packed = _run(problem, epsilon, {"packed_gemm": 1})
    tolerance = 1e-4 if dtype == np.float32 else 1e-12
    for a, b in zip(with_packed, with_blas):
        assert np.abs(a - b).max() <= tolerance * max(1.0, np.abs(b).max())


def test_recurrent_gemm_choice_is_validated():
    problem, epsilon = _problem(np.float64, mb=2, n_in=3, h=4)
    with pytest.raises(ValueError, match="packed_gemm must be in 0..1, got 2"):
        _run(problem, epsilon, {"packed_gemm": 2})


def test_portable_path_gives_the_same_results():
    """LSTMFAST_DISABLE_AVX2=1 selects the baseline x86-64 code (SSE2 math, OpenBLAS for the
    recurrent products); it agrees with the AVX2+FMA path to rounding."""
    script = (
        "import json, sys, numpy as np, lstmfast\n"
        "from lstmfast import kernels\n"
        "sys.path.insert(0, %r)\n"
        "from test_simd_math import _problem, _run\n"
        "problem, eps = _problem(np.float64, seed=3)\n"
        "print(json.dumps({'variant': kernels.simd_variant(),"
        " 'values': [a.ravel().tolist() for a in _run(problem, eps)]}))\n"
    ) % os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, LSTMFAST_DISABLE_AVX2="1")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=120, cwd=os.path.dirname(os.path.abspath(__file__)))
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["variant"] == "portable"
    problem, epsilon = _problem(np.float64, seed=3)
    here = _run(problem, epsilon)
    for mine, theirs in zip(here, payload["values"]):
        theirs = np.asarray(theirs)
        assert np.abs(mine.ravel() - theirs).max() <= 1e-12 * max(1.0, np.abs(theirs).max())
