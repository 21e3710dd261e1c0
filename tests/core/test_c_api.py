"""The C-level API, used the way a third party uses it.

A small downstream Cython extension (tests/downstream/, the example of docs/c-api.md) is compiled
at test time in a temporary directory against the lstmfast that is imported here (the installed
one when the suite runs against a wheel), finding `lstmfast/kernels.pxd` through
`lstmfast.get_include()` only. It runs forward and backward passes without the GIL into buffers
it owns, and its results must match the Python API (lstm_forward / lstm_backward) to 1e-12 in
float64. The second part times 10,000 streaming steps through `lstm_step` and through the Python
API (printed and recorded as test properties; only sanity is asserted).

Skipped, with the reason, where no C compiler, Python headers, Cython or setuptools are available.
The compile uses CFLAGS="-O0 -g0" by default (LSTMFAST_DOWNSTREAM_CFLAGS overrides) to keep it
fast: the example's own code is a thin loop; the kernels it times are lstmfast's optimised ones.
"""
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest

import lstmfast

HERE = Path(__file__).resolve().parents[1]
DOWNSTREAM = HERE / "downstream"
EXAMPLE_FILES = ("lstm_downstream.pyx", "setup.py")
DOC = HERE.parent / "docs" / "c-api.md"

RTOL64 = 1e-12
RTOL32 = 1e-5

EXPECTED_CODES = {"LSTM_OK": 0, "LSTM_ERR_ARGUMENT": -1, "LSTM_ERR_ACTIVATION": -2,
                  "LSTM_ERR_TOO_LARGE": -3, "LSTM_ERR_NO_MEMORY": -4}


# ---------------------------------------------------------------------------------------------
# building the downstream extension

def _missing_build_tool():
    """None if the example can be compiled here, else why not."""
    try:
        import Cython
    except ImportError:
        return "Cython is not installed (needed to compile the downstream example)"
    if int(Cython.__version__.split(".")[0]) < 3:
        return f"Cython >= 3 is needed, found {Cython.__version__}"
    try:
        import setuptools  # noqa: F401
    except ImportError:
        return "setuptools is not installed (needed to compile the downstream example)"
    compiler = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    executable = shlex.split(compiler)[0]
    if shutil.which(executable) is None:
        return f"no C compiler: {executable!r} not found"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        return "the Python development headers (Python.h) are not installed"
    return None


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(module, build log) of the downstream example compiled in a fresh temporary directory."""
    reason = _missing_build_tool()
    if reason:
        pytest.skip(reason)
    build_dir = tmp_path_factory.mktemp("downstream")
    for name in EXAMPLE_FILES:
        shutil.copy(DOWNSTREAM / name, build_dir / name)
    env = dict(os.environ)
    env["CFLAGS"] = os.environ.get("LSTMFAST_DOWNSTREAM_CFLAGS", "-O0 -g0")
    # the child must import the same lstmfast as this process (installed or source tree)
    package_parent = str(Path(lstmfast.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(
        [package_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    proc = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=build_dir,
                          env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        pytest.fail(f"the downstream example did not compile:\n{log[-6000:]}")
    suffixes = (".so", ".pyd")
    candidates = [p for p in build_dir.iterdir()
                  if p.name.startswith("lstm_downstream") and p.suffix in suffixes]
    assert len(candidates) == 1, (candidates, log[-3000:])
    spec = importlib.util.spec_from_file_location("lstm_downstream", candidates[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, log


@pytest.fixture(scope="module")
def ds(built):
    return built[0]


# ---------------------------------------------------------------------------------------------
# random problems

def _fortran_with_ld(a, extra_rows):
    """`a` as a column-major view whose leading dimension exceeds its row count."""
    big = np.zeros((a.shape[0] + extra_rows, a.shape[1]), a.dtype, order="F")
    big[: a.shape[0]] = a
    view = big[: a.shape[0]]
    assert view.strides[0] == a.itemsize and view.strides[1] > a.shape[0] * a.itemsize
    return view


def make_case(seed, dtype=np.float64, *, minibatch=3, n_in=4, hidden=5, time_steps=6,
              peepholes=True, h0=True, c0=True, mask=None, strided=False, scale=0.6):
    rng = np.random.default_rng(seed)
    G = 4 * hidden
    case = {
        "x": rng.standard_normal((minibatch, n_in, time_steps)),
        "W": scale * rng.standard_normal((n_in, G)),
        "RW": scale * rng.standard_normal((hidden, G + 3 if peepholes else G)),
        "b": 0.3 * rng.standard_normal(G),
        "eps": rng.standard_normal((minibatch, hidden, time_steps)),
        "h0": rng.standard_normal((minibatch, hidden)) if h0 else None,
        "c0": rng.standard_normal((minibatch, hidden)) if c0 else None,
        "mask": None,
    }
    if mask == "edges":   # leading and trailing masked steps, as padded sequences have
        m = np.ones((minibatch, time_steps))
        m[0, :1] = 0
        m[-1, -2:] = 0
        case["mask"] = m
        case["eps"] = case["eps"] * m[:, None, :]
    for key, value in case.items():
        if value is not None:
            case[key] = np.asarray(value, dtype=dtype)
    case["W"] = np.asfortranarray(case["W"])
    case["RW"] = np.asfortranarray(case["RW"])
    if strided:
        # every operand with unusual strides: negative time stride, transposed axes, a leading
        # dimension larger than the row count, a strided bias, Fortran-ordered state
        case["x"] = np.ascontiguousarray(case["x"][:, :, ::-1])[:, :, ::-1]
        case["eps"] = np.asfortranarray(case["eps"])
        case["W"] = _fortran_with_ld(case["W"], 3)
        case["RW"] = _fortran_with_ld(case["RW"], 2)
        case["b"] = np.repeat(case["b"], 2)[::2]
        for key in ("h0", "c0", "mask"):
            if case[key] is not None:
                case[key] = np.asfortranarray(case[key])
    return case


CASES = {
    "peephole": dict(),
    "plain": dict(peepholes=False),
    "backwards": dict(forwards=False),
    "masked": dict(mask="edges"),
    "masked-backwards-plain": dict(mask="edges", forwards=False, peepholes=False),
    "no-state": dict(h0=False, c0=False),
    "only-h0": dict(c0=False),
    "only-c0": dict(h0=False),
    "tbptt": dict(tbptt=3),
    "hardsigmoid-softsign": dict(gate="hardsigmoid", activation="softsign"),
    "rationaltanh": dict(activation="rationaltanh"),
    "relu-peephole-no-state": dict(activation="relu", h0=False, c0=False),
    "minibatch1-T1": dict(minibatch=1, time_steps=1),
    "strided": dict(strided=True, mask="edges"),
    "strided-backwards-tbptt": dict(strided=True, forwards=False, tbptt=2),
    "larger": dict(minibatch=7, n_in=11, hidden=13, time_steps=9, mask="edges"),
}


def _split_options(options):
    options = dict(options)
    kernel = {"forwards": options.pop("forwards", True),
              "activation": options.pop("activation", "tanh"),
              "gate": options.pop("gate", "sigmoid"),
              "tbptt": options.pop("tbptt", None)}
    return kernel, options


def _python_api(case, kernel, peepholes):
    fwd = lstmfast.lstm_forward(case["x"], case["W"], case["RW"], case["b"], h0=case["h0"],
                                c0=case["c0"], mask=case["mask"], peepholes=peepholes,
                                activation=kernel["activation"],
                                gate_activation=kernel["gate"], forwards=kernel["forwards"],
                                for_backprop=True)
    grads = lstmfast.lstm_backward(fwd, case["eps"], tbptt_length=kernel["tbptt"])
    return fwd, grads


def _c_api(ds, case, kernel, peepholes, guard=0, tuning=None):
    codes = lstmfast.functional._kernels.ACTIVATION_CODES
    return ds.train_step(case["x"], case["W"], case["RW"], case["b"], case["eps"], case["h0"],
                         case["c0"], case["mask"], peepholes=peepholes,
                         forwards=kernel["forwards"], activation=codes[kernel["activation"]],
                         gate_activation=codes[kernel["gate"]],
                         tbptt_length=kernel["tbptt"] or 0, guard=guard, tuning=tuning)


def _compare(c_result, fwd, grads, rtol, atol):
    pairs = {"output": fwd.output, "last_h": fwd.last_h, "last_c": fwd.last_c,
             "input_weights": grads.input_weights, "recurrent_weights": grads.recurrent_weights,
             "bias": grads.bias, "input": grads.input, "h0": grads.h0, "c0": grads.c0}
    for name, expected in pairs.items():
        got = c_result[name]
        assert got.dtype == expected.dtype, name
        assert got.shape == expected.shape, name
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, err_msg=name)


# ---------------------------------------------------------------------------------------------
# tests

def test_get_include_finds_the_shipped_pxd_files():
    include = Path(lstmfast.get_include())
    assert include.is_dir()
    package = include / "lstmfast"
    assert (package / "__init__.py").exists()
    assert package.resolve() == Path(lstmfast.__file__).resolve().parent
    kernels_pxd = (package / "kernels.pxd").read_text(encoding="utf-8")
    # everything kernels.pxd cimports from lstmfast ships beside it
    for module in set(re.findall(r"from\s+lstmfast\.(\w+)\s+cimport", kernels_pxd)):
        assert (package / f"{module}.pxd").exists(), module


def test_built_against_get_include(built):
    module, log = built
    include = lstmfast.get_include()
    assert f"-I{include}" in log or f"-I {include}" in log, log[-3000:]
    assert module.__file__ and "lstm_downstream" in module.__file__


def test_exported_constants(ds):
    assert ds.ERROR_CODES == EXPECTED_CODES
    codes = lstmfast.functional._kernels.ACTIVATION_CODES
    assert ds.ACTIVATION_CODES["tanh"] == codes["tanh"]
    assert ds.ACTIVATION_CODES["sigmoid"] == codes["sigmoid"]
    assert ds.ACTIVATION_CODES["hardsigmoid"] == codes["hardsigmoid"]
    assert ds.ACTIVATION_CODES["count"] == len(codes) == len(lstmfast.ACTIVATIONS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_backward_float64_matches_python_api(ds, name):
    kernel, shape = _split_options(CASES[name])
    peepholes = shape.get("peepholes", True)
    case = make_case(sorted(CASES).index(name), np.float64, **shape)
    result = _c_api(ds, case, kernel, peepholes, guard=16)
    assert result["gil_held"] == 0, "the kernels were called with the GIL held"
    assert result["guard_intact"], "a kernel wrote past the size its sizing function gave"
    fwd, grads = _python_api(case, kernel, peepholes)
    _compare(result, fwd, grads, RTOL64, RTOL64)
    # the cache is read-only: a second backward pass from the Python API agrees as well
    again = lstmfast.lstm_backward(fwd, case["eps"], tbptt_length=kernel["tbptt"])
    np.testing.assert_array_equal(again.input_weights, grads.input_weights)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_team_of_eight_stays_inside_the_sized_work_spaces(ds, dtype):
    """Eight threads at minibatch 70 through the C API: every thread's region of the work
    spaces (its packed weights and its packed copy of h_prev / the deltas; the last thread's
    regions, and the gradient GEMMs' second row group, end the reservation) stays inside what
    the sizing functions gave, and the results match the Python API. The team of eight comes
    from a tuning record passed through lstm_forward_ex / lstm_backward_ex (the defaults give
    this small shape fewer threads)."""
    tuning = {"team_min_units": 1, "team_min_step_work": 0, "threads": 8}
    kernel, shape = _split_options(dict(minibatch=70, n_in=9, hidden=50, time_steps=5,
                                         mask="edges"))
    case = make_case(7, dtype, **shape)
    result = _c_api(ds, case, kernel, True, guard=16, tuning=tuning)
    fwd, grads = _python_api(case, kernel, True)
    if lstmfast.kernels.simd_variant() != "portable":
        assert result["forward_report"]["threads"] == 8
        assert result["backward_report"]["threads"] == 8
        # the gradient GEMMs' second row group wrote its sums to the end of the work space
        assert result["backward_report"]["gradient_split"] == 2
    assert result["guard_intact"], "a thread wrote past the size the sizing functions gave"
    if dtype == np.float32:
        _compare(result, fwd, grads, RTOL32, 1e-6)
    else:
        _compare(result, fwd, grads, RTOL64, RTOL64)


@pytest.mark.parametrize("name", ["peephole", "plain", "masked-backwards-plain", "strided",
                                  "tbptt", "hardsigmoid-softsign", "only-c0"])
def test_forward_backward_float32_through_the_same_fused_functions(ds, name):
    kernel, shape = _split_options(CASES[name])
    peepholes = shape.get("peepholes", True)
    case = make_case(100 + sorted(CASES).index(name), np.float32, **shape)
    result = _c_api(ds, case, kernel, peepholes, guard=16)
    assert result["gil_held"] == 0
    assert result["guard_intact"]
    assert result["output"].dtype == np.float32
    fwd, grads = _python_api(case, kernel, peepholes)
    _compare(result, fwd, grads, RTOL32, 1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [dict(minibatch=2, n_in=3, hidden=4, time_steps=5),
                                   # long enough for the inference pass to work in chunks
                                   dict(minibatch=64, n_in=64, hidden=64, time_steps=250,
                                        scale=0.1)])
def test_inference_forward_with_caller_workspace(ds, dtype, shape):
    case = make_case(7, dtype, mask="edges", **shape)
    output, last_h, last_c = ds.forward(case["x"], case["W"], case["RW"], case["b"], case["h0"],
                                        case["c0"], case["mask"], peepholes=True)
    rtol = RTOL64 if dtype == np.float64 else RTOL32
    for for_backprop in (False, True):
        fwd = lstmfast.lstm_forward(case["x"], case["W"], case["RW"], case["b"], h0=case["h0"],
                                    c0=case["c0"], mask=case["mask"], for_backprop=for_backprop)
        np.testing.assert_allclose(output, fwd.output, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(last_h, fwd.last_h, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(last_c, fwd.last_c, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("forwards", [True, False])
def test_forward_with_lengths_through_the_options(ds, dtype, forwards):
    case = make_case(9, dtype, minibatch=4, n_in=3, hidden=5, time_steps=6, peepholes=False)
    lengths = np.array([6, 2, 0, 4], dtype=np.intp)
    W, RW = case["W"], case["RW"]
    output, last_h, last_c = ds.forward_lengths(case["x"], W, RW, case["b"], lengths,
                                                forwards=forwards)
    fwd = lstmfast.lstm_forward(case["x"], W, RW, case["b"], lengths=lengths, forwards=forwards)
    rtol = RTOL64 if dtype == np.float64 else RTOL32
    np.testing.assert_allclose(output, fwd.output, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(last_h, fwd.last_h, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(last_c, fwd.last_c, rtol=rtol, atol=rtol)
    assert not output[1, :, 2:].any() and not output[2].any()
    with pytest.raises(ValueError, match="every length must be in 0..T"):
        ds.forward_lengths(case["x"], W, RW, case["b"], np.array([7, 0, 0, 0], dtype=np.intp))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("minibatch", [1, 4])
def test_forward_reads_weights_in_another_gate_order(ds, dtype, minibatch):
    """lstm_options.gate_blocks: weights in nn.LSTM's gate order (i, f, g, o) give the pass of
    the same weights in the seed's order (g, f, o, i); a map that is not a permutation of 0..3
    is refused with LSTM_ERR_ARGUMENT."""
    case = make_case(13, dtype, minibatch=minibatch, n_in=3, hidden=5, time_steps=6,
                     peepholes=False)
    W, RW, b = case["W"], case["RW"], case["b"]
    h = RW.shape[0]

    def torch_order(a, axis):
        g, f, o, i = np.split(a, 4, axis=axis)
        return np.ascontiguousarray(np.concatenate([i, f, g, o], axis=axis))

    W_t, RW_t, b_t = (np.asfortranarray(torch_order(W, 1)), np.asfortranarray(torch_order(RW, 1)),
                      torch_order(b, 0))
    output, last_h, last_c = ds.forward_lengths(case["x"], W_t, RW_t, b_t, None,
                                                gate_blocks=(2, 1, 3, 0))
    want, want_h, want_c = ds.forward_lengths(case["x"], W, RW, b, None)
    np.testing.assert_array_equal(output, want)
    np.testing.assert_array_equal(last_h, want_h)
    np.testing.assert_array_equal(last_c, want_c)
    fwd = lstmfast.lstm_forward(case["x"], W, RW, b)
    rtol = RTOL64 if dtype == np.float64 else RTOL32
    np.testing.assert_allclose(output, fwd.output, rtol=rtol, atol=rtol)
    assert output.shape == (minibatch, h, 6)
    with pytest.raises(ds.KernelError) as refused:
        ds.forward_lengths(case["x"], W_t, RW_t, b_t, None, gate_blocks=(2, 1, 3, 3))
    assert refused.value.code == ds.ERROR_CODES["LSTM_ERR_ARGUMENT"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("peepholes", [True, False])
def test_lstm_step_streaming_matches_a_whole_sequence(ds, dtype, peepholes):
    case = make_case(11, dtype, minibatch=3, n_in=4, hidden=6, time_steps=20,
                     peepholes=peepholes)
    xs = np.ascontiguousarray(case["x"].transpose(2, 0, 1))          # [T, minibatch, n_in]
    h = np.asfortranarray(case["h0"].copy())                         # any strides will do
    c = case["c0"].copy()
    ds.stream(xs[:7], case["W"], case["RW"], case["b"], h, c, peepholes=peepholes)
    ds.stream(xs[7:], case["W"], case["RW"], case["b"], h, c, peepholes=peepholes)
    fwd = lstmfast.lstm_forward(case["x"], case["W"], case["RW"], case["b"], h0=case["h0"],
                                c0=case["c0"], peepholes=peepholes)
    rtol = RTOL64 if dtype == np.float64 else RTOL32
    np.testing.assert_allclose(h, fwd.last_h, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(c, fwd.last_c, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(h, fwd.output[:, :, -1], rtol=rtol, atol=rtol)


def test_sizing_functions(ds):
    small = ds.sizes(3, 4, 5, 6)
    longer = ds.sizes(3, 4, 5, 60)
    assert small["check"] == 0 and longer["check"] == 0
    for key in ("cache", "forward_workspace", "backward_workspace"):
        assert small[key] > 0, key
        assert longer[key] >= small[key], key
    assert longer["cache"] > small["cache"]
    assert small["forward_workspace_for_backprop"] >= 0
    # the cache holds at least the per-step gate pre-activations and activations
    assert small["cache"] >= 2 * 4 * 5 * 3 * 6
    # agreement with the sizes the Python API allocates
    kernels = lstmfast.functional._kernels
    assert small["cache"] == kernels.cache_size(3, 4, 5, 6)
    assert small["backward_workspace"] == kernels.backward_workspace_size(3, 4, 5, 6)
    assert small["forward_workspace"] == kernels.forward_workspace_size(3, 4, 5, 6, False)
    bad = ds.sizes(3, 4, 0, 6)
    assert bad["check"] == EXPECTED_CODES["LSTM_ERR_ARGUMENT"]
    assert bad["forward_workspace"] == -1
    assert bad["backward_workspace"] == -1


def test_errors_come_back_as_codes(ds):
    codes = ds.error_codes()      # would not return at all if any of these calls crashed
    ARG, ACT, LARGE = (EXPECTED_CODES[k] for k in
                       ("LSTM_ERR_ARGUMENT", "LSTM_ERR_ACTIVATION", "LSTM_ERR_TOO_LARGE"))
    expected = {
        "forward_hidden0": ARG,
        "step_hidden0": ARG,
        "forward_workspace_size_hidden0": -1,
        "backward_workspace_size_hidden0": -1,
        "check_dims_hidden0": ARG,
        "check_dims_null": ARG,
        "forward_unknown_activation": ACT,
        "forward_tanh_gate_activation": ACT,
        "forward_null_x": ARG,
        "forward_small_leading_dimension": ARG,
        "step_two_time_steps": ARG,
        "backward_null_cache": ARG,
        "check_dims_too_large": LARGE,
        "forward_ok": EXPECTED_CODES["LSTM_OK"],
    }
    assert {k: codes[k] for k in expected} == expected


def test_cache_size_is_minus_one_for_invalid_dims(ds):
    assert ds.error_codes()["cache_size_hidden0"] == -1


def test_example_errors_are_python_exceptions(ds):
    case = make_case(3, np.float64)
    with pytest.raises(ValueError, match="column-major"):
        ds.forward(case["x"], np.ascontiguousarray(case["W"]), case["RW"], case["b"],
                   peepholes=True)
    with pytest.raises(ValueError, match="recurrent_weights"):
        ds.forward(case["x"], case["W"], case["RW"], case["b"], peepholes=False)
    with pytest.raises(ds.KernelError) as info:
        ds.forward(case["x"], case["W"], case["RW"], case["b"], peepholes=True, activation=99)
    assert info.value.code == EXPECTED_CODES["LSTM_ERR_ACTIVATION"]


def test_doc_shows_the_compiled_example():
    if not DOC.exists():
        pytest.skip(f"{DOC} is not part of this installation")
    doc = DOC.read_text(encoding="utf-8")
    for name in EXAMPLE_FILES:
        source = (DOWNSTREAM / name).read_text(encoding="utf-8")
        # the fenced block after the marker "<!-- begin tests/downstream/NAME ... -->"
        found = re.search(r"<!-- begin tests/downstream/" + re.escape(name)
                          + r" [^\n]*-->\n```\w*\n(.*?)^```$", doc, re.S | re.M)
        assert found, f"docs/c-api.md has no marked block for tests/downstream/{name}"
        assert found.group(1) == source, (
            f"docs/c-api.md shows a different tests/downstream/{name}: copy the file into the "
            f"block after its marker")


# ---------------------------------------------------------------------------------------------
# streaming cost: C API vs Python API

STEPS = 10_000


def test_streaming_step_cost(ds, record_property, capsys):
    hidden, n_in, minibatch = 32, 32, 1
    case = make_case(5, np.float64, minibatch=minibatch, n_in=n_in, hidden=hidden,
                     time_steps=STEPS, peepholes=True, h0=False, c0=False, scale=0.2)
    W, RW, b = case["W"], case["RW"], case["b"]
    xs = np.ascontiguousarray(case["x"].transpose(2, 0, 1))          # [steps, 1, n_in]

    # C API: one lstm_step per input, state updated in place, all inside one nogil loop
    ds.stream(xs[:100], W, RW, b, np.zeros((1, hidden)), np.zeros((1, hidden)), peepholes=True)
    c_times = []
    for _ in range(3):
        h = np.zeros((minibatch, hidden))
        c = np.zeros((minibatch, hidden))
        start = time.perf_counter()
        ds.stream(xs, W, RW, b, h, c, peepholes=True)
        c_times.append(time.perf_counter() - start)
    c_step = min(c_times) / STEPS

    # Python API: one lstm_forward call per step, carrying last_h / last_c
    def python_stream(count):
        h_py = c_py = None
        for i in range(count):
            fwd = lstmfast.lstm_forward(xs[i], W, RW, b, h0=h_py, c0=c_py)
            h_py, c_py = fwd.last_h, fwd.last_c
        return h_py, c_py

    python_stream(100)
    start = time.perf_counter()
    h_py, c_py = python_stream(STEPS)
    py_step = (time.perf_counter() - start) / STEPS

    # both paths computed the same thing
    np.testing.assert_allclose(h, h_py, rtol=RTOL64, atol=RTOL64)
    np.testing.assert_allclose(c, c_py, rtol=RTOL64, atol=RTOL64)
    # sanity only: the figures belong in benchmarks/RESULTS.md, not in an assertion
    assert 0 < c_step < 1e-3 and 0 < py_step < 1e-2

    record_property("c_api_step_us", round(c_step * 1e6, 3))
    record_property("python_api_step_us", round(py_step * 1e6, 3))
    with capsys.disabled():
        print(f"\n[lstmfast] streaming step, h={hidden}, nIn={n_in}, minibatch={minibatch}, "
              f"float64, {STEPS} steps: C API lstm_step {c_step * 1e6:.2f} us/step, "
              f"Python API lstm_forward {py_step * 1e6:.2f} us/step "
              f"({py_step / c_step:.1f}x)")
