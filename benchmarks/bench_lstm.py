#!/usr/bin/env python
"""Benchmark lstmfast against PyTorch's CPU LSTM and against the GEMM peak of its own OpenBLAS.

    python benchmarks/bench_lstm.py                 # full run (11-18 minutes on the 2-core machine)
    python benchmarks/bench_lstm.py --quick         # fewer repeats, largest shape skipped (a few minutes)
    python benchmarks/bench_lstm.py --threads 1 --dtype float32 --shapes small,tiny,stream
    python benchmarks/bench_lstm.py --wait-idle 90  # wait (<= 90 s per job) for other processes to finish

What is timed (medians of `--repeats` samples after warm-up; a sample is the mean of as many
calls as fill `--min-time` seconds):

* lstmfast    `lstm_forward` (inference) and `lstm_forward(for_backprop=True)` + `lstm_backward`
              (training), LSTM without peepholes;
* graves      the same with peepholes (GravesLSTM, recurrent weights [h, 4h+3]);
* torch       `torch.nn.LSTM` with the same weights (inference under `torch.inference_mode()`;
              training: forward + `output.backward(eps)`, with dL/dx as lstmfast computes it);
* peephole    the PyTorch peephole baseline at the three medium shapes and the tiny one: an
              LSTMCell-style loop with peephole terms (both projections every step, as
              nn.LSTMCell does), compiled with TorchScript; `peephole_hoisted` (optional)
              hoists the input projection of all steps out of the loop, a stronger baseline;
* gemm        raw scipy.linalg.blas sgemm/dgemm: the peak on large square Fortran matrices and the
              LSTM's own GEMM shapes, giving a "BLAS floor" (the time of the GEMMs alone); and
              the FMA limit of one core (`benchmarks/fma_peak.c`, built with the system C
              compiler on first use), from which the tables give each TorchScript/Graves
              ratio's ceiling: the most any implementation doing the LSTM's flops could reach.

Streaming (shape `stream`, (T, mb, nIn, h) = (1, 1, 32, 32)): one step per call through the
Python API (`lstmfast.lstm_forward(x2d, W, RW, b, h0=h, c0=c)`, and a layer's `rnn_time_step`
when the package has an LSTM layer class) against `torch.nn.LSTMCell`.

Processes: one worker process per (threads, dtype, shape). At 1 thread it runs every library,
interleaved sample by sample (side by side). At more threads each library group (lstmfast and
graves; the raw GEMMs; PyTorch: torch, peephole) gets its own worker, because PyTorch's OpenMP
pool and OpenBLAS's pthread pool slow each other down when both are live in one process, and an
OpenBLAS helper thread busy-waits for ~0.1 s after each multithreaded call. There the lstmfast
and PyTorch workers of a shape alternate in `--rounds` rounds (default 2: lstmfast, PyTorch,
PyTorch, lstmfast), each taking its share of the samples, which are pooled: the machine's speed
changes over minutes, and one process each, timed apart, compared two different machines.
lstmfast's own time-loop threads are set with lstmfast.set_num_threads(threads).
Workers are this script re-invoked with `--worker SPEC`; they print one JSON line. BLAS threads
are set with threadpoolctl after SciPy's OpenBLAS is loaded (threadpoolctl cannot limit a
library that is not loaded yet; NumPy's OpenBLAS is a different copy) and checked. The workers
import a snapshot of the built package copied at the start (`--no-snapshot`: the source tree),
so a rebuild during the run does not mix builds. Progress is saved after every job (`--resume`).

Before timing, a check worker verifies that lstmfast and PyTorch compute the same thing
(outputs and every gradient, LSTM vs nn.LSTM and GravesLSTM vs the TorchScript peephole loop).

Output: a table on stdout, `benchmarks/RESULTS.md` (the section of this `--tag` is replaced,
everything else in the file is kept), `benchmarks/results.json` and `benchmarks/ratios.png`
(for `--tag latest`, the default; another tag writes `results_<tag>.json` and
`ratios_<tag>.png`). `--render results_<tag>.json` rebuilds the tables without timing;
`--baseline results_<tag>.json` adds a speed-up column against an earlier run.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import gc
import hashlib
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
]
SHAPE_INFO = {key: (dims, kind) for key, dims, kind in SHAPES}
MEDIUM = ("small", "medium", "long")          # the "three medium shapes"
PEEPHOLE_SHAPES = MEDIUM + ("tiny",)          # where the TorchScript peephole loop is timed
BLAS_LIBS = ("lstmfast", "graves", "gemm")    # share scipy's OpenBLAS pool
TORCH_LIBS = ("torch", "peephole", "peephole_hoisted")   # share PyTorch's OpenMP pool
ALL_LIBS = BLAS_LIBS + TORCH_LIBS
DEFAULT_LIBS = ("lstmfast", "graves", "gemm", "torch", "peephole")

# Floors from issue 3 (torch time / lstmfast time unless noted).
TARGETS = {
    ("float32", "training", "medium"): 1.1,
    ("float32", "training", "tiny"): 5.0,
    ("float32", "inference", "medium"): 1.0,
    ("float32", "inference", "tiny"): 3.0,
    ("float32", "inference", "large"): 0.95,
    ("float64", "training", "any"): 1.5,
    ("float64", "inference", "any"): 1.5,
    ("any", "stream", "stream"): 10.0,
}
GRAVES_MAX_OVERHEAD = 0.10
PEEPHOLE_MIN_RATIO = 5.0
LARGE_MIN_PEAK_FRACTION = 0.75


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
#   peephole_lstm_cell     what issue 3 names: an LSTMCell-style loop (both projections every
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
        for name in ("fma_peak_f64", "fma_peak_f32"):
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
    chains in the dtype; None where it cannot be built or run."""
    lib = _fma_library()
    if lib is None:
        return None
    fn, lanes = (lib.fma_peak_f32, 8) if np.dtype(dtype) == np.float32 else (lib.fma_peak_f64, 4)
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
    return best


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
        core = fma_peak_gflops(self.dtype)
        if core is not None:
            self.records.append({"dtype": self.dtype.name, "threads": self.threads, "shape": "peak",
                                 "mode": "fma", "lib": FMA_PEAK_LIB, "gflops_core": core})

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
            try:
                m["lstmfast"]["avx2_active"] = bool(so._AVX2_ACTIVE)
            except Exception:                                # noqa: BLE001
                pass
        if self.torch is not None:
            torch = self.torch
            m["torch"] = {"version": torch.__version__, "num_threads": torch.get_num_threads(),
                          "mkldnn": bool(torch.backends.mkldnn.is_available()),
                          "cpu_capability": torch.backends.cpu.get_cpu_capability()}
        return m


def worker_main(spec_json):
    spec = json.loads(spec_json)
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


IMPORT_ROOT = ROOT      # where workers import lstmfast from (a snapshot directory by default)


SNAPSHOT_PROBE = """
import numpy as np, lstmfast
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
"""


def snapshot_package(attempts=8):
    """Copy the built package (lstmfast/ with its compiled extension) to a temporary directory so
    that the whole run times one build even if the source tree is rebuilt meanwhile. Returns the
    directory, after checking in a subprocess that the copy imports."""
    import shutil
    import tempfile
    for attempt in range(1, attempts + 1):
        tmp = tempfile.mkdtemp(prefix="bench_lstm_pkg_")
        shutil.copytree(os.path.join(ROOT, "lstmfast"), os.path.join(tmp, "lstmfast"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        probe = subprocess.run([sys.executable, "-c", SNAPSHOT_PROBE], cwd=tmp,
                               env=dict(os.environ, PYTHONPATH=tmp), capture_output=True, text=True)
        if probe.returncode == 0:
            return tmp
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"snapshot of lstmfast does not import (attempt {attempt}/{attempts}; being rebuilt?): "
            f"{probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else probe.returncode}")
        time.sleep(30)
    raise SystemExit("could not take a working snapshot of the lstmfast package")


def run_worker(spec, attempts=3, timeout=None):
    """Run one worker process (its stderr shown live); retry when the package looks like it is
    being rebuilt; WorkerTimeout after `timeout` seconds."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    env = dict(os.environ)
    env["PYTHONPATH"] = IMPORT_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for attempt in range(1, attempts + 1):
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, cwd=IMPORT_ROOT)
        out_chunks, err_lines = [], []

        def read_stdout():
            out_chunks.append(proc.stdout.read())

        def forward_stderr():
            for line in proc.stderr:
                err_lines.append(line)
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
            raise WorkerTimeout(f"worker killed after {timeout:.0f} s: {spec['dtype']}, "
                                f"{spec['threads']} thread(s), {','.join(spec['libs'])}, "
                                f"{','.join(spec['shapes'])}") from None
        for t in readers:
            t.join(10)
        stdout, stderr = "".join(out_chunks), "".join(err_lines)
        for line in stdout.splitlines():
            if line.startswith(RESULT_MARK):
                return json.loads(line[len(RESULT_MARK):])
        log(f"worker failed (attempt {attempt}/{attempts}, exit {proc.returncode}); "
            f"stdout tail: {stdout[-500:]!r}")
        transient = IMPORT_ROOT == ROOT and any(
            k in stderr for k in ("ImportError", "ModuleNotFoundError", "undefined symbol",
                                  "invalid ELF header", "AttributeError: module 'lstmfast"))
        if not transient:
            break
        if attempt < attempts:
            log("  (looks like the extension is being rebuilt: retrying in 30 s)")
            time.sleep(30)
    raise RuntimeError(f"worker failed: {spec}")


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
            shapes = [s for s in args.shapes if not (s == "large" and dtype not in args.large_dtypes)]
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
    return jobs


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
                    flags = set(val.split())
                    info["cpu_flags"] = " ".join(f for f in ("avx2", "fma", "avx512f") if f in flags)
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
        if r["shape"] == "peak":
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
                        tgt = target_for(dtype, "stream", key)
                        stream.append({
                            "entry": {"lstmfast": "lstm_forward(x2d, h0=, c0=)",
                                      "lstmfast_layer": "LSTM.rnn_time_step(x2d)"}[lib],
                            "lstmfast_us": r["median_s"] * 1e6 if r else None,
                            "torch_us": torch_r["median_s"] * 1e6 if torch_r else None,
                            "ratio": ratio, "target": tgt,
                            "met": None if ratio is None else ratio >= tgt})
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
                        if key == "large" and frac is not None:
                            met = met and frac >= LARGE_MIN_PEAK_FRACTION
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
                               "peak_range": [min(per_job), max(per_job)] if per_job else None,
                               "peak_count": len(per_job),
                               "main": main, "graves": graves, "stream": stream, "gemm": gemm})
    return tables


def dims_str(d):
    return "(" + ", ".join(str(v) for v in d) + ")"


def render_markdown(tables, baseline_tag=None):
    out = []
    mark = lambda met: "" if met is None else (" ✓" if met else " ✗")  # noqa: E731
    for tb in tables:
        peak = tb["peak_gflops"]
        title = (f"### {tb['dtype']}, {tb['threads']} thread{'s' if tb['threads'] > 1 else ''}"
                 + (f" — GEMM peak {peak:.1f} GFLOP/s" if peak else ""))
        if tb.get("peak_range") and tb["peak_range"][0] < tb["peak_range"][1]:
            title += (f" (best of {tb['peak_count']} measurements in this run, which ranged "
                      f"{tb['peak_range'][0]:.1f}–{tb['peak_range'][1]:.1f})")
        if tb.get("fma_peak_gflops"):
            title += f"; FMA limit {tb['fma_peak_gflops']:.1f} GFLOP/s"
        out.append(title)
        out.append("")
        if tb["main"]:
            hdr = ("| shape (T, mb, nIn, h) | mode | lstmfast ms | torch ms | torch/lstmfast | target "
                   "| lstmfast GFLOP/s | % GEMM peak | % FMA limit | BLAS floor ms | lstmfast/floor |")
            sep = "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"
            if baseline_tag:
                hdr += f" speed-up vs {baseline_tag} |"
                sep += "---:|"
            out += [hdr, sep]
            for r in tb["main"]:
                line = (f"| {dims_str(r['dims'])} | {r['mode']} | {fmt_ms(r['lstmfast_s'])} | "
                        f"{fmt_ms(r['torch_s'])} | **{fmt_ratio(r['ratio'])}** | "
                        f"{'≥' + format(r['target'], 'g') if r['target'] else '-'}{mark(r['met'])} | "
                        f"{'-' if r['gflops'] is None else format(r['gflops'], '.1f')} | "
                        f"{'-' if r['peak_fraction'] is None else format(100 * r['peak_fraction'], '.0f') + '%'} | "
                        f"{'-' if r.get('fma_fraction') is None else format(100 * r['fma_fraction'], '.0f') + '%'} | "
                        f"{fmt_ms(r['floor_s'])} | {fmt_ratio(r['floor_ratio'])} |")
                if baseline_tag:
                    line += f" {fmt_ratio(r.get('vs_baseline'))} |"
                out.append(line)
            out.append("")
        if tb["graves"]:
            hoisted = any(r.get("hoisted_s") for r in tb["graves"])
            out += ["GravesLSTM (peepholes) beside LSTM, and the TorchScript LSTMCell-style peephole loop"
                    + (" (and the same loop with the input projection hoisted)" if hoisted else "")
                    + ". The overhead is the median of the per-sample ratios GravesLSTM / LSTM (sample "
                    "i of each taken back to back in the same worker; the ratio of the medians where "
                    "their sample counts differ). The ceilings are the TorchScript loop's time over the "
                    "time the LSTM's GEMM flops (2·T·mb·4h·(nIn+h), training 3×) take at this run's GEMM "
                    "peak, and at the FMA limit (threads × the best rate of one core retiring AVX2 "
                    "fused multiply-adds on 12 independent registers, `benchmarks/fma_peak.c`): no "
                    "implementation doing those flops on these cores can reach a higher "
                    "TorchScript/Graves ratio than the second:", "",
                    "| shape | mode | LSTM ms | GravesLSTM ms | peephole overhead (≤10%) | TorchScript peephole ms | TorchScript/Graves (≥5) | ceiling at the GEMM peak | ceiling at the FMA limit |"
                    + (" hoisted-loop ms | hoisted/Graves |" if hoisted else ""),
                    "|---|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if hoisted else "")]
            for r in tb["graves"]:
                ov = r["overhead"]
                ov_s = "-" if ov is None else f"{100 * ov:+.1f}%{mark(ov <= GRAVES_MAX_OVERHEAD)}"
                pr = r["peephole_ratio"]
                pr_s = "-" if pr is None else f"{pr:.2f}x{mark(pr >= PEEPHOLE_MIN_RATIO)}"
                out.append(f"| {dims_str(r['dims'])} | {r['mode']} | {fmt_ms(r['lstm_s'])} | "
                           f"{fmt_ms(r['graves_s'])} | {ov_s} | {fmt_ms(r['peephole_s'])} | {pr_s} | "
                           f"{fmt_ratio(r.get('peephole_ceiling'))} | "
                           f"{fmt_ratio(r.get('peephole_ceiling_fma'))} |"
                           + (f" {fmt_ms(r.get('hoisted_s'))} | {fmt_ratio(r.get('hoisted_ratio'))} |"
                              if hoisted else ""))
            out.append("")
        if tb["stream"]:
            out += ["Streaming, one step of (mb 1, nIn 32, h 32) per Python call:", "",
                    "| lstmfast entry point | lstmfast µs | torch nn.LSTMCell µs | LSTMCell/lstmfast (≥10) |",
                    "|---|---:|---:|---:|"]
            for r in tb["stream"]:
                out.append(f"| `{r['entry']}` | "
                           f"{'-' if r['lstmfast_us'] is None else format(r['lstmfast_us'], '.1f')} | "
                           f"{'-' if r['torch_us'] is None else format(r['torch_us'], '.1f')} | "
                           f"{fmt_ratio(r['ratio'])}{mark(r['met'])} |")
            out.append("")
        if tb["gemm"]:
            out += ["GEMM at the LSTM's shapes (scipy.linalg.blas, Fortran operands, C preallocated; "
                    "per-step times include ~2-3 µs of Python call overhead):", "",
                    "| shape | input projection m×k×n | GFLOP/s | ms | per-step recurrent m×k×n | GFLOP/s | µs/call |",
                    "|---|---|---:|---:|---|---:|---:|"]
            seen = set()
            for r in tb["gemm"]:
                if r["shape"] in seen:
                    continue
                seen.add(r["shape"])
                out.append(f"| {dims_str(r['dims'])} | {'×'.join(map(str, r['in_mkn']))} | "
                           f"{r['in_gflops']:.1f} | {r['in_ms']:.2f} | {'×'.join(map(str, r['step_mkn']))} | "
                           f"{r['step_gflops']:.1f} | {r['step_us']:.1f} |")
            out.append("")
    return "\n".join(out)


def render_text(tables):
    lines = []
    for tb in tables:
        peak = tb["peak_gflops"]
        lines.append(f"== {tb['dtype']}, {tb['threads']} thread(s)"
                     + (f", GEMM peak {peak:.1f} GFLOP/s" if peak else "")
                     + (f", FMA limit {tb['fma_peak_gflops']:.1f}" if tb.get("fma_peak_gflops") else ""))
        lines.append(f"{'shape':<22}{'mode':<10}{'lstmfast ms':>12}{'torch ms':>10}{'ratio':>8}"
                     f"{'target':>8}{'%peak':>7}{'floor ms':>10}{'graves+%':>9}{'TS/gr':>7}"
                     f"{'TS max':>8}")
        gidx = {(r["shape"], r["mode"]): r for r in tb["graves"]}
        for r in tb["main"]:
            g = gidx.get((r["shape"], r["mode"]), {})
            ov = g.get("overhead")
            pr = g.get("peephole_ratio")
            ceiling = g.get("peephole_ceiling_fma") or g.get("peephole_ceiling")
            tgt = "-" if r["target"] is None else (f"{r['target']:g}" + ("" if r["met"] is None else ("+" if r["met"] else "!")))
            lines.append(
                f"{dims_str(r['dims']):<22}{r['mode']:<10}{fmt_ms(r['lstmfast_s']):>12}"
                f"{fmt_ms(r['torch_s']):>10}{fmt_ratio(r['ratio']):>8}{tgt:>8}"
                f"{('-' if r['peak_fraction'] is None else format(100 * r['peak_fraction'], '.0f') + '%'):>7}"
                f"{fmt_ms(r['floor_s']):>10}"
                f"{('-' if ov is None else format(100 * ov, '+.0f') + '%'):>9}"
                f"{('-' if pr is None else format(pr, '.1f') + 'x'):>7}"
                f"{('-' if ceiling is None else format(ceiling, '.1f') + 'x'):>8}")
        for r in tb["stream"]:
            lines.append(f"stream {r['entry']:<34} lstmfast "
                         f"{'-' if r['lstmfast_us'] is None else format(r['lstmfast_us'], '.1f')} µs, "
                         f"LSTMCell {'-' if r['torch_us'] is None else format(r['torch_us'], '.1f')} µs, "
                         f"ratio {fmt_ratio(r['ratio'])}")
        lines.append("")
    return "\n".join(lines)


def plot(tables, path):
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


RESULTS_HEADER = """# lstmfast benchmark results

Produced by `benchmarks/bench_lstm.py` (see its docstring for what is timed and how). Ratios are
PyTorch time / lstmfast time: **> 1 means lstmfast is faster**. "% GEMM peak" is lstmfast's achieved
GFLOP/s (forward 2·T·mb·4h·(nIn+h) flops, training 3× that) over the sgemm/dgemm peak measured in
the same run at the same thread count; "% FMA limit" the same over the arithmetic limit of the cores
(threads × the best rate of one core retiring AVX2 fused multiply-adds on 12 independent registers,
`benchmarks/fma_peak.c`), which no implementation can pass. "BLAS floor" is the time of the LSTM's
GEMMs alone (input projection + T recurrent steps, and for training also the transposed steps and
the dW/dRW/dx GEMMs), timed through scipy.linalg.blas: lstmfast/floor - 1 is roughly the share of
element-wise code and overhead. The sections between the generated markers are rewritten by the
script (one per `--tag`); everything else in this file is kept.

## What each lever bought

(to be filled in by the kernel work: lever, shape, before → after)

"""


def write_results_md(path, tag, body):
    begin = f"<!-- BEGIN bench_lstm.py: {tag} -->"
    end = f"<!-- END bench_lstm.py: {tag} -->"
    section = f"{begin}\n{body.rstrip()}\n{end}\n"
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    else:
        text = RESULTS_HEADER
    if begin in text and end in text:
        pre = text[:text.index(begin)]
        post = text[text.index(end) + len(end):].lstrip("\n")
        text = pre + section + ("\n" + post if post else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def describe_run(meta_list, info, args, check, command, started, elapsed):
    rounds = getattr(args, "rounds", 1)          # runs before rounds and the split had neither
    split = getattr(args, "fast_split", 1)
    fast_ms = getattr(args, "fast_call_ms", FAST_CALL_S * 1e3)
    lines = []
    lines.append(f"## Run `{args.tag}` — {started} ({elapsed / 60:.1f} min)")
    lines.append("")
    lines.append(f"Command: `{command}`")
    lines.append("")
    lines.append(f"- Machine: {info.get('cpu', '?')} (family {info.get('cpu_family', '?')}, model "
                 f"{info.get('cpu_model', '?')}; {info.get('cpu_flags', '')}), {info.get('cpu_count')} CPUs, "
                 f"{info.get('mem_total', '?')}, {info.get('platform')}; load average at start "
                 f"{' '.join(info.get('loadavg_at_start', []))}")
    lines.append(f"- Python {info['python']}, NumPy {info['numpy']}, SciPy {info.get('scipy', '?')}; "
                 f"source tree {info.get('git', '?')}")
    blas = {}
    for m in meta_list:
        for lib in m.get("threadpool_info", []):
            if lib.get("user_api") == "blas":
                blas[os.path.basename(lib["filepath"])] = (lib.get("internal_api"), lib.get("version"),
                                                           lib.get("architecture"),
                                                           lib.get("threading_layer"))
    for name, (api, ver, arch, layer) in sorted(blas.items()):
        owner = ("SciPy's: the one lstmfast (scipy.linalg.cython_blas) and the GEMM timings use"
                 if "64_" not in name else "NumPy's (not used by lstmfast)")
        lines.append(f"- BLAS: {name} ({api} {ver}, kernel `{arch}`, {layer}) — {owner}; threads "
                     f"set per worker with threadpoolctl after SciPy's BLAS is loaded")
    env = info.get("env_openblas") or {}
    lines.append(f"- OPENBLAS_* environment: {env if env else 'none set (OPENBLAS_CORETYPE unset: OpenBLAS autodetects the kernel)'}")
    tinfo = next((m["torch"] for m in meta_list if "torch" in m), None)
    if tinfo:
        lines.append(f"- PyTorch {tinfo['version']} (CPU capability {tinfo['cpu_capability']}, "
                     f"oneDNN {'available' if tinfo['mkldnn'] else 'unavailable'}), threads via "
                     f"torch.set_num_threads")
    lf = [m["lstmfast"] for m in meta_list if "lstmfast" in m]
    if lf:
        shas = sorted({m.get("kernels_sha1", "?") for m in lf})
        avx = sorted({str(m.get("avx2_active", "?")) for m in lf})
        lines.append(f"- lstmfast {lf[0]['version']} ({info.get('lstmfast_source', '?')}), kernels "
                     f"sha1 {', '.join(shas)}; AVX2 variant active: {', '.join(avx)}"
                     + ("  **(the extension changed during the run!)**" if len(shas) > 1 else ""))
    lines.append(f"- Timing: median of {args.repeats} samples ({args.large_repeats} for the largest "
                 f"shape) after {args.warmup} warm-up call(s); a sample averages as many calls as fill "
                 f"{args.min_time * 1e3:.0f} ms. lstmfast x/epsilon layout: `{args.x_layout}` "
                 f"({'[T, mb, F] memory viewed as [mb, F, T]' if args.x_layout == 'tmf' else 'order ' + args.x_layout}); "
                 f"PyTorch [T, mb, F]. "
                 + (f"Cases whose calls all take under {fast_ms:g} ms get {split}x the samples of "
                    f"1/{split} the length. " if split > 1 else "")
                 + "At 1 thread all libraries "
                 "share one process, sampled side by side; at more threads each library group runs "
                 "in its own process per shape"
                 + (f", lstmfast's and PyTorch's alternating in {rounds} rounds with "
                    f"{math.ceil(args.repeats / rounds)} samples each "
                    f"({math.ceil(args.large_repeats / rounds)} for the largest shape), pooled: "
                    f"{rounds * math.ceil(args.repeats / rounds)} samples "
                    f"({rounds * math.ceil(args.large_repeats / rounds)})" if rounds > 1 else "")
                 + (f"; the {split}x split of fast cases is decided per worker (at more threads "
                    f"a library may get it and its peer not)." if split > 1 and rounds > 1
                    else "."))
    loads = [v for m in meta_list for v in (m.get("loadavg_start"), m.get("loadavg_end")) if v is not None]
    if loads:
        lines.append(f"- 1-minute load average seen by the workers: {min(loads):.2f} to {max(loads):.2f} "
                     f"(on {info.get('cpu_count')} CPUs; above ~{info.get('cpu_count')} other processes "
                     f"were competing and absolute times are inflated, ratios less so)")
    busy = [m["cpu_busy_before"] for m in meta_list if m.get("cpu_busy_before") is not None]
    if busy:
        lines.append(f"- CPU busy (other processes) just before each worker: {100 * min(busy):.0f}% to "
                     f"{100 * max(busy):.0f}% of the machine (median {100 * statistics.median(busy):.0f}%)")
    notes = sorted({n for m in meta_list for n in m.get("notes", [])})
    for n in notes:
        lines.append(f"- Note: {n}")
    if check:
        worst = {}
        for key, errs in check.items():
            for name, v in errs.items():
                worst[name] = max(worst.get(name, 0.0), v)
        lines.append("- Agreement check (max |lstmfast - torch| / max |torch|, shapes small and tiny, "
                     "1 thread): " + ", ".join(f"{k} {v:.1e}" for k, v in sorted(worst.items())))
    lines.append("")
    return "\n".join(lines)


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
    p.add_argument("--tag", default="latest", help="RESULTS.md section name (default latest)")
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
                   help="continue an interrupted run with the same options and --tag (progress is "
                        "saved after every worker job in the temporary directory)")
    p.add_argument("--no-snapshot", action="store_true",
                   help="import lstmfast from the source tree in every worker instead of from a "
                        "copy taken at the start (the copy keeps one build for the whole run)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker is not None:
        worker_main(args.worker)
        return 0
    if args.render is not None:
        with open(args.render, encoding="utf-8") as fh:
            payload = json.load(fh)
        payload.setdefault("check_failures", [])
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
    if args.quick:
        args.shapes = [s for s in args.shapes if s != "large"]
        args.large_repeats = min(args.large_repeats, 2)

    command = "python benchmarks/bench_lstm.py" + (" " + " ".join(shlex.quote(a) for a in
                                                                   (argv if argv is not None else sys.argv[1:])) if (argv or sys.argv[1:]) else "")
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    t_start = time.perf_counter()
    info = machine_info()
    log(f"bench_lstm: {command}")
    log(f"machine: {info.get('cpu')} x{info.get('cpu_count')}, OPENBLAS env: {info['env_openblas'] or 'none'}")

    global IMPORT_ROOT
    snapshot = None
    if not args.no_snapshot:
        snapshot = snapshot_package()
        IMPORT_ROOT = snapshot
        log(f"timing a snapshot of the package: {snapshot}/lstmfast")
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
    partial_path = os.path.join(tempfile.gettempdir(), f"bench_lstm_partial_{args.tag}.json")
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
    if snapshot:
        import shutil
        shutil.rmtree(snapshot, ignore_errors=True)
    info["lstmfast_source"] = (f"snapshot of {ROOT}/lstmfast taken at the start" if snapshot
                               else f"{ROOT}/lstmfast (live source tree)")

    payload = {"tag": args.tag, "command": command, "started": started, "elapsed_s": elapsed,
               "machine": info, "args": {k: v for k, v in vars(args).items() if k != "worker"},
               "check": check, "check_failures": check_failures, "worker_meta": metas,
               "records": records}
    return publish(payload, args.out_dir, args.baseline, write=not args.no_write)


def publish(payload, out_dir, baseline_path=None, write=True):
    """Tables from payload["records"]: printed, and (write=True) written to results.json (and
    results_<tag>.json), RESULTS.md (this tag's section) and ratios.png (and ratios_<tag>.png)."""
    run_args = argparse.Namespace(**payload["args"])
    baseline = None
    if baseline_path:
        with open(baseline_path, encoding="utf-8") as fh:
            baseline = json.load(fh)
    tables = build_tables(merge_rounds(payload["records"]), run_args.dtype, run_args.threads,
                          baseline and {"records": merge_rounds(baseline["records"])})
    payload["tables"] = tables
    print(render_text(tables))
    log(f"total {payload['elapsed_s'] / 60:.1f} min")
    if not write:
        return 0
    tag = payload["tag"]
    os.makedirs(out_dir, exist_ok=True)
    # results.json / ratios.png belong to the `latest` section (a run with another --tag writes
    # results_<tag>.json / ratios_<tag>.png, and the plain names only if they do not exist yet)
    suffix = "" if tag == "latest" else f"_{tag}"
    json_path = os.path.join(out_dir, f"results{suffix}.json")
    with open(json_path, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=1)
    png_name = f"ratios{suffix}.png"
    png = os.path.join(out_dir, png_name)
    plotted = plot(tables, png)
    if suffix:
        import shutil
        for src, dst in ((json_path, "results.json"), (png, "ratios.png")):
            if os.path.exists(src) and not os.path.exists(os.path.join(out_dir, dst)):
                shutil.copyfile(src, os.path.join(out_dir, dst))
    body = describe_run(payload["worker_meta"], payload["machine"], run_args, payload["check"],
                        payload["command"], payload["started"], payload["elapsed_s"])
    if payload.get("check_failures"):
        body += ("\n**WARNING: the agreement check failed** (lstmfast vs PyTorch on the same weights): "
                 + ", ".join(payload["check_failures"]) + "\n")
    body += "\n" + render_markdown(tables, baseline.get("tag") if baseline else None)
    if plotted:
        body += f"\n![torch/lstmfast ratios per shape]({png_name})\n"
    write_results_md(os.path.join(out_dir, "RESULTS.md"), tag, body)
    log(f"wrote {json_path}, {os.path.join(out_dir, 'RESULTS.md')}"
        + (f", {png}" if plotted else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
