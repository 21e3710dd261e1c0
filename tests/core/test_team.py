"""The time loops' thread team (lstmfast.set_num_threads): every thread count gives the seed's
numbers (checked against the NumPy reference, and against one thread), with uneven unit splits,
peepholes, masks, truncated BPTT, both directions; the team is safe under concurrent passes,
cancellation and fork, and OpenBLAS's thread setting is restored after each pass."""
import multiprocessing
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import lstmfast
from lstmfast import kernels

from reference import ref_backward, ref_forward, stable_seed


# tuning that lets tiny problems use the team too, so that uneven splits (e.g. 7 units on 3
# threads) and widths that are not whole 6-column panels are exercised
SMALL_TEAM = {"team_min_units": 1, "team_min_step_work": 0}


@pytest.fixture
def small_team_limits():
    """The SMALL_TEAM tuning; restores the thread count afterwards."""
    threads = lstmfast.get_num_threads()
    yield dict(SMALL_TEAM)
    lstmfast.set_num_threads(threads)


def _problem(rng, T, mb, n_in, h, dtype, peepholes, masked):
    x = rng.standard_normal((mb, n_in, T)).astype(dtype)
    W = np.asfortranarray(rng.standard_normal((n_in, 4 * h)) * 0.4, dtype)
    RW = np.asfortranarray(rng.standard_normal((h, 4 * h + (3 if peepholes else 0))) * 0.4, dtype)
    b = (rng.standard_normal(4 * h) * 0.3).astype(dtype)
    h0 = rng.standard_normal((mb, h)).astype(dtype)
    c0 = rng.standard_normal((mb, h)).astype(dtype)
    eps = rng.standard_normal((mb, h, T)).astype(dtype)
    mask = None
    if masked:
        mask = (rng.random((mb, T)) > 0.3).astype(dtype)
        mask[:, -1] = 1
    return x, W, RW, b, h0, c0, eps, mask


def _run(problem, peepholes, forwards, tbptt, threads, tuning=SMALL_TEAM, reports=None):
    """The training and inference passes under `tuning`; `reports` (a dict) receives the
    kernels' reports of the training forward, the backward and the inference forward."""
    x, W, RW, b, h0, c0, eps, mask = problem
    lstmfast.set_num_threads(threads)
    reports = {} if reports is None else reports
    for name in ("forward", "backward", "inference"):
        reports[name] = {}
    fwd = lstmfast.lstm_forward(x, W, RW, b, h0=h0, c0=c0, peepholes=peepholes, mask=mask,
                                forwards=forwards, for_backprop=True, _tuning=tuning,
                                _report=reports["forward"])
    grads = lstmfast.lstm_backward(fwd, eps, tbptt_length=tbptt, _tuning=tuning,
                                   _report=reports["backward"])
    inference = lstmfast.lstm_forward(x, W, RW, b, h0=h0, c0=c0, peepholes=peepholes, mask=mask,
                                      forwards=forwards, _tuning=tuning,
                                      _report=reports["inference"])
    return {"output": fwd.output.copy(), "last_h": fwd.last_h.copy(),
            "last_c": fwd.last_c.copy(), "inference_output": inference.output.copy(),
            "inference_last_c": inference.last_c.copy(),
            "grad_W": grads.input_weights.copy(), "grad_RW": grads.recurrent_weights.copy(),
            "grad_b": grads.bias.copy(), "grad_x": grads.input.copy(),
            "grad_h0": grads.h0.copy(), "grad_c0": grads.c0.copy()}


def _scaled_error(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))
                 / max(float(np.max(np.abs(b))), 1e-30))


CASES = [
    # (T, mb, n_in, h, threads, peepholes, masked, forwards, tbptt)
    (6, 3, 4, 7, 3, True, True, True, None),      # 2+2+3 units: partial panels everywhere
    (5, 1, 3, 3, 2, False, False, False, None),   # one example, 1 + 2 units, backwards
    (9, 17, 5, 50, 8, True, False, True, 4),      # 8 threads of 6-7 units, tBPTT 4
    (4, 20, 6, 13, 2, True, True, False, 1),      # mb > 16 (two row blocks), one tBPTT step
    (7, 5, 2, 24, 4, False, True, True, None),    # whole panels (6 units each)
    (5, 70, 9, 11, 2, True, True, True, None),    # mb > 64: packed h / deltas, partial row block
    (5, 21, 40, 9, 3, False, True, True, None),   # n_in > h: each thread's packed x is larger
    (5, 1, 3, 9, 3, False, False, True, 2),       # 2 stacked rows < nIn: dL/dx by columns
    (6, 40, 5, 16, 8, True, True, True, None),    # 8 threads in two row groups of 4
]


@pytest.fixture(params=["per-step", "per-chunk"])
def input_product(request):
    """Both ways of the input product x W: per step with W packed (small step inputs), and one
    GEMM per chunk of steps (large ones)."""
    limit = 1 << 40 if request.param == "per-step" else 0
    return {"input_product_max_bytes": limit}


@pytest.fixture(params=["rows", "columns"])
def gradient_split(request):
    """Both ways a team splits the gradient GEMMs after the backward loop: in two row groups
    whose sums are added (where there are at least 4h stacked rows), and by gate columns."""
    return {"gradient_split_rows": 1 if request.param == "rows" else 0}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "T{}-mb{}-in{}-h{}-thr{}".format(*c[:5]))
def test_team_matches_reference_and_one_thread(small_team_limits, input_product, gradient_split,
                                               case, dtype):
    T, mb, n_in, h, threads, peepholes, masked, forwards, tbptt = case
    seed = stable_seed(case)
    rng = np.random.default_rng(seed)
    problem = _problem(rng, T, mb, n_in, h, dtype, peepholes, masked)
    tuning = {**small_team_limits, **input_product, **gradient_split}
    one = _run(problem, peepholes, forwards, tbptt, 1, tuning)
    many = _run(problem, peepholes, forwards, tbptt, threads, tuning)

    x, W, RW, b, h0, c0, eps, mask = problem
    ref = ref_forward(x, W, RW, b, h0=h0, c0=c0, peepholes=peepholes, mask=mask,
                      forwards=forwards)
    ref_grads = ref_backward(ref, eps, tbptt_length=tbptt)
    expected = {"output": ref.output, "last_h": ref.last_h, "last_c": ref.last_c,
                "inference_output": ref.output, "inference_last_c": ref.last_c,
                "grad_W": ref_grads.input_weights, "grad_RW": ref_grads.recurrent_weights,
                "grad_b": ref_grads.bias, "grad_x": ref_grads.input, "grad_h0": ref_grads.h0,
                "grad_c0": ref_grads.c0}
    tol_ref = 2e-5 if dtype == np.float32 else 1e-10
    # the threads split the same arithmetic by units, and the gradient GEMMs by rows (sums in
    # another order) or by columns: at most rounding apart
    tol_threads = 2e-6 if dtype == np.float32 else 1e-13
    for name, value in many.items():
        assert _scaled_error(value, expected[name]) < tol_ref, (name, threads, f"seed {seed}")
        assert _scaled_error(value, one[name]) < tol_threads, (name, threads, f"seed {seed}")


GROUP_CASES = CASES + [
    # (T, mb, n_in, h, threads, peepholes, masked, forwards, tbptt)
    (6, 16, 7, 150, 2, True, True, True, None),   # 75 units a thread: up to 8 groups of panels
    (5, 3, 5, 120, 3, False, True, False, 3),     # mb < 4: groups of 8-column rows, backwards
    (4, 70, 6, 96, 2, True, False, True, None),   # packed h / deltas in two row blocks
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", GROUP_CASES,
                         ids=lambda c: "T{}-mb{}-in{}-h{}-thr{}".format(*c[:5]))
def test_groups_taken_over_give_the_same_numbers(small_team_limits, case, dtype):
    """Each step's units come in groups that any thread may run: with thread 0 owning every
    group, the other threads run only groups they take over from it, and the numbers are the
    same to the bit as when every thread owns its share (the same groups, the same code); with
    one group per thread (fixed shares) and with up to 8 per thread, they agree with one thread
    and with the reference. No least work per group here, so that small shapes get several."""
    T, mb, n_in, h, threads, peepholes, masked, forwards, tbptt = case
    rng = np.random.default_rng(sum(case[:5]) + 7)  # small ints: the seed the hash of each gave
    problem = _problem(rng, T, mb, n_in, h, dtype, peepholes, masked)
    one = _run(problem, peepholes, forwards, tbptt, 1)
    results = {}
    for per_thread, all_to_first in [(1, False), (3, False), (3, True), (8, False)]:
        tuning = dict(small_team_limits, unit_groups_per_thread=per_thread,
                      groups_all_to_first=int(all_to_first), unit_group_min_work=0)
        results[per_thread, all_to_first] = _run(problem, peepholes, forwards, tbptt, threads,
                                                 tuning)
    x, W, RW, b, h0, c0, eps, mask = problem
    ref = ref_forward(x, W, RW, b, h0=h0, c0=c0, peepholes=peepholes, mask=mask,
                      forwards=forwards)
    tol_ref = 2e-5 if dtype == np.float32 else 1e-10
    tol_threads = 2e-6 if dtype == np.float32 else 1e-13
    for setting, got in results.items():
        assert _scaled_error(got["output"], ref.output) < tol_ref, setting
        assert _scaled_error(got["inference_output"], ref.output) < tol_ref, setting
        for name in got:
            assert _scaled_error(got[name], one[name]) < tol_threads, (name, setting)
    for name in one:
        np.testing.assert_array_equal(results[3, True][name], results[3, False][name],
                                      err_msg=name)


@pytest.mark.skipif(kernels.simd_variant() == "portable",
                    reason="the team runs with the packed AVX2 kernel only")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threads_take_over_groups_they_do_not_own(small_team_limits, dtype):
    """With thread 0 owning every group (16 of 6 units), the second thread runs groups only by
    taking them over: it does, in both passes, and the numbers are those of one thread."""
    T, mb, n_in, h = 30, 16, 8, 96
    problem = _problem(np.random.default_rng(3), T, mb, n_in, h, dtype, True, False)
    reports = {}
    one = _run(problem, True, True, None, 1, small_team_limits, reports)
    assert [r["groups_taken_over"] for r in reports.values()] == [0, 0, 0]
    assert [r["threads"] for r in reports.values()] == [1, 1, 1]
    tuning = dict(small_team_limits, unit_groups_per_thread=16, groups_all_to_first=1,
                  unit_group_min_work=0)
    two = _run(problem, True, True, None, 2, tuning, reports)
    groups = len(kernels._plan_unit_groups(h, 2, mb, tuning)[1]) - 1
    for name, report in reports.items():
        assert report["threads"] == 2, name
        assert 0 < report["groups_taken_over"] <= groups * T, name
    tol = 2e-6 if dtype == np.float32 else 1e-13
    for name in one:
        assert _scaled_error(two[name], one[name]) < tol, name


@pytest.mark.parametrize("min_work", [0, 1 << 18])
@pytest.mark.parametrize("h, threads, mb", [(256, 2, 64), (7, 3, 3), (50, 8, 17), (13, 2, 20),
                                            (1024, 2, 1), (128, 1, 32), (30, 8, 5), (128, 2, 32),
                                            (100, 2, 256), (512, 2, 16)])
def test_unit_groups_cover_each_threads_share_in_whole_panels(h, threads, mb, min_work):
    """The plan: thread t's groups are exactly its share of the units (h t / threads to
    h (t + 1) / threads), in min(8, its panels, its work / min_work) groups (one for one
    thread); every group but a thread's last is whole panels (6 columns, 8 below 4 rows), the
    panels spread evenly; cols counts the padded columns."""
    first, units, cols = kernels._plan_unit_groups(h, threads, mb,
                                                   {"unit_group_min_work": min_work})
    panel = 8 if mb < 4 else 6
    assert first[0] == 0 and units[0] == 0 and cols[0] == 0
    assert units[-1] == h and first[-1] == len(units) - 1
    share_work = -(-h // threads) * 4 * mb * h
    for t in range(threads):
        own = units[first[t]:first[t + 1] + 1]
        assert own[0] == h * t // threads and own[-1] == h * (t + 1) // threads
        panels = -(-(own[-1] - own[0]) // panel)
        expected = 1 if threads == 1 else min(8, panels)
        if min_work:
            expected = max(1, min(expected, share_work // min_work))
        assert len(own) - 1 == expected, (t, own)
        widths = np.diff(own)
        assert np.all(widths > 0)
        assert np.all(widths[:-1] % panel == 0)
        whole = widths[:-1] // panel
        if len(whole):
            assert whole.max() - whole.min() <= 1, widths
    padded = [-(-(units[g + 1] - units[g]) // panel) * panel for g in range(len(units) - 1)]
    assert cols == [0] + list(np.cumsum(padded))


def test_tuning_is_validated_and_defaults_are_constant():
    """A tuning record names its fields and ranges; the defaults are the same on every call
    (the kernels keep no settings of their own)."""
    defaults = kernels.default_tuning()
    assert defaults["unit_groups_per_thread"] == 8 and defaults["gradient_split_rows"] == 1
    for bad in ({"unit_groups_per_thread": 0}, {"unit_groups_per_thread": 129},
                {"projection_chunk_elements": 0}, {"threads": 9}, {"packed_gemm": 2},
                {"team_min_step_work": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            kernels._plan_unit_groups(7, 1, 1, bad)
    with pytest.raises(ValueError, match="unknown fields \\['unit_groups'\\]"):
        kernels.forward_workspace_size(2, 3, 4, 5, False, {"unit_groups": 3})
    assert kernels.default_tuning() == defaults


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 3])
def test_projection_in_chunks_matches_reference(small_team_limits, dtype, threads):
    """Input projection by chunks of 2 steps (the last one shorter): each step's recurrent
    product adds its rows of the chunk's projection in place (the kernel's addend, with the
    chunk's leading dimension), across chunk boundaries, at 1 and 3 threads."""
    T, mb, n_in, h = 7, 21, 6, 10
    tuning = dict(small_team_limits, input_product_max_bytes=0,
                  projection_chunk_elements=2 * (n_in + 4 * h + 1) * mb)
    problem = _problem(np.random.default_rng(11), T, mb, n_in, h, dtype, True, True)
    got = _run(problem, True, True, None, threads, tuning)
    x, W, RW, b, h0, c0, eps, mask = problem
    ref = ref_forward(x, W, RW, b, h0=h0, c0=c0, peepholes=True, mask=mask)
    tol = 2e-5 if dtype == np.float32 else 1e-10
    assert _scaled_error(got["output"], ref.output) < tol
    assert _scaled_error(got["inference_output"], ref.output) < tol
    assert _scaled_error(got["grad_RW"], ref_backward(ref, eps).recurrent_weights) < tol


def test_default_limits_use_the_team_at_a_medium_shape():
    """At (12, 32, 16, 128) the default limits let two threads share each step; the results
    agree with one thread and with the reference."""
    previous = lstmfast.get_num_threads()
    try:
        rng = np.random.default_rng(5)
        problem = _problem(rng, 12, 32, 16, 128, np.float64, True, True)
        one = _run(problem, True, True, None, 1, None)
        reports = {}
        two = _run(problem, True, True, None, 2, None, reports)
        assert all(r["threads"] == 2 for r in reports.values()), reports
    finally:
        lstmfast.set_num_threads(previous)
    x, W, RW, b, h0, c0, eps, mask = problem
    ref = ref_forward(x, W, RW, b, h0=h0, c0=c0, peepholes=True, mask=mask)
    assert _scaled_error(two["output"], ref.output) < 1e-10
    assert _scaled_error(two["grad_RW"], ref_backward(ref, eps).recurrent_weights) < 1e-10
    for name in one:
        assert _scaled_error(two[name], one[name]) < 1e-13, name


def test_set_num_threads_validates_and_returns_previous():
    previous = lstmfast.get_num_threads()
    try:
        assert lstmfast.set_num_threads(3) == previous
        assert lstmfast.get_num_threads() == 3
        with pytest.raises(ValueError, match="threads: expected 1 to 8, got 0"):
            lstmfast.set_num_threads(0)
        with pytest.raises(ValueError, match="got 9"):
            lstmfast.set_num_threads(9)
        assert lstmfast.get_num_threads() == 3
    finally:
        lstmfast.set_num_threads(previous)


@pytest.mark.parametrize("case,threads,split,expected", [
    ((5, 70, 9, 11), 2, "rows", "row groups"),     # 350 stacked rows >= 4h = 44
    ((5, 21, 40, 9), 3, "rows", "row groups"),     # groups of 1 and 2 threads
    ((5, 70, 9, 11), 2, "columns", "columns"),
    ((6, 3, 4, 7), 3, "rows", "columns"),          # 18 rows < 4h = 28: no room, by columns
    ((5, 70, 9, 11), 1, "rows", "one thread"),
])
def test_gradient_split_in_use(small_team_limits, case, threads, split, expected):
    """The row groups run where they should (the results alone would not show it: both splits
    give the same numbers; test_c_api's team of eight checks that they stay inside the work
    space)."""
    T, mb, n_in, h = case
    tuning = dict(small_team_limits, gradient_split_rows=int(split == "rows"))
    problem = _problem(np.random.default_rng(5), T, mb, n_in, h, np.float64, False, False)
    reports = {}
    _run(problem, False, True, None, threads, tuning, reports)
    split_used = ("one thread", "columns", "row groups")[reports["backward"]["gradient_split"]]
    assert split_used == expected


@pytest.mark.parametrize("value,omp,expected", [("1", None, "1"), ("3", "1", "3"), ("64", None, "8"),
                                                ("", "1", "1"), ("", "5", "5"), ("", "2,1", None)])
def test_environment_variable_sets_the_default(value, omp, expected):
    """LSTMFAST_NUM_THREADS first, then OMP_NUM_THREADS (torchrun sets it to 1 per process),
    then the usable CPUs (a nested OpenMP list such as "2,1" is not a count)."""
    env = {k: v for k, v in os.environ.items() if k not in ("LSTMFAST_NUM_THREADS", "OMP_NUM_THREADS")}
    if value:
        env["LSTMFAST_NUM_THREADS"] = value
    if omp is not None:
        env["OMP_NUM_THREADS"] = omp
    if expected is None:
        expected = str(min(len(os.sched_getaffinity(0)), 8))
    out = subprocess.run([sys.executable, "-c", "import lstmfast; print(lstmfast.get_num_threads())"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected


def test_environment_variable_rejects_garbage():
    env = dict(os.environ, LSTMFAST_NUM_THREADS="many")
    out = subprocess.run([sys.executable, "-c", "import lstmfast"], env=env,
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "LSTMFAST_NUM_THREADS: expected an integer, got 'many'" in out.stderr


def test_concurrent_passes_share_the_team_safely(small_team_limits):
    """Passes from several Python threads at once: one holds the team, the others run alone;
    every result is the single-thread one."""
    rng = np.random.default_rng(11)
    problems = [_problem(rng, 8, 6, 5, 30, np.float64, True, True) for _ in range(4)]
    expected = [_run(p, True, True, None, 1, small_team_limits) for p in problems]
    lstmfast.set_num_threads(2)
    results = [None] * len(problems)
    errors = []

    def work(i):
        try:
            for _ in range(15):
                x, W, RW, b, h0, c0, eps, mask = problems[i]
                fwd = lstmfast.lstm_forward(x, W, RW, b, h0=h0, c0=c0, peepholes=True, mask=mask,
                                            for_backprop=True, _tuning=small_team_limits)
                grads = lstmfast.lstm_backward(fwd, eps, _tuning=small_team_limits)
                results[i] = (fwd.output.copy(), grads.recurrent_weights.copy())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(problems))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    for (output, grad_rw), exp in zip(results, expected):
        assert _scaled_error(output, exp["output"]) < 1e-13
        assert _scaled_error(grad_rw, exp["grad_RW"]) < 1e-13


def _child_pass(queue):
    rng = np.random.default_rng(3)
    x, W, RW, b, h0, c0, eps, mask = _problem(rng, 6, 4, 3, 12, np.float64, True, False)
    lstmfast.set_num_threads(2)
    fwd = lstmfast.lstm_forward(x, W, RW, b, peepholes=True, for_backprop=True, _tuning=SMALL_TEAM)
    grads = lstmfast.lstm_backward(fwd, eps, _tuning=SMALL_TEAM)
    queue.put((fwd.output, grads.recurrent_weights))


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_team_works_in_a_forked_child(small_team_limits):
    """The workers do not survive fork(); the child must create its own instead of waiting on
    threads that are not there."""
    lstmfast.set_num_threads(2)
    rng = np.random.default_rng(3)
    x, W, RW, b, h0, c0, eps, mask = _problem(rng, 6, 4, 3, 12, np.float64, True, False)
    fwd = lstmfast.lstm_forward(x, W, RW, b, peepholes=True, for_backprop=True,
                                _tuning=SMALL_TEAM)  # team started
    grads = lstmfast.lstm_backward(fwd, eps, _tuning=SMALL_TEAM)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_pass, args=(queue,))
    child.start()
    output, grad_rw = queue.get(timeout=60)
    child.join(60)
    assert child.exitcode == 0
    np.testing.assert_allclose(output, fwd.output, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(grad_rw, grads.recurrent_weights, rtol=1e-13, atol=1e-15)


def test_openblas_thread_setting_is_restored(small_team_limits):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import scipy.linalg.cython_blas  # noqa: F401  (load SciPy's OpenBLAS before limiting it)

    def scipy_blas_threads():
        return [i["num_threads"] for i in threadpoolctl.threadpool_info()
                if i.get("internal_api") == "openblas" and "scipy_openblas-" in i["filepath"]]

    if not kernels._BLAS_THREAD_CONTROL or not scipy_blas_threads():
        pytest.skip("SciPy's BLAS is not an OpenBLAS lstmfast can steer")
    rng = np.random.default_rng(8)
    x, W, RW, b, h0, c0, eps, mask = _problem(rng, 6, 4, 3, 12, np.float32, False, False)
    lstmfast.set_num_threads(2)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        fwd = lstmfast.lstm_forward(x, W, RW, b, for_backprop=True, _tuning=SMALL_TEAM)
        lstmfast.lstm_backward(fwd, eps, _tuning=SMALL_TEAM)
        assert scipy_blas_threads() == [2]


@pytest.mark.parametrize("threads", [2, 3])
def test_team_backward_with_grad_last_c_is_deterministic(small_team_limits, threads):
    """dL/d(last c) is staged where no thread's last-step deltas can overwrite it before every
    thread's cells have read it (it once sat at the start of the step-stacked deltas, where
    another thread's copy could land first: 9-133 of 300 team runs then differed)."""
    rng = np.random.default_rng(0)
    T, mb, n_in, h = 30, 1, 3, 48
    x = rng.standard_normal((mb, n_in, T))
    W = np.asfortranarray(rng.standard_normal((n_in, 4 * h)) * 0.4)
    RW = np.asfortranarray(rng.standard_normal((h, 4 * h)) * 0.4)
    b = rng.standard_normal(4 * h) * 0.3
    eps = rng.standard_normal((mb, h, T))
    grad_last_c = rng.standard_normal((mb, h)) * 100

    def run(n):
        lstmfast.set_num_threads(n)
        fwd = lstmfast.lstm_forward(x, W, RW, b, for_backprop=True, _tuning=SMALL_TEAM)
        grads = lstmfast.lstm_backward(fwd, eps, grad_last_c=grad_last_c, _tuning=SMALL_TEAM)
        return grads.recurrent_weights.copy(), grads.c0.copy()

    expected = run(1)
    for _ in range(150):
        got = run(threads)
        for a, e in zip(got, expected):
            assert _scaled_error(a, e) < 1e-12


SIGNAL_MASK_CHILD = r"""
import os
import numpy as np
import lstmfast
lstmfast.set_num_threads(3)
before = set(os.listdir("/proc/self/task"))
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 3, 5))
W = np.asfortranarray(rng.standard_normal((3, 24)))
RW = np.asfortranarray(rng.standard_normal((6, 24)))
lstmfast.lstm_forward(x, W, RW, np.zeros(24), _tuning={"team_min_units": 1, "team_min_step_work": 0})
for task in sorted(set(os.listdir("/proc/self/task")) - before):
    with open(f"/proc/self/task/{task}/status") as handle:
        blocked = [line.split()[1] for line in handle if line.startswith("SigBlk:")][0]
    print(task, blocked)
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
@pytest.mark.skipif(kernels.simd_variant() == "portable",
                    reason="the team runs with the packed kernel only (AVX2+FMA)")
def test_team_workers_block_signals():
    """Signals (Ctrl-C's SIGINT) must reach the application's threads, not the team's."""
    out = subprocess.run([sys.executable, "-c", SIGNAL_MASK_CHILD], capture_output=True,
                         text=True, check=True)
    workers = [line.split() for line in out.stdout.splitlines()]
    assert len(workers) == 2, out.stdout          # 3 threads: the caller and two workers
    for task, mask in workers:
        assert int(mask, 16) & (1 << (2 - 1)), f"worker {task} does not block SIGINT: {mask}"


@pytest.mark.parametrize("bad", [[len, ("ab",), {}], (len,), (len, ("ab",)), None,
                                 (len, ("ab",), {}, 1)])
@pytest.mark.parametrize("runner", ["call_pair", "call_pair_on_openmp"])
def test_pair_call_refuses_a_call_that_is_not_a_three_tuple(runner, bad):
    """The pair's members read each call's three items unchecked: anything else is refused
    before either call runs (a list or a short tuple crashed the process)."""
    from lstmfast import _team
    ran = []
    good = (ran.append, ("good",), {})
    for first, second, name in ((bad, good, "first"), (good, bad, "second")):
        with pytest.raises(TypeError, match=f"{name} must be a \\(callable, args, kwargs\\)"):
            getattr(_team, runner)(first, second)
    assert ran == []
    assert getattr(_team, runner)((len, ("ab",), {}), (len, ("abc",), {})) == (2, 3)
