"""Helpers shared by the reliability tests (tests/reliability/).

* ``FIGURES``: what the tests measured (cases run, RSS growth, interrupt latency, ...). pytest
  prints them at the end of the run (tests/conftest.py) and, with LSTMFAST_RELIABILITY_FIGURES=path,
  writes them there as JSON (docs/reliability.md quotes such a run).
* ``guarded``: an array view placed inside a larger buffer full of sentinel values, so that a
  test can check afterwards that nothing wrote into the array *or next to it*.
* ``rss_bytes``: the process's resident set size, from /proc/self/statm.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, settings

FIGURES = {}

TESTS = Path(__file__).resolve().parent


def record(key, value):
    FIGURES[key] = value


def add_count(key, n=1):
    FIGURES[key] = FIGURES.get(key, 0) + n


def write_figures():
    path = os.environ.get("LSTMFAST_RELIABILITY_FIGURES")
    if path and FIGURES:
        Path(path).write_text(json.dumps(FIGURES, indent=2, sort_keys=True, default=str) + "\n")


def fuzz_examples(default):
    """Cases per hypothesis test: ``default`` in CI, LSTMFAST_FUZZ_SCALE times more on demand."""
    scale = float(os.environ.get("LSTMFAST_FUZZ_SCALE", "1"))
    return max(1, int(default * scale))


def fuzz_settings(n):
    """Hypothesis settings of the reliability fuzzers: derandomized (the same cases in CI and
    locally), no example database, no deadline."""
    return settings(max_examples=fuzz_examples(n), derandomize=True, deadline=None, database=None,
                    print_blob=False, suppress_health_check=list(HealthCheck))


TOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}
# errors relative to max(max|want|, FLOOR): the activations are O(1); tiny arrays (a masked
# state, one unit) are compared in absolute terms (tests/core/test_reference.py covers precision)
FLOOR = {np.dtype(np.float32): 1.0, np.dtype(np.float64): 1e-6}
# smallest distance of an evaluated pre-activation to a derivative jump for comparing gradients
KINK_MARGIN = {np.dtype(np.float32): 1e-3, np.dtype(np.float64): 1e-9}
UNBOUNDED = {"relu", "leakyrelu", "elu", "selu", "softplus", "identity", "cube"}


def names_argument(message, name):
    return re.search(r"(?<![A-Za-z0-9_])" + re.escape(name) + r"(?![A-Za-z0-9_])", message) is not None


# ---------------------------------------------------------------------------------------------
# arrays inside sentinel buffers

SENTINEL = -7.25e13


class Guarded:
    """``view`` (the argument to pass) and the buffer around it, with a snapshot of its bytes."""

    def __init__(self, view, parent):
        self.view = view
        self.parent = parent
        self.saved = None if parent is None else parent.tobytes()

    def intact(self):
        return self.parent is None or self.parent.tobytes() == self.saved


def _fill(dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return SENTINEL
    if dtype.kind == "b":
        return True
    return 77


LAYOUTS = ("c", "f", "strided", "reversed", "permuted", "readonly", "unaligned", "broadcast",
           "list", "other-dtype")


def guarded(values, layout, dtype, *, other_dtype=None, pad=3):
    """``values`` (an array) laid out as ``layout`` in ``dtype``; returns a Guarded.

    Layouts: "c" / "f" (contiguous, inside a flat buffer with `pad` sentinels either side),
    "strided" (every other element of a buffer twice as large on each axis), "reversed" (negative
    strides on every axis), "permuted" (axes stored in another order), "readonly", "unaligned"
    (data at an odd byte address), "broadcast" (zero stride on axis 0: the values become those of
    the first slice, repeated), "list" (nested Python lists), "other-dtype" (stored as
    ``other_dtype``, converted by the callee)."""
    values = np.asarray(values)
    dtype = np.dtype(dtype)
    shape = values.shape
    n = values.size
    if layout == "other-dtype":
        dtype = np.dtype(other_dtype)
        layout = "c"
    if layout == "list":
        return Guarded(values.astype(dtype).tolist(), None)
    if layout in ("c", "f", "readonly"):
        parent = np.full(n + 2 * pad, _fill(dtype), dtype=dtype)
        flat = parent[pad:pad + n]
        if layout == "f":
            view = flat.reshape(shape[::-1]).T
        else:
            view = flat.reshape(shape)
        view[...] = values
        if layout == "readonly":
            view.flags.writeable = False
        return Guarded(view, parent)
    if layout == "strided":
        parent = np.full(tuple(2 * s + 1 for s in shape), _fill(dtype), dtype=dtype)
        view = parent[tuple(slice(1, None, 2) for _ in shape)]
        view[...] = values
        return Guarded(view, parent)
    if layout == "reversed":
        parent = np.full(n + 2 * pad, _fill(dtype), dtype=dtype)
        base = parent[pad:pad + n].reshape(shape)
        view = base[tuple(slice(None, None, -1) for _ in shape)]
        view[...] = values
        return Guarded(view, parent)
    if layout == "permuted":
        perm = list(range(values.ndim))[::-1]
        if values.ndim == 3:
            perm = [1, 2, 0]
        parent = np.full(n + 2 * pad, _fill(dtype), dtype=dtype)
        base = parent[pad:pad + n].reshape(tuple(shape[p] for p in perm))
        view = base.transpose(np.argsort(perm))
        view[...] = values
        return Guarded(view, parent)
    if layout == "unaligned":
        item = dtype.itemsize
        parent = np.zeros(n * item + 2 * pad * 8 + 1, dtype=np.uint8)
        raw = parent[pad * 8 + 1:pad * 8 + 1 + n * item]
        view = raw.view(dtype).reshape(shape)
        view[...] = values
        return Guarded(view, parent)
    if layout == "broadcast":
        if values.ndim == 0 or shape[0] == 0:
            return guarded(values, "c", dtype, pad=pad)
        parent = np.full(values[:1].size + 2 * pad, _fill(dtype), dtype=dtype)
        first = parent[pad:pad + values[:1].size].reshape((1,) + shape[1:])
        first[...] = values[:1]
        view = np.broadcast_to(first, shape)
        return Guarded(view, parent)
    raise ValueError(layout)


def value_of(arg, dtype):
    """What the callee computes with: the argument's values converted to ``dtype``, as float64."""
    if arg is None:
        return None
    return np.asarray(arg).astype(dtype).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# processes

def rss_bytes():
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def run_child(script, *args, timeout=300, env_extra=None):
    """Run ``script`` (Python source) in a fresh interpreter that imports the same lstmfast as
    this process (installed or in the source tree) and the tests' helpers; returns the
    CompletedProcess."""
    import lstmfast
    package_root = Path(lstmfast.__file__).resolve().parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(package_root), str(TESTS)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def print_outcomes_and_peaks(cases, names=None):
    """For child scripts: run each named case of ``cases`` (name -> callable) under tracemalloc
    and print, as one JSON line, ``{name: {"outcome": "returned" or the exception's name,
    "message": its text, "peak": bytes allocated at the most}}``."""
    import tracemalloc
    results = {}
    for name in names or list(cases):
        tracemalloc.start()
        try:
            cases[name]()
            outcome = ("returned", "")
        except BaseException as error:
            outcome = (type(error).__name__, str(error))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        results[name] = {"outcome": outcome[0], "message": outcome[1][:300], "peak": peak}
    print(json.dumps(results))


def check_refused_before_allocating(script, cases, sizes):
    """Run ``script`` (a child printing ``print_outcomes_and_peaks`` for the names it is given)
    for ``cases``; check that each was refused with a ValueError "problem too large … BLAS …"
    whose sizes match the regular expression ``sizes``, having allocated under 64 KiB.
    Returns the peaks (bytes) by case."""
    import re
    proc = run_child(script, *cases, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = last_json_line(proc.stdout)
    peaks = {}
    for name in cases:
        r = results[name]
        assert r["outcome"] == "ValueError", (name, r)
        assert "too large" in r["message"] and "BLAS" in r["message"], (name, r["message"])
        assert re.search(sizes, r["message"]), (name, r["message"])
        assert r["peak"] < 64 << 10, (name, r["peak"])
        peaks[name] = r["peak"]
    return peaks


def last_json_line(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"no JSON result in the child's output:\n{text}")
