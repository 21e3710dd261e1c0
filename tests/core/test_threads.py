"""Thread safety: the kernels keep no shared mutable state and release the GIL.

N Python threads running independent lstm_forward / lstm_backward calls at the same time
(sharing read-only weights) must produce bit for bit what the same calls produce one after
another; and while one thread is inside a pass, other Python threads keep running.
"""
import sys
import threading
import time

import numpy as np
import pytest

import lstmfast

THREADS = 4


def _job(seed, dtype, W, RW, b, peepholes):
    """One independent problem over shared weights: its own input, state, mask and options."""
    rng = np.random.default_rng(seed)
    minibatch, T = 2 + seed % 9, 3 + (7 * seed) % 29
    hidden = RW.shape[0]
    mask = None
    if seed % 3 == 0:
        mask = np.ones((minibatch, T), dtype)
        mask[0, : 1 + seed % 2] = 0
    return dict(
        x=rng.standard_normal((minibatch, W.shape[0], T)).astype(dtype),
        W=W, RW=RW, b=b, peepholes=peepholes,
        h0=rng.standard_normal((minibatch, hidden)).astype(dtype) if seed % 2 else None,
        c0=rng.standard_normal((minibatch, hidden)).astype(dtype) if seed % 4 < 2 else None,
        mask=mask,
        forwards=bool(seed % 5 != 1),
        activation=("tanh", "softsign", "relu", "rationaltanh")[seed % 4],
        gate=("sigmoid", "hardsigmoid")[seed % 2],
        eps=rng.standard_normal((minibatch, hidden, T)).astype(dtype),
        tbptt=None if seed % 6 else 2,
    )


def _run(job):
    fwd = lstmfast.lstm_forward(job["x"], job["W"], job["RW"], job["b"], h0=job["h0"],
                                c0=job["c0"], mask=job["mask"], peepholes=job["peepholes"],
                                activation=job["activation"], gate_activation=job["gate"],
                                forwards=job["forwards"], for_backprop=True)
    grads = lstmfast.lstm_backward(fwd, job["eps"], tbptt_length=job["tbptt"])
    inference = lstmfast.lstm_forward(job["x"], job["W"], job["RW"], job["b"], h0=job["h0"],
                                      c0=job["c0"], mask=job["mask"], peepholes=job["peepholes"],
                                      activation=job["activation"], gate_activation=job["gate"],
                                      forwards=job["forwards"])
    arrays = (fwd.output, fwd.last_h, fwd.last_c, grads.input_weights, grads.recurrent_weights,
              grads.bias, grads.input, grads.h0, grads.c0, inference.output, inference.last_h,
              inference.last_c)
    return [(a.dtype.str, a.shape, a.tobytes()) for a in arrays]


def _jobs(count):
    rng = np.random.default_rng(2024)
    jobs = []
    for dtype in (np.float64, np.float32):
        for peepholes in (True, False):
            n_in, hidden = 48, 40          # large enough for multi-threaded BLAS calls
            G = 4 * hidden
            W = np.asfortranarray(0.3 * rng.standard_normal((n_in, G))).astype(dtype, order="F")
            RW = np.asfortranarray(0.3 * rng.standard_normal((hidden, G + 3 * peepholes)))
            RW = RW.astype(dtype, order="F")
            b = (0.1 * rng.standard_normal(G)).astype(dtype)
            for arr in (W, RW, b):
                arr.flags.writeable = False          # shared and read-only across threads
            for k in range(count // 4):
                jobs.append(_job(len(jobs), dtype, W, RW, b, peepholes))
    return jobs


def _blas_limits(threads):
    if threads is None:
        return None
    threadpoolctl = pytest.importorskip("threadpoolctl")
    return threadpoolctl.threadpool_limits(limits=threads)


# With BLAS's own threads on as well the calls oversubscribe the cores and are much slower (see
# docs/c-api.md, "Thread safety"): fewer jobs and repetitions there.
@pytest.mark.parametrize("blas_threads, count, repeats", [(None, 16, 1), (1, 24, 3)],
                         ids=["blas-default", "blas-1"])
def test_concurrent_calls_equal_serial_calls_bitwise(blas_threads, count, repeats):
    jobs = _jobs(count)
    limits = _blas_limits(blas_threads)
    try:
        serial = [_run(job) for job in jobs]
        results = [[None] * len(jobs) for _ in range(THREADS)]
        errors = []
        barrier = threading.Barrier(THREADS)

        def worker(w):
            try:
                barrier.wait()
                # every thread runs every job, each thread in its own order
                order = np.random.default_rng(w).permutation(len(jobs))
                for _ in range(repeats):
                    for i in order:
                        got = _run(jobs[i])
                        if results[w][i] is not None and results[w][i] != got:
                            errors.append(f"thread {w}: job {i} changed between repetitions")
                        results[w][i] = got
            except BaseException as exc:  # reported below, in the main thread
                errors.append(f"thread {w}: {exc!r}")

        switch = sys.getswitchinterval()
        sys.setswitchinterval(1e-5)                   # interleave the threads as much as possible
        try:
            threads = [threading.Thread(target=worker, args=(w,)) for w in range(THREADS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            sys.setswitchinterval(switch)
    finally:
        if limits is not None:
            limits.unregister()
    assert not errors, errors
    for w in range(THREADS):
        for i, expected in enumerate(serial):
            assert results[w][i] == expected, f"thread {w}, job {i}: differs from the serial run"


def test_interleaved_streaming_in_threads():
    """Interleaved streaming over two sequences in two threads, carrying state explicitly,
    equals streaming each sequence alone."""
    rng = np.random.default_rng(3)
    n_in, hidden, T = 5, 7, 40
    W = np.asfortranarray(0.4 * rng.standard_normal((n_in, 4 * hidden)))
    RW = np.asfortranarray(0.4 * rng.standard_normal((hidden, 4 * hidden + 3)))
    b = 0.1 * rng.standard_normal(4 * hidden)
    sequences = [rng.standard_normal((2, n_in, T)) for _ in range(2)]

    def stream(x):
        h = c = None
        outputs = []
        for t in range(T):
            fwd = lstmfast.lstm_forward(x[:, :, t], W, RW, b, h0=h, c0=c)
            h, c = fwd.last_h, fwd.last_c
            outputs.append(fwd.output.tobytes())
        return outputs

    expected = [stream(x) for x in sequences]
    got = [None, None]
    threads = [threading.Thread(target=lambda i=i: got.__setitem__(i, stream(sequences[i])))
               for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == expected


@pytest.mark.parametrize("which", ["forward", "backward"])
def test_a_pass_releases_the_gil(which):
    """While another thread is inside one long pass, this thread's Python loop keeps running:
    with the GIL held for the pass, it would stall for the pass's whole duration."""
    rng = np.random.default_rng(9)
    minibatch, n_in, hidden, T = 16, 32, 64, 2000
    x = rng.standard_normal((minibatch, n_in, T))
    W = np.asfortranarray(0.1 * rng.standard_normal((n_in, 4 * hidden)))
    RW = np.asfortranarray(0.1 * rng.standard_normal((hidden, 4 * hidden)))
    b = np.zeros(4 * hidden)
    eps = rng.standard_normal((minibatch, hidden, T))
    fwd = lstmfast.lstm_forward(x, W, RW, b, for_backprop=True)

    def one_pass():
        if which == "forward":
            lstmfast.lstm_forward(x, W, RW, b, for_backprop=True)
        else:
            lstmfast.lstm_backward(fwd, eps)

    start = time.perf_counter()
    one_pass()
    duration = time.perf_counter() - start
    if duration < 0.05:
        pytest.skip(f"the pass took only {duration * 1e3:.1f} ms: too short to observe")

    done = threading.Event()
    thread = threading.Thread(target=lambda: (one_pass(), done.set()))
    ticks = []
    thread.start()
    while not done.is_set():
        ticks.append(time.perf_counter())
        time.sleep(0.001)
    thread.join()
    gaps = np.diff(ticks) if len(ticks) > 1 else np.array([duration])
    # GIL held throughout would give one gap about as long as the pass itself
    assert len(ticks) > 5 and gaps.max() < 0.5 * duration, (len(ticks), gaps.max(), duration)
