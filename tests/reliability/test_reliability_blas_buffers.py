"""OpenBLAS's work buffers under a memory limit.

A level-3 OpenBLAS call takes a 32 MiB buffer from a process-wide pool and, when the pool has
none idle and the memory for a new one is not there, retries forever (0.3.30) or exits the
process (0.3.31). lstmfast fills the pool, checked, for all its threads that may be in BLAS at
once before a pass makes such calls: a pass that cannot get a buffer for each of its team's
threads runs alone, and one that cannot get even one raises MemoryError before any BLAS call.

* A ceiling on the pool (a test hook) decides the outcome deterministically: none -> MemoryError,
  one -> the team's pass runs on one thread; both leave later passes right.
* Under a real address-space limit a training pass ends, with its results or MemoryError, at
  every limit of a sweep that hung the original code in a third of the limits.
* A thread that cannot be started for a long pass is MemoryError too.
"""
import subprocess
import threading

import numpy as np
import pytest
from reference import ref_backward, ref_forward
from reliability_support import last_json_line, record, run_child

import lstmfast
from lstmfast import _interrupt, _team, kernels

needs_buffer_check = pytest.mark.skipif(
    not kernels._BLAS_BUFFER_CHECK, reason="the BLAS is not an OpenBLAS with blas_memory_alloc")

# (T, mb, n_in, h): a team of two at set_num_threads(2), gradient GEMMs in BLAS
SHAPE = (12, 32, 24, 64)


def _problem(dtype=np.float64):
    T, mb, n_in, h = SHAPE
    rng = np.random.default_rng(11)
    x = rng.standard_normal((mb, n_in, T)).astype(dtype)
    W = np.asfortranarray(rng.standard_normal((n_in, 4 * h)) * 0.3, dtype)
    RW = np.asfortranarray(rng.standard_normal((h, 4 * h)) * 0.3, dtype)
    b = (rng.standard_normal(4 * h) * 0.2).astype(dtype)
    eps = rng.standard_normal((mb, h, T)).astype(dtype)
    return x, W, RW, b, eps


def _train(x, W, RW, b, eps, report=None):
    """A training pass; `report` (a dict) receives the backward pass's report."""
    fwd = lstmfast.lstm_forward(x, W, RW, b, for_backprop=True)
    return fwd, lstmfast.lstm_backward(fwd, eps, _report=report)


def _assert_matches_reference(problem, fwd, grads):
    x, W, RW, b, eps = problem
    ref = ref_forward(x, W, RW, b)
    ref_grads = ref_backward(ref, eps)
    np.testing.assert_allclose(fwd.output, ref.output, rtol=1e-10, atol=1e-12)
    for got, want in [(grads.input_weights, ref_grads.input_weights),
                      (grads.recurrent_weights, ref_grads.recurrent_weights),
                      (grads.bias, ref_grads.bias), (grads.input, ref_grads.input)]:
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11)


@pytest.fixture
def buffer_ceiling():
    previous = _team.set_blas_buffer_ceiling(-1)

    def set_ceiling(buffers):
        _team.set_blas_buffer_ceiling(buffers)
    yield set_ceiling
    _team.set_blas_buffer_ceiling(previous)


@needs_buffer_check
def test_no_buffer_is_memory_error_before_any_blas_call(two_threads, buffer_ceiling):
    problem = _problem()
    x, W, RW, b, eps = problem
    buffer_ceiling(0)
    # the forward's products all run in lstmfast's own kernel here: no buffer needed
    fwd = lstmfast.lstm_forward(x, W, RW, b, for_backprop=True)
    with pytest.raises(MemoryError, match="lstm_backward: no memory .*BLAS work buffers"):
        lstmfast.lstm_backward(fwd, eps)
    # the chunk's input projection is a BLAS call
    with pytest.raises(MemoryError, match="lstm_forward: no memory"):
        lstmfast.lstm_forward(x, W, RW, b, _tuning={"input_product_max_bytes": 0})
    # a pass without the team (minibatch above the packed kernel's range) too
    with pytest.raises(MemoryError, match="lstm_forward: no memory"):
        lstmfast.lstm_forward(np.zeros((300, 2, 3)), np.zeros((2, 8)), np.zeros((2, 8)),
                              np.zeros(8))
    buffer_ceiling(-1)
    fwd, grads = _train(x, W, RW, b, eps)
    _assert_matches_reference(problem, fwd, grads)


@needs_buffer_check
def test_one_buffer_runs_the_team_pass_alone(two_threads, buffer_ceiling):
    problem = _problem()
    report = {}
    fwd, grads = _train(*problem, report)
    assert report["threads"] == 2          # the team, unhindered
    buffer_ceiling(1)
    fwd, grads = _train(*problem, report)
    assert report["threads"] == 1 and report["gradient_split"] == 0
    _assert_matches_reference(problem, fwd, grads)
    buffer_ceiling(2)
    fwd, grads = _train(*problem, report)
    assert report["threads"] == 2
    _assert_matches_reference(problem, fwd, grads)


@needs_buffer_check
def test_streaming_step_that_calls_blas_is_counted(buffer_ceiling):
    """OpenBLAS's gemv takes a pool buffer as well once its vectors outgrow its 2 KiB stack
    buffer (m + n + 16 above 256 doubles; 64 + 256 here): a one-step pass of one example whose
    products are gemv calls is counted like any other, so with no buffer it is MemoryError
    before any BLAS call. Only the step whose products all read W and RW in place
    (lf_dot_columns) calls no BLAS and runs."""
    n_in, h, P = 64, 64, 48
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, n_in, 1))
    W = rng.standard_normal((n_in, 4 * h)) * 0.2
    RW = rng.standard_normal((h, 4 * h)) * 0.2
    b = rng.standard_normal(4 * h) * 0.2
    RW_p = rng.standard_normal((P, 4 * h)) * 0.2
    W_proj = rng.standard_normal((h, P)) * 0.2
    # the products as gemv: the packed kernel off (as the portable path), the cache's x (its rows
    # mb*(T+1) apart), a projected layer
    gemv_passes = [(RW, {"_tuning": {"packed_gemm": 0}}, {}),
                   (RW, {"for_backprop": True}, {}),
                   (RW_p, {"projection_weights": W_proj}, {"projection_weights": W_proj})]
    buffer_ceiling(0)
    for recurrent, kwargs, _ in gemv_passes:
        with pytest.raises(MemoryError, match="lstm_forward: no memory"):
            lstmfast.lstm_forward(x, W, recurrent, b, **kwargs)
    if kernels.simd_variant() != "portable":
        got = lstmfast.lstm_forward(x, W, RW, b)
        np.testing.assert_allclose(got.output, ref_forward(x, W, RW, b).output, rtol=1e-10,
                                   atol=1e-12)
    buffer_ceiling(-1)
    for recurrent, kwargs, ref_kwargs in gemv_passes:
        got = lstmfast.lstm_forward(x, W, recurrent, b, **kwargs)
        want = ref_forward(x, W, recurrent, b, **ref_kwargs)
        np.testing.assert_allclose(got.output, want.output, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("way", ["main thread", "worker"])
def test_thread_that_cannot_start_is_memory_error(monkeypatch, way):
    """Where signals cannot be watched a long pass runs in a worker thread: when none can be
    started nothing has run yet. Where they can, the pass starts no thread and runs."""
    if way == "main thread" and not _interrupt.WATCHES_SIGNALS:
        pytest.skip("signals cannot be watched on this system (long passes use a worker)")
    if way == "worker":
        monkeypatch.setattr(_interrupt, "WATCHES_SIGNALS", False)

    def refuse(self):
        raise RuntimeError("can't start new thread")
    T, mb, n_in, h = 20, 64, 64, 128      # above the flops of an interruptible pass
    rng = np.random.default_rng(4)
    x = rng.standard_normal((mb, n_in, T))
    W, RW = rng.standard_normal((n_in, 4 * h)) * 0.1, rng.standard_normal((h, 4 * h)) * 0.1
    b = rng.standard_normal(4 * h) * 0.1
    want = lstmfast.lstm_forward(x, W, RW, b).output
    monkeypatch.setattr(threading.Thread, "start", refuse)
    if way == "worker":
        with pytest.raises(MemoryError, match="start the pass's thread"):
            lstmfast.lstm_forward(x, W, RW, b)
    else:
        assert lstmfast.lstm_forward(x, W, RW, b).output.tobytes() == want.tobytes()


# A training pass after the child has capped its address space at its own size plus
# delta MiB: exit 0 with results, 3 on MemoryError; a hang is killed by the timeout.
LIMIT_CHILD = r'''
import resource, sys
import numpy as np
import lstmfast
lstmfast.set_num_threads(2)
mb, n_in, h, T = 32, 64, 128, 50
rng = np.random.default_rng(0)
x = rng.standard_normal((mb, n_in, T)).astype("float32")
W = (rng.standard_normal((n_in, 4 * h)) * 0.1).astype("float32")
RW = (rng.standard_normal((h, 4 * h)) * 0.1).astype("float32")
b = np.zeros(4 * h, "float32")
eps = rng.standard_normal((mb, h, T)).astype("float32")
size = next(int(line.split()[1]) for line in open("/proc/self/status")
            if line.startswith("VmSize")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + int(sys.argv[1]) * 2**20, resource.RLIM_INFINITY))
try:
    lstmfast.lstm_backward(lstmfast.lstm_forward(x, W, RW, b, for_backprop=True), eps)
except MemoryError:
    sys.exit(3)
'''


def test_training_pass_ends_under_any_address_space_limit():
    """The original code spun forever inside OpenBLAS at 40-72 MiB above the child's size
    (7 of 26 limits from 0 to 200 MiB); now each limit gives results or MemoryError."""
    outcomes = {}
    children = {}
    for delta in range(32, 113, 8):
        children[delta] = threading.Thread(
            target=lambda d=delta: outcomes.__setitem__(d, _limited_child(d)))
    for delta in sorted(children):     # two at a time: the machine may have two cores
        children[delta].start()
        if delta % 16 == 8:
            children[delta - 8].join()
            children[delta].join()
    for child in children.values():
        child.join()
    record("address-space limits: training pass outcomes (MiB above the child's size)",
           " ".join(f"{d}:{outcomes[d]}" for d in sorted(outcomes)))
    bad = {d: o for d, o in outcomes.items() if o not in ("ok", "MemoryError")}
    assert not bad, f"passes that did not end with results or MemoryError: {bad}"


def _limited_child(delta):
    try:
        result = run_child(LIMIT_CHILD, delta, timeout=15)
    except subprocess.TimeoutExpired:      # the pass hung
        return "hung"
    return {0: "ok", 3: "MemoryError"}.get(result.returncode,
                                           f"exit {result.returncode}: {result.stderr[-200:]}")


# A team thread stuck in a backward pass (a test hook makes thread 1 spin before the gradient
# barrier, deaf to cancels); Ctrl-C arrives 0.2 s later. Prints one JSON line.
STUCK_CHILD = r'''
import json, os, signal, threading, time
import numpy as np
import lstmfast
from lstmfast import _team, functional, kernels
from reference import ref_backward, ref_forward
lstmfast.set_num_threads(2)
T, mb, n_in, h = 10, 32, 128, 128          # a team pass, long enough to run interruptibly
rng = np.random.default_rng(2)
x = rng.standard_normal((mb, n_in, T))
W = np.asfortranarray(rng.standard_normal((n_in, 4 * h)) * 0.1)
RW = np.asfortranarray(rng.standard_normal((h, 4 * h)) * 0.1)
b = rng.standard_normal(4 * h) * 0.1
eps = rng.standard_normal((mb, h, T))
fwd = lstmfast.lstm_forward(x, W, RW, b, for_backprop=True)
_team.set_thread_stuck(1)
# a real SIGINT: the pass runs in the main thread, where only a signal's own handler sees it
threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
start = time.monotonic()
outcome = "returned"
try:
    lstmfast.lstm_backward(fwd, eps)
except KeyboardInterrupt as error:
    outcome = str(error)
latency = time.monotonic() - start
stranded = len(kernels._STRANDED)
pooled_stranded = sum(kernels._is_stranded(entry[2]) for entry in functional._POOL._pooled)
# later passes run alone, right, while the stuck thread still spins
fwd = lstmfast.lstm_forward(x, W, RW, b, for_backprop=True)
report = {}
grads = lstmfast.lstm_backward(fwd, eps, _report=report)
threads = report["threads"]
ref = ref_forward(x, W, RW, b)
ref_grads = ref_backward(ref, eps)
error = max(float(np.max(np.abs(fwd.output - ref.output))),
            float(np.max(np.abs(grads.input_weights - ref_grads.input_weights))),
            float(np.max(np.abs(grads.recurrent_weights - ref_grads.recurrent_weights))))
_team.set_thread_stuck(-1)
print(json.dumps({"outcome": outcome, "latency": latency, "stranded": stranded,
                  "pooled_stranded": pooled_stranded, "threads": threads, "error": error}))
'''


def test_ctrl_c_gives_up_a_stuck_team_thread():
    """The original code waited at the barrier for ever (Ctrl-C ignored); now the pass is given
    up after the grace of 2 s: KeyboardInterrupt, the pass's arrays kept out of the pool (the
    stuck thread may still write to them), and later passes run alone with right results."""
    result = run_child(STUCK_CHILD, timeout=30)
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = last_json_line(result.stdout)
    record("stuck team thread: Ctrl-C to KeyboardInterrupt (s)", round(outcome["latency"], 2))
    assert "did not stop" in outcome["outcome"]
    assert 1.5 < outcome["latency"] < 4.0
    assert outcome["stranded"] > 0 and outcome["pooled_stranded"] == 0
    assert outcome["threads"] == 1
    assert outcome["error"] < 1e-10
