#!/usr/bin/env python
"""Benchmark lstmfast against PyTorch's CPU LSTM and against the arithmetic limits of the cores.

    pip install .                                   # from the repository root: what is timed
    python benchmarks/bench_lstm.py                 # full run (15-20 minutes on a 2-core machine)
    python benchmarks/bench_lstm.py --quick         # fewer samples, largest shape skipped
    python benchmarks/bench_lstm.py --quick --threads 1 --dtype float32 --shapes tiny,charlm
    python benchmarks/bench_lstm.py --source-tree   # an in-place build (setup.py build_ext --inplace)

Needs PyTorch (`pip install torch==2.13.0`, CPU build) and threadpoolctl; matplotlib for the plot.

What lstmfast is timed: the INSTALLED package (what `pip install .` put in this Python), or with
`--source-tree` the source tree's lstmfast/ with its extension built in place. It is checked once
in a subprocess before anything is timed, with an error that says what to do when it does not
import; the log and the results say which was timed, and warn when the installed package's
Python files differ from this source tree's. The package is copied to a temporary directory for
the run, so that a reinstall meanwhile does not mix two builds.

What is timed (medians of `--repeats` samples after warm-up; a sample is the mean of as many
calls as fill `--min-time` seconds):

* lstmfast    `lstm_forward` (inference) and `lstm_forward(for_backprop=True)` + `lstm_backward`
              (training), LSTM without peepholes;
* graves      the same with peepholes (GravesLSTM, recurrent weights [h, 4h+3]);
* torch       `torch.nn.LSTM` with the same weights (inference under `torch.inference_mode()`;
              training: forward + `output.backward(eps)`, with dL/dx as lstmfast computes it);
* peephole    a peer for the peepholes, at the three medium shapes and the tiny one: an
              LSTMCell-style loop with peephole terms (both projections every step, as
              nn.LSTMCell does), compiled with TorchScript; `peephole_hoisted` (optional)
              hoists the input projection of all steps out of the loop, a stronger peer;
* gemm        raw scipy.linalg.blas sgemm/dgemm: the peak on large square Fortran matrices and the
              LSTM's own GEMM shapes, giving a "BLAS floor" (the time of the GEMMs alone); and
              the FMA limit of one core (`benchmarks/fma_peak.c`, built with the system C
              compiler on first use), from which the tables give each ratio's ceiling: the most
              any implementation doing the LSTM's flops could reach;
* charlm      the training loop users run (`benchmarks/train_loop.py`): a character model like
              the demo's trained with `Sequential.fit_batch`, against the same model in PyTorch,
              in characters per second; each library in its own process with only
              OMP_NUM_THREADS set to the thread count, so that each runs at its own defaults.

Streaming (shape `stream`, (T, mb, nIn, h) = (1, 1, 32, 32)): one step per call through the
Python API (`lstmfast.lstm_forward(x2d, W, RW, b, h0=h, c0=c)` and an LSTM layer's
`rnn_time_step`) against `torch.nn.LSTMCell`.

Processes: one worker process per (threads, dtype, shape). At 1 thread it runs every library,
interleaved sample by sample (side by side). At more threads each library group (lstmfast and
graves; the raw GEMMs; PyTorch: torch, peephole) gets its own worker, because PyTorch's OpenMP
pool and OpenBLAS's pthread pool slow each other down when both are live in one process, and an
OpenBLAS helper thread busy-waits for ~0.1 s after each multithreaded call. There the lstmfast
and PyTorch workers of a shape alternate in `--rounds` rounds (default 2: lstmfast, PyTorch,
PyTorch, lstmfast), each taking its share of the samples, which are pooled: the machine's speed
changes over minutes. lstmfast's own time-loop threads are set with
lstmfast.set_num_threads(threads), BLAS threads with threadpoolctl after SciPy's OpenBLAS is
loaded (threadpoolctl cannot limit a library that is not loaded yet; NumPy's OpenBLAS is a
different copy), and checked. Workers are this script re-invoked with `--worker SPEC`; they
print one JSON line. Progress is saved after every job (`--resume`).

Recorded with the results: the CPU (model, family, the vector-extension flags), lstmfast's code
path on it, every BLAS threadpoolctl sees with OpenBLAS's core type, PyTorch's CPU capability and
oneDNN's ISA with the implementation it picks for the LSTM.

Before timing, a check worker verifies that lstmfast and PyTorch compute the same thing
(outputs and every gradient, LSTM vs nn.LSTM and GravesLSTM vs the TorchScript peephole loop).

Output: a table on stdout, and in `--out-dir` (default benchmarks/): `results.json`,
`ratios.png` and the generated section of `RESULTS.md` (the rest of the page is kept).
`--render results.json` rebuilds them without timing; `--baseline OLD.json` adds a speed-up
column against an earlier run.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import gc
import hashlib
import importlib.util
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULT_MARK = "@@BENCH_LSTM_RESULT@@"

# (key, (T, minibatch, nIn, h), kind); kind: "full" = inference and training, "forward" =
# inference only, "stream" = single-step streaming through the Python API.
SHAPES = [
    ("small", (50, 32, 64, 128), "full"),
    ("medium", (100, 64, 256, 256), "full"),
    ("long", (200, 16, 128, 512), "full"),
    ("tiny", (20, 1, 32, 32), "full"),
    ("large", (500, 128, 512, 1024), "forward"),
    ("stream", (1, 1, 32, 32), "stream"),
    # the training loop users run (benchmarks/train_loop.py): sequences of 100, minibatch 32,
    # 77 characters, two LSTM(128) layers; float32 only
    ("charlm", (100, 32, 77, 128), "train_loop"),
]
SHAPE_INFO = {key: (dims, kind) for key, dims, kind in SHAPES}
MEDIUM = ("small", "medium", "long")          # the three medium shapes
PEEPHOLE_SHAPES = MEDIUM + ("tiny",)          # where the TorchScript peephole loop is timed
BLAS_LIBS = ("lstmfast", "graves", "gemm")    # share scipy's OpenBLAS pool
TORCH_LIBS = ("torch", "peephole", "peephole_hoisted")   # share PyTorch's OpenMP pool
ALL_LIBS = BLAS_LIBS + TORCH_LIBS
DEFAULT_LIBS = ("lstmfast", "graves", "gemm", "torch", "peephole")
# the environment variables that set thread counts (a training-loop worker gets only
# OMP_NUM_THREADS, so that every library runs at its defaults for that count)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "MKL_NUM_THREADS",
                    "LSTMFAST_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")

# The floors (PyTorch time / lstmfast time unless noted), on every CPU.
TARGETS = {
    ("float32", "training", "medium"): 1.15,
    ("float32", "training", "tiny"): 5.0,
    ("float32", "inference", "medium"): 1.0,
    ("float32", "inference", "tiny"): 3.0,
    ("float32", "inference", "large"): 1.0,
    ("float64", "training", "any"): 1.5,
    ("float64", "inference", "any"): 1.5,
    ("any", "stream", "stream"): 10.0,
}
GRAVES_MAX_OVERHEAD = 0.10
LARGE_MIN_FMA_FRACTION = 0.85       # the largest shape at 1 thread: share of the FMA limit
# the training loop at 2 threads and more: against PyTorch, and against lstmfast's own 1 thread
TRAIN_LOOP_MIN_RATIO = 1.1
TRAIN_LOOP_MIN_SCALING = 1.5


def needs_lstmfast(args):
    """Whether the run imports lstmfast (anything but PyTorch and raw GEMMs alone)."""
    return any(lib in args.peers for lib in ("lstmfast", "graves"))


def _loadavg():
    try:
        with open("/proc/loadavg") as fh:
            return float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def cpu_busy(interval=1.0):
    """Fraction of all CPUs busy over `interval` seconds (from /proc/stat), or None."""
    def read():
        with open("/proc/stat") as fh:
            vals = [int(v) for v in fh.readline().split()[1:9]]
        return vals[3] + vals[4], sum(vals)
    try:
        i0, t0 = read()
        time.sleep(interval)
        i1, t1 = read()
    except (OSError, ValueError):
        return None
    return max(0.0, 1.0 - (i1 - i0) / max(t1 - t0, 1))


def wait_for_idle(max_wait, threshold):
    """Wait (at most max_wait seconds) until other processes use less than `threshold` of the
    CPUs; returns the busy fraction seen last."""
    busy = cpu_busy()
    if busy is None or max_wait <= 0:
        return busy
    deadline = time.time() + max_wait
    announced = False
    while busy > threshold and time.time() < deadline:
        if not announced:
            log(f"  machine busy ({100 * busy:.0f}% of CPUs): waiting up to {max_wait:.0f} s")
            announced = True
        time.sleep(4.0)
        busy = cpu_busy()
    return busy


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


# =============================================================================================
# problem data (the same weights for every library)

def make_problem(dims, dtype, seed=1234):
    """Random LSTM problem in lstmfast's convention. W [nIn, 4h], RW [h, 4h], RWp [h, 4h+3] (peephole
    columns wFF, wOO, wGG), b [4h]; gate blocks [block input, forget, output, input gate].
    x_tmn [T, mb, nIn] and eps_tmh [T, mb, h] are C-contiguous (PyTorch's layout)."""
    T, mb, n_in, h = dims
    rng = np.random.default_rng(seed)
    scale = 1.0 / math.sqrt(h)
    W = np.asfortranarray(rng.uniform(-scale, scale, (n_in, 4 * h)).astype(dtype))
    RWp = np.asfortranarray(rng.uniform(-scale, scale, (h, 4 * h + 3)).astype(dtype))
    RW = np.asfortranarray(RWp[:, :4 * h])
    b = rng.uniform(-scale, scale, 4 * h).astype(dtype)
    b[h:2 * h] += 1.0                         # DL4J's forget-gate bias init
    x_tmn = rng.standard_normal((T, mb, n_in)).astype(dtype)
    eps_tmh = rng.standard_normal((T, mb, h)).astype(dtype)
    return {"W": W, "RW": RW, "RWp": RWp, "b": b, "x_tmn": x_tmn, "eps_tmh": eps_tmh}


def lstmfast_layout(a_tmf, layout):
    """[T, mb, F] -> lstmfast's [mb, F, T] in the requested memory layout (not timed)."""
    if layout == "F":
        return np.asfortranarray(a_tmf.transpose(1, 2, 0))
    if layout == "C":
        return np.ascontiguousarray(a_tmf.transpose(1, 2, 0))
    if layout == "tmf":                        # a strided view of PyTorch's [T, mb, F] memory
        return np.ascontiguousarray(a_tmf).transpose(1, 2, 0)
    raise ValueError(layout)


# torch gate order (i, f, g, o) as lstmfast blocks (input gate 3, forget 1, block input 0, output 2)
TORCH_BLOCKS = (3, 1, 0, 2)


def torch_weights(prob, h):
    """weight_ih [4h, nIn], weight_hh [4h, h], bias [4h] in PyTorch's gate order, and the peephole
    vectors (w_ff, w_oo, w_gg) [h]."""
    def reorder_cols(m):
        return np.concatenate([m[:, k * h:(k + 1) * h] for k in TORCH_BLOCKS], axis=1)
    w_ih = np.ascontiguousarray(reorder_cols(prob["W"]).T)
    w_hh = np.ascontiguousarray(reorder_cols(prob["RW"]).T)
    bias = np.concatenate([prob["b"][k * h:(k + 1) * h] for k in TORCH_BLOCKS])
    rwp = prob["RWp"]
    peep = tuple(np.ascontiguousarray(rwp[:, 4 * h + j]) for j in range(3))
    return w_ih, w_hh, bias, peep


def lstmfast_from_torch_grad(g_ih, g_hh, g_bias, h):
    """PyTorch-order gradients -> lstmfast's [nIn, 4h], [h, 4h], [4h]."""
    def back(m):                              # m [4h, k] torch rows -> [k, 4h] lstmfast blocks
        out = np.empty((m.shape[1], 4 * h), dtype=m.dtype)
        for j, k in enumerate(TORCH_BLOCKS):
            out[:, k * h:(k + 1) * h] = m[j * h:(j + 1) * h].T
        return out
    gb = np.empty(4 * h, dtype=g_bias.dtype)
    for j, k in enumerate(TORCH_BLOCKS):
        gb[k * h:(k + 1) * h] = g_bias[j * h:(j + 1) * h]
    return back(g_ih), back(g_hh), gb


# The PyTorch peephole baselines, compiled by torch.jit.script in the worker (which binds the global
# name `torch` first; the signatures use TorchScript type comments so that this module imports
# without PyTorch). DL4J GravesLSTM semantics: input and forget peepholes on the previous cell
# state, output peephole on the new one. Gates in PyTorch's order (i, f, g, o).
#   peephole_lstm_cell     the peer: an LSTMCell-style loop (both projections every
#                          step, as nn.LSTMCell computes them) with peephole terms  -> peer "peephole"
#   peephole_lstm_hoisted  the same with the input projection of all steps hoisted out of the loop
#                          into one matmul (a stronger baseline)              -> peer "peephole_hoisted"
torch = None


def peephole_lstm_cell(x, w_ih, w_hh, bias, w_ff, w_oo, w_gg, h, c):
    # type: (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor) -> Tensor
    w_ih_t = w_ih.t()
    w_hh_t = w_hh.t()
    outs = []
    for t in range(x.size(0)):
        gates = torch.mm(x[t], w_ih_t) + bias + torch.mm(h, w_hh_t)
        gi, gf, gg, go = gates.chunk(4, 1)
        i = torch.sigmoid(gi + c * w_gg)
        f = torch.sigmoid(gf + c * w_ff)
        c = f * c + i * torch.tanh(gg)
        o = torch.sigmoid(go + c * w_oo)
        h = o * torch.tanh(c)
        outs.append(h)
    return torch.stack(outs)


def peephole_lstm_hoisted(x, w_ih, w_hh, bias, w_ff, w_oo, w_gg, h, c):
    # type: (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor) -> Tensor
    xp = torch.matmul(x, w_ih.t()) + bias
    w_hh_t = w_hh.t()
    outs = []
    for t in range(x.size(0)):
        gates = xp[t] + torch.mm(h, w_hh_t)
        gi, gf, gg, go = gates.chunk(4, 1)
        i = torch.sigmoid(gi + c * w_gg)
        f = torch.sigmoid(gf + c * w_ff)
        c = f * c + i * torch.tanh(gg)
        o = torch.sigmoid(go + c * w_oo)
        h = o * torch.tanh(c)
        outs.append(h)
    return torch.stack(outs)


PEEPHOLE_FUNCTIONS = {"peephole": peephole_lstm_cell, "peephole_hoisted": peephole_lstm_hoisted}


# =============================================================================================
# timing

def _timed_calls(fn, number):
    """(wall seconds, process CPU seconds) per call, averaged over `number` calls."""
    c0 = time.process_time()
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    t1 = time.perf_counter()
    return (t1 - t0) / number, (time.process_time() - c0) / number


def _calibrate(fn, min_time):
    """How many calls fill min_time now (at least 1); robust to one preempted call."""
    n = 0
    t0 = time.perf_counter()
    while True:
        fn()
        n += 1
        if time.perf_counter() - t0 >= min_time or n >= 1_000_000:
            return n


SLOW_CALL_S = 1.0        # a case whose single call takes longer gets 1 warm-up and <= 3 samples
SLOW_CALL_SAMPLES = 3
# When every case's call is shorter than FAST_CALL_S, the measurement takes FAST_SPLIT times as
# many samples of 1/FAST_SPLIT the length (same time in all). Measured here: at (20, 1, 32, 32)
# the machine's speed drifts by up to 1.5x in bursts of a few 5 ms samples; with only 7 samples
# a case's median depends on which ones such a burst hit.
FAST_CALL_S = 2e-3
FAST_SPLIT = 3


def summarize(samples, cpu, calls_per_sample):
    """Median, extremes and quartiles of wall-time samples (seconds per call)."""
    s = sorted(samples)
    q1, q3 = (s[len(s) // 4], s[(3 * len(s)) // 4]) if len(s) >= 4 else (s[0], s[-1])
    return {"median_s": statistics.median(s), "min_s": s[0], "q1_s": q1, "q3_s": q3,
            "samples_s": list(samples), "cpu_s": list(cpu),
            "cpu_per_wall": sum(cpu) / max(sum(samples), 1e-12),
            "calls_per_sample": calls_per_sample}


FMA_PEAK_LIB = "fma_peak_core"


@functools.lru_cache(maxsize=None)
def _fma_library():
    """benchmarks/fma_peak.c built with the system C compiler (once per source version, in the
    temporary directory) and loaded; None when there is no compiler, no AVX2+FMA or not x86-64."""
    import ctypes
    import tempfile
    lib = None
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fma_peak.c")
    try:
        with open(src, "rb") as fh:
            digest = hashlib.sha1(fh.read()).hexdigest()[:12]
        path = os.path.join(tempfile.gettempdir(), f"lstmfast_bench_fma_{digest}.so")
        if not os.path.exists(path):
            tmp = f"{path}.{os.getpid()}"
            subprocess.run([os.environ.get("CC", "cc"), "-O2", "-shared", "-fPIC", "-o", tmp, src],
                           check=True, capture_output=True, timeout=120)
            os.replace(tmp, path)
        lib = ctypes.CDLL(path)
        for name in ("fma_peak_f64", "fma_peak_f32", "fma_peak_avx512_f64", "fma_peak_avx512_f32"):
            getattr(lib, name).restype = ctypes.c_double
            getattr(lib, name).argtypes = [ctypes.c_long]
        if not lib.fma_peak_supported():
            lib = None
    except (OSError, subprocess.SubprocessError) as exc:
        log(f"no FMA peak ({exc.__class__.__name__}: {exc})")
        lib = None
    return lib


def fma_peak_gflops(dtype, samples=7, sample_s=0.03):
    """The best rate (GFLOP/s) of one core over `samples` runs of benchmarks/fma_peak.c's FMA
    chains in the dtype, per instruction set ({"avx2": ..., "avx512": ...} where the CPU has
    AVX-512); None where it cannot be built or run."""
    lib = _fma_library()
    if lib is None:
        return None
    f32 = np.dtype(dtype) == np.float32
    variants = {"avx2": (lib.fma_peak_f32, 8) if f32 else (lib.fma_peak_f64, 4)}
    if lib.fma_peak_avx512_supported():
        variants["avx512"] = (lib.fma_peak_avx512_f32, 16) if f32 else (lib.fma_peak_avx512_f64, 8)
    rates = {}
    for isa, (fn, lanes) in variants.items():
        flops_per_round = 12 * lanes * 2
        rounds = 1 << 16
        while True:                                   # calibrate: one run of about sample_s
            t = time.perf_counter()
            fn(rounds)
            t = time.perf_counter() - t
            if t >= sample_s / 4 or rounds > 1 << 34:
                break
            rounds *= 4
        rounds = max(1, int(rounds * sample_s / max(t, 1e-9)))
        best = 0.0
        for _ in range(samples):
            t = time.perf_counter()
            fn(rounds)
            t = time.perf_counter() - t
            best = max(best, rounds * flops_per_round / t / 1e9)
        rates[isa] = best
    return rates


def measure_side_by_side(cases, repeats, warmup, min_time, context=None):
    """Median seconds per call of each case; the cases are sampled in rotating order, one sample
    of each per round, so that they see the same machine load. `context()` (e.g.
    torch.inference_mode) is entered around everything. Cases slower than SLOW_CALL_S per call
    are warmed up once and sampled in the first SLOW_CALL_SAMPLES rounds only (time budget).
    When all cases are faster than FAST_CALL_S per call, FAST_SPLIT x repeats shorter samples."""
    names = list(cases)
    numbers, samples, cpu = {}, {n: [] for n in names}, {n: [] for n in names}
    wanted = {}
    ctx = context() if context is not None else None
    if ctx is not None:
        ctx.__enter__()
    try:
        call_s, fastest_s = {}, {}
        for name in names:
            fn = cases[name]
            t = fastest = _timed_calls(fn, 1)[0]
            for _ in range(max(1, warmup) - 1):
                if t >= SLOW_CALL_S:
                    break
                t = _timed_calls(fn, 1)[0]
                fastest = min(fastest, t)
            call_s[name] = t
            fastest_s[name] = fastest
        # (the fastest warm-up call decides: one preempted call near FAST_CALL_S should not)
        if names and max(fastest_s.values()) < FAST_CALL_S:
            repeats, min_time = repeats * FAST_SPLIT, min_time / FAST_SPLIT
        for name in names:
            t = call_s[name]
            numbers[name] = 1 if t >= min_time else _calibrate(cases[name], min_time)
            wanted[name] = min(repeats, SLOW_CALL_SAMPLES) if t >= SLOW_CALL_S else repeats
        gc_was_enabled = gc.isenabled()
        gc.collect()
        gc.disable()
        try:
            for r in range(repeats):
                shift = r % len(names)
                for name in names[shift:] + names[:shift]:
                    if len(samples[name]) >= wanted[name]:
                        continue
                    wall, proc = _timed_calls(cases[name], numbers[name])
                    samples[name].append(wall)
                    cpu[name].append(proc)
        finally:
            if gc_was_enabled:
                gc.enable()
    finally:
        if ctx is not None:
            ctx.__exit__(None, None, None)
    return {name: summarize(samples[name], cpu[name], numbers[name]) for name in names}


# =============================================================================================
# worker

class Worker:
    def __init__(self, spec):
        self.spec = spec
        self.threads = spec["threads"]
        self.dtype = np.dtype(spec["dtype"])
        self.libs = spec["libs"]
        self.torch = None
        if any(lib in TORCH_LIBS for lib in self.libs) or spec.get("check"):
            import torch
            torch.set_num_threads(self.threads)
            self.torch = torch
            self.tdtype = torch.float32 if self.dtype == np.float32 else torch.float64
        self.lstmfast = None
        if any(lib in ("lstmfast", "graves") for lib in self.libs) or spec.get("check"):
            import lstmfast
            # the time loops' own threads (the GEMMs outside them follow OpenBLAS's, set below)
            lstmfast.set_num_threads(self.threads)
            self.lstmfast = lstmfast
        # Load scipy's OpenBLAS (the one lstmfast and the GEMM timings use) BEFORE limiting the
        # threads: threadpoolctl only sees libraries that are already loaded, and numpy's OpenBLAS
        # (a different copy) would otherwise be the only one limited.
        import scipy.linalg.blas  # noqa: F401
        import scipy.linalg.cython_blas  # noqa: F401
        from threadpoolctl import threadpool_info, threadpool_limits
        self._limits = threadpool_limits(limits=self.threads, user_api="blas")
        wrong = [(os.path.basename(i["filepath"]), i["num_threads"]) for i in threadpool_info()
                 if i.get("user_api") == "blas" and i.get("num_threads") != self.threads]
        if wrong:
            raise RuntimeError(f"could not limit BLAS threads to {self.threads}: {wrong}")
        self.records = []
        self.notes = []
        self.load_start = _loadavg()
        self._peephole_fns = {}

    # ---- helpers -------------------------------------------------------------------------
    def peephole_fn(self, lib="peephole"):
        if lib not in self._peephole_fns:
            globals()["torch"] = self.torch
            self._peephole_fns[lib] = self.torch.jit.script(PEEPHOLE_FUNCTIONS[lib])
        return self._peephole_fns[lib]

    def torch_lstm(self, prob, h, n_in):
        torch = self.torch
        w_ih, w_hh, bias, _ = torch_weights(prob, h)
        lstm = torch.nn.LSTM(n_in, h).to(self.tdtype)
        with torch.no_grad():
            lstm.weight_ih_l0.copy_(torch.from_numpy(w_ih))
            lstm.weight_hh_l0.copy_(torch.from_numpy(w_hh))
            lstm.bias_ih_l0.copy_(torch.from_numpy(bias))
            lstm.bias_hh_l0.zero_()
        return lstm

    def peephole_params(self, prob, h):
        torch = self.torch
        w_ih, w_hh, bias, (w_ff, w_oo, w_gg) = torch_weights(prob, h)
        return [torch.from_numpy(a.copy()).requires_grad_(True)
                for a in (w_ih, w_hh, bias, w_ff, w_oo, w_gg)]

    def layer_class(self):
        lf = self.lstmfast
        cls = getattr(lf, "LSTM", None)
        if cls is None:
            try:
                from lstmfast.layers import LSTM as cls   # not (yet) exported at top level
            except Exception as exc:                       # noqa: BLE001
                self.notes.append(f"no lstmfast LSTM layer for streaming ({exc.__class__.__name__})")
                return None
        return cls

    def add(self, shape, mode, results, extra=None):
        for lib, r in results.items():
            rec = {"dtype": self.dtype.name, "threads": self.threads, "shape": shape, "mode": mode,
                   "lib": lib}
            rec.update(r)
            if extra and lib in extra:
                rec.update(extra[lib])
            self.records.append(rec)

    # ---- GEMM ----------------------------------------------------------------------------
    def gemm_routine(self):
        from scipy.linalg import blas
        return blas.sgemm if self.dtype == np.float32 else blas.dgemm

    def gemm_case(self, m, k, n, rng):
        gemm = self.gemm_routine()
        a = np.asfortranarray(rng.standard_normal((m, k)).astype(self.dtype))
        b = np.asfortranarray(rng.standard_normal((k, n)).astype(self.dtype))
        c = np.zeros((m, n), dtype=self.dtype, order="F")

        def run():
            gemm(1.0, a, b, 0.0, c, overwrite_c=1)
        return run, 2.0 * m * k * n

    def run_peak(self):
        rng = np.random.default_rng(7)
        cases, flops = {}, {}
        for n in self.spec.get("peak_sizes", (1024, 2048)):
            cases[f"gemm_peak_{n}"], flops[f"gemm_peak_{n}"] = self.gemm_case(n, n, n, rng)
        res = measure_side_by_side(cases, min(3, self.spec["repeats"]), 1, self.spec["min_time"])
        extra = {name: {"flops": flops[name],
                        "gflops": flops[name] / res[name]["median_s"] / 1e9} for name in res}
        self.add("peak", "gemm", res, extra)
        rates = fma_peak_gflops(self.dtype)
        if rates:
            # the limit is the better instruction set's rate: nothing retires flops faster
            self.records.append({"dtype": self.dtype.name, "threads": self.threads, "shape": "peak",
                                 "mode": "fma", "lib": FMA_PEAK_LIB, "gflops_core": max(rates.values()),
                                 "gflops_core_by_isa": rates})

    # ---- one shape, one mode --------------------------------------------------------------
    def run_shape(self, key, mode):
        dims, _ = SHAPE_INFO[key]
        T, mb, n_in, h = dims
        prob = make_problem(dims, self.dtype)
        large = key == "large"
        repeats = self.spec["large_repeats"] if large else self.spec["repeats"]
        warmup = 1 if large else self.spec["warmup"]
        cases, extra = {}, {}
        training = mode == "training"
        fwd_flops = 2.0 * T * mb * 4 * h * (n_in + h)
        lstm_flops = 3 * fwd_flops if training else fwd_flops

        if "lstmfast" in self.libs or "graves" in self.libs:
            lf = self.lstmfast
            x = lstmfast_layout(prob["x_tmn"], self.spec["x_layout"])
            eps = lstmfast_layout(prob["eps_tmh"], self.spec["x_layout"])
            W, b = prob["W"], prob["b"]
            for lib, RW in (("lstmfast", prob["RW"]), ("graves", prob["RWp"])):
                if lib not in self.libs or (lib == "graves" and large):
                    continue
                if training:
                    def run(RW=RW):
                        fwd = lf.lstm_forward(x, W, RW, b, for_backprop=True)
                        lf.lstm_backward(fwd, eps)
                else:
                    def run(RW=RW):
                        lf.lstm_forward(x, W, RW, b)
                cases[lib] = run
                extra[lib] = {"flops": lstm_flops}

        torch_inference = None
        peep_libs = [lib for lib in PEEPHOLE_FUNCTIONS if lib in self.libs and key in PEEPHOLE_SHAPES]
        if "torch" in self.libs or peep_libs:
            torch = self.torch
            xt = torch.from_numpy(prob["x_tmn"])
            et = torch.from_numpy(prob["eps_tmh"])
            if not training:
                torch_inference = torch.inference_mode
            if "torch" in self.libs:
                lstm = self.torch_lstm(prob, h, n_in)
                if training:
                    xg = xt.clone().requires_grad_(True)
                    params = list(lstm.parameters())

                    def run_torch():
                        xg.grad = None
                        for p in params:
                            p.grad = None
                        out, _ = lstm(xg)
                        out.backward(et)
                else:
                    def run_torch():
                        lstm(xt)
                cases["torch"] = run_torch
                extra["torch"] = {"flops": lstm_flops}
            for lib in peep_libs:
                fn = self.peephole_fn(lib)
                pp = self.peephole_params(prob, h)
                h0 = torch.zeros(mb, h, dtype=self.tdtype)
                c0 = torch.zeros(mb, h, dtype=self.tdtype)
                if training:
                    xg2 = xt.clone().requires_grad_(True)

                    def run_peep(fn=fn, pp=pp, xg2=xg2, h0=h0, c0=c0):
                        xg2.grad = None
                        for p in pp:
                            p.grad = None
                        fn(xg2, *pp, h0, c0).backward(et)
                else:
                    pp_nograd = [p.detach() for p in pp]

                    def run_peep(fn=fn, pp_nograd=pp_nograd, h0=h0, c0=c0):
                        fn(xt, *pp_nograd, h0, c0)
                # TorchScript's profiling executor optimises after a couple of runs
                for _ in range(2):
                    if torch_inference is not None:
                        with torch.inference_mode():
                            run_peep()
                    else:
                        run_peep()
                cases[lib] = run_peep
                extra[lib] = {"flops": lstm_flops}

        if "gemm" in self.libs:
            rng = np.random.default_rng(11)
            gem = {"gemm_in": (4 * h, n_in, mb * T), "gemm_step": (4 * h, h, mb)}
            if training:
                gem.update({"gemm_step_t": (h, 4 * h, mb), "gemm_dx": (n_in, 4 * h, mb * T),
                            "gemm_dw": (n_in, mb * T, 4 * h), "gemm_drw": (h, mb * T, 4 * h)})
            for name, (m, k, n) in gem.items():
                cases[name], fl = self.gemm_case(m, k, n, rng)
                extra[name] = {"flops": fl, "gemm_mkn": [m, k, n]}

        if not cases:
            return
        log(f"  [{self.dtype.name}, {self.threads} thr] {key} {dims} {mode}: "
            f"{', '.join(cases)}")
        res = measure_side_by_side(cases, repeats, warmup, self.spec["min_time"],
                                   context=torch_inference)
        for name, r in res.items():
            if "flops" in extra.get(name, {}):
                extra[name]["gflops"] = extra[name]["flops"] / r["median_s"] / 1e9
        self.add(key, mode, res, extra)

    # ---- streaming -------------------------------------------------------------------------
    def run_stream(self):
        dims, _ = SHAPE_INFO["stream"]
        _, mb, n_in, h = dims
        prob = make_problem(dims, self.dtype)
        cases = {}
        context = None
        x2 = np.ascontiguousarray(prob["x_tmn"][0])          # [mb, nIn]
        if "lstmfast" in self.libs:
            lf = self.lstmfast
            W, RW, b = prob["W"], prob["RW"], prob["b"]
            state = [np.zeros((mb, h), self.dtype), np.zeros((mb, h), self.dtype)]

            def step_functional():
                fwd = lf.lstm_forward(x2, W, RW, b, h0=state[0], c0=state[1])
                state[0] = fwd.last_h
                state[1] = fwd.last_c
            cases["lstmfast"] = step_functional
            cls = self.layer_class()
            if cls is not None:
                try:
                    layer = cls(n_in, h, dtype=self.dtype)
                    layer.W[...] = W
                    layer.RW[...] = RW
                    layer.b[...] = b
                    layer.rnn_time_step(x2)
                    cases["lstmfast_layer"] = lambda: layer.rnn_time_step(x2)
                except Exception as exc:                      # noqa: BLE001
                    self.notes.append(f"LSTM layer rnn_time_step unusable: {exc!r}")
        if "torch" in self.libs:
            torch = self.torch
            w_ih, w_hh, bias, _ = torch_weights(prob, h)
            cell = torch.nn.LSTMCell(n_in, h).to(self.tdtype)
            with torch.no_grad():
                cell.weight_ih.copy_(torch.from_numpy(w_ih))
                cell.weight_hh.copy_(torch.from_numpy(w_hh))
                cell.bias_ih.copy_(torch.from_numpy(bias))
                cell.bias_hh.zero_()
            xt = torch.from_numpy(x2)
            tstate = [torch.zeros(mb, h, dtype=self.tdtype), torch.zeros(mb, h, dtype=self.tdtype)]

            def step_torch():
                hh, cc = cell(xt, (tstate[0], tstate[1]))
                tstate[0] = hh
                tstate[1] = cc
            cases["torch"] = step_torch
            context = torch.inference_mode
        if not cases:
            return
        log(f"  [{self.dtype.name}, {self.threads} thr] stream {dims}: {', '.join(cases)}")
        res = measure_side_by_side(cases, self.spec["repeats"], self.spec["warmup"],
                                   self.spec["min_time"], context=context)
        self.add("stream", "stream", res)

    # ---- correctness check ---------------------------------------------------------------
    def run_check(self):
        """lstmfast vs PyTorch on the same weights: outputs and all gradients; returns the max
        relative errors (max |a - b| / max |b|)."""
        torch, lf = self.torch, self.lstmfast
        out = {}

        def rel(a, b):
            a = np.asarray(a, dtype=np.float64)
            b = np.asarray(b, dtype=np.float64)
            return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))

        for key in ("small", "tiny"):
            dims, _ = SHAPE_INFO[key]
            T, mb, n_in, h = dims
            prob = make_problem(dims, self.dtype, seed=99)
            x = lstmfast_layout(prob["x_tmn"], self.spec["x_layout"])
            eps = lstmfast_layout(prob["eps_tmh"], self.spec["x_layout"])
            xt = torch.from_numpy(prob["x_tmn"]).clone().requires_grad_(True)
            et = torch.from_numpy(prob["eps_tmh"])
            errs = {}
            # plain LSTM vs nn.LSTM
            fwd = lf.lstm_forward(x, prob["W"], prob["RW"], prob["b"], for_backprop=True)
            g = lf.lstm_backward(fwd, eps)
            lstm = self.torch_lstm(prob, h, n_in)
            y, (hn, cn) = lstm(xt)
            y.backward(et)
            y_np = y.detach().numpy().transpose(1, 2, 0)
            errs["lstm.output"] = rel(fwd.output, y_np)
            errs["lstm.last_c"] = rel(fwd.last_c, cn.detach().numpy()[0])
            gw, grw, gb = lstmfast_from_torch_grad(lstm.weight_ih_l0.grad.numpy(),
                                                   lstm.weight_hh_l0.grad.numpy(),
                                                   lstm.bias_ih_l0.grad.numpy(), h)
            errs["lstm.grad_W"] = rel(g.input_weights, gw)
            errs["lstm.grad_RW"] = rel(g.recurrent_weights, grw)
            errs["lstm.grad_b"] = rel(np.reshape(g.bias, -1), gb)
            errs["lstm.grad_x"] = rel(g.input, xt.grad.numpy().transpose(1, 2, 0))
            # GravesLSTM vs the TorchScript peephole loop
            fwd = lf.lstm_forward(x, prob["W"], prob["RWp"], prob["b"], for_backprop=True)
            g = lf.lstm_backward(fwd, eps)
            pp = self.peephole_params(prob, h)
            xt2 = torch.from_numpy(prob["x_tmn"]).clone().requires_grad_(True)
            zero = torch.zeros(mb, h, dtype=self.tdtype)
            y = self.peephole_fn()(xt2, *pp, zero, zero)
            y.backward(et)
            with torch.no_grad():
                y2 = self.peephole_fn("peephole_hoisted")(xt2, *pp, zero, zero)
            errs["graves.output_vs_hoisted_loop"] = rel(fwd.output, y2.numpy().transpose(1, 2, 0))
            errs["graves.output"] = rel(fwd.output, y.detach().numpy().transpose(1, 2, 0))
            gw, grw, gb = lstmfast_from_torch_grad(pp[0].grad.numpy(), pp[1].grad.numpy(),
                                                   pp[2].grad.numpy(), h)
            errs["graves.grad_W"] = rel(g.input_weights, gw)
            errs["graves.grad_RW"] = rel(g.recurrent_weights[:, :4 * h], grw)
            errs["graves.grad_b"] = rel(np.reshape(g.bias, -1), gb)
            peep_ref = np.stack([pp[3].grad.numpy(), pp[4].grad.numpy(), pp[5].grad.numpy()], axis=1)
            errs["graves.grad_peepholes"] = rel(g.recurrent_weights[:, 4 * h:], peep_ref)
            errs["graves.grad_x"] = rel(g.input, xt2.grad.numpy().transpose(1, 2, 0))
            # streaming: T steps one at a time == one pass
            hs = cs = None
            for t in range(T):
                f1 = lf.lstm_forward(np.ascontiguousarray(prob["x_tmn"][t]), prob["W"], prob["RW"],
                                     prob["b"], h0=hs, c0=cs)
                hs, cs = f1.last_h, f1.last_c
            errs["stream.last_h"] = rel(hs, hn.detach().numpy()[0])
            out[key] = errs
        return out

    # ---- meta ----------------------------------------------------------------------------
    def meta(self):
        from threadpoolctl import threadpool_info
        m = {"pid": os.getpid(), "threadpool_info": threadpool_info(),
             "loadavg_start": self.load_start, "loadavg_end": _loadavg(),
             "env": {k: v for k, v in os.environ.items()
                     if k.startswith(("OPENBLAS", "OMP_", "MKL_", "GOTO", "KMP_", "LSTMFAST"))},
             "notes": self.notes}
        if self.lstmfast is not None:
            lf = self.lstmfast
            so = getattr(getattr(lf, "functional", None), "_kernels", None)
            so_path = getattr(so, "__file__", None)
            m["lstmfast"] = {"version": getattr(lf, "__version__", "?"), "file": lf.__file__,
                             "kernels": so_path}
            if so_path and os.path.exists(so_path):
                with open(so_path, "rb") as fh:
                    m["lstmfast"]["kernels_sha1"] = hashlib.sha1(fh.read()).hexdigest()[:12]
                m["lstmfast"]["kernels_mtime"] = os.path.getmtime(so_path)
            m["lstmfast"]["code_path"] = lstmfast_code_path(lf)
        if self.torch is not None:
            torch = self.torch
            m["torch"] = {"version": torch.__version__, "num_threads": torch.get_num_threads(),
                          "mkldnn": bool(torch.backends.mkldnn.is_available()),
                          "cpu_capability": torch.backends.cpu.get_cpu_capability()}
        return m


def lstmfast_code_path(lf):
    """The kernels' code path chosen at import for this CPU (e.g. "avx512", "avx2+fma",
    "portable"). Read first from the package's own report where it has one (`lstmfast.info()`,
    a dict naming it under "code_path", "isa" or "simd"), then from the kernels."""
    report = getattr(lf, "info", None)
    if callable(report):
        try:
            facts = report()
        except Exception:               # an older or partial package: fall back below
            facts = None
        if isinstance(facts, dict):
            for key in ("code_path", "isa", "simd"):
                if facts.get(key):
                    return str(facts[key])
    kernels = getattr(lf, "kernels", None)
    if hasattr(kernels, "simd_variant"):
        return str(kernels.simd_variant())
    if hasattr(kernels, "_AVX2_ACTIVE"):
        return "avx2+fma" if kernels._AVX2_ACTIVE else "portable"
    return None


ONEDNN_LINE = "onednn_verbose,"


def onednn_report(torch):
    """oneDNN's version, its ISA on this CPU and the implementation it picks for the LSTM in
    inference and training, from oneDNN's own report of an nn.LSTM pass (verbose mode
    switched on through torch.backends.mkldnn for that pass only; oneDNN prints from C, so the
    process's stdout descriptor is redirected to a file meanwhile)."""
    import ctypes
    import tempfile
    if not torch.backends.mkldnn.is_available():
        return {"available": False}
    libc = ctypes.CDLL(None)
    T, mb, n_in, h = SHAPE_INFO["small"][0]       # oneDNN may pick by size: a timed shape
    lstm = torch.nn.LSTM(n_in, h)
    x = torch.randn(T, mb, n_in)
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+b") as fh:
        os.dup2(fh.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                with torch.inference_mode():
                    lstm(x)
                y, _ = lstm(x)
                y.sum().backward()
            libc.fflush(None)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        fh.seek(0)
        lines = fh.read().decode(errors="replace").splitlines()
    out = {"available": True, "rnn": {}}
    for line in lines:
        if not line.startswith(ONEDNN_LINE):
            continue
        fields = line.split(",")
        if "info" in fields and any(f.startswith("isa:") for f in fields):
            out["isa"] = next(f for f in fields if f.startswith("isa:"))[4:]
        elif "info" in fields and any(f.startswith("oneDNN v") for f in fields):
            out["version"] = next(f for f in fields if f.startswith("oneDNN v"))
        elif "exec" in fields and "rnn" in fields:
            i = fields.index("rnn")
            if len(fields) > i + 2:
                out["rnn"][fields[i + 2]] = fields[i + 1]     # prop_kind -> implementation
    return out


def probe_main(spec):
    """The software and hardware facts of the run, in a process of their own: lstmfast's code
    path and default threads, every BLAS threadpoolctl sees (OpenBLAS's core type is its
    `architecture`), PyTorch's CPU capability and oneDNN's ISA."""
    out = {}
    import scipy.linalg  # noqa: F401  (loads SciPy's OpenBLAS, which lstmfast's kernels call)
    if spec.get("lstmfast"):
        import lstmfast
        out["lstmfast"] = {"version": lstmfast.__version__,
                           "dir": os.path.dirname(os.path.abspath(lstmfast.__file__)),
                           "code_path": lstmfast_code_path(lstmfast),
                           "default_threads": lstmfast.get_num_threads()}
    if spec.get("torch"):
        try:
            import torch
        except ImportError:
            out["torch"] = None
        else:
            out["torch"] = {"version": torch.__version__,
                            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                            "default_threads": torch.get_num_threads(),
                            "onednn": onednn_report(torch)}
    if spec.get("lstmfast"):
        # each OpenBLAS copy's own answers (openblas_get_corename, openblas_get_config)
        from lstmfast import _blas_threads
        out["openblas"] = [{"file": os.path.basename(lib.path), "owner": lib.owner,
                            "core_type": lib.corename(), "config": lib.config(),
                            "default_threads": lib.get_num_threads()}
                           for lib in _blas_threads.libraries()]
    try:
        from threadpoolctl import threadpool_info
        out["blas"] = [{"file": os.path.basename(i.get("filepath", "")),
                        "owner": blas_owner(i.get("filepath", "")),
                        "library": i.get("internal_api"), "version": i.get("version"),
                        "core_type": i.get("architecture"), "threading": i.get("threading_layer"),
                        "default_threads": i.get("num_threads")}
                       for i in threadpool_info() if i.get("user_api") == "blas"]
    except ImportError:
        out["blas"] = None
    return out


def blas_owner(path):
    parts = os.path.normpath(path).split(os.sep)
    if any(p in ("scipy", "scipy.libs") for p in parts):
        return "SciPy"
    if any(p in ("numpy", "numpy.libs") for p in parts):
        return "NumPy"
    if any(p.startswith("torch") for p in parts):
        return "PyTorch"
    return "shared"


def train_loop_main(spec):
    """One library's training loop (benchmarks/train_loop.py) at the threads its environment
    gives; nothing else is set here."""
    import train_loop
    rec = train_loop.run(spec["libs"][0], spec["threads"], spec["dtype"], repeats=spec["repeats"],
                         batches=spec["train_batches"], warmup=spec["warmup"])
    rec["job_pid"] = os.getpid()
    meta = {"pid": os.getpid(), "train_loop": True, "loadavg_end": _loadavg(),
            "env": {k: v for k, v in os.environ.items() if k in THREAD_VARIABLES}, "notes": []}
    return {"records": [rec], "meta": meta}


def worker_main(spec_json):
    spec = json.loads(spec_json)
    if spec.get("probe") or spec.get("train_loop"):
        payload = probe_main(spec) if spec.get("probe") else train_loop_main(spec)
        sys.stdout.write(RESULT_MARK + json.dumps(payload) + "\n")
        sys.stdout.flush()
        return
    w = Worker(spec)
    payload = {}
    if spec.get("check"):
        payload["check"] = w.run_check()
    for key in spec.get("shapes", []):
        if key == "peak":
            if "gemm" in w.libs:
                w.run_peak()
            continue
        kind = SHAPE_INFO[key][1]
        if kind == "stream":
            w.run_stream()
        elif kind == "train_loop":
            continue
        else:
            for mode in spec["modes"]:
                if mode == "training" and kind != "full":
                    continue
                w.run_shape(key, mode)
    payload["meta"] = w.meta()
    sha = payload["meta"].get("lstmfast", {}).get("kernels_sha1")
    for rec in w.records:
        rec["kernels_sha1"] = sha
        rec["job_pid"] = os.getpid()
    payload["records"] = w.records
    sys.stdout.write(RESULT_MARK + json.dumps(payload) + "\n")
    sys.stdout.flush()


# =============================================================================================
# driver

class WorkerTimeout(RuntimeError):
    pass


IMPORT_ROOT = None      # where workers import lstmfast from: a copy of the package being timed


PACKAGE_PROBE = """
import json, os, sys
import numpy as np
import lstmfast
for dt in (np.float32, np.float64):
    r = np.random.default_rng(0)
    W = np.asfortranarray(r.standard_normal((3, 16)).astype(dt))
    for RW in (np.asfortranarray(r.standard_normal((4, 16)).astype(dt)),
               np.asfortranarray(r.standard_normal((4, 19)).astype(dt))):
        x = np.asfortranarray(r.standard_normal((2, 3, 5)).astype(dt))
        f = lstmfast.lstm_forward(x, W, RW, np.zeros(16, dt), h0=np.ones((2, 4), dt),
                                  c0=np.ones((2, 4), dt), for_backprop=True)
        lstmfast.lstm_backward(f, np.ones((2, 4, 5), dt))
        lstmfast.lstm_forward(x[:, :, 0], W, RW, np.zeros(16, dt))
print(json.dumps({"dir": os.path.dirname(os.path.abspath(lstmfast.__file__)),
                  "version": lstmfast.__version__}))
"""


def _probe_package(pythonpath):
    """Import lstmfast in a fresh interpreter whose working directory is not the source tree
    (`python -c` puts the working directory first on sys.path) and run a few tiny passes.
    Returns (package info dict or None, the error's last line)."""
    import tempfile
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    path = [pythonpath] if pythonpath else []
    if os.environ.get("PYTHONPATH"):
        path.append(os.environ["PYTHONPATH"])
    if path:
        env["PYTHONPATH"] = os.pathsep.join(path)
    with tempfile.TemporaryDirectory(prefix="bench_lstm_probe_") as cwd:
        probe = subprocess.run([sys.executable, "-c", PACKAGE_PROBE], cwd=cwd, env=env,
                               capture_output=True, text=True)
    if probe.returncode == 0:
        return json.loads(probe.stdout.strip().splitlines()[-1]), ""
    lines = probe.stderr.strip().splitlines()
    return None, lines[-1] if lines else f"exit status {probe.returncode}"


def _differing_sources(package_dir):
    """The Python files of the source tree's lstmfast/ that the timed package lacks or has in
    another version (the timed package was installed from another state of the tree)."""
    src = os.path.join(ROOT, "lstmfast")
    if not os.path.isdir(src) or os.path.realpath(src) == os.path.realpath(package_dir):
        return []
    differ = []
    for name in sorted(os.listdir(src)):
        if not name.endswith(".py"):
            continue
        other = os.path.join(package_dir, name)
        with open(os.path.join(src, name), "rb") as fh:
            mine = fh.read()
        try:
            with open(other, "rb") as fh:
                theirs = fh.read()
        except OSError:
            theirs = None
        if mine != theirs:
            differ.append(name)
    return differ


def locate_package(source_tree=False):
    """The lstmfast the run times: the installed package (what `pip install .` put in this
    Python's site-packages), or with source_tree=True the source tree's own lstmfast/, which
    needs its compiled extension beside it (`python setup.py build_ext --inplace`). Checked once
    in a subprocess; an error that says what to do when it does not import.
    Returns {"dir", "version", "kind"}."""
    if source_tree:
        info, err = _probe_package(ROOT)
        if info is None:
            raise SystemExit(
                f"the source tree's lstmfast ({ROOT}/lstmfast) does not import: {err}\n"
                "--source-tree times an in-place build: run `python setup.py build_ext --inplace` "
                "first, or drop --source-tree to time the installed package (`pip install .`)")
        if os.path.realpath(info["dir"]) != os.path.realpath(os.path.join(ROOT, "lstmfast")):
            raise SystemExit(f"--source-tree: lstmfast was imported from {info['dir']}, not from "
                             f"{ROOT}/lstmfast")
        info["kind"] = "source tree (in-place build)"
        return info
    info, err = _probe_package(None)
    if info is None:
        raise SystemExit(
            f"lstmfast is not installed in this Python ({sys.executable}) or does not import: "
            f"{err}\nInstall it from the repository root with `pip install .` (or time an in-place "
            "build with --source-tree)")
    inside = os.path.realpath(info["dir"]).startswith(os.path.realpath(ROOT) + os.sep)
    info["kind"] = "source tree (editable install)" if inside else "installed"
    stale = _differing_sources(info["dir"])
    if stale:
        info["differs_from_tree"] = stale
        log(f"WARNING: the installed lstmfast ({info['dir']}) differs from this source tree in "
            f"{', '.join(stale)}: run `pip install .` to time the tree as it is")
    return info


def copy_package(package_dir):
    """Copy the package (with its compiled extension) to a temporary directory, so that the
    whole run times one build even if the package is reinstalled or rebuilt meanwhile; the copy
    is checked to import. Returns the directory to put on the workers' PYTHONPATH."""
    import atexit
    import shutil
    import tempfile
    tmp = tempfile.mkdtemp(prefix="bench_lstm_pkg_")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)      # also when the run fails
    shutil.copytree(package_dir, os.path.join(tmp, "lstmfast"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    info, err = _probe_package(tmp)
    if info is None or os.path.realpath(info["dir"]) != os.path.realpath(os.path.join(tmp, "lstmfast")):
        shutil.rmtree(tmp, ignore_errors=True)
        raise SystemExit(f"the copy of {package_dir} does not import on its own: {err}")
    return tmp


def run_worker(spec, timeout=None):
    """Run one worker process (its stderr shown live); WorkerTimeout after `timeout` seconds.
    spec["env"] (optional) replaces the thread-count variables of the worker's environment."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    env = dict(os.environ)
    if "env" in spec:
        for key in THREAD_VARIABLES:
            env.pop(key, None)
        env.update(spec["env"])
    cwd = HERE
    if IMPORT_ROOT:
        env["PYTHONPATH"] = IMPORT_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        cwd = IMPORT_ROOT
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=cwd)
    out_chunks = []

    def read_stdout():
        out_chunks.append(proc.stdout.read())

    def forward_stderr():
        for line in proc.stderr:
            sys.stderr.write(line)
            sys.stderr.flush()
    readers = [threading.Thread(target=read_stdout, daemon=True),
               threading.Thread(target=forward_stderr, daemon=True)]
    for t in readers:
        t.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise WorkerTimeout(f"worker killed after {timeout:.0f} s: {spec.get('dtype')}, "
                            f"{spec.get('threads')} thread(s), {','.join(spec.get('libs', []))}, "
                            f"{','.join(spec.get('shapes', []))}") from None
    for t in readers:
        t.join(10)
    stdout = "".join(out_chunks)
    for line in stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    raise RuntimeError(f"worker failed (exit status {proc.returncode}; its errors are above): "
                       f"{json.dumps(spec)}")


def plan_jobs(args):
    """One worker per (threads, dtype, shape): at 1 thread all libraries together (sampled side by
    side); at more threads one for the raw GEMMs and, per round, one per compared library group
    (lstmfast and graves; PyTorch), alternating. Every job with `gemm` first measures the GEMM
    peak too (the table uses the best over the jobs), so each job is self-contained and the wait
    for an idle machine (--wait-idle) applies shape by shape."""
    libs = args.peers
    jobs = []
    base = {"repeats": args.repeats, "warmup": args.warmup, "min_time": args.min_time,
            "large_repeats": args.large_repeats, "modes": args.modes, "x_layout": args.x_layout,
            "peak_sizes": args.peak_sizes}
    for threads in args.threads:
        for dtype in args.dtype:
            shapes = [s for s in args.shapes if not (s == "large" and dtype not in args.large_dtypes)
                      and SHAPE_INFO[s][1] != "train_loop"]
            # at more threads the raw GEMMs get a process of their own too: after a multithreaded
            # OpenBLAS call its helper thread busy-waits for ~0.1 s, taking the core that
            # lstmfast's time-loop thread (which sets OpenBLAS to one thread) needs
            if threads == 1:
                for s in shapes:
                    peak = ["peak"] if ("gemm" in libs and s != "stream") else []
                    jobs.append(dict(base, threads=threads, dtype=dtype, libs=libs, shapes=peak + [s]))
                continue
            compared = [group for group in ([lib for lib in libs if lib in BLAS_LIBS and lib != "gemm"],
                                            [lib for lib in libs if lib in TORCH_LIBS]) if group]
            # the compared processes alternate in rounds (lstmfast, torch, then torch, lstmfast,
            # ...), each round with its share of the samples: processes timed minutes apart saw
            # the machine at different speeds (same build: 11.9 ms, then 17.2 ms per call)
            per_round = dict(base, repeats=math.ceil(args.repeats / args.rounds),
                             large_repeats=math.ceil(args.large_repeats / args.rounds))
            for s in shapes:
                if "gemm" in libs and s != "stream":          # streaming has no GEMM cases
                    jobs.append(dict(base, threads=threads, dtype=dtype, libs=["gemm"],
                                     shapes=["peak", s]))
                for rnd in range(args.rounds):
                    shift = rnd % len(compared) if compared else 0
                    for group in compared[shift:] + compared[:shift]:
                        jobs.append(dict(per_round, threads=threads, dtype=dtype, libs=group,
                                         shapes=[s], round=rnd))
    # the training loop: each library in its own process at every thread count, alternating
    loop_libs = [lib for lib in ("lstmfast", "torch") if lib in libs]
    if "charlm" in args.shapes and "float32" in args.dtype and loop_libs:
        for threads in args.threads:
            for rnd in range(args.rounds):
                shift = rnd % len(loop_libs)
                for lib in loop_libs[shift:] + loop_libs[:shift]:
                    jobs.append({"train_loop": True, "threads": threads, "dtype": "float32",
                                 "libs": [lib], "shapes": ["charlm"], "round": rnd,
                                 "repeats": math.ceil(args.repeats / args.rounds),
                                 "warmup": args.warmup, "train_batches": args.train_batches,
                                 "env": {"OMP_NUM_THREADS": str(threads)}})
    return jobs


# the CPU flags recorded (prefixes): the vector extensions the kernels, OpenBLAS and oneDNN choose by
SIMD_FLAGS = ("sse4", "avx", "fma", "f16c", "amx")


def machine_summary(info, metas=()):
    """The facts the results page states about the machine, from the run's probe (or, for runs
    recorded before it, from what the workers reported)."""
    sw = info.get("software") or {}
    flags = info.get("cpu_flags", "").split()
    out = {"cpu": f"{info.get('cpu', '?')} (family {info.get('cpu_family', '?')}, model "
                  f"{info.get('cpu_model', '?')})",
           "cpus": info.get("cpu_count"),
           "flags": " ".join(flags) + ("" if "avx512f" in flags else " (no AVX-512)"),
           "commit": info.get("git", "?")}
    lf = sw.get("lstmfast") or next((m["lstmfast"] for m in metas if "lstmfast" in m), None)
    if lf:
        path = lf.get("code_path")
        if path is None and "avx2_active" in lf:       # recorded before the code path was
            path = "avx2+fma" if lf["avx2_active"] else "portable"
        out["lstmfast"] = f"lstmfast {lf.get('version', '?')}, code path {path or '?'}"
    blas = sw.get("blas")
    if blas is None:                                   # from the workers' threadpoolctl reports
        seen = {}
        for m in metas:
            for i in m.get("threadpool_info", []):
                if i.get("user_api") == "blas":
                    seen[os.path.basename(i["filepath"])] = {
                        "file": os.path.basename(i["filepath"]), "owner": blas_owner(i["filepath"]),
                        "library": i.get("internal_api"), "version": i.get("version"),
                        "core_type": i.get("architecture"), "threading": i.get("threading_layer")}
        blas = list(seen.values())
    # OpenBLAS's own core type where the probe asked it (openblas_get_corename)
    cores = {o["file"]: o.get("core_type") for o in (sw.get("openblas") or [])}
    out["blas"] = [f"{b['owner']}'s {b.get('library')} {b.get('version')} (core type "
                   f"{cores.get(b['file']) or b.get('core_type')}, {b.get('threading')})" for b in sorted(
                       blas, key=lambda b: (b["owner"] != "SciPy", b["file"]))]
    tinfo = sw.get("torch") or next((m["torch"] for m in metas if "torch" in m), None)
    if tinfo:
        dnn = tinfo.get("onednn") or {}
        text = f"PyTorch {tinfo['version']}, CPU capability {tinfo.get('cpu_capability')}"
        if dnn.get("isa"):
            text += f", oneDNN ISA: {dnn['isa']}"
            if dnn.get("rnn"):
                text += " (LSTM: " + ", ".join(f"{k} {v}" for k, v in sorted(dnn["rnn"].items())) + ")"
        elif not dnn:
            text += ", oneDNN ISA not recorded"
        out["torch"] = text
    return out


def machine_lines(info, metas=()):
    """The machine, as lines for the log and the results page."""
    m = machine_summary(info, metas)
    lines = [f"CPU: {m['cpu']}, {m['cpus']} CPUs; flags: {m['flags']}"]
    if "lstmfast" in m:
        lines.append(m["lstmfast"])
    lines += [f"BLAS: {b}" for b in m["blas"]]
    if "torch" in m:
        lines.append(m["torch"])
    return lines


def machine_info():
    info = {"platform": platform.platform(), "python": sys.version.split()[0],
            "cpu_count": os.cpu_count(), "numpy": np.__version__}
    try:
        import scipy
        info["scipy"] = scipy.__version__
    except ImportError:
        pass
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, val = line.partition(":")
                key = key.strip()
                if key == "model name" and "cpu" not in info:
                    info["cpu"] = val.strip()
                elif key == "cpu family" and "cpu_family" not in info:
                    info["cpu_family"] = val.strip()
                elif key == "model" and "cpu_model" not in info:
                    info["cpu_model"] = val.strip()
                elif key == "flags" and "cpu_flags" not in info:
                    info["cpu_flags"] = " ".join(f for f in val.split() if f.startswith(SIMD_FLAGS))
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as fh:
            kb = int(fh.readline().split(":", 1)[1].split()[0])
            info["mem_total"] = f"{kb / 2**20:.1f} GiB RAM"
    except OSError:
        pass
    try:
        with open("/proc/loadavg") as fh:
            info["loadavg_at_start"] = fh.read().split()[:3]
    except OSError:
        pass
    try:
        rev = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                             capture_output=True, text=True).stdout.strip()
        info["git"] = rev
    except OSError:
        pass
    info["env_openblas"] = {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")}
    return info


# ---- tables ------------------------------------------------------------------------------

def merge_rounds(records):
    """One record per (dtype, threads, shape, mode, lib): the samples of every round's worker
    pooled (in job order, so that two libraries timed in the same jobs stay paired sample by
    sample) and summarized again. GEMM peak measurements stay one record per job."""
    merged, order = {}, []
    for r in records:
        if r["shape"] == "peak" or r["mode"] == "train_loop":
            order.append(r)
            continue
        key = (r["dtype"], r["threads"], r["shape"], r["mode"], r["lib"])
        if key not in merged:
            merged[key] = []
            order.append(key)
        merged[key].append(r)
    out = []
    for item in order:
        if isinstance(item, dict):
            out.append(item)
            continue
        parts = merged[item]
        if len(parts) == 1:
            out.append(parts[0])
            continue
        rec = dict(parts[0])
        rec.update(summarize([v for p in parts for v in p["samples_s"]],
                             [v for p in parts for v in p["cpu_s"]],
                             [p["calls_per_sample"] for p in parts]))
        if rec.get("flops"):
            rec["gflops"] = rec["flops"] / rec["median_s"] / 1e9
        rec["job_pid"] = [p.get("job_pid") for p in parts]
        rec["samples_per_job"] = [len(p["samples_s"]) for p in parts]
        rec["rounds"] = len(parts)
        out.append(rec)
    return out


def paired_ratio(num, den):
    """The median of the per-sample ratios num / den when the two records were sampled side by
    side (the same worker processes, the same number of samples in each: sample i of both was
    taken back to back), which cancels load that changes between samples; else (e.g. a case
    capped at SLOW_CALL_SAMPLES) the ratio of the medians."""
    a, b = num["samples_s"], den["samples_s"]
    if (len(a) == len(b) and num.get("job_pid") == den.get("job_pid")
            and num.get("samples_per_job") == den.get("samples_per_job")):
        return statistics.median(x / y for x, y in zip(a, b))
    return num["median_s"] / den["median_s"]


def index_records(records):
    return {(r["dtype"], r["threads"], r["shape"], r["mode"], r["lib"]): r for r in records}


def fmt_ms(seconds):
    if seconds is None:
        return "-"
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def fmt_ratio(x):
    return "-" if x is None else f"{x:.2f}x"


def target_for(dtype, mode, shape):
    if mode == "stream":
        return TARGETS[("any", "stream", "stream")]
    if dtype == "float64":
        return TARGETS[("float64", mode, "any")]
    group = "medium" if shape in MEDIUM else shape
    return TARGETS.get((dtype, mode, group))


def is_gemm_peak(r):
    return r["shape"] == "peak" and r["lib"].startswith("gemm_peak_")


def peak_of(records, dtype, threads):
    """The GEMM peak of the run: the best of the peak measurements of every job (dtype, threads)."""
    best = None
    for r in records:
        if r["dtype"] == dtype and r["threads"] == threads and is_gemm_peak(r):
            best = max(best or 0.0, r["gflops"])
    return best


def fma_peak_of(records, dtype, threads):
    """The arithmetic limit of `threads` cores in this run (threads x the best one-core FMA rate
    measured by any job of that dtype), or None where it was not measured."""
    best = None
    for r in records:
        if r["dtype"] == dtype and r["lib"] == FMA_PEAK_LIB:
            best = max(best or 0.0, r["gflops_core"])
    return None if best is None else best * threads


def fma_rates_by_isa(records, dtype):
    """One core's best FMA rate per instruction set in this run ({} for runs without them)."""
    best = {}
    for r in records:
        if r["dtype"] == dtype and r["lib"] == FMA_PEAK_LIB:
            # (runs recorded before the AVX-512 chains measured AVX2 only)
            for isa, v in r.get("gflops_core_by_isa", {"avx2": r["gflops_core"]}).items():
                best[isa] = max(best.get(isa, 0.0), v)
    return best


def ts_ceiling(loop, lstm, gflops):
    """The TorchScript loop's time over the time the LSTM's GEMM flops (a GravesLSTM does at least
    those) take at `gflops` GFLOP/s: no implementation doing those flops at that rate reaches a
    higher TorchScript/Graves ratio. None where a record or the rate is missing."""
    if not (loop and lstm and lstm.get("flops") and gflops):
        return None
    return loop["median_s"] / (lstm["flops"] / (gflops * 1e9))


def build_tables(records, dtypes, threads_list, baseline=None):
    """Rows per (dtype, threads) for the main, GravesLSTM, streaming and GEMM tables."""
    idx = index_records(records)
    base_idx = index_records(baseline["records"]) if baseline else {}
    tables = []
    for threads in threads_list:
        for dtype in dtypes:
            peak = peak_of(records, dtype, threads)
            fma_peak = fma_peak_of(records, dtype, threads)
            main, graves, stream, gemm = [], [], [], []
            for key, dims, kind in SHAPES:
                g = lambda lib, mode, key=key: idx.get((dtype, threads, key, mode, lib))  # noqa: E731
                if kind == "stream":
                    torch_r = g("torch", "stream")
                    for lib in ("lstmfast", "lstmfast_layer"):
                        r = g(lib, "stream")
                        if r is None and torch_r is None:
                            continue
                        ratio = (torch_r["median_s"] / r["median_s"]) if (r and torch_r) else None
                        # the floor is for streaming through a layer (lstm_forward is shown beside it)
                        tgt = target_for(dtype, "stream", key) if lib == "lstmfast_layer" else None
                        stream.append({
                            "entry": {"lstmfast": "lstm_forward(x2d, h0=, c0=)",
                                      "lstmfast_layer": "LSTM.rnn_time_step(x2d)"}[lib],
                            "lstmfast_us": r["median_s"] * 1e6 if r else None,
                            "torch_us": torch_r["median_s"] * 1e6 if torch_r else None,
                            "ratio": ratio, "target": tgt,
                            "met": None if ratio is None or tgt is None else ratio >= tgt})
                    continue
                for mode in ("inference", "training"):
                    if mode == "training" and kind != "full":
                        continue
                    lf, tr = g("lstmfast", mode), g("torch", mode)
                    if lf is None and tr is None and g("gemm_in", mode) is None:
                        continue
                    ratio = tr["median_s"] / lf["median_s"] if (lf and tr) else None
                    tgt = target_for(dtype, mode, key)
                    frac = (lf["gflops"] / peak) if (lf and peak) else None
                    fma_frac = (lf["gflops"] / fma_peak) if (lf and fma_peak) else None
                    floor = None
                    gi, gs = g("gemm_in", mode), g("gemm_step", mode)
                    if gi and gs:
                        T = dims[0]
                        floor = gi["median_s"] + T * gs["median_s"]
                        if mode == "training":
                            parts = [g(n, mode) for n in ("gemm_step_t", "gemm_dx", "gemm_dw", "gemm_drw")]
                            if all(parts):
                                floor += (T * parts[0]["median_s"] + parts[1]["median_s"]
                                          + parts[2]["median_s"] + parts[3]["median_s"])
                            else:
                                floor = None
                    met = None
                    if ratio is not None and tgt is not None:
                        met = ratio >= tgt
                        if key == "large" and threads == 1 and fma_frac is not None:
                            met = met and fma_frac >= LARGE_MIN_FMA_FRACTION
                    row = {"shape": key, "dims": dims, "mode": mode,
                           "lstmfast_s": lf["median_s"] if lf else None,
                           "torch_s": tr["median_s"] if tr else None,
                           "ratio": ratio, "target": tgt, "met": met,
                           "gflops": lf["gflops"] if lf else None, "peak_fraction": frac,
                           "fma_fraction": fma_frac,
                           "floor_s": floor,
                           "floor_ratio": (lf["median_s"] / floor) if (lf and floor) else None,
                           "torch_iqr": (tr["q1_s"], tr["q3_s"]) if tr else None,
                           "lstmfast_iqr": (lf["q1_s"], lf["q3_s"]) if lf else None}
                    if base_idx:
                        b = base_idx.get((dtype, threads, key, mode, "lstmfast"))
                        row["vs_baseline"] = (b["median_s"] / lf["median_s"]) if (b and lf) else None
                    main.append(row)
                    gr, pe, ph = g("graves", mode), g("peephole", mode), g("peephole_hoisted", mode)
                    if gr or pe or ph:
                        graves.append({
                            "shape": key, "dims": dims, "mode": mode,
                            "lstm_s": lf["median_s"] if lf else None,
                            "graves_s": gr["median_s"] if gr else None,
                            "overhead": (paired_ratio(gr, lf) - 1) if (gr and lf) else None,
                            "peephole_s": pe["median_s"] if pe else None,
                            "peephole_ratio": (pe["median_s"] / gr["median_s"]) if (pe and gr) else None,
                            "peephole_ceiling": ts_ceiling(pe, lf, peak),
                            "peephole_ceiling_fma": ts_ceiling(pe, lf, fma_peak),
                            "hoisted_s": ph["median_s"] if ph else None,
                            "hoisted_ratio": (ph["median_s"] / gr["median_s"]) if (ph and gr) else None})
                    if gi and gs:
                        gemm.append({"shape": key, "dims": dims, "mode": mode,
                                     "in_gflops": gi["gflops"], "in_ms": gi["median_s"] * 1e3,
                                     "in_mkn": gi["gemm_mkn"],
                                     "step_gflops": gs["gflops"], "step_us": gs["median_s"] * 1e6,
                                     "step_mkn": gs["gemm_mkn"]})
            if main or graves or stream:
                per_job = [max(r["gflops"] for r in records
                               if r["dtype"] == dtype and r["threads"] == threads and is_gemm_peak(r)
                               and r.get("job_pid", 0) == pid)
                           for pid in sorted({r.get("job_pid", 0) for r in records
                                              if r["dtype"] == dtype and r["threads"] == threads
                                              and is_gemm_peak(r)})]
                tables.append({"dtype": dtype, "threads": threads, "peak_gflops": peak,
                               "fma_peak_gflops": fma_peak,
                               "fma_core_by_isa": fma_rates_by_isa(records, dtype),
                               "peak_range": [min(per_job), max(per_job)] if per_job else None,
                               "peak_count": len(per_job),
                               "main": main, "graves": graves, "stream": stream, "gemm": gemm})
    return tables


def dims_str(d):
    return "(" + ", ".join(str(v) for v in d) + ")"


def build_train_loop(records):
    """The training loop's rows, one per thread count: characters per second of each library
    (the samples of its rounds pooled), their ratio and each library's speed-up over its own
    1-thread rate."""
    rates = {}
    for r in records:
        if r["mode"] == "train_loop":
            rates.setdefault((r["threads"], r["lib"]), []).extend(r["chars_per_s_samples"])
    rows = []
    for threads in sorted({t for t, _ in rates}):
        row = {"threads": threads}
        for lib in ("lstmfast", "torch"):
            samples = rates.get((threads, lib))
            row[lib] = statistics.median(samples) if samples else None
            base = rates.get((1, lib))
            row[f"{lib}_scaling"] = (row[lib] / statistics.median(base)
                                     if (samples and base and threads > 1) else None)
        row["ratio"] = row["lstmfast"] / row["torch"] if (row["lstmfast"] and row["torch"]) else None
        if threads > 1:
            row["met"] = (None if row["ratio"] is None or row["lstmfast_scaling"] is None else
                          row["ratio"] >= TRAIN_LOOP_MIN_RATIO
                          and row["lstmfast_scaling"] >= TRAIN_LOOP_MIN_SCALING)
        mine = [r for r in records if r["mode"] == "train_loop" and r["threads"] == threads]
        row["loss"] = {r["lib"]: (r["loss_first"], r["loss_last"]) for r in mine}
        row["settings"] = {r["lib"]: r.get("settings", {}) for r in mine}
        rows.append(row)
    return rows


def describe_thread_settings(settings):
    """'lstmfast: team 2, OpenBLAS 2 (SciPy's) and 2 (NumPy's); PyTorch: 2 threads' from the
    training-loop workers' reports."""
    parts = []
    for lib, name in (("lstmfast", "lstmfast"), ("torch", "PyTorch")):
        got = settings.get(lib)
        if not got:
            continue
        blas = ", ".join(f"{b['num_threads']} ({blas_owner_of_file(b['file'])})" for b in got.get("blas", []))
        n = got.get("torch_threads")
        head = (f"team {got['lstmfast_threads']}" if "lstmfast_threads" in got
                else f"{n} thread{'' if n == 1 else 's'}")
        parts.append(f"{name}: {head}" + (f", OpenBLAS {blas}" if blas else ""))
    return "; ".join(parts)


def blas_owner_of_file(name):
    """Whose copy of OpenBLAS a library file is, by the wheels' naming (NumPy's is the 64-bit
    integer build, libscipy_openblas64_)."""
    return "NumPy's" if "64_" in name else ("SciPy's" if "openblas" in name else name)


def table_head(fixed, per_thread, threads_list, extra=()):
    """A markdown table's header and separator: the fixed columns, per_thread(t)'s columns
    ((name, right-aligned) pairs) for each thread count, then the extra columns."""
    cols = ([(name, False) for name in fixed] + [c for t in threads_list for c in per_thread(t)]
            + [(name, False) for name in extra])
    return ["| " + " | ".join(name for name, _ in cols) + " |",
            "|" + "".join("---:|" if right else "---|" for _, right in cols)]


def _pct(x):
    return "-" if x is None else f"{100 * x:.0f}%"


def render_markdown(tables, train_rows=(), baseline_tag=None):
    """The run's tables for the results page, compact: one row per (dtype, shape, mode) with a
    column per thread count."""
    mark = lambda met: "" if met is None else (" ✓" if met else " ✗")  # noqa: E731
    threads_list = sorted({tb["threads"] for tb in tables})
    by_key = {(tb["dtype"], tb["threads"]): tb for tb in tables}
    dtypes = [d for d in ("float32", "float64") if any(tb["dtype"] == d for tb in tables)]
    thr = lambda t: f"{t} thread{'s' if t > 1 else ''}"  # noqa: E731
    out = []

    def rows_of(part, key_fn):
        """{(dtype, key): {threads: row}} in table order."""
        grid = {}
        for dtype in dtypes:
            for t in threads_list:
                tb = by_key.get((dtype, t))
                for r in (tb or {}).get(part, []):
                    grid.setdefault((dtype,) + key_fn(r), {})[t] = r
        return grid

    main = rows_of("main", lambda r: (r["shape"], r["mode"]))
    if main:
        out += ["lstmfast against `nn.LSTM`: ms per call, lstmfast / PyTorch, then **PyTorch time / "
                "lstmfast time** (above 1: lstmfast is faster), ✓ / ✗ against the floor; "
                "% FMA: lstmfast's GFLOP/s over the FMA limit of the threads' cores.", ""]
        out += table_head(["dtype", "shape (T, mb, nIn, h)", "mode", "floor"],
                          lambda t: [(thr(t), False), ("% FMA", True)], threads_list,
                          extra=[f"vs {baseline_tag}"] if baseline_tag else [])
        for (dtype, _, mode), cells in main.items():
            any_r = next(iter(cells.values()))
            line = (f"| {dtype} | {dims_str(any_r['dims'])} | {mode} | "
                    f"{'≥' + format(any_r['target'], 'g') if any_r['target'] else '-'} |")
            for t in threads_list:
                r = cells.get(t)
                if r is None:
                    line += " - | - |"
                    continue
                line += (f" {fmt_ms(r['lstmfast_s'])} / {fmt_ms(r['torch_s'])} "
                         f"**{fmt_ratio(r['ratio'])}**{mark(r['met'])} | {_pct(r.get('fma_fraction'))} |")
            if baseline_tag:
                line += " " + " / ".join(fmt_ratio(cells[t].get("vs_baseline")) for t in threads_list
                                         if t in cells) + " |"
            out.append(line)
        out.append("")

    graves = rows_of("graves", lambda r: (r["shape"], r["mode"]))
    if graves:
        out += ["GravesLSTM (peepholes): its time over the LSTM's (sample by sample, the floor is "
                f"+{100 * GRAVES_MAX_OVERHEAD:.0f}%), and the TorchScript LSTMCell-style peephole "
                "loop's time over GravesLSTM's, with in brackets that ratio's ceiling: the loop's "
                "time over the time the LSTM's GEMM flops take at the FMA limit (no implementation "
                "doing those flops can beat the loop by more).", ""]
        out += table_head(["dtype", "shape", "mode"],
                          lambda t: [(f"peepholes, {thr(t)}", True),
                                     (f"TorchScript / GravesLSTM, {thr(t)}", True)], threads_list)
        for (dtype, _, mode), cells in graves.items():
            any_r = next(iter(cells.values()))
            line = f"| {dtype} | {dims_str(any_r['dims'])} | {mode} |"
            for t in threads_list:
                r = cells.get(t, {})
                ov = r.get("overhead")
                ceiling = r.get("peephole_ceiling_fma") or r.get("peephole_ceiling")
                line += (f" {'-' if ov is None else format(100 * ov, '+.1f') + '%'}"
                         f"{'' if ov is None else mark(ov <= GRAVES_MAX_OVERHEAD)} |"
                         f" {fmt_ratio(r.get('peephole_ratio'))}"
                         f"{'' if ceiling is None else ' (' + fmt_ratio(ceiling) + ')'} |")
            out.append(line)
        out.append("")

    stream = rows_of("stream", lambda r: (r["entry"],))
    if stream:
        out += ["Streaming, one step of (mb 1, nIn 32, h 32) per Python call: µs, lstmfast / "
                "`nn.LSTMCell`, then LSTMCell's time over lstmfast's (the floor, "
                f"≥{TARGETS[('any', 'stream', 'stream')]:g}, is for `rnn_time_step`).", ""]
        out += table_head(["dtype", "lstmfast entry point"], lambda t: [(thr(t), False)], threads_list)
        for (dtype, entry), cells in stream.items():
            line = f"| {dtype} | `{entry}` |"
            for t in threads_list:
                r = cells.get(t)
                if r is None or r["lstmfast_us"] is None or r["torch_us"] is None:
                    line += " - |"
                    continue
                line += (f" {r['lstmfast_us']:.1f} / {r['torch_us']:.1f} "
                         f"**{fmt_ratio(r['ratio'])}**{mark(r['met'])} |")
            out.append(line)
        out.append("")

    if train_rows:
        out += ["The training loop users run (`benchmarks/train_loop.py`): a character model like "
                "the demo's, two LSTM(128) layers, softmax output over 77 characters, Adam, "
                "truncated BPTT 50, minibatch 32, sequences of 100, float32; lstmfast's "
                "`Sequential.fit_batch` against `nn.LSTM(num_layers=2)` + `nn.Linear` + Adam, each "
                "in its own process with only OMP_NUM_THREADS set. Characters per second; the "
                f"floor at 2 threads and more: ≥{TRAIN_LOOP_MIN_RATIO:g}x PyTorch and "
                f"≥{TRAIN_LOOP_MIN_SCALING:g}x lstmfast's own 1-thread rate.", "",
                "| threads | lstmfast chars/s | PyTorch chars/s | lstmfast / PyTorch | "
                "lstmfast vs its 1 thread | PyTorch vs its 1 thread |",
                "|---|---:|---:|---:|---:|---:|"]
        for r in train_rows:
            fmt_rate = lambda v: "-" if v is None else f"{v / 1e3:.1f}k"  # noqa: E731
            out.append(f"| {r['threads']} | {fmt_rate(r['lstmfast'])} | {fmt_rate(r['torch'])} | "
                       f"**{fmt_ratio(r['ratio'])}**{mark(r.get('met'))} | "
                       f"{fmt_ratio(r['lstmfast_scaling'])} | {fmt_ratio(r['torch_scaling'])} |")
        out.append("")
        chosen = [f"at {r['threads']}: {describe_thread_settings(r.get('settings', {}))}"
                  for r in train_rows if r.get("settings")]
        if chosen:
            out += ["What the libraries chose on their own " + "; ".join(chosen) + ".", ""]

    peaks = [tb for tb in tables if tb.get("peak_gflops") or tb.get("fma_peak_gflops")]
    if peaks:
        out += ["The run's arithmetic limits (GFLOP/s): OpenBLAS's GEMM peak (best of the run's "
                "measurements on square Fortran matrices) and the FMA limit: threads × one core's "
                "best rate on 12 independent FMA chains (`benchmarks/fma_peak.c`), AVX2 or, where "
                "the CPU has it, AVX-512, whichever retires more flops.", "",
                "| dtype | threads | GEMM peak | FMA limit | one core: AVX2 / AVX-512 |",
                "|---|---|---:|---:|---|"]
        for tb in peaks:
            isa = tb.get("fma_core_by_isa") or {}
            out.append(f"| {tb['dtype']} | {tb['threads']} | "
                       f"{'-' if not tb.get('peak_gflops') else format(tb['peak_gflops'], '.1f')} | "
                       f"{'-' if not tb.get('fma_peak_gflops') else format(tb['fma_peak_gflops'], '.1f')} | "
                       + " / ".join(format(isa[k], ".1f") if k in isa else "-" for k in ("avx2", "avx512"))
                       + " |")
        out.append("")
    return "\n".join(out)


def render_text(tables, train_rows=()):
    lines = []
    for tb in tables:
        peak = tb["peak_gflops"]
        lines.append(f"== {tb['dtype']}, {tb['threads']} thread(s)"
                     + (f", GEMM peak {peak:.1f} GFLOP/s" if peak else "")
                     + (f", FMA limit {tb['fma_peak_gflops']:.1f}" if tb.get("fma_peak_gflops") else ""))
        lines.append(f"{'shape':<22}{'mode':<10}{'lstmfast ms':>12}{'torch ms':>10}{'ratio':>9}"
                     f"{'target':>8}{'%peak':>7}{'floor ms':>10}{'graves+%':>9}{'TS/gr':>9}"
                     f"{'TS max':>10}")
        gidx = {(r["shape"], r["mode"]): r for r in tb["graves"]}
        for r in tb["main"]:
            g = gidx.get((r["shape"], r["mode"]), {})
            ov = g.get("overhead")
            pr = g.get("peephole_ratio")
            ceiling = g.get("peephole_ceiling_fma") or g.get("peephole_ceiling")
            tgt = "-" if r["target"] is None else (
                f"{r['target']:g}" + ("" if r["met"] is None else ("+" if r["met"] else "!")))
            lines.append(
                f"{dims_str(r['dims']):<22}{r['mode']:<10}{fmt_ms(r['lstmfast_s']):>12}"
                f"{fmt_ms(r['torch_s']):>10}{fmt_ratio(r['ratio']):>9}{tgt:>8}"
                f"{('-' if r['peak_fraction'] is None else format(100 * r['peak_fraction'], '.0f') + '%'):>7}"
                f"{fmt_ms(r['floor_s']):>10}"
                f"{('-' if ov is None else format(100 * ov, '+.0f') + '%'):>9}"
                f"{('-' if pr is None else format(pr, '.1f') + 'x'):>9}"
                f"{('-' if ceiling is None else format(ceiling, '.1f') + 'x'):>10}")
        for r in tb["stream"]:
            lines.append(f"stream {r['entry']:<34} lstmfast "
                         f"{'-' if r['lstmfast_us'] is None else format(r['lstmfast_us'], '.1f')} µs, "
                         f"LSTMCell {'-' if r['torch_us'] is None else format(r['torch_us'], '.1f')} µs, "
                         f"ratio {fmt_ratio(r['ratio'])}")
        lines.append("")
    if train_rows:
        lines.append("== training loop (character model, float32): characters per second")
        for r in train_rows:
            rate = lambda v: "-" if v is None else f"{v:,.0f}"  # noqa: E731
            lines.append(f"{r['threads']} thread(s): lstmfast {rate(r['lstmfast'])}, PyTorch "
                         f"{rate(r['torch'])}, ratio {fmt_ratio(r['ratio'])}"
                         + ("" if r.get("met") is None else (" (floor met)" if r["met"] else " (floor missed)"))
                         + (f"; vs 1 thread: lstmfast {fmt_ratio(r['lstmfast_scaling'])}, PyTorch "
                            f"{fmt_ratio(r['torch_scaling'])}" if r["threads"] > 1 else ""))
            for lib, (first, last) in sorted(r["loss"].items()):
                lines.append(f"    {lib} loss per character {first:.3f} -> {last:.3f}")
        lines.append("")
    return "\n".join(lines)


def plot(tables, path, title=None, train_rows=()):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not installed: no plot (pip install matplotlib)")
        return False
    n = len(tables)
    if n == 0:
        return False
    cols = min(2, n)
    rows = int(math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 4.2 * rows), squeeze=False)
    from matplotlib.ticker import FuncFormatter, LogLocator
    for ax, tb in zip(axes.flat, tables):
        labels, inf, tra, tinf, ttra = [], [], [], [], []
        for r in tb["main"]:
            lab = f"{r['shape']}\n" + ",".join(str(v) for v in r["dims"])
            if lab not in labels:
                labels.append(lab)
                for lst in (inf, tra, tinf, ttra):
                    lst.append(None)
            i = labels.index(lab)
            if r["mode"] == "inference":
                inf[i], tinf[i] = r["ratio"], r["target"]
            else:
                tra[i], ttra[i] = r["ratio"], r["target"]
        for r in tb["stream"]:
            labels.append("stream\n" + ("lstm_forward" if r["entry"].startswith("lstm_forward")
                                        else "rnn_time_\nstep"))
            inf.append(r["ratio"])
            tinf.append(r["target"])
            tra.append(None)
            ttra.append(None)
        for r in train_rows:                 # the training loop: lstmfast's rate over PyTorch's
            if tb["dtype"] == "float32" and r["threads"] == tb["threads"] and r["ratio"]:
                labels.append("training loop\nchar model")
                inf.append(None)
                tinf.append(None)
                tra.append(r["ratio"])
                ttra.append(TRAIN_LOOP_MIN_RATIO if r["threads"] > 1 else None)
        xs = np.arange(len(labels))
        wdt = 0.38
        for off, vals, tgts, lab, col in ((-wdt / 2, inf, tinf, "inference (forward)", "#4c72b0"),
                                          (wdt / 2, tra, ttra, "training (fwd+bwd)", "#dd8452")):
            pos = [x + off for x, v in zip(xs, vals) if v]
            hv = [v for v in vals if v]
            # bars grow from 1 (parity): up when lstmfast is faster, down when slower
            ax.bar(pos, [v - 1.0 for v in hv], wdt, bottom=1.0, label=lab, color=col)
            for x, v in zip(pos, hv):
                ax.text(x, v * (1.03 if v >= 1 else 0.97), f"{v:.2f}", ha="center",
                        va="bottom" if v >= 1 else "top", fontsize=7)
            tpos = [(x + off, t) for x, t in zip(xs, tgts) if t]
            if tpos:
                ax.scatter([p[0] for p in tpos], [p[1] for p in tpos], marker="_", s=250,
                           color="k", zorder=3, label="target" if off < 0 else None)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.set_xticks(xs)
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_ylabel("torch time / lstmfast time  (>1: lstmfast faster)", fontsize=8)
        ax.set_xlabel("shape: T, minibatch, nIn, h", fontsize=8)
        ax.set_title(f"{tb['dtype']}, {tb['threads']} thread(s)")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


RESULTS_BEGIN = "<!-- BEGIN bench_lstm.py: the latest run, rewritten by each run -->"
RESULTS_END = "<!-- END bench_lstm.py -->"
RESULTS_STUB = """# lstmfast benchmark results

Written by `benchmarks/bench_lstm.py`; what it times and how: its docstring.

"""


def write_results_md(path, body):
    """Replace the generated section of the results page (the text between the markers); the
    rest of the page is kept. A page without the markers gets the section at its end."""
    section = f"{RESULTS_BEGIN}\n{body.rstrip()}\n{RESULTS_END}\n"
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    else:
        text = RESULTS_STUB
    if RESULTS_BEGIN in text and RESULTS_END in text:
        pre = text[:text.index(RESULTS_BEGIN)]
        post = text[text.index(RESULTS_END) + len(RESULTS_END):].lstrip("\n")
        text = pre + section + ("\n" + post if post else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def describe_run(meta_list, info, args, check, command, started, elapsed):
    """The run's header on the results page: when, the command, the machine, the method."""
    rounds = getattr(args, "rounds", 1)
    lines = [f"Run of {started} ({elapsed / 60:.0f} min), source tree at commit "
             f"{info.get('git', '?')}:", "", f"    {command}", ""]
    lines += [f"- {line}" for line in machine_lines(info, meta_list)]
    lines.append(f"- Python {info['python']}, NumPy {info['numpy']}, SciPy {info.get('scipy', '?')}, "
                 f"{info.get('platform')}; lstmfast timed: {info.get('lstmfast_source', '?')}")
    lines.append(f"- Medians of {args.repeats} samples ({args.large_repeats} for the largest shape), "
                 f"each the mean of the calls that fill {args.min_time * 1e3:.0f} ms, after "
                 f"{args.warmup} warm-up call(s). At 1 thread the libraries share a process, sampled "
                 f"side by side; at more threads each has its own, "
                 f"{'alternating in ' + str(rounds) + ' rounds' if rounds > 1 else 'one after the other'}.")
    loads = [v for m in meta_list for v in (m.get("loadavg_start"), m.get("loadavg_end")) if v is not None]
    if loads:
        lines.append(f"- 1-minute load average seen by the workers: {min(loads):.2f} to {max(loads):.2f} "
                     f"on {info.get('cpu_count')} CPUs")
    notes = sorted({n for m in meta_list for n in m.get("notes", [])})
    lines += [f"- Note: {n}" for n in notes]
    if check:
        worst = max(v for errs in check.values() for v in errs.values())
        lines.append("- Agreement check before timing (outputs and every gradient, LSTM against "
                     "`nn.LSTM`, GravesLSTM against the TorchScript peephole loop, shapes small and "
                     f"tiny): largest relative difference {worst:.1e}")
    lines.append("")
    return "\n".join(lines)


def display_command(command):
    """The command without the options that only say where the output goes or what it is called
    (they do not change what is timed)."""
    words = shlex.split(command)
    out, skip = [], False
    for w in words:
        if skip:
            skip = False
            continue
        if w in ("--tag", "--out-dir"):
            skip = True
            continue
        if w.startswith(("--tag=", "--out-dir=")) or w == "--no-write":
            continue
        out.append(w)
    return " ".join(shlex.quote(w) for w in out)


def parse_list(value, allowed=None, convert=str):
    items = [convert(v.strip()) for v in value.split(",") if v.strip()]
    if allowed is not None:
        bad = [v for v in items if v not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(map(str, allowed))}")
    return items


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", default="1,2", type=lambda v: parse_list(v, None, int),
                   help="thread counts, comma-separated (default 1,2)")
    p.add_argument("--dtype", default="float32,float64",
                   type=lambda v: parse_list(v, ("float32", "float64")))
    p.add_argument("--peers", default=",".join(DEFAULT_LIBS), type=lambda v: parse_list(v, ALL_LIBS),
                   help="which libraries: lstmfast, graves (lstmfast with peepholes), gemm, torch, "
                        "peephole (TorchScript LSTMCell-style peephole loop), peephole_hoisted (the "
                        "same with the input projection hoisted out of the loop; not by default); "
                        f"default {','.join(DEFAULT_LIBS)}")
    p.add_argument("--shapes", default=",".join(k for k, _, _ in SHAPES),
                   type=lambda v: parse_list(v, [k for k, _, _ in SHAPES]),
                   help="; ".join(f"{k}={d}" for k, d, _ in SHAPES))
    p.add_argument("--modes", default="inference,training",
                   type=lambda v: parse_list(v, ("inference", "training")))
    p.add_argument("--repeats", type=int, default=None, help="samples per case (default 7, quick 3)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up calls (default 2, quick 1)")
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds per sample at least (default 0.05, quick 0.02)")
    p.add_argument("--large-repeats", type=int, default=3, help="samples for the largest shape")
    p.add_argument("--train-batches", type=int, default=None,
                   help="training loop (shape charlm): minibatches per sample (default 8, quick 3)")
    p.add_argument("--rounds", type=int, default=2,
                   help="at more than 1 thread, how many times the lstmfast and PyTorch worker "
                        "processes alternate per shape, each round taking its share of the samples "
                        "(default 2)")
    p.add_argument("--large-dtypes", default="float32", type=lambda v: parse_list(v, ("float32", "float64")),
                   help="dtypes in which the largest shape runs (default float32; float64 adds ~8 min)")
    p.add_argument("--peak-sizes", default="1024,2048", type=lambda v: parse_list(v, None, int))
    p.add_argument("--x-layout", default="F", choices=("F", "C", "tmf"),
                   help="memory layout of lstmfast's [mb, nIn, T] input and epsilon (default F)")
    p.add_argument("--quick", action="store_true", help="3 repeats, 1 warm-up, no largest shape")
    p.add_argument("--baseline", default=None,
                   help="a results JSON to compare lstmfast's times with (adds a speed-up column)")
    p.add_argument("--out-dir", default=HERE)
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--skip-check", action="store_true", help="skip the agreement check")
    p.add_argument("--ignore-check", action="store_true",
                   help="time even when the agreement check fails (flagged in RESULTS.md)")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                   help="before each worker, wait up to SECONDS for the machine to be idle "
                        "(other processes below --idle-threshold of the CPUs); default 0: don't wait")
    p.add_argument("--idle-threshold", type=float, default=0.25)
    p.add_argument("--worker-timeout", type=float, default=900.0, metavar="SECONDS",
                   help="kill a worker process after this long (its entries are then missing)")
    p.add_argument("--render", default=None, metavar="RESULTS_JSON",
                   help="no timing: rebuild the tables, RESULTS.md section and plot from a results "
                        "JSON written by an earlier run")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run with the same options (progress is "
                        "saved after every worker job in the temporary directory)")
    p.add_argument("--source-tree", action="store_true",
                   help="time the source tree's lstmfast/ (built in place with `python setup.py "
                        "build_ext --inplace`) instead of the installed package")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker is not None:
        worker_main(args.worker)
        return 0
    if args.render is not None:
        with open(args.render, encoding="utf-8") as fh:
            payload = json.load(fh)
        payload.setdefault("check_failures", [])
        # what the run was called and where it wrote are no part of its results
        payload.pop("tag", None)
        payload["command"] = display_command(payload["command"])
        for key in ("tag", "out_dir", "render"):
            payload["args"].pop(key, None)
        if not any("job_pid" in r for r in payload["records"]):      # results from before job_pid
            job, prev = 0, ""
            for r in payload["records"]:
                if r["lib"].startswith("gemm_peak_") and not prev.startswith("gemm_peak_"):
                    job += 1
                r["job_pid"] = job
                prev = r["lib"]
        return publish(payload, args.out_dir, args.baseline, write=not args.no_write)

    args.fast_split = FAST_SPLIT                 # recorded with the run's arguments
    args.fast_call_ms = FAST_CALL_S * 1e3
    if args.rounds < 1:
        p.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.repeats is None:
        args.repeats = 3 if args.quick else 7
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    if args.min_time is None:
        args.min_time = 0.02 if args.quick else 0.05
    if args.train_batches is None:
        args.train_batches = 3 if args.quick else 8
    if args.quick:
        args.shapes = [s for s in args.shapes if s != "large"]
        args.large_repeats = min(args.large_repeats, 2)

    given = sys.argv[1:] if argv is None else list(argv)
    command = " ".join(["python", "benchmarks/bench_lstm.py"] + [shlex.quote(a) for a in given])
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    t_start = time.perf_counter()
    info = machine_info()
    log(f"bench_lstm: {command}")

    missing = [f"{name}, {why} (`pip install {pip}`)" for name, pip, why, needed in (
        ("threadpoolctl", "threadpoolctl", "which sets and checks the BLAS threads", True),
        ("torch", "torch==2.13.0", "the peer (or leave it out: --peers lstmfast,graves,gemm)",
         any(lib in TORCH_LIBS for lib in args.peers))) if needed and importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit("bench_lstm.py needs " + "; ".join(missing))
    global IMPORT_ROOT
    package = None
    if needs_lstmfast(args):
        package = locate_package(args.source_tree)
        IMPORT_ROOT = copy_package(package["dir"])
        log(f"timing lstmfast {package['version']}, {package['kind']}: {package['dir']} "
            f"(copied for the run to {IMPORT_ROOT})")
    info["software"] = run_worker({"probe": True, "lstmfast": package is not None,
                                   "torch": any(lib in TORCH_LIBS for lib in args.peers)})
    for line in machine_lines(info):
        log(line)
    metas, records, check, check_failures = [], [], None, []
    if not args.skip_check and "lstmfast" in args.peers and "torch" in args.peers:
        for dtype in args.dtype:
            spec = {"check": True, "threads": 1, "dtype": dtype, "libs": [], "shapes": [],
                    "x_layout": args.x_layout}
            res = run_worker(spec)
            metas.append(res["meta"])
            check = check or {}
            for key, errs in res["check"].items():
                check[f"{dtype}/{key}"] = errs
            worst = max(v for errs in res["check"].values() for v in errs.values())
            tol = 1e-4 if dtype == "float32" else 1e-9
            log(f"agreement check {dtype}: worst relative difference {worst:.2e} (tolerance {tol:g})")
            failed = sorted({f"{key}/{name} {v:.2e}" for key, errs in res["check"].items()
                             for name, v in errs.items() if not v <= tol})
            if failed:
                check_failures += [f"{dtype}/{f}" for f in failed]
                msg = f"lstmfast and PyTorch disagree in {dtype} (tolerance {tol:g}): {', '.join(failed)}"
                if not args.ignore_check:
                    raise SystemExit(msg + "\n(--ignore-check times anyway and flags it in RESULTS.md)")
                log("WARNING: " + msg)

    jobs = plan_jobs(args)
    log(f"{len(jobs)} worker job(s)")
    # progress is saved after every job, so that an interrupted run can be continued (--resume)
    import tempfile
    partial_path = os.path.join(tempfile.gettempdir(), "bench_lstm_partial.json")
    done = 0
    if args.resume and os.path.exists(partial_path):
        with open(partial_path, encoding="utf-8") as fh:
            part = json.load(fh)
        if part.get("jobs") == jobs:
            done, records, metas = part["done"], part["records"], part["metas"]
            check = check or part.get("check")
            log(f"resuming {partial_path}: {done} of {len(jobs)} jobs already done")
        else:
            log(f"{partial_path} was made with other options: starting afresh")
    for i, spec in enumerate(jobs, 1):
        if i <= done:
            continue
        if i > 1:
            with open(partial_path, "w", encoding="utf-8") as fh:
                json.dump({"jobs": jobs, "done": i - 1, "records": records, "metas": metas,
                           "check": check}, fh)
        log(f"job {i}/{len(jobs)}: {spec['dtype']}, {spec['threads']} thread(s), libs "
            f"{','.join(spec['libs'])}, shapes {','.join(spec['shapes'])}")
        busy = wait_for_idle(args.wait_idle, args.idle_threshold)
        try:
            res = run_worker(spec, timeout=args.worker_timeout)
        except WorkerTimeout as exc:
            log(f"WARNING: {exc}")
            metas.append({"notes": [str(exc) + " (its entries are missing)"], "cpu_busy_before": busy})
            continue
        for rec in res["records"]:
            rec["cpu_busy_before"] = busy
        records += res["records"]
        res["meta"]["cpu_busy_before"] = busy
        metas.append(res["meta"])
    elapsed = time.perf_counter() - t_start
    if os.path.exists(partial_path):
        os.remove(partial_path)
    if package:
        info["lstmfast_source"] = f"{package['kind']}: {package['dir']}"
        if package.get("differs_from_tree"):
            info["lstmfast_source"] += (" (differs from the source tree in "
                                        + ", ".join(package["differs_from_tree"]) + ")")

    payload = {"command": display_command(command), "started": started, "elapsed_s": elapsed,
               "machine": info, "args": {k: v for k, v in vars(args).items() if k != "worker"},
               "check": check, "check_failures": check_failures, "worker_meta": metas,
               "records": records}
    return publish(payload, args.out_dir, args.baseline, write=not args.no_write)


def publish(payload, out_dir, baseline_path=None, write=True):
    """Tables from payload["records"]: printed, and (write=True) written to results.json,
    ratios.png and the generated section of RESULTS.md in out_dir."""
    run_args = argparse.Namespace(**payload["args"])
    baseline = None
    if baseline_path:
        with open(baseline_path, encoding="utf-8") as fh:
            baseline = json.load(fh)
    records = merge_rounds(payload["records"])
    tables = build_tables(records, run_args.dtype, run_args.threads,
                          baseline and {"records": merge_rounds(baseline["records"])})
    train_rows = build_train_loop(records)
    payload["tables"] = tables
    payload["train_loop"] = train_rows
    print(render_text(tables, train_rows))
    log(f"total {payload['elapsed_s'] / 60:.1f} min")
    if not write:
        return 0
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, "results.json")
    with open(json_path, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=1)
    png = os.path.join(out_dir, "ratios.png")
    machine = payload["machine"]
    plotted = plot(tables, png, f"PyTorch time / lstmfast time on {machine.get('cpu', '?')} (family "
                                f"{machine.get('cpu_family', '?')}, model {machine.get('cpu_model', '?')}), "
                                f"{machine.get('cpu_count')} CPUs; run of {payload['started']}, commit "
                                f"{machine.get('git', '?')}", train_rows)
    body = describe_run(payload["worker_meta"], payload["machine"], run_args, payload["check"],
                        display_command(payload["command"]), payload["started"], payload["elapsed_s"])
    if payload.get("check_failures"):
        body += ("\n**WARNING: the agreement check failed** (lstmfast vs PyTorch on the same weights): "
                 + ", ".join(payload["check_failures"]) + "\n")
    body += "\n" + render_markdown(tables, train_rows,
                                   f"the run of {baseline['started']}" if baseline else None)
    if plotted:
        body += "\n![PyTorch time over lstmfast time per shape](ratios.png)\n"
    write_results_md(os.path.join(out_dir, "RESULTS.md"), body)
    log(f"wrote {json_path}, {os.path.join(out_dir, 'RESULTS.md')}" + (f", {png}" if plotted else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
